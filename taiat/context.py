"""`taiat.current_job()`: what a job's own code can learn about the run it is part of."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from taiat.errors import TaiatError
from taiat.jobs import Job


@dataclass
class JobContext:
    """The running job, as its child process sees it."""

    job: Job
    #: The result of each dependency, by job id (None for one that has not completed): read
    #: by the supervisor in the claim's own transaction, so the child never opens the database.
    dependency_results: dict[str, Any] = field(default_factory=dict)
    #: For a query job: the agents of the live fleet, `{name: {"inputs": [...], "outputs":
    #: [...], "queue": str | None}}`, read in the claim's own transaction, that the planner
    #: plans it with; None otherwise.
    catalogue: dict[str, Any] | None = None

    @property
    def id(self) -> str:
        return self.job.id

    @property
    def name(self) -> str:
        return self.job.name

    @property
    def attempt(self) -> int:
        """1 on the first run, 2 on the first retry, ..."""
        return self.job.attempt

    @property
    def payload(self) -> dict[str, Any]:
        return self.job.payload


_current: JobContext | None = None


def current_job() -> JobContext:
    """The job this process is running; only inside a job's child process."""
    if _current is None:
        raise TaiatError("taiat.current_job() is only available inside a running job")
    return _current


def running_job() -> JobContext | None:
    """The job this process is running, or None outside a job's child."""
    return _current


def set_current(context: JobContext | None) -> None:
    global _current
    _current = context
