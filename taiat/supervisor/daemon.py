"""The supervisor daemon: claim ready jobs, run each in a fresh forked child, watch, reap,
record, drain. Single-threaded: one wait over the children's result pipes, a wake-up pipe fed
by signal handlers, and a timeout for the next timer. Signal handlers only set a flag."""

from __future__ import annotations

import errno
import logging
import math
import os
import socket
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from taiat import __version__
from taiat.agents.executors import (
    AgentExecutor,
    JobExecutor,
    QueryExecutor,
    default_agents,
    executor_agents,
)
from taiat.agents.registry import Catalogue, catalogue
from taiat.config import MiB, SupervisorConfig
from taiat.errors import DatabaseUnavailable, TransientConflict
from taiat.forking import job_user, posix
from taiat.forking.job_process import MOVED_ON, Ending, JobProcess, unstarted
from taiat.forking.launchers import Forking
from taiat.forking.output import Forward, JobOutput
from taiat.job_manager import CLEANUP_BATCH, JobManager
from taiat.jobs import Job, Outcome
from taiat.sandbox import cgroups
from taiat.sandbox.cgroups import Limits
from taiat.sandbox.detect import Sandbox, detect
from taiat.store.port import Backlog, Listener, new_worker_id, supervisor_engine
from taiat.supervisor import admission, publishing
from taiat.supervisor.claim_ahead import WRITE_DELAY, ClaimAhead
from taiat.supervisor.liveness import Place, is_dead
from taiat.supervisor.recorder import MAX_BACKOFF, Record, Recorder, attempt_of, log_ending, reason
from taiat.supervisor.wakeup import Timers, WakeUp, ready_fds

log = logging.getLogger(__name__)

#: Under load, the status file is rewritten at most this often (seconds).
_PUBLISH_GAP = 0.1
#: A job whose child's pid is still unknown this long after its launch (seconds) is shown in
#: the status file all the same, with no pid: its fork server is slow, or stuck.
_UNTOLD = 1.0
#: The metrics file's counts of the jobs in the database are taken at most this often
#: (seconds): one grouped count of the active jobs.
_COUNT_EVERY = 5.0
#: How often the output of running jobs, where it grew, is written to the database (seconds):
#: `taiat jobs logs --follow` shows it that far behind at most.
_OUTPUT_INTERVAL = 2.0
#: A memory limit of this many MB (8 EiB) or more is no limit.
_NO_MEMORY_LIMIT_MB = 1 << 43
#: Why a launch fails when no process, memory or file descriptor is to be had for a while (a
#: job's fork bomb under the user's process limit): no attempt was spent.
_NOTHING_TO_BE_HAD = frozenset({errno.EAGAIN, errno.ENOMEM, errno.EMFILE, errno.ENFILE})


