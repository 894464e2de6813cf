"""Checking what a caller asks to create, before anything touches the database."""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from taiat.errors import DuplicateJob, InvalidDependency, InvalidJob
from taiat.jobs import JobType
from taiat.planner import check_query_payload

#: The keyword names `create_job` takes, which is also what a `create_jobs` item may hold.
SPEC_KEYS = frozenset(
    {
        "id",
        "job_type",
        "name",
        "description",
        "payload",
        "dependencies",
        "max_retries",
        "priority",
        "timeout_seconds",
        "run_at",
    }
)


# A \u0000 escape in JSON text: preceded by an even number of backslashes, so not an escaped
# backslash followed by the letters "u0000".
_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")
#: `json.dumps(value, allow_nan=False)`, made once: `dumps` builds a new encoder for every call
#: with options, which in a job's fresh child is mostly page faults.
_ENCODER = json.JSONEncoder(allow_nan=False)


def new_job_id() -> str:
    return str(uuid.uuid4())


def json_text(value: Any, what: str) -> str:
    """`value` as JSON text, or InvalidJob naming `what` when it cannot be stored as JSON
    (PostgreSQL's JSONB, unlike JSON itself, has no room for a NUL character)."""
    try:
        text = _ENCODER.encode(value)
    except (TypeError, ValueError) as exc:
        raise InvalidJob(f"{what} is not JSON-serialisable: {exc}") from exc
    # The plain search first: the pattern's look-behind makes it try every position of a text
    # that may be hundreds of MB (seconds), where `in` takes milliseconds.
    if "\\u0000" in text and _NUL_ESCAPE.search(text):
        raise InvalidJob(f"{what} contains a NUL character (\\u0000), which cannot be stored")
    return text


def clean_text(value: str) -> str:
    """Text safe for any TEXT column: NUL characters shown as the two characters \\0."""
    return value.replace("\x00", "\\0")


def utc_naive(moment: datetime) -> datetime:
    """A datetime as naive UTC, the way the tables keep it; naive input is taken as UTC."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment


@dataclass(frozen=True)
class JobSpec:
    """A job to create, checked."""

    id: str
    job_type: JobType
    name: str
    description: str | None
    payload: dict[str, Any]
    dependencies: tuple[str, ...]
    max_retries: int
    priority: int
    timeout_seconds: float | None
    run_at: datetime | None

    def row(self, unmet: int, now: datetime) -> dict[str, Any]:
        """The job's whole row in `taiat_jobs`, as created."""
        row: dict[str, Any] = {
            "id": self.id,
            "job_type": self.job_type.value,
            "name": self.name,
            "description": self.description,
            "payload": self.payload,
            "dependencies": list(self.dependencies),
            "max_retries": self.max_retries,
            "priority": self.priority,
            "timeout_seconds": self.timeout_seconds,
            "unmet_dependencies": unmet,
            "run_at": self.run_at or now,
            "status": "pending",
            "retry_count": 0,
            "claim_seq": 0,
            "error_message": None,
            "result": None,
            "worker_id": None,
            "started_at": None,
            "completed_at": None,
            "created_at": now,
            "updated_at": now,
        }
        return row


