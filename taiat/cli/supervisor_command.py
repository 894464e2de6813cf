"""`taiat-supervisor` (also `python -m taiat.run_worker` and `bin/taiat-supervisor`): its
options and `TAIAT_*` variables made into a `SupervisorConfig`, then the supervisor, its
`--status` report, or a burst with its progress."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from taiat.cli.common import fail, import_path, parse, put_first_on_path, setup_logging
from taiat.config import (
    SupervisorConfig,
    check_limit,
    from_environment,
    parse_reserve,
    parse_size,
)
from taiat.errors import ConfigurationError, TaiatError

log = logging.getLogger(__name__)

SUPERVISOR_USAGE = """Run the Taiat job supervisor: run each ready job in a fresh child process.
Also `python -m taiat.run_worker` and `bin/taiat-supervisor`. Every option may instead be set
by the TAIAT_* variable named beside it; the option wins.

Usage:
  taiat-supervisor [--path DIR]... [options]
  taiat-supervisor --status [--path DIR]... [options]
  taiat-supervisor (-h | --help)
  taiat-supervisor --version

Options:
  --database-url URL            Database (TAIAT_DATABASE_URL; else the embedded SQLite file
                                ./taiat.db, or $TAIAT_HOME/taiat.db).
  --path DIR                    Import agent modules (TAIAT_AGENT_CONFIG) and the query engine
                                from DIR before anywhere else; repeatable (TAIAT_PATH, folders
                                separated by colons; default the working directory).
  --poll-interval S             Seconds between looks for ready jobs when idle
                                (TAIAT_POLL_INTERVAL;
                                default 5.0).
  --queues Q                    Claim only jobs of these queues, names separated by commas:
                                gpu,default (TAIAT_QUEUES; default every queue).
  --max-concurrent-jobs N       Jobs run at once, one child process each
                                (TAIAT_MAX_CONCURRENT_JOBS;
                                default 4).
  --cleanup-interval-hours H    Hours between deletions of old history
                                (TAIAT_CLEANUP_INTERVAL_HOURS;
                                default 24).
  --history-retention-days D    History kept, by completion time
                                (TAIAT_HISTORY_RETENTION_DAYS;
                                default 30).
  --job-timeout S               Default seconds a job may run; a job's own timeout_seconds
                                wins (TAIAT_JOB_TIMEOUT;
                                default 3600).
  --memory-limit SIZE           Resident memory a job's process tree may use, in MB or with a
                                unit: 512M, 2G, 1.5GiB (powers of 1024); a job's payload
                                "memory_limit_mb" may set it lower (TAIAT_MEMORY_LIMIT).
  --memory-reserve SIZE         Host memory to leave free: a share of the total (5%) or a size
                                (512M, 2G); a job whose agent's recent peak memory (the 95th
                                percentile of its last 20 attempts) exceeds what is available
                                less this waits, claimable elsewhere (TAIAT_MEMORY_RESERVE;
                                default 5%).
  --sandbox MODE                A cgroup per job, whose limits the kernel enforces and whose
                                processes all end with the job: auto (where the host allows
                                it: cgroup v2 delegated to the supervisor, or v1 as root),
                                cgroup (refuse to start without one, exit 78) or none
                                (TAIAT_SANDBOX; default auto).
  --max-processes N             Processes and threads a job's tree may have at once, with a
                                sandbox; a job's payload "max_processes" may set it lower
                                (TAIAT_MAX_PROCESSES; default 1024).
  --cpu-limit CORES             CPU a job may use, in cores (0.5, 2), with a sandbox; a job's
                                payload "cpu_limit" may set it lower (TAIAT_CPU_LIMIT).
  --drain-timeout S             On SIGTERM, seconds running jobs may take to finish before they
                                are stopped and requeued (TAIAT_DRAIN_TIMEOUT;
                                default 60).
  --kill-grace S                Seconds between SIGTERM and SIGKILL when a job is stopped
                                (TAIAT_KILL_GRACE;
                                default 5).
  --max-result-bytes SIZE       Largest result a job may send back, in bytes or with a unit:
                                64M (TAIAT_MAX_RESULT_BYTES; default 16777216).
  --log-tail-bytes SIZE         Bytes kept of the end of each attempt's stdout, and of its
                                stderr, in the database, or with a unit: 64K; the rest is dropped
                                and counted (TAIAT_LOG_TAIL_BYTES; default 65536).
  --forward-output              Also log each line a job writes to stdout or stderr as a line
                                of the supervisor's, prefixed with the job's id
                                (TAIAT_FORWARD_OUTPUT=1).
  --lease S                     Seconds without a heartbeat after which this supervisor is
                                taken for dead and its jobs are run elsewhere; registered with
                                it, so its peers judge it by it (TAIAT_LEASE; default 30).
  --quarantine-after N          Fail a job for good once it has crashed (signal, memory, lost
                                supervisor) on N attempts in a row (TAIAT_QUARANTINE_AFTER;
                                default 3).
  --status-file PATH            JSON status file, rewritten atomically (TAIAT_STATUS_FILE).
  --metrics-file PATH           Prometheus textfile (TAIAT_METRICS_FILE).
  --no-listen                   Do not LISTEN for wake-ups on PostgreSQL; find jobs by polling
                                only (TAIAT_NO_LISTEN=1), e.g. behind a transaction pooler.
  --job-user NAME               Run each job as this user and its groups, so that a job
                                cannot signal the supervisor or read its files; needs a
                                supervisor that runs as root (TAIAT_JOB_USER).
  --no-fork-server              Fork jobs from the supervisor itself rather than from its small
                                fork server (TAIAT_NO_FORK_SERVER=1); slower, for debugging.
  --no-waiting-children         Fork each job's child when its job comes, rather than keep one
                                forked ahead for each free slot (TAIAT_NO_WAITING_CHILDREN=1).
  --no-claim-ahead              Never claim a job before a slot is free for it
                                (TAIAT_NO_CLAIM_AHEAD=1); see "Claiming ahead" in docs/internals.md.
  --burst                       Exit 0 once no job is ready, running, or due within the poll
                                interval; jobs scheduled for later (run_at) are left waiting,
                                and the log says how many and until when (TAIAT_BURST=1).
  --burst-wait-scheduled        --burst, waiting for jobs scheduled for later too: exit 0 once
                                nothing runs here and no job is pending
                                (TAIAT_BURST_WAIT_SCHEDULED=1).
  --log-level LEVEL             DEBUG, INFO, WARNING or ERROR (TAIAT_LOG_LEVEL;
                                default INFO).
  --status                      Print the state of the jobs and supervisors, start nothing.
  --version                     Print the version.
  -h --help                     Show this help.

