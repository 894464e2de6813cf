"""What a query job's plan is: its steps, each an agent after the agents it needs, and what a
query's payload may hold. The store writes a plan into the query's payload and expands it
into agent jobs; the planner (`taiat.agents.planner`) makes it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from taiat.errors import InvalidJob


@dataclass(frozen=True)
class Step:
    """One agent of a plan. `inputs` maps each input to the agent producing it, or to None
    when the query's inputs give it."""

    agent: str
    inputs: dict[str, str | None] = field(default_factory=dict)
    outputs: tuple[str, ...] = ()
    #: The queue the agent declares for its jobs; None: the query's.
    queue: str | None = None

    @property
    def after(self) -> list[str]:
        """The agents this one waits for, once each."""
        return list(dict.fromkeys(a for a in self.inputs.values() if a is not None))


@dataclass(frozen=True)
class Plan:
    """The steps, each after every step it needs; the last one produces the goal (no step at
    all when the query's inputs give the goal)."""

    goal: str
    steps: tuple[Step, ...] = ()

    @property
    def sink(self) -> Step | None:
        return self.steps[-1] if self.steps else None

    def to_json(self) -> dict[str, Any]:
        steps = []
        for s in self.steps:
            step: dict[str, Any] = {
                "agent": s.agent,
                "inputs": s.inputs,
                "outputs": list(s.outputs),
            }
            if s.queue is not None:
                step["queue"] = s.queue
            steps.append(step)
        return {"goal": self.goal, "steps": steps}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Plan:
        steps = tuple(
            Step(s["agent"], dict(s["inputs"]), tuple(s["outputs"]), s.get("queue"))
            for s in data["steps"]
        )
        return cls(data["goal"], steps)

    def describe(self) -> str:
        """One line per step: `agent (a, b -> c)`, with where each input comes from."""
        lines = []
        for step in self.steps:
            sources = ", ".join(f"{k} from {v or 'the query'}" for k, v in step.inputs.items())
            lines.append(f"{step.agent}: {sources or 'no inputs'} -> {', '.join(step.outputs)}")
        return "\n".join(lines)


#: What expansion writes into a query's payload: never the caller's to give, and gone when the
#: query is retried.
EXPANSION_KEYS = ("plan",)


def check_query_payload(payload: Mapping[str, Any]) -> None:
    """InvalidJob unless a QUERY payload names its goal (`inferred_goal_output`), its planning
    keys have the right shapes, and it has none of the keys expansion writes."""
    for key in EXPANSION_KEYS:
        if key in payload:
            raise InvalidJob(
                f'a query\'s payload cannot carry "{key}": the supervisor writes it when it plans '
                "the query"
            )
    if "inferred_goal_output" not in payload:
        raise InvalidJob(
            'a query job\'s payload needs an "inferred_goal_output": the name of the output '
            "to produce"
        )
    goal = payload["inferred_goal_output"]
    if not isinstance(goal, str) or not goal.strip():
        raise InvalidJob(f'a query\'s "inferred_goal_output" must be a name, got {goal!r}')
    inputs = payload.get("inputs")
    if inputs is not None and not isinstance(inputs, Mapping):
        raise InvalidJob(f'a query\'s "inputs" must be a JSON object, got {type(inputs).__name__}')
    chosen = payload.get("producers")
    if chosen is not None and (
        not isinstance(chosen, Mapping) or not all(isinstance(v, str) for v in chosen.values())
    ):
        raise InvalidJob('a query\'s "producers" must map output names to agent names')
