"""``python -m musicidx`` runs the command line."""

from musicidx.cli import main

main()
