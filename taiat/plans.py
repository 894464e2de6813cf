"""Query jobs run as a plan of agent jobs: the transitions, inside the caller's transaction.

    query running --expand--> agent jobs created, wired as the data flows; the query pending,
                              waiting for the agent that produces the goal (its "sink")
    sink completes ---------> the query completes with the goal output, in the same transaction
    an agent fails for good -> the query fails with the agent's error; the other agents are
                              cancelled
    the query is cancelled --> its agents are cancelled

The plan's agent jobs carry `query_job` in their payload; the query carries `plan` (a list of
`{"job_id", "agent", "after"}`) in its own. Only the agent jobs of the query's current plan
act on it: a retried query plans afresh, and an agent of an older plan retried alone runs
for itself.

Lock order: a transition on an agent job of a plan (complete, fail, cancel) locks the plan's
query before the agent (`lock_queries`), as cancelling the query does; so two transitions on
one plan wait for each other instead of deadlocking, and rows of one level lock in id order.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection

from taiat import lifecycle, queries
from taiat.jobs import Attempt, JobStatus, JobType
from taiat.planner import EXPANSION_KEYS, Plan
from taiat.queries import plans as plan_queries
from taiat.specs import build_spec, clean_text, new_job_id


def expand(
    conn: Connection,
    job_id: str,
    claim_seq: int,
    plan_json: Mapping[str, Any],
    attempt: Attempt | None,
) -> list[str] | None:
    """Create the plan's agent jobs and make the query wait for them; their ids in plan
    order, or None when the claim is stale (and nothing changed)."""
    lifecycle.record_attempt(conn, attempt)
    row = queries.lock_running(conn, job_id, claim_seq)
    if row is None:
        return None
    plan = Plan.from_json(plan_json)
    sink = plan.sink
    if sink is None:
        raise ValueError("a plan without steps has nothing to create")
    given = row["payload"].get("inputs") or {}
    ids = {step.agent: new_job_id() for step in plan.steps}
    specs = []
    for step in plan.steps:
        payload: dict[str, Any] = {
            "agent_name": step.agent,
            "parameters": {item: given[item] for item, src in step.inputs.items() if src is None},
            "inputs_from": {item: ids[src] for item, src in step.inputs.items() if src},
            "outputs": list(step.outputs),
            "query_job": job_id,
        }
        if step is sink:
            payload["goal_output"] = plan.goal
        specs.append(
            build_spec(
                JobType.AGENT,
                f"{row['name']}/{step.agent}",
                payload=payload,
                dependencies=[ids[agent] for agent in step.after],
                max_retries=row["max_retries"],
                priority=row["priority"],
                timeout_seconds=row["timeout_seconds"],
                id=ids[step.agent],
            )
        )
    lifecycle.create(conn, specs, set(ids.values()))
    record: list[dict[str, Any]] = [
        {"job_id": ids[s.agent], "agent": s.agent, "after": [ids[a] for a in s.after]}
        for s in plan.steps
    ]
    plan_queries.wait_on_plan(conn, job_id, claim_seq, {**row["payload"], "plan": record}, 1)
    queries.insert_edges(conn, [{"job_id": job_id, "depends_on": ids[sink.agent]}])
    return [ids[step.agent] for step in plan.steps]


def unplanned(payload: Mapping[str, Any] | None) -> dict[str, Any]:
    """The query's payload as it was before any expansion."""
    return {k: v for k, v in (payload or {}).items() if k not in EXPANSION_KEYS}


def lock_queries(conn: Connection, job_ids: Collection[str]) -> None:
    """Before any of the jobs `job_ids` is locked: lock the queries whose plans those of them
    that are agent jobs of a plan belong to."""
    plan_queries.lock_queries_of(conn, job_ids)


def plan_ids(query: Mapping[Any, Any]) -> list[str]:
    """The job ids of the query's plan (none if it was never expanded, or is no query)."""
    if query["job_type"] != JobType.QUERY.value:
        return []
    plan = (query["payload"] or {}).get("plan")
    if not isinstance(plan, list):
        return []
    return [step["job_id"] for step in plan if isinstance(step, dict) and "job_id" in step]


def _waiting_query(conn: Connection, agent: Mapping[Any, Any]) -> Any:
    """The query job this agent job belongs to, locked, if it still waits on its plan."""
    query_id = (agent["payload"] or {}).get("query_job")
    if not isinstance(query_id, str):
        return None
    query = queries.get_active(conn, query_id, lock=True)
    if query is None or query["status"] != JobStatus.PENDING.value:
        return None
    return query if _in_plan(agent, query) else None


def _in_plan(agent: Mapping[Any, Any], query: Mapping[Any, Any]) -> bool:
    """Whether the agent job belongs to the query's current plan: named there, and naming the
    query itself."""
    own = (agent["payload"] or {}).get("query_job") == query["id"]
    return own and agent["id"] in plan_ids(query)


def complete_queries(
    conn: Connection, completed: Sequence[Mapping[Any, Any]], results: Mapping[str, Any]
) -> tuple[set[str], list[str]]:
    """Complete the queries whose goal-producing agent is among the `completed` rows, each
    with the goal output as its result; returns their ids and the jobs that became ready."""
    done: set[str] = set()
    for row in completed:
        goal = (row["payload"] or {}).get("goal_output")
        if goal is None:
            continue
        query = _waiting_query(conn, row)
        if query is None:
            continue
        result = results.get(row["id"])
        value = result[goal] if isinstance(result, dict) and goal in result else result
        entry = lifecycle.history_entry(query, JobStatus.COMPLETED, row["now"], result=value)
        queries.move_to_history(conn, [entry])
        done.add(query["id"])
    return done, queries.release_dependents(conn, done)


def agent_failed(conn: Connection, agent: Mapping[Any, Any], error: str, now: datetime) -> None:
    """An agent of a plan failed for good: fail its query with the agent's error, and cancel
    the plan's other agents and the query's dependents."""
    query = _waiting_query(conn, agent)
    if query is None:
        return
    name = (agent["payload"] or {}).get("agent_name")
    message = clean_text(f"agent {name} (job {agent['id']}) failed: {error}")
    entry = lifecycle.history_entry(query, JobStatus.FAILED, now, error=message)
    queries.move_to_history(conn, [entry])
    cancel_agents(conn, query, f"agent {name} of its query failed", now)
    lifecycle.cancel_dependents(conn, query, JobStatus.FAILED, now)


def cancel_agents(conn: Connection, query: Mapping[Any, Any], why: str, now: datetime) -> None:
    """Cancel the query's plan's agents that are still pending or running, and what waits on
    them; running ones are told to stop."""
    rows = [r for r in plan_queries.lock_jobs(conn, plan_ids(query)) if _in_plan(r, query)]
    if not rows:
        return
    message = f"cancelled: {why} (query job {query['id']}, {query['name']})"
    entries = [lifecycle.history_entry(r, JobStatus.CANCELLED, now, error=message) for r in rows]
    queries.move_to_history(conn, entries)
    for row in rows:
        if row["status"] == JobStatus.RUNNING.value:
            queries.notify(conn, f"cancel:{row['id']}")
    for row in rows:
        lifecycle.cancel_dependents(conn, row, JobStatus.CANCELLED, now)
