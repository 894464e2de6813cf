"""`python -m taiat`: the operator's command, same as `taiat` (see `taiat.operator.cli`)."""

import sys

from taiat.operator.cli import main

if __name__ == "__main__":
    sys.exit(main())
