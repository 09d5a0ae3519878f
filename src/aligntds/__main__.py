"""`python -m aligntds COMMAND ...`: the console command `aligntds` (`aligntds.cli.main`)."""

import sys

from .cli.main import main

if __name__ == "__main__":
    sys.exit(main())
