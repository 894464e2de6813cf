"""The supervisor's settings: a plain dataclass, light to import (the command line builds one
before it knows whether it will run a supervisor at all)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MiB = 1 << 20


@dataclass
class SupervisorConfig:
    """Every setting of the supervisor; the command line and `TAIAT_*` variables fill it."""

    database_url: str | None = None
    poll_interval: float = 5.0
    max_concurrent_jobs: int = 4
    cleanup_interval_hours: float = 24.0
    history_retention_days: float = 30.0
    job_timeout: float = 3600.0
    memory_limit_mb: float | None = None
    drain_timeout: float = 60.0
    kill_grace: float = 5.0
    status_file: Path | None = None
    metrics_file: Path | None = None
    burst: bool = False
    max_result_bytes: int = 16 * MiB
    lease: float = 30.0
    #: LISTEN for wake-ups (PostgreSQL); off, only polling finds new jobs.
    listen: bool = True
    quarantine_after: int = 3
    status_interval: float = 2.0
    heartbeat_interval: float = 10.0
    memory_sample_interval: float = 0.2
    #: How often running jobs' claims are checked against the database (cancel, take-back).
    check_interval: float = 1.0
    #: Fork jobs from a small fork server rather than from the supervisor itself: forking a
    #: process that has not loaded the database stack is several times cheaper.
    fork_server: bool = True
    #: Claim jobs ahead of free slots while jobs are short (see `taiat.ahead`): a freed slot
    #: is filled at once, and endings are written together.
    claim_ahead: bool = True
    #: Make the supervisor's process a child subreaper (PR_SET_CHILD_SUBREAPER), which reaps
    #: and kills what a dead fork server leaves: the daemon's way. Off for a program that
    #: runs a supervisor inside itself, whose own children it would otherwise kill.
    subreaper: bool = False


__all__ = ["MiB", "SupervisorConfig"]
