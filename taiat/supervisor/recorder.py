"""The supervisor's side of the database: finished attempts written in order, held in memory
through an outage and written when the database is back; every call made outage-tolerant."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any, TypeVar

from taiat.errors import (
    DatabaseNotInitialised,
    DatabaseUnavailable,
    InvalidJob,
    SchemaVersionMismatch,
    TransientConflict,
)
from taiat.forking.job_process import MOVED_ON, Ending, JobProcess, unstarted
from taiat.forking.spool import Spool
from taiat.jobs import Attempt, Job, Outcome
from taiat.store.port import Claimed, Completion, SupervisorPort
from taiat.store.validation import JsonText, clean_json, clean_text
from taiat.supervisor import publishing
from taiat.supervisor.large_results import Stored, Storer

log = logging.getLogger(__name__)

T = TypeVar("T")
_FIRST_BACKOFF = 0.5
#: The longest wait between tries to reach the database again (seconds); a supervisor also
#: waits no longer than a tenth of its lease, so that it is back in the database (its heartbeat
#: first) long before its peers could take it for dead.
MAX_BACKOFF = 3.0
#: Not a refusal of one job's ending: a database this supervisor cannot serve, or one busy
#: for a moment (a lock wait cut short), where the ending waits to be written again.
_NOT_REFUSALS = (
    DatabaseUnavailable,
    DatabaseNotInitialised,
    SchemaVersionMismatch,
    TransientConflict,
)


@dataclass(frozen=True)
class Record:
    """A finished attempt waiting to be written."""

    job: Job
    ending: Ending
    #: None for a job given back without being started: there was no attempt.
    attempt: Attempt | None
    #: When it was added (monotonic seconds).
    since: float = field(default_factory=time.monotonic)
    #: A job given back without being started (`Recorder.give_back`): its claim's starts are
    #: taken back out of its keys' rates as it goes back to pending.
    given_back: bool = False


class Recorder:
    """`reconnect` is called first whenever the database may be back after an outage, before
    any other call goes through (the supervisor's heartbeat); `max_backoff` caps the wait
    between tries (seconds)."""

    def __init__(
        self,
        port: SupervisorPort,
        on_change: Callable[[], None],
        *,
        reconnect: Callable[[], None] | None = None,
        max_backoff: float = MAX_BACKOFF,
    ) -> None:
        self.port = port
        self.ok = True
        self.pending: deque[Record] = deque()
        self._on_change = on_change
        self._reconnect = reconnect
        self._retry_at = 0.0
        self._max_backoff = max_backoff
        self._backoff = min(_FIRST_BACKOFF, max_backoff)
        #: Until when writes wait after a transient conflict (monotonic seconds).
        self._conflict_until = 0.0
        #: Successes whose large results are stored by a process of their own.
        self.storer = Storer(port)

    @property
    def retry_at(self) -> float | None:
        """When the database is next tried after an outage, pending writes after a conflict,
        or the next large result's storing process forked after one could not be; None when
        nothing waits."""
        if not self.ok:
            return self._retry_at
        times = []
        if self.pending and self._conflict_until:
            times.append(self._conflict_until)
        if self.storer.queue and not self.storer.busy and self.storer.not_before is not None:
            times.append(self.storer.not_before)
        return min(times) if times else None

    @property
    def unwritten(self) -> list[Record]:
        """Every finished attempt not yet written: waiting, or being stored."""
        return [*self.pending, *self.storer.items()]

    @property
    def oldest(self) -> float | None:
        """When the record waiting longest was added, if any waits."""
        return self.pending[0].since if self.pending else None

    def ready(self) -> bool:
        """Whether the database may be used now. After an outage, once the backoff is over,
        `reconnect` goes first: nothing else is tried until it has gone through."""
        if self.ok:
            return True
        if time.monotonic() < self._retry_at:
            return False
        if self._reconnect is not None:
            try:
                self._reconnect()
            except DatabaseUnavailable as exc:
                self._lost(exc)
                return False
            except TransientConflict as exc:
                log.warning("%s; trying again", exc)
                self._retry_at = time.monotonic() + self._backoff
                return False
            self._back()
        return True

    def call(self, work: Callable[[], T], default: T) -> T:
        """`work()`, or `default` when the database is away (then retried after a backoff),
        or when it gave up on a lock held too long by another transaction."""
        if not self.ready():
            return default
        try:
            value = work()
        except DatabaseUnavailable as exc:
            self._lost(exc)
            return default
        except TransientConflict as exc:
            log.warning("%s; trying again later", exc)
            return default
        self._back()
        return value

    def add(self, record: Record) -> Record:
        """Hold a finished attempt to be written. Every ending passes here, and leaves
        storable (see `storable`); returns the record as it will be written."""
        held = storable(record)
        self.pending.append(held)
        return held

    def give_back(self, job: Job, why: str) -> None:
        """Put a claimed job that was never started back to pending, no retry spent."""
        self.add(Record(job, unstarted(why), None, given_back=True))

    def settle(self, worker_id: str, claim: int) -> Claimed:
        """Write what has finished and claim up to `claim` ready jobs, with their dependency
        results (read in the claim's own transaction). Failures and requeues
        are written one by one; successes all together with the claim, in one transaction
        (and, should the database refuse that, one by one, so that only the one refused
        fails). On an outage, or a conflict, everything is kept for later and nothing is
        claimed."""
        if not self.ready() or time.monotonic() < self._conflict_until:
            return Claimed()
        self._conflict_until = 0.0
        successes: list[Record] = []
        while self.pending:
            record = self.pending.popleft()
            if record.ending.ok and record.ending.plan is None:
                if isinstance(record.ending.result, Spool):  # large: stored on the side
                    self.storer.add(record, _completion(record), record.ending.result)
                else:
                    successes.append(record)
                continue
            try:
                self._write_or_fall_back(record)
            except (DatabaseUnavailable, TransientConflict) as exc:
                return self._hold_back([*successes, record], exc)
        if not successes and not claim:
            self._back()
            return Claimed()
        try:
            done, claimed = self.port.settle([_completion(r) for r in successes], worker_id, claim)
        except (DatabaseUnavailable, TransientConflict) as exc:
            return self._hold_back(successes, exc)
        except _NOT_REFUSALS:
            raise
        except Exception as exc:  # noqa: BLE001 - refused, not away: see below
            if not successes:
                log.error("cannot claim jobs: %s", reason(exc))
                return Claimed()
            log.warning(
                "%d successes refused together (%s); writing each alone",
                len(successes),
                reason(exc),
            )
            return self._settle_alone(successes, worker_id, claim)
        self._back()
        for record in successes:
            if record.job.id not in done:
                _stale(record.job)
        return claimed

    def _hold_back(
        self, records: list[Record], exc: DatabaseUnavailable | TransientConflict
    ) -> Claimed:
        """Keep `records`, in order, first in line for the next try: the database is away
        (tried again after a backoff), or busy for a moment (a conflict). Claims nothing."""
        self.pending.extendleft(reversed(records))
        if isinstance(exc, DatabaseUnavailable):
            self._lost(exc)
        else:
            self._conflicted(exc)
        return Claimed()

    def _settle_alone(self, successes: list[Record], worker_id: str, claim: int) -> Claimed:
        """Write successes one by one (the one the database refuses gets the ending that says
        why), then claim."""
        for index, record in enumerate(successes):
            try:
                self._write_or_fall_back(record)
            except (DatabaseUnavailable, TransientConflict) as exc:
                return self._hold_back(successes[index:], exc)
        try:
            return self.call(lambda: self.port.claim(worker_id, claim), Claimed())
        except _NOT_REFUSALS:
            raise
        except Exception as exc:  # noqa: BLE001 - the endings are written; claim next time
            log.error("cannot claim jobs: %s", reason(exc))
            return Claimed()

    def _write_or_fall_back(self, record: Record) -> None:
        """Write the record; when the database refuses it for good (for anything but an
        outage), write a plain ending in its place that says why, so that a job's ending is
        never lost: a job whose ending is never written would run again and again, no retry
        ever spent. Raises only what is no refusal (`_NOT_REFUSALS`)."""
        try:
            self._write(record)
            return
        except _NOT_REFUSALS:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever it was, the ending must be written
            refusal = exc
        job = record.job
        ending = record.ending
        what = "plan" if ending.plan is not None else "result" if ending.ok else "ending"
        why = clean_text(f"its {what} could not be stored: {reason(refusal)}")
        log.error("job %s (%s): %s", job.id, job.name, why)
        plain = _fallback(record, why)
        # With its attempt's figures, and if even those are refused, without.
        for fallback in (plain, replace(plain, attempt=None)):
            try:
                self._write(fallback)
                return
            except _NOT_REFUSALS:
                raise
            except Exception as exc:  # noqa: BLE001 - the next is plainer still
                refusal = exc
        log.error("job %s (%s): cannot record even that: %s", job.id, job.name, reason(refusal))

    def store(self) -> list[Stored]:
        """Learn how the storing of a large result went, and store the next one (when the
        database is not known to be away); never blocks."""
        stored = self.storer.poll()
        if stored is not None:
            self._stored(stored)
        if self.ready():
            self.storer.start()
        return [] if stored is None else [stored]

    def _stored(self, stored: Stored) -> None:
        record: Record = stored.item
        job = record.job
        if stored.outcome == "outage":
            self._lost(DatabaseUnavailable(stored.words))
            return
        self._back()
        if stored.outcome == "done":
            log.info("job %s (%s): its large result is stored", job.id, job.name)
        elif stored.outcome == "stale":
            _stale(job)
        else:  # refused: a failed attempt, which says why
            log.warning("job %s (%s): result refused: %s", job.id, job.name, stored.words)
            ending = replace(record.ending, ok=False, result=None, error=stored.words)
            ending = replace(ending, cause=Outcome.FAILED)
            attempt = record.attempt
            if attempt is not None:
                attempt = replace(attempt, outcome=Outcome.FAILED, error_message=stored.words)
            self.add(Record(job, ending, attempt))

    def _write(self, record: Record) -> None:
        job, ending, attempt = record.job, record.ending, record.attempt
        outcome: Any
        if record.given_back:
            outcome = self.port.give_back(job.id, job.claim_seq)
            words = "put back to pending"
        elif ending.cause == Outcome.STOPPED:
            outcome = self.port.requeue(job.id, job.claim_seq, attempt)
            words = "put back to pending"
        elif ending.ok and ending.plan is None:
            outcome = self.port.complete(job.id, job.claim_seq, ending.result, attempt)
            words = "completed"
        elif ending.plan is not None:
            created = self.port.expand(job.id, job.claim_seq, ending.plan, attempt)
            outcome = created is not None
            words = f"planned: {len(created or [])} agent jobs created"
        elif ending.cause in MOVED_ON:
            # The job has moved on without this run; only the run itself is left to record.
            if attempt is not None:
                self.port.record_attempt(attempt)
            return
        else:
            outcome = self.port.fail(
                job.id, job.claim_seq, ending.error or ending.cause, attempt, retry=not ending.final
            )
            words = f"recorded, now {getattr(outcome, 'value', outcome)}"
        if not outcome:
            _stale(job)
        else:
            log.info("job %s (%s) %s", job.id, job.name, words)

    def _lost(self, exc: DatabaseUnavailable) -> None:
        if self.ok:
            log.error("database unreachable, holding %d results: %s", len(self.pending), exc)
            publishing.notify("STATUS=database unreachable; jobs keep running")
            self.ok = False
            self._on_change()
        self._retry_at = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, self._max_backoff)

    def _conflicted(self, exc: TransientConflict) -> None:
        """Another transaction held on (a stopped supervisor's, say): writes wait a moment."""
        log.warning("%s; writing again shortly", exc)
        self._conflict_until = time.monotonic() + min(_FIRST_BACKOFF, self._max_backoff)

    def _back(self) -> None:
        if not self.ok:
            log.info("database reachable again; %d results to write", len(self.pending))
            publishing.notify("STATUS=running")
            self.ok = True
            self._on_change()
        self._backoff = min(_FIRST_BACKOFF, self._max_backoff)


def attempt_of(proc: JobProcess, ending: Ending, worker_id: str, host: str) -> Attempt:
    """The record of a child's run, as `taiat_job_attempts` keeps it."""
    return Attempt(
        job_id=proc.job.id,
        attempt=proc.job.claim_seq,
        worker_id=worker_id,
        host=host,
        pid=proc.pid or None,  # none when it never started
        outcome=ending.cause,
        error_message=ending.error,
        started_at=proc.started_at,
        ended_at=proc.started_at + timedelta(seconds=ending.wall_seconds),
        wall_seconds=round(ending.wall_seconds, 6),
        cpu_user_seconds=round(ending.cpu_user_seconds, 6),
        cpu_system_seconds=round(ending.cpu_system_seconds, 6),
        peak_rss_bytes=ending.peak_rss_bytes,
        exit_code=ending.exit_code,
        exit_signal=ending.exit_signal,
        stack=proc.stack_text,
        stragglers_killed=ending.stragglers_killed,
        output=proc.output.snapshot(proc.job.id, proc.job.claim_seq, final=True),
    )


def log_ending(job: Job, ending: Ending) -> None:
    """One log line for a child's end, with its figures."""
    if not log.isEnabledFor(logging.INFO if ending.ok else logging.WARNING):
        return  # on the hot path: no figures formatted for a line nobody reads
    figures = (
        f"{ending.wall_seconds:.3f} s wall, {ending.cpu_user_seconds:.3f} s user, "
        f"{ending.cpu_system_seconds:.3f} s system, "
        f"peak RSS {ending.peak_rss_bytes // 1024} KiB"
    )
    if ending.ok:
        log.info("job %s (%s) completed: %s", job.id, job.name, figures)
    else:
        first_line = (ending.error or "").splitlines()[0] if ending.error else ""
        log.warning("job %s (%s) %s: %s; %s", job.id, job.name, ending.cause, first_line, figures)


def storable(record: Record) -> Record:
    """The record as both databases can store it. Everything in an ending that came from the
    job is untrusted: its error text, with its lone surrogates (a file name from `os.listdir`)
    and NUL characters, is made valid (`clean_text`), and so is every string and key of its
    result or plan, at any depth (`clean_json`); a result or plan that cannot be JSON at all
    makes the attempt a failure that says so."""
    ending, attempt = record.ending, record.attempt
    error = None if ending.error is None else clean_text(str(ending.error))
    try:
        # A large result is still text in its file: the process that stores it checks it. A
        # JsonText was checked as it came off the pipe.
        as_text = isinstance(ending.result, Spool | JsonText)
        result = ending.result if as_text else clean_json(ending.result, "it")
        plan = None if ending.plan is None else clean_json(ending.plan, "it")
    except InvalidJob as exc:
        what = "plan" if ending.plan is not None else "result"
        why = f"its {what} could not be stored: {exc}"
        valid = replace(ending, ok=False, result=None, plan=None, cause=Outcome.FAILED, error=why)
    else:
        if result is ending.result and plan is ending.plan and error == ending.error:
            return record  # the common case: nothing to change
        valid = replace(ending, result=result, plan=plan, error=error)
    if attempt is not None:
        attempt = replace(attempt, outcome=valid.cause, error_message=valid.error)
    return replace(record, ending=valid, attempt=attempt)


def _fallback(record: Record, why: str) -> Record:
    """A plain ending in place of one the database refused: a failure that says `why`, with
    no result; or, for one that was not a failure of the job's, the same with no text."""
    ending, attempt = record.ending, record.attempt
    if ending.cause == Outcome.STOPPED or ending.cause in MOVED_ON:
        plain = replace(ending, error=why)
    else:
        plain = replace(ending, ok=False, result=None, plan=None, cause=Outcome.FAILED, error=why)
    if attempt is not None:
        attempt = replace(attempt, outcome=plain.cause, error_message=why)
    return replace(record, ending=plain, attempt=attempt)


def reason(exc: BaseException) -> str:
    """An exception in one line of words; never raises, whatever the exception holds. (A
    driver's error is given without the statement and parameters around it, which may hold
    the very value it could not take.)"""
    cause = getattr(exc, "orig", None)
    try:
        lines = str(cause if isinstance(cause, BaseException) else exc).strip().splitlines()
    except Exception:  # noqa: BLE001 - e.g. RecursionError showing a value nested too deep
        lines = []
    name = type(cause if isinstance(cause, BaseException) else exc).__name__
    return f"{name}: {lines[0]}" if lines else name


def _completion(record: Record) -> Completion:
    job = record.job
    in_plan = "query_job" in job.payload
    return Completion(job.id, job.claim_seq, record.ending.result, record.attempt, in_plan)


def _stale(job: Job) -> None:
    log.warning(
        "job %s (%s): this claim is no longer current; its ending is not recorded",
        job.id,
        job.name,
    )
