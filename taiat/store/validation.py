"""Checking what a caller asks to create, before anything touches the database."""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Any, NamedTuple

from taiat.errors import DuplicateJob, InvalidDependency, InvalidJob, InvalidLimit, NotJson
from taiat.jobs import Job, JobStatus, JobType
from taiat.query_plans import check_query_payload

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
        "queue",
        "limit_keys",
    }
)

#: A limit key: 1-128 letters, digits, `_ . - : /`.
LIMIT_KEY = re.compile(r"[A-Za-z0-9_.\-:/]{1,128}")
#: A rate: starts per period, "60/min", or "/s" (one a period).
RATE = re.compile(r"\s*(\d*)\s*/\s*([A-Za-z]+)\s*")
#: The periods a rate may name, in seconds.
RATE_PERIODS = {
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "min": 60.0,
    "minute": 60.0,
    "m": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
}

#: A queue's name: 1-64 letters, digits, `_`, `.` or `-`.
QUEUE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
DEFAULT_QUEUE = "default"


def check_queue(queue: Any) -> str:
    """`queue` if it is a queue's name; else InvalidJob naming it."""
    if not isinstance(queue, str) or QUEUE_NAME.fullmatch(queue) is None:
        raise InvalidJob(
            f"invalid queue name {shown(queue)}: use 1 to 64 letters, digits, '_', '.' or '-'"
        )
    return queue


def agent_of(job_type: JobType, payload: Mapping[str, Any]) -> str | None:
    """The agent an AGENT job runs (its payload's `agent_name`, if text); None for a query."""
    if job_type is not JobType.AGENT:
        return None
    name = payload.get("agent_name")
    return name if isinstance(name, str) else None


#: The range of an INTEGER column (max_retries, priority): PostgreSQL's, which is narrower than
#: SQLite's, so that both databases take the same values.
INTEGER_RANGE = (-(2**31), 2**31 - 1)
#: The range of a BIGINT, which bounds a LIMIT on both databases.
BIGINT_RANGE = (-(2**63), 2**63 - 1)
#: How deeply JSON may nest objects and arrays: a payload, and a job's result or plan. Deeper
#: ones cannot be encoded, stored and read back within Python's recursion limit everywhere
#: they travel (the supervisor, the fork server, the job's child, a dependent's child, a
#: program's `get_job`): a payload is refused when the job is created, a result ends its
#: attempt as a failure that says so.
MAX_JSON_DEPTH = 128

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
# A string in JSON text once its escaped backslashes and quotes are gone.
_PLAIN_STRING = re.compile(rb'"[^"]*"')
# JSON text (as UTF-8) down to its quotes and brackets, all of one kind: `bytes.translate`'s
# table and the bytes it deletes (at C speed; `str.translate` looks each character up in a
# dict, a hundred times slower on a result of thousands of brackets).
_ONE_KIND = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKETS = bytes(code for code in range(256) if code not in b'"[]{}')
# A \uD800-\uDFFF escape, so preceded by an even number of backslashes: a high surrogate, with
# the low one that completes the pair (one character) if it follows, or a low one alone.
_SURROGATE_ESCAPE = re.compile(
    r"(?<!\\)(?:\\\\)*\\u(?P<hex>d[89ab][0-9a-f]{2}(?P<low>\\ud[c-f][0-9a-f]{2})?|d[c-f][0-9a-f]{2})",
    re.IGNORECASE,
)
#: `json.dumps(value, allow_nan=False)`, made once: `dumps` builds a new encoder for every call
#: with options, which in a job's fresh child is mostly page faults.
_ENCODER = json.JSONEncoder(allow_nan=False)


class JsonText(str):
    """JSON text that was checked (`as_is`): valid JSON, with no text a database refuses, nested
    no deeper than MAX_JSON_DEPTH. A job's result travels from its child's pipe to the
    database as this text, stored as it is: never decoded and encoded again on the way."""

    __slots__ = ()


# What `as_is` leaves to the slow path: an escape of NUL or of a surrogate (in any case), and a
# number whose float may not be finite (a long run of digits, or an exponent of 100 or more).
_SUSPECT_TEXT = re.compile(r"\\u(?:0000|[dD][89a-fA-F])|\d{300}|[eE][+]?0*[1-9]\d{2}")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def as_is(data: bytes | str) -> JsonText | None:
    """`data`, JSON text (as UTF-8 bytes, or a str), as a `JsonText` to be stored as it is;
    None when it needs a closer look: not valid JSON, or holding what `clean_json` would change
    or refuse (NUL, a lone surrogate, a number that is not finite, nesting deeper than
    MAX_JSON_DEPTH). The text is read once, to check it, and the value read is dropped."""
    try:
        text = data.decode() if isinstance(data, bytes) else data
    except UnicodeDecodeError:
        return None
    if _SUSPECT_TEXT.search(text) is not None:
        return None
    try:
        json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return None
    if _nesting(text) > MAX_JSON_DEPTH:
        return None
    return JsonText(text)


