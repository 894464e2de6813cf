"""Taiat Job Manager: jobs with dependencies, retries and history, run one process per job."""

from taiat.context import current_job
from taiat.errors import TaiatError
from taiat.job_manager import JobManager
from taiat.jobs import Job, JobHistoryEntry, JobStatus, JobType

__version__ = "0.1.0"

__all__ = [
    "current_job",
    "Job",
    "JobHistoryEntry",
    "JobManager",
    "JobStatus",
    "JobType",
    "TaiatError",
]
