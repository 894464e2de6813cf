"""How a job is run inside its child: the executor protocol, and the agent and query
executors. The agent registry is `taiat.agents.registry`; a query engine plug-in,
`taiat.agents.query_engines`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from taiat import context
from taiat.agents import query_engines
from taiat.agents.planner import plan
from taiat.agents.registry import (  # noqa: F401 - re-exported: their home used to be this module
    Agent,
    AgentRegistry,
    as_agent,
    default_agents,
    default_registry,
    import_object,
    load_agent_config,
    planning_agents,
)
from taiat.context import current_job
from taiat.errors import ConfigurationError, FinalFailure, JobFailed, PlanningError
from taiat.jobs import Job, JobType
from taiat.query_plans import Plan


@dataclass(frozen=True)
class Expansion:
    """What a query job hands back instead of a result: its plan, which the supervisor creates
    as agent jobs; the query completes with the goal output once they have run."""

    plan: Plan


@runtime_checkable
class JobExecutor(Protocol):
    """Runs the jobs it says it can. `execute` runs in the job's child process; its return
    value (JSON-serialisable) is the job's result. A dict with `"success": False` fails the job
    with its `"error"`.

    An executor that runs AGENT jobs of agents the registry lacks may say so with an optional
    `agents` attribute, a collection of agent names: its supervisor publishes them in the
    fleet's catalogue (with no inputs or outputs unless the registry declares them)."""

    def can_execute(self, job: Job) -> bool: ...

    def execute(self, job: Job) -> Any: ...


def executor_agents(executor: Any) -> list[str]:
    """The agent names an executor says it serves (its optional `agents`), in order, once each;
    a bare string is one name. ConfigurationError for anything else."""
    names = getattr(executor, "agents", None)
    if names is None or isinstance(executor, AgentExecutor):
        return []
    if isinstance(names, str):
        names = [names]
    if isinstance(names, Mapping):
        names = list(names)
    try:
        found = list(names)
    except TypeError:
        raise ConfigurationError(
            f"executor {type(executor).__name__}: `agents` must be a collection of agent names, "
            f"not {type(names).__name__}"
        ) from None
    for name in found:
        if not isinstance(name, str) or not name.strip():
            raise ConfigurationError(
                f"executor {type(executor).__name__}: `agents` must hold agent names, not {name!r}"
            )
    return list(dict.fromkeys(found))


class AgentExecutor:
    """AGENT jobs: call the registered agent with the payload's `parameters`, and each of its
    inputs that an upstream job produced, as keyword arguments. An agent with declared
    `outputs` has its result keyed by them."""

    def __init__(self, registry: Mapping[str, Callable[..., Any] | Agent]) -> None:
        self.registry = dict(registry)
        self.agents = {name: as_agent(name, entry) for name, entry in registry.items()}

    def can_execute(self, job: Job) -> bool:
        return job.job_type is JobType.AGENT

    def execute(self, job: Job) -> Any:
        name = job.payload.get("agent_name")
        if not isinstance(name, str):
            raise JobFailed('an agent job\'s payload needs an "agent_name"')
        agent = self.agents.get(name)
        if agent is None:
            # For good: a retry would meet the same registry, so none is spent on it.
            known = ", ".join(sorted(self.agents)) or "none"
            raise FinalFailure(
                f"agent {name} is not registered (known: {known}); failed without a retry, "
                "as a retry cannot register it: register the agent, then retry the job"
            )
        parameters = job.payload.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise JobFailed('an agent job\'s "parameters" must be a JSON object')
        arguments = {**parameters, **_upstream_inputs(job, agent, parameters)}
        result = agent.function(**arguments)
        outputs = job.payload.get("outputs") or agent.outputs
        return keyed_by_outputs(result, list(outputs), name) if outputs else result


