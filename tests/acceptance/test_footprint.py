"""A supervisor holds only what its database needs: the other database's driver is never
loaded (psycopg alone is about 13 MB)."""

from __future__ import annotations

from pathlib import Path

from conftest import wait_until
from support import agent_job, finished

from taiat import JobManager, JobStatus


def test_a_supervisor_loads_only_its_own_database_driver(
    database_url: str, manager: JobManager, supervisor
) -> None:
    sup = supervisor()
    job = manager.create_job(**agent_job("one", "plain", value=1))
    done = wait_until(lambda: finished(manager, job.id), 30, "the job", watch=sup)
    assert done.status is JobStatus.COMPLETED
    maps = Path(f"/proc/{sup.pid}/maps").read_text()
    psycopg_loaded = "psycopg" in maps or "libpq" in maps
    assert psycopg_loaded == database_url.startswith("postgresql")
    assert ("_sqlite3" in maps) == database_url.startswith("sqlite")
