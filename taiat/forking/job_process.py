"""A job's child process seen from the supervisor: fork, read the result as it arrives, watch
the deadline and the memory of its process tree, kill by process group (and, in a sandbox,
every process of its cgroup), reap, and say in words how it ended."""

from __future__ import annotations

import fcntl
import gc
import logging
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import psutil

from taiat.agents.executors import JobExecutor
from taiat.forking import child, posix, stacks, wire
from taiat.forking.job_user import JobUser
from taiat.forking.output import JobOutput
from taiat.forking.server import LOST, Exit, ServerEnd
from taiat.forking.spool import Spool
from taiat.jobs import Job, Outcome
from taiat.sandbox.cgroups import JobGroup, Limits
from taiat.sandbox.detect import Sandbox

log = logging.getLogger(__name__)

_READ_CHUNK = 1 << 20
#: Bytes of a large result (see `wire.LARGE_MESSAGE`) moved from its pipe to its file in one
#: turn of the supervisor's loop: however large the result, a turn stays short.
_SPOOL_PER_TURN = 8 << 20
#: Bytes kept of the end of a child's stdout, and of its stderr, unless told otherwise.
DEFAULT_TAIL = 64 << 10


#: Causes of an ending whose job has moved on without this run (cancelled, or taken back by
#: another supervisor): only the run itself is left to record, and it is no failure.
MOVED_ON = frozenset({Outcome.CANCELLED, Outcome.SUPERSEDED})
#: Causes of an ending before which the child's stack is dumped and kept, and its error says
#: where it was: a timeout, a cancel (and a claim taken back, which is how SQLite sees one).
DUMPED = frozenset({Outcome.TIMED_OUT, Outcome.CANCELLED, Outcome.SUPERSEDED})


@dataclass(frozen=True)
class Ending:
    """How a child ended. `ok` with `result`, or not with `error` in words."""

    ok: bool
    #: The job's result: as its checked JSON text (`JsonText`), to be stored as it is; a
    #: `Spool` when large; or the value itself when the text needed a closer look.
    result: Any
    error: str | None
    #: Completed, failed, timed out, crashed, memory, stopped (the supervisor cut it short), or
    #: one of MOVED_ON: the `outcome` of its attempt.
    cause: Outcome
    exit_code: int | None
    exit_signal: int | None
    wall_seconds: float
    cpu_user_seconds: float
    cpu_system_seconds: float
    peak_rss_bytes: int
    #: A query job's plan, to create as agent jobs (cause PLANNED), instead of a result.
    plan: dict[str, Any] | None = None
    #: The job failed in a way no retry can mend (it said so): fail it for good.
    final: bool = False
    #: In a sandbox: how many of its processes other than its child were still in its cgroup
    #: when it was stopped or its child ended, and were killed (None: no sandbox).
    stragglers_killed: int | None = None


def unstarted(error: str, wall_seconds: float = 0.0) -> Ending:
    """The ending of a claim that did not run (or is not known to have): STOPPED, so that
    its job goes back to pending with no retry spent."""
    return Ending(False, None, error, Outcome.STOPPED, None, None, wall_seconds, 0.0, 0.0, 0)


@dataclass(frozen=True)
class WaitingChild:
    """A child a fork server forked ahead, waiting for a job (`ForkServer.wait`): its id there,
    and the cgroup it joined (None: no sandbox)."""

    id: int
    group: JobGroup | None


class Launcher(Protocol):
    """Starts job children and learns how they ended: the fork server
    (`taiat.forking.server.ForkServer`), or the supervisor itself (`DirectLauncher`). A launch is
    known by the handle `launch` returns, which need not be the child's pid: the fork server
    says that later."""

    def launch(
        self,
        job: Job,
        result_fd: int,
        max_result_bytes: int,
        dependency_results: dict[str, Any] | None = None,
        output_fds: Sequence[int] = (),
        *,
        catalogue: dict[str, Any] | None = None,
        stack_fd: int = -1,
        cgroup: Sequence[str] = (),
        waiting: int = 0,
    ) -> int: ...

    def child_pid(self, handle: int, *, wait: bool = False) -> int | None: ...

    def reap(self, handle: int) -> Exit | None: ...


