"""Claims with fleet-wide limits: the claim's p50 with 20 limit keys in use and 100k waiting
jobs, against the p50 of the same claims with no limit set, in the same database and run.

The jobs are spread over 20 explicit keys in turn; 10 jobs are claimed first and kept
running, one of each of 10 keys. Then the claims are timed (each claim of one job put back at
once, as in `scale`): with no limit set (the one-statement claim), with a cap of 1 on each of
the 20 keys (half of them full, so the claim passes over their jobs), and with a rate as well
on each key (one that never binds, to time its bookkeeping). The three take turns, in
`ROUNDS` rounds, so that what the claims leave behind in the tables (dead row versions, the
rates' starts) weighs on each alike.
"""

from __future__ import annotations

from typing import Any

from bench.common import DATABASES, NOOP, fresh_database, manager, percentile
from bench.scale import analyse, claim_latency

KEYS = [f"customer:{n}" for n in range(20)]
JOBS = 100_000
BATCH = 20_000
CLAIMS = 300
ROUNDS = 3
#: Each case: its name, and the limit set on each key (None: none).
CASES: tuple[tuple[str, dict[str, Any] | None], ...] = (
    ("no limits", None),
    ("caps", {"concurrency": 1}),
    ("caps and rates", {"concurrency": 1, "rate": "1000000/s"}),
)


def fill(url: str, count: int) -> None:
    jobs = manager(url)
    try:
        made = 0
        while made < count:
            size = min(BATCH, count - made)
            jobs.create_jobs(
                [{**NOOP, "limit_keys": [KEYS[(made + n) % len(KEYS)]]} for n in range(size)]
            )
            made += size
    finally:
        jobs.engine.dispose()


def case(kind: str, count: int, samples: int) -> list[dict[str, Any]]:
    latencies: dict[str, list[float]] = {name: [] for name, _ in CASES}
    with fresh_database(kind) as url:
        fill(url, count)
        jobs = manager(url)
        try:
            # Held running for the whole run: 10 of the keys are full once capped at 1.
            jobs.claim_jobs("bench-holder", len(KEYS) // 2)
            analyse(url)
            for _ in range(ROUNDS):
                for name, limit in CASES:
                    for key in KEYS:
                        if limit is None:
                            jobs.clear_limit(key)
                        else:
                            jobs.set_limit(key, **limit)
                    latencies[name] += claim_latency(url, samples // ROUNDS)
        finally:
            jobs.engine.dispose()
    base = latencies["no limits"]
    rows = []
    for name, _ in CASES[1:]:
        p50 = percentile(latencies[name], 0.5)
        rows.append(
            {
                "database": DATABASES[kind],
                "waiting_jobs": count,
                "limit_keys": len(KEYS),
                "limits": name,
                "claim_p50_ms_no_limits": round(percentile(base, 0.5) * 1000, 2),
                "claim_p99_ms_no_limits": round(percentile(base, 0.99) * 1000, 2),
                "claim_p50_ms_with_limits": round(p50 * 1000, 2),
                "claim_p99_ms_with_limits": round(percentile(latencies[name], 0.99) * 1000, 2),
                "p50_ratio": round(p50 / percentile(base, 0.5), 2),
            }
        )
    return rows


def run(quick: bool = False) -> list[dict[str, Any]]:
    count, samples = (10_000, 100) if quick else (JOBS, CLAIMS)
    rows: list[dict[str, Any]] = []
    for kind in DATABASES:
        rows += case(kind, count, samples)
    return rows
