"""Query jobs on PostgreSQL and SQLite, run: results flowing as keyword arguments, failures,
cancels and retries, and query engine plug-ins. The supervisor runs in this process and forks
real children (see tests/acceptance for the daemon)."""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

import pytest
from query_helpers import CHAIN, DIAMOND, clean, combine, declared, plan_of, query, run_burst, total
from support import poll

import taiat
from taiat import JobManager, JobStatus
from taiat.worker import TaiatWorker


def boom(table: list[int]) -> None:
    raise ValueError(f"cannot take {len(table)} values")


def slow(table: list[int]) -> int:
    signal.pause()  # until the job is cancelled and its process group killed
    return 0


def echo_kwargs(**kwargs: Any) -> dict[str, Any]:
    return {"seen": kwargs, "raw_results": taiat.current_job().dependency_results}


# -- results flow --------------------------------------------------------------------------


def test_inputs_arrive_as_keyword_arguments_with_the_raw_results_beside(
    database_url: str, manager: JobManager
) -> None:
    agents = {**CHAIN, "echo": declared(echo_kwargs, ["table", "limit"], ["echoed"])}
    job = manager.create_job("query", "kw", payload=query("echoed", raw=[7, -2, 1], limit=2))
    run_burst(database_url, agents)
    done = manager.get_job(job.id)
    assert done.status is JobStatus.COMPLETED, done.error_message
    clean_id = plan_of(manager, job.id)["clean"]["job_id"]
    assert done.result == {
        "seen": {"table": [1, 7], "limit": 2},
        "raw_results": {clean_id: {"table": [1, 7]}},
    }


def test_a_plain_agent_job_gets_its_declared_inputs_from_its_dependencies(
    database_url: str, manager: JobManager
) -> None:
    agents = {**CHAIN, "echo": declared(echo_kwargs, ["table"], [])}
    first, second = manager.create_jobs(
        [
            {
                "id": "cleaner",
                "job_type": "agent",
                "name": "cleaner",
                "payload": {"agent_name": "clean", "parameters": {"raw": [4, -4, 2]}},
            },
            {
                "job_type": "agent",
                "name": "echo",
                "payload": {"agent_name": "echo"},
                "dependencies": ["cleaner"],
            },
        ]
    )
    run_burst(database_url, agents)
    assert manager.get_job(first.id).result == {"table": [2, 4]}
    assert manager.get_job(second.id).result == {
        "seen": {"table": [2, 4]},
        "raw_results": {"cleaner": {"table": [2, 4]}},
    }


# -- failures and cancels ------------------------------------------------------------------


def test_a_failed_agent_fails_the_query_and_cancels_the_rest(
    database_url: str, manager: JobManager
) -> None:
    agents = {
        "clean": declared(clean, ["raw"], ["table"]),
        "boom": declared(boom, ["table"], ["left"]),
        "slow": declared(slow, ["table"], ["right"]),
        "join": declared(combine, ["left", "right"], ["joined"]),
    }
    job = manager.create_job("query", "failing", payload=query("joined", raw=[1, 2]), max_retries=0)
    run_burst(database_url, agents, slots=3)
    done = manager.get_job(job.id)
    plan = plan_of(manager, job.id)
    assert done.status is JobStatus.FAILED
    boom_id = plan["boom"]["job_id"]
    assert done.error_message.startswith(
        f"agent boom (job {boom_id}) failed: ValueError: cannot take 2 values"
    )
    assert plan["clean"]["job"].status is JobStatus.COMPLETED
    assert plan["boom"]["job"].status is JobStatus.FAILED
    for agent in ("slow", "join"):
        cancelled = plan[agent]["job"]
        assert cancelled.status is JobStatus.CANCELLED
        assert cancelled.error_message == (
            f"cancelled: agent boom of its query failed (query job {job.id}, failing)"
        )


def test_an_agent_attempt_that_fails_is_retried_within_the_plan(
    database_url: str, manager: JobManager, tmp_path
) -> None:
    marker = tmp_path / "failed-once"

    def flaky(table: list[int]) -> int:
        if not marker.exists():
            marker.write_text("x")
            raise RuntimeError("first attempt fails")
        return len(table)

    agents = {"clean": declared(clean, ["raw"], ["table"]), "n": declared(flaky, ["table"], ["n"])}
    job = manager.create_job("query", "retried", payload=query("n", raw=[1, 2, 3]), max_retries=1)
    worker = TaiatWorker(
        database_url=database_url,
        agent_registry=agents,
        burst=True,
        poll_interval=0.05,
    )
    worker.manager.retry_policy = manager.retry_policy  # no backoff
    try:
        worker.run()
    finally:
        worker.manager.engine.dispose()
    done = manager.get_job(job.id)
    assert done.status is JobStatus.COMPLETED and done.result == 3
    assert len(manager.get_attempts(plan_of(manager, job.id)["n"]["job_id"])) == 2