class DirectLauncher:
    """Fork job children from this very process (the fallback when there is no fork server,
    and the way of an embedding program that asks for none)."""

    def __init__(
        self,
        executors: Sequence[JobExecutor],
        after_fork: Callable[[], None] | None = None,
        job_user: JobUser | None = None,
    ) -> None:
        """`job_user`: the user each child becomes before it runs its job."""
        self.executors = list(executors)
        self.after_fork = after_fork
        self.job_user = job_user
        posix.prepare_to_fork()
        self._processes: dict[int, Any] = {}
        # Here, not at the top: a supervisor whose jobs the fork server forks spares the 2.5 MB.
        import multiprocess

        self._context = multiprocess.get_context("fork")
        self._known_to_multiprocess = multiprocess.process._children

    def launch(
        self,
        job: Job,
        result_fd: int,
        max_result_bytes: int,
        dependency_results: dict[str, Any] | None = None,
        output_fds: Sequence[int] = (),
        *,
        catalogue: dict[str, Any] | None = None,
        stack_fd: int = -1,
        cgroup: Sequence[str] = (),
        waiting: int = 0,
    ) -> int:
        """As `ForkServer.launch` (`waiting` is not for it: no child waits here)."""
        process = self._context.Process(
            target=child.run,
            args=(
                job,
                self.executors,
                result_fd,
                os.getpid(),
                max_result_bytes,
                self.after_fork,
                dependency_results,
                tuple(output_fds),
                catalogue,
                self.job_user,
                stack_fd,
                tuple(cgroup),
            ),
            name=f"taiat-job-{job.id}",
        )
        # Objects alive now are the parent's: frozen, the collector leaves them alone in the
        # child, whose pages then stay shared instead of being copied on the collector's writes.
        gc.freeze()
        try:
            process.start()
        finally:
            gc.unfreeze()
        # multiprocess reaps the children it knows of whenever another one starts, which would
        # take the exit status and rusage from us: we reap this one ourselves with wait4.
        self._known_to_multiprocess.discard(process)
        self._processes[process.pid] = process
        try:  # also from here, so a kill that comes before the child's own setpgrp still works
            os.setpgid(process.pid, process.pid)
        except OSError:
            pass  # the child did it first, or has exited
        return process.pid

    def child_pid(self, handle: int, *, wait: bool = False) -> int | None:
        return handle  # the pid itself

    def reap(self, handle: int) -> Exit | None:
        pid = handle
        try:
            found, status, usage = os.wait4(pid, os.WNOHANG)
        except ChildProcessError:
            # Reaped by someone else in this process (an embedding program's own wait()): the
            # exit status is lost, but the job must not wait for it forever.
            if posix.pid_exists(pid):
                return None
            self._forget(pid, 255)
            return LOST
        if found == 0:
            return None
        self._forget(pid, os.waitstatus_to_exitcode(status))
        return Exit(status, usage.ru_utime, usage.ru_stime, usage.ru_maxrss * 1024)

    def _forget(self, pid: int, returncode: int) -> None:
        # We reaped the child ourselves; tell multiprocess so that it lets go.
        process = self._processes.pop(pid)
        popen = getattr(process, "_popen", None)
        if popen is not None:
            popen.returncode = returncode
        process.close()


