"""Query jobs run as a plan of agent jobs: the expansion, inside the caller's transaction.

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

Here is the expansion; what it sets off when the plan's jobs end (the query completed,
failed or cancelled, the other agents cancelled) are transitions of the job state machine,
in `taiat.store.state_machine`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.engine import Connection

from taiat.jobs import Attempt, JobType
from taiat.query_plans import Plan
from taiat.store import queries, state_machine
from taiat.store.queries import plans as plan_queries
from taiat.store.validation import build_spec, new_job_id


def expand(
    conn: Connection,
    job_id: str,
    claim_seq: int,
    plan_json: Mapping[str, Any],
    attempt: Attempt | None,
) -> list[str] | None:
    """Create the plan's agent jobs and make the query wait for them; their ids in plan
    order, or None when the claim is stale (and nothing changed)."""
    state_machine.record_attempt(conn, attempt)
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
        spec = build_spec(
            JobType.AGENT,
            f"{row['name']}/{step.agent}",
            payload=payload,
            dependencies=[ids[agent] for agent in step.after],
            max_retries=row["max_retries"],
            priority=row["priority"],
            timeout_seconds=row["timeout_seconds"],
            id=ids[step.agent],
            # The query's explicit keys cap its plan's work too (its agent's key is added).
            limit_keys=row["limit_keys"],
        )
        # Each agent's job goes to the queue the agent declares, else to the query's.
        specs.append(spec._replace(queue=step.queue or row["queue"]))
    state_machine.create(conn, specs, set(ids.values()))
    record: list[dict[str, Any]] = [
        {"job_id": ids[s.agent], "agent": s.agent, "after": [ids[a] for a in s.after]}
        for s in plan.steps
    ]
    plan_queries.wait_on_plan(conn, job_id, claim_seq, {**row["payload"], "plan": record}, 1)
    queries.insert_edges(conn, [{"job_id": job_id, "depends_on": ids[sink.agent]}])
    return [ids[step.agent] for step in plan.steps]
