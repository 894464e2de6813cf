"""What a job runs. The agent registry (`registry`), the executors that run a job inside its
child (`executors`), query engine plug-ins (`query_engines`), the built-in query planner
(`planner`), and the example agents (`examples`).

The registry's names are importable from here (`from taiat.agents import load_agents`), as
when the registry was this one module; each is imported when first used."""

from taiat.compat import lazy_names

_REGISTRY = "taiat.agents.registry"

__getattr__, __dir__ = lazy_names(
    __name__,
    {
        name: _REGISTRY
        for name in (
            "Agent",
            "AgentRegistry",
            "as_agent",
            "default_agents",
            "default_registry",
            "import_object",
            "load_agent_config",
            "load_agents",
        )
    },
)
