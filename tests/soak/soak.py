"""Soak: thousands of jobs, a fifth of them poison, through three supervisors on a PostgreSQL
cluster of the run's own, while supervisors are SIGKILLed and SIGSTOPped and the server goes
away and comes back. Prints what a job manager must never do: lose, strand, record twice or
crash. Not part of the test run (it takes minutes); run it by hand.

Usage:
  soak.py [--jobs N] [--seed N] [--deadline S] [--keep]
  soak.py (-h | --help)

Options:
  --jobs N      Innocent jobs; poison ones are added, one for every five [default: 3000].
  --seed N      Seed of the chaos's choices [default: 1].
  --deadline S  Seconds after which whatever has not ended counts as stuck [default: 900].
  --keep        Keep the run's folder (logs, the cluster's data) and say where it is.
  -h --help     Show this help.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from docopt import docopt

TESTS = Path(__file__).resolve().parent.parent
ACCEPTANCE = TESTS / "acceptance"
sys.path.insert(0, str(TESTS))  # for the private cluster

from private_postgres import PrivateCluster, _bin_dir  # noqa: E402

from taiat import JobManager  # noqa: E402
from taiat.cli.exits import EXIT_DB_UNAVAILABLE  # noqa: E402
from taiat.store import db, schema  # noqa: E402

#: The acceptance tests' agents, which misbehave in every way a job can (tests/acceptance).
AGENTS = [
    "append",
    "undecodable",
    "deep",
    "pipe_writer",
    "segfault",
    "sleep",
    "hog",
    "kill_parent",
    "escape",
]
LEASE = 10
SUPERVISOR_ARGS = [
    "--lease", str(LEASE),
    "--max-concurrent-jobs", "2",
    "--memory-limit", "200",
    "--job-timeout", "20",
    "--poll-interval", "0.5",
    "--kill-grace", "1",
    "--log-level", "INFO",
]  # fmt: skip


def poison_jobs(count: int, out: Path) -> list[dict[str, Any]]:
    """Jobs whose payload, result, error, pipe or process is hostile, in turn."""

    def job(name: str, agent: str, **extra: Any) -> dict[str, Any]:
        params = extra.pop("parameters", {})
        payload = {"agent_name": agent, "parameters": params, **extra.pop("payload", {})}
        return {"job_type": "agent", "name": name, "payload": payload, "max_retries": 0, **extra}

    kinds = [
        lambda i: job(f"huge-limit-{i}", "append", parameters={"path": str(out)},
                      payload={"memory_limit_mb": 1e308}),
        lambda i: job(f"no-timeout-{i}", "append", parameters={"path": str(out)},
                      timeout_seconds=1e12),
        lambda i: job(f"surrogate-result-{i}", "undecodable"),
        lambda i: job(f"surrogate-error-{i}", "undecodable", parameters={"where": "error"}),
        lambda i: job(f"deep-result-{i}", "deep"),
        lambda i: job(f"pipe-garbage-{i}", "pipe_writer", parameters={"body": "[1,2,3]"}),
        lambda i: job(f"segfault-{i}", "segfault"),
        lambda i: job(f"hang-{i}", "sleep", timeout_seconds=1),
        lambda i: job(f"hog-{i}", "hog"),
        lambda i: job(f"kill-parent-{i}", "kill_parent"),
        lambda i: job(f"stop-parent-{i}", "kill_parent",
                      parameters={"signum": int(signal.SIGSTOP)}),
        lambda i: job(f"escape-{i}", "escape", parameters={"pid_file": str(out) + f".{i}.pid",
                                                          "megabytes": 50}),
    ]  # fmt: skip
    return [kinds[i % len(kinds)](i) for i in range(count)]


@dataclass
class Fleet:
    """The supervisors of the run, each a real `taiat-supervisor` process."""

    url: str
    folder: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    #: Supervisors that exited when nobody had signalled them to, other than for a database
    #: away at their start (exit 69, for their service manager to retry): (pid, exit code).
    crashes: list[tuple[int, int]] = field(default_factory=list)
    _killed: set[int] = field(default_factory=set)
    _started: int = 0

    def start(self) -> None:
        self._started += 1
        log = open(self.folder / f"supervisor-{self._started}.log", "wb")  # noqa: SIM115
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ACCEPTANCE), os.environ.get("PYTHONPATH", "")]),
            "TAIAT_AGENT_CONFIG": json.dumps({name: f"agents:{name}" for name in AGENTS}),
        }
        command = [sys.executable, "-m", "taiat.run_worker", "--database-url", self.url]
        self.processes.append(
            subprocess.Popen(
                [*command, *SUPERVISOR_ARGS],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.folder,
            )
        )
        log.close()

    def check(self) -> None:
        """Note the supervisors that exited on their own, and start others in their place."""
        for process in list(self.processes):
            code = process.poll()
            if code is None:
                continue
            self.processes.remove(process)
            if code == EXIT_DB_UNAVAILABLE:
                print(f"  supervisor {process.pid} found the database away at start", flush=True)
            elif process.pid not in self._killed:
                self.crashes.append((process.pid, code))
                print(f"  supervisor {process.pid} exited by itself with {code}", flush=True)
            self.start()

    def kill(self, rng: random.Random) -> None:
        victim = rng.choice(self.processes)
        self._killed.add(victim.pid)
        victim.kill()
        victim.wait()

    def pause(self, rng: random.Random, seconds: float) -> None:
        victim = rng.choice(self.processes)
        victim.send_signal(signal.SIGSTOP)
        time.sleep(seconds)
        victim.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        for process in self.processes:
            self._killed.add(process.pid)
            process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def chaos(fleet: Fleet, cluster: PrivateCluster, rng: random.Random) -> str:
    """One blow: a supervisor SIGKILLed, one SIGSTOPped past the lease or within it, or the
    server away for a while."""
    blow = rng.choice(["kill", "pause", "pause", "outage"])
    if blow == "kill":
        fleet.kill(rng)
    elif blow == "pause":
        fleet.pause(rng, rng.choice([3.0, LEASE * 1.5]))
    else:
        cluster.stop("fast")
        time.sleep(rng.uniform(5, 20))
        cluster.start()
    fleet.check()
    return blow


def unfinished(manager: JobManager) -> int:
    try:
        counts = manager.count_jobs()
    except Exception:  # noqa: BLE001 - the server may be away
        return -1
    return sum(n for status, n in counts.items() if status in ("pending", "running"))


def report(manager: JobManager, innocent: set[str], poison: set[str], out: Path) -> dict:
    history = manager.get_job_history(limit=None)
    entries = Counter(entry.job_id for entry in history)
    final = {entry.job_id: entry.status.value for entry in history}
    waiting = {
        job.id: job.status.value
        for status in ("pending", "running")
        for job in manager.list_jobs(status, limit=None)
    }
    runs = Counter(out.read_text().split()) if out.exists() else Counter()
    created = innocent | poison
    return {
        "jobs": len(created),
        "poison": len(poison),
        "lost": sorted(
            job_id
            for job_id in created
            if job_id not in final
            and job_id not in waiting
            or job_id in innocent
            and final.get(job_id) not in (None, "completed")
        ),
        "stuck": sorted(job_id for job_id, status in waiting.items() if job_id in created),
        "run_twice": sorted(job_id for job_id, n in runs.items() if n > 1),
        # A run that left no attempt behind: a job that ran more often than it has attempts.
        "run_twice_unexplained": sorted(
            job_id for job_id, n in runs.items() if n > 1 and len(manager.get_attempts(job_id)) < n
        ),
        "recorded_twice": sorted(job_id for job_id, n in entries.items() if n > 1),
        "poison_endings": dict(Counter(final.get(job_id, "none") for job_id in poison)),
    }


def main() -> int:
    args = docopt(__doc__)
    if _bin_dir() is None:
        sys.exit("PostgreSQL's initdb and pg_ctl are needed")
    rng = random.Random(int(args["--seed"]))
    folder = Path(tempfile.mkdtemp(prefix="taiat-soak-"))
    cluster = PrivateCluster(_bin_dir())  # type: ignore[arg-type]
    cluster.start()
    url = cluster.url
    schema.initialise(db.engine_from_url(url))
    manager = JobManager(url)
    out = folder / "ran.txt"
    count = int(args["--jobs"])
    innocent_specs = [
        {
            "job_type": "agent",
            "name": f"append-{i}",
            "payload": {"agent_name": "append", "parameters": {"path": str(out), "seconds": 0.1}},
            "max_retries": 10,
        }
        for i in range(count)
    ]
    innocent = {job.id for job in manager.create_jobs(innocent_specs)}
    poison = {job.id for job in manager.create_jobs(poison_jobs(count // 5, out))}
    fleet = Fleet(url, folder)
    blows: Counter[str] = Counter()
    started = time.monotonic()
    print(f"soak: {len(innocent)} innocent and {len(poison)} poison jobs, in {folder}", flush=True)
    try:
        for _ in range(3):
            fleet.start()
        deadline = started + float(args["--deadline"])
        while time.monotonic() < deadline:
            time.sleep(rng.uniform(4, 8))
            fleet.check()
            left = unfinished(manager)
            print(f"  {time.monotonic() - started:6.1f} s: {left} jobs left", flush=True)
            if left == 0:
                break
            blows[chaos(fleet, cluster, rng)] += 1
        fleet.check()
    finally:
        fleet.stop()
    figures = report(manager, innocent, poison, out)
    crashes = fleet.crashes
    manager.engine.dispose()
    print(f"blows: {dict(blows)}; {time.monotonic() - started:.0f} s")
    print(f"poison endings: {figures['poison_endings']}")
    for key in ("lost", "stuck", "run_twice", "run_twice_unexplained", "recorded_twice"):
        ids = figures[key]
        print(f"{key}: {len(ids)}" + (f" (e.g. {', '.join(ids[:5])})" if ids else ""))
    print(f"jobs: {figures['jobs']}; supervisor exits other than by signal: {len(crashes)}")
    if args["--keep"]:
        print(f"kept: {folder}")
        cluster.stop()
    else:
        cluster.destroy()
        shutil.rmtree(folder, ignore_errors=True)
    bad = figures["lost"] or figures["stuck"] or figures["recorded_twice"] or crashes
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
