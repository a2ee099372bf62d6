"""``python -m artattr``: the command line (:mod:`artattr.cli`)."""

from artattr.cli import entry

if __name__ == "__main__":
    entry()
