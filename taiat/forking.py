"""Who forks the jobs' children: the fork server when it can be had, else the supervisor itself,
and the fall from one to the other when the server fails (see `taiat.forkserver`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from taiat import db
from taiat.executors import JobExecutor
from taiat.forkserver import ForkServer, ForkServerError
from taiat.process import DirectLauncher, JobProcess, Launcher

log = logging.getLogger(__name__)


class Forking:
    """The supervisor's launcher, chosen once and changed only for the worse: from the fork
    server to the supervisor's own forks."""

    def __init__(self, executors: Sequence[JobExecutor], engine: Any, *, fork_server: bool) -> None:
        self.executors = list(executors)
        self.engine = engine
        self.server: ForkServer | None = None
        if fork_server:
            try:
                self.server = ForkServer.start(self.executors, db.url_of(engine))
            except ForkServerError as exc:
                log.warning("no fork server (%s): jobs are forked from the supervisor", exc)
            else:
                log.info("fork server started, pid %d", self.server.pid)
        self.launcher: Launcher = self.server or self._direct()

    @property
    def server_in_use(self) -> ForkServer | None:
        """The fork server, while it forks the jobs."""
        server = self.server
        in_use = server is not None and self.launcher is server and not server.gone
        return server if in_use else None

    def start(self, proc: JobProcess, dependency_results: dict[str, Any] | None) -> None:
        """Start `proc`'s child; when the fork server has gone, by the supervisor's own fork."""
        try:
            proc.start(self.launcher, dependency_results)
        except ForkServerError as exc:
            log.warning("%s: jobs are forked from the supervisor from now on", exc)
            self.launcher = self._direct()
            proc.start(self.launcher, dependency_results)

    def never_started(self) -> None:
        """A launch never became a child: if the fork server is still there, it could not fork,
        and the supervisor forks jobs itself from now on."""
        if self.server_in_use is not None:
            log.warning("the fork server could not fork: jobs are forked from the supervisor")
            self.launcher = self._direct()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()

    def _direct(self) -> DirectLauncher:
        engine = self.engine
        return DirectLauncher(self.executors, engine, lambda: db.after_fork_in_child(engine))
