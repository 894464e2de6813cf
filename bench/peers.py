"""The peers' figures in the same run, for ratios that mean something on a machine whose speed
drifts within hours: when the peers' scripts (`../shared/peers/`, or `TAIAT_PEERS_DIR`) have
been set up (their `setup.sh`: a venv at `PEERS_VENV`, /tmp/peersenv by default), their own
functions are run in their venv, against the same PostgreSQL over the same TCP connection as
ours (`PEERS_PG_HOST=127.0.0.1`). They are not a dependency of the project: without them, no
peer figure is printed."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

#: PgQueuer's enqueue rates by its script's `enqueue`: an `enqueue()` loop of `single` jobs,
#: and one list enqueue of `bulk`; the best of `rounds`, each on an emptied queue.
_PGQUEUER_ENQUEUE = """
import asyncio, json, sys
import bench_pgqueuer as b
single, bulk, rounds = (int(a) for a in sys.argv[1:4])
b.setup()
rates = {"loop": [], "bulk": []}
for _ in range(rounds):
    b.clear()
    rates["loop"].append(asyncio.run(b.enqueue(single, bulk=False)))
    b.clear()
    rates["bulk"].append(asyncio.run(b.enqueue(bulk, bulk=True)))
print(json.dumps(rates))
"""


#: PgQueuer's enqueue-to-start latencies (ms) by its script's `latency_once`: an idle worker
#: woken by LISTEN/NOTIFY, `samples` jobs one at a time, each carrying its enqueue time.
_PGQUEUER_LATENCY = """
import json, sys
import bench_pgqueuer as b
b.setup()
print(json.dumps(b.latency_once(int(sys.argv[1]))))
"""


#: The peers' drains of `jobs` no-op jobs at 2 at once, `repeats` times each, by their scripts'
#: `drain_once`, each run's figures as their `common.drain_stats` gives them: PgQueuer with
#: `concurrency_limit=2` (at most 300 jobs: it runs a few tens a second, see their README) and
#: without a limit (batches of 10), procrastinate `--concurrency 2`, and RQ's forking `Worker`
#: in 2 processes. A system whose run fails is left out, and said on stderr.
_DRAINS = """
import asyncio, json, sys, traceback
jobs, repeats = (int(a) for a in sys.argv[1:3])
out = {}

def pgqueuer():
    import bench_pgqueuer as b
    b.setup()
    out["PgQueuer, concurrency_limit=2"] = [b.drain_once(min(jobs, 300), 2) for _ in range(repeats)]
    out["PgQueuer, no limit (batches of 10)"] = [b.drain_once(jobs, 0) for _ in range(repeats)]

def procrastinate():
    import bench_procrastinate as b
    b.recreate_db()
    asyncio.run(b.with_app(b.app.schema_manager.apply_schema_async()))
    out["procrastinate, --concurrency 2"] = [b.drain_once(jobs, 2) for _ in range(repeats)]

def rq():
    from redis import Redis
    from rq import Queue
    import bench_rq as b
    q = Queue(b.QNAME, connection=Redis.from_url(b.URL))
    out["RQ, Worker x 2"] = [b.drain_once(q, jobs, "Worker", 2) for _ in range(repeats)]

for system in (pgqueuer, procrastinate, rq):
    try:
        system()
    except Exception:
        traceback.print_exc()
print(json.dumps(out))
"""

#: RQ's forking `Worker` against the same worker holding the heavy agents module
#: (`bench.rq_heavy.HeavyWorker`), by their script's `drain_once` (`jobs` jobs, 2 worker
#: processes; the two in turns, `repeats` times) and `latency_once` (an idle worker, `samples`
#: jobs one at a time).
_RQ_HEAVY = """
import json, sys
from redis import Redis
from rq import Queue
import bench_rq as b
jobs, repeats, samples = (int(a) for a in sys.argv[1:4])
b.WORKERS["HeavyWorker"] = "bench.rq_heavy.HeavyWorker"
q = Queue(b.QNAME, connection=Redis.from_url(b.URL))
out = {"drain": {"Worker": [], "HeavyWorker": []}, "latency": {}}
for _ in range(repeats):
    for cls in out["drain"]:
        out["drain"][cls].append(b.drain_once(q, jobs, cls, 2))
for cls in out["drain"]:
    out["latency"][cls] = b.latency_once(q, cls, samples)
q.connection.flushdb()
print(json.dumps(out))
"""


def _python() -> Path:
    """The peers' venv's Python."""
    return Path(os.environ.get("PEERS_VENV", "/tmp/peersenv")) / "bin" / "python"


def folder() -> Path | None:
    """The peers' scripts, or None when they (or their venv) are not set up."""
    peers = Path(os.environ.get("TAIAT_PEERS_DIR", ROOT.parent / "shared" / "peers"))
    if (peers / "bench_pgqueuer.py").is_file() and _python().is_file():
        return peers
    return None


def pgqueuer_enqueue(single: int, bulk: int, rounds: int = 3) -> dict[str, list[float]] | None:
    """PgQueuer's enqueue rates (jobs/s; "loop" and "bulk", one per round), or None when the
    peers are not set up or their run failed (said on stdout)."""
    return _run(_PGQUEUER_ENQUEUE, "PgQueuer's enqueue", single, bulk, rounds)


def pgqueuer_latency(samples: int) -> list[float] | None:
    """PgQueuer's enqueue-to-start latencies (seconds), or None when the peers are not set up
    or their run failed (said on stdout)."""
    found = _run(_PGQUEUER_LATENCY, "PgQueuer's latency", samples)
    return None if found is None else [ms / 1000 for ms in found]


def drains(jobs: int, repeats: int = 1) -> dict[str, list[dict[str, float]]] | None:
    """The peers' drains at 2 at once (see `_DRAINS`): mode -> each run's figures, among them
    `steady_jobs_s`, (jobs - 1) / (the first job's start to the last one's start). None when
    the peers are not set up or their run failed (said on stdout)."""
    return _run(_DRAINS, "drains", jobs, repeats)


def rq_heavy(jobs: int, repeats: int, samples: int) -> dict[str, Any] | None:
    """RQ's forking worker, light and holding the heavy agents module (see `_RQ_HEAVY`):
    {"drain": {class: [run's figures]}, "latency": {class: [ms]}}, or None when the peers are
    not set up or their run failed (said on stdout). The peers' venv needs numpy."""
    return _run(_RQ_HEAVY, "RQ with the heavy agents module", jobs, repeats, samples)


def _run(script: str, what: str, *args: int) -> Any:
    """`script`'s last line of output, as JSON, run in the peers' venv and folder."""
    peers = folder()
    if peers is None:
        return None
    env = {
        **os.environ,
        "PEERS_PG_HOST": os.environ.get("PEERS_PG_HOST", "127.0.0.1"),
        # For the modules of ours that their workers load (`bench.rq_heavy`).
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [str(_python()), "-c", script, *map(str, args)],
        cwd=peers,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if done.returncode != 0 or done.stderr.strip():
        print(f"  ({what}: {done.stderr.strip()[-500:]})")
    if done.returncode != 0:
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])
