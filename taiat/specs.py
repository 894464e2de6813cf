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
# What `clean_text` escapes: NUL, and surrogates (in a str, only lone ones: a pair is one
# character), which neither database can store.
_INVALID_CHARS = re.compile("[\x00\ud800-\udfff]")
# The same as escapes in ASCII JSON text: NUL, a high surrogate not followed by a low one, a
# low one not after a high one (a pair is one character, an emoji). After an escaped
# backslash these are a string's text: that only sends a value the slow way.
_INVALID_ESCAPE = re.compile(
    r"\\u0000|\\ud[89ab][0-9a-f]{2}(?!\\ud[c-f])|(?<!\\ud[89ab][0-9a-f]{2})\\ud[c-f][0-9a-f]{2}"
)
#: How deep JSON from a job (a result, a plan) may nest to be stored: deeper, and those who
#: read it back (the supervisor for a dependent job, a program's `get_job`) run out of stack.
MAX_JSON_DEPTH = 512
# A string in JSON text once its escaped backslashes and quotes are gone.
_PLAIN_STRING = re.compile(r'"[^"]*"')
# ASCII JSON text down to its quotes and brackets, all of one kind.
_BRACKETS = {code: None for code in range(128) if chr(code) not in '"[]{}'} | {
    ord("{"): "[",
    ord("}"): "]",
}
#: `json.dumps(value, allow_nan=False)`, made once: `dumps` builds a new encoder for every call
#: with options, which in a job's fresh child is mostly page faults.
_ENCODER = json.JSONEncoder(allow_nan=False)


def new_job_id() -> str:
    return str(uuid.uuid4())


def json_text(value: Any, what: str, *, refuse_nul: bool = True) -> str:
    """`value` as JSON text, or InvalidJob naming `what` when it cannot be stored as JSON
    (PostgreSQL's JSONB, unlike JSON itself, has no room for a NUL character; without
    `refuse_nul`, for text whose strings are made valid before they are stored)."""
    try:
        text = _ENCODER.encode(value)
    except (TypeError, ValueError) as exc:
        raise InvalidJob(f"{what} is not JSON-serialisable: {exc}") from exc
    except RecursionError:
        raise InvalidJob(f"{what} is nested too deep to be encoded as JSON") from None
    if refuse_nul and _NUL_ESCAPE.search(text):
        raise InvalidJob(f"{what} contains a NUL character (\\u0000), which cannot be stored")
    return text


def clean_text(value: str) -> str:
    """Text any database can store, in a TEXT column or a JSON string: a NUL character shown
    as the two characters \\0, and a lone surrogate (what `os.listdir` and friends make of
    bytes that are not UTF-8) as its escape, \\udcff."""
    if _INVALID_CHARS.search(value) is None:
        return value
    return _INVALID_CHARS.sub(_escape_char, value)


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    return "\\0" if char == "\x00" else f"\\u{ord(char):04x}"


def clean_json(value: Any, what: str) -> Any:
    """`value` with every string and key in it made valid by `clean_text`, at any depth, so
    that both databases store it: the value itself when nothing needed it. InvalidJob naming
    `what` when it cannot be JSON at all: a type JSON has no room for, a number that is not
    finite, a key that is not text, nesting deeper than MAX_JSON_DEPTH."""
    try:  # the common case, at C speed: JSON already, and nothing in it to escape
        text = _ENCODER.encode(value)
    except (TypeError, ValueError, RecursionError):
        pass
    else:
        if _INVALID_ESCAPE.search(text) is None and _nesting(text) <= MAX_JSON_DEPTH:
            return value
    try:
        return _clean(value, 0)
    except _NotJson as exc:
        raise InvalidJob(f"{what} {exc}") from None
    except RecursionError:  # the caller's stack was deep already
        raise InvalidJob(f"{what} is nested too deep to be stored") from None


def _nesting(text: str) -> int:
    """How deep the JSON `text`, as `_ENCODER` writes it, nests (the number of brackets when
    that is no more than MAX_JSON_DEPTH; at most MAX_JSON_DEPTH + 1)."""
    brackets = text.count("[") + text.count("{")
    if brackets <= MAX_JSON_DEPTH:
        return brackets
    # Escaped backslashes and quotes gone, quotes open and close strings; with only quotes and
    # brackets left, "" is an empty string or two strings run together: brackets between
    # quotes are a string's text either way.
    quotes_and_brackets = text.replace("\\\\", "").replace('\\"', "").translate(_BRACKETS)
    nest = _PLAIN_STRING.sub("", quotes_and_brackets.replace('""', ""))
    depth = 0
    while nest and depth <= MAX_JSON_DEPTH:  # each round takes away the innermost level
        nest = nest.replace("[]", "")
        depth += 1
    return depth


class _NotJson(Exception):
    pass


def _clean(value: Any, depth: int) -> Any:
    # Loops, not comprehensions: one frame a level, so that MAX_JSON_DEPTH levels fit.
    if isinstance(value, str):
        return clean_text(value)
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        raise _NotJson(f"holds the number {value!r}, which JSON has no room for")
    if depth >= MAX_JSON_DEPTH:
        raise _NotJson(f"is nested too deep (more than {MAX_JSON_DEPTH} levels)")
    if isinstance(value, list | tuple):
        items = []
        for item in value:
            items.append(_clean(item, depth + 1))
        return items
    if isinstance(value, dict):
        cleaned = {}
        for key, item in value.items():
            if not isinstance(key, str):  # as JSON has it: 1 -> "1", None -> "null"
                if not isinstance(key, int | float | None) or not math.isfinite(key or 0):
                    raise _NotJson(f"has a key that is not text: {key!r}")
                key = _ENCODER.encode(key)
            cleaned[clean_text(key)] = _clean(item, depth + 1)
        return cleaned
    raise _NotJson(f"holds a {type(value).__name__}, which is not JSON")


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