def new_job_id() -> str:
    """A new job's id: a random UUID (version 4), as `str(uuid.uuid4())` writes it, made from
    the same 16 random bytes at a third of its cost (bulk creation makes one per job)."""
    digits = os.urandom(16).hex()
    return (
        f"{digits[:8]}-{digits[8:12]}-4{digits[13:16]}-"
        f"{_VARIANT[digits[16]]}{digits[17:20]}-{digits[20:]}"
    )


def new_job_ids(count: int) -> list[str]:
    """`count` new job ids (`new_job_id`'s), from one read of random bytes."""
    digits = os.urandom(16 * count).hex()
    return [
        f"{digits[at : at + 8]}-{digits[at + 8 : at + 12]}-4{digits[at + 13 : at + 16]}-"
        f"{_VARIANT[digits[at + 16]]}{digits[at + 17 : at + 20]}-{digits[at + 20 : at + 32]}"
        for at in range(0, 32 * count, 32)
    ]


#: The first hex digit of a version 4 UUID's fourth group, by the random one it replaces: the
#: variant's two bits (10) over the random digit's two low bits.
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


def json_text(value: Any, what: str, *, refuse_nul: bool = True) -> str:
    """`value` as JSON text, or InvalidJob naming `what` when it cannot be stored as JSON
    (PostgreSQL's JSONB, unlike JSON itself, has no room for a NUL character; without
    `refuse_nul`, for text whose strings are made valid before they are stored). A
    `JsonText` is JSON text already, checked: it is its own text."""
    if isinstance(value, JsonText):
        return value
    try:
        text = _encode(value)
    except (TypeError, ValueError) as exc:
        raise InvalidJob(f"{what} is not JSON-serialisable: {exc}") from exc
    except RecursionError:
        raise InvalidJob(f"{what} is nested too deep to be stored as JSON") from None
    # The plain search first: the pattern's look-behind makes it try every position of a text
    # that may be hundreds of MB (seconds), where `in` takes milliseconds.
    if refuse_nul and "\\u0000" in text and _NUL_ESCAPE.search(text):
        raise InvalidJob(f"{what} contains a NUL character (\\u0000), which cannot be stored")
    return text


def _encode(value: Any) -> str:
    """`_ENCODER.encode(value)`, by an encoder made once when the C one is there: `encode`
    makes a new one on each call, most of the cost of a small payload. It has no check for
    cycles; on any error, `_ENCODER` encodes the value again, for the error it gives."""
    if _C_ENCODER is None or value.__class__ is not dict:
        return _ENCODER.encode(value)
    try:
        return "".join(_C_ENCODER(value, 0))
    except Exception:  # noqa: BLE001 - the same error, from the encoder of the messages
        return _ENCODER.encode(value)


#: `_ENCODER`'s C encoder, made once, without a check for cycles (RecursionError for one, and
#: `_ENCODER` then says what it is); None where json has no C speedups.
_C_ENCODER = (
    None
    if c_make_encoder is None
    else c_make_encoder(
        None,
        _ENCODER.default,
        encode_basestring_ascii,
        None,
        _ENCODER.key_separator,
        _ENCODER.item_separator,
        False,
        False,
        False,
    )
)


def check_json(value: Any, what: str) -> str:
    """`value` as JSON text; InvalidJob naming `what` unless both databases store `value`
    alike and it can be read back anywhere: JSON, no NUL, no lone surrogate (PostgreSQL
    refuses it, SQLite would keep it), nested at most MAX_JSON_DEPTH deep."""
    text = json_text(value, what)
    if "\\u" in text:
        for escape in _SURROGATE_ESCAPE.finditer(text):
            if escape["low"] is None:
                raise InvalidJob(
                    f"{what} holds a lone surrogate (\\u{escape['hex'][:4]}, from bytes that are "
                    "not UTF-8?), which is not text and cannot be stored"
                )
    if _nesting(text) > MAX_JSON_DEPTH:
        raise InvalidJob(
            f"{what} nests objects and arrays more than {MAX_JSON_DEPTH} deep, which is "
            "too deep to be stored and read back"
        )
    return text


