"""The agent registry: each agent's function and, optionally, the data it consumes (`inputs`)
and produces (`outputs`), from the example agents, the agent config (`TAIAT_AGENT_CONFIG`,
read by the configuration and passed in) and the program's own `agent_registry`."""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from taiat.errors import ConfigurationError
from taiat.store.validation import QUEUE_NAME

AgentRegistry = dict[str, Callable[..., Any]]


@dataclass(frozen=True)
class Agent:
    """A registered agent. `inputs` and `outputs` are data names; an agent without them can
    still run as an AGENT job, but the planner never picks it."""

    name: str
    function: Callable[..., Any]
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    #: One of the example agents (`taiat.agents.examples`): the planner picks it only for data no
    #: other agent produces.
    example: bool = False
    #: The queue its planned jobs go to; None: the query's.
    queue: str | None = None

    def declared(self) -> dict[str, Any]:
        """What the fleet's catalogue says of it: `{"inputs", "outputs", "queue"}`."""
        return {"inputs": list(self.inputs), "outputs": list(self.outputs), "queue": self.queue}


#: A catalogue: what each agent of a supervisor (or of the live fleet) declares, by name,
#: `{"inputs": [...], "outputs": [...], "queue": str | None}`.
Catalogue = dict[str, dict[str, Any]]


def catalogue(agents: Mapping[str, Agent], served: Iterable[str] = ()) -> Catalogue:
    """What a supervisor publishes of its agents: those of `agents`, and the names in `served`
    (the agents its custom executors serve), with no inputs or outputs unless `agents` has
    them."""
    found = {name: agent.declared() for name, agent in agents.items()}
    for name in served:
        found.setdefault(name, {"inputs": [], "outputs": [], "queue": None})
    return found


@dataclass(frozen=True)
class Listed:
    """An agent as the fleet's catalogue lists it: what it declares, not its function (which
    stays on the hosts that have it)."""

    name: str
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    example: bool = False
    queue: str | None = None


def planning_agents(
    local: Mapping[str, Agent], fleet: Mapping[str, Mapping[str, Any]] | None
) -> dict[str, Agent | Listed]:
    """The agents a query is planned with: those of the live fleet's catalogue `fleet` (None:
    only the `local` ones), and the local ones it lacks. An agent of the catalogue counts as an
    example agent when this host has it as one, declared the same."""
    if fleet is None:
        return dict(local)
    found: dict[str, Agent | Listed] = {}
    for name, entry in fleet.items():
        inputs = tuple(entry.get("inputs") or ())
        outputs = tuple(entry.get("outputs") or ())
        here = local.get(name)
        same = here is not None and (here.inputs, here.outputs) == (inputs, outputs)
        example = bool(same and here is not None and here.example)
        found[name] = Listed(name, inputs, outputs, example, entry.get("queue"))
    for name, agent in local.items():
        found.setdefault(name, agent)
    return found


