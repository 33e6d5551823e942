"""Query API and web dashboard."""
