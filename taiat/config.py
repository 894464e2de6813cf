"""The configuration: every `TAIAT_*` variable is read here, and nowhere else. Also the
supervisor's settings, a plain dataclass, light to import (the command line builds one before
it knows whether it will run a supervisor at all)."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

from taiat.errors import ConfigurationError

MiB = 1 << 20
KiB = 1 << 10

#: A century: the longest span any setting may name, and the history kept at most. Deadlines
#: and timers then stay within what a datetime (year 9999) and a timedelta can hold.
MAX_DAYS = 36_500
MAX_SECONDS = MAX_DAYS * 86_400

#: The largest value of each numeric setting, and that value in words (the smallest is
#: checked where the setting is read).
LIMITS: dict[str, tuple[int, str]] = {
    "poll_interval": (MAX_SECONDS, "100 years"),
    "max_concurrent_jobs": (10_000, "a child process each"),
    "cleanup_interval_hours": (MAX_DAYS * 24, "100 years"),
    "history_retention_days": (MAX_DAYS, "100 years"),
    "job_timeout": (MAX_SECONDS, "100 years"),
    "memory_limit_mb": (1 << 30, "1 PiB"),
    "drain_timeout": (MAX_SECONDS, "100 years"),
    "kill_grace": (MAX_SECONDS, "100 years"),
    "max_result_bytes": (1 << 30, "1 GiB, the most PostgreSQL keeps in one value"),
    "lease": (MAX_SECONDS, "100 years"),
    "quarantine_after": (2**31 - 1, "the range of the attempts column"),
    "status_interval": (MAX_SECONDS, "100 years"),
    "heartbeat_interval": (MAX_SECONDS, "100 years"),
    "memory_sample_interval": (MAX_SECONDS, "100 years"),
    "check_interval": (MAX_SECONDS, "100 years"),
    "log_tail_bytes": (1 << 30, "1 GiB, the most PostgreSQL keeps in one value"),
    "max_processes": (1 << 22, "the kernel's largest pid_max"),
    "cpu_limit": (1 << 16, "cores"),
}


#: The units a size may carry (`parse_size`), in bytes: powers of 1024, as systemd's
#: `MemoryMax=` and `ps` count them, so that K, KB and KiB are one unit (and the "MB" of
#: `--memory-limit` and of "exceeded memory limit of N MB" is a MiB).
SIZE_UNITS: dict[str, int] = {
    unit: 1024**power
    for power, letter in enumerate("BKMGTP")
    for unit in ((letter,) if letter == "B" else (letter, f"{letter}B", f"{letter}iB"))
}

_SIZE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)(?:[eE]([+-]?\d+))?\s*([A-Za-z]*)\s*", re.ASCII)


def parse_size(text: str, where: str, unit: str = "B") -> int | float:
    """The size `text` names, counted in `unit` (a key of `SIZE_UNITS`: "B" for bytes, "MB"
    for the memory limit). A plain number is a number of `unit`s; a number followed by a unit
    (`512M`, `2G`, `1.5GiB`, `64 KB`, any case) is converted. An int when `text` is a whole
    number in a unit no smaller than `unit` (exact, however large), else a float. Anything
    else (a negative number, `inf`, an unknown unit) is a ConfigurationError naming `where`;
    the range is the caller's to check (`check_limit`)."""
    scale = {name.upper(): size for name, size in SIZE_UNITS.items()}
    base = scale[unit.upper()]
    match = _SIZE.fullmatch(text)
    factor = match and scale.get((match.group(3) or unit).upper())
    if not match or not factor:
        raise ConfigurationError(
            f"{where} must be a number of {'bytes' if base == 1 else unit} or a size with a "
            f"unit (e.g. 512M, 2G, 1.5GiB), got {text!r}"
        )
    number, exponent = match.group(1), match.group(2)
    try:
        if exponent is None and "." not in number and factor % base == 0:
            return int(number) * (factor // base)
        return float(f"{number}e{exponent or 0}") * (factor / base)
    except ValueError:  # more digits than int() takes
        raise ConfigurationError(f"{where} is too long a number: {text[:24]}...") from None


@dataclass(frozen=True)
class MemoryReserve:
    """The host memory a supervisor leaves free (`--memory-reserve`): a share of the total
    (`percent`), or a size (`size_bytes`). A job whose agent lately peaked above what is
    available less this is not started here (see `taiat.supervisor.admission`)."""

    percent: float | None = 5.0
    size_bytes: int | None = None

    def of(self, total_bytes: int) -> int:
        """The reserve in bytes, on a host of `total_bytes`."""
        if self.size_bytes is not None:
            return self.size_bytes
        return int(total_bytes * (self.percent or 0.0) / 100)

    def __str__(self) -> str:
        if self.size_bytes is not None:
            return f"{self.size_bytes // MiB} MiB"
        return f"{self.percent:g}%"


def parse_reserve(text: str, where: str) -> MemoryReserve:
    """`--memory-reserve`: a percentage of the host's memory (`5%`, `12.5 %`, from 0 to
    under 100) or a size with a unit (`512M`, `2G`: see `parse_size`). A bare number is
    refused: a share and a size are too easily mistaken for each other."""
    stripped = text.strip()
    if stripped.endswith("%"):
        try:
            percent = float(stripped[:-1])
        except ValueError:
            percent = math.nan
        if not 0 <= percent < 100:  # NaN is neither
            raise ConfigurationError(
                f"{where} must be a percentage from 0 to under 100 (e.g. 5%), got {text!r}"
            )
        return MemoryReserve(percent=percent)
    match = _SIZE.fullmatch(text)
    if match is None or not match.group(3):
        raise ConfigurationError(
            f"{where} must be a percentage of the host's memory (e.g. 5%) or a size with a "
            f"unit (e.g. 512M, 2G), got {text!r}"
        )
    size = parse_size(text, where)
    if size > _MOST_RESERVE:
        raise ConfigurationError(f"{where} must be at most 1 PiB, got {text!r}")
    return MemoryReserve(percent=None, size_bytes=int(size))


#: The largest `--memory-reserve` size: 1 PiB.
_MOST_RESERVE = 1 << 50


#: The embedded SQLite database's file, in the working directory or `TAIAT_HOME`.
DEFAULT_DB_FILE = "taiat.db"


def from_environment(name: str) -> str | None:
    """The variable `name` (a `TAIAT_*` one, or one that systemd sets), or None when it is
    unset or empty.

    The one place that reads the environment: the command lines read their variables here,
    and so do `JobManager()` with no arguments (`url_from_environment`) and a
    `SupervisorConfig` built in Python, for the two settings that have no option. Below,
    settings are passed in."""
    return os.environ.get(name) or None


#: libpq's variables that carry a password (or where to find one).
_PASSWORD_VARIABLES = ("PGPASSWORD", "PGPASSFILE")


def forget_settings() -> None:
    """Remove every `TAIAT_*` variable, and libpq's password variables, from this process's
    environment: in a job's child run as another user (`--job-user`), the supervisor's settings,
    its database URL and password among them, are not the job's to read. (The child needs none:
    its settings are passed down.)"""
    for name in [n for n in os.environ if n.startswith("TAIAT_") or n in _PASSWORD_VARIABLES]:
        del os.environ[name]


def default_url(home: str | None = None) -> str:
    """The embedded SQLite file: `home/taiat.db`, or `./taiat.db`."""
    return f"sqlite:///{(Path(home or '.') / DEFAULT_DB_FILE).absolute()}"


def url_from_environment() -> str:
    """The database of `JobManager()` with no arguments, and of every command left without a
    database URL: `TAIAT_DATABASE_URL`, else the embedded SQLite file in `TAIAT_HOME`, else
    `./taiat.db`."""
    return from_environment("TAIAT_DATABASE_URL") or default_url(from_environment("TAIAT_HOME"))


@dataclass
class SupervisorConfig:
    """Every setting of the supervisor; the command line and `TAIAT_*` variables fill it."""

    database_url: str | None = None
    poll_interval: float = 5.0
    max_concurrent_jobs: int = 4
    cleanup_interval_hours: float = 24.0
    history_retention_days: float = 30.0
    job_timeout: float = 3600.0
    memory_limit_mb: float | None = None
    drain_timeout: float = 60.0
    kill_grace: float = 5.0
    status_file: Path | None = None
    metrics_file: Path | None = None
    burst: bool = False
    #: In burst mode, wait for jobs scheduled for later (their `run_at`, or a dependency's,
    #: beyond the poll interval) rather than exit once only those are left.
    burst_wait_scheduled: bool = False
    max_result_bytes: int = 16 * MiB
    lease: float = 30.0
    #: LISTEN for wake-ups (PostgreSQL); off, only polling finds new jobs.
    listen: bool = True
    quarantine_after: int = 3
    status_interval: float = 2.0
    heartbeat_interval: float = 10.0
    memory_sample_interval: float = 0.2
    #: How often running jobs' claims are checked against the database (cancel, take-back).
    check_interval: float = 1.0
    #: Fork jobs from a small fork server rather than from the supervisor itself: forking a
    #: process that has not loaded the database stack is several times cheaper.
    fork_server: bool = True
    #: Keep a child forked ahead by the fork server for each free slot, waiting for a job in
    #: its cgroup: a claimed job starts without waiting for a fork (or for the move into its
    #: cgroup). Each runs one job and is replaced. Only with the fork server.
    waiting_children: bool = True
    #: Claim jobs ahead of free slots while jobs are short (see
    #: `taiat.supervisor.claim_ahead`): a freed slot is filled at once, and endings are
    #: written together.
    claim_ahead: bool = True
    #: Make the supervisor's process a child subreaper (PR_SET_CHILD_SUBREAPER), which reaps
    #: and kills what a dead fork server leaves: the daemon's way. Off for a program that
    #: runs a supervisor inside itself, whose own children it would otherwise kill.
    subreaper: bool = False
    #: The query engine plug-in ("module:factory") that runs query jobs instead of the
    #: built-in planner; read from `TAIAT_QUERY_ENGINE` when the config is made, and carried
    #: to the jobs' children by their executor, so a child never looks at the environment.
    query_engine: str | None = field(default_factory=lambda: from_environment("TAIAT_QUERY_ENGINE"))
    #: More agents: a JSON object, or the path of a JSON file (see
    #: `taiat.agents.registry.load_agents`); read from `TAIAT_AGENT_CONFIG` when the config
    #: is made.
    agent_config: str | None = field(default_factory=lambda: from_environment("TAIAT_AGENT_CONFIG"))
    #: Bytes kept of the end of each attempt's stdout, and of its stderr, in the database
    #: (`taiat_job_output`); what came before is dropped, and counted.
    log_tail_bytes: int = 64 * KiB
    #: Also log each line a job writes to stdout or stderr as the supervisor's own log line,
    #: prefixed with the job's id.
    forward_output: bool = False
    #: The queues whose jobs it claims; None: every queue.
    queues: tuple[str, ...] | None = None
    #: The host memory left free: a job whose agent lately peaked above what is available
    #: less this waits (see `taiat.supervisor.admission`).
    memory_reserve: MemoryReserve = field(default_factory=MemoryReserve)
    #: The user every job's child becomes before it runs the job (`--job-user`); None: the
    #: supervisor's own. Needs a supervisor that runs as root.
    job_user: str | None = None
    #: A cgroup per job (`taiat.sandbox`): "auto" where the host allows it, "cgroup" or
    #: refuse to start, "none" never. None here, for a program that runs a supervisor inside
    #: itself; the command line's default is "auto".
    sandbox: str = "none"
    #: The processes and threads a job's tree may have at once (its cgroup's pids.max); a
    #: payload's "max_processes" may set it lower.
    max_processes: int = 1024
    #: The CPU a job may use, in cores (its cgroup's quota); a payload's "cpu_limit" may set
    #: it lower. None: no cap.
    cpu_limit: float | None = None

    def __post_init__(self) -> None:
        for setting in fields(self):
            value = getattr(self, setting.name)
            if setting.name in LIMITS and value is not None:
                check_limit(setting.name, value, setting.name)
        if not isinstance(self.log_tail_bytes, int) or self.log_tail_bytes < 0:
            raise ConfigurationError(
                f"log_tail_bytes must be a whole number of bytes, 0 or more, got "
                f"{self.log_tail_bytes!r}"
            )


def check_limit(name: str, value: float, where: str) -> None:
    """ConfigurationError naming `where` unless the setting `name` is a finite number no
    larger than its limit."""
    high, words = LIMITS[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"{where} must be a number, got {value!r}")
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an int no float holds
        finite = True
    if not finite:
        raise ConfigurationError(f"{where} must be a finite number, got {value}")
    if value > high:
        shown = f"{value:g}" if isinstance(value, float) else str(value)
        if len(shown) > 24:
            shown = f"{shown[:21]}..."
        raise ConfigurationError(f"{where} must be at most {high} ({words}), got {shown}")


__all__ = [
    "DEFAULT_DB_FILE",
    "LIMITS",
    "MAX_DAYS",
    "MAX_SECONDS",
    "MemoryReserve",
    "SIZE_UNITS",
    "KiB",
    "MiB",
    "SupervisorConfig",
    "check_limit",
    "default_url",
    "forget_settings",
    "from_environment",
    "parse_reserve",
    "parse_size",
    "url_from_environment",
]