def build_spec(
    job_type: Any,
    name: Any,
    description: Any = None,
    payload: Any = None,
    dependencies: Any = None,
    max_retries: Any = 3,
    *,
    priority: Any = 0,
    timeout_seconds: Any = None,
    run_at: Any = None,
    id: Any = None,  # noqa: A002 - the column's name
) -> JobSpec:
    """Check every field; raise InvalidJob or InvalidDependency naming the first bad one."""
    try:
        kind = JobType(job_type.value if isinstance(job_type, JobType) else job_type)
    except ValueError:
        known = ", ".join(t.value for t in JobType)
        raise InvalidJob(f"unknown job type {job_type!r}: use one of {known}") from None
    if not isinstance(name, str) or not name.strip():
        raise InvalidJob("a job needs a non-empty name")
    if description is not None and not isinstance(description, str):
        raise InvalidJob(f"description must be text, got {type(description).__name__}")
    for label, text in (("name", name), ("description", description), ("id", id)):
        if isinstance(text, str) and "\x00" in text:
            raise InvalidJob(f"the {label} contains a NUL character, which cannot be stored")
    payload = {} if payload is None else payload
    if not isinstance(payload, Mapping):
        raise InvalidJob(f"payload must be a JSON object (a dict), got {type(payload).__name__}")
    payload = dict(payload)
    json_text(payload, "payload")
    if kind is JobType.QUERY:
        check_query_payload(payload)
    if not _is_int(max_retries) or max_retries < 0:
        raise InvalidJob(f"max_retries must be a whole number >= 0, got {max_retries!r}")
    if not _is_int(priority):
        raise InvalidJob(f"priority must be a whole number, got {priority!r}")
    if timeout_seconds is not None and (
        isinstance(timeout_seconds, bool)
        or not isinstance(timeout_seconds, int | float)
        or not math.isfinite(timeout_seconds)
        or timeout_seconds <= 0
    ):
        raise InvalidJob(f"timeout_seconds must be a positive number, got {timeout_seconds!r}")
    if run_at is not None and not isinstance(run_at, datetime):
        raise InvalidJob(f"run_at must be a datetime, got {type(run_at).__name__}")
    if id is not None and (not isinstance(id, str) or not id.strip()):
        raise InvalidJob(f"a job id must be non-empty text, got {id!r}")
    job_id = id or new_job_id()
    return JobSpec(
        id=job_id,
        job_type=kind,
        name=name,
        description=description,
        payload=payload,
        dependencies=_dependency_ids(job_id, dependencies),
        max_retries=max_retries,
        priority=priority,
        timeout_seconds=None if timeout_seconds is None else float(timeout_seconds),
        run_at=None if run_at is None else utc_naive(run_at),
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _dependency_ids(job_id: str, dependencies: Any) -> tuple[str, ...]:
    if dependencies is None:
        return ()
    if isinstance(dependencies, str | bytes) or not isinstance(dependencies, Iterable):
        raise InvalidDependency(
            f"dependencies must be a list of job ids, got {type(dependencies).__name__}"
        )
    ids: list[str] = []
    for dep in dependencies:
        dep_id = getattr(dep, "id", dep)  # a Job is as good as its id
        if not isinstance(dep_id, str) or not dep_id:
            raise InvalidDependency(f"a dependency must be a job id, got {dep!r}")
        if dep_id == job_id:
            raise InvalidDependency(f"job {job_id} cannot depend on itself")
        if dep_id not in ids:
            ids.append(dep_id)
    return tuple(ids)


def build_batch(items: Iterable[Mapping[str, Any]]) -> list[JobSpec]:
    """Check a DAG given as `create_job` keyword dicts: unique ids and no cycle among them."""
    specs: list[JobSpec] = []
    for index, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise InvalidJob(f"job #{index} must be a dict of create_job's keywords")
        unknown = set(item) - SPEC_KEYS
        if unknown:
            raise InvalidJob(f"job #{index} has unknown keys: {', '.join(sorted(unknown))}")
        if "job_type" not in item or "name" not in item:
            raise InvalidJob(f"job #{index} needs at least job_type and name")
        specs.append(build_spec(**item))
    seen: set[str] = set()
    for spec in specs:
        if spec.id in seen:
            raise DuplicateJob(f"job id {spec.id} appears twice in the batch")
        seen.add(spec.id)
    _check_acyclic(specs)
    return specs


def _check_acyclic(specs: Sequence[JobSpec]) -> None:
    ids = {spec.id for spec in specs}
    inside = {spec.id: [dep for dep in spec.dependencies if dep in ids] for spec in specs}
    done: set[str] = set()
    for start in inside:
        if start in done:
            continue
        # Iterative depth-first search; `path` is the chain walked so far, for the message.
        path, on_path = [start], {start}
        branches = [iter(inside[start])]
        while branches:
            nxt = next(branches[-1], None)
            if nxt is None:
                branches.pop()
                on_path.discard(path[-1])
                done.add(path.pop())
            elif nxt in on_path:
                cycle = path[path.index(nxt) :] + [nxt]
                raise InvalidDependency(
                    f"dependency cycle: {' -> '.join(cycle)} (each depends on the next)"
                )
            elif nxt not in done:
                path.append(nxt)
                on_path.add(nxt)
                branches.append(iter(inside[nxt]))
