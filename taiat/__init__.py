"""Taiat Job Manager: jobs with dependencies, retries and history, run one process per job.

The names below are imported when first used, so that a process which needs only a job's side
of the package (the fork server and the jobs it forks) never loads the database stack.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from taiat.context import current_job
    from taiat.errors import TaiatError
    from taiat.job_manager import JobManager
    from taiat.jobs import Job, JobHistoryEntry, JobStatus, JobType, Outcome

__version__ = "0.1.0"

_WHERE = {
    "current_job": "taiat.context",
    "TaiatError": "taiat.errors",
    "JobManager": "taiat.job_manager",
    "Job": "taiat.jobs",
    "JobHistoryEntry": "taiat.jobs",
    "JobStatus": "taiat.jobs",
    "JobType": "taiat.jobs",
    "Outcome": "taiat.jobs",
}

__all__ = [
    "current_job",
    "Job",
    "JobHistoryEntry",
    "JobManager",
    "JobStatus",
    "JobType",
    "Outcome",
    "TaiatError",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'taiat' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
