"""Enqueueing: `create_job` one call per job, and `create_jobs` in bulk (one dict repeated, and a
dict each); the median of 3 rounds, and PgQueuer's in the same run when the peers are set up
(`bench.peers`)."""

from __future__ import annotations

import statistics
import time
from typing import Any

from bench import peers
from bench.common import DATABASES, NOOP, fresh_database, manager


def one_by_one(url: str, count: int) -> float:
    jobs = manager(url)
    jobs.create_job(**NOOP)  # the first call checks the schema version; keep it out
    try:
        started = time.perf_counter()
        for _ in range(count):
            jobs.create_job(**NOOP)
        return time.perf_counter() - started
    finally:
        jobs.engine.dispose()


def in_bulk(url: str, count: int, batch: int, *, distinct: bool = False) -> float:
    """`create_jobs` of `count` jobs, `batch` at a time: one dict repeated (which is checked
    once a batch), or with `distinct` a dict of its own a job, made before the clock starts."""
    jobs = manager(url)
    jobs.create_job(**NOOP)
    sizes = [min(batch, count - first) for first in range(0, count, batch)]
    if distinct:
        batches = [
            [{**NOOP, "payload": {**NOOP["payload"], "n": n}} for n in range(size)]
            for size in sizes
        ]
    else:
        batches = [[NOOP] * size for size in sizes]
    try:
        started = time.perf_counter()
        for items in batches:
            jobs.create_jobs(items)
        return time.perf_counter() - started
    finally:
        jobs.engine.dispose()


def run(quick: bool = False) -> list[dict[str, Any]]:
    single = 300 if quick else 2000
    bulk, batch = (10_000, 10_000) if quick else (50_000, 10_000)
    rounds = 1 if quick else 3
    # PgQueuer's in the same run, when the peers are set up: its `enqueue()` loop against our
    # `create_job`, its list enqueue of one batch against our `create_jobs` of the same size.
    peer = peers.pgqueuer_enqueue(single, batch, rounds)
    rows = []
    for kind, label in DATABASES.items():
        timings: dict[str, list[float]] = {"loop": [], "bulk": [], "distinct": []}
        for _ in range(rounds):  # a fresh database each round: no round on another's rows
            with fresh_database(kind) as url:
                timings["loop"].append(one_by_one(url, single))
                timings["bulk"].append(in_bulk(url, bulk, batch))
                timings["distinct"].append(in_bulk(url, bulk, batch, distinct=True))
        cases = [
            ("create_job, one by one", single, 1, "loop", "loop"),
            ("create_jobs, in bulk", bulk, batch, "bulk", "bulk"),
            # Against the same list enqueue: PgQueuer's has no per-job checks to repeat.
            ("create_jobs, in bulk, a dict each", bulk, batch, "distinct", "bulk"),
        ]
        for method, count, size, key, peer_key in cases:
            seconds = statistics.median(timings[key])
            row: dict[str, Any] = {
                "database": label,
                "method": method,
                "jobs": count,
                "batch": size,
                "seconds": round(seconds, 2),
                "jobs_per_s": round(count / seconds),
            }
            if peer is not None and kind == "postgresql":
                theirs = statistics.median(peer[peer_key])
                row["pgqueuer_jobs_per_s"] = round(theirs)
                row["ratio_to_pgqueuer"] = round(count / seconds / theirs, 2)
            rows.append(row)
    return rows
