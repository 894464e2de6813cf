"""The planner, the output keying and the engine call shapes, without a database."""

from __future__ import annotations

import pytest

from taiat.agents.executors import JobFailed, keyed_by_outputs
from taiat.agents.planner import plan
from taiat.agents.query_engines import TaiatStateAdapter, takes_state
from taiat.agents.registry import as_agent
from taiat.errors import ConfigurationError, PlanningError
from taiat.query_plans import Plan


def agents(**declared: tuple[list[str], list[str]]) -> dict:
    return {
        name: as_agent(name, {"function": print, "inputs": i, "outputs": o})
        for name, (i, o) in declared.items()
    }


def test_plan_orders_steps_after_what_they_need_and_round_trips() -> None:
    found = plan(agents(c=(["b"], ["goal"]), b=(["a"], ["b"]), a=(["x"], ["a"])), "goal", {"x"})
    assert [s.agent for s in found.steps] == ["a", "b", "c"]
    assert found.steps[0].inputs == {"x": None} and found.steps[2].after == ["b"]
    assert Plan.from_json(found.to_json()) == found


def test_example_agents_stand_back_for_data_other_agents_produce() -> None:
    from dataclasses import replace

    found = agents(mine=(["count"], ["sample"]), theirs=(["sample"], ["summary"]))
    for name, output in (("example", "sample"), ("example_extra", "extra")):
        agent = as_agent(name, {"function": print, "outputs": [output]})
        found[name] = replace(agent, example=True)
    assert [s.agent for s in plan(found, "summary", {"count"}).steps] == ["mine", "theirs"]
    assert [s.agent for s in plan(found, "extra").steps] == ["example_extra"]  # none of mine
    chosen = plan(found, "sample", producers={"sample": "example"})
    assert [s.agent for s in chosen.steps] == ["example"]
    with pytest.raises(PlanningError, match=r"outputs agents produce: sample, summary\)$"):
        plan(found, "forecast")
    only_examples = {k: v for k, v in found.items() if k.startswith("example")}
    with pytest.raises(PlanningError, match=r"outputs agents produce: extra, sample\)$"):
        plan(only_examples, "forecast")


def test_a_long_chain_plans_like_a_short_one() -> None:
    length = 5000  # far deeper than Python's recursion limit
    chain = {f"a{i}": ([f"d{i}"], [f"d{i + 1}"]) for i in range(length)}
    found = plan(agents(**chain), f"d{length}", {"d0"})
    assert [s.agent for s in found.steps] == [f"a{i}" for i in range(length)]
    assert found.steps[1].inputs == {"d1": "a0"}
    loop = {f"a{i}": ([f"d{i}"], [f"d{(i + 1) % length}"]) for i in range(length)}
    with pytest.raises(PlanningError) as raised:
        plan(agents(**loop, goal=(["d0"], ["goal"])), "goal")
    message = str(raised.value)
    assert message.startswith("cycle among the agents: a4999 needs d4999 from a4998; ")
    assert message.endswith("a4990 needs d4990 from a4989; ... (5000 links in all)")


def test_a_choice_must_name_a_producer() -> None:
    with pytest.raises(PlanningError, match="picks agent z for 'goal', but it does not produce"):
        plan(agents(a=([], ["goal"])), "goal", producers={"goal": "z"})


def test_outputs_are_keyed() -> None:
    assert keyed_by_outputs([1], ["table"], "a") == {"table": [1]}
    assert keyed_by_outputs({"table": [1]}, ["table"], "a") == {"table": [1]}
    with pytest.raises(JobFailed, match="agent a returned no n"):
        keyed_by_outputs({"table": 1}, ["table", "n"], "a")


def test_bad_declarations_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match='"inputs" must be a list of names'):
        as_agent("a", {"function": print, "inputs": "raw"})
    with pytest.raises(ConfigurationError, match=r"agent a: unknown key 'output' \(known: f"):
        as_agent("a", {"function": print, "output": ["table"]})


def test_engine_call_shapes() -> None:
    class Plain:
        def run(self, query, inferred_goal_output, inputs): ...

    class Shaped:
        def run(self, state):
            state["data"]["out"] = state["query"].query.upper()
            return state

    class Defaults:
        def run(self, query, inferred_goal_output=None, inputs=None): ...

    class NamedState:
        def run(self, state, options=None): ...

    class Unnamed:
        def run(self, s): ...

    assert not takes_state(Plain().run) and takes_state(Shaped().run)
    assert not takes_state(Defaults().run)  # one required, but named as the three-argument call
    assert takes_state(NamedState().run) and takes_state(Unnamed().run)
    assert TaiatStateAdapter(Shaped()).run("q", "out", {}) == "Q"
