"""What the `taiat` command's commands share: reading their options (numbers in range, job ids,
statuses, leases, status files), the job manager they act on, and the line an error is."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from taiat.config import SupervisorConfig, from_environment
from taiat.errors import ConfigurationError, DatabaseNotInitialised, UsageError
from taiat.job_manager import JobManager
from taiat.jobs import JobStatus
from taiat.operator import lookups
from taiat.store import db
from taiat.store.validation import check_text

#: The longest wait between refreshes (`top`, `wait`): a day.
MAX_INTERVAL = 86_400.0


def error(message: str) -> None:
    """One line on standard error."""
    flat = " ".join(db.mask_url(str(message)).split())
    print(f"taiat: error: {flat}", file=sys.stderr)


# -- reading the command line --------------------------------------------------------------


def status_option(args: dict) -> JobStatus | None:
    raw = args["--status"]
    if raw is None:
        return None
    try:
        return JobStatus(raw.lower())
    except ValueError:
        known = ", ".join(s.value for s in JobStatus)
        raise UsageError(f"unknown status {raw!r}: use one of {known}") from None


def number(
    args: dict,
    option: str,
    kind: Callable[[str], Any],
    default: Any,
    low: float,
    high: float | None = None,
) -> Any:
    """The option as an int or float from `low` to `high` (if given), or `default` when
    absent."""
    raw = args.get(option)
    if raw is None:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise UsageError(f"{option} must be a number, got {raw!r}") from None
    if value != value or value in (float("inf"), float("-inf")) or value < low:
        raise UsageError(f"{option} must be a number of at least {_figure(low)}, got {raw!r}")
    if high is not None and value > high:
        raise UsageError(
            f"{option} must be a number from {_figure(low)} to {_figure(high)}, got {raw!r}"
        )
    return value


def _figure(bound: float) -> str:
    """A bound as written: whole numbers in full (2147483647, not 2.14748e+09)."""
    return str(int(bound)) if float(bound).is_integer() else f"{bound:g}"


def identifiers(args: dict) -> list[str]:
    """The command's IDs, each text a job id can be (an undecodable byte on the command line
    arrives as a lone surrogate, which no id holds)."""
    ids = args["ID"]
    return [check_text(i, "job id") for i in (ids if isinstance(ids, list) else [ids])]


def lease(args: dict) -> float:
    raw = args.get("--lease") or from_environment("TAIAT_LEASE")
    if raw is None:
        return SupervisorConfig().lease
    value = number({"--lease": raw}, "--lease", float, None, 0)
    if not value > 0:
        raise UsageError(f"--lease must be greater than 0, got {raw!r}")
    return value


def status_files(args: dict) -> list[Path]:
    """The status files of `--status-file`, given any number of times, else the one of
    `TAIAT_STATUS_FILE`, else none."""
    paths = [Path(p) for p in args["--status-file"]]
    named = from_environment("TAIAT_STATUS_FILE")
    if not paths and named:
        paths = [Path(named)]
    return paths


def job_id(args: dict) -> str:
    """The id of the job the command's one ID names, whole or its first characters (docopt
    gives a list: `wait` takes several)."""
    return lookups.resolve_id(manager(args), identifiers(args)[0])


#: Where `manager` keeps the job manager it made, in the command's parsed arguments.
_MANAGER = "<job manager>"


def manager(args: dict) -> JobManager:
    """The job manager on the command's database, made once per command."""
    made = args.get(_MANAGER)
    if made is None:
        made = args[_MANAGER] = JobManager(database_url(args))
    return made


def database_url(args: dict) -> str:
    """The command's database: `--database-url`, else TAIAT_DATABASE_URL, else the embedded
    SQLite file. A SQLite file that does not exist is not created (only `taiat init` makes
    one): with no database chosen that is a configuration error naming the file and how to
    choose; a file named on purpose has no tables yet."""
    given = args.get("--database-url")
    url = db.resolve_url(given)
    path = db.sqlite_file(url)
    if path is None or path.exists():
        return url
    if given is None and from_environment("TAIAT_DATABASE_URL") is None:
        home = from_environment("TAIAT_HOME")
        where = "in TAIAT_HOME" if home else "in the working directory"
        raise ConfigurationError(
            f"no database: taiat would use the embedded SQLite file {url} ({where}), which "
            "does not exist; choose a database with --database-url URL or TAIAT_DATABASE_URL, "
            "or create this one with `taiat init`"
        )
    raise DatabaseNotInitialised(
        f"the job tables are missing in {db.mask_url(url)}, a file that does not exist: run "
        "`taiat init` (or `python -m taiat.init_worker`)"
    )