def test_cancelling_the_query_cancels_its_agents(database_url: str, manager: JobManager) -> None:
    agents = {
        "clean": declared(clean, ["raw"], ["table"]),
        "slow": declared(slow, ["table"], ["right"]),
        "total": declared(total, ["table"], ["total", "count"]),
        "join": declared(combine, ["total", "right"], ["joined"]),
    }
    job = manager.create_job("query", "to cancel", payload=query("joined", raw=[1]))
    worker = TaiatWorker(
        database_url=database_url, agent_registry=agents, poll_interval=0.05, check_interval=0.1
    )
    runner = threading.Thread(target=worker.run)
    runner.start()
    try:
        slow_id = poll(
            lambda: (
                (p := manager.get_job(job.id).payload.get("plan"))
                and next(s["job_id"] for s in p if s["agent"] == "slow")
            ),
            60,
            "the plan",
        )
        poll(lambda: manager.get_job(slow_id).status is JobStatus.RUNNING, 60, "slow to run")
        assert manager.cancel_job(job.id)
        poll(lambda: not worker.children, 30, "the running agent to be stopped")
    finally:
        worker.stop()
        runner.join(60)
        worker.manager.engine.dispose()
    assert manager.get_job(job.id).status is JobStatus.CANCELLED
    plan = plan_of(manager, job.id)
    assert plan["clean"]["job"].status is JobStatus.COMPLETED
    for agent in ("slow", "join"):
        cancelled = plan[agent]["job"]
        assert cancelled.status is JobStatus.CANCELLED
        assert cancelled.error_message.startswith("cancelled: its query job was cancelled")
    assert manager.get_job(plan["total"]["job_id"]).status in (
        JobStatus.COMPLETED,
        JobStatus.CANCELLED,
    )
    assert manager.get_attempts(slow_id)[-1].outcome in ("cancelled", "superseded")


def test_cancelling_an_agent_cancels_its_query_and_the_other_agents(
    database_url: str, manager: JobManager
) -> None:
    job = manager.create_job("query", "q", payload=query("summary", raw=[1]))
    [claimed] = manager.claim_jobs("here:1:a", 1)
    from taiat.agents.planner import plan
    from taiat.agents.registry import as_agent

    found = plan({n: as_agent(n, e) for n, e in DIAMOND.items()}, "summary", {"raw"})
    ids = manager.expand_query(job.id, claimed.claim_seq, found.to_json())
    assert ids is not None and len(ids) == 4
    assert manager.get_job(job.id).status is JobStatus.PENDING
    assert [j.id for j in manager.get_ready_jobs()] == [ids[0]]
    assert manager.cancel_job(ids[0])
    assert manager.get_job(job.id).status is JobStatus.CANCELLED
    assert {manager.get_job(i).status for i in ids} == {JobStatus.CANCELLED}
    # A stale claim expands nothing.
    assert manager.expand_query(job.id, claimed.claim_seq, found.to_json()) is None


# -- engine plug-ins -----------------------------------------------------------------------


class CustomEngine:
    def run(self, query: str, inferred_goal_output: str, inputs: dict[str, Any]) -> Any:
        return {
            "answer": f"{query} -> {inferred_goal_output}",
            "inputs": inputs,
            "pid": os.getpid(),
        }


class TaiatShapedEngine:
    def run(self, state: dict[str, Any]) -> dict[str, Any]:
        goal = state["query"].inferred_goal_output
        state["data"][goal] = f"{state['query'].query}: {sum(state['data']['numbers'])}"
        state["query"].status = "success"
        return state


class FailingEngine:
    def run(self, query: str, inferred_goal_output: str, inputs: dict[str, Any]) -> Any:
        raise RuntimeError("the model is out of tokens")


class TaiatShapedFailingEngine:
    def run(self, state: dict[str, Any]) -> dict[str, Any]:
        state["query"].status = "error"
        state["query"].error = "no agent can produce 'forecast'"
        return state


@pytest.mark.parametrize(
    ("engine", "goal", "outcome"),
    [
        ("CustomEngine", "answer", {"answer": "sum them -> answer", "inputs": {"numbers": [1, 2]}}),
        ("TaiatShapedEngine", "total", "sum them: 3"),
        ("FailingEngine", "x", "the query engine failed: RuntimeError: the model is out of tokens"),
        (
            "TaiatShapedFailingEngine",
            "forecast",
            "the query engine failed: no agent can produce 'forecast'",
        ),
    ],
)
def test_query_engine_plug_in(
    database_url: str,
    manager: JobManager,
    monkeypatch: pytest.MonkeyPatch,
    engine: str,
    goal: str,
    outcome: Any,
) -> None:
    monkeypatch.setenv("TAIAT_QUERY_ENGINE", f"{__name__}:{engine}")
    payload = {"query": "sum them", "inferred_goal_output": goal, "inputs": {"numbers": [1, 2]}}
    job = manager.create_job("query", "engine", payload=payload, max_retries=0)
    run_burst(database_url, CHAIN)
    done = manager.get_job(job.id)
    assert "plan" not in done.payload and len(manager.list_jobs()) == 1  # no expansion
    if engine.endswith("FailingEngine"):
        assert done.status is JobStatus.FAILED and done.error_message == outcome
    else:
        assert done.status is JobStatus.COMPLETED, done.error_message
        result = dict(done.result) if isinstance(done.result, dict) else done.result
        if isinstance(result, dict):
            assert result.pop("pid") != os.getpid()  # it ran in the job's own child
        assert result == outcome


