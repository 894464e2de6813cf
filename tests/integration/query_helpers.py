"""What the query job tests share: agents declaring their inputs and outputs, the payload of
a query, and a supervisor run in this process until no job is left."""

from __future__ import annotations

from typing import Any

import taiat
from taiat import JobManager
from taiat.worker import TaiatWorker


def declared(function: Any, inputs: list[str], outputs: list[str]) -> dict[str, Any]:
    return {"function": function, "inputs": inputs, "outputs": outputs}


def clean(raw: list[int]) -> list[int]:
    return sorted(x for x in raw if x >= 0)


def total(table: list[int]) -> dict[str, Any]:
    return {"total": sum(table), "count": len(table)}


def describe(total: int, count: int, title: str) -> dict[str, Any]:
    return {"report": f"{title}: {count} values, total {total}"}


def spread(table: list[int]) -> int:
    return max(table) - min(table)


def combine(total: int, spread: int) -> str:
    job = taiat.current_job()
    return f"total {total}, spread {spread}; from {len(job.dependency_results)} jobs"


CHAIN = {
    "clean": declared(clean, ["raw"], ["table"]),
    "total": declared(total, ["table"], ["total", "count"]),
    "describe": declared(describe, ["total", "count", "title"], ["report"]),
}
DIAMOND = {
    "clean": declared(clean, ["raw"], ["table"]),
    "total": declared(total, ["table"], ["total", "count"]),
    "spread": declared(spread, ["table"], ["spread"]),
    "combine": declared(combine, ["total", "spread"], ["summary"]),
}


def query(goal: str, **inputs: Any) -> dict[str, Any]:
    return {"query": f"produce {goal}", "inferred_goal_output": goal, "inputs": inputs}


def run_burst(url: str, agents: dict[str, Any], slots: int = 2) -> TaiatWorker:
    """A supervisor in this process until no job is left."""
    worker = TaiatWorker(
        database_url=url,
        agent_registry=agents,
        burst=True,
        poll_interval=0.05,
        max_concurrent_jobs=slots,
        check_interval=0.1,
    )
    try:
        worker.run()
    finally:
        worker.manager.engine.dispose()
    return worker


def plan_of(manager: JobManager, job_id: str) -> dict[str, dict[str, Any]]:
    """The query's plan by agent: its job id, the jobs it waited for, and the job itself."""
    job = manager.get_job(job_id)
    assert job is not None
    found = {}
    for step in job.payload["plan"]:
        agent_job = manager.get_job(step["job_id"])
        found[step["agent"]] = {**step, "job": agent_job}
    return found
