"""Query engine plug-ins (`TAIAT_QUERY_ENGINE="module:factory"`): load one, and run a query
through it in whichever call shape it has. Runs in the query job's child process.

    engine.run(query, inferred_goal_output, inputs) -> result       the job manager's shape
    engine.run(state) -> state                                     the Taiat engine's shape,
        state = {"query": {"query", "inferred_goal_output", "status", "error"}, "data": {...}}
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from taiat.agents.registry import import_object
from taiat.errors import ConfigurationError, EngineFailed


def load(spec: str) -> Any:
    """The engine `spec`'s factory makes."""
    factory = import_object(spec, "TAIAT_QUERY_ENGINE")
    if not callable(factory):
        raise ConfigurationError(f"TAIAT_QUERY_ENGINE: {spec} is not callable")
    try:
        engine = factory()
    except Exception as exc:  # noqa: BLE001 - any failure to build it is a configuration one
        raise ConfigurationError(
            f"TAIAT_QUERY_ENGINE: {spec}() failed: {type(exc).__name__}: {exc}"
        ) from exc
    if not callable(getattr(engine, "run", None)):
        raise ConfigurationError(f"TAIAT_QUERY_ENGINE: what {spec}() returns has no run()")
    return engine


def run_query(engine: Any, query: Any, goal: Any, inputs: Mapping[str, Any]) -> Any:
    """The engine's result for the query; EngineFailed, in the engine's words, if it fails."""
    runner = TaiatStateAdapter(engine) if takes_state(engine.run) else engine
    try:
        return runner.run(query, goal, dict(inputs))
    except EngineFailed:
        raise
    except Exception as exc:  # noqa: BLE001 - the engine's failure is the job's, in words
        raise EngineFailed(f"the query engine failed: {type(exc).__name__}: {exc}") from exc


def takes_state(run: Any) -> bool:
    """Whether `run` has the Taiat engine's shape, `run(state)`: by its parameters' names when
    they say (`state`; or `query`, `inferred_goal_output`, `inputs`), else by whether it can
    take the three arguments of the job manager's shape."""
    try:
        signature = inspect.signature(run)
    except (TypeError, ValueError):
        return False
    positional = [
        p.name
        for p in signature.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if positional and positional[0] == "state":
        return True
    if _JOB_MANAGER_NAMES & set(positional):
        return False
    try:
        signature.bind(None, None, None)
    except TypeError:
        return True
    return False


#: Parameter names of the job manager's shape, `run(query, inferred_goal_output, inputs)`.
_JOB_MANAGER_NAMES = frozenset({"query", "inferred_goal_output", "inputs"})


class QueryState(dict):  # type: ignore[type-arg]
    """The query in a Taiat state: a dict whose keys also read and write as attributes
    (`state["query"].inferred_goal_output`), as the Taiat engine's query object does."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value


class TaiatStateAdapter:
    """Gives an engine of the Taiat shape the job manager's: the query and its inputs go in as
    a state (`query`, `data`); the goal output comes out of the state's `data`, and a state
    whose query says `status: "error"` is the engine's failure, with its `error`."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def run(self, query: Any, goal: Any, inputs: Mapping[str, Any]) -> Any:
        state: dict[str, Any] = {
            "query": QueryState(query=query, inferred_goal_output=goal, status=None, error=None),
            "data": dict(inputs),
        }
        returned = self.engine.run(state)
        state = state if returned is None else returned
        found = _field(state, "query")
        if _field(found, "status") in ("error", "failed"):
            reason = _field(found, "error") or "no reason given"
            raise EngineFailed(f"the query engine failed: {reason}")
        data = _field(state, "data") or {}
        if goal is None:
            return dict(data)
        if goal not in data:
            made = ", ".join(sorted(data)) or "nothing"
            raise EngineFailed(f"the query engine produced no {goal!r} (its data: {made})")
        return data[goal]


def _field(holder: Any, name: str) -> Any:
    if isinstance(holder, Mapping):
        return holder.get(name)
    return getattr(holder, name, None)
