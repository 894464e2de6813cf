"""What a job is: its type, its status, and the records the store hands back."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any


class JobType(enum.StrEnum):
    #: Runs a Taiat query: the engine plans which agents produce the goal output.
    QUERY = "query"
    #: Calls one registered agent function with the payload's parameters.
    AGENT = "agent"


class JobStatus(enum.StrEnum):
    #: Waiting: for its dependencies, for its `run_at`, or for a free supervisor slot.
    PENDING = "pending"
    #: Claimed by a supervisor, whose child process is running it.
    RUNNING = "running"
    #: Finished with a result; the job is in history.
    COMPLETED = "completed"
    #: Failed on its last allowed attempt; the job is in history.
    FAILED = "failed"
    #: Cancelled by a user, or because a dependency can no longer complete; in history.
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in FINISHED_STATUSES


FINISHED_STATUSES = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})


class Outcome(enum.StrEnum):
    """How one attempt at a job ended: the `outcome` of its `Attempt` (the supervisor's
    `Ending.cause` while it records it)."""

    #: The job's code returned a result, which was stored: the job completed.
    COMPLETED = "completed"
    #: The job's code raised or reported failure, or its result was refused (too large, not
    #: JSON, unstorable); or it could not be started.
    FAILED = "failed"
    #: The job ran past its timeout and was killed.
    TIMED_OUT = "timed_out"
    #: The child died without a result: killed by a signal it did not ask for, or exited
    #: without sending one (or it was blamed for killing its fork server).
    CRASHED = "crashed"
    #: The child's process tree went over its memory limit and was killed.
    MEMORY = "memory"
    #: The supervisor cut the run short (it was stopping, or the run is not known to be the
    #: job's doing, as when its fork server died under it): back to pending, no retry spent.
    STOPPED = "stopped"
    #: The job was cancelled while it ran; its child was killed.
    CANCELLED = "cancelled"
    #: The claim was taken back (by another supervisor, or the job was cancelled or requeued)
    #: while the child ran; its child was killed.
    SUPERSEDED = "superseded"
    #: The supervisor that ran it died or stopped heartbeating; another one failed the run.
    LOST = "lost"
    #: A query job's run returned its plan, created as agent jobs, instead of a result.
    PLANNED = "planned"


_FIELDS: dict[type, frozenset[str]] = {}


def _pick(cls: type, row: Mapping[Any, Any]) -> dict[str, Any]:
    """The row's values for the dataclass's fields, with enums and JSON defaults restored."""
    names = _FIELDS.get(cls)
    if names is None:
        names = _FIELDS[cls] = frozenset(f.name for f in fields(cls))
    values = {key: value for key, value in row.items() if key in names}
    if "job_type" in values:
        values["job_type"] = _member(JobType, _JOB_TYPES, values["job_type"])
    if "status" in values:
        values["status"] = _member(JobStatus, _JOB_STATUSES, values["status"])
    if "payload" in values:
        values["payload"] = values["payload"] or {}
    if "dependencies" in values:
        values["dependencies"] = list(values["dependencies"] or [])
    return values


def _member(enum_type: Any, members: Mapping[str, Any], value: Any) -> Any:
    """`enum_type(value)`, by a dict look-up where it can (the enum's own call is slow)."""
    member = members.get(value)
    return enum_type(value) if member is None else member


@dataclass(frozen=True)
class AttemptOutput:
    """What one attempt's process tree wrote to its stdout and its stderr: the last bytes of
    each (as many as the supervisor's `--log-tail-bytes`), and how many bytes came before them
    and were dropped. Kept in `taiat_job_output`, by the attempt's end; while the attempt runs,
    the supervisor writes it there every few seconds (`final` False)."""

    job_id: str
    attempt: int
    stdout_tail: bytes = b""
    stdout_dropped_bytes: int = 0
    stderr_tail: bytes = b""
    stderr_dropped_bytes: int = 0
    #: When it was last written (naive UTC, the database's clock).
    updated_at: datetime | None = None
    #: Written at the attempt's end: all there is. Else it is the output as of `updated_at`
    #: of an attempt that runs (or whose supervisor was lost before its end).
    final: bool = False

    @property
    def empty(self) -> bool:
        """Nothing was written, to either stream."""
        return not (
            self.stdout_tail
            or self.stderr_tail
            or self.stdout_dropped_bytes
            or self.stderr_dropped_bytes
        )

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> AttemptOutput:
        values = _pick(cls, row)
        for name in ("stdout_tail", "stderr_tail"):
            values[name] = bytes(values.get(name) or b"")  # a memoryview from some drivers
        for name in ("stdout_dropped_bytes", "stderr_dropped_bytes"):
            values[name] = values.get(name) or 0
        values["final"] = bool(values.get("final"))
        return cls(**values)


@dataclass(frozen=True)
class Attempt:
    """One run of a job in a child process, with what it cost and how it ended."""

    job_id: str
    attempt: int
    worker_id: str | None = None
    host: str | None = None
    pid: int | None = None
    #: One of `Outcome`'s values (as read back from the database: plain text).
    outcome: str | None = None
    error_message: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    wall_seconds: float | None = None
    cpu_user_seconds: float | None = None
    cpu_system_seconds: float | None = None
    peak_rss_bytes: int | None = None
    exit_code: int | None = None
    exit_signal: int | None = None
    #: Its Python stack, as the child dumped it before it was ended for a timeout or a cancel
    #: (every thread's, innermost frame first; see `taiat.forking.stacks`).
    stack: str | None = None
    #: In a sandbox: how many processes other than its child were still alive in its cgroup
    #: when its child ended, or when it was stopped, and were killed (None: no sandbox).
    stragglers_killed: int | None = None
    #: What its process tree wrote to stdout and stderr (their tails), when it wrote anything
    #: and it was asked for (`JobManager.get_attempts`; history entries' attempts carry none).
    output: AttemptOutput | None = None

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> Attempt:
        return cls(**_pick(cls, row))


@dataclass(frozen=True)
class Job:
    """A job as stored: active in `taiat_jobs`, or rebuilt from its latest history entry."""

    id: str
    job_type: JobType
    name: str
    status: JobStatus
    description: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    dependencies: list[str] = field(default_factory=list)
    max_retries: int = 3
    retry_count: int = 0
    error_message: str | None = None
    result: Any = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    priority: int = 0
    run_at: datetime | None = None
    timeout_seconds: float | None = None
    unmet_dependencies: int = 0
    worker_id: str | None = None
    #: Rises by one on every claim; a write carrying an older value is refused.
    claim_seq: int = 0
    #: The queue it is in: only a supervisor that serves this queue claims it.
    queue: str = "default"

    @property
    def attempt(self) -> int:
        """The number of the current (or last) attempt, counting from 1."""
        return self.retry_count + 1

    @classmethod
    def from_row(cls, row: Mapping[Any, Any]) -> Job:
        values = _pick(cls, row)
        if len(values) < len(_FIELDS[cls]):
            return cls(**values)  # the defaults of the fields the row lacks
        return cls.from_fields(values)

    @classmethod
    def from_fields(cls, values: dict[str, Any]) -> Job:
        """The job whose fields hold `values` (a dict it keeps), one for each field, as the
        fields hold them (the type and status as members). Built as unpickling builds it,
        without the frozen `__init__`'s call per field: claims and bulk creation build
        thousands."""
        job = cls.__new__(cls)
        object.__setattr__(job, "__dict__", values)
        return job

    @classmethod
    def from_history(cls, entry: JobHistoryEntry) -> Job:
        return cls(
            id=entry.job_id,
            job_type=entry.job_type,
            name=entry.name,
            status=entry.status,
            description=entry.description,
            payload=entry.payload,
            dependencies=entry.dependencies,
            max_retries=entry.max_retries,
            retry_count=entry.retry_count,
            error_message=entry.error_message,
            result=entry.result,
            started_at=entry.started_at,
            completed_at=entry.completed_at,
            created_at=entry.job_created_at,
            updated_at=entry.created_at,
            priority=entry.priority,
            timeout_seconds=entry.timeout_seconds,
            worker_id=entry.worker_id,
            claim_seq=entry.claim_seq,
            queue=entry.queue,
        )

    def to_plain(self) -> tuple[Any, ...]:
        """The job's fields in order, as values `marshal` can carry: its type and status by
        value, its times (naive or UTC) in ISO form; `from_plain` rebuilds it exactly.
        ValueError for a time in another zone, which the ISO form would not keep as it was."""
        plain = {name: getattr(self, name) for name in _JOB_FIELDS}
        plain["job_type"], plain["status"] = self.job_type.value, self.status.value
        for name in _JOB_TIMES:
            when = plain[name]
            if when is not None:
                if when.tzinfo not in (None, UTC):
                    raise ValueError(f"{name} is in a time zone other than UTC")
                plain[name] = when.isoformat()
        return tuple(plain.values())

    @classmethod
    def from_plain(cls, values: tuple[Any, ...]) -> Job:
        """The job `to_plain` gave. Built as unpickling builds it, without `__init__`: a job's
        freshly forked child runs this, where every Python line run costs page copies."""
        job = cls.__new__(cls)
        state = job.__dict__  # filled in place: no second dict of every field
        state.update(zip(_JOB_FIELDS, values, strict=True))
        state["job_type"] = _JOB_TYPES[state["job_type"]]
        state["status"] = _JOB_STATUSES[state["status"]]
        for name in _JOB_TIMES:
            if state[name] is not None:
                state[name] = datetime.fromisoformat(state[name])
        return job


_JOB_FIELDS = tuple(f.name for f in fields(Job))
_JOB_TIMES = tuple(f.name for f in fields(Job) if str(f.type).startswith("datetime"))
_JOB_TYPES = {member.value: member for member in JobType}
_JOB_STATUSES = {member.value: member for member in JobStatus}


@dataclass(frozen=True)
class JobHistoryEntry:
    """A finished job in `taiat_job_history`; `id` is the entry's, `job_id` the job's."""

    id: str
    job_id: str
    job_type: JobType
    name: str
    status: JobStatus
    description: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    dependencies: list[str] = field(default_factory=list)
    error_message: str | None = None
    result: Any = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    duration_seconds: int | None = None
    created_at: datetime | None = None
    job_created_at: datetime | None = None
    max_retries: int = 3
    retry_count: int = 0
    priority: int = 0
    timeout_seconds: float | None = None
    worker_id: str | None = None
    claim_seq: int = 0
    queue: str = "default"
    attempts: tuple[Attempt, ...] = ()

    @classmethod
    def from_row(
        cls, row: Mapping[Any, Any], attempts: tuple[Attempt, ...] = ()
    ) -> JobHistoryEntry:
        return cls(**_pick(cls, row), attempts=attempts)


@dataclass(frozen=True)
class QueueInfo:
    """A queue as `JobManager.list_queues` finds it."""

    name: str
    #: Pending jobs waiting for a dependency, a retry's backoff or their `run_at`.
    pending: int = 0
    #: Pending jobs that could start now, but for a free slot (or the queue's pause).
    ready: int = 0
    running: int = 0
    paused: bool = False
    #: The ids of the live supervisors that serve it.
    supervisors: tuple[str, ...] = ()
    #: The agents of its pending agent jobs that no live supervisor serving it has.
    unserved_agents: tuple[str, ...] = ()