def check_text(value: str, what: str) -> str:
    """`value`, or InvalidJob naming `what` when a database cannot store it as text: a NUL
    character (PostgreSQL refuses it) or a lone surrogate, which is not text at all (undecodable
    bytes that Python keeps under `surrogateescape`, such as a file name or an argument)."""
    if "\x00" in value:
        raise InvalidJob(f"the {what} contains a NUL character, which cannot be stored")
    # What `clean_text` escapes in text from a job, refused in text from a caller (none in
    # ASCII text, which the string knows it is without a search).
    if not value.isascii() and (bad := _INVALID_CHARS.search(value)) is not None:
        raise InvalidJob(
            f"the {what} holds a lone surrogate ({bad.group()!r} at character {bad.start()}: "
            "bytes that are not UTF-8?), which is not text and cannot be stored"
        )
    return value


def whole_number(value: Any, what: str, low: int, high: int) -> int:
    """`value` if it is a whole number from `low` to `high`, else InvalidJob naming `what`."""
    if not _is_int(value) or not low <= value <= high:
        raise InvalidJob(f"{what} must be a whole number from {low} to {high}, got {shown(value)}")
    return int(value)


def shown(value: Any, width: int = 40) -> str:
    """`repr(value)` for a message, cut short when long (an int of 10**400 has 401 digits)."""
    try:
        text = repr(value)
    except ValueError:  # an int too long to print at all
        return f"an {type(value).__name__} too long to print"
    return text if len(text) <= width else f"{text[: width - 3]}..."


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
        # Plain searches first: a large result's text is hundreds of MB.
        suspect = "\\u0000" in text or "\\ud" in text
        valid = not suspect or _INVALID_ESCAPE.search(text) is None
        if valid and _nesting(text) <= MAX_JSON_DEPTH:
            return value
    try:
        return _clean(value, 0)
    except NotJson as exc:
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
    data = text.encode("utf-8", "surrogatepass")
    if b"\\" in data:  # a search for one byte is ten times faster than for two
        data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    quotes_and_brackets = data.translate(_ONE_KIND, _NOT_BRACKETS)
    nest = _PLAIN_STRING.sub(b"", quotes_and_brackets.replace(b'""', b""))
    depth = 0
    while nest and depth <= MAX_JSON_DEPTH:  # each round takes away the innermost level
        nest = nest.replace(b"[]", b"")
        depth += 1
    return depth


def _clean(value: Any, depth: int) -> Any:
    # Loops, not comprehensions: one frame a level, so that MAX_JSON_DEPTH levels fit.
    if isinstance(value, str):
        return clean_text(value)
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        raise NotJson(f"holds the number {value!r}, which JSON has no room for")
    if depth >= MAX_JSON_DEPTH:
        raise NotJson(f"is nested too deep (more than {MAX_JSON_DEPTH} levels)")
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
                    raise NotJson(f"has a key that is not text: {key!r}")
                key = _ENCODER.encode(key)
            cleaned[clean_text(key)] = _clean(item, depth + 1)
        return cleaned
    raise NotJson(f"holds a {type(value).__name__}, which is not JSON")


def utc_naive(moment: datetime) -> datetime:
    """A datetime as naive UTC, the way the tables keep it; naive input is taken as UTC.
    InvalidJob when UTC has no such day (an aware time near `datetime.min` or `max`)."""
    if moment.tzinfo is not None:
        try:
            moment = moment.astimezone(UTC).replace(tzinfo=None)
        except OverflowError:
            raise InvalidJob(
                f"{moment.isoformat()} is out of range: in UTC it falls before year 1 or "
                "after year 9999"
            ) from None
    return moment