Exit codes: 0 stopped cleanly; 64 bad command line; 65 tables missing or of another version
(run `python -m taiat.init_worker`); 69 database server unreachable at start; 78 bad setting,
or a database or role that does not exist.
"""

#: option -> (environment variable, kind of value); the option sets the SupervisorConfig field
#: of its name (`_field`). Unset options take the field's default, which the usage text
#: states in parentheses.
_SUPERVISOR_OPTIONS: dict[str, tuple[str, str]] = {
    "--database-url": ("TAIAT_DATABASE_URL", "text"),
    "--poll-interval": ("TAIAT_POLL_INTERVAL", "positive"),
    "--max-concurrent-jobs": ("TAIAT_MAX_CONCURRENT_JOBS", "count"),
    "--cleanup-interval-hours": ("TAIAT_CLEANUP_INTERVAL_HOURS", "positive"),
    "--history-retention-days": ("TAIAT_HISTORY_RETENTION_DAYS", "nonnegative"),
    "--job-timeout": ("TAIAT_JOB_TIMEOUT", "positive"),
    "--memory-limit": ("TAIAT_MEMORY_LIMIT", "megabytes"),
    "--memory-reserve": ("TAIAT_MEMORY_RESERVE", "reserve"),
    "--sandbox": ("TAIAT_SANDBOX", "sandbox"),
    "--max-processes": ("TAIAT_MAX_PROCESSES", "count"),
    "--cpu-limit": ("TAIAT_CPU_LIMIT", "positive"),
    "--drain-timeout": ("TAIAT_DRAIN_TIMEOUT", "nonnegative"),
    "--kill-grace": ("TAIAT_KILL_GRACE", "nonnegative"),
    "--max-result-bytes": ("TAIAT_MAX_RESULT_BYTES", "nonzero bytes"),
    "--log-tail-bytes": ("TAIAT_LOG_TAIL_BYTES", "bytes"),
    "--lease": ("TAIAT_LEASE", "positive"),
    "--quarantine-after": ("TAIAT_QUARANTINE_AFTER", "count"),
    "--status-file": ("TAIAT_STATUS_FILE", "path"),
    "--metrics-file": ("TAIAT_METRICS_FILE", "path"),
    "--log-level": ("TAIAT_LOG_LEVEL", "level"),
    "--queues": ("TAIAT_QUEUES", "queues"),
    "--job-user": ("TAIAT_JOB_USER", "text"),
}


#: The kinds of value that are sizes (`parse_size`: 512M, 2G, 1.5GiB): kind -> the unit a
#: plain number counts in, and the kind of number the size then is.
_SIZES: dict[str, tuple[str, str]] = {
    "megabytes": ("MB", "positive"),
    "bytes": ("B", "nonnegative"),  # a size that may be 0
    "nonzero bytes": ("B", "count"),
}


def _field(option: str) -> str:
    """The SupervisorConfig field an option sets."""
    name = option.lstrip("-").replace("-", "_")
    return "memory_limit_mb" if name == "memory_limit" else name


def setting(args: dict, option: str, env: str) -> str | None:
    """An option's value: the command line, else its environment variable, else None."""
    given = args.get(option)
    if given is not None:
        return given
    return from_environment(env)


