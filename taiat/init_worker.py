"""`python -m taiat.init_worker`: create or upgrade the job tables
(see `taiat.cli.init_command`)."""

import sys

from taiat.cli.init_command import init_main

if __name__ == "__main__":
    sys.exit(init_main())
