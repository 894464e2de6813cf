"""A big queue: claim latency with 1k, 100k and 1M waiting jobs, and a 10,000-job DAG.

Half the waiting jobs are ready; the other half are blocked behind one pending job whose
`run_at` is in 2100, so it never runs. The queue grows in one database from size to size.
Each claim is put back at once (`requeue_job`), so the queue does not shrink as it is measured.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Integer, String, case, cast, func, insert, literal, select, text
from sqlalchemy.dialects.postgresql import UUID

from bench.common import (
    DATABASES,
    NOOP,
    fresh_database,
    manager,
    percentile,
    start_supervisor,
    stop,
)
from taiat.store import db, schema

BLOCKER = "scale-blocker"
NEVER = datetime(2100, 1, 1)
BLOCKED = {**NOOP, "dependencies": [BLOCKER]}
API_BATCH = 20_000
#: Beyond this many jobs the queue is filled with one INSERT ... SELECT (PostgreSQL only).
API_FILL_UP_TO = 100_000
CLAIMS = 200
WARM_UP_CLAIMS = 10
WORKER_ID = "bench-scale"
DAG_TIMEOUT = 900.0


def fill_with_api(url: str, have: int, want: int) -> None:
    """Grow the queue from `have` to `want` waiting jobs with `create_jobs`, half of each
    batch ready and half blocked."""
    jobs = manager(url)
    try:
        while have < want:
            size = min(API_BATCH, want - have)
            jobs.create_jobs([NOOP, BLOCKED] * (size // 2))
            have += size // 2 * 2
    finally:
        jobs.engine.dispose()


def fill_with_sql(url: str, have: int, want: int) -> None:
    """Grow the queue from `have` to `want` waiting jobs in one INSERT ... SELECT
    generate_series, rows shaped as `create_jobs` would write them (PostgreSQL only)."""
    count = want - have
    series = func.generate_series(1, count).table_valued("i").render_derived()
    i = series.c.i
    job_id = cast(cast(func.md5(func.concat("scale-", have, "-", i)), UUID), String)
    blocked = i % 2 == 0
    # Oldest first, one microsecond apart, the last one created now: as if enqueued in order.
    created = schema.utcnow((literal(count) - i) * -1e-6)
    rows = select(
        job_id,
        literal(NOOP["job_type"]),
        literal(NOOP["name"]),
        literal(NOOP["payload"], schema.JsonType),
        case((blocked, literal([BLOCKER], schema.JsonType)), else_=literal([], schema.JsonType)),
        cast(blocked, Integer),
        literal("pending"),
        created,
        created,
        created,
    ).select_from(series)
    columns = ["id", "job_type", "name", "payload", "dependencies", "unmet_dependencies"]
    columns += ["status", "run_at", "created_at", "updated_at"]
    edges = select(job_id, literal(BLOCKER)).select_from(series).where(blocked)
    engine = db.engine_from_url(url)
    try:
        with db.begin(engine) as conn:
            conn.execute(insert(schema.jobs).from_select(columns, rows))
            conn.execute(insert(schema.dependencies).from_select(["job_id", "depends_on"], edges))
    finally:
        engine.dispose()


def analyse(url: str) -> None:
    engine = db.engine_from_url(url)
    try:
        with db.begin(engine) as conn:
            conn.execute(text("ANALYZE"))
    finally:
        engine.dispose()


def claim_latency(url: str, samples: int) -> list[float]:
    """Seconds taken by each of `samples` claims of one job; each is put back at once."""
    jobs = manager(url)
    latencies = []
    try:
        for n in range(WARM_UP_CLAIMS + samples):
            started = time.perf_counter()
            claimed = jobs.claim_jobs(WORKER_ID, 1)
            elapsed = time.perf_counter() - started
            if len(claimed) != 1:
                raise RuntimeError(f"claimed {len(claimed)} jobs, expected 1")
            jobs.requeue_job(claimed[0].id, claimed[0].claim_seq)
            if n >= WARM_UP_CLAIMS:
                latencies.append(elapsed)
        return latencies
    finally:
        jobs.engine.dispose()


def claims(kind: str, sizes: list[int]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with fresh_database(kind) as url:
        blocker = manager(url)
        blocker.create_job(**NOOP, run_at=NEVER, id=BLOCKER)
        blocker.engine.dispose()
        have, base = 0, 0.0
        for size in sizes:
            started = time.perf_counter()
            if size <= API_FILL_UP_TO:
                fill_with_api(url, have, size)
                how = "create_jobs"
            else:
                fill_with_sql(url, have, size)
                how = "INSERT ... SELECT"
            analyse(url)
            fill = time.perf_counter() - started
            have = size
            latencies = claim_latency(url, CLAIMS)
            p50 = percentile(latencies, 0.5) * 1000
            base = base or p50
            rows.append(
                {
                    "case": f"claim, {DATABASES[kind]}",
                    "waiting_jobs": size,
                    "filled_by": how,
                    "fill_s": round(fill, 1),
                    "claim_p50_ms": round(p50, 2),
                    "claim_p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
                    "p50_vs_smallest": round(p50 / base, 2),
                }
            )
    return rows


def dag(size: int) -> dict[str, Any]:
    """One root, `size - 2` jobs that need it, and one final job that needs all of those,
    run by one supervisor with 2 slots (PostgreSQL)."""
    root = str(uuid.uuid4())
    middle = [str(uuid.uuid4()) for _ in range(size - 2)]
    items = [{**NOOP, "id": root}]
    items += [{**NOOP, "id": job_id, "dependencies": [root]} for job_id in middle]
    items += [{**NOOP, "dependencies": middle}]
    with fresh_database("postgresql") as url:
        jobs = manager(url)
        try:
            started = time.perf_counter()
            jobs.create_jobs(items)
            enqueue = time.perf_counter() - started
            started = time.perf_counter()
            sup = start_supervisor(
                url, "--burst", "--poll-interval", "0.2", "--max-concurrent-jobs", "2"
            )
            try:
                code = sup.wait(DAG_TIMEOUT)
            finally:
                stop(sup)
            end_to_end = time.perf_counter() - started
            done = jobs.count_jobs()
        finally:
            jobs.engine.dispose()
    if code != 0 or done != {"completed": size}:
        raise RuntimeError(f"the DAG ended with exit code {code} and jobs {done}")
    return {
        "case": f"DAG of {size:,}, PostgreSQL, 1 supervisor x 2 slots",
        "enqueue_s": round(enqueue, 2),
        "end_to_end_s": round(end_to_end, 1),
        "jobs_per_s": round(size / end_to_end, 1),
    }


def run(quick: bool = False) -> list[dict[str, Any]]:
    sizes = [1_000, 100_000] if quick else [1_000, 100_000, 1_000_000]
    rows = claims("postgresql", sizes)
    rows += claims("sqlite", [1_000, 100_000])
    rows.append(dag(1_000 if quick else 10_000))
    return rows