def _convert(option: str, env: str, kind: str, raw: str | None) -> Any:
    if raw is None:
        return None
    where = f"{option} (or {env})"
    if kind in ("text",):
        return raw
    if kind == "queues":
        return _queues(raw, where)
    if kind == "sandbox":
        mode = raw.strip().lower()
        if mode not in ("auto", "cgroup", "none"):
            raise ConfigurationError(f"{where} must be auto, cgroup or none, got {raw!r}")
        return mode
    if kind == "path":
        return Path(raw)
    if kind == "reserve":
        return parse_reserve(raw, where)
    if kind == "level":
        level = raw.upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ConfigurationError(f"{where}: unknown log level {raw!r}")
        return level
    if kind in _SIZES:
        unit, kind = _SIZES[kind]
        number = parse_size(raw, where, unit)
        if unit == "B" and isinstance(number, float) and math.isfinite(number):
            if not number.is_integer():
                raise ConfigurationError(f"{where} must be a whole number of bytes, got {raw!r}")
            number = int(number)
    else:
        try:
            number = int(raw) if kind == "count" else float(raw)
        except ValueError:
            raise ConfigurationError(f"{where} must be a number, got {raw!r}") from None
    check_limit(_field(option), number, where)
    if kind == "count" and number < 1:
        raise ConfigurationError(f"{where} must be at least 1, got {raw}")
    if kind == "positive" and not number > 0:
        raise ConfigurationError(f"{where} must be greater than 0, got {raw}")
    if kind in ("nonnegative", "bytes") and number < 0:
        raise ConfigurationError(f"{where} must be 0 or more, got {raw}")
    return number


def _queues(raw: str, where: str) -> tuple[str, ...]:
    """The queue names of a comma-separated list, each checked, once each in order."""
    from taiat.store.validation import QUEUE_NAME

    names = [name.strip() for name in raw.split(",")]
    for name in names:
        if QUEUE_NAME.fullmatch(name) is None:
            raise ConfigurationError(
                f"{where}: invalid queue name {name!r} in {raw!r}: give queue names separated "
                "by commas, each 1 to 64 letters, digits, '_', '.' or '-'"
            )
    return tuple(dict.fromkeys(names))


def _flag(env: str) -> bool:
    return (from_environment(env) or "").strip().lower() in ("1", "true", "yes", "on")


def supervisor_config(args: dict) -> tuple[SupervisorConfig, str]:
    """The supervisor's settings from the command line and the environment, checked."""
    values: dict[str, Any] = {}
    for option, (env, kind) in _SUPERVISOR_OPTIONS.items():
        value = _convert(option, env, kind, setting(args, option, env))
        if value is not None:
            values[_field(option)] = value
    level = values.pop("log_level", "INFO")
    values.setdefault("sandbox", "auto")  # the daemon's way; see SupervisorConfig.sandbox
    wait_scheduled = bool(args.get("--burst-wait-scheduled")) or _flag("TAIAT_BURST_WAIT_SCHEDULED")
    config = SupervisorConfig(
        **values,
        burst=bool(args.get("--burst")) or _flag("TAIAT_BURST") or wait_scheduled,
        burst_wait_scheduled=wait_scheduled,
        listen=not (args.get("--no-listen") or _flag("TAIAT_NO_LISTEN")),
        fork_server=not (args.get("--no-fork-server") or _flag("TAIAT_NO_FORK_SERVER")),
        waiting_children=not (
            args.get("--no-waiting-children") or _flag("TAIAT_NO_WAITING_CHILDREN")
        ),
        claim_ahead=not (args.get("--no-claim-ahead") or _flag("TAIAT_NO_CLAIM_AHEAD")),
        forward_output=bool(args.get("--forward-output")) or _flag("TAIAT_FORWARD_OUTPUT"),
        subreaper=True,  # the process is the supervisor's own
    )
    for path in (config.status_file, config.metrics_file):
        if path is not None and not path.parent.is_dir():
            raise ConfigurationError(f"no directory to write {path} in: create {path.parent}")
    return config, level


def supervisor_main(argv: Sequence[str] | None = None) -> int:
    from taiat import __version__

    args = parse(SUPERVISOR_USAGE, argv, version=__version__)
    try:
        config, level = supervisor_config(args)
        setup_logging(level)
        folders = import_path(args.get("--path"))
        put_first_on_path(folders)
        if config.job_user is not None and not args["--status"]:
            from taiat.forking import job_user

            job_user.check_import_path(job_user.resolve(config.job_user), folders)
        log.debug("importing agents from %s first", os.pathsep.join(folders))
        if args["--status"]:
            from taiat.cli.status_report import print_status

            return print_status(config.database_url, config.status_file)
        from taiat.supervisor.daemon import Supervisor

        if config.burst:
            from taiat.cli.progress import run_burst

            return run_burst(Supervisor(config))
        return Supervisor(config).run()
    except TaiatError as error:
        return fail(error)
