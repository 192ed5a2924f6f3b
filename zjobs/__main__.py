"""``python -m zjobs``: the command line, as the ``zjobs`` console script."""

from zjobs.cli.commands import main

main()
