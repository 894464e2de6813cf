"""The built-in query planner: which agents, in which order, produce a query's goal output
from its inputs. Pure: it reads agents' declared `inputs` and `outputs`, nothing else.

    inputs {"raw"}  ->  clean (raw -> table)  ->  report (table -> report)   goal "report"

Every data item is taken from the query's inputs if given there, else from the one agent that
produces it; an item two agents produce needs the query to choose (`"producers"`). The example
agents stand back: one is picked only for an item no other agent produces.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from typing import Protocol

from taiat.errors import PlanningError
from taiat.query_plans import Plan, Step


class Declared(Protocol):
    """What the planner reads of an agent (`taiat.agents.registry.Agent` has it)."""

    @property
    def inputs(self) -> tuple[str, ...]: ...

    @property
    def outputs(self) -> tuple[str, ...]: ...

    @property
    def example(self) -> bool: ...


def plan(
    agents: Mapping[str, Declared],
    goal: str,
    given: Collection[str] = (),
    producers: Mapping[str, str] | None = None,
) -> Plan:
    """The agents that produce `goal` from the data named in `given`, transitively.
    `producers` picks the agent for an output several agents produce."""
    return _Planner(agents, goal, set(given), dict(producers or {})).run()


#: The links of a cycle an error message names, at most.
_LINKS_SHOWN = 10


class _Planner:
    def __init__(
        self, agents: Mapping[str, Declared], goal: str, given: set[str], chosen: dict[str, str]
    ) -> None:
        self.agents = agents
        self.goal = goal
        self.given = given
        self.chosen = chosen
        self.makers: dict[str, list[str]] = {}  # the agents that are not examples
        self.examples: dict[str, list[str]] = {}
        for name, agent in agents.items():
            makers = self.examples if agent.example else self.makers
            for output in agent.outputs:
                makers.setdefault(output, []).append(name)
        self.steps: dict[str, Step] = {}
        self.path: list[tuple[str, str]] = []  # (agent, the input it is resolving)

    def run(self) -> Plan:
        if self.goal in self.given:
            return Plan(self.goal)
        self._visit(self._producer(self.goal, None))
        return Plan(self.goal, tuple(self.steps.values()))

    def _producer(self, output: str, needed_by: str | None) -> str:
        candidates = sorted(self.makers.get(output) or self.examples.get(output, []))
        choice = self.chosen.get(output)
        if choice is not None:
            anyone = sorted(self.makers.get(output, []) + self.examples.get(output, []))
            if choice not in anyone:
                raise PlanningError(
                    f'"producers" picks agent {choice} for {output!r}, but it does not produce '
                    f"it (producers: {', '.join(anyone) or 'none'})"
                )
            return choice
        if not candidates and needed_by is None:
            known = ", ".join(sorted(self.makers or self.examples)) or "none"
            raise PlanningError(
                f"no agent produces the goal output {output!r} (outputs agents produce: {known})"
            )
        if not candidates:
            raise PlanningError(
                f"missing input {output!r}: agent {needed_by} needs it, and neither the query's "
                f'"inputs" nor any agent provide it'
            )
        if len(candidates) > 1:
            raise PlanningError(
                f"ambiguous producer for {output!r}: agents {' and '.join(candidates)} "
                f"{'both' if len(candidates) == 2 else 'all'} produce it; choose one with the "
                f'payload\'s "producers": '
                f'{{"{output}": "{candidates[0]}"}}'
            )
        return candidates[0]

    def _visit(self, root: str) -> None:
        """Add `root` after every agent it needs, depth first: with a stack of our own, so that
        a long chain of agents plans as well as a short one."""
        walking = [self._enter(root)]  # (agent, its inputs so far, its inputs left)
        while walking:
            name, inputs, left = walking[-1]
            item = next(left, None)
            if item is None:  # all it needs is planned: the agent's step follows theirs
                walking.pop()
                agent = self.agents[name]
                queue = getattr(agent, "queue", None)
                self.steps[name] = Step(name, inputs, tuple(agent.outputs), queue)
                if walking:
                    _, needed = self.path.pop()
                    walking[-1][1][needed] = name
                continue
            if item in self.given:
                inputs[item] = None
                continue
            source = self._producer(item, name)
            if source in self.steps:
                inputs[item] = source
                continue
            self.path.append((name, item))
            self._check_cycle(source)
            walking.append(self._enter(source))

    def _enter(self, name: str) -> tuple[str, dict[str, str | None], Iterator[str]]:
        return name, {}, iter(self.agents[name].inputs)

    def _check_cycle(self, name: str) -> None:
        walking = [agent for agent, _ in self.path]
        if name in walking:
            loop = self.path[walking.index(name) :]
            links = [
                f"{agent} needs {item} from {nxt}"
                for (agent, item), nxt in zip(loop, [a for a, _ in loop[1:]] + [name], strict=True)
            ]
            shown = "; ".join(links[:_LINKS_SHOWN])
            if len(links) > _LINKS_SHOWN:
                shown += f"; ... ({len(links)} links in all)"
            raise PlanningError(f"cycle among the agents: {shown}")
