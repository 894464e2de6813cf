"""Draining a queue of no-op jobs: jobs per second of 1 and 2 supervisors with 1, 2 and 4 slots,
against the bare fork loop's ceiling at the same concurrency; and the peers' drains at 2 at
once in the same run (PgQueuer, procrastinate, RQ), with the ratio of ours at 2 at once to
each, when the peers are set up (`bench.peers`)."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import func, select

from bench import peers
from bench.common import DATABASES, NOOP, fresh_database, manager, start_supervisor, stop
from bench.limit import limit_rate
from taiat.store import db, schema

#: (supervisors, slots each)
CASES = [(n, k) for n in (1, 2) for k in (1, 2, 4)]
#: A quick look: serial, 2 at once (as the peers run), and the two ways of running 4 at once.
QUICK_CASES = [(1, 1), (1, 2), (1, 4), (2, 2)]
#: Ours that the peers' drains at 2 at once are set against.
AGAINST_PEERS = ("PostgreSQL", 1, 2)
#: The fork loop runs at most this many children at once (the machine has 2 cores).
MAX_LIMIT_CONCURRENCY = 4
DRAIN_TIMEOUT = 600.0


def drain(
    url: str,
    jobs: int,
    supervisors: int,
    slots: int,
    *more: str,
    agents: dict[str, str] | None = None,
) -> dict[str, float]:
    """Enqueue `jobs` no-op jobs, then time `supervisors` burst-mode supervisors draining them
    (with the options `more`, and the agents `agents`: see `start_supervisor`)."""
    jobs_manager = manager(url)
    jobs_manager.create_jobs([NOOP] * jobs)
    jobs_manager.engine.dispose()
    started = time.monotonic()
    procs = [
        start_supervisor(
            url,
            "--burst",
            "--poll-interval",
            "0.2",
            "--max-concurrent-jobs",
            str(slots),
            *more,
            agents=agents,
        )
        for _ in range(supervisors)
    ]
    try:
        codes = [proc.wait(DRAIN_TIMEOUT) for proc in procs]
    finally:
        for proc in procs:
            stop(proc)
    wall = time.monotonic() - started
    if any(codes):
        raise RuntimeError(f"a supervisor exited with {codes}")
    done, first_start, last_end = _history_span(url)
    if done != jobs:
        raise RuntimeError(f"{done} of {jobs} jobs completed")
    return {"wall": wall, "span": (last_end - first_start).total_seconds()}


def _history_span(url: str) -> tuple[int, Any, Any]:
    """Completed jobs, the first one's start and the last one's end, by the database's clock."""
    engine = db.engine_from_url(url)
    h = schema.history.c
    stmt = select(func.count(), func.min(h.started_at), func.max(h.completed_at)).where(
        h.status == "completed"
    )
    try:
        with db.begin(engine) as conn:
            return tuple(conn.execute(stmt).one())  # type: ignore[return-value]
    finally:
        engine.dispose()


def fork_limits(cases: list[tuple[int, int]], count: int) -> dict[int, float]:
    """The bare fork loop (the goal's yardstick), at each concurrency the cases reach."""
    wanted = sorted({min(n * k, MAX_LIMIT_CONCURRENCY) for n, k in cases})
    return {at_once: limit_rate(at_once, "bare", count) for at_once in wanted}


def run(quick: bool = False) -> list[dict[str, Any]]:
    jobs, cases, forks, repeats = (300, QUICK_CASES, 500, 1) if quick else (2000, CASES, 2000, 3)
    # Before the databases, so that nothing else competes for the cores.
    limits = fork_limits(cases, forks)
    rows = []
    for kind, label in DATABASES.items():
        for supervisors, slots in cases:
            with fresh_database(kind) as url:
                figures = drain(url, jobs, supervisors, slots)
            rate = jobs / figures["span"]
            limit = limits[min(supervisors * slots, MAX_LIMIT_CONCURRENCY)]
            rows.append(
                {
                    "database": label,
                    "supervisors": supervisors,
                    "slots_each": slots,
                    "jobs": jobs,
                    "wall_s_with_startup": round(figures["wall"], 2),
                    "jobs_per_s_first_start_to_last_end": round(rate, 1),
                    "bare_limit_at_same_concurrency": round(limit),
                    "ratio_to_bare_limit": round(rate / limit, 3),
                }
            )
    return rows + _peers(rows, jobs, repeats)


def _peers(ours: list[dict[str, Any]], jobs: int, repeats: int) -> list[dict[str, Any]]:
    """The peers' drains of no-op jobs at 2 at once (the median of `repeats` runs each), with
    the ratio of ours (`AGAINST_PEERS`) to each; none when the peers are not set up."""
    found = peers.drains(jobs, repeats)
    if not found:
        return []
    database, supervisors, slots = AGAINST_PEERS
    mine = next(
        row["jobs_per_s_first_start_to_last_end"]
        for row in ours
        if (row["database"], row["supervisors"], row["slots_each"]) == AGAINST_PEERS
    )
    rows = []
    for mode, runs in found.items():
        run = sorted(runs, key=lambda r: r["steady_jobs_s"])[len(runs) // 2]
        rate = run["steady_jobs_s"]
        rows.append(
            {
                "database": "Redis" if mode.startswith("RQ") else "PostgreSQL",
                "peer": f"{mode} (its own script)",
                # PgQueuer with a limit drains fewer: their figures give the count back.
                "jobs": round(run["jobs_s"] * run["wall_s"]),
                "wall_s_with_startup": round(run["wall_s"], 2),
                "jobs_per_s_first_to_last_start": round(rate, 1),
                f"ratio_ours_{database}_{supervisors}x{slots}_to_peer": round(mine / rate, 2),
            }
        )
    return rows
