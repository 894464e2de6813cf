"""`JobManager`: the public API over the store, compatible with the seed's."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy.engine import Connection, Engine

from taiat.config import MAX_DAYS, SupervisorConfig
from taiat.errors import InvalidJob, InvalidLimit, JobNotFound, StackUnavailable
from taiat.jobs import (
    Attempt,
    AttemptOutput,
    Job,
    JobHistoryEntry,
    JobStatus,
    JobType,
    QueueInfo,
)
from taiat.store import db, queries, state_machine
from taiat.store.leases import live
from taiat.store.port import SupervisorPort, dependency_results
from taiat.store.queries import limits as limit_queries
from taiat.store.queries import queues as queue_queries
from taiat.store.queries import stacks as stack_queries
from taiat.store.state_machine import Completion, RetryPolicy
from taiat.store.transactions import Transactions
from taiat.store.validation import (
    BIGINT_RANGE,
    build_batch,
    build_spec,
    check_queue,
    check_text,
    concurrency_cap,
    limit_key,
    parse_rate,
    rate_text,
    whole_number,
)

#: The lease of a supervisor that registered none (the supervisor's default).
DEFAULT_LEASE = SupervisorConfig.lease

__all__ = ["JobManager", "JobType", "JobStatus", "Job", "JobHistoryEntry", "RetryPolicy"]

log = logging.getLogger(__name__)

T = TypeVar("T")
#: History entries `cleanup_old_history` deletes in one transaction.
CLEANUP_BATCH = 5000
MAX_RETENTION_DAYS = MAX_DAYS


class JobManager:
    """Create, inspect, cancel and retry jobs; and the transitions a supervisor drives.

    `database` is a SQLAlchemy `sessionmaker` bound to an engine (as in the seed), an `Engine`,
    a URL, or None for `TAIAT_DATABASE_URL` or else the embedded SQLite file.
    """

    def __init__(self, database: Any = None, *, retry_policy: RetryPolicy | None = None) -> None:
        self.engine: Engine = db.engine_from(database)
        self._transactions = Transactions(self.engine)
        #: The supervisor's way into the store, on the same engine; the transitions below that
        #: a supervisor drives go through it too.
        self.port = SupervisorPort(self._transactions, retry_policy or RetryPolicy())

    def __repr__(self) -> str:
        return f"JobManager({db.describe(self.engine)!r})"

    @property
    def retry_policy(self) -> RetryPolicy:
        return self.port.retry_policy

    @retry_policy.setter
    def retry_policy(self, policy: RetryPolicy) -> None:
        self.port.retry_policy = policy

    def transaction(self, *, single_statement: bool = False) -> AbstractContextManager[Connection]:
        """A transaction on a schema this release understands (see `db.begin` for
        `single_statement`)."""
        return self._transactions.transaction(single_statement=single_statement)

    def run(self, work: Callable[[Connection], T], *, single_statement: bool = False) -> T:
        """`work(conn)` in a transaction, run again from the start when PostgreSQL aborts it
        for a deadlock or serialisation conflict with another transaction."""
        return self._transactions.run(work, single_statement=single_statement)

    # -- creating --------------------------------------------------------------------------

    def create_job(
        self,
        job_type: JobType | str,
        name: str,
        description: str | None = None,
        payload: Mapping[str, Any] | None = None,
        dependencies: Iterable[str] | None = None,
        max_retries: int = 3,
        *,
        priority: int = 0,
        timeout_seconds: float | None = None,
        run_at: datetime | None = None,
        id: str | None = None,  # noqa: A002 - the column's name
        queue: str = "default",
        limit_keys: Iterable[str] | None = None,
    ) -> Job:
        """Create one job; it runs once every dependency has completed (and `run_at` passed),
        on a supervisor that serves its `queue`, and every one of its limit keys
        (`limit_keys`, plus `queue:<queue>` and, for an agent job, `agent:<agent name>`) has
        room."""
        spec = build_spec(
            job_type,
            name,
            description,
            payload,
            dependencies,
            max_retries,
            priority=priority,
            timeout_seconds=timeout_seconds,
            run_at=run_at,
            id=id,
            queue=queue,
            limit_keys=limit_keys,
        )
        return self._create([spec], {id} if id else set())[0]

    def create_jobs(self, jobs: Iterable[Mapping[str, Any]]) -> list[Job]:
        """Create a whole DAG in one transaction: all of it, or nothing.

        Each item holds `create_job`'s keyword names, plus an optional `"id"` of the caller's
        choosing that other items can name in their `dependencies`.
        """
        items = list(jobs)
        specs = build_batch(items)
        return self._create(specs, {item["id"] for item in items if item.get("id")})

    def _create(self, specs: list[Any], chosen_ids: set[str]) -> list[Job]:
        if not specs:
            return []

        if db.sends_alone(self.engine) and state_machine.in_one_statement(specs, chosen_ids):
            jobs = [self._transactions.run_alone(lambda e: state_machine.create_ready(e, specs[0]))]
        else:
            jobs = self.run(lambda conn: state_machine.create(conn, specs, chosen_ids))
        if log.isEnabledFor(logging.DEBUG):
            for spec in specs:
                log.debug("created job %s (%s)", spec.id, spec.name)
        return jobs

    # -- limits ----------------------------------------------------------------------------

    def set_limit(self, key: str, concurrency: int | None = None, rate: str | None = None) -> None:
        """Cap the jobs with `key` running at once across the fleet (`concurrency`), how many
        start per period (`rate`, "60/min", "10/s", "/h"), or both; replaces the key's limit.
        A bad key, cap or rate raises `InvalidLimit` naming it, and nothing is written."""
        key = limit_key(key, InvalidLimit)
        cap = concurrency_cap(concurrency)
        per = parse_rate(rate)
        if cap is None and per is None:
            raise InvalidLimit(f"a limit on {key!r} needs a concurrency, a rate, or both")

        def write(conn: Connection) -> None:
            limit_queries.set_limit(conn, key, cap, per)
            queries.notify(conn, "ready")

        self.run(write)

    def clear_limit(self, key: str) -> bool:
        """Remove the limit on `key`; False when it had none."""
        key = limit_key(key, InvalidLimit)

        def write(conn: Connection) -> bool:
            cleared = limit_queries.clear_limit(conn, key)
            queries.notify(conn, "ready")
            return cleared

        return self.run(write)

    def list_limits(self) -> list[dict[str, Any]]:
        """Every limit, by key: `key`, `concurrency` (None: no cap), `rate` ("60/min", or
        None), `running` (jobs with the key running, claimed ahead included) and `waiting`
        (ready jobs with the key, not yet started)."""

        def read(conn: Connection) -> list[dict[str, Any]]:
            rows = limit_queries.limit_rows(conn)
            keys = [row["key"] for row in rows]
            running = limit_queries.running_counts(conn, keys)
            waiting = limit_queries.waiting_counts(conn, keys)
            return [
                {
                    "key": row["key"],
                    "concurrency": row["concurrency"],
                    "rate": rate_text(row["rate_count"], row["rate_seconds"]),
                    "running": running[row["key"]],
                    "waiting": waiting[row["key"]],
                }
                for row in rows
            ]

        return self.run(read)

    # -- reading ---------------------------------------------------------------------------

    def get_job(self, job_id: str) -> Job | None:
        """The job, active or finished (then with its final status, result and error); None if
        no job has that id."""
        _id(job_id)
        return self.run(lambda conn: _find(conn, job_id))

    def dependency_results(self, jobs: Sequence[Job]) -> dict[str, dict[str, Any]]:
        """For each of `jobs` that has dependencies, the result of each one by id (None for one
        that has not completed), read in one query."""
        return self.run(lambda conn: dependency_results(conn, jobs))

    def get_ready_jobs(
        self, limit: int | None = None, *, name: str | None = None, queue: str | None = None
    ) -> list[Job]:
        """Pending jobs whose dependencies have completed and whose `run_at` has passed, in the
        order supervisors claim them; `name`: only those whose name matches this shell-style
        pattern (`load-*`), in any case; `queue`: only those of that queue."""
        _limit(limit)
        _name(name)
        _queue(queue)
        rows = self.run(lambda c: queries.ready_jobs(c, limit, name, queue))
        return [Job.from_row(row) for row in rows]

    def list_jobs(
        self,
        status: JobStatus | str | None = None,
        limit: int | None = 100,
        *,
        name: str | None = None,
        queue: str | None = None,
    ) -> list[Job]:
        """Jobs with `status` (any status if None), newest first; finished ones from history.
        `name`: only those whose name matches this shell-style pattern, in any case; `queue`:
        only those of that queue."""
        wanted = _status(status)
        _limit(limit)
        _name(name)
        _queue(queue)

        def read(conn: Connection) -> list[Job]:
            found = []
            if wanted is None or not wanted.finished:
                rows = queries.active_jobs(conn, _value(wanted), limit, name, queue)
                found += [Job.from_row(r) for r in rows]
            if wanted is None or wanted.finished:
                rows = queries.finished_jobs(conn, _value(wanted), limit, name, queue)
                found += [Job.from_history(JobHistoryEntry.from_row(r)) for r in rows]
            return found

        merged = self.run(read)
        merged.sort(key=lambda job: job.updated_at or job.created_at or datetime.min, reverse=True)
        return merged[:limit] if limit is not None else merged

    def get_job_history(
        self, limit: int | None = 10, status: JobStatus | str | None = None
    ) -> list[JobHistoryEntry]:
        """Finished jobs, newest first, each with its attempts."""
        wanted = _value(_status(status))
        _limit(limit)

        def read(conn: Connection) -> tuple[list[Any], list[Any]]:
            rows = queries.history_entries(conn, limit, wanted)
            return rows, queries.attempts_for(conn, {row["job_id"] for row in rows})

        rows, found = self.run(read)
        by_job: dict[str, list[Attempt]] = {}
        for attempt_row in found:
            by_job.setdefault(attempt_row["job_id"], []).append(Attempt.from_row(attempt_row))
        return [JobHistoryEntry.from_row(r, tuple(by_job.get(r["job_id"], ()))) for r in rows]

    def get_attempts(self, job_id: str) -> list[Attempt]:
        """Every run of the job in a child process, oldest first, each with the tails of what
        its process tree wrote to stdout and stderr (`Attempt.output`, None when it wrote
        nothing)."""
        _id(job_id)

        def read(conn: Connection) -> tuple[list[Any], list[Any]]:
            return queries.attempts_for(conn, [job_id]), queries.output_for(conn, job_id)

        rows, output_rows = self.run(read)
        outputs = {row["attempt"]: AttemptOutput.from_row(row) for row in output_rows}
        return [
            replace(attempt, output=outputs.get(attempt.attempt))
            for attempt in map(Attempt.from_row, rows)
        ]

    def get_output(self, job_id: str, attempt: int | None = None) -> list[AttemptOutput]:
        """What the job's attempts wrote to stdout and stderr (attempt `attempt` only, if
        given), oldest first: the tails of those that ended, and, for a running one, its
        output as its supervisor last wrote it (every few seconds). An attempt that wrote
        nothing has none."""
        _id(job_id)
        rows = self.run(lambda c: queries.output_for(c, job_id, attempt))
        return [AttemptOutput.from_row(row) for row in rows]

    def count_jobs(self) -> dict[str, int]:
        """How many jobs there are in each status, active and in history."""
        return self.run(queries.count_by_status)

    # -- changing --------------------------------------------------------------------------

    def job_stack(self, job_id: str, timeout: float = 10.0, interval: float = 0.1) -> str:
        """A running job's Python stack now, every thread's, as its child dumps it (see
        `taiat.forking.stacks`), without stopping it: asked of its supervisor, wherever it
        runs, and waited for up to `timeout` seconds. JobNotFound if no job has that id;
        StackUnavailable if it is not running, or no stack came in time."""
        _id(job_id)
        deadline = time.monotonic() + timeout
        request = self.run(lambda conn: stack_queries.ask_stack(conn, job_id))
        if request is None:
            found = self.get_job(job_id)
            if found is None:
                raise JobNotFound(f"no job has id {job_id}")
            raise StackUnavailable(f"job {job_id} is {found.status.value}, not running")
        while True:
            row = self.run(lambda conn: stack_queries.stack_answer(conn, job_id))
            if row is None or row["status"] != JobStatus.RUNNING.value:
                raise StackUnavailable(f"job {job_id} ended before its stack came")
            if (row["stack_answered"] or 0) >= request:
                if row["stack"] is None:
                    raise StackUnavailable(
                        f"job {job_id}'s process gave no stack (it has not started its job "
                        "yet, is ending, or is no longer Python)"
                    )
                return str(row["stack"])
            if time.monotonic() >= deadline:
                raise StackUnavailable(
                    f"no stack came from job {job_id} in {timeout:g} s: is its supervisor "
                    "running, and of this version?"
                )
            time.sleep(interval)

    def cancel_job(self, job_id: str) -> bool:
        """Cancel a pending or running job, and every job waiting on it. False if it had
        already finished; JobNotFound if no job has that id."""
        _id(job_id)
        cancelled = self.run(lambda conn: state_machine.cancel(conn, job_id))
        if cancelled:
            log.info("cancelled job %s", job_id)
        return cancelled

    def retry_job(self, job_id: str) -> Job:
        """Run a failed or cancelled job again from the start, its retries reset."""
        _id(job_id)
        row = self.run(lambda conn: state_machine.retry(conn, job_id))
        log.info("job %s queued again", job_id)
        return Job.from_row(row)

    # -- queues ----------------------------------------------------------------------------

    def pause_queue(self, name: str) -> None:
        """Pause a queue: no supervisor claims its jobs until it is resumed (from its next
        claim on); its running jobs finish."""
        check_queue(name)
        self.run(lambda conn: queue_queries.pause(conn, name))
        log.info("queue %s paused", name)

    def resume_queue(self, name: str) -> bool:
        """Resume a paused queue, and wake the supervisors to claim its jobs; whether it was
        paused."""
        check_queue(name)

        def work(conn: Connection) -> bool:
            resumed = queue_queries.resume(conn, name)
            if resumed:
                queries.notify(conn, "ready")
            return resumed

        resumed = self.run(work)
        if resumed:
            log.info("queue %s resumed", name)
        return resumed

    def list_queues(self, *, lease: float = DEFAULT_LEASE) -> list[QueueInfo]:
        """Every queue that has active jobs, was ever paused, or that a live supervisor names,
        by name: its jobs by state, whether it is paused, the live supervisors serving it, and
        the agents of its pending jobs that none of them has. A supervisor is live while its
        heartbeat is younger than its own lease (`lease` for one that registered none)."""

        def read(conn: Connection) -> tuple[Any, ...]:
            return (
                queue_queries.by_queue(conn),
                queue_queries.paused_queues(conn),
                queue_queries.pending_agents(conn),
            )

        counts, paused, waiting = self.run(read)
        live = self.live_supervisors(lease=lease)
        names = {row["queue"] for row in counts} | set(paused)
        names |= {name for worker in live for name in worker["queues"] or ()}
        found: dict[str, dict[str, Any]] = {name: {"name": name} for name in sorted(names)}
        for row in counts:
            found[row["queue"]][row["kind"]] = row["jobs"]
        for name in paused:
            found[name]["paused"] = True
        for name, entry in found.items():
            serving = [w for w in live if _serves_queue(w, name)]
            entry["supervisors"] = tuple(w["id"] for w in serving)
            agents = {row["agent"] for row in waiting if row["queue"] == name}
            entry["unserved_agents"] = tuple(
                sorted(a for a in agents if not any(_serves_agent(w, a) for w in serving))
            )
        return [QueueInfo(**entry) for entry in found.values()]

    def live_supervisors(self, *, lease: float = DEFAULT_LEASE) -> list[dict[str, Any]]:
        """The registered supervisors whose heartbeat is younger than their own lease (`lease`
        for one that registered none), as `SupervisorPort.list_workers` gives them."""
        return [
            worker
            for worker in self.port.list_workers()
            if live(worker["heartbeat_age"], worker["lease_seconds"], lease)
        ]

    def unserved_agent(self, job: Job, *, lease: float = DEFAULT_LEASE) -> str | None:
        """The agent of a pending agent job when no live supervisor that serves the job's
        queue has it (the job waits for one); else None."""
        if job.status is not JobStatus.PENDING or job.job_type is not JobType.AGENT:
            return None
        agent = job.payload.get("agent_name")
        if not isinstance(agent, str):
            return None
        live = self.live_supervisors(lease=lease)
        if any(_serves_queue(w, job.queue) and _serves_agent(w, agent) for w in live):
            return None
        return agent

    def cleanup_old_history(self, days: float = 30, *, batch_size: int = CLEANUP_BATCH) -> int:
        """Delete history entries completed more than `days` ago; returns how many. They go
        `batch_size` at a time, a transaction each (`cleanup_history_batch`): a purge of
        millions holds no lock for long, and no statement of it outlasts a supervisor's
        statement timeout."""
        deleted = 0
        while True:
            batch = self.cleanup_history_batch(days, batch_size)
            deleted += batch
            if batch < batch_size:
                break
        log.info("deleted %d history entries older than %s days", deleted, days)
        return deleted

    def cleanup_history_batch(self, days: float, batch_size: int = CLEANUP_BATCH) -> int:
        """Delete up to `batch_size` of the history entries completed more than `days` ago,
        oldest first, in one transaction; returns how many (fewer: none is left)."""
        if (
            isinstance(days, bool)
            or not isinstance(days, int | float)
            or not 0 <= days <= MAX_RETENTION_DAYS
        ):
            raise InvalidJob(f"days must be a number from 0 to {MAX_RETENTION_DAYS}, got {days!r}")
        whole_number(batch_size, "batch_size", 1, BIGINT_RANGE[1])
        return self.port.delete_history_before(days, batch_size)

    # -- what a supervisor drives ----------------------------------------------------------

    def list_agents(self, lease: float | None = None) -> list[dict[str, Any]]:
        """The live fleet's agent catalogue: each agent a live supervisor has, by name, as
        `{"name", "inputs", "outputs", "queue", "supervisors"}` (`supervisors`: the ids of the
        live supervisors that serve it). Live as `taiat supervisors` judges it: a heartbeat
        younger than the supervisor's own lease, or than `lease` (default 30 s) for one that
        registered none."""
        return self.port.live_agents(lease)

    def claim_jobs(self, worker_id: str, limit: int = 1) -> list[Job]:
        """Atomically mark up to `limit` ready jobs running for `worker_id`, best first."""
        return self.port.claim(worker_id, limit).jobs

    def complete_job(
        self, job_id: str, claim_seq: int, result: Any = None, attempt: Attempt | None = None
    ) -> bool:
        """Record that this claim of the job succeeded; False when the claim is no longer
        current (cancelled, taken back), and then nothing changes."""
        return self.port.complete(job_id, claim_seq, result, attempt)

    def complete_and_claim(
        self, completions: Sequence[Completion], worker_id: str, limit: int
    ) -> tuple[set[str], list[Job]]:
        """Record several successes and claim up to `limit` ready jobs, in one transaction.
        Returns the ids recorded (the rest were stale) and the jobs claimed."""
        done, claimed = self.port.settle(completions, worker_id, limit)
        return done, claimed.jobs

    def fail_job(
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
        return self.port.fail(job_id, claim_seq, error, attempt, retry=retry)

    def expand_query(
        self,
        job_id: str,
        claim_seq: int,
        plan: Mapping[str, Any],
        attempt: Attempt | None = None,
    ) -> list[str] | None:
        """Record that this claim of a query job planned it: create the plan's agent jobs and
        make the query wait for them. Their ids; None when the claim is stale. A plan that
        cannot be created fails the query for good (and gives no ids)."""
        return self.port.expand(job_id, claim_seq, plan, attempt)

    def requeue_job(self, job_id: str, claim_seq: int, attempt: Attempt | None = None) -> bool:
        """Put this claim's job back to pending at once, no retry spent (a shutdown cut it
        short); False when the claim is stale."""
        return self.port.requeue(job_id, claim_seq, attempt)

    def record_attempt(self, attempt: Attempt) -> None:
        """Record a run whose job has moved on (cancelled, taken back): no state changes."""
        self.port.record_attempt(attempt)

    def current_claims(self, claims: Mapping[str, int]) -> set[str]:
        """Those of the jobs (id -> claim_seq) whose claim is still the running one."""
        return self.port.current_claims(claims)

    def pending_count(self) -> int:
        """Pending jobs, ready or not (a retry waiting out its backoff counts)."""
        return self.port.pending_count()


def _find(conn: Connection, job_id: str) -> Job | None:
    row = queries.get_active(conn, job_id)
    if row is not None:
        return Job.from_row(row)
    entry = queries.latest_history(conn, job_id)
    return None if entry is None else Job.from_history(JobHistoryEntry.from_row(entry))


def _id(job_id: str) -> None:
    """A job id to look up: text the database can hold (on SQLite a NUL or a lone surrogate
    would just find nothing; PostgreSQL refuses them), so both databases answer alike."""
    if isinstance(job_id, str):
        check_text(job_id, "job id")


def _name(pattern: str | None) -> None:
    if pattern is not None:
        check_text(pattern, "name pattern")


def _serves_queue(worker: Mapping[str, Any], queue: str) -> bool:
    """Whether the supervisor of a registration claims jobs of `queue` (NULL: every queue)."""
    return worker["queues"] is None or queue in worker["queues"]


def _serves_agent(worker: Mapping[str, Any], agent: str) -> bool:
    """Whether the supervisor of a registration has `agent` (NULL: every agent name)."""
    return worker["agents"] is None or agent in worker["agents"]


def _queue(queue: str | None) -> None:
    if queue is not None:
        check_queue(queue)


def _limit(limit: int | None) -> None:
    if limit is not None:
        whole_number(limit, "limit", 0, BIGINT_RANGE[1])


def _status(status: JobStatus | str | None) -> JobStatus | None:
    if status is None or isinstance(status, JobStatus):
        return status
    try:
        return JobStatus(str(status).lower())
    except ValueError:
        known = ", ".join(s.value for s in JobStatus)
        raise InvalidJob(f"unknown status {status!r}: use one of {known}") from None


def _value(status: JobStatus | None) -> str | None:
    return None if status is None else status.value