class Supervisor:
    def __init__(
        self,
        config: SupervisorConfig | None = None,
        *,
        manager: JobManager | None = None,
        agent_registry: Mapping[str, Callable[..., Any]] | None = None,
    ) -> None:
        self.config = config or SupervisorConfig()
        #: The user the jobs run as (`--job-user`), looked up now: a supervisor that cannot
        #: become it refuses to start (ConfigurationError).
        self.job_user = (
            None if self.config.job_user is None else job_user.resolve(self.config.job_user)
        )
        #: Where its jobs run: a cgroup each, or as they always have (first: a supervisor that
        #: must have a cgroup and cannot refuses to start before it touches anything).
        self.sandbox: Sandbox = detect(self.config.sandbox)
        lease = self.config.lease
        self._heartbeat_interval = min(self.config.heartbeat_interval, lease / 3)
        #: A heartbeat this old (seconds) means a stall: this loop, or the database, was away
        #: for more than a heartbeat interval; the claims may have lapsed meanwhile.
        self._stall_after = 2 * self._heartbeat_interval
        if manager is None:
            engine = supervisor_engine(self.config.database_url, lease, self._heartbeat_interval)
            manager = JobManager(engine)
        self.manager = manager
        #: The one way into the store.
        self.port = manager.port
        #: Every agent by name, with the inputs and outputs it declares (for query plans).
        self.agents = default_agents(agent_registry, self.config.agent_config)
        self.registry = {name: agent.function for name, agent in self.agents.items()}
        self.custom_executors: list[JobExecutor] = []
        #: The catalogue this supervisor registered (see `catalogue`).
        self._agents_published: Catalogue = {}
        #: The agent names it claims jobs of, as `served_agents` found when it started.
        self._serving: frozenset[str] | None = frozenset(self.agents)
        #: Called with (job, ending) as each child is reaped, e.g. by a progress display.
        self.observers: list[Callable[[Job, Ending], None]] = []
        self.host = socket.gethostname()
        self.worker_id = new_worker_id(self.host, os.getpid(), uuid.uuid4().hex[:8])
        self.place = Place.here()
        #: When the last heartbeat that went through was sent (monotonic seconds).
        self._beat_at = -math.inf
        #: Since when this supervisor has watched the database without a break.
        self._watching_since = -math.inf
        self.port.retry_policy = replace(
            self.port.retry_policy, quarantine_after=self.config.quarantine_after
        )
        self.port.lease = lease
        self.listener = self.port.listener() if self.config.listen else None
        self.children: list[JobProcess] = []
        self.ahead = ClaimAhead(self.config.max_concurrent_jobs, self.config.claim_ahead)
        self.counters = {"completed": 0, "failed": 0, "timed_out": 0, "crashed": 0}
        self.state = "starting"
        self.started_at = datetime.now(UTC)
        self.recorder = Recorder(
            self.port,
            self._changed,
            reconnect=self._beat,
            max_backoff=min(MAX_BACKOFF, lease / 10),
        )
        self.wakeup = WakeUp()
        self._reporter = publishing.StatusReporter(
            self.config.status_file, self.config.metrics_file
        )
        self._dirty = True
        self._published = 0.0
        self._claim_now = True
        self.forking: Forking | None = None
        #: Jobs whose fork server was killed while they ran beside others: each runs next
        #: alone, in a fork server of its own (see `JobProcess.alone`).
        self.suspects: set[str] = set()
        #: The jobs in the database by status, for the metrics file (see `Backlog.by_status`);
        #: None until counted, or when the last count failed.
        self.job_counts: dict[str, int] | None = None
        #: Ready jobs by limited key (`waiting_on_limit` in the status file); None until counted.
        self.limit_waits: dict[str, int] | None = None
        #: The same by queue (bounded: `publishing.bounded_queues`), for the metrics file and
        #: the status file's `queues`.
        self.queue_counts: dict[str, dict[str, int]] | None = None
        #: Which agents' jobs may start here, by the memory they lately needed.
        self.admission = admission.Admission(self.config.memory_reserve)
        #: In burst mode, what was left when it exited: jobs scheduled for later, not run.
        self.left_for_later: Backlog | None = None

    # -- public ---------------------------------------------------------------------------

    def add_executor(self, executor: JobExecutor) -> None:
        """Try `executor` before the built-in agent and query executors. An executor with an
        `agents` attribute (a collection of agent names) serves those agents: they are
        published in this supervisor's catalogue."""
        executor_agents(executor)  # a bad `agents` is refused now, not at the start
        self.custom_executors.append(executor)

    @property
    def catalogue(self) -> Catalogue:
        """What this supervisor publishes of its agents: those of its registry, and those its
        custom executors serve (`agents`), with no inputs or outputs unless the registry has
        them."""
        served = [name for e in self.custom_executors for name in executor_agents(e)]
        return catalogue(self.agents, served)

    def served_agents(self) -> frozenset[str] | None:
        """The agent names whose jobs this supervisor claims: its registry's, and those each
        custom executor declares in its `agents` attribute (a collection of names); None, every
        agent name, when a custom executor declares none."""
        names = set(self.agents)
        for executor in self.custom_executors:
            declared = getattr(executor, "agents", None)
            if declared is None:
                return None
            names.update(declared)
        return frozenset(names)

    def stop(self) -> None:
        """Ask the supervisor to drain and exit; a second call ends the drain at once. Safe
        from signal handlers and other threads."""
        self.wakeup.request_stop()

    def run(self) -> int:
        """Serve until stopped (or, in burst mode, until nothing is left); returns 0."""
        self._publish(force=True)  # "starting"
        self._serving = self.served_agents()
        self.port.serve(self.config.queues, self._serving)
        self._register()
        if self.config.subreaper:
            # Orphans of a fork server that dies come here, not to init: see `_reap_adopted`.
            posix.become_subreaper()
        query_executor = QueryExecutor(self.agents, engine=self.config.query_engine)
        executors = [*self.custom_executors, AgentExecutor(self.agents), query_executor]
        self.forking = Forking(
            executors,
            fork_server=self.config.fork_server,
            after_fork=self.port.after_fork,
            job_user=self.job_user,
            sandbox=self.sandbox,
            waiting_limits=Limits(
                memory_limit_bytes(self.config.memory_limit_mb),
                lowest_whole(self.config.max_processes),
                lowest(self.config.cpu_limit, MAX_CPU_LIMIT),
            ),
        )
        self.wakeup.install_signals()
        self.state = "running"
        publishing.notify("READY=1", f"STATUS=running {self.config.max_concurrent_jobs} slots")
        log.info(
            "supervisor %s serving %s with %d slots",
            self.worker_id,
            self.port.describe(),
            self.config.max_concurrent_jobs,
        )
        if self.job_user is not None:
            self._log_job_user(self.job_user, self.forking.server_in_use is not None)
        log.info("sandbox: %s", self.sandbox.describe())
        try:
            self._loop()
        finally:
            if self.listener is not None:
                self.listener.close()
            if self.forking is not None:
                self.forking.close()
            self.sandbox.close()
            self.state = "stopped"
            self._publish(force=True)
            self._unregister()
            publishing.notify("STATUS=stopped")
            self.wakeup.restore_signals()
        log.info("supervisor %s stopped: %s", self.worker_id, self.counters)
        return 0

    # -- the loop --------------------------------------------------------------------------

    def _loop(self) -> None:
        cfg = self.config
        timers = Timers()
        watchdog = publishing.watchdog_interval()
        drain_deadline: float | None = None
        stops_seen = 0
        hangups_seen = 0
        while True:
            now = time.monotonic()
            if self.wakeup.hangups > hangups_seen:
                hangups_seen = self.wakeup.hangups
                self._hang_up()
            if self.wakeup.stop_requests > stops_seen:
                stops_seen = self.wakeup.stop_requests
                drain_deadline = self._begin_drain(now, stops_seen, drain_deadline)
            self._catch_up()
            self._reap()
            self._store()
            if drain_deadline is None:
                self._start_held()  # before any is found to have waited too long
                for job in self.ahead.expired(now):
                    self.recorder.give_back(job, "held too long for a free slot")
            if self.children:
                if timers.due("memory", now, cfg.memory_sample_interval):
                    for proc in self.children:
                        proc.sample_memory()
                if timers.due("claims", now, cfg.check_interval):
                    self._check_claims()
                    self._ask_stacks()
                if timers.due("output", now, _OUTPUT_INTERVAL):
                    self._save_output()
                for proc in self.children:
                    proc.check_deadline(now, cfg.kill_grace)
                self._answer_stacks()
            if drain_deadline is not None and now >= drain_deadline:
                for proc in self.children:
                    if proc.kill_at is None:
                        proc.stop(Outcome.STOPPED, "the supervisor stopped", grace=cfg.kill_grace)
                drain_deadline = float("inf")
            if timers.due("heartbeat", now, self._heartbeat_interval):
                self._heartbeat()
            counted = cfg.metrics_file is not None or cfg.status_file is not None
            if counted and timers.due("counts", now, _COUNT_EVERY):
                self._count_jobs()
            if cfg.status_file is not None or cfg.metrics_file is not None:
                if timers.due("limit_counts", now, _COUNT_EVERY):
                    self._count_limit_waits()
                    self._count_memory_waits()
            if timers.due("peaks", now, admission.REFRESH_EVERY):
                self._read_peaks()
            if timers.due("cleanup", now, cfg.cleanup_interval_hours * 3600) and self._cleanup():
                timers.at["cleanup"] = now  # more to delete: the next batch on the next turn
            # While enough jobs are held, endings gather to be written (and claims made) together.
            waiting = self.ahead.may_wait(self.recorder.oldest, now)
            claiming = (
                drain_deadline is None
                and not waiting
                and timers.due("poll", now, cfg.poll_interval, force=self._claim_now)
            )
            if claiming or (self.recorder.pending and not waiting):
                self._claim_now = self._claim_now and not claiming
                started = self._settle(claiming)
                if claiming and cfg.burst and not started and not self.children and not self.ahead:
                    if self._nothing_left():
                        return
            if drain_deadline is not None and not self.children and not self.recorder.unwritten:
                return
            self._keep_waiting(draining=drain_deadline is not None)
            if watchdog is not None and timers.due("watchdog", now, watchdog):
                publishing.notify("WATCHDOG=1")
            if timers.due("status", now, cfg.status_interval):
                self._dirty = True
            self._publish()
            idle = () if self.children else ("memory", "claims", "output")
            wake = timers.next(skip=(*idle, "poll") if waiting else idle)
            if self._dirty:
                wake = min(wake, self._published + _PUBLISH_GAP)
            if self.children:
                wake = min([wake, *(t for p in self.children if (t := p.next_timer))])
                if not self.wakeup.signals_installed:  # no SIGCHLD wake-up off the main thread
                    wake = min(wake, now + 0.05)
            if drain_deadline is not None:
                wake = min(wake, drain_deadline)
            if self.recorder.retry_at is not None:
                wake = min(wake, self.recorder.retry_at)
            if self.ahead.next_expiry is not None:
                wake = min(wake, self.ahead.next_expiry)
            if waiting and self.recorder.oldest is not None:
                wake = min(wake, self.recorder.oldest + WRITE_DELAY)
            self._wait(max(0.0, wake - time.monotonic()))

    def _wait(self, timeout: float) -> None:
        fds = [self.wakeup.fd, *(p.fd for p in self.children if p.fd >= 0)]
        outputs = {fd: p for p in self.children for fd in p.output.fds()}
        fds += outputs
        # A stack dump asked of a child wakes the loop, which takes it in `check_deadline`.
        fds += [p.stack.fd for p in self.children if p.stack and p.stack.asked and p.stack.fd >= 0]
        if self.recorder.storer.busy:
            fds.append(self.recorder.storer.fd)
        # Their descriptors are taken now: handling one that is ready may close another (a
        # listener whose connection dropped).
        listener = self.listener if self.listener and self.listener.connected else None
        listener_fd = listener.fileno() if listener is not None else None
        servers = {s.fileno(): s for s in self.forking.servers()} if self.forking else {}
        fds += [fd for fd in (listener_fd, *servers) if fd is not None]
        for ready in ready_fds(fds, timeout):
            if ready == self.wakeup.fd:
                self.wakeup.clear()
            elif listener is not None and ready == listener_fd:
                self._hear(listener)
            elif ready in servers:
                servers[ready].poll()
                self._dirty = True  # a child forked (its pid now known), or one ended
            elif ready in outputs:
                self._read_output(outputs[ready], ready)
        for proc in self.children:
            proc.read_available()

    def _read_output(self, proc: JobProcess, fd: int) -> None:
        """Read a child's stdout or stderr (`fd`): whatever goes wrong ends that job alone."""
        try:
            proc.output.read(fd)
        except Exception as exc:  # noqa: BLE001 - its output's trouble, not the loop's
            log.exception("job %s (%s): its output cannot be read", proc.job.id, proc.job.name)
            proc.output.close()
            proc.stop(Outcome.FAILED, f"its output could not be read: {reason(exc)}")

    def _save_output(self) -> None:
        """Write the output of the running jobs whose output grew, so that `taiat jobs logs`
        shows it while they run (their ends write all of it, with their attempts)."""
        grown = [p for p in self.children if p.known_pid and p.output.changed]
        if not grown:
            return
        written = {p: p.output.written for p in grown}
        outputs = [
            out
            for p in grown
            if (out := p.output.snapshot(p.job.id, p.job.claim_seq, final=False)) is not None
        ]

        def save() -> bool:
            self.port.save_output(outputs)
            return True

        if self.recorder.call(save, False):
            for proc, count in written.items():
                proc.output.saved = count

    def _hear(self, listener: Listener) -> None:
        """Act on NOTIFY payloads: a job became ready, or a running one was cancelled."""
        try:
            payloads = listener.drain()
        except DatabaseUnavailable as exc:
            log.warning("%s; polling until it is back", exc)
            return
        by_job = {proc.job.id: proc for proc in self.children}
        for payload in payloads:
            if payload == "ready":
                self._claim_now = True
            elif payload.startswith("cancel:") and (proc := by_job.get(payload[7:])):
                log.info("job %s (%s) cancelled: stopping it", proc.job.id, proc.job.name)
                proc.stop(Outcome.CANCELLED, "cancelled while running")
            elif payload.startswith("cancel:"):
                self._forget_held({payload[7:]})
            elif payload.startswith("stack:") and payload[6:] in by_job:
                self._ask_stacks({payload[6:]})

    def _ask_stacks(self, only: set[str] | None = None) -> None:
        """Ask the children whose stacks an operator asked for (`taiat jobs stack`) to dump
        them; of all running jobs, or `only` those. One that cannot dump is answered: none."""
        claims = {
            p.job.id: p.job.claim_seq
            for p in self.children
            if p.kill_at is None and (only is None or p.job.id in only)
        }
        if not claims:
            return
        wanted = self.recorder.call(lambda: self.port.stack_requests(claims), None)
        if not wanted:
            return
        now = time.monotonic()
        for proc in self.children:
            request = wanted.get(proc.job.id)
            if request is not None and not proc.ask_stack(request, now):
                proc.stack_answers.append((request, None))

    def _answer_stacks(self) -> None:
        """Store the stacks the children dumped for operators who asked."""
        asked = [p for p in self.children if p.stack_answers]
        if not asked:
            return
        answers = [
            (p.job.id, p.job.claim_seq, request, dump)
            for p in asked
            for request, dump in p.stack_answers
        ]

        def save() -> bool:
            self.port.answer_stacks(answers)
            return True

        if self.recorder.call(save, False):
            for proc in asked:
                proc.stack_answers.clear()

    def _hang_up(self) -> None:
        """SIGHUP: the supervisor logs to stderr and has no log file to reopen; it writes its
        status and metrics files afresh (after a rotation, or a cleaned run directory)."""
        log.info("SIGHUP: status and metrics files rewritten; logs go to stderr, nothing to reopen")
        self._publish(force=True)

    def _check_claims(self) -> bool:
        """Stop children whose claim is no longer current: cancelled, or taken back by another
        supervisor that believed this one dead; drop such held jobs. (The fallback for a missed
        NOTIFY, and all that SQLite has.) Returns whether the claims could be checked."""
        claims = {p.job.id: p.job.claim_seq for p in self.children if p.kill_at is None}
        claims |= {held.job.id: held.job.claim_seq for held in self.ahead.held}
        if not claims:
            return True
        current = self.recorder.call(lambda: self.port.current_claims(claims), None)
        if current is None:
            return False
        self._forget_held(set(claims) - current)
        for proc in self.children:
            if proc.job.id in claims and proc.job.id not in current:
                log.warning(
                    "job %s (%s): its claim is no longer current; stopping it",
                    proc.job.id,
                    proc.job.name,
                )
                proc.stop(Outcome.SUPERSEDED, "cancelled, or taken back by another supervisor")
        return True

    def _begin_drain(self, now: float, stops: int, deadline: float | None) -> float:
        """Stop claiming and give the held jobs back; a second stop (even one that came with
        the first) ends the drain at once."""
        if deadline is None:
            log.info(
                "%s: stopped claiming; draining %d running jobs for up to %g s",
                self.wakeup.last_reason,
                len(self.children),
                self.config.drain_timeout,
            )
            self.state = "draining"
            for job in self.ahead.release():
                self.recorder.give_back(job, "the supervisor stopped before starting it")
            self._published = 0.0
            self._dirty = True
            publishing.notify("STOPPING=1", f"STATUS=draining {len(self.children)} jobs")
            if stops == 1:
                return now + self.config.drain_timeout
        log.info("%s again: ending the drain now", self.wakeup.last_reason)
        return now

    # -- children --------------------------------------------------------------------------

    def _settle(self, claiming: bool) -> int:
        """Write what has finished and, when `claiming`, claim for the free slots (and ahead
        of them), in one transaction; start what fits. Returns how many were claimed."""
        wanted = self.ahead.wanted(self._busy()) if claiming else 0
        if not wanted and not self.recorder.pending:
            return 0
        if wanted:
            self._hold_back()
        claimed = self.recorder.settle(self.worker_id, wanted)
        if not claimed.jobs:
            return 0
        jobs, back = self.admission.fit(claimed.jobs)
        for job in back:
            log.info("job %s (%s) given back: no memory for it here now", job.id, job.name)
            self.recorder.give_back(job, "no memory for it on this host now")
        self.ahead.put(jobs, claimed.dependency_results, claimed.catalogue)
        self._start_held()
        return len(claimed.jobs)

    def _start_held(self) -> None:
        """Start held jobs in the free slots; after a stall, only once their claims are known
        to be current still."""
        if self.ahead.held and self._overdue() and not self._catch_up():
            return  # the claims could not be checked: start none for now
        for held in self.ahead.take(self.config.max_concurrent_jobs - self._busy()):
            self._start(held.job, held.dependency_results, held.catalogue)

    def _hold_back(self) -> None:
        """Before a claim: leave out the jobs of the agents that lately needed more memory
        than is to be had here (see `taiat.supervisor.admission`)."""
        before = self.admission.held
        if not before and not self.admission.peaks.estimates():
            return  # no agent known yet: nothing to judge by
        claimed = [(p.job, p.rss_bytes) for p in self.children if not p.delivered]
        claimed += [(held.job, 0) for held in self.ahead.held]
        self.port.hold_back(self.admission.hold_back(self.admission.committed(claimed)))
        if self.admission.held.keys() != before.keys():
            self._dirty = True

    def _read_peaks(self) -> None:
        """Read the latest attempts' peaks of the fleet, for the agents' estimates."""
        peaks = self.admission.peaks
        since = peaks.since()
        most = admission.MOST_READ if since is None else admission.MOST_REFRESHED
        rows = self.recorder.call(
            lambda: self.port.recent_peaks(admission.PER_AGENT, most, since), None
        )
        if rows is not None:
            peaks.read(rows)

    def _busy(self) -> int:
        """The slots taken. A child whose result is in has finished its job: only its exit
        (and with it how its process ended) is awaited, and its slot takes the next job
        meanwhile; but no more such children than there are slots, so that children slow to
        exit never pile up."""
        finishing = sum(1 for p in self.children if p.delivered)
        return len(self.children) - finishing + max(0, finishing - self.config.max_concurrent_jobs)

    def _keep_waiting(self, draining: bool) -> None:
        """A child forked ahead for each free slot, and none once draining (see
        `Forking.keep_waiting`)."""
        assert self.forking is not None
        if self.config.waiting_children:
            free = self.config.max_concurrent_jobs - self._busy()
            self.forking.keep_waiting(0 if draining else max(0, free))

    def _forget_held(self, job_ids: set[str]) -> None:
        """Drop held jobs whose claims are no longer current (cancelled, taken back)."""
        for job in self.ahead.drop(job_ids):
            log.info("job %s (%s): its claim ended before it started", job.id, job.name)

    def _start(
        self,
        job: Job,
        dependency_results: dict[str, Any] | None,
        catalogue: Catalogue | None = None,
    ) -> None:
        """Start the job's child (a query job's with the catalogue to plan it with). Whatever
        goes wrong with this one job (its limits, its launch) ends this job alone, with the
        reason in words, and never the loop."""
        try:
            proc = JobProcess(
                job,
                timeout=job.timeout_seconds or self.config.job_timeout,
                memory_limit_bytes=self._memory_limit(job),
                max_result_bytes=self.config.max_result_bytes,
                exit_grace=self.config.kill_grace,
                output=JobOutput(self.config.log_tail_bytes, self._forwarder(job)),
                sandbox=self.sandbox,
                max_processes=lowest_whole(
                    self.config.max_processes, job.payload.get("max_processes")
                ),
                cpu_limit=lowest(
                    self.config.cpu_limit, job.payload.get("cpu_limit"), MAX_CPU_LIMIT
                ),
            )
        except Exception as exc:  # noqa: BLE001 - its own values: as it is, it can never run
            log.exception("job %s (%s) cannot be started", job.id, job.name)
            self._not_started(job, f"it cannot be started: {reason(exc)}", final=True)
            return
        assert self.forking is not None
        if job.id in self.suspects:
            self.suspects.discard(job.id)
            proc.alone = True
        try:
            if catalogue is None:
                self.forking.start(proc, dependency_results)
            else:
                self.forking.start(proc, dependency_results, catalogue)
        except Exception as exc:  # noqa: BLE001 - one failed launch is one failed attempt
            if isinstance(exc, OSError) and exc.errno in _NOTHING_TO_BE_HAD:
                # The machine's want, not the job's (a neighbour's fork bomb): back to pending,
                # no retry spent; and no claim before the next poll, lest it come straight back.
                log.warning("job %s (%s) could not be started now: %s", job.id, job.name, exc)
                self._ended(job, unstarted(f"never started: {reason(exc)}"))
                self._claim_now = False
            else:
                log.exception("job %s (%s) could not be started", job.id, job.name)
                self._not_started(job, f"it could not be started: {reason(exc)}", final=False)
            return
        self.children.append(proc)
        self._dirty = True
        log.info("job %s (%s) started, attempt %d", job.id, job.name, job.attempt)

    def _forwarder(self, job: Job) -> Forward | None:
        """With `forward_output`, what logs each line of the job's output as the supervisor's
        own, prefixed with the job's id and name."""
        if not self.config.forward_output:
            return None

        def forward(stream: str, line: str) -> None:
            log.info("job %s (%s) %s: %s", job.id, job.name, stream, line)

        return forward

    def _memory_limit(self, job: Job) -> int | None:
        """The lower of the supervisor's and the job's own (its payload's "memory_limit_mb")."""
        return memory_limit_bytes(self.config.memory_limit_mb, job.payload.get("memory_limit_mb"))

    def _reap(self) -> None:
        # A child of the supervisor's ended or stopped: a fork server stopped by a job (whose
        # parent it is) would hold every job it forked.
        child_signal = self.wakeup.take_child_signal()
        if self.forking is not None:
            if child_signal:
                self.forking.end_stopped()
            if self.forking.replace_lost():
                self._dirty = True  # a new fork server's pid
        if self.config.subreaper and child_signal:
            self._reap_adopted()
        for proc in list(self.children):
            learnt = proc.pid_learnt
            try:
                ending = proc.try_reap()
            except Exception as exc:  # noqa: BLE001 - its ending, not the loop's
                ending = self._unreadable(proc, exc)
            if ending is None:
                if not learnt and proc.pid_learnt:
                    self._dirty = True  # its pid, for the status file's "running"
                continue
            self.children.remove(proc)
            proc.release_group()  # done by its reap, unless its ending could not be read
            proc.output.close()  # read and closed already, unless its ending could not be read
            if proc.known_pid:
                self.ahead.observe(ending.wall_seconds)
            if self.forking is not None:
                self.forking.ended(proc)
            if proc.suspect:
                self.suspects.add(proc.job.id)
            self._ended(proc.job, ending, proc)

    def _ended(self, job: Job, ending: Ending, proc: JobProcess | None = None) -> None:
        """Record, count, log and show a job's ending (`proc`: its child, if it had one), as
        it will be stored: a result that cannot be is a failure."""
        self._dirty = True
        self._claim_now = True
        attempt = None
        if proc is not None:
            try:
                attempt = attempt_of(proc, ending, self.worker_id, self.host)
            except Exception:  # noqa: BLE001 - the ending is recorded all the same
                log.exception("job %s (%s): its attempt cannot be told", job.id, job.name)
        ending = self.recorder.add(Record(job, ending, attempt)).ending
        self.admission.ended(job, attempt)
        self._count(ending)
        log_ending(job, ending)
        for observer in self.observers:
            try:
                observer(job, ending)
            except Exception:  # noqa: BLE001 - a display's trouble is not the job's
                log.exception("job %s (%s): an observer of its ending failed", job.id, job.name)

    def _unreadable(self, proc: JobProcess, exc: Exception) -> Ending:
        """The ending of a child whose own could not be read: a failure that says why; its
        process group is killed, lest it run on unwatched."""
        job = proc.job
        log.exception("job %s (%s): its ending cannot be read", job.id, job.name)
        try:
            proc.stop(Outcome.FAILED, "its ending could not be read")
            if proc.stack is not None:
                proc.stack.close()
        except Exception:  # noqa: BLE001 - it is being given up on anyway
            log.exception("job %s (%s): cannot stop its child", job.id, job.name)
        error = f"its ending could not be read: {reason(exc)}"
        wall = time.monotonic() - proc.started
        peak = proc.peak_rss_bytes
        return Ending(False, None, error, Outcome.FAILED, None, None, wall, 0.0, 0.0, peak)

    def _not_started(self, job: Job, error: str, *, final: bool) -> None:
        """End a job whose child could not be started: a failed attempt (for good when
        `final`), with no child and so no attempt's record."""
        self._ended(
            job,
            Ending(False, None, error, Outcome.FAILED, None, None, 0.0, 0.0, 0.0, 0, final=final),
        )

    def _reap_adopted(self) -> None:
        """As a subreaper, the supervisor adopts the orphans of a fork server that died (and,
        when it forks jobs itself, what their processes leave): it kills and reaps every child
        of its own that is neither a fork server, nor a job's process, nor the process storing
        a large result. (A job's process that outlived its server is reaped by `try_reap`.)
        In a sandbox it only reaps those still in a job's cgroup: they are killed and counted
        there as the job's ending is read (`JobGroup.kill_all`), which a kill from here first
        would race."""
        ours = {p.known_pid for p in self.children} | self.recorder.storer.pids
        if self.forking is not None:
            ours |= self.forking.server_pids()
        sandboxed = self.sandbox.kind != "none"
        for pid in posix.children_of_this_process():
            if pid not in ours:
                if not sandboxed or not cgroups.in_job_group(pid):
                    posix.kill_tree(pid)  # outside a job's group: nothing else will
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass

    def _store(self) -> None:
        """Large results being stored on the side (see `taiat.supervisor.large_results`): a
        refused one is a failure after all."""
        for stored in self.recorder.store():
            self._dirty = True
            if stored.outcome == "done":
                self._claim_now = True  # its dependents may be ready
            elif stored.outcome == "refused":
                self.counters["completed"] -= 1
                self.counters["failed"] += 1

    def _count(self, ending: Ending) -> None:
        if ending.ok:
            self.counters["completed"] += 1
        elif ending.cause != Outcome.STOPPED and ending.cause not in MOVED_ON:
            self.counters["failed"] += 1
            if ending.cause == Outcome.TIMED_OUT:
                self.counters["timed_out"] += 1
            elif ending.cause in (Outcome.CRASHED, Outcome.MEMORY):
                self.counters["crashed"] += 1

    # -- the database ----------------------------------------------------------------------

    def _nothing_left(self) -> bool:
        """Burst mode, nothing started here: whether to exit. Once no job is pending; or, unless
        `burst_wait_scheduled`, once every job left waits for a `run_at` beyond the poll
        interval (its own, or a dependency's), none running anywhere: that is logged, with how
        many wait and until when. Only the jobs this supervisor could claim count: of the
        queues it serves, none paused, and for agent jobs, of the agents it has."""
        if self.recorder.unwritten:
            return False
        within = self.config.poll_interval
        backlog = self.recorder.call(lambda: self.port.backlog(within, served=True), None)
        if backlog is None:
            return False
        if backlog.pending == 0:
            log.info("burst: no job left to run")
            return True
        if self.config.burst_wait_scheduled or not backlog.only_later:
            return False
        self.left_for_later = backlog
        log.info("burst: %s", waiting_words(backlog))
        return True

    def _count_jobs(self) -> None:
        """Count the jobs in the database by status, for the metrics file."""
        backlog = self.recorder.call(self.port.backlog, None)
        self.job_counts = None if backlog is None else backlog.by_status()
        self.queue_counts = (
            None if backlog is None else publishing.bounded_queues(backlog.by_queue())
        )
        self._dirty = True

    def _count_limit_waits(self) -> None:
        """Count the ready jobs of each limited key, for the status and metrics files."""
        self.limit_waits = self.recorder.call(self.port.waiting_on_limits, None)
        self._dirty = True

    def _count_memory_waits(self) -> None:
        """Count the ready jobs of the agents held back for memory, for the status file."""
        held = self.admission.held
        if held:
            counts = self.recorder.call(lambda: self.port.ready_of_agents(held), None)
            self.admission.ready = counts or {}

    @property
    def _registration(self) -> dict[str, Any]:
        """What this supervisor registers under its id: host, pid, lease, place, the queues
        it serves (None: every one) and its agents, its catalogue (None: every agent name, as
        a custom executor that names none serves)."""
        serving = self._serving
        return {
            "host": self.host,
            "pid": os.getpid(),
            "lease": self.config.lease,
            **self.place.registration(),
            "queues": self.config.queues,
            "agents": None if serving is None else self._agents_published,
        }

    def _register(self) -> None:
        self._agents_published = self.catalogue
        sent = time.monotonic()
        self.port.register(self.worker_id, **self._registration)
        self._beat_at = sent

    def _beat(self) -> None:
        """Heartbeat, in a short transaction of its own (raises `DatabaseUnavailable`). After a
        silence longer than a stall, this supervisor watches the others afresh: it cannot tell
        their silence over that time from its own."""
        sent = time.monotonic()
        self.port.heartbeat(self.worker_id, **self._registration)
        if sent - self._beat_at >= self._stall_after:
            log.info("heartbeat again after %.1f s of silence", sent - self._beat_at)
            self._watching_since = sent
        self._beat_at = sent

    def _beat_now(self) -> None:
        """Heartbeat; after an outage, the recorder's first try is this heartbeat itself."""
        if self.recorder.ok:
            self.recorder.call(self._beat, None)
        else:
            self.recorder.ready()

    def _overdue(self) -> bool:
        """Whether the last heartbeat that went through is as old as a stall."""
        return time.monotonic() - self._beat_at >= self._stall_after

    def _catch_up(self) -> bool:
        """After an outage, try the database again once the backoff is over, the heartbeat
        first; after a stall (SIGSTOP, a paused VM, a long step), heartbeat, then check every
        claim held or running, before anything starts. Returns whether the claims can be
        trusted: there was no stall, or it has been caught up with."""
        stalled = self._overdue()
        if not stalled and self.recorder.ok:
            return True
        self._beat_now()
        if not stalled:
            return True
        return not self._overdue() and self._check_claims()

    def _heartbeat(self) -> None:
        """Heartbeat, take back the jobs of dead supervisors, and make sure we are LISTENing."""
        self._beat_now()
        lease = self.config.lease
        here = {p.job.id for p in self.children}
        here |= {held.job.id for held in self.ahead.held}
        here |= {record.job.id for record in self.recorder.unwritten}
        none: list[str] = []
        taken = self.recorder.call(lambda: self._recover(lease, here), none)
        if taken:
            self._claim_now = True
        if self.listener is not None and not self.listener.connected and self.recorder.ok:
            try:
                self.listener.connect()
                self._claim_now = True  # whatever was announced while we were deaf
            except DatabaseUnavailable as exc:
                log.warning("%s; polling meanwhile", exc)

    def _recover(self, lease: float, here: set[str]) -> list[str]:
        # How long it has watched is read only now: the recorder may have just reconnected.
        watched = time.monotonic() - self._watching_since
        place = self.place
        return self.port.recover(
            self.worker_id, lambda row, now: is_dead(row, now, lease, place, watched), here
        )

    def _unregister(self) -> None:
        try:
            self.port.unregister(self.worker_id)
        except (DatabaseUnavailable, TransientConflict):
            log.warning("could not remove supervisor %s from the database", self.worker_id)

    def _cleanup(self) -> bool:
        """Delete a batch of old history; whether there may be more. One batch a turn of the
        loop, so that a purge of millions holds up no heartbeat."""
        days = self.config.history_retention_days
        deleted = self.recorder.call(
            lambda: self.port.delete_history_before(days, CLEANUP_BATCH), 0
        )
        if deleted:
            log.info("deleted %d history entries older than %s days", deleted, days)
        return deleted >= CLEANUP_BATCH

    @staticmethod
    def _log_job_user(user: job_user.JobUser, fork_server: bool) -> None:
        log.info("jobs run as user %s", job_user.describe(user))
        if not fork_server:
            log.warning(
                "jobs run as user %s are forked from the supervisor, and carry a copy of its "
                "memory, its database URL and password among it: keep the fork server on",
                user.name,
            )
        for folder in job_user.unreadable(user, sys.path):
            log.warning(
                "jobs run as user %s, who cannot read %s (on the import path): a job that "
                "imports a module not loaded before its fork will not find it there",
                user.name,
                folder,
            )

    # -- status ----------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        now = time.monotonic()
        wall = time.time()
        server = self.forking.server_in_use if self.forking else None
        # A job counts as running once its child is forked and its pid known (the fork server
        # says it a moment after the launch); one the server has not told of for a while is
        # shown all the same, with no pid.
        running = [
            {
                "job_id": p.job.id,
                "name": p.job.name,
                "pid": pid,
                "started_at": publishing.iso(p.started_at),
                "deadline": None if p.deadline is None else publishing.iso(wall + p.deadline - now),
                "rss_bytes": p.rss_bytes,
            }
            for p in self.children
            if not p.delivered and ((pid := p.known_pid) or now - p.started >= _UNTOLD)
        ]
        return {
            "pid": os.getpid(),
            "host": self.host,
            "version": __version__,
            "worker_id": self.worker_id,
            "started_at": publishing.iso(self.started_at),
            "updated_at": publishing.iso(datetime.now(UTC)),
            "state": self.state,
            "slots": self.config.max_concurrent_jobs,
            "running": running,
            "counters": dict(self.counters),
            "database": "ok" if self.recorder.ok else "unreachable",
            "pending_results": len(self.recorder.pending) + len(self.recorder.storer.queue),
            "claimed_ahead": len(self.ahead),
            "finishing": sum(1 for p in self.children if p.delivered),
            "fork_server_pid": server.pid if server is not None else None,
            # The children forked ahead, waiting for a job (see `Forking.keep_waiting`).
            "waiting_children": self.forking.waiting_pids() if self.forking else [],
            "job_user": None if self.job_user is None else self.job_user.name,
            "waiting_on_limit": self.limit_waits,
            # The agents whose jobs wait here for memory, with the memory they lately
            # needed and what there is (see `taiat.supervisor.admission`); null if none.
            "waiting_for_memory": self.admission.status(),
            # The jobs in the database by queue and status, as the metrics' taiat_jobs; null
            # until counted.
            "queues": self.queue_counts,
            "queues_served": None if self.config.queues is None else list(self.config.queues),
            "sandbox": self.sandbox.kind,
        }

    def _changed(self) -> None:
        self._dirty = True
        self._published = 0.0  # a change of state is written at once

    def _publish(self, force: bool = False) -> None:
        """Write the status and metrics files if anything changed, at most every
        `_PUBLISH_GAP` seconds under load (a state change is written at once)."""
        now = time.monotonic()
        if force or (self._dirty and now >= self._published + _PUBLISH_GAP):
            self._dirty = False
            self._published = now
            self._reporter.publish(self.snapshot(), jobs=self.job_counts, queues=self.queue_counts)


