"""`python -m taiat.run_worker`: the supervisor, same as `taiat-supervisor`
(see `taiat.cli.supervisor_command`)."""

import sys

from taiat.cli.supervisor_command import supervisor_main

if __name__ == "__main__":
    sys.exit(supervisor_main())
