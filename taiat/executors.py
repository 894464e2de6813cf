"""How a job is run inside its child: the executor protocol, agent and query executors, and
the agent registry (`TAIAT_AGENT_CONFIG`)."""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from taiat.errors import ConfigurationError, TaiatError
from taiat.jobs import Job, JobType

AgentRegistry = dict[str, Callable[..., Any]]


class JobFailed(TaiatError):
    """Raised inside a job to fail it with a message, without a traceback."""


@runtime_checkable
class JobExecutor(Protocol):
    """Runs the jobs it says it can. `execute` runs in the job's child process; its return
    value (JSON-serialisable) is the job's result. A dict with `"success": False` fails the job
    with its `"error"`."""

    def can_execute(self, job: Job) -> bool: ...

    def execute(self, job: Job) -> Any: ...


class AgentExecutor:
    """AGENT jobs: call `registry[payload["agent_name"]](**payload["parameters"])`."""

    def __init__(self, registry: Mapping[str, Callable[..., Any]]) -> None:
        self.registry = dict(registry)

    def can_execute(self, job: Job) -> bool:
        return job.job_type is JobType.AGENT

    def execute(self, job: Job) -> Any:
        name = job.payload.get("agent_name")
        if not isinstance(name, str):
            raise JobFailed('an agent job\'s payload needs an "agent_name"')
        function = self.registry.get(name)
        if function is None:
            known = ", ".join(sorted(self.registry)) or "none"
            raise JobFailed(f"agent {name} is not registered (known: {known})")
        parameters = job.payload.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise JobFailed('an agent job\'s "parameters" must be a JSON object')
        return function(**parameters)


class QueryExecutor:
    """QUERY jobs: run through the engine named by `TAIAT_QUERY_ENGINE` ("module:factory")."""

    def can_execute(self, job: Job) -> bool:
        return job.job_type is JobType.QUERY

    def execute(self, job: Job) -> Any:
        spec = os.environ.get("TAIAT_QUERY_ENGINE")
        if not spec:
            raise JobFailed(
                'no query engine is configured: set TAIAT_QUERY_ENGINE to "module:factory"'
            )
        engine = import_object(spec, "TAIAT_QUERY_ENGINE")()
        payload = job.payload
        return engine.run(
            payload.get("query"), payload.get("inferred_goal_output"), payload.get("inputs") or {}
        )


def import_object(spec: str, what: str) -> Any:
    """The object named by "package.module:attribute"."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ConfigurationError(f'{what}: {spec!r} is not of the form "module:function"')
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"{what}: cannot import {module_name}: {exc}") from exc
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise ConfigurationError(f"{what}: {module_name} has no {attribute}") from None


def load_agent_config(value: str | None = None) -> AgentRegistry:
    """Agents from `TAIAT_AGENT_CONFIG`: a JSON object, or the path of a JSON file, mapping
    names to "module:function" (or to {"function": "module:function", ...})."""
    value = os.environ.get("TAIAT_AGENT_CONFIG") if value is None else value
    if not value or not value.strip():
        return {}
    text = value
    if not value.lstrip().startswith("{"):
        path = Path(value)
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigurationError(f"TAIAT_AGENT_CONFIG: cannot read {path}: {exc}") from exc
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"TAIAT_AGENT_CONFIG is not valid JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise ConfigurationError("TAIAT_AGENT_CONFIG must be a JSON object of agent names")
    registry: AgentRegistry = {}
    for name, entry in config.items():
        spec = entry.get("function") if isinstance(entry, dict) else entry
        if not isinstance(spec, str):
            raise ConfigurationError(f'TAIAT_AGENT_CONFIG: agent {name} needs "module:function"')
        function = import_object(spec, f"TAIAT_AGENT_CONFIG agent {name}")
        if not callable(function):
            raise ConfigurationError(f"TAIAT_AGENT_CONFIG: {spec} is not callable")
        registry[name] = function
    return registry


def default_registry(extra: Mapping[str, Callable[..., Any]] | None = None) -> AgentRegistry:
    """The example agents, then `TAIAT_AGENT_CONFIG`, then `extra`; later ones win."""
    from taiat.examples import AGENTS

    return {**AGENTS, **load_agent_config(), **(extra or {})}
