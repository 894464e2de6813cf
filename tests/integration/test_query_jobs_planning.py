"""Query jobs on PostgreSQL and SQLite, planned: the plan, its agent jobs and their wiring,
and the queries that cannot be planned or created. The supervisor runs in this process and
forks real children (see tests/acceptance for the daemon)."""

from __future__ import annotations

from typing import Any

import pytest
from query_helpers import CHAIN, DIAMOND, clean, declared, plan_of, query, run_burst

from taiat import JobManager, JobStatus
from taiat.errors import InvalidJob

# -- planning ------------------------------------------------------------------------------


def test_chain_runs_in_order_and_completes_with_the_goal(
    database_url: str, manager: JobManager
) -> None:
    job = manager.create_job(
        "query", "chain", payload=query("report", raw=[3, -1, 4, 1], title="numbers")
    )
    run_burst(database_url, CHAIN)
    done = manager.get_job(job.id)
    assert done.status is JobStatus.COMPLETED, done.error_message
    assert done.result == "numbers: 3 values, total 8"
    plan = plan_of(manager, job.id)
    assert list(plan) == ["clean", "total", "describe"]
    ids = {agent: step["job_id"] for agent, step in plan.items()}
    assert plan["clean"]["after"] == []
    assert plan["total"]["after"] == [ids["clean"]]
    assert plan["describe"]["after"] == [ids["total"]]
    for agent, step in plan.items():
        agent_job = step["job"]
        assert agent_job.status is JobStatus.COMPLETED
        assert agent_job.payload["agent_name"] == agent
        assert agent_job.payload["query_job"] == job.id
        assert agent_job.dependencies == step["after"]
    # Every result is keyed by the agent's outputs, a bare value wrapped.
    assert plan["clean"]["job"].result == {"table": [1, 3, 4]}
    assert plan["total"]["job"].result == {"total": 8, "count": 3}
    # Inputs the query gives go to the agents that need them, and only to them.
    assert plan["clean"]["job"].payload["parameters"] == {"raw": [3, -1, 4, 1]}
    assert plan["describe"]["job"].payload["parameters"] == {"title": "numbers"}


def test_diamond_shares_its_root_and_joins_both_branches(
    database_url: str, manager: JobManager
) -> None:
    job = manager.create_job("query", "diamond", payload=query("summary", raw=[5, 1, 9]))
    run_burst(database_url, DIAMOND)
    done = manager.get_job(job.id)
    assert done.status is JobStatus.COMPLETED, done.error_message
    assert done.result == "total 15, spread 8; from 2 jobs"
    plan = plan_of(manager, job.id)
    assert list(plan) == ["clean", "total", "spread", "combine"]
    root = plan["clean"]["job_id"]
    assert plan["total"]["after"] == [root] and plan["spread"]["after"] == [root]
    assert set(plan["combine"]["after"]) == {plan["total"]["job_id"], plan["spread"]["job_id"]}
    assert all(step["job"].status is JobStatus.COMPLETED for step in plan.values())


@pytest.mark.parametrize(
    ("agents", "payload", "message"),
    [
        (
            CHAIN,
            query("forecast", raw=[1], title="t"),
            "cannot plan the query: no agent produces the goal output 'forecast' "
            "(outputs agents produce: count, report, table, total)",  # not the examples' ones
        ),
        (
            CHAIN,
            query("report", raw=[1]),
            "cannot plan the query: missing input 'title': agent describe needs it, and "
            'neither the query\'s "inputs" nor any agent provide it',
        ),
        (
            {**CHAIN, "tidy": declared(clean, ["raw"], ["table"])},
            query("report", raw=[1], title="t"),
            "cannot plan the query: ambiguous producer for 'table': agents clean and tidy both "
            'produce it; choose one with the payload\'s "producers": {"table": "clean"}',
        ),
        (
            {
                "a": declared(clean, ["y"], ["x"]),
                "b": declared(clean, ["x"], ["y"]),
                "c": declared(clean, ["y"], ["goal"]),
            },
            query("goal"),
            "cannot plan the query: cycle among the agents: b needs x from a; a needs y from b",
        ),
    ],
    ids=["missing-producer", "missing-input", "ambiguous-producer", "cycle"],
)
def test_a_query_that_cannot_be_planned_fails_at_once_and_creates_nothing(
    database_url: str,
    manager: JobManager,
    agents: dict[str, Any],
    payload: dict[str, Any],
    message: str,
) -> None:
    job = manager.create_job("query", "bad", payload=payload, max_retries=3)
    run_burst(database_url, agents)
    done = manager.get_job(job.id)
    assert done.status is JobStatus.FAILED
    assert done.error_message.startswith(message)
    assert len(manager.get_attempts(job.id)) == 1  # no retry can mend a plan
    assert [j.id for j in manager.list_jobs()] == [job.id]
    assert "plan" not in done.payload


