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
    #: The supervisor's engine (its inherited connections dropped in the child), or the
    #: database's URL.
    engine: Any = None
    _dependency_results: dict[str, Any] | None = field(default=None, repr=False)

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

    @property
    def dependency_results(self) -> dict[str, Any]:
        """The result of each dependency, by job id; read from the database on first use."""
        if self._dependency_results is None:
            from taiat.job_manager import JobManager

            results: dict[str, Any] = {}
            if self.job.dependencies:
                manager = JobManager(self.engine)
                for dep in self.job.dependencies:
                    found = manager.get_job(dep)
                    results[dep] = None if found is None else found.result
            self._dependency_results = results
        return self._dependency_results


_current: JobContext | None = None


def current_job() -> JobContext:
    """The job this process is running; only inside a job's child process."""
    if _current is None:
        raise TaiatError("taiat.current_job() is only available inside a running job")
    return _current


def set_current(context: JobContext | None) -> None:
    global _current
    _current = context
