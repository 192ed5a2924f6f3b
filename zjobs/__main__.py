"""``python -m zjobs``: the command line, as the ``zjobs`` console script."""

from zjobs.cli import main

main()