class JobProcess:
    """One job running in its own forked child and process group."""

    def __init__(
        self,
        job: Job,
        *,
        timeout: float | None,
        memory_limit_bytes: int | None,
        max_result_bytes: int,
        exit_grace: float = 5.0,
        output: JobOutput | None = None,
        sandbox: Sandbox | None = None,
        max_processes: int | None = None,
        cpu_limit: float | None = None,
    ) -> None:
        """`output` captures the child's stdout and stderr (by default, their last 64 KiB);
        its tails go with the attempt's record. With a cgroup `sandbox`, the child runs in a
        group of its own, where the kernel caps its memory, its processes (`max_processes`)
        and its CPU (`cpu_limit`, in cores)."""
        self.job = job
        self.output = output if output is not None else JobOutput(DEFAULT_TAIL)
        self.timeout = timeout
        #: How long the child may take to exit once it has sent its result.
        self.exit_grace = exit_grace
        self.memory_limit_bytes = memory_limit_bytes
        self.max_result_bytes = max_result_bytes
        self.handle = 0
        self._pid: int | None = None
        self.fd = -1
        self.started = 0.0
        self.started_at = datetime.now(UTC).replace(tzinfo=None)
        self.deadline: float | None = None
        self.kill_at: float | None = None
        self.rss_bytes = 0
        self.peak_rss_bytes = 0
        self._buffer = bytearray()
        self._expected: int | None = None
        #: A large result's file while its bytes arrive, and how many are still to come.
        self._spool: Spool | None = None
        self._to_spool = 0
        self._message: dict[str, Any] | None = None
        self._verdict: tuple[Outcome, str] | None = None  # (cause, error) decided by the parent
        self._launcher: Launcher | None = None
        #: Run in a fork server of its own, with no other job, because a fork server died
        #: while it ran beside others: should this one die too, the job is the one to blame.
        self.alone = False
        #: Its fork server was killed while it ran, and it with it: it may have done it (or
        #: has been found to), and runs alone next time (see `alone`).
        self.suspect = False
        #: The child's stack dumps (see `taiat.forking.stacks`); None before `start`.
        self.stack: stacks.StackReader | None = None
        #: The stack dumped before it was stopped (a timeout, a cancel), for its attempt.
        self.stack_text: str | None = None
        #: While its stack is dumped before it is stopped: the grace its stop was given.
        self._stop_grace: float | None = None
        #: An operator's request for its stack being answered (see `ask_stack`), and the
        #: answers not yet taken: (request, dump or None).
        self._stack_request: int | None = None
        self.stack_answers: list[tuple[int, str | None]] = []
        self.sandbox = sandbox
        self.limits = Limits(memory_limit_bytes, max_processes, cpu_limit)
        #: Its cgroup, from its start until its ending is read (None: no sandbox).
        self.group: JobGroup | None = None

    # -- start ---------------------------------------------------------------------------

    def start(
        self,
        launcher: Launcher,
        dependency_results: dict[str, Any] | None = None,
        catalogue: dict[str, Any] | None = None,
        waiting: WaitingChild | None = None,
    ) -> None:
        """Launch the child, with the job's dependency results and, for a query job, the
        catalogue to plan it with; run by `waiting`, a child the launcher forked ahead, if
        given (in its cgroup, where this job's limits are written first). Should the launch
        fail, its group is released (the waiting child in it killed); the caller lets the child
        itself go."""
        if waiting is not None:
            self.group = waiting.group  # the job's from now on: released with it
        try:
            read_fd, write_fd = os.pipe()
        except BaseException:
            self.release_group()
            raise
        try:
            output_fds = self.output.open()
            stack_read, stack_write = stacks.open_pipe()
        except BaseException:
            os.close(read_fd)
            os.close(write_fd)
            self.output.close()
            self.release_group()
            raise
        os.set_blocking(read_fd, False)
        try:
            more: dict[str, Any] = {"stack_fd": stack_write}
            if catalogue is not None:
                more["catalogue"] = catalogue
            if waiting is not None:
                more["waiting"] = waiting.id
                if self.group is not None and not self._begin_in(self.group):
                    del more["waiting"]
            if self.sandbox is not None and self.group is None:
                self.group = self.sandbox.new_group(self.limits)
            if self.group is not None:
                more["cgroup"] = self.group.procs_files
            self.handle = launcher.launch(
                self.job, write_fd, self.max_result_bytes, dependency_results, output_fds, **more
            )
        except BaseException:
            os.close(read_fd)
            os.close(stack_read)
            self.output.close()
            self.release_group()
            raise
        finally:
            for fd in (write_fd, *output_fds, stack_write):
                os.close(fd)
        self.stack = stacks.StackReader(stack_read)
        self._launcher = launcher
        self.fd = read_fd
        self.started = time.monotonic()
        if self.timeout is not None:
            self.deadline = self.started + self.timeout

    def _begin_in(self, group: JobGroup) -> bool:
        """Write the job's limits into the group of the child forked ahead to run it, where
        they differ from those it waits under (its counters were noted when it was made: what
        the child does while it waits is next to nothing); False (the child killed with its
        group, which is let go) when the kernel refuses them (a memory limit below what the
        group holds already)."""
        try:
            group.limit(self.limits)
            return True
        except OSError as exc:
            log.info("job %s: a child forked ahead cannot take its limits (%s)", self.job.id, exc)
            self.release_group()
            return False

    @property
    def launcher(self) -> Launcher | None:
        """What started its child (None before `start`)."""
        return self._launcher

    @property
    def pid(self) -> int:
        """The child's pid, waiting for the launcher to say it if need be; 0 if it never
        started."""
        return self._resolve(wait=True) or 0

    @property
    def known_pid(self) -> int | None:
        """The child's pid if the launcher has said it already (never waits)."""
        return self._resolve(wait=False) or None

    @property
    def pid_learnt(self) -> bool:
        """Whether the launcher has said the child's pid, or that there is none (reads
        nothing)."""
        return self._pid is not None

    def _resolve(self, *, wait: bool) -> int | None:
        if self._pid is None and self._launcher is not None:
            self._pid = self._launcher.child_pid(self.handle, wait=wait)
        return self._pid

    def _kill(self, signum: int) -> None:
        """Signal every process in its cgroup, whatever its group or session; and the child's
        process group, if it ever started. (The cgroup first: it counts the processes it
        signals, which a kill before it could take out of the count.)"""
        pid = self.pid
        if self.group is not None:
            self.group.signal_all(signum, own=pid)
        if pid:
            posix.killpg(pid, signum)

    def release_group(self) -> None:
        """Kill what is left in its cgroup and remove the group (once; nothing without one).
        Never waits (its reap waited already), nor raises: a group the kernel will not empty
        or remove is left to the sandbox's clean-up at the next start, and said so."""
        group, self.group = self.group, None
        if group is not None and self.sandbox is not None:
            try:
                self.sandbox.release(group)
            except OSError as exc:
                log.warning("job %s: its cgroup could not be released: %s", self.job.id, exc)

    # -- while it runs -------------------------------------------------------------------

    def read_available(self, *, whole: bool = False) -> None:
        """Take whatever the pipe holds now (of a large result, `_SPOOL_PER_TURN` bytes at most
        unless `whole`); never blocks."""
        spooled = 0
        while self.fd >= 0 and self._message is None:
            if self._spool is not None and spooled >= _SPOOL_PER_TURN and not whole:
                return
            try:
                chunk = os.read(self.fd, _READ_CHUNK)
            except BlockingIOError:
                return
            if not chunk:
                self._close_pipe()
                return
            if self._spool is not None:
                spooled += len(chunk)
                self._spill(chunk)
                continue
            self._buffer += chunk
            self._parse()

    def _parse(self) -> None:
        size = wire.HEADER.size
        if self._expected is None and len(self._buffer) >= size:
            (self._expected,) = wire.HEADER.unpack_from(self._buffer)
            if self._expected > self.max_result_bytes:
                self.stop(
                    Outcome.FAILED,
                    f"result of {self._expected} bytes is over the limit of "
                    f"{self.max_result_bytes} bytes",
                )
                return
        if self._expected is not None and self._expected > wire.LARGE_MESSAGE:
            self._begin_spool()
            return
        if self._expected is not None and len(self._buffer) >= size + self._expected:
            body = bytes(self._buffer[size : size + self._expected])
            self._buffer.clear()
            self._message = wire.read_message(body)
            self._close_pipe()
            # Its job is done, and has no deadline left; its process gets `exit_grace` to end.
            self.deadline = None
            self.kill_at = time.monotonic() + self.exit_grace

    def _begin_spool(self) -> None:
        """A large message: a success's result, whose JSON text goes to a file as it comes."""
        start = wire.HEADER.size + len(wire.RESULT_PREFIX)
        if len(self._buffer) < start:
            return  # its beginning is not all here yet
        if self._buffer[wire.HEADER.size : start] != wire.RESULT_PREFIX:
            assert self._expected is not None
            self.stop(
                Outcome.FAILED,
                f"the child sent a message of {self._expected} bytes that is not a result",
            )
            return
        try:
            self._spool = Spool()
        except OSError as exc:
            self.stop(Outcome.FAILED, f"its result could not be kept: {exc}")
            return
        try:  # fewer, larger reads: a pipe holds 64 KiB unless asked for more
            fcntl.fcntl(self.fd, fcntl.F_SETPIPE_SZ, _READ_CHUNK)
        except OSError:
            pass
        assert self._expected is not None
        self._to_spool = self._expected - len(wire.RESULT_PREFIX)
        rest = bytes(self._buffer[start:])
        self._buffer = bytearray()
        self._spill(rest)

    def _spill(self, data: bytes) -> None:
        spool = self._spool
        assert spool is not None
        part = memoryview(data)[: self._to_spool]
        try:
            spool.write(part)
        except OSError as exc:
            self.stop(Outcome.FAILED, f"its result could not be kept: {exc}")
            return
        self._to_spool -= len(part)
        if self._to_spool:
            return
        self._spool = None
        if spool.last_byte() == wire.RESULT_SUFFIX:
            spool.truncate(spool.size - len(wire.RESULT_SUFFIX))
            self._message = {"ok": True, "result": spool}
        else:
            spool.close()
            self._message = {"ok": False, "error": "the child sent a malformed result"}
        self._close_pipe()
        # As for a small result: no deadline left; its process gets `exit_grace` to end.
        self.deadline = None
        self.kill_at = time.monotonic() + self.exit_grace

    @property
    def delivered(self) -> bool:
        """Whether the child has sent its whole result, before anything ended it: its job's
        outcome is then that result, whatever becomes of its process."""
        return self._message is not None and self._verdict is None

    def _close_pipe(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self._spool is not None:  # a large result cut short: it never came whole
            self._spool.close()
            self._spool = None

    def sample_memory(self) -> int:
        """Resident memory of the whole process tree now; kill it when over the limit. In a
        cgroup, the kernel enforces the limit: the group's own figure is read, and a job
        whose forks its process cap refused is ended, naming the cap."""
        if self.group is not None:
            return self._sample_group(self.group)
        total = 0
        pid = self._resolve(wait=False)
        if not pid:
            return self.rss_bytes  # not forked yet, or never
        try:
            root = psutil.Process(pid)
            for proc in [root, *root.children(recursive=True)]:
                try:
                    total += proc.memory_info().rss
                except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                    continue
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            return self.rss_bytes
        self.rss_bytes = total
        self.peak_rss_bytes = max(self.peak_rss_bytes, total)
        limit = self.memory_limit_bytes
        if limit is not None and total > limit and self._verdict is None:
            self.stop(Outcome.MEMORY, f"exceeded memory limit of {limit // (1 << 20)} MB", grace=0)
        return total

    def ask_stack(self, request: int, now: float) -> bool:
        """Ask the child for its stack, without stopping it, to answer an operator's
        `request` (see `stack_answers`); False when it cannot be asked (not started, or its
        job is done or being ended)."""
        pid = self.known_pid
        if not pid or self.stack is None or self._verdict is not None or self.delivered:
            return False
        if self._stack_request is not None:
            self._stack_request = request  # the dump on its way answers this one too
            return True
        if not self.stack.ask(pid, now):
            return False
        self._stack_request = request
        return True

    def _watch_stack(self, now: float) -> None:
        """Take a dump asked for once it is in: answer the operator's request, or stop the
        child that waited for it."""
        reader = self.stack
        if reader is None or not reader.asked:
            return
        reader.read(now)
        if not reader.done(now):
            return
        dump = reader.take()
        if self._stack_request is not None:
            self.stack_answers.append((self._stack_request, dump))
            self._stack_request = None
        if self._stop_grace is not None:
            self._stopped_at(dump)

    def _stopped_at(self, dump: str | None) -> None:
        """The stack dumped before a stop is in: keep it, say where the job was, and end it."""
        grace, self._stop_grace = self._stop_grace, None
        self.stack_text = dump
        where = stacks.innermost(dump) if dump else None
        if where is not None and self._verdict is not None:
            cause, error = self._verdict
            self._verdict = (cause, f"{error}; it was at: {where}")
        self._end_process(grace or 0.0)

    def _sample_group(self, group: JobGroup) -> int:
        self.rss_bytes = group.memory_now()
        self.peak_rss_bytes = max(self.peak_rss_bytes, self.rss_bytes)
        if self._verdict is None and self._message is None:
            # The kernel killed one of its processes (not the child, or it would be reaped
            # by now), or refused it a fork: the whole job ends, and says why.
            if self.limits.memory_bytes is not None and group.oom_kills() > 0:
                self.stop(Outcome.MEMORY, self._oom_words(), grace=0)
            elif group.forks_refused() > 0:
                self.stop(Outcome.CRASHED, self._cap_words(), grace=0)
        return self.rss_bytes

    def _oom_words(self) -> str:
        limit = self.limits.memory_bytes or 0
        return (
            f"exceeded memory limit of {limit // (1 << 20)} MB (killed by the kernel's OOM killer)"
        )

    def _cap_words(self) -> str:
        return f"exceeded the cap of {self.limits.max_processes} processes (--max-processes)"

    def check_deadline(self, now: float, grace: float) -> None:
        self._watch_stack(now)
        if self._stop_grace is not None:
            return  # its stack is being dumped: then it is ended
        if self.deadline is not None and now >= self.deadline and self._verdict is None:
            self.stop(Outcome.TIMED_OUT, f"timed out after {_seconds(self.timeout)} s", grace=grace)
        elif self.kill_at is not None and now >= self.kill_at:
            self._kill(signal.SIGKILL)
            self.kill_at = None

    def stop(self, cause: Outcome, error: str, grace: float = 0.0) -> None:
        """End the job for `cause`: SIGTERM to its group, then SIGKILL after `grace` seconds.
        A job that has sent its result keeps it as its outcome: only its process is ended."""
        first = self._verdict is None and self._message is None
        if first:
            self._verdict = (cause, error)
        self._close_pipe()
        if self._stop_grace is not None:
            if cause in DUMPED:
                self._stop_grace = min(self._stop_grace, grace)  # its stack is on its way
                return
            self._stop_grace = None  # a stop that cannot wait (memory, a lost ending): now
        if first and cause in DUMPED and self._ask_stack_first():
            self._stop_grace = grace
            return
        self._end_process(grace)

    def _ask_stack_first(self) -> bool:
        """Ask the child for its stack before it is ended (for `stacks.WAIT` at most)."""
        pid = self.known_pid
        if not pid or self.stack is None:
            return False
        if self.stack.asked:
            return True  # an operator's dump on its way serves
        return self.stack.ask(pid, time.monotonic())

    def _end_process(self, grace: float) -> None:
        """SIGTERM the child's group, SIGKILL after `grace` seconds (at once if none)."""
        if grace > 0:
            self._kill(signal.SIGTERM)
            self.kill_at = time.monotonic() + grace
        else:
            self._kill(signal.SIGKILL)
            self.kill_at = None

    @property
    def next_timer(self) -> float | None:
        dump = self.stack.next_timer() if self.stack is not None else None
        deadline = self.deadline if self._verdict is None else None
        times = [t for t in (deadline, self.kill_at, dump) if t]
        return min(times) if times else None

    # -- the end -------------------------------------------------------------------------

    def try_reap(self) -> Ending | None:
        """The ending if the child has exited (reaping it and its leftovers), else None."""
        assert self._launcher is not None, "reaping a child that was never started"
        self._resolve(wait=False)  # the pid, before the launcher forgets the launch
        ended = self._launcher.reap(self.handle)
        if ended is None:
            return None
        wall = time.monotonic() - self.started
        if self._stop_grace is not None:  # it ended while its stack was being dumped
            assert self.stack is not None
            self.stack.read(time.monotonic())
            self._stopped_at(self.stack.take())
        if self.stack is not None:
            self.stack.close()
        if not self.pid:
            self._close_pipe()
            self.output.close()
            return self._not_started(ended, wall)
        self.read_available(whole=True)
        self._close_pipe()
        # What it wrote is in the pipes by now; a process it left behind holds them no longer.
        self.output.finish()
        # Grandchildren it left behind go with it. In a sandbox, every process of its cgroup,
        # counted as it is found there: before its process group is killed, which would take
        # some of them out of the count, as the kernel tears them down.
        stragglers = None
        group = self.group
        if group is None:
            self._kill(signal.SIGKILL)
        else:
            stragglers = group.kill_all(own=self.pid)
            if pid := self.pid:
                posix.killpg(pid, signal.SIGKILL)  # one that a root job took out of its group
        status = ended.status
        known = status >= 0
        peak = max(self.peak_rss_bytes, ended.peak_rss_bytes)
        cpu = (ended.user_seconds, ended.system_seconds)
        exit_code = os.WEXITSTATUS(status) if known and os.WIFEXITED(status) else None
        exit_signal = os.WTERMSIG(status) if known and os.WIFSIGNALED(status) else None
        ok, result, cause, error = self._judge(exit_code, exit_signal)
        if ended.server_end is not None and self._verdict is None and self._message is None:
            cause, error = self._outlived(ended.server_end)
        if group is not None:
            # Whatever of the job was left, in any group or session, has ended: the kernel's
            # figures count every process the job started.
            peak = group.memory_peak() or peak
            cpu = group.cpu_seconds() or cpu
            if not ok and self._verdict is None:
                cause, error = self._kernel_verdict(group, cause, error)
            self.release_group()
        said = self._message if self._verdict is None and self._message is not None else {}
        plan = said.get("plan") if ok else None
        return Ending(
            ok=ok,
            result=result,
            error=error,
            cause=Outcome.PLANNED if plan is not None else cause,
            exit_code=exit_code,
            exit_signal=exit_signal,
            wall_seconds=wall,
            cpu_user_seconds=cpu[0],
            cpu_system_seconds=cpu[1],
            peak_rss_bytes=peak,
            plan=plan,
            final=bool(said.get("final")) and not ok,
            stragglers_killed=stragglers,
        )

    def _kernel_verdict(
        self, group: JobGroup, cause: Outcome, error: str | None
    ) -> tuple[Outcome, str | None]:
        """A job that failed on its own: the kernel's account, read from its cgroup's events,
        when the kernel stopped it (OOM killer, process cap)."""
        if self.limits.memory_bytes is not None and group.oom_kills() > 0:
            return Outcome.MEMORY, self._oom_words()
        if self.limits.max_processes is not None and group.forks_refused() > 0:
            return Outcome.CRASHED, self._cap_words()
        return cause, error

    def _outlived(self, end: ServerEnd) -> tuple[Outcome, str]:
        """The cause and words of a child that ended without a result after its fork server
        ended. A job is blamed for the server's death only when it is sure: a server was killed
        while it ran beside other jobs, and again while it ran alone in a server of its own.
        Until then it is one of the bystanders, which go back to pending with no retry spent."""
        if end.killed:
            how = _killed_words(end)
        elif end.by_supervisor:
            how = f"was given up by the supervisor ({end.why})"
        elif end.returncode is not None:
            how = f"exited with code {end.returncode}"
        else:
            how = f"was lost ({end.why})"
        self.suspect = end.killed
        if end.killed and self.alone:
            # Blamed; and, should it run again, alone again.
            did = "stopped" if end.stopped else "killed"
            return Outcome.CRASHED, (
                f"{did} its fork server (pid {end.pid}): the server {how} while the job ran "
                "alone in it, after another one had died while the job ran beside other jobs"
            )
        return Outcome.STOPPED, (
            f"its fork server (pid {end.pid}) {how} while the job ran, and the job's process "
            "with it; not known to be the job's doing: back to pending, no retry spent"
        )

    def _not_started(self, ended: Exit, wall: float) -> Ending:
        """The ending of a launch not known to have become a child: the job goes back to
        pending (STOPPED), no retry spent. The server said why it could not fork, or it was
        lost before it said anything: the child, if there was one, died with it. If the server
        was killed, the child may have started and done it: the job runs alone next time (a
        child of a server of its own runs its job only once its pid is told)."""
        if ended.error:
            return unstarted(f"never started: {ended.error}", wall)
        end = ended.server_end
        if end is not None and end.killed:
            self.suspect = True
            how = _killed_words(end)
            return unstarted(
                f"not known to have started: its fork server (pid {end.pid}) {how} "
                "before it said so",
                wall,
            )
        return unstarted(
            "not known to have started: the fork server was lost before it said so", wall
        )

    def _judge(
        self, exit_code: int | None, exit_signal: int | None
    ) -> tuple[bool, Any, Outcome, str | None]:
        if self._verdict is not None:
            cause, error = self._verdict
            return False, None, cause, error
        message = self._message
        if message is not None and message.get("ok"):
            return True, message.get("result"), Outcome.COMPLETED, None
        if message is not None:
            error = str(message.get("error"))
            if message.get("traceback"):
                error += "\n" + str(message["traceback"])
            return False, None, Outcome.FAILED, error
        if exit_signal is not None:
            return False, None, Outcome.CRASHED, f"killed by {posix.signal_words(exit_signal)}"
        if exit_code:
            return False, None, Outcome.CRASHED, f"exited with code {exit_code} without a result"
        if exit_code is None:
            return False, None, Outcome.CRASHED, "ended without a result; its exit status was lost"
        return False, None, Outcome.CRASHED, "exited without sending a result (pipe closed)"


def _killed_words(end: ServerEnd) -> str:
    """How a fork server that someone else ended ended, after "the server"."""
    if end.stopped:
        return "was stopped (SIGSTOP), and so killed by the supervisor"
    return f"was killed by {posix.signal_words(-(end.returncode or 0))}"


def _seconds(value: float | None) -> str:
    return "?" if value is None else f"{value:g}"
