"""The supervisor's one way into the store: claims (with the dependency results of the jobs
claimed, read in the claim's own transaction), the endings of claims, requeues, claim checks,
its row, heartbeat and lease, and the jobs of dead supervisors taken back. `JobManager`, the
user's way in, drives the same transitions through it.

Every method is one transaction (run again on a deadlock or a serialisation conflict); none
retries an outage, which is the caller's to ride out (`taiat.supervisor.recorder`)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection, Engine, RowMapping

from taiat.errors import JobError
from taiat.jobs import Attempt, AttemptOutput, Job, JobStatus, JobType
from taiat.store import db, leases, plans, queries, state_machine
from taiat.store.db import Listener
from taiat.store.leases import Catalogue, live, new_worker_id
from taiat.store.queries import limits as limit_queries
from taiat.store.queries import operator as operator_queries
from taiat.store.queries import stacks as stack_queries
from taiat.store.queries import supervisors as supervisor_queries
from taiat.store.state_machine import Completion, RetryPolicy
from taiat.store.transactions import Transactions
from taiat.store.validation import json_text

__all__ = [
    "Backlog",
    "Catalogue",
    "Claimed",
    "Completion",
    "DependencyResults",
    "Listener",
    "MOST_LIMIT_KEYS_SHOWN",
    "SupervisorPort",
    "check_result",
    "dependency_results",
    "in_claim_order",
    "live",
    "new_worker_id",
    "supervisor_engine",
]

log = logging.getLogger(__name__)

#: The lease of `taiat supervisors` and of a supervisor by default (seconds).
DEFAULT_LEASE = 30.0

#: For each claimed job that has dependencies, the result of each one by id (None for one that
#: has not completed).
DependencyResults = dict[str, dict[str, Any]]


@dataclass
class Claimed:
    """What a claim took: the jobs, best first, and their dependency results; and, when it
    took a query job, the catalogue of the live fleet to plan it with."""

    jobs: list[Job] = field(default_factory=list)
    dependency_results: DependencyResults = field(default_factory=dict)
    #: The agents of the live fleet (`leases.live_catalogue`), read in the claim's own
    #: transaction when it took a query job; else None.
    catalogue: Catalogue | None = None


@dataclass(frozen=True)
class Backlog:
    """The active jobs, by what each one waits for."""

    #: Claimed by a supervisor: running, or claimed ahead of a free slot.
    running: int = 0
    #: Pending, every dependency completed, `run_at` passed: waiting only for a free slot.
    ready: int = 0
    #: Pending, waiting for a dependency to complete.
    blocked: int = 0
    #: Pending, a retry waiting out its backoff.
    backoff: int = 0
    #: Pending, every dependency completed, its `run_at` (as it was created) still ahead but
    #: within the window asked about...
    soon: int = 0
    #: ... or beyond it,
    later: int = 0
    #: the first of whose `run_at` is then (naive UTC).
    later_from: datetime | None = None
    #: The same counts (running, ready, blocked, ...) of each queue that has active jobs.
    queues: Mapping[str, Mapping[str, int]] = field(default_factory=dict)

    @property
    def pending(self) -> int:
        """Every pending job."""
        return self.ready + self.blocked + self.backoff + self.soon + self.later

    @property
    def only_later(self) -> bool:
        """Whether every job left waits for a `run_at` beyond the window, its own or (through
        its dependencies) another's: none runs, none is ready or due within the window, and
        no retry waits. (A chain of dependencies ends at an active job that does not wait for
        one; with none of those running, ready or due, it is one that waits for later.)"""
        due = self.running + self.ready + self.backoff + self.soon
        return due == 0 and self.later > 0

    def by_status(self) -> dict[str, int]:
        """The counts of the metric `taiat_jobs{status=...}`: `pending` waits for a dependency
        or a retry's backoff, `ready` for a free slot, `scheduled` for its `run_at`."""
        return _by_status(
            self.running, self.ready, self.blocked, self.backoff, self.soon, self.later
        )

    def by_queue(self) -> dict[str, dict[str, int]]:
        """`by_status` of each queue that has active jobs, by name."""
        kinds = ("running", "ready", "blocked", "backoff", "soon", "later")
        return {
            name: _by_status(*(counts.get(kind, 0) for kind in kinds))
            for name, counts in sorted(self.queues.items())
        }


