"""`python -m taiat.init_worker` and `taiat init`: create or upgrade the job tables."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from taiat.cli.common import fail, parse, quiet_log_level
from taiat.cli.exits import EXIT_OK
from taiat.errors import TaiatError
from taiat.store import db, schema

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


def init_main(argv: Sequence[str] | None = None) -> int:
    args = parse(INIT_USAGE, argv)
    logging.basicConfig(level=quiet_log_level())
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
