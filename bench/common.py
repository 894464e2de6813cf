"""What every benchmark needs: a fresh database, a supervisor in a subprocess, figures."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import sql

from taiat import JobManager
from taiat.store import db, schema

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get("TAIAT_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
AGENTS = {"noop": "bench.agents:noop", "stamp": "bench.agents:stamp", "big": "bench.agents:big"}
#: `create_job` keywords of the cheapest job there is.
NOOP = {"job_type": "agent", "name": "noop", "payload": {"agent_name": "noop"}}
DATABASES = {"postgresql": "PostgreSQL", "sqlite": "SQLite"}


@contextmanager
def fresh_database(kind: str) -> Iterator[str]:
    """An initialised, empty database of `kind` ("postgresql" or "sqlite"), dropped after."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="taiat-bench-") as folder:
            url = f"sqlite:///{folder}/bench.db"
            _initialise(url)
            yield url
        return
    name = f"taiat_bench_{os.getpid()}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    try:
        _initialise(url)
        yield url
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def _initialise(url: str) -> None:
    engine = db.engine_from_url(url)
    schema.initialise(engine)
    engine.dispose()


def start_supervisor(
    url: str, *args: str, log: Path | None = None, agents: dict[str, str] | None = None
) -> subprocess.Popen:
    """A supervisor of `url` with the options `args`, and the agents `agents` (name ->
    "module:function"; `AGENTS` by default)."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "TAIAT_AGENT_CONFIG": json.dumps(AGENTS if agents is None else agents),
        "TAIAT_LOG_LEVEL": os.environ.get("TAIAT_BENCH_LOG_LEVEL", "WARNING"),
    }
    out = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115 - child keeps it
    return subprocess.Popen(
        [sys.executable, "-m", "taiat.run_worker", "--database-url", url, *args],
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def wait_for(predicate, timeout: float, what: str):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.002)
    return value


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def summary_ms(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(percentile(values, 0.50) * 1000, 2),
        "p99_ms": round(percentile(values, 0.99) * 1000, 2),
        "mean_ms": round(statistics.fmean(values) * 1000, 2),
        "samples": len(values),
    }


def manager(url: str) -> JobManager:
    return JobManager(url)