#: The most limit keys whose waiting jobs the status and metrics files show.
MOST_LIMIT_KEYS_SHOWN = 50


def _by_status(
    running: int, ready: int, blocked: int, backoff: int, soon: int, later: int
) -> dict[str, int]:
    return {
        "pending": blocked + backoff,
        "ready": ready,
        "scheduled": soon + later,
        "running": running,
    }


def supervisor_engine(database_url: str | None, lease: float, heartbeat_interval: float) -> Engine:
    """The engine of a supervisor that made its own: no wait of its on the database outlasts
    a heartbeat interval, and a transaction it leaves open when stopped ends within half its
    lease, before its peers take its jobs back: a stopped supervisor freezes no other, and is
    frozen by none."""
    # No pre-ping: it costs a round trip per transaction on the hot path, and the supervisor
    # rides out a dropped connection anyway (the recorder retries).
    engine = db.engine_from_url(database_url, pool_pre_ping=False)
    db.bound_sessions(
        engine,
        lock_timeout=max(0.1, min(2.0, lease / 10)),
        statement_timeout=max(1.0, heartbeat_interval),
        idle_timeout=max(1.0, lease / 2),
        connect_timeout=lease / 10,
    )
    return engine


class SupervisorPort:
    def __init__(self, transactions: Transactions, retry_policy: RetryPolicy) -> None:
        self.transactions = transactions
        self.retry_policy = retry_policy
        #: The lease (seconds) a supervisor that registered none of its own is judged by, when
        #: a claim reads the live fleet's catalogue: the claiming supervisor's.
        self.lease = DEFAULT_LEASE
        #: What this port's claims take (see `serve`): None is every queue, every agent.
        self.queues: frozenset[str] | None = None
        self.agents: frozenset[str] | None = None
        #: Agents whose jobs this port's claims leave for now (see `hold_back`).
        self.held_back: frozenset[str] = frozenset()

    def serve(
        self, queues: Collection[str] | None = None, agents: Collection[str] | None = None
    ) -> None:
        """Claim only jobs of `queues` and, of the agent jobs, those of `agents`, from now on;
        None is every one. A paused queue's jobs are never claimed."""
        self.queues = None if queues is None else frozenset(queues)
        self.agents = None if agents is None else frozenset(agents)

    def hold_back(self, agents: Collection[str]) -> None:
        """Leave the jobs of `agents` to other claimers from now on (a supervisor that lacks
        the memory they need: `taiat.supervisor.admission`); empty: hold none back. Their jobs
        stay pending, claimable by any other supervisor."""
        self.held_back = frozenset(agents)

    @property
    def engine(self) -> Engine:
        return self.transactions.engine

    def describe(self) -> str:
        """The database, in words, its password masked."""
        return db.describe(self.engine)

    def listener(self) -> Listener | None:
        """A connection LISTENing for new jobs and cancellations; None on SQLite."""
        if self.engine.dialect.name != "postgresql":
            return None
        return Listener(self.engine, queries.CHANNEL)

    def after_fork(self) -> None:
        """In a child forked from the supervisor: let go of the connections it inherited."""
        db.after_fork_in_child(self.engine)

    def unbound(self) -> None:
        """In a helper forked from the supervisor: no statement time limit of the
        supervisor's (its one write takes as long as it takes)."""
        db.unbound_statements(self.engine)

    # -- claims ----------------------------------------------------------------------------

    def settle(
        self, completions: Sequence[Completion], worker_id: str, limit: int
    ) -> tuple[set[str], Claimed]:
        """Record several successes and claim up to `limit` ready jobs, with their
        dependency results, in one transaction: the supervisor's hot path. Returns the ids
        recorded (the rest were stale) and what was claimed."""
        for completion in completions:
            check_result(completion.result)

        # With nothing to record, a claim is one statement, atomic on its own (the limit-aware
        # claim too: one function); what it reads after (the dependencies' results, the fleet's
        # catalogue) does not change once written. On PostgreSQL it then runs in autocommit:
        # no BEGIN and COMMIT round trips before a job can start. Should those reads fail, its
        # jobs are given back at once, as a rollback would have left them (and, should that
        # fail too, by the supervisor's next heartbeat, as claims whose reply was lost).
        alone = not completions

        def work(conn: Connection) -> tuple[set[str], Claimed]:
            done, _ = state_machine.complete(conn, completions) if completions else (set(), [])
            return done, _claim(
                conn,
                worker_id,
                limit,
                self.lease,
                self.queues,
                self.agents,
                self.held_back,
                on_failure=self._give_back_all if alone else None,
            )

        return self.transactions.run(work, single_statement=alone)

    def _give_back_all(self, jobs: Sequence[Job]) -> None:
        """Give back claimed jobs whose claim could not be completed; whatever fails here is
        left to the heartbeat (see `leases.recover`)."""
        try:
            self.transactions.run(
                lambda conn: [state_machine.give_back(conn, j.id, j.claim_seq) for j in jobs]
            )
        except Exception:  # noqa: BLE001 - the claim's own error is the one to raise
            log.warning("%d claimed jobs could not be given back at once", len(jobs))

    def claim(self, worker_id: str, limit: int) -> Claimed:
        """Claim up to `limit` ready jobs for `worker_id`, with their dependency results."""
        return self.settle((), worker_id, limit)[1]

    def current_claims(self, claims: Mapping[str, int]) -> set[str]:
        """Those of the jobs (id -> claim_seq) whose claim is still the running one."""
        return self.transactions.run(lambda conn: supervisor_queries.current_claims(conn, claims))

    def stack_requests(self, claims: Mapping[str, int]) -> dict[str, int]:
        """Of the jobs (id -> claim_seq) running under those claims, those whose stack an
        operator asked for and that wait for an answer: the latest request of each."""
        return self.transactions.run(lambda conn: stack_queries.stack_requests(conn, claims))

    def answer_stacks(self, answers: Sequence[tuple[str, int, int, str | None]]) -> None:
        """Store the stacks asked for: (job id, claim_seq, request, stack or None)."""
        rows = [
            {"the_job": job_id, "the_claim": seq, "request": request, "dump": dump}
            for job_id, seq, request, dump in answers
        ]
        self.transactions.run(lambda conn: stack_queries.answer_stacks(conn, rows))

    # -- endings ---------------------------------------------------------------------------

    def complete(
        self, job_id: str, claim_seq: int, result: Any = None, attempt: Attempt | None = None
    ) -> bool:
        """Record that this claim of the job succeeded; False when the claim is stale."""
        done, _ = self.settle([Completion(job_id, claim_seq, result, attempt)], "", 0)
        return job_id in done

    def fail(
        self,
        job_id: str,
        claim_seq: int,
        error: str,
        attempt: Attempt | None = None,
        *,
        retry: bool = True,
    ) -> JobStatus | None:
        """Record that this claim failed: PENDING if it will be retried after a backoff,
        FAILED if that was its last attempt (or `retry` is False), None if the claim is stale."""
        policy = self.retry_policy
        return self.transactions.run(
            lambda conn: state_machine.fail(
                conn, job_id, claim_seq, error, attempt, policy, retry=retry
            )
        )

    def expand(
        self,
        job_id: str,
        claim_seq: int,
        plan: Mapping[str, Any],
        attempt: Attempt | None = None,
    ) -> list[str] | None:
        """Record that this claim of a query job planned it: its plan's agent jobs, created.
        Their ids; None when the claim is stale. A plan that cannot be created fails the
        query for good (and gives no ids)."""
        try:
            return self.transactions.run(
                lambda conn: plans.expand(conn, job_id, claim_seq, plan, attempt)
            )
        except (JobError, KeyError, TypeError, ValueError) as exc:
            log.error("job %s: cannot create its plan's jobs: %s", job_id, exc)
            error = f"cannot create the plan's jobs: {exc}"
            status = self.fail(job_id, claim_seq, error, attempt, retry=False)
            return None if status is None else []

    def requeue(self, job_id: str, claim_seq: int, attempt: Attempt | None = None) -> bool:
        """Put this claim's job back to pending at once, no retry spent; False when the claim
        is stale."""
        return self.transactions.run(
            lambda conn: state_machine.requeue(conn, job_id, claim_seq, attempt)
        )

    def give_back(self, job_id: str, claim_seq: int) -> bool:
        """Put this claim's job, which was never started, back to pending at once, no retry
        spent and no rate spent: the starts its claim counted against its keys' rates are
        taken back. False when the claim is stale."""
        return self.transactions.run(lambda conn: state_machine.give_back(conn, job_id, claim_seq))

    def record_attempt(self, attempt: Attempt) -> None:
        """Record a run whose job has moved on (cancelled, taken back): no state changes."""
        self.transactions.run(lambda conn: state_machine.record_attempt(conn, attempt))

    def save_output(self, outputs: Sequence[AttemptOutput]) -> None:
        """Write the output of running attempts so far, each in place of what was written of it
        before (`taiat jobs logs --follow` reads it); their ends write the rest."""
        rows = [state_machine.output_row(o, final=False) for o in outputs]
        if rows:
            self.transactions.run(lambda conn: queries.save_output(conn, rows))

    # -- counts and upkeep -----------------------------------------------------------------

    def pending_count(self) -> int:
        """Pending jobs, ready or not (a retry waiting out its backoff counts)."""
        return self.transactions.run(queries.count_pending)

    def backlog(self, within: float = 0.0, *, served: bool = False) -> Backlog:
        """The active jobs by what each one waits for (one grouped count); `within`: the
        window, in seconds from now, that tells `soon` from `later`. With `served`, only those
        this port's claims could take (see `serve`), of no paused queue."""
        queues, agents = self.queues, self.agents
        rows = self.transactions.run(
            lambda conn: supervisor_queries.backlog(
                conn, within, served=served, queues=queues, agents=agents
            )
        )
        counts: dict[str, int] = {}
        queues: dict[str, dict[str, int]] = {}
        for row in rows:
            counts[row["kind"]] = counts.get(row["kind"], 0) + row["jobs"]
            queues.setdefault(row["queue"], {})[row["kind"]] = row["jobs"]
        later = [row["earliest"] for row in rows if row["kind"] == "later"]
        later_from = min(later) if later else None
        return Backlog(**counts, later_from=later_from, queues=queues)

    def waiting_on_limits(self, most: int = MOST_LIMIT_KEYS_SHOWN) -> dict[str, int]:
        """For each key with a limit set (the first `most` by name, so that the figures stay
        bounded), the ready jobs that carry it, not yet started; empty while no limit is set."""

        def read(conn: Connection) -> dict[str, int]:
            keys = [row["key"] for row in limit_queries.limit_rows(conn)][:most]
            return limit_queries.waiting_counts(conn, keys)

        return self.transactions.run(read)

    def recent_peaks(
        self, per_agent: int, most: int, since: datetime | None = None
    ) -> list[RowMapping]:
        """The peak memory of the latest attempts of each agent (see `queries.recent_peaks`):
        rows of (agent, job_id, attempt, ended_at, peak_rss_bytes), newest first."""
        return self.transactions.run(
            lambda conn: queries.recent_peaks(conn, per_agent, most, since)
        )

    def ready_of_agents(self, agents: Collection[str]) -> dict[str, int]:
        """How many ready jobs (pending, nothing unmet, due) each of `agents` has."""
        keys = {f"agent:{agent}": agent for agent in agents}
        counts = self.transactions.run(lambda conn: limit_queries.waiting_counts(conn, keys))
        return {agent: counts[key] for key, agent in keys.items()}

    def unfinished_count(self) -> int:
        """Jobs pending or running, on any supervisor."""
        return self.transactions.run(operator_queries.count_unfinished)

    def delete_history_before(self, days: float, batch_size: int) -> int:
        """Delete up to `batch_size` of the history entries completed more than `days` ago,
        oldest first; returns how many."""
        return self.transactions.run(
            lambda conn: queries.delete_history_before(conn, float(days), batch_size)
        )

    # -- supervisors -----------------------------------------------------------------------

    def register(self, worker_id: str, host: str, pid: int, **place: Any) -> None:
        """Register a supervisor (see `leases.register` for `place`)."""
        self.transactions.run(lambda conn: leases.register(conn, worker_id, host, pid, **place))

    def heartbeat(self, worker_id: str, host: str, pid: int, **place: Any) -> None:
        """Refresh the heartbeat; re-register if the row went missing."""
        self.transactions.run(lambda conn: leases.heartbeat(conn, worker_id, host, pid, **place))

    def unregister(self, worker_id: str) -> None:
        self.transactions.run(lambda conn: leases.unregister(conn, worker_id))

    def recover(
        self,
        worker_id: str,
        is_dead: Callable[[RowMapping, datetime], bool],
        running_here: Collection[str] = (),
    ) -> list[str]:
        """Take back the running jobs of the supervisors `is_dead` judges dead (see
        `leases.recover`); returns their ids."""
        policy = self.retry_policy
        return self.transactions.run(
            lambda conn: leases.recover(conn, worker_id, is_dead, policy, running_here)
        )

    def list_workers(self) -> list[dict[str, Any]]:
        """Every registered supervisor (see `leases.list_workers`)."""
        return self.transactions.run(leases.list_workers)

    def live_agents(self, lease: float | None = None) -> list[dict[str, Any]]:
        """Each agent of the live fleet, with the supervisors that serve it (see
        `leases.live_agents`), supervisors that registered no lease of their own judged by
        `lease` (else this port's)."""
        judged_by = self.lease if lease is None else lease
        return self.transactions.run(lambda conn: leases.live_agents(conn, judged_by))

    def live_catalogue(self, lease: float | None = None) -> Catalogue:
        """The agents of the live fleet (see `leases.live_catalogue`), supervisors that
        registered no lease of their own judged by `lease` (else this port's)."""
        judged_by = self.lease if lease is None else lease
        return self.transactions.run(lambda conn: leases.live_catalogue(conn, judged_by))


