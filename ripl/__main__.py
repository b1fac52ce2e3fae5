"""`python -m ripl` runs the command line."""

from ripl.cli import main

main()
