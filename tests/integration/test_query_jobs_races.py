"""Query jobs on PostgreSQL under two supervisors at once: transitions on one plan's jobs
that race each other wait for each other (the plan's query is locked first) and never
deadlock, and the plan ends in one consistent state."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest
from query_helpers import clean, declared, query
from sqlalchemy import event
from support import race

from taiat import JobManager, JobStatus
from taiat.agents.planner import plan
from taiat.agents.registry import as_agent

ROUNDS = 15

#: raw -> left and right, side by side -> joined.
FORK = {
    "left": declared(clean, ["raw"], ["left"]),
    "right": declared(clean, ["raw"], ["right"]),
    "join": declared(clean, ["left", "right"], ["joined"]),
}


@pytest.fixture
def deadlocks(pg_manager: JobManager) -> Iterator[list[Any]]:
    """The deadlocks PostgreSQL reports to the manager's connections, as they happen."""
    seen: list[Any] = []

    def count(context: Any) -> None:
        if getattr(context.original_exception, "sqlstate", None) == "40P01":
            seen.append(context.original_exception)

    event.listen(pg_manager.engine, "handle_error", count)
    yield seen
    event.remove(pg_manager.engine, "handle_error", count)


def expanded_fork(manager: JobManager, name: str) -> tuple[str, dict[str, Any]]:
    """A query planned as FORK by hand, left and right running: its id, and its agent jobs as
    claimed, by agent."""
    job = manager.create_job("query", name, payload=query("joined", raw=[1]), max_retries=0)
    [claimed] = manager.claim_jobs("here:1:a", 1)
    agents = {n: as_agent(n, e) for n, e in FORK.items()}
    found = plan(agents, "joined", {"raw"})
    ids = manager.expand_query(job.id, claimed.claim_seq, found.to_json())
    assert ids is not None
    running = {j.payload["agent_name"]: j for j in manager.claim_jobs("here:1:a", 2)}
    assert set(running) == {"left", "right"}
    return job.id, {**running, "join": manager.get_job(ids[2])}


def test_sibling_agents_failing_for_good_at_once_fail_the_query_once(
    pg_manager: JobManager, deadlocks: list[Any]
) -> None:
    for round_ in range(ROUNDS):
        query_id, agents = expanded_fork(pg_manager, f"q{round_}")
        left, right = agents["left"], agents["right"]
        outcomes = race(
            partial(pg_manager.fail_job, left.id, left.claim_seq, "left broke", retry=False),
            partial(pg_manager.fail_job, right.id, right.claim_seq, "right broke", retry=False),
        )
        # One failure fails the query and cancels the sibling; the sibling's is then stale.
        assert sorted(outcomes, key=str) == [None, JobStatus.FAILED]
        failed = "left" if outcomes[0] is JobStatus.FAILED else "right"
        other = "right" if failed == "left" else "left"
        done = pg_manager.get_job(query_id)
        assert done.status is JobStatus.FAILED
        assert done.error_message.startswith(f"agent {failed} (job {agents[failed].id}) failed")
        assert pg_manager.get_job(agents[failed].id).status is JobStatus.FAILED
        for cancelled in (other, "join"):
            assert pg_manager.get_job(agents[cancelled].id).status is JobStatus.CANCELLED
    assert deadlocks == []


def test_the_goal_agent_completing_as_its_query_is_cancelled_settles_one_way(
    pg_manager: JobManager, deadlocks: list[Any]
) -> None:
    for round_ in range(ROUNDS):
        query_id, agents = expanded_fork(pg_manager, f"q{round_}")
        for side in ("left", "right"):
            job = agents[side]
            assert pg_manager.complete_job(job.id, job.claim_seq, {side: [1]})
        [sink] = pg_manager.claim_jobs("here:1:a", 1)
        completed, cancelled = race(
            partial(pg_manager.complete_job, sink.id, sink.claim_seq, {"joined": [1]}),
            partial(pg_manager.cancel_job, query_id),
        )
        assert completed != cancelled  # exactly one of them took effect
        done = pg_manager.get_job(query_id)
        if completed:
            assert done.status is JobStatus.COMPLETED and done.result == [1]
            assert pg_manager.get_job(sink.id).status is JobStatus.COMPLETED
        else:
            assert done.status is JobStatus.CANCELLED
            assert pg_manager.get_job(sink.id).status is JobStatus.CANCELLED
    assert deadlocks == []
