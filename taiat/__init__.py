"""Taiat Job Manager: jobs with dependencies, retries and history, run one process per job.

The names below are imported when first used, so that a process which needs only a job's side
of the package (the fork server and the jobs it forks) never loads the database stack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from taiat.compat import keep_old_paths, lazy_names

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

__getattr__, __dir__ = lazy_names(__name__, _WHERE)
keep_old_paths()