def waiting_words(backlog: Backlog) -> str:
    """What a burst leaves waiting, in words: 'no job left to run before 2030-01-31 09:00:00
    UTC: 3 jobs wait until then or later (2 for their run_at, 1 for a job they depend on);
    --burst-wait-scheduled waits for them'."""
    first = backlog.later_from
    when = "later" if first is None else f"{first:%Y-%m-%d %H:%M:%S} UTC"
    jobs = backlog.later + backlog.blocked
    why = f"{backlog.later} for {'its' if backlog.later == 1 else 'their'} run_at"
    if backlog.blocked:
        why += f", {backlog.blocked} for a job they depend on"
    counted = "1 job waits" if jobs == 1 else f"{jobs} jobs wait"
    return (
        f"no job left to run before {when}: {counted} until then or later ({why}); "
        "--burst-wait-scheduled waits for them"
    )


def memory_limit_bytes(*limits_mb: Any) -> int | None:
    """The lowest of the limits in MB, in bytes. A job's own comes from its payload, untrusted:
    one that is not a positive number is no limit, nor is one beyond what any machine has
    (10**400, 1e308)."""
    valid = [x for x in limits_mb if isinstance(x, int | float) and not isinstance(x, bool)]
    valid = [x for x in valid if 0 < x < _NO_MEMORY_LIMIT_MB]  # NaN is neither
    return max(1, int(min(valid) * MiB)) if valid else None


#: The most cores a job's cgroup quota is given: a payload's `cpu_limit` beyond it (one the
#: kernel would refuse, failing every attempt) is taken as this.
MAX_CPU_LIMIT = float(1 << 16)


def lowest(*values: Any) -> float | None:
    """The lowest of the positive finite numbers among `values` (a payload's are untrusted:
    anything else is no limit), or None."""
    valid = [x for x in values if isinstance(x, int | float) and not isinstance(x, bool)]
    valid = [x for x in valid if 0 < x < math.inf]  # NaN is neither
    return min(valid) if valid else None


def lowest_whole(*values: Any) -> int | None:
    """`lowest`, as a whole number of at least 1 (a cap of processes)."""
    found = lowest(*values)
    return None if found is None else max(1, min(int(found), 1 << 22))
