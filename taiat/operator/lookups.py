"""What the `taiat` command reads beyond `JobManager`'s API: jobs found by name, jobs by id
with their final state, the dependency graph around a job, what runs now, a job's runs with
their output."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection

from taiat.errors import AmbiguousJobId, JobNotFound
from taiat.job_manager import JobManager
from taiat.jobs import Attempt, AttemptOutput, Job, JobHistoryEntry, JobStatus, JobType
from taiat.store import queries
from taiat.store.queries import operator as operator_queries

#: A graph stops growing past this many jobs, so one huge fan-out cannot flood a terminal.
MAX_GRAPH_NODES = 500


def find_jobs(
    manager: JobManager,
    status: JobStatus | None = None,
    *,
    ready: bool = False,
    name: str | None = None,
    queue: str | None = None,
    limit: int | None = 100,
) -> list[Job]:
    """Jobs by status, name pattern and queue, most recently changed first; ready ones
    (pending, dependencies met, `run_at` passed) in claim order."""
    if ready:
        return manager.get_ready_jobs(limit, name=name, queue=queue)
    return manager.list_jobs(status, limit, name=name, queue=queue)


def _by_id(conn: Connection, ids: Collection[str]) -> dict[str, Job]:
    found: dict[str, Job] = {}
    for row in operator_queries.history_by_job_id(conn, ids):
        found[row["job_id"]] = Job.from_history(JobHistoryEntry.from_row(row))  # newest wins
    for row in operator_queries.active_by_id(conn, ids):
        found[row["id"]] = Job.from_row(row)  # active again after a retry: that is its state
    return found


def jobs_by_id(manager: JobManager, ids: Collection[str]) -> dict[str, Job]:
    """Each of `ids` that names a job, in its current state (finished ones from history)."""
    return manager.run(lambda conn: _by_id(conn, ids))


#: The fewest characters a shortened job id may have (the graph pictures show 8).
MIN_PREFIX = 6
#: The most jobs an ambiguous shortened id's error lists.
MAX_CANDIDATES = 10


def resolve_id(manager: JobManager, given: str, *, missing_ok: bool = False) -> str:
    """The id of the one job whose id is `given` or, for `given` of MIN_PREFIX characters or
    more, begins with it. JobNotFound when no job has it (or `given` itself, if
    `missing_ok`); AmbiguousJobId, listing them, when several jobs' ids begin with it."""

    def read(conn: Connection) -> list[str]:
        if len(given) < MIN_PREFIX:
            return sorted(queries.known_ids(conn, [given]))
        return operator_queries.job_ids_from(conn, given, MAX_CANDIDATES + 1)

    found = manager.run(read)
    if given in found:  # a whole id, though others begin with it
        return given
    if len(found) == 1:
        return found[0]
    if not found:
        if missing_ok:
            return given
        short = len(given) < MIN_PREFIX
        hint = f" (a shortened id needs at least {MIN_PREFIX} characters)" if short else ""
        raise JobNotFound(f"no job has id {given}{hint}")
    named = jobs_by_id(manager, found[:MAX_CANDIDATES])
    listed = [
        f"{job_id} ({named[job_id].name}, {named[job_id].status.value})"
        if job_id in named
        else job_id
        for job_id in found[:MAX_CANDIDATES]
    ]
    more = ", and more" if len(found) > MAX_CANDIDATES else ""
    raise AmbiguousJobId(
        f"ambiguous job id {given}: it begins the ids of {', '.join(listed)}{more}; give more "
        "of the id"
    )


@dataclass
class Graph:
    """The jobs around one job: every ancestor and every descendant, and the edges between
    them, each edge `(dependency, dependent)`. `now` is the database's clock."""

    root: str
    jobs: dict[str, Job] = field(default_factory=dict)
    edges: set[tuple[str, str]] = field(default_factory=set)
    #: Ids named as dependencies that no job has any more (history cleaned up).
    missing: set[str] = field(default_factory=set)
    truncated: bool = False
    now: datetime | None = None
    #: The attempts of each job drawn, by job id.
    attempts: dict[str, list[Attempt]] = field(default_factory=dict)

    def dependencies(self, job_id: str) -> list[str]:
        return sorted(dep for dep, job in self.edges if job == job_id)

    def dependents(self, job_id: str) -> list[str]:
        return sorted(job for dep, job in self.edges if dep == job_id)


def graph_around(manager: JobManager, job_id: str) -> Graph | None:
    """The dependency graph around `job_id`, or None if no job has that id."""

    def read(conn: Connection) -> Graph | None:
        graph = Graph(job_id, now=queries.db_now(conn))
        root = _by_id(conn, [job_id])
        if not root:
            return None
        graph.jobs.update(root)
        _walk_up(conn, graph, [job_id])
        _walk_down(conn, graph, [job_id])
        # A graph cut short leaves edges to jobs it does not show.
        drawn = set(graph.jobs) | graph.missing
        graph.edges = {(a, b) for a, b in graph.edges if a in drawn and b in drawn}
        for row in queries.attempts_for(conn, list(graph.jobs)):
            graph.attempts.setdefault(row["job_id"], []).append(Attempt.from_row(row))
        return graph

    return manager.run(read)


