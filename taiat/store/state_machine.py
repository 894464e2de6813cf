"""The job state machine: every transition, inside the caller's transaction.

    create -> pending --claim--> running --complete--> completed (history)
                 ^                  |  \\--fail, retries left--> pending (run_at = backoff)
                 |                  |   \\--fail, none left----> failed (history)
                 +----requeue-------+
    cancel: pending or running -> cancelled (history)
    failed or cancelled: every pending dependent -> cancelled (history), transitively
    retry_job: failed or cancelled (history) -> pending
    a query job's plan (see `taiat.store.plans`): its goal's agent completes -> the query completes;
    an agent fails for good -> the query fails; the query ends -> its plan's agents cancelled

A transition on a running job names the claim it belongs to (`claim_seq`); when that claim is no
longer the current one (the job was cancelled, requeued or taken back) the write is refused.

Lock order: a transition on an agent job of a plan (complete, fail, cancel) locks the plan's
query before the agent (`lock_queries`), as cancelling the query does; so two transitions on
one plan wait for each other instead of deadlocking, and rows of one level lock in id order.
"""

from __future__ import annotations

import json
import random
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import RowMapping
from sqlalchemy.engine import Connection, Engine

from taiat.errors import DuplicateJob, InvalidDependency, InvalidTransition, JobNotFound
from taiat.jobs import Attempt, AttemptOutput, Job, JobStatus, JobType, Outcome
from taiat.query_plans import EXPANSION_KEYS
from taiat.store import queries
from taiat.store.queries import plans as plan_queries
from taiat.store.validation import JobSpec, JsonText, clean_text, json_text, new_job_id

