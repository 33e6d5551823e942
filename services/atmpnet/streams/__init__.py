"""Stream processors: the faust app and its agents; the rules live in pure modules."""