def _upstream_inputs(job: Job, agent: Agent, given: Mapping[str, Any]) -> dict[str, Any]:
    """The agent's inputs that upstream jobs produced: as the plan wired them (`inputs_from`,
    input -> job id), else, for its declared inputs, from any dependency's result of that name."""
    sources = job.payload.get("inputs_from")
    if sources is not None:
        if not isinstance(sources, dict):
            raise JobFailed('an agent job\'s "inputs_from" must map input names to job ids')
        results = current_job().dependency_results
        found = {}
        for item, source in sources.items():
            result = results.get(source)
            if not isinstance(result, dict) or item not in result:
                raise JobFailed(f"input {item!r}: job {source} left no output of that name")
            found[item] = result[item]
        return found
    wanted = [item for item in agent.inputs if item not in given]
    if not wanted or not job.dependencies:
        return {}
    upstream = list(current_job().dependency_results.values())
    return {
        item: result[item]
        for item in wanted
        for result in upstream
        if isinstance(result, dict) and item in result
    }


def keyed_by_outputs(result: Any, outputs: list[str], agent: str) -> Any:
    """An agent's result as a dict keyed by its declared outputs: a bare value is the single
    output's; a dict must hold every output."""
    if isinstance(result, dict) and result.get("success") is False:
        return result  # the agent reports failure: let it fail the job
    if len(outputs) == 1 and not (isinstance(result, dict) and outputs[0] in result):
        return {outputs[0]: result}
    if not isinstance(result, dict):
        raise JobFailed(
            f"agent {agent} declares outputs {', '.join(outputs)}: it must return a dict keyed "
            f"by them, not {type(result).__name__}"
        )
    missing = [name for name in outputs if name not in result]
    if missing:
        raise JobFailed(
            f"agent {agent} returned no {', '.join(missing)} (declared outputs: "
            f"{', '.join(outputs)})"
        )
    return result


class QueryExecutor:
    """QUERY jobs. With a query `engine` ("module:factory", the supervisor's
    `TAIAT_QUERY_ENGINE`), the engine runs the whole query here; otherwise the built-in planner
    plans it over the agents' declarations (`agents`, else the example agents and those of
    `agent_config`), and the plan runs as agent jobs. Both travel with the executor to the
    job's child: nothing here reads the environment."""

    def __init__(
        self,
        agents: Mapping[str, Any] | None = None,
        engine: str | None = None,
        agent_config: str | None = None,
    ) -> None:
        self._agents = None if agents is None else dict(agents)
        self.engine = engine or None
        self.agent_config = agent_config

    def can_execute(self, job: Job) -> bool:
        return job.job_type is JobType.QUERY

    def execute(self, job: Job) -> Any:
        payload = job.payload
        query = payload.get("query")
        goal = payload.get("inferred_goal_output")
        inputs = payload.get("inputs") or {}
        spec = self.engine
        if spec:
            try:
                engine = query_engines.load(spec)
            except ConfigurationError as exc:
                raise FinalFailure(str(exc)) from exc
            try:
                return query_engines.run_query(engine, query, goal, inputs)
            except query_engines.EngineFailed as exc:
                raise JobFailed(str(exc)) from exc
        if not isinstance(goal, str) or not goal:
            raise FinalFailure(
                'a query job\'s payload needs an "inferred_goal_output": the output to produce'
            )
        agents = self._agents
        if agents is None:
            agents = default_agents(agent_config=self.agent_config)
        local = {name: as_agent(name, entry) for name, entry in agents.items()}
        # The live fleet's agents, as the claim read them: the plan may use agents this host
        # lacks, whose jobs run where they are.
        declared = planning_agents(local, _claimed_catalogue())
        try:
            found = plan(declared, goal, set(inputs), payload.get("producers"))
        except PlanningError as exc:
            raise FinalFailure(f"cannot plan the query: {exc}") from exc
        if found.sink is None:
            return inputs[goal]  # the query's inputs give the goal itself
        return Expansion(found)


def _claimed_catalogue() -> dict[str, Any] | None:
    """The live fleet's catalogue that came with this query job's claim; None outside a job,
    or when none came (the agents here are then all there is to plan with)."""
    running = context.running_job()
    return None if running is None else running.catalogue
