"""With 100,000 blocked jobs waiting, the claim reads the ready-job index, not the backlog."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import text

from taiat import JobManager, JobType
from taiat.store import queries


def fill(manager: JobManager, blocked: int, ready: int) -> None:
    root = manager.create_job(JobType.AGENT, "root", run_at=datetime(2999, 1, 1))
    batch = [
        {"job_type": "agent", "name": f"b{i}", "dependencies": [root.id]} for i in range(blocked)
    ]
    for start in range(0, blocked, 20_000):
        manager.create_jobs(batch[start : start + 20_000])
    manager.create_jobs([{"job_type": "agent", "name": f"r{i}"} for i in range(ready)])


def test_claim_plan_is_an_index_scan(database_url: str) -> None:
    manager = JobManager(database_url)
    fill(manager, blocked=100_000, ready=10)
    with manager.engine.begin() as conn:
        conn.execute(text("ANALYZE taiat_jobs" if conn.dialect.name == "postgresql" else "ANALYZE"))
        plan = queries.explain_claim(conn)
        if conn.dialect.name == "postgresql":
            assert "ix_taiat_jobs_ready" in plan, plan
            assert "Seq Scan on taiat_jobs" not in plan, plan
        else:
            assert "USING INDEX ix_taiat_jobs_ready" in plan, plan
            assert "SCAN taiat_jobs\n" not in plan + "\n", plan
    claimed = manager.claim_jobs("w", 100)
    assert sorted(j.name for j in claimed) == sorted(f"r{i}" for i in range(10))
    manager.engine.dispose()
