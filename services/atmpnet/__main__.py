"""``python -m atmpnet`` runs the CLI."""

from atmpnet.cli import main

main()
