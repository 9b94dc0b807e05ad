"""`python -m accelsim`: the `accelsim` command (and the main module sweep workers start from)."""

import sys

from accelsim.cli import main

if __name__ == "__main__":
    sys.exit(main())