class JobSpec(NamedTuple):
    """A job to create, checked. (A named tuple: made as fast as a tuple, for bulk creation,
    and as unchangeable; `_replace` makes a changed copy.)"""

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
    queue: str = DEFAULT_QUEUE
    agent: str | None = None
    limit_keys: tuple[str, ...] = ()
    #: The payload as JSON text (`check_json`'s), sent as it is by the statements that take
    #: JSON text (`queries.insert_ready_job`, `queries.copy_jobs`).
    payload_json: str = "{}"

    def again(self, new_id: str) -> JobSpec:
        """The same job once more: another id, its own copy of the payload."""
        return tuple.__new__(JobSpec, (new_id, *self[1:4], dict(self.payload), *self[5:]))

    def job(self, unmet: int, now: datetime) -> Job:
        """The job as created (what `row` stores), stamped `now`."""
        return Job.from_fields(
            {
                "id": self.id,
                "job_type": self.job_type,
                "name": self.name,
                "status": JobStatus.PENDING,
                "description": self.description,
                "payload": self.payload,
                "dependencies": list(self.dependencies),
                "max_retries": self.max_retries,
                "retry_count": 0,
                "error_message": None,
                "result": None,
                "started_at": None,
                "completed_at": None,
                "created_at": now,
                "updated_at": now,
                "priority": self.priority,
                "run_at": self.run_at or now,
                "timeout_seconds": self.timeout_seconds,
                "unmet_dependencies": unmet,
                "worker_id": None,
                "claim_seq": 0,
                "queue": self.queue,
            }
        )

    def row(self, unmet: int, now: datetime | None) -> dict[str, Any]:
        """The job's whole row in `taiat_jobs`, as created (its times None without `now`:
        the database's clock, for `queries.insert_ready_job`)."""
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
            "queue": self.queue,
            "agent": self.agent,
            "limit_keys": list(self.limit_keys),
            # `taiat jobs stack`: no request yet.
            "stack_requests": None,
            "stack_answered": None,
            "stack": None,
            "stack_at": None,
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
    queue: Any = DEFAULT_QUEUE,
    limit_keys: Any = None,
    new_id: str | None = None,
) -> JobSpec:
    """Check every field; raise InvalidJob or InvalidDependency naming the first bad one.
    `new_id` is the id the job takes when `id` is None (else a new one is made).

    Bulk creation checks every job of a batch: the common values (text, a dict, small whole
    numbers, no options) take a test of their type each, the others the full check."""
    kind = _KINDS.get(job_type) if isinstance(job_type, str) else None
    if kind is None:
        kind = _job_type(job_type)
    if not isinstance(name, str) or not name.strip():
        raise InvalidJob("a job needs a non-empty name")
    if description is not None and not isinstance(description, str):
        raise InvalidJob(f"description must be text, got {type(description).__name__}")
    check_text(name, "name")
    if description is not None:
        check_text(description, "description")
    if isinstance(id, str):
        check_text(id, "job id")
    if payload is None:
        payload = {}
    elif payload.__class__ is dict or isinstance(payload, Mapping):
        payload = dict(payload)
    else:
        raise InvalidJob(f"payload must be a JSON object (a dict), got {type(payload).__name__}")
    payload_json = check_json(payload, "payload")
    if kind is JobType.QUERY:
        check_query_payload(payload)
    if max_retries.__class__ is not int or not 0 <= max_retries <= INTEGER_RANGE[1]:
        whole_number(max_retries, "max_retries", 0, INTEGER_RANGE[1])
    if priority.__class__ is not int or not INTEGER_RANGE[0] <= priority <= INTEGER_RANGE[1]:
        whole_number(priority, "priority", *INTEGER_RANGE)
    if timeout_seconds is not None and not _positive_float(timeout_seconds):
        raise InvalidJob(f"timeout_seconds must be a positive number, got {shown(timeout_seconds)}")
    if run_at is not None and not isinstance(run_at, datetime):
        raise InvalidJob(f"run_at must be a datetime, got {type(run_at).__name__}")
    if id is not None and (not isinstance(id, str) or not id.strip()):
        raise InvalidJob(f"a job id must be non-empty text, got {id!r}")
    if queue.__class__ is not str or queue != DEFAULT_QUEUE:
        check_queue(queue)
    job_id = id or new_id or new_job_id()
    return JobSpec(
        job_id,
        kind,
        name,
        description,
        payload,
        () if dependencies is None else _dependency_ids(job_id, dependencies),
        max_retries,
        priority,
        None if timeout_seconds is None else float(timeout_seconds),
        None if run_at is None else _run_at(run_at),
        queue,
        agent_of(kind, payload),
        () if limit_keys is None else explicit_keys(limit_keys),
        payload_json,
    )


#: The job types by value (a `JobType` is its value too): a look-up, where `JobType(value)`
#: is a call of the enum's, ten times slower.
_KINDS = {kind.value: kind for kind in JobType}


def _job_type(value: Any) -> JobType:
    """`value` as a JobType, or InvalidJob listing the types."""
    try:
        return JobType(value.value if isinstance(value, JobType) else value)
    except ValueError:
        known = ", ".join(t.value for t in JobType)
        raise InvalidJob(f"unknown job type {value!r}: use one of {known}") from None


def limit_key(value: Any, error: type[Exception] = InvalidJob) -> str:
    """A limit key, checked; `error` (InvalidJob on a job) naming it otherwise."""
    if not isinstance(value, str) or not LIMIT_KEY.fullmatch(value):
        raise error(
            f"invalid limit key {shown(value)}: use 1-128 letters, digits, "
            "'_', '.', '-', ':' or '/'"
        )
    return value


