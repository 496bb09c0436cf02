"""``python -m framework`` runs the command line."""

from framework.cli import main

main()
