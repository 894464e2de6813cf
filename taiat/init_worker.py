"""`python -m taiat.init_worker`: create or upgrade the job tables (see `taiat.cli`)."""

import sys

from taiat.cli import init_main

if __name__ == "__main__":
    sys.exit(init_main())