#: Attempt outcomes that mean the job died hard: killed by a signal it did not ask for
#: (CRASHED with a signal), by the memory limit, or with its supervisor (LOST).
CRASH_OUTCOMES = frozenset({Outcome.CRASHED, Outcome.MEMORY, Outcome.LOST})


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter: attempt n waits between half and all of base * 2**n.

    A job whose last `quarantine_after` attempts all crashed fails for good, retries or not.
    """

    base_delay: float = 1.0
    max_delay: float = 300.0
    quarantine_after: int = 3

    def delay(self, retry_count: int) -> float:
        ceiling = min(self.max_delay, self.base_delay * 2.0 ** min(retry_count, 30))
        return ceiling / 2 + random.uniform(0, ceiling / 2)


def history_entry(
    row: Mapping[Any, Any],
    status: JobStatus,
    now: datetime,
    *,
    error: str | None = None,
    result: Any = None,
) -> dict[str, Any]:
    started = row["started_at"]
    return {
        "id": new_job_id(),
        "job_id": row["id"],
        **{name: row[name] for name in queries.CARRIED},
        "status": status.value,
        "error_message": error,
        "result": result,
        "started_at": started,
        "completed_at": now,
        "duration_seconds": None if started is None else int((now - started).total_seconds()),
        "created_at": now,
        "job_created_at": row["created_at"],
    }


# -- creating ------------------------------------------------------------------------------


def create(conn: Connection, specs: Sequence[JobSpec], chosen_ids: set[str]) -> list[Job]:
    """Insert checked jobs with their edges; returns them as stored, in order. (One job with
    no dependency and an id of ours is one statement on PostgreSQL: `create_ready`.)"""
    taken = queries.known_ids(conn, chosen_ids)
    if taken:
        raise DuplicateJob(f"job id {sorted(taken)[0]} is already taken")
    if any(spec.dependencies for spec in specs):
        unmet = _unmet_dependencies(conn, specs, chosen_ids)
        counts = [len(unmet[spec.id]) for spec in specs]
    else:
        unmet, counts = {}, [0] * len(specs)
    now = queries.db_now(conn, notify_payload="ready" if 0 in counts else None)
    jobs: list[Job] = []

    def build(positions: range) -> None:  # while the server stores them
        jobs.extend([specs[at].job(counts[at], now) for at in positions])

    queries.insert_jobs(conn, specs, counts, now, build)
    edges = [
        {"job_id": job_id, "depends_on": dep} for job_id, deps in unmet.items() for dep in deps
    ]
    queries.insert_edges(conn, edges)
    return jobs


def _unmet_dependencies(
    conn: Connection, specs: Sequence[JobSpec], chosen_ids: set[str]
) -> dict[str, list[str]]:
    """Each job's dependencies not yet met (in the batch, or active), by its id; an unknown,
    failed or cancelled dependency is an error (`_active_dependencies`)."""
    batch = {spec.id for spec in specs}
    # The message names the job to be created by what its caller knows it by: its name, and
    # its id only when the caller chose it (a new one's was never created).
    wanted = {
        dep: f"cannot create job {_creating(spec, chosen_ids)}"
        for spec in specs
        for dep in spec.dependencies
        if dep not in batch
    }
    active = _active_dependencies(conn, wanted)
    return {
        spec.id: [dep for dep in spec.dependencies if dep in batch or dep in active]
        for spec in specs
    }


def create_ready(engine: Engine, spec: JobSpec) -> Job:
    """Insert one job that `in_one_statement` takes on PostgreSQL, in one statement on its own
    (`queries.insert_ready_job`); returns it as stored."""
    now = queries.insert_ready_job(
        engine,
        {
            "id": spec.id,
            "job_type": spec.job_type.value,
            "name": spec.name,
            "description": spec.description,
            "payload": spec.payload_json,
            "dependencies": "[]",
            "max_retries": spec.max_retries,
            "priority": spec.priority,
            "timeout_seconds": spec.timeout_seconds,
            "run_at": spec.run_at,
            "queue": spec.queue,
            "agent": spec.agent,
            "limit_keys": json.dumps(spec.limit_keys) if spec.limit_keys else "[]",
        },
    )
    return spec.job(0, now)


def in_one_statement(specs: Sequence[JobSpec], chosen_ids: Collection[str]) -> bool:
    """Whether `create` inserts these jobs in one statement (on PostgreSQL): one job, with no
    dependency to check and lock, and an id that no job can have taken (a new one of ours)."""
    return len(specs) == 1 and not specs[0].dependencies and not chosen_ids


def _active_dependencies(
    conn: Connection, wanted: Mapping[str, str], *, missing_ok: bool = False
) -> set[str]:
    """Those of the dependencies not yet finished, locked against finishing until we commit.

    A completed one counts as met; an unknown, failed or cancelled one is an error (an unknown
    one is met when `missing_ok`: a retried job's dependency whose history was cleaned up).
    `wanted` maps each dependency to what was asked of a job that needs it ("cannot create job
    'train'"), which the message begins with; the message then names the dependency.
    """
    active = queries.lock_active(conn, wanted.keys())
    finished = queries.latest_history_status(conn, wanted.keys() - active.keys())
    for dep in sorted(wanted.keys() - active.keys()):
        status = finished.get(dep)
        if status is None and missing_ok:
            continue
        if status is None:
            raise InvalidDependency(
                f"{wanted[dep]}: its dependency {dep} does not exist (no job has that id)"
            )
        if status != JobStatus.COMPLETED.value:
            raise InvalidDependency(
                f"{wanted[dep]}: its dependency {dep} {_verb(status)} and can never "
                f"complete: retry it first"
            )
    return set(active)


def _creating(spec: JobSpec, chosen_ids: Collection[str]) -> str:
    """The job `spec` would create, as its caller knows it: 'train', or a-2 ('train') when the
    caller chose its id."""
    name = repr(spec.name)
    return f"{spec.id} ({name})" if spec.id in chosen_ids else name


# -- finishing -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Completion:
    """A claim's success, to record: its result and the attempt's record."""

    job_id: str
    claim_seq: int
    result: Any = None
    attempt: Attempt | None = None
    #: Whether the job is an agent of a query's plan (its payload names a `query_job`); None
    #: when not known. Only those that may be have their queries locked first.
    in_plan: bool | None = None


def complete(conn: Connection, completions: Sequence[Completion]) -> tuple[set[str], list[str]]:
    """Record successes, several in one go: returns the ids recorded (the others' claims were
    stale, and nothing changed for them) and the dependents that became ready."""
    lock_queries(conn, [c.job_id for c in completions if c.in_plan is not False])
    results = {c.job_id: c.result for c in completions}
    claims = {c.job_id: c.claim_seq for c in completions}
    recorded, outputs = attempt_rows([c.attempt for c in completions])
    rows = _move_completed(conn, claims, results, recorded)
    queries.save_output(conn, outputs)
    done = {row["id"] for row in rows}
    ready = queries.release_dependents(conn, done)
    queries_done, also_ready = complete_queries(conn, rows, results)
    if queries_done:
        ready = [job_id for job_id in ready if job_id not in queries_done] + also_ready
    if ready:
        queries.notify(conn, "ready")
    return done, ready


def _move_completed(
    conn: Connection,
    claims: Mapping[str, int],
    results: Mapping[str, Any],
    recorded: Sequence[Mapping[str, Any]] = (),
) -> list[RowMapping]:
    """Take the jobs (id -> claim_seq) whose claim is still the running one, and write their
    history entries with their results; record the attempts `recorded` (rows as
    `attempt_rows` makes them), on PostgreSQL in the same statement (a round trip less on the
    hot path). Their rows give at least `id`, `now` and, for a query's goal-producing agent,
    `payload`: what `complete_queries` reads."""
    if queries.completes_in_one_statement(conn):
        completed = [
            {
                "job_id": job_id,
                "claim_seq": claim_seq,
                "history_id": new_job_id(),
                "result": json_text(results[job_id], "the result"),
            }
            for job_id, claim_seq in claims.items()
        ]
        return queries.complete_running(conn, completed, recorded)
    queries.insert_attempts(conn, recorded)
    rows = queries.take_running(conn, claims)
    entries = [
        history_entry(row, JobStatus.COMPLETED, row["now"], result=results[row["id"]])
        for row in rows
    ]
    queries.insert_history(conn, entries)
    return rows


def fail(
    conn: Connection,
    job_id: str,
    claim_seq: int,
    error: str,
    attempt: Attempt | None,
    policy: RetryPolicy,
    *,
    retry: bool = True,
) -> JobStatus | None:
    """Record a failed attempt: PENDING when it will be retried, FAILED when it is over for
    good (its dependents cancelled), None when the claim is stale."""
    record_attempt(conn, attempt)
    lock_queries(conn, [job_id])
    row = queries.lock_running(conn, job_id, claim_seq)
    if row is None:
        return None
    crashes = _crashes_in_a_row(conn, job_id, policy.quarantine_after)
    if crashes >= policy.quarantine_after:
        retry = False
        error = f"quarantined: crashed on {crashes} attempts in a row; last: {error}"
    if retry and row["retry_count"] < row["max_retries"]:
        delay = policy.delay(row["retry_count"])
        queries.reschedule(conn, job_id, claim_seq, clean_text(error), delay)
        return JobStatus.PENDING
    now = queries.db_now(conn)
    entry = history_entry(row, JobStatus.FAILED, now, error=clean_text(error))
    queries.move_to_history(conn, [entry])
    agent_failed(conn, row, error, now)
    cancel_dependents(conn, row, JobStatus.FAILED, now)
    return JobStatus.FAILED


def requeue(conn: Connection, job_id: str, claim_seq: int, attempt: Attempt | None) -> bool:
    """Put a running job back to pending without spending a retry; False when stale."""
    record_attempt(conn, attempt)
    requeued = queries.requeue(conn, job_id, claim_seq)
    if requeued:
        queries.notify(conn, "ready")
    return requeued


def give_back(conn: Connection, job_id: str, claim_seq: int) -> bool:
    """Put a claimed job that was never started back to pending without spending a retry,
    taking back the starts its claim counted against its keys' rates; False when stale."""
    given_back = queries.give_back(conn, job_id, claim_seq)
    if given_back:
        queries.notify(conn, "ready")
    return given_back


def cancel(conn: Connection, job_id: str) -> bool:
    """Cancel a pending or running job and its dependents; False if it had already finished."""
    lock_queries(conn, [job_id])
    row = queries.get_active(conn, job_id, lock=True)
    if row is None:
        if queries.latest_history(conn, job_id) is None:
            raise JobNotFound(f"no job has id {job_id}")
        return False
    now = queries.db_now(conn)
    entry = history_entry(row, JobStatus.CANCELLED, now, error="cancelled by request")
    queries.move_to_history(conn, [entry])
    if row["status"] == JobStatus.RUNNING.value:
        queries.notify(conn, f"cancel:{job_id}")
    cancel_agents(conn, row, "its query job was cancelled", now)
    cancel_dependents(conn, row, JobStatus.CANCELLED, now)
    return True


def cancel_dependents(
    conn: Connection, cause: Mapping[Any, Any], outcome: JobStatus, now: datetime
) -> list[str]:
    """Cancel, transitively, every pending job that depends on `cause`, which ended with
    `outcome` (failed or cancelled); each message names the cause and the way it came."""
    why = f"job {cause['id']} ({cause['name']}) {_verb(outcome.value)}"
    cancelled: list[str] = []
    frontier = [cause["id"]]
    while frontier:
        rows = queries.pending_dependents(conn, frontier)
        entries = []
        for row in rows:
            via = row["dependencies"]
            direct = next((dep for dep in via if dep in frontier), cause["id"])
            message = f"cancelled: dependency {why}"
            if direct != cause["id"]:
                message += f" (reached through {direct})"
            entries.append(history_entry(row, JobStatus.CANCELLED, now, error=message))
        queries.move_to_history(conn, entries)
        for row in rows:  # a query cancelled this way takes its plan's agents with it
            cancel_agents(conn, row, f"its query job was cancelled: {why}", now)
        frontier = [row["id"] for row in rows]
        cancelled.extend(frontier)
    return cancelled


def _crashes_in_a_row(conn: Connection, job_id: str, limit: int) -> int:
    count = 0
    for attempt in queries.recent_attempts(conn, job_id, limit):
        died_by_signal = attempt["outcome"] != Outcome.CRASHED or attempt["exit_signal"] is not None
        if attempt["outcome"] not in CRASH_OUTCOMES or not died_by_signal:
            break
        count += 1
    return count


def _verb(status: str) -> str:
    return {"failed": "failed", "cancelled": "was cancelled"}.get(status, status)


def record_attempt(conn: Connection, attempt: Attempt | None) -> None:
    record_attempts(conn, [attempt])


def record_attempts(conn: Connection, attempts: Sequence[Attempt | None]) -> None:
    """Record attempts, and the output of those that wrote any (in place of what was written of
    it while they ran)."""
    rows, outputs = attempt_rows(attempts)
    queries.insert_attempts(conn, rows)
    queries.save_output(conn, outputs)


def attempt_rows(
    attempts: Sequence[Attempt | None],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The rows of `attempts` as `insert_attempts` takes them, and those of their output as
    `save_output` does (of the attempts that wrote any)."""
    rows = []
    outputs = []
    for attempt in attempts:
        if attempt is not None:
            values = dict(vars(attempt))  # its fields are plain values: no deep copy needed
            if values["error_message"]:
                values["error_message"] = clean_text(values["error_message"])
            if values["stack"]:
                values["stack"] = clean_text(values["stack"])
            written = values.pop("output")
            if written is not None and not written.empty:
                outputs.append(output_row(written, final=True))
            rows.append(values)
    return rows, outputs


def output_row(output: AttemptOutput, *, final: bool) -> dict[str, Any]:
    """An attempt's output as `taiat_job_output` takes it."""
    return {
        "job_id": output.job_id,
        "attempt": output.attempt,
        "stdout_tail": output.stdout_tail,
        "stdout_dropped_bytes": output.stdout_dropped_bytes,
        "stderr_tail": output.stderr_tail,
        "stderr_dropped_bytes": output.stderr_dropped_bytes,
        "final": final,
    }


# -- again ---------------------------------------------------------------------------------


def retry(conn: Connection, job_id: str) -> RowMapping:
    """Run a failed or cancelled job again, retries reset; returns its new row. It keeps its
    `created_at`; its last history entry, which it no longer stands for, says when it was
    retried. A query job is planned afresh when it runs."""
    active = queries.get_active(conn, job_id)
    if active is not None:
        raise InvalidTransition(
            f"job {job_id} is {active['status']}: only a failed or cancelled job can be retried"
        )
    row = queries.latest_history(conn, job_id)
    if row is None:
        raise JobNotFound(f"no job has id {job_id}")
    if row["status"] == JobStatus.COMPLETED.value:
        raise InvalidTransition(
            f"job {job_id} completed: only a failed or cancelled job can be retried"
        )
    deps = list(dict.fromkeys(row["dependencies"] or []))
    asking = f"cannot retry job {job_id}"
    unmet = sorted(_active_dependencies(conn, {dep: asking for dep in deps}, missing_ok=True))
    again: Mapping[Any, Any] = row
    if row["job_type"] == JobType.QUERY.value:  # plans afresh: its old plan's agents are over
        again = {**row, "payload": unplanned(row["payload"])}
    pending = queries.make_pending(conn, again, len(unmet))
    queries.note_on_history_entry(conn, row["id"], retried_note(row, pending["updated_at"]))
    queries.insert_edges(conn, [{"job_id": job_id, "depends_on": dep} for dep in unmet])
    if not unmet:
        queries.notify(conn, "ready")
    return pending


def retried_note(entry: Mapping[Any, Any], when: datetime) -> str:
    """A history entry's error message once its job has been retried: when, then what it was."""
    was = entry["error_message"] or f"it {_verb(entry['status'])}"
    return clean_text(f"retried by request at {when:%Y-%m-%d %H:%M:%S} UTC, after: {was}")


# -- the plans of query jobs ----------------------------------------------------------------


def unplanned(payload: Mapping[str, Any] | None) -> dict[str, Any]:
    """The query's payload as it was before any expansion."""
    return {k: v for k, v in (payload or {}).items() if k not in EXPANSION_KEYS}


def lock_queries(conn: Connection, job_ids: Collection[str]) -> None:
    """Before any of the jobs `job_ids` is locked: lock the queries whose plans those of them
    that are agent jobs of a plan belong to."""
    plan_queries.lock_queries_of(conn, job_ids)


def plan_ids(query: Mapping[Any, Any]) -> list[str]:
    """The job ids of the query's plan (none if it was never expanded, or is no query)."""
    if query["job_type"] != JobType.QUERY.value:
        return []
    plan = (query["payload"] or {}).get("plan")
    if not isinstance(plan, list):
        return []
    return [step["job_id"] for step in plan if isinstance(step, dict) and "job_id" in step]


def _waiting_query(conn: Connection, agent: Mapping[Any, Any]) -> Any:
    """The query job this agent job belongs to, locked, if it still waits on its plan."""
    query_id = (agent["payload"] or {}).get("query_job")
    if not isinstance(query_id, str):
        return None
    query = queries.get_active(conn, query_id, lock=True)
    if query is None or query["status"] != JobStatus.PENDING.value:
        return None
    return query if _in_plan(agent, query) else None


def _in_plan(agent: Mapping[Any, Any], query: Mapping[Any, Any]) -> bool:
    """Whether the agent job belongs to the query's current plan: named there, and naming the
    query itself."""
    own = (agent["payload"] or {}).get("query_job") == query["id"]
    return own and agent["id"] in plan_ids(query)


def complete_queries(
    conn: Connection, completed: Sequence[Mapping[Any, Any]], results: Mapping[str, Any]
) -> tuple[set[str], list[str]]:
    """Complete the queries whose goal-producing agent is among the `completed` rows, each
    with the goal output as its result; returns their ids and the jobs that became ready."""
    done: set[str] = set()
    for row in completed:
        goal = (row["payload"] or {}).get("goal_output")
        if goal is None:
            continue
        query = _waiting_query(conn, row)
        if query is None:
            continue
        result = results.get(row["id"])
        if isinstance(result, JsonText):  # the goal output is taken out of it: read it
            result = json.loads(result)
        value = result[goal] if isinstance(result, dict) and goal in result else result
        entry = history_entry(query, JobStatus.COMPLETED, row["now"], result=value)
        queries.move_to_history(conn, [entry])
        done.add(query["id"])
    return done, queries.release_dependents(conn, done)


def agent_failed(conn: Connection, agent: Mapping[Any, Any], error: str, now: datetime) -> None:
    """An agent of a plan failed for good: fail its query with the agent's error, and cancel
    the plan's other agents and the query's dependents."""
    query = _waiting_query(conn, agent)
    if query is None:
        return
    name = (agent["payload"] or {}).get("agent_name")
    message = clean_text(f"agent {name} (job {agent['id']}) failed: {error}")
    entry = history_entry(query, JobStatus.FAILED, now, error=message)
    queries.move_to_history(conn, [entry])
    cancel_agents(conn, query, f"agent {name} of its query failed", now)
    cancel_dependents(conn, query, JobStatus.FAILED, now)


def cancel_agents(conn: Connection, query: Mapping[Any, Any], why: str, now: datetime) -> None:
    """Cancel the query's plan's agents that are still pending or running, and what waits on
    them; running ones are told to stop."""
    rows = [r for r in plan_queries.lock_jobs(conn, plan_ids(query)) if _in_plan(r, query)]
    if not rows:
        return
    message = f"cancelled: {why} (query job {query['id']}, {query['name']})"
    entries = [history_entry(r, JobStatus.CANCELLED, now, error=message) for r in rows]
    queries.move_to_history(conn, entries)
    for row in rows:
        if row["status"] == JobStatus.RUNNING.value:
            queries.notify(conn, f"cancel:{row['id']}")
    for row in rows:
        cancel_dependents(conn, row, JobStatus.CANCELLED, now)
