"""`TaiatWorker`, the seed's name for the supervisor, and `JobExecutor` for custom executors."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import fields
from typing import Any

from taiat.agents.executors import JobExecutor
from taiat.job_manager import JobManager
from taiat.supervisor.daemon import Supervisor, SupervisorConfig

__all__ = ["JobExecutor", "TaiatWorker", "SupervisorConfig"]


class TaiatWorker(Supervisor):
    """The supervisor, built the seed's way::

        worker = TaiatWorker(session_maker=session_maker, agent_registry={"name": function})
        worker.add_executor(MyCustomExecutor())
        worker.run()   # blocks until SIGTERM/SIGINT or worker.stop()

    Any `SupervisorConfig` field (poll_interval, max_concurrent_jobs, job_timeout, ...) may be
    given as a keyword.
    """

    def __init__(
        self,
        session_maker: Any = None,
        agent_registry: Mapping[str, Callable[..., Any]] | None = None,
        *,
        database_url: str | None = None,
        **settings: Any,
    ) -> None:
        known = {f.name for f in fields(SupervisorConfig)}
        unknown = set(settings) - known
        if unknown:
            raise TypeError(f"TaiatWorker got unknown settings: {', '.join(sorted(unknown))}")
        config = SupervisorConfig(database_url=database_url, **settings)
        # Without a sessionmaker, the supervisor makes its engine itself, its waits bounded;
        # a sessionmaker's engine is the caller's, and stays as the caller made it.
        manager = JobManager(session_maker) if session_maker is not None else None
        super().__init__(config, manager=manager, agent_registry=agent_registry)
