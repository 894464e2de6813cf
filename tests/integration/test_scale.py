"""With 100,000 blocked jobs waiting, the claim reads the ready-job index, not the backlog."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import text

from taiat import JobManager, JobType, queries


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
    statement = queries.claim_statement("w", 4)
    compiled = statement.compile(manager.engine, compile_kwargs={"literal_binds": True})
    with manager.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("ANALYZE taiat_jobs"))
            plan = "\n".join(r[0] for r in conn.execute(text(f"EXPLAIN {compiled}")))
            assert "ix_taiat_jobs_ready" in plan, plan
            assert "Seq Scan on taiat_jobs" not in plan, plan
        else:
            conn.execute(text("ANALYZE"))
            rows = conn.execute(text(f"EXPLAIN QUERY PLAN {compiled}")).all()
            plan = "\n".join(str(r[-1]) for r in rows)
            assert "USING INDEX ix_taiat_jobs_ready" in plan, plan
            assert "SCAN taiat_jobs\n" not in plan + "\n", plan
    claimed = manager.claim_jobs("w", 100)
    assert sorted(j.name for j in claimed) == sorted(f"r{i}" for i in range(10))
    manager.engine.dispose()