def sample_of(count: int) -> list[int]:
    return list(range(count))


def test_an_agent_of_yours_is_planned_instead_of_an_example_agent_of_the_same_output(
    database_url: str, manager: JobManager
) -> None:
    agents = {"mine": declared(sample_of, ["count"], ["sample"])}
    job = manager.create_job("query", "mine", payload=query("sample_summary", count=3))
    run_burst(database_url, agents)
    done = manager.get_job(job.id)
    assert done.status is JobStatus.COMPLETED, done.error_message
    assert list(plan_of(manager, job.id)) == ["mine", "example_describe"]
    assert done.result == {"count": 3, "mean": 1.0, "stdev": 1.0}


def test_producers_choose_between_agents_of_the_same_output(
    database_url: str, manager: JobManager
) -> None:
    agents = {**CHAIN, "tidy": declared(lambda raw: [0], ["raw"], ["table"])}
    payload = {**query("report", raw=[2, 2], title="t"), "producers": {"table": "clean"}}
    job = manager.create_job("query", "chosen", payload=payload)
    run_burst(database_url, agents)
    assert manager.get_job(job.id).result == "t: 2 values, total 4"
    assert [step["agent"] for step in manager.get_job(job.id).payload["plan"]][0] == "clean"


def test_a_goal_given_as_an_input_needs_no_agent(database_url: str, manager: JobManager) -> None:
    job = manager.create_job("query", "given", payload=query("report", report="ready made"))
    run_burst(database_url, CHAIN)
    done = manager.get_job(job.id)
    assert done.status is JobStatus.COMPLETED and done.result == "ready made"


def test_malformed_query_payload_is_refused_at_creation(
    database_url: str, manager: JobManager
) -> None:
    with pytest.raises(InvalidJob, match='"inputs" must be a JSON object'):
        manager.create_job("query", "q", payload={"inferred_goal_output": "x", "inputs": [1]})
    with pytest.raises(InvalidJob, match='"inferred_goal_output" must be a name'):
        manager.create_job("query", "q", payload={"inferred_goal_output": 3})
    assert manager.list_jobs() == []


def test_a_query_without_a_goal_is_refused_by_create_job_and_create_jobs(
    database_url: str, manager: JobManager
) -> None:
    needs = 'a query job\'s payload needs an "inferred_goal_output"'
    for payload in ({"query": "what are the trends?"}, None):
        with pytest.raises(InvalidJob, match=needs):
            manager.create_job("query", "q", payload=payload)
    with pytest.raises(InvalidJob, match=needs):
        manager.create_jobs(
            [
                {"job_type": "agent", "name": "fine", "payload": {"agent_name": "clean"}},
                {"job_type": "query", "name": "q", "payload": {"query": "what?", "inputs": {}}},
            ]
        )
    with pytest.raises(InvalidJob, match='"inferred_goal_output" must be a name, got None'):
        manager.create_job("query", "q", payload={"inferred_goal_output": None})
    assert manager.list_jobs() == []  # nothing written, not even the batch's good job


def test_a_query_payload_cannot_bring_its_own_plan(database_url: str, manager: JobManager) -> None:
    other = manager.create_job("agent", "unrelated", payload={"agent_name": "clean"})
    plan = [{"job_id": other.id, "agent": "clean", "after": []}]
    message = 'a query\'s payload cannot carry "plan": the supervisor writes it when it plans'
    with pytest.raises(InvalidJob, match=message):
        manager.create_job("query", "q", payload={**query("report"), "plan": plan})
    with pytest.raises(InvalidJob, match=message):
        manager.create_jobs(
            [
                {"job_type": "agent", "name": "fine", "payload": {"agent_name": "clean"}},
                {"job_type": "query", "name": "q", "payload": {**query("report"), "plan": plan}},
            ]
        )
    assert [job.id for job in manager.list_jobs()] == [other.id]


def test_cancelling_a_query_spares_jobs_its_plan_names_that_are_not_its_own(
    manager: JobManager,
) -> None:
    from taiat.store.queries import plans as plan_queries

    other = manager.create_job("agent", "unrelated", payload={"agent_name": "clean"})
    job = manager.create_job("query", "q", payload=query("report"))
    claimed = next(j for j in manager.claim_jobs("here:1:a", 2) if j.id == job.id)
    # A plan naming a job that is not the query's: stored before the payload was checked.
    forged = {**job.payload, "plan": [{"job_id": other.id, "agent": "clean", "after": []}]}
    with manager.transaction() as conn:
        assert plan_queries.wait_on_plan(conn, job.id, claimed.claim_seq, forged, 0)
    assert manager.cancel_job(job.id)
    assert manager.get_job(other.id).status is not JobStatus.CANCELLED
