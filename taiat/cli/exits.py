"""The exit codes of the command lines, for scripts and for the unit's `RestartPreventExitStatus=`
(also importable from `taiat.cli`)."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 64  # EX_USAGE: bad command line
#: EX_CONFIG: bad setting, a database or role that does not exist among them; restarting
#: will not help.
EXIT_CONFIG = 78
EXIT_DB_UNAVAILABLE = 69  # EX_UNAVAILABLE: the database server cannot be reached; worth a retry
EXIT_DB_SCHEMA = 65  # EX_DATAERR: tables missing or of another version
EXIT_NOT_FOUND = 66  # EX_NOINPUT: `taiat`: no job has the given id
EXIT_TIMEOUT = 75  # EX_TEMPFAIL: `taiat wait`: the jobs had not finished in time
EXIT_CANCELLED = 3  # `taiat wait`: none of the jobs failed, but one was cancelled
