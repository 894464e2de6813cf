"""Who forks the jobs' children: the fork server when it can be had, else the supervisor itself.
A fork server that is lost is replaced by a new one; the supervisor forks jobs itself only when
no server can be started (or when one could not fork). A job whose server was killed while it
ran beside other jobs runs next in a server of its own, alone (see `taiat.forking.server`, and
`JobProcess.alone`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from taiat.agents.executors import JobExecutor
from taiat.errors import ForkServerError
from taiat.forking.job_process import DirectLauncher, JobProcess, Launcher, WaitingChild
from taiat.forking.job_user import JobUser
from taiat.forking.server import ForkServer
from taiat.sandbox.cgroups import JobGroup, Limits
from taiat.sandbox.detect import Sandbox

log = logging.getLogger(__name__)

#: Once the supervisor forks jobs itself because a fork server could not be had for a while
#: (none could be started in place of a lost one, or the one in use could not fork: no process
#: to be had, as under a job's fork bomb), a fork server is tried again this long after
#: (seconds): a job's parent is then a server again, not the supervisor.
RETRY_SERVER = 30.0
#: A child forked ahead that could not be had (no cgroup to be made for it, or no server) is
#: tried again this long after (seconds), not on every turn of the supervisor's loop.
RETRY_WAITING = 1.0


class Forking:
    """The supervisor's launcher: the fork server, replaced when it is lost, or the
    supervisor's own forks once no server can be had; and the servers of jobs run alone."""

    def __init__(
        self,
        executors: Sequence[JobExecutor],
        *,
        fork_server: bool,
        after_fork: Callable[[], None] | None = None,
        job_user: JobUser | None = None,
        sandbox: Sandbox | None = None,
        waiting_limits: Limits | None = None,
    ) -> None:
        """`after_fork` runs first in a child the supervisor forks itself: it lets go of
        what the child inherited (the supervisor's database connections). `job_user`: the
        user every child becomes before it runs its job, whoever forks it. `sandbox`: where
        the groups of the children forked ahead are made, with `waiting_limits` (those most
        jobs run under: a job's own are written when it comes, where they differ)."""
        self.executors = list(executors)
        self.after_fork = after_fork
        self.job_user = job_user
        self.sandbox = sandbox
        self.waiting_limits = waiting_limits or Limits()
        #: Children the fork server in use forked ahead, waiting for a job, oldest first.
        self.waiting: list[WaitingChild] = []
        #: When to try again to fork one ahead, after a try failed (monotonic seconds).
        self._waiting_retry_at = 0.0
        self.server: ForkServer | None = None
        #: The fork servers of the jobs that run alone, by job process.
        self.alone: dict[JobProcess, ForkServer] = {}
        #: When to try a fork server again, while the supervisor forks the jobs for want of
        #: one (monotonic seconds; None: never, it was never to be had, or is in use).
        self.retry_server_at: float | None = None
        self._direct_launcher: DirectLauncher | None = None
        if fork_server:
            self.server = self._new_server("")
        self.launcher: Launcher = self.server or self._direct()

    @property
    def server_in_use(self) -> ForkServer | None:
        """The fork server, while it forks the jobs."""
        server = self.server
        in_use = server is not None and self.launcher is server and not server.gone
        return server if in_use else None

    def servers(self) -> list[ForkServer]:
        """Every fork server still in use: the jobs' and those of the jobs run alone."""
        return [s for s in (self.server, *self.alone.values()) if s is not None and not s.gone]

    def server_pids(self) -> set[int]:
        """The pids of the fork servers whose processes have not been reaped."""
        return {s.pid for s in (self.server, *self.alone.values()) if s is not None and s.alive}

    def end_stopped(self) -> None:
        """Kill every fork server found stopped, as one killed by whoever stopped it (see
        `ForkServer.end_if_stopped`): the jobs' server is then replaced as a lost one."""
        for server in self.servers():
            if server.end_if_stopped():
                log.warning("the fork server (pid %d) was stopped (SIGSTOP): killed", server.pid)

    def replace_lost(self) -> bool:
        """Start a new fork server if the one in use is lost (the supervisor forks jobs itself
        if none can be started, and tries again `RETRY_SERVER` seconds later); go back to a
        fork server when that time has come. True if the launcher changed."""
        server = self.server
        if server is None:
            return False
        if self.launcher is not server:
            if self.retry_server_at is None or time.monotonic() < self.retry_server_at:
                return False
            if not server.gone:  # the one that could not fork, still there
                log.info("jobs are forked by the fork server (pid %d) again", server.pid)
                self.launcher = server
                self.retry_server_at = None
                return True
        elif not server.gone:
            return False
        why = server.end.why if server.end is not None else "lost"
        self._drop_waiting()  # they died with it
        server.close()  # its sockets (it has been reaped: it said all it will)
        new = self._new_server(f"after the fork server (pid {server.pid}) was lost ({why}), ")
        if new is None:
            changed = self.launcher is server
            self._go_direct()
            return changed
        self.server = self.launcher = new
        self.retry_server_at = None
        return True

    def start(
        self,
        proc: JobProcess,
        dependency_results: dict[str, Any] | None,
        catalogue: dict[str, Any] | None = None,
    ) -> None:
        """Start `proc`'s child: alone in a fork server of its own if `proc.alone` (or with the
        others if no such server can be had), else from the launcher, which is replaced first
        if it is a lost fork server."""
        if proc.alone and self.server is not None:
            context = f"for job {proc.job.id} ({proc.job.name}) alone: "
            server = self._new_server(context, hold=True)
            if server is not None:
                try:
                    proc.start(server, dependency_results, catalogue)
                except ForkServerError:
                    server.close()
                else:
                    self.alone[proc] = server
                    return
        proc.alone = False
        self.replace_lost()
        waiting = self.waiting.pop(0) if self.waiting else None
        try:
            proc.start(self.launcher, dependency_results, catalogue, waiting)
        except ForkServerError as exc:
            log.warning("%s", exc)
            self.replace_lost()
            proc.start(self.launcher, dependency_results, catalogue)
        except BaseException:
            if waiting is not None and self.server_in_use is not None:
                self._retire(self.server_in_use, waiting)  # its group went with the job
            raise

    def keep_waiting(self, count: int) -> None:
        """Have `count` children forked ahead by the fork server in use, each waiting for a job
        in a cgroup of its own (in a sandbox); let those beyond `count` go. None while there is
        no server in use (jobs are then forked when they come)."""
        server = self.server_in_use
        if server is None:
            self._drop_waiting()
            return
        while len(self.waiting) > count:
            extra = self.waiting.pop()
            log.debug("a child forked ahead let go (%d wanted)", count)
            self._retire(server, extra)
            self._release_group(extra.group)
        if len(self.waiting) < count and time.monotonic() < self._waiting_retry_at:
            return
        while len(self.waiting) < count:
            group = None
            try:
                if self.sandbox is not None:
                    group = self.sandbox.new_group(self.waiting_limits)
                waiting = WaitingChild(server.wait(group.procs_files if group else ()), group)
            except (OSError, ForkServerError) as exc:
                # No group to be had now (a job's start will say why), or no server (replaced
                # on the next turn): tried again in a while.
                log.debug("no child forked ahead: %s", exc)
                self._release_group(group)
                self._waiting_retry_at = time.monotonic() + RETRY_WAITING
                return
            self.waiting.append(waiting)

    def waiting_pids(self) -> list[int]:
        """The pids of the children forked ahead that wait for a job (those told so far)."""
        server = self.server_in_use
        if server is None:
            return []
        server.poll()  # their pids come on a socket the supervisor does not wait on
        return [pid for w in self.waiting if (pid := server.waiting_pids.get(w.id))]

    @staticmethod
    def _retire(server: ForkServer, waiting: WaitingChild) -> None:
        """Let a waiting child go, without a job."""
        try:
            server.retire(waiting.id)
        except ForkServerError:
            pass  # its server is lost, and it with it

    def _drop_waiting(self) -> None:
        """Forget the children forked ahead (their server is gone, or let go of them) and
        release their groups."""
        for waiting in self.waiting:
            self._release_group(waiting.group)
        self.waiting.clear()

    def _release_group(self, group: JobGroup | None) -> None:
        """Kill what is in the group of a child forked ahead, and remove it (or keep it for
        another): it has no job."""
        if group is not None and self.sandbox is not None:
            try:
                self.sandbox.release(group)
            except OSError as exc:
                log.warning("the cgroup of a child forked ahead could not be released: %s", exc)

    def ended(self, proc: JobProcess) -> None:
        """`proc`'s child has been reaped: its own fork server, if it had one, is closed. A
        launch that never became a child, from a fork server still there, means that the server
        could not fork: the supervisor forks jobs itself from now on."""
        own = self.alone.pop(proc, None)
        if own is not None:
            own.close()
        elif not proc.known_pid and (in_use := self.server_in_use) and proc.launcher is in_use:
            log.warning("the fork server could not fork: jobs are forked from the supervisor")
            self._go_direct()

    def close(self) -> None:
        for server in (self.server, *self.alone.values()):
            if server is not None:
                server.close()
        self.alone.clear()
        self._drop_waiting()

    def _new_server(self, context: str, *, hold: bool = False) -> ForkServer | None:
        try:
            server = ForkServer.start(self.executors, hold=hold, job_user=self.job_user)
        except ForkServerError as exc:
            log.warning("%sno fork server (%s): jobs are forked from the supervisor", context, exc)
            return None
        log.info("%sfork server started, pid %d", context, server.pid)
        return server

    def _go_direct(self) -> None:
        """Fork the jobs from the supervisor for now; a fork server again in a while."""
        self.keep_waiting(0)  # the server that could not fork lets those it has go
        self.launcher = self._direct()
        self.retry_server_at = time.monotonic() + RETRY_SERVER

    def _direct(self) -> DirectLauncher:
        if self._direct_launcher is None:
            self._direct_launcher = DirectLauncher(self.executors, self.after_fork, self.job_user)
        return self._direct_launcher