@pytest.mark.parametrize("afterwards", ["changed", "unset"])
def test_the_query_engine_is_the_one_chosen_when_the_supervisor_was_made(
    database_url: str, manager: JobManager, monkeypatch: pytest.MonkeyPatch, afterwards: str
) -> None:
    # The engine is chosen from TAIAT_QUERY_ENGINE once, and travels with the query executor
    # to the fork server (started by run(), after the change) and the job's child: neither
    # looks at the environment, where it is now another engine, or none (then the planner
    # would fail the query: it has no agents for "answer").
    monkeypatch.setenv("TAIAT_QUERY_ENGINE", f"{__name__}:CustomEngine")
    worker = TaiatWorker(
        database_url=database_url, burst=True, poll_interval=0.05, check_interval=0.1
    )
    assert worker.config.query_engine == f"{__name__}:CustomEngine"
    if afterwards == "changed":
        monkeypatch.setenv("TAIAT_QUERY_ENGINE", f"{__name__}:FailingEngine")
    else:
        monkeypatch.delenv("TAIAT_QUERY_ENGINE")
    payload = {"query": "sum them", "inferred_goal_output": "answer", "inputs": {"n": 1}}
    job = manager.create_job("query", "engine", payload=payload, max_retries=0)
    try:
        assert worker.run() == 0
    finally:
        worker.manager.engine.dispose()
    done = manager.get_job(job.id)
    assert done.status is JobStatus.COMPLETED, done.error_message
    assert done.result["answer"] == "sum them -> answer"
    assert done.result["pid"] != os.getpid()


# -- retries -------------------------------------------------------------------------------


def expanded_chain(manager: JobManager) -> tuple[str, str, str]:
    """A query planned as clean -> total by hand, its clean done and its total failed for good
    (so the query failed too): the ids of the query, clean and total."""
    from taiat.agents.planner import plan
    from taiat.agents.registry import as_agent

    agents = {n: as_agent(n, e) for n, e in CHAIN.items()}
    job = manager.create_job("query", "q", payload=query("total", raw=[2, 1]), max_retries=0)
    [claimed] = manager.claim_jobs("here:1:a", 1)
    found = plan(agents, "total", {"raw"})
    clean_id, total_id = manager.expand_query(job.id, claimed.claim_seq, found.to_json())
    [a] = manager.claim_jobs("here:1:a", 1)
    assert a.id == clean_id and manager.complete_job(a.id, a.claim_seq, {"table": [1, 2]})
    [b] = manager.claim_jobs("here:1:a", 1)
    assert b.id == total_id
    assert manager.fail_job(b.id, b.claim_seq, "broke", retry=False) is JobStatus.FAILED
    assert manager.get_job(job.id).status is JobStatus.FAILED
    return job.id, clean_id, total_id


def test_a_retried_query_plans_afresh_and_runs_all_its_agents_again(
    database_url: str, manager: JobManager
) -> None:
    query_id, clean_id, total_id = expanded_chain(manager)
    retried = manager.retry_job(query_id)
    assert retried.status is JobStatus.PENDING and "plan" not in retried.payload
    run_burst(database_url, CHAIN)
    done = manager.get_job(query_id)
    assert done.status is JobStatus.COMPLETED, done.error_message
    assert done.result == 3
    plan = plan_of(manager, query_id)
    assert list(plan) == ["clean", "total"]
    assert {step["job_id"] for step in plan.values()}.isdisjoint({clean_id, total_id})
    assert all(step["job"].status is JobStatus.COMPLETED for step in plan.values())
    assert len(manager.get_attempts(query_id)) == 1  # the supervisor planned it this time
    assert manager.get_job(total_id).status is JobStatus.FAILED  # the old agent stays as it was


@pytest.mark.parametrize("outcome", ["completes", "fails"])
def test_an_old_agent_retried_alone_leaves_the_retried_query_alone(
    manager: JobManager, outcome: str
) -> None:
    query_id, _, total_id = expanded_chain(manager)
    manager.retry_job(total_id)
    manager.retry_job(query_id)
    # Cancelling the retried query does not reach the separately retried agent.
    assert manager.cancel_job(query_id)
    assert manager.get_job(total_id).status is JobStatus.PENDING
    manager.retry_job(query_id)
    claimed = {job.id: job for job in manager.claim_jobs("here:1:a", 10)}
    assert set(claimed) == {query_id, total_id}
    assert manager.requeue_job(query_id, claimed[query_id].claim_seq)  # the query waits again
    b = claimed[total_id]
    if outcome == "completes":
        assert manager.complete_job(b.id, b.claim_seq, {"total": 99, "count": 1})
    else:
        assert manager.fail_job(b.id, b.claim_seq, "broke again", retry=False)
    still = manager.get_job(query_id)
    assert still.status is JobStatus.PENDING and still.result is None
    assert "plan" not in still.payload
