"""The fleet's agent catalogue, with real supervisors: two with different agents
(TAIAT_AGENT_CONFIG), `taiat agents` listing each agent and who serves it, and a query whose
agents live on the two hosts planned, and run, across them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from conftest import HERE, ROOT, wait_until
from query_agents import RELAY_FIRST, RELAY_SECOND
from support import finished

from taiat import JobManager, JobStatus

TAIAT = [sys.executable, "-m", "taiat"]


def taiat(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAIAT_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(HERE), os.environ.get("PYTHONPATH", "")])
    return subprocess.run(
        [*TAIAT, *args, "--database-url", url], capture_output=True, text=True, timeout=60, env=env
    )


def two_hosts(supervisor: Any, manager: JobManager) -> tuple[Any, Any, dict[str, list[str]]]:
    """Two supervisors, each with half the relay's agents; once both are in the catalogue,
    them and the supervisors serving each agent."""
    first = supervisor(env={"TAIAT_AGENT_CONFIG": json.dumps(RELAY_FIRST)})
    second = supervisor(env={"TAIAT_AGENT_CONFIG": json.dumps(RELAY_SECOND)})

    def serving() -> dict[str, list[str]] | None:
        found = {a["name"]: a["supervisors"] for a in manager.list_agents()}
        return found if all(found.get(n) for n in [*RELAY_FIRST, *RELAY_SECOND]) else None

    return first, second, wait_until(serving, 30, "both supervisors in the catalogue")


def relay(manager: JobManager) -> str:
    payload = {"query": "relay", "inferred_goal_output": "s4", "inputs": {"start": []}}
    return manager.create_job("query", "relay", payload=payload).id


def test_taiat_agents_lists_each_agent_its_queue_and_its_supervisors(
    database_url: str, manager: JobManager, supervisor: Any
) -> None:
    _, _, serving = two_hosts(supervisor, manager)
    assert serving["a1"] != serving["b1"] and len(serving["a1"]) == 1
    listed = taiat(database_url, "agents", "--json")
    assert listed.returncode == 0, listed.stderr
    agents = {a["name"]: a for a in json.loads(listed.stdout)}
    assert agents["b1"] == {
        "name": "b1",
        "inputs": ["s1"],
        "outputs": ["s2"],
        "queue": "relay.b",
        "supervisors": serving["b1"],
    }
    assert agents["a1"]["queue"] is None and agents["a1"]["inputs"] == ["start"]
    # The example agents, which every supervisor has, are served by both.
    assert sorted(agents["example_sample"]["supervisors"]) == sorted(serving["a1"] + serving["b1"])
    table = taiat(database_url, "agents")
    assert table.returncode == 0, table.stderr
    lines = {line.split()[0]: line for line in table.stdout.splitlines() if line.strip()}
    assert lines["AGENT"].split() == ["AGENT", "INPUTS", "OUTPUTS", "QUEUE", "SUPERVISORS"]
    assert lines["b1"].split() == ["b1", "s1", "s2", "relay.b", *serving["b1"]]
    assert lines["a1"].split() == ["a1", "start", "s1", "-", *serving["a1"]]


def test_taiat_agents_with_no_live_supervisor(database_url: str) -> None:
    listed = taiat(database_url, "agents", "--json")
    assert listed.returncode == 0 and json.loads(listed.stdout) == []
    shown = taiat(database_url, "agents")
    assert shown.returncode == 0 and "no live supervisor publishes an agent" in shown.stdout


def test_a_query_is_planned_with_the_agents_of_both_hosts(
    manager: JobManager, supervisor: Any
) -> None:
    first, _, _ = two_hosts(supervisor, manager)

    def planned() -> list[dict[str, Any]] | None:
        job = manager.get_job(query_id)
        return None if job is None else job.payload.get("plan")

    query_id = relay(manager)
    plan = wait_until(planned, 30, "the query's plan", watch=first)
    assert [step["agent"] for step in plan] == ["a1", "b1", "a2", "b2"]


def test_a_query_whose_agents_live_on_two_hosts_runs_across_them(
    manager: JobManager, supervisor: Any
) -> None:
    first, _, serving = two_hosts(supervisor, manager)
    query_id = relay(manager)
    done = wait_until(lambda: finished(manager, query_id), 60, "the relay", watch=first)
    assert done.status is JobStatus.COMPLETED, done.error_message
    assert len(done.result) == 4
    for step in done.payload["plan"]:
        [attempt] = manager.get_attempts(step["job_id"])
        assert attempt.worker_id in serving[step["agent"]]
