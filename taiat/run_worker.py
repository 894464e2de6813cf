"""`python -m taiat.run_worker`: the supervisor, same as `taiat-supervisor` (see `taiat.cli`)."""

import sys

from taiat.cli import supervisor_main

if __name__ == "__main__":
    sys.exit(supervisor_main())