def _plan(job: Job) -> list[dict[str, Any]]:
    """The steps of the plan a query job recorded in its payload when it was planned (each
    with its agent job's `job_id` and the ids it runs `after`), the goal's agent last; none for
    another job, or a query not planned (yet, or again since a retry)."""
    plan = job.payload.get("plan") if job.job_type is JobType.QUERY else None
    if not isinstance(plan, list):
        return []
    return [s for s in plan if isinstance(s, dict) and isinstance(s.get("job_id"), str)]


def _edges_into(job: Job) -> list[tuple[str, str]]:
    """The edges `(dependency, dependent)` that end at `job`: its dependencies; for a planned
    query also its plan's, each agent after those it needs, and the query after its goal's
    agent (what it waits for; its own dependencies do not name its agents)."""
    edges = [(dep, job.id) for dep in job.dependencies]
    steps = _plan(job)
    for step in steps:
        after = step.get("after")
        for dep in after if isinstance(after, list) else []:
            if isinstance(dep, str):
                edges.append((dep, step["job_id"]))
    if steps:
        edges.append((steps[-1]["job_id"], job.id))
    return edges


def _walk_up(conn: Connection, graph: Graph, frontier: Iterable[str]) -> None:
    todo = list(frontier)
    while todo:
        wanted: set[str] = set()
        for job_id in todo:
            for edge in _edges_into(graph.jobs[job_id]):
                graph.edges.add(edge)
                wanted |= {end for end in edge if end not in graph.jobs}
        wanted -= graph.missing
        chosen = _room(graph, wanted)
        found = _by_id(conn, chosen)
        graph.missing |= set(chosen) - set(found)
        graph.jobs.update(found)
        todo = list(found)


def _walk_down(conn: Connection, graph: Graph, frontier: Iterable[str]) -> None:
    todo = list(frontier)
    seen = set(todo)
    while todo:
        wanted: set[str] = set()
        for row in operator_queries.dependents_of(conn, todo):
            for dep in row["dependencies"] or []:
                if dep in todo:
                    graph.edges.add((dep, row["id"]))
            if row["id"] not in seen:
                wanted.add(row["id"])
        for query, goal in _queries_of_goals(conn, graph, todo).items():
            graph.edges.add((goal, query))
            if query not in seen:
                wanted.add(query)
        seen |= wanted
        found = _by_id(conn, _room(graph, wanted - set(graph.jobs)))
        graph.jobs.update(found)
        todo = sorted(found)


def _queries_of_goals(conn: Connection, graph: Graph, job_ids: Iterable[str]) -> dict[str, str]:
    """query id -> goal agent's id, for those of the jobs that are the goal's agent of their
    query's current plan: the query waits for it, though its dependencies do not say so."""
    goals = {}
    for job_id in job_ids:
        payload = graph.jobs[job_id].payload
        owner = payload.get("query_job")
        if "goal_output" in payload and isinstance(owner, str):
            goals[owner] = job_id
    known = {**_by_id(conn, goals.keys() - graph.jobs.keys()), **graph.jobs}
    return {
        query: goal
        for query, goal in goals.items()
        if query in known and [s["job_id"] for s in _plan(known[query])][-1:] == [goal]
    }


def _room(graph: Graph, wanted: set[str]) -> list[str]:
    space = MAX_GRAPH_NODES - len(graph.jobs)
    chosen = sorted(wanted)
    if len(chosen) > space:
        graph.truncated = True
        chosen = chosen[: max(space, 0)]
    return chosen


def running_jobs(manager: JobManager) -> list[dict[str, Any]]:
    """The running jobs, each with `elapsed` seconds by the database's clock."""
    rows = manager.run(operator_queries.running_jobs)
    found = []
    for row in rows:
        entry = dict(row)
        started, now = entry.pop("started_at"), entry.pop("now")
        entry["started_at"] = started
        entry["elapsed"] = None if started is None else (now - started).total_seconds()
        found.append(entry)
    return found


def queue_depth(manager: JobManager) -> dict[str, int]:
    """Jobs per status (each job once), and `ready` among the pending ones."""
    counts = {status.value: 0 for status in JobStatus}
    counts.update(manager.count_jobs())
    counts["ready"] = manager.run(operator_queries.count_ready)
    return counts


@dataclass(frozen=True)
class Run:
    """One run of a job: its attempt's record once it has ended (None while it runs), and the
    output it wrote (None if none)."""

    number: int
    attempt: Attempt | None
    output: AttemptOutput | None


def runs(
    manager: JobManager, job_id: str, number: int | None = None
) -> tuple[Job | None, list[Run]]:
    """The job in its current state (None if no job has that id), and its runs (run `number`
    only, if given), oldest first, read together: the ended ones, and the one running."""

    def read(conn: Connection) -> tuple[Job | None, list[Any], list[Any]]:
        job = _by_id(conn, [job_id]).get(job_id)
        found = [row for row in queries.attempts_for(conn, [job_id])]
        if number is not None:
            found = [row for row in found if row["attempt"] == number]
        return job, found, queries.output_for(conn, job_id, number)

    job, attempt_rows, output_rows = manager.run(read)
    attempts = {row["attempt"]: Attempt.from_row(row) for row in attempt_rows}
    outputs = {row["attempt"]: AttemptOutput.from_row(row) for row in output_rows}
    numbers = sorted(set(attempts) | set(outputs))
    return job, [Run(n, attempts.get(n), outputs.get(n)) for n in numbers]