def check_result(result: Any) -> None:
    """InvalidJob unless `result` can be stored as JSON (`JsonText` was checked already)."""
    json_text(result, "the result")


def _claim(
    conn: Connection,
    worker_id: str,
    limit: int,
    lease: float = DEFAULT_LEASE,
    queues: Collection[str] | None = None,
    agents: Collection[str] | None = None,
    held_back: Collection[str] = (),
    on_failure: Callable[[Sequence[Job]], None] | None = None,
) -> Claimed:
    """Claim up to `limit` jobs and read what they need: their dependencies' results, and
    for a query job the fleet's catalogue. `on_failure`: called with the jobs claimed when
    those reads fail (the claim committed already, in autocommit), before the error goes on."""
    if limit <= 0:
        return Claimed()
    rows = queries.claim_jobs(
        conn, worker_id, limit, queues=queues, agents=agents, excluded_agents=held_back
    )
    jobs = in_claim_order(rows)
    try:
        catalogue = None
        if any(job.job_type is JobType.QUERY for job in jobs):
            catalogue = leases.live_catalogue(conn, lease)
        return Claimed(jobs, dependency_results(conn, jobs), catalogue)
    except BaseException:
        if on_failure is not None and jobs:
            on_failure(jobs)
        raise


def dependency_results(conn: Connection, jobs: Sequence[Job]) -> DependencyResults:
    """For each of `jobs` that has dependencies, the result of each one by id (None for one
    that has not completed), read in one query."""
    wanted = {dep for job in jobs for dep in job.dependencies}
    if not wanted:
        return {}
    found = queries.completed_results(conn, wanted)
    return {
        job.id: {dep: found.get(dep) for dep in job.dependencies}
        for job in jobs
        if job.dependencies
    }


def in_claim_order(rows: Iterable[Mapping[Any, Any]]) -> list[Job]:
    """Jobs from claimed rows, best first."""
    jobs = [Job.from_row(row) for row in rows]
    jobs.sort(key=lambda job: (-job.priority, job.run_at or datetime.min))
    return jobs
