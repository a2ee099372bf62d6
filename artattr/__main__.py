"""``python -m artattr``: the command line (:mod:`artattr.cli`)."""

import sys

from artattr.cli import main

if __name__ == "__main__":
    sys.exit(main())
