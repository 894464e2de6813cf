"""Command lines. Each usage text is the docopt (docopt-ng) grammar of its command."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

from docopt import DocoptExit, docopt

from taiat import db, schema
from taiat.errors import ConfigurationError, DatabaseError, DatabaseUnavailable, TaiatError

#: Exit codes, for scripts and for the unit's `RestartPreventExitStatus=`.
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 64  # EX_USAGE: bad command line
EXIT_CONFIG = 78  # EX_CONFIG: bad setting; restarting will not help
EXIT_DB_UNAVAILABLE = 69  # EX_UNAVAILABLE: the database cannot be reached; worth a retry
EXIT_DB_SCHEMA = 65  # EX_DATAERR: tables missing or of another version

INIT_USAGE = """Create or upgrade the Taiat job tables (python -m taiat.init_worker); a second run
changes nothing.

Usage:
  taiat.init_worker [--database-url URL]
  taiat.init_worker (-h | --help)

Options:
  --database-url URL  The database (else TAIAT_DATABASE_URL, else the embedded ./taiat.db,
                      or $TAIAT_HOME/taiat.db).
  -h --help           Show this help.
"""


def parse(usage: str, argv: Sequence[str] | None, version: str | None = None) -> dict:
    """docopt, with a bad command line turned into a message and EXIT_USAGE."""
    try:
        return docopt(usage, argv=list(sys.argv[1:] if argv is None else argv), version=version)
    except DocoptExit as exc:
        print(str(exc).strip(), file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None


def exit_code_for(error: TaiatError) -> int:
    if isinstance(error, DatabaseUnavailable):
        return EXIT_DB_UNAVAILABLE
    if isinstance(error, DatabaseError):
        return EXIT_DB_SCHEMA
    if isinstance(error, ConfigurationError):
        return EXIT_CONFIG
    return EXIT_FAILURE


def fail(error: TaiatError) -> int:
    print(f"error: {error}", file=sys.stderr)
    return exit_code_for(error)


def init_main(argv: Sequence[str] | None = None) -> int:
    args = parse(INIT_USAGE, argv)
    logging.basicConfig(level=os.environ.get("TAIAT_LOG_LEVEL", "WARNING").upper())
    try:
        engine = db.engine_from_url(args["--database-url"])
        before, after = schema.initialise(engine)
    except TaiatError as error:
        return fail(error)
    where = db.describe(engine)
    if before is None:
        print(f"created the Taiat job tables in {where} (schema version {after})")
    elif before == after:
        print(
            f"the Taiat job tables in {where} are up to date (schema version {after}); "
            "nothing to do"
        )
    else:
        print(f"upgraded the Taiat job tables in {where} from schema version {before} to {after}")
    return EXIT_OK
