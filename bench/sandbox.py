"""What a cgroup per job costs: no-op jobs drained by 1 supervisor with 2 slots on PostgreSQL,
with the sandbox on (`--sandbox cgroup`) and off (`--sandbox none`), in turns within one run;
jobs/s of each (median of the rounds) and their ratio (goal: at least 0.90). Needs a host where
the supervisor can manage cgroups (root, or a delegated cgroup v2 subtree)."""

from __future__ import annotations

import statistics
from typing import Any

from bench.common import fresh_database
from bench.throughput import drain
from taiat.sandbox.detect import detect

#: Drains of each kind, taken in turns (on, off, on, off...): a drift of the machine's load
#: falls on both.
ROUNDS = 5
QUICK_ROUNDS = 2


def run(quick: bool = False) -> list[dict[str, Any]]:
    here = detect("auto")
    here.close()
    if here.kind == "none":
        return [{"case": "skipped", "why": f"no cgroup can be managed here: {here.why}"}]
    jobs, rounds = (300, QUICK_ROUNDS) if quick else (2000, ROUNDS)
    rates: dict[str, list[float]] = {"cgroup": [], "none": []}
    for _ in range(rounds):
        for mode in ("cgroup", "none"):
            with fresh_database("postgresql") as url:
                figures = drain(url, jobs, 1, 2, "--sandbox", mode)
            rates[mode].append(jobs / figures["span"])
    on = statistics.median(rates["cgroup"])
    off = statistics.median(rates["none"])
    return [
        {
            "database": "PostgreSQL",
            "supervisors x slots": "1 x 2",
            "jobs": jobs,
            "rounds": rounds,
            "sandbox": here.kind,
            "jobs/s sandbox": round(on, 1),
            "jobs/s none": round(off, 1),
            "ratio": round(on / off, 3),
            "each sandbox": " ".join(f"{r:.0f}" for r in rates["cgroup"]),
            "each none": " ".join(f"{r:.0f}" for r in rates["none"]),
        }
    ]
