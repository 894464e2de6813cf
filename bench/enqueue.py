"""Enqueueing: `create_job` one call per job, and `create_jobs` in bulk."""

from __future__ import annotations

import time
from typing import Any

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


def in_bulk(url: str, count: int, batch: int) -> float:
    jobs = manager(url)
    jobs.create_job(**NOOP)
    try:
        started = time.perf_counter()
        for first in range(0, count, batch):
            jobs.create_jobs([NOOP] * min(batch, count - first))
        return time.perf_counter() - started
    finally:
        jobs.engine.dispose()


def run(quick: bool = False) -> list[dict[str, Any]]:
    single = 300 if quick else 2000
    bulk, batch = (10_000, 10_000) if quick else (50_000, 10_000)
    rows = []
    for kind, label in DATABASES.items():
        with fresh_database(kind) as url:
            cases = [
                ("create_job, one by one", single, 1, one_by_one(url, single)),
                ("create_jobs, in bulk", bulk, batch, in_bulk(url, bulk, batch)),
            ]
        for method, count, size, seconds in cases:
            rows.append(
                {
                    "database": label,
                    "method": method,
                    "jobs": count,
                    "batch": size,
                    "seconds": round(seconds, 2),
                    "jobs_per_s": round(count / seconds),
                }
            )
    return rows
