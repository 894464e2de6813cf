"""`taiat jobs list|show|create|cancel|retry|stack` and `taiat history` (`taiat jobs logs` is
`taiat.operator.logs`)."""

from __future__ import annotations

import json
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.text import Text

from taiat.cli.exits import EXIT_FAILURE, EXIT_OK
from taiat.errors import (
    AmbiguousJobId,
    DuplicateJob,
    InvalidDependency,
    InvalidJob,
    JobNotFound,
    UsageError,
)
from taiat.job_manager import JobManager
from taiat.jobs import Attempt, Job, JobStatus
from taiat.operator import logs, lookups, queues, render
from taiat.operator.options import error, job_id, lease, manager, number, status_option
from taiat.store.validation import (
    BIGINT_RANGE,
    INTEGER_RANGE,
    MAX_JSON_DEPTH,
    check_text,
    shown,
    utc_naive,
)

#: Lines of each stream of each attempt's output that `jobs show` shows (`jobs logs`: all).
SHOWN_LINES = 20
_RELATIVE = re.compile(r"^\+(\d+(?:\.\d+)?)([smhd]?)$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def list_command(args: dict) -> int:
    status = status_option(args)
    limit = number(args, "--limit", int, 100, 1, BIGINT_RANGE[1])
    if args["--ready"] and status not in (None, JobStatus.PENDING):
        raise UsageError("--ready lists pending jobs only: leave out --status")
    jobs = lookups.find_jobs(
        manager(args),
        status,
        ready=args["--ready"],
        name=args["--name"],
        queue=args["--queue"],
        limit=limit,
    )
    if args["--json"]:
        render.print_json([render.job_record(job) for job in jobs])
        return EXIT_OK
    rows = (
        (
            job.id,
            job.name,
            render.status_text(job.status),
            job.priority,
            render.tries_text(job),
            render.when(job.updated_at or job.created_at),
            render.first_line(job.error_message),
        )
        for job in jobs
    )
    columns = ("ID", "NAME", "STATUS", "PRI", "TRY", "UPDATED (UTC)", "ERROR")
    render.print_rows(render.console(), columns, rows)
    return EXIT_OK


def show_command(args: dict) -> int:
    wanted = job_id(args)
    jm = manager(args)
    job = jm.get_job(wanted)
    if job is None:
        raise JobNotFound(f"no job has id {wanted}")
    dependencies = lookups.jobs_by_id(jm, job.dependencies)
    attempts = jm.get_attempts(job.id)
    # The running attempt's output so far: the ended ones' come with their attempts.
    live = [o for o in jm.get_output(job.id, job.claim_seq) if not o.final] if job.claim_seq else []
    runs = [lookups.Run(a.attempt, a, a.output) for a in attempts]
    runs += [lookups.Run(o.attempt, None, o) for o in live]
    unserved = jm.unserved_agent(job, lease=lease(args))
    waiting = None if unserved is None else queues.unserved_text(unserved)
    if args["--json"]:
        render.print_json(
            {
                "job": render.job_record(job),
                "dependencies": [
                    _dependency(dep, dependencies.get(dep)) for dep in job.dependencies
                ],
                "attempts": [render.attempt_record(a) for a in attempts],
                "running_output": render.record(live[0]) if live else None,
                "waiting_for": waiting,
            }
        )
        return EXIT_OK
    out = render.console()
    rows = _fields(job)
    if waiting is not None:
        rows.insert(3, ("waiting", Text(waiting, style="yellow")))
    field = render.table("FIELD", "VALUE", rows=rows, wrap=True, width=out.width)
    field.show_header = False
    parts: list[Any] = [Text(f"job {job.id}", style="bold"), field, ""]
    deps = render.table(
        "ID",
        "NAME",
        "STATUS",
        rows=[_dependency_row(dep, dependencies.get(dep)) for dep in job.dependencies],
        title="dependencies",
        width=out.width,
    )
    parts += [deps if job.dependencies else "dependencies: none", ""]
    parts.append(_attempts_table(attempts, out.width) if attempts else "attempts: none yet")
    written = [run for run in runs if run.output is not None and not run.output.empty]
    if written:
        parts += ["", Text(f"output (the last {SHOWN_LINES} lines of each stream)", style="bold")]
        parts += [Text(logs.run_text(job, run, SHOWN_LINES).rstrip("\n")) for run in written]
    render.show(out, *parts)
    return EXIT_OK


def _dependency_row(dep: str, found: Job | None) -> tuple[Any, ...]:
    if found is None:
        return (dep, "(gone from history)", "-")
    return (dep, found.name, render.status_text(found.status))


def _dependency(dep: str, found: Job | None) -> dict[str, Any]:
    if found is None:
        return {"id": dep, "name": None, "status": None}
    return {"id": dep, "name": found.name, "status": found.status.value}


def _fields(job: Job) -> list[tuple[str, Any]]:
    fields: list[tuple[str, Any]] = [
        ("name", job.name),
        ("type", job.job_type.value),
        ("status", render.status_text(job.status)),
    ]
    if job.description:
        fields.append(("description", job.description))
    fields += [
        ("queue", job.queue),
        ("priority", str(job.priority)),
        ("attempt", f"{render.tries(job) or 'none yet'} of at most {job.max_retries + 1}"),
        (
            "timeout",
            "supervisor's default"
            if job.timeout_seconds is None
            else render.duration(job.timeout_seconds),
        ),
        ("created", render.when(job.created_at)),
    ]
    if job.status.value == "pending" and job.run_at is not None:
        fields.append(("not before", render.when(job.run_at)))
    if job.started_at is not None:
        fields.append(("started", render.when(job.started_at)))
    if job.completed_at is not None:
        fields.append(("finished", render.when(job.completed_at)))
    if job.worker_id:
        fields.append(("supervisor", job.worker_id))
    fields.append(("payload", json.dumps(job.payload, sort_keys=True)))
    if job.result is not None:
        fields.append(("result", json.dumps(job.result, sort_keys=True, default=str)))
    if job.error_message:
        fields.append(("error", Text(job.error_message.strip(), style="red")))
    return fields


def _attempts_table(attempts: list[Attempt], width: int) -> Any:
    rows = []
    for a in attempts:
        cpu = None
        if a.cpu_user_seconds is not None or a.cpu_system_seconds is not None:
            cpu = (a.cpu_user_seconds or 0.0) + (a.cpu_system_seconds or 0.0)
        if a.exit_signal is not None:
            exit_cause = f"signal {a.exit_signal}"
        else:
            exit_cause = "-" if a.exit_code is None else f"code {a.exit_code}"
        rows.append(
            (
                str(a.attempt),
                a.host or "-",
                "-" if a.pid is None else str(a.pid),
                render.status_text(a.outcome or "-"),
                exit_cause,
                render.duration(a.wall_seconds),
                render.duration(cpu),
                render.size(a.peak_rss_bytes),
                render.when(a.ended_at),
                render.first_line(a.error_message),
            )
        )
    columns = ("#", "HOST", "PID", "OUTCOME", "EXIT", "WALL", "CPU", "PEAK RSS", "ENDED (UTC)")
    return render.table(*columns, "ERROR", rows=rows, title="attempts", width=width)


# -- changing ------------------------------------------------------------------------------


def _payload(args: dict) -> dict[str, Any]:
    if args["--payload-file"] is not None:
        where = args["--payload-file"]
        text, source = _read(where, "--payload-file"), f"--payload-file {where}"
    elif args["--payload"] is not None:
        text, source = args["--payload"], "--payload"
    else:
        return {}
    value = _json(text, source)
    if not isinstance(value, dict):
        raise UsageError(f"{source} must be a JSON object, got {type(value).__name__}")
    return value


def _read(where: str, option: str) -> str:
    """The text of the file `where` (- for standard input) that `option` names."""
    try:
        return sys.stdin.read() if where == "-" else Path(where).read_text()
    except OSError as exc:
        raise UsageError(f"cannot read {option} {where}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"cannot read {option} {where}: it is not UTF-8 text ({exc})") from None


def _json(text: str, source: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{source} is not valid JSON: {exc}") from None
    except RecursionError:
        raise UsageError(
            f"{source} nests objects and arrays more than {MAX_JSON_DEPTH} deep, which is too "
            "deep to be stored and read back"
        ) from None


def parse_time(raw: str, now: datetime | None = None, what: str = "--run-at") -> datetime:
    """ISO 8601 (naive means UTC) or "+N[s|m|h|d]" from `now`; naive UTC. Errors name
    `what`."""
    relative = _RELATIVE.match(raw.strip())
    try:
        if relative:
            base = now or datetime.now(UTC).replace(tzinfo=None)
            seconds = float(relative.group(1)) * _UNIT_SECONDS[relative.group(2)]
            return base + timedelta(seconds=seconds)
        return utc_naive(datetime.fromisoformat(raw.strip()))
    except (OverflowError, InvalidJob):
        raise UsageError(
            f"{what} {shown(raw)} is out of range: it must fall in years 1 to 9999 (UTC)"
        ) from None
    except ValueError:
        raise UsageError(
            f"{what} {raw!r} is not a time: use ISO 8601 (2030-01-31T09:00:00) or +30m"
        ) from None


def create_command(args: dict) -> int:
    if args["--file"] is not None:
        return _create_from_file(args)
    payload = _payload(args)
    run_at = None if args["--run-at"] is None else parse_time(args["--run-at"])
    jm = manager(args)
    dependencies = [
        lookups.resolve_id(jm, check_text(dep, "dependency id"), missing_ok=True)
        for dep in args["--depends-on"]
    ]
    job = jm.create_job(
        args["--type"],
        args["--name"],
        args["--description"],
        payload,
        dependencies,
        number(args, "--max-retries", int, 3, 0, INTEGER_RANGE[1]),
        priority=number(args, "--priority", int, 0, *INTEGER_RANGE),
        timeout_seconds=number(args, "--timeout", float, None, 0),
        run_at=run_at,
        queue="default" if args["--queue"] is None else args["--queue"],
    )
    print(job.id)
    return EXIT_OK


def _create_from_file(args: dict) -> int:
    """`jobs create --file FILE`: the jobs of a JSON list of `create_jobs` items, created in
    one transaction; each new id printed after the file's key for its job (its "id", or #N,
    its place in the list, from 0)."""
    where = args["--file"]
    source = f"--file {where}"
    items = _json(_read(where, "--file"), source)
    if not isinstance(items, list):
        raise UsageError(
            f"{source} must be a JSON list of jobs, each an object of create_job's keywords "
            f"(job_type, name, id, dependencies...), got {_json_kind(items)}"
        )
    if not items:
        raise UsageError(f"{source} holds no jobs: the list is empty")
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise UsageError(
                f"{source}: job #{index} must be a JSON object of create_job's keywords, got "
                f"{_json_kind(item)}"
            )
    jm = manager(args)
    inside = {item["id"] for item in items if isinstance(item.get("id"), str)}
    try:
        specs = [_file_job(jm, index, item, inside) for index, item in enumerate(items)]
        created = jm.create_jobs(specs)
    except (UsageError, InvalidJob, InvalidDependency, DuplicateJob, AmbiguousJobId) as exc:
        raise type(exc)(f"{source}: {exc}") from None
    keys = [
        item["id"] if isinstance(item.get("id"), str) else f"#{index}"
        for index, item in enumerate(items)
    ]
    if args["--json"]:
        render.print_json({key: job.id for key, job in zip(keys, created, strict=True)})
    else:
        for key, job in zip(keys, created, strict=True):
            print(f"{key}  {job.id}")
    return EXIT_OK


def _file_job(jm: JobManager, index: int, item: dict[str, Any], inside: set[str]) -> dict[str, Any]:
    """A job of `--file` as `create_jobs` takes it: `run_at` read as `--run-at` is, and each
    dependency outside the file that is the beginning of one job's id made that id."""
    job = dict(item)
    if isinstance(job.get("run_at"), str):
        job["run_at"] = parse_time(job["run_at"], what=f"job #{index}'s run_at")
    dependencies = job.get("dependencies")
    if isinstance(dependencies, list):
        job["dependencies"] = [
            lookups.resolve_id(jm, dep, missing_ok=True) if _outside(dep, inside) else dep
            for dep in dependencies
        ]
    return job


def _outside(dep: Any, inside: set[str]) -> bool:
    """Whether `dep` names, as valid text, a job outside the file."""
    if not isinstance(dep, str) or not dep or dep in inside:
        return False
    try:
        check_text(dep, "dependency id")
    except InvalidJob:
        return False  # create_jobs says what is wrong with it
    return True


def _json_kind(value: Any) -> str:
    """What a JSON value is, in JSON's words."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    kinds = {dict: "an object", list: "an array", str: "a string"}
    return kinds.get(type(value), "a number")


def cancel_command(args: dict) -> int:
    wanted = job_id(args)
    jm = manager(args)
    if jm.cancel_job(wanted):
        print(f"cancelled job {wanted} and every job waiting on it")
        return EXIT_OK
    job = jm.get_job(wanted)
    status = job.status.value if job else "finished"
    error(f"job {wanted} already {status}; nothing to cancel")
    return EXIT_FAILURE


def stack_command(args: dict) -> int:
    """Print a running job's stack now, as its supervisor had its child dump it."""
    wanted = job_id(args)
    timeout = number(args, "--timeout", float, 10.0, 0)
    print(manager(args).job_stack(wanted, timeout=timeout))
    return EXIT_OK


def retry_command(args: dict) -> int:
    job = manager(args).retry_job(job_id(args))
    print(f"job {job.id} ({job.name}) is pending again, retries reset")
    return EXIT_OK


def history_command(args: dict) -> int:
    status = status_option(args)
    limit = number(args, "--limit", int, 10, 1, BIGINT_RANGE[1])
    entries = manager(args).get_job_history(limit=limit, status=status)
    if args["--json"]:
        render.print_json(entries)
        return EXIT_OK
    rows = (
        (
            render.when(entry.completed_at),
            render.status_text(entry.status),
            entry.job_id,
            entry.name,
            render.duration(render.took(entry, entry.attempts)),
            str(len(render.runs(entry, entry.attempts))),
            render.first_line(entry.error_message),
        )
        for entry in entries
    )
    columns = ("FINISHED (UTC)", "STATUS", "JOB ID", "NAME", "RAN", "RUNS", "ERROR")
    render.print_rows(render.console(), columns, rows)
    return EXIT_OK