def explicit_keys(value: Any) -> tuple[str, ...]:
    """A job's explicit limit keys, checked, each once, in the order given."""
    if value is None:
        return ()
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise InvalidJob(f"limit_keys must be a list of keys, got {type(value).__name__}")
    keys: list[str] = []
    for key in value:
        limit_key(key)
        if key not in keys:
            keys.append(key)
    return tuple(keys)


def limit_keys(queue: str | None, agent: str | None, explicit: Iterable[str] | None) -> list[str]:
    """Every limit key of a job: `queue:<its queue>`, `agent:<its agent>` (an AGENT job), and
    its explicit keys."""
    keys = [f"queue:{queue or 'default'}"]
    if agent:
        keys.append(f"agent:{agent}")
    for key in explicit or ():
        if key not in keys:
            keys.append(key)
    return keys


def concurrency_cap(value: Any) -> int | None:
    """A concurrency cap: a whole number of 0 or more, or None; InvalidLimit naming it."""
    if value is None:
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not _is_int(value) or not 0 <= value <= INTEGER_RANGE[1]:
        raise InvalidLimit(
            f"invalid concurrency {shown(value)}: give a whole number of jobs, 0 or more"
        )
    return value


def parse_rate(value: Any) -> tuple[int, float] | None:
    """A rate such as "60/min", "10/s", "/h" (one an hour): (starts, period in seconds), or
    None for None; InvalidLimit naming it otherwise."""
    if value is None:
        return None
    match = RATE.fullmatch(value) if isinstance(value, str) else None
    period = RATE_PERIODS.get(match.group(2).lower()) if match else None
    if match is None or period is None:
        raise InvalidLimit(
            f"invalid rate {shown(value)}: give starts per period, such as 60/min, 10/s or 100/h"
        )
    count = int(match.group(1)) if match.group(1) else 1
    if not 1 <= count <= INTEGER_RANGE[1]:
        raise InvalidLimit(f"invalid rate {shown(value)}: at least one start per period")
    return count, period


def rate_text(count: int | None, seconds: float | None) -> str | None:
    """A stored rate, as `parse_rate` reads it."""
    if count is None or seconds is None:
        return None
    unit = {1.0: "s", 60.0: "min", 3600.0: "h"}.get(seconds)
    return f"{count}/{unit}" if unit else f"{count}/{seconds:g}s"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive_float(value: Any) -> bool:
    """A finite number above 0 that a float holds (an int of 10**400 is none)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(float(value)) and value > 0
    except OverflowError:
        return False


def _run_at(moment: datetime) -> datetime:
    try:
        return utc_naive(moment)
    except InvalidJob as exc:
        raise InvalidJob(f"run_at {exc}") from None


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
        check_text(dep_id, "dependency id")
        if dep_id == job_id:
            raise InvalidDependency(f"job {job_id} cannot depend on itself")
        if dep_id not in ids:
            ids.append(dep_id)
    return tuple(ids)


def build_batch(items: Iterable[Mapping[str, Any]]) -> list[JobSpec]:
    """Check a DAG given as `create_job` keyword dicts: unique ids and no cycle among them."""
    items = list(items)
    new_ids = new_job_ids(len(items))
    specs: list[JobSpec] = []
    # A dict given more than once ([template] * 1000), with no id of its own, is checked once:
    # its other jobs take its checked values, a new id each and a payload of their own.
    checked: dict[int, JobSpec] = {}
    for index, item in enumerate(items):
        if (spec := checked.get(id(item))) is not None:
            specs.append(spec.again(new_ids[index]))
            continue
        if item.__class__ is not dict and not isinstance(item, Mapping):
            raise InvalidJob(f"job #{index} must be a dict of create_job's keywords")
        if not SPEC_KEYS.issuperset(item):
            unknown = set(item) - SPEC_KEYS
            raise InvalidJob(f"job #{index} has unknown keys: {', '.join(sorted(unknown))}")
        if "job_type" not in item or "name" not in item:
            raise InvalidJob(f"job #{index} needs at least job_type and name")
        specs.append(spec := build_spec(**item, new_id=new_ids[index]))
        if item.__class__ is dict and item.get("id") is None:
            checked[id(item)] = spec
    if len({spec.id for spec in specs}) < len(specs):
        seen: set[str] = set()
        for spec in specs:
            if spec.id in seen:
                raise DuplicateJob(f"job id {spec.id} appears twice in the batch")
            seen.add(spec.id)
    if any(spec.dependencies for spec in specs):
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