def import_object(spec: str, what: str) -> Any:
    """The object named by "package.module:attribute"."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ConfigurationError(f'{what}: {spec!r} is not of the form "module:function"')
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(
            f"{what}: cannot import {module_name}: {exc}{_searched(exc, module_name)}"
        ) from exc
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise ConfigurationError(f"{what}: {module_name} has no {attribute}") from None


def _searched(exc: ImportError, module_name: str) -> str:
    """Where Python looked, when it is the module itself (or its package) that was not found
    there, rather than something the module imports."""
    missing = exc.name if isinstance(exc, ModuleNotFoundError) else None
    if not missing or not (module_name == missing or module_name.startswith(f"{missing}.")):
        return ""
    folders = os.pathsep.join(entry or os.getcwd() for entry in sys.path)
    return (
        f" (searched the import path {folders}; put the folder that holds it on the path "
        "with taiat-supervisor --path DIR or TAIAT_PATH)"
    )


#: The keys of a registry entry given as a dict.
_ENTRY_KEYS = frozenset({"function", "inputs", "outputs", "queue"})


def as_agent(name: str, entry: Any, what: str = "agent") -> Agent:
    """An `Agent` from a registry entry: a function, "module:function", an `Agent`, or a dict
    {"function": ..., "inputs": [...], "outputs": [...], "queue": ...}."""
    if isinstance(entry, Agent):
        if entry.name == name:
            return entry
        return replace(entry, name=name)
    inputs: Any = ()
    outputs: Any = ()
    queue: Any = None
    function = entry
    if isinstance(entry, Mapping):
        unknown = sorted(set(entry) - _ENTRY_KEYS, key=str)
        if unknown:
            raise ConfigurationError(
                f"{what} {name}: unknown key {unknown[0]!r} (known: "
                f"{', '.join(sorted(_ENTRY_KEYS))})"
            )
        function = entry.get("function")
        inputs = entry.get("inputs", ())
        outputs = entry.get("outputs", ())
        queue = entry.get("queue")
    if queue is not None and not (isinstance(queue, str) and QUEUE_NAME.fullmatch(queue)):
        raise ConfigurationError(
            f'{what} {name}: "queue" must be a queue name (1-64 letters, digits, "_", "." and '
            f'"-"), not {json.dumps(queue) if _is_plain(queue) else repr(queue)}'
        )
    if isinstance(function, str):
        function = import_object(function, f"{what} {name}")
    if function is None:
        raise ConfigurationError(f'{what} {name} needs "module:function"')
    if not callable(function):
        raise ConfigurationError(f"{what} {name}: {function!r} is not callable")
    return Agent(
        name,
        function,
        _names(name, "inputs", inputs, what),
        _names(name, "outputs", outputs, what),
        queue=queue,
    )


def _is_plain(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def _names(agent: str, key: str, value: Any, what: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise ConfigurationError(f'{what} {agent}: "{key}" must be a list of names')
    if not all(isinstance(name, str) and name.strip() for name in value):
        raise ConfigurationError(f'{what} {agent}: "{key}" must be a list of non-empty names')
    if len(set(value)) != len(value):
        raise ConfigurationError(f'{what} {agent}: "{key}" names one data item twice')
    return tuple(value)


def load_agents(value: str | None = None) -> dict[str, Agent]:
    """Agents from an agent config, the value of `TAIAT_AGENT_CONFIG`: a JSON object, or the
    path of a JSON file, mapping names to "module:function" or to {"function":
    "module:function", "inputs": [...], "outputs": [...], "queue": "name"} (the queue its
    planned jobs go to). None or blank: no agents. A value that is JSON (an array, say) is read
    as JSON, never as a path, and one of the wrong shape is a ConfigurationError that says what
    it is."""
    if not value or not value.strip():
        return {}
    text, where = value, ""
    if not _is_json(value):
        path = Path(value)
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigurationError(f"TAIAT_AGENT_CONFIG: cannot read {path}: {exc}") from exc
        where = f" (in {path})"
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"TAIAT_AGENT_CONFIG is not valid JSON{where}: {exc}") from exc
    except RecursionError:
        raise ConfigurationError(f"TAIAT_AGENT_CONFIG nests too deeply to be read{where}") from None
    if not isinstance(config, dict):
        raise ConfigurationError(
            "TAIAT_AGENT_CONFIG must be a JSON object of agent names, "
            f'{{"name": "module:function", ...}}, not {_json_kind(config)}{where}'
        )
    agents: dict[str, Agent] = {}
    for name, entry in config.items():
        if not isinstance(entry, str | dict):
            raise ConfigurationError(
                f'TAIAT_AGENT_CONFIG: agent {name} needs "module:function", '
                f"not {_json_kind(entry)}{where}"
            )
        agents[name] = as_agent(name, entry, "TAIAT_AGENT_CONFIG agent")
    return agents


def _is_json(value: str) -> bool:
    """Whether an agent config is JSON itself rather than a file's path: it starts as an
    object, an array or a string does, or it is a JSON number, true, false or null that names
    no file."""
    if value.lstrip().startswith(("{", "[", '"')):
        return True
    try:
        json.loads(value)
    except ValueError:
        return False
    return not os.path.exists(value)


def _json_kind(value: Any) -> str:
    """What a JSON value is, in words: "a JSON array", "the JSON number 3"."""
    if isinstance(value, list):
        return "a JSON array"
    if isinstance(value, dict):
        return "a JSON object"
    shown = json.dumps(value)
    shown = shown if len(shown) <= 40 else f"{shown[:37]}..."
    if isinstance(value, str):
        return f"the JSON string {shown}"
    if value is None or isinstance(value, bool):
        return f"JSON {shown}"
    return f"the JSON number {shown}"


def load_agent_config(value: str | None = None) -> AgentRegistry:
    """The functions of `load_agents`, by name."""
    return {name: agent.function for name, agent in load_agents(value).items()}


def default_agents(
    extra: Mapping[str, Any] | None = None, agent_config: str | None = None
) -> dict[str, Agent]:
    """The example agents, then those of `agent_config` (`TAIAT_AGENT_CONFIG`'s value, see
    `load_agents`), then `extra`; later ones win (by name; by the data they produce, any of
    yours wins over an example agent when planning)."""
    from taiat.agents.examples import AGENTS

    agents = {name: replace(as_agent(name, entry), example=True) for name, entry in AGENTS.items()}
    agents.update(load_agents(agent_config))
    agents.update({name: as_agent(name, entry) for name, entry in (extra or {}).items()})
    return agents


def default_registry(
    extra: Mapping[str, Any] | None = None, agent_config: str | None = None
) -> AgentRegistry:
    """The functions of `default_agents`, by name."""
    return {name: agent.function for name, agent in default_agents(extra, agent_config).items()}
