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
    return _run(_PGQUEUER_ENQUEUE, "enqueue", single, bulk, rounds)


def pgqueuer_latency(samples: int) -> list[float] | None:
    """PgQueuer's enqueue-to-start latencies (seconds), or None when the peers are not set up
    or their run failed (said on stdout)."""
    found = _run(_PGQUEUER_LATENCY, "latency", samples)
    return None if found is None else [ms / 1000 for ms in found]


def _run(script: str, what: str, *args: int) -> Any:
    """`script`'s last line of output, as JSON, run in the peers' venv and folder."""
    peers = folder()
    if peers is None:
        return None
    env = {**os.environ, "PEERS_PG_HOST": os.environ.get("PEERS_PG_HOST", "127.0.0.1")}
    done = subprocess.run(
        [str(_python()), "-c", script, *map(str, args)],
        cwd=peers,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        print(f"  (PgQueuer's {what} failed: {done.stderr.strip()[-500:]})")
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])
