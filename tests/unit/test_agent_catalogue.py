"""The agent catalogue's pure parts: an agent's declared queue, what a supervisor publishes,
the agents a query is planned with, and the catalogue's way to the job's child."""

from __future__ import annotations

import json
from typing import Any

import pytest

from taiat.agents.executors import executor_agents
from taiat.agents.planner import plan
from taiat.agents.registry import (
    Listed,
    as_agent,
    catalogue,
    default_agents,
    load_agents,
    planning_agents,
)
from taiat.errors import ConfigurationError
from taiat.forking import wire
from taiat.jobs import Job, JobStatus, JobType
from taiat.query_plans import Plan
from taiat.store.leases import fleet_agents, fleet_catalogue


def config(queue: Any) -> str:
    entry = {"function": "taiat.agents.examples:report", "outputs": ["r"], "queue": queue}
    return json.dumps({"a": entry})


@pytest.mark.parametrize("queue", ["gpu", "a.b-c_9", "x" * 64])
def test_an_agent_may_declare_its_queue(queue: str) -> None:
    assert load_agents(config(queue))["a"].queue == queue


@pytest.mark.parametrize("queue", ["", "has space", "x" * 65, "é", 3, ["gpu"]])
def test_a_bad_queue_is_refused_naming_it(queue: Any) -> None:
    with pytest.raises(ConfigurationError, match='agent a: "queue" must be a queue name') as e:
        load_agents(config(queue))
    assert json.dumps(queue) in str(e.value)


def test_a_supervisor_publishes_its_agents_and_its_executors_names() -> None:
    agents = {"a": as_agent("a", {"function": print, "inputs": ["x"], "outputs": ["y"]})}
    assert catalogue(agents, ["a", "b"]) == {
        "a": {"inputs": ["x"], "outputs": ["y"], "queue": None},
        "b": {"inputs": [], "outputs": [], "queue": None},
    }


def test_executor_agents() -> None:
    class Named:
        agents = ["b", "a", "b"]

    class One:
        agents = "solo"

    class Bad:
        agents = [""]

    assert executor_agents(Named()) == ["b", "a"]
    assert executor_agents(One()) == ["solo"]
    assert executor_agents(object()) == []
    with pytest.raises(ConfigurationError, match="must hold agent names"):
        executor_agents(Bad())


def test_the_plan_uses_the_fleets_agents_and_their_queues() -> None:
    local = default_agents()
    fleet = {
        "far": {"inputs": ["sample"], "outputs": ["far_out"], "queue": "gpu"},
        **{name: agent.declared() for name, agent in local.items()},
    }
    agents = planning_agents(local, fleet)
    assert isinstance(agents["far"], Listed) and agents["far"].queue == "gpu"
    assert all(agents[name].example for name in local)  # declared the same: still examples
    found = plan(agents, "far_out", {"count", "seed"})
    assert [(s.agent, s.queue) for s in found.steps] == [("example_sample", None), ("far", "gpu")]
    assert Plan.from_json(found.to_json()) == found
    assert planning_agents(local, None) == local


def test_the_same_name_declared_otherwise_elsewhere_is_no_example() -> None:
    local = default_agents()
    fleet = {"example_sample": {"inputs": [], "outputs": ["other"], "queue": None}}
    assert not planning_agents(local, fleet)["example_sample"].example


def test_the_fleets_catalogue_and_who_serves_each_agent() -> None:
    workers = [
        {"id": "a", "agents": {"x": {"inputs": ["i"], "outputs": ["o"], "queue": "q1"}}},
        {"id": "b", "agents": {"x": {"inputs": [], "outputs": [], "queue": None}, "y": {}}},
        {"id": "c", "agents": None},
    ]
    assert fleet_catalogue(workers) == {
        "x": {"inputs": ["i"], "outputs": ["o"], "queue": "q1"},
        "y": {"inputs": [], "outputs": [], "queue": None},
    }
    assert [(a["name"], a["supervisors"]) for a in fleet_agents(workers)] == [
        ("x", ["a", "b"]),
        ("y", ["b"]),
    ]


def test_the_catalogue_travels_sealed_with_the_job() -> None:
    job = Job("j", JobType.QUERY, "q", JobStatus.RUNNING, payload={"x": 1})
    listed = {"a": {"inputs": [], "outputs": ["b"], "queue": None}}
    assert wire.unseal_claim(wire.seal(job, {"d": 1}, listed)) == (job, {"d": 1}, listed)
    assert wire.unseal_claim(wire.seal(job, None)) == (job, None, None)
    assert wire.unseal(wire.seal(job, None, listed)) == (job, None)
    odd = Job("j", JobType.QUERY, "q", JobStatus.RUNNING, payload={"s": {1}})  # pickled
    assert wire.unseal_claim(wire.seal(odd, None, listed)) == (odd, None, listed)
