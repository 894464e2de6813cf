"""What the command lines share: their docopt (docopt-ng) parsing, errors in words with their
exit codes (`taiat.cli.exits`), and logging."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

from docopt import DocoptExit, docopt

from taiat.cli.exits import (
    EXIT_CONFIG,
    EXIT_DB_SCHEMA,
    EXIT_DB_UNAVAILABLE,
    EXIT_FAILURE,
    EXIT_USAGE,
)
from taiat.config import from_environment
from taiat.errors import ConfigurationError, DatabaseError, DatabaseUnavailable, TaiatError
from taiat.store import db


def parse(usage: str, argv: Sequence[str] | None, version: str | None = None) -> dict:
    """docopt, with a bad command line turned into a message and EXIT_USAGE."""
    try:
        return docopt(usage, argv=list(sys.argv[1:] if argv is None else argv), version=version)
    except DocoptExit as exc:
        # docopt names the arguments it could not match, a database URL among them perhaps.
        print(db.mask_url(str(exc).strip()), file=sys.stderr)
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
    print(f"error: {db.mask_url(str(error))}", file=sys.stderr)
    return exit_code_for(error)


def import_path(given: Sequence[str] | None = None) -> list[str]:
    """The folders that agent modules and query engines are imported from before any other,
    absolute: the `--path` options `given`, else `TAIAT_PATH` (folders separated by colons),
    else the working directory (as `python -m` and `rq worker` do). ConfigurationError for a
    folder that does not exist."""
    where = "--path"
    folders = [folder for folder in given or () if folder]
    if not folders:
        where = "TAIAT_PATH"
        folders = [f for f in (from_environment("TAIAT_PATH") or "").split(os.pathsep) if f]
    if not folders:
        return [os.getcwd()]
    for folder in folders:
        if not os.path.isdir(folder):
            raise ConfigurationError(f"{where}: {folder} is not a directory")
    return [os.path.abspath(folder) for folder in folders]


def put_first_on_path(folders: Sequence[str]) -> None:
    """Put `folders` first on this process's import path, in their order. The fork server
    takes the supervisor's import path when it starts, and every job's process inherits it."""
    sys.path[:] = [*folders, *(entry for entry in sys.path if entry not in folders)]


def quiet_log_level() -> str:
    """The log level of the commands that only say what they did (`init`, `taiat`):
    TAIAT_LOG_LEVEL, else WARNING."""
    return (from_environment("TAIAT_LOG_LEVEL") or "WARNING").upper()


def setup_logging(level: str) -> None:
    # journald stamps each line itself.
    stamp = "" if from_environment("JOURNAL_STREAM") else "%(asctime)s "
    logging.basicConfig(
        level=level, format=f"{stamp}%(levelname)s %(name)s: %(message)s", force=True
    )
