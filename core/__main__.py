"""``python -m rosetta ...``: the ``rosetta`` command, for launchers that start a module
(``torchrun ... -m rosetta train ...``)."""

import sys

from rosetta.cli import main

if __name__ == "__main__":
    sys.exit(main())
