"""Admission by memory, on both databases: the agents a supervisor holds back are left out of
its claims, fast and limit-aware, whatever agents it serves; the latest peaks of each agent are
read from the attempts, a bounded number of each."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from support import agent_job

from taiat import JobManager
from taiat.jobs import Attempt
from taiat.store import queries

QUERY = {"job_type": "query", "name": "q", "payload": {"query": "x", "inferred_goal_output": "x"}}


def claimed_names(manager: JobManager, limit: int = 10) -> set[str]:
    return {job.name for job in manager.port.claim("w", limit).jobs}


def make_jobs(manager: JobManager) -> None:
    manager.create_jobs(
        [
            agent_job("big-1", "big"),
            agent_job("big-2", "big"),
            agent_job("small-1", "small"),
            QUERY,
        ]
    )


def test_held_back_agents_are_left_pending_for_every_agent_served(manager: JobManager) -> None:
    make_jobs(manager)
    manager.port.hold_back({"big"})
    assert claimed_names(manager) == {"small-1", "q"}
    pending = {job.name for job in manager.list_jobs(status="pending")}
    assert pending == {"big-1", "big-2"}
    manager.port.hold_back(())
    assert claimed_names(manager) == {"big-1", "big-2"}


def test_held_back_agents_are_left_pending_for_a_list_served(manager: JobManager) -> None:
    make_jobs(manager)
    manager.port.serve(None, {"big", "small"})
    manager.port.hold_back({"small", "unknown"})
    assert claimed_names(manager) == {"big-1", "big-2", "q"}


def test_the_limit_aware_claim_leaves_held_back_agents_too(manager: JobManager) -> None:
    manager.set_limit("agent:small", concurrency=5)
    make_jobs(manager)
    manager.port.hold_back({"big"})
    assert claimed_names(manager) == {"small-1", "q"}
    manager.port.serve(None, {"big", "small"})
    assert claimed_names(manager) == set()
    manager.port.hold_back(())
    assert claimed_names(manager) == {"big-1", "big-2"}


def _attempt(job_id: str, seq: int, ended: datetime, peak: int) -> Attempt:
    return Attempt(
        job_id=job_id, attempt=seq, outcome="completed", ended_at=ended, peak_rss_bytes=peak
    )


def test_recent_peaks_are_read_per_agent_newest_first(manager: JobManager) -> None:
    start = datetime(2026, 1, 1)
    specs = [agent_job(f"a{i}", "a") for i in range(5)] + [agent_job("b0", "b")]
    specs.append(QUERY)
    manager.create_jobs(specs)
    jobs = manager.port.claim("w", 10).jobs
    for n, job in enumerate(sorted(jobs, key=lambda j: j.name)):
        peak = 0 if job.name == "a4" else (n + 1) * 1000
        attempt = _attempt(job.id, job.claim_seq, start + timedelta(seconds=n), peak)
        if job.name == "a0":  # one of them still active: its agent is read from the jobs
            manager.port.requeue(job.id, job.claim_seq, attempt)
        else:
            assert manager.port.complete(job.id, job.claim_seq, {"ok": 1}, attempt)
    rows: list[Any] = manager.port.recent_peaks(per_agent=3, most=100)
    by_agent: dict[str, list[int]] = {}
    for row in rows:
        by_agent.setdefault(row["agent"], []).append(row["peak_rss_bytes"])
    # a4 recorded no peak; the query has no agent; of a's, the 3 newest.
    assert by_agent == {"a": [4000, 3000, 2000], "b": [6000]}
    since = manager.port.recent_peaks(per_agent=20, most=100, since=start + timedelta(seconds=3))
    assert {(row["agent"], row["peak_rss_bytes"]) for row in since} == {("a", 4000), ("b", 6000)}
    # The newest two attempts are the query's (no agent: not counted) and b0's.
    newest = manager.port.recent_peaks(per_agent=20, most=2)
    assert [row["peak_rss_bytes"] for row in newest] == [6000]


def test_the_claim_that_leaves_agents_out_is_an_index_scan_of_ready_jobs(
    manager: JobManager,
) -> None:
    manager.create_jobs([agent_job(f"r{i}", "a") for i in range(50)])
    with manager.transaction() as conn:
        for agents in (None, ["a", "b"]):
            plan = queries.explain_claim(conn, agents=agents, excluded_agents=["a"])
            assert "Seq Scan on taiat_jobs" not in plan, plan
            assert "SCAN taiat_jobs\n" not in plan + "\n", plan
