"""Heavy agents: what a job costs when the agents' module imports large libraries, about 150 MiB
(`bench.heavy_agents`: numpy and a ballast of small objects).

A fork costs more the more memory the forking process has written, so the figures are set
against the bare fork loop (`bench.limit`) of a process of the same size, at the same
concurrency, run in the same section:
- drains of no-op jobs on PostgreSQL by 1 supervisor with 2 slots: light agents; the heavy
  module (loaded by the supervisor and by its fork server); the heavy module in the supervisor
  only (the fork server stays light); the heavy module with `--no-fork-server` (the
  supervisor, which also holds the database libraries, forks); and an agent that imports the
  heavy module in its body, in each job's own process;
- enqueue-to-start latency of an idle supervisor (`bench.latency`), light and heavy;
- RQ's forking worker in the same run, light and holding the same module, when the peers are
  set up (`bench.peers`; their venv needs numpy).

The drains take turns, configuration after configuration, and each figure is the median of
the runs. Beside each drain, the CPU a job costs each process (an idle supervisor given the
jobs, one run) and, beside each loop, the loop's: with the machine's cores busy, those decide
the throughput.
"""

from __future__ import annotations

import importlib.util
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from bench import latency, peers
from bench.common import (
    AGENTS,
    NOOP,
    fresh_database,
    manager,
    start_supervisor,
    stop,
    summary_ms,
    wait_for,
)
from bench.limit import measure as fork_loop
from bench.throughput import drain

MiB = 1 << 20
SLOTS = 2
DRAIN_TIMEOUT = 600.0
HEAVY = {"noop": "bench.heavy_agents:noop", "stamp": "bench.heavy_agents:stamp"}
#: What each loop stands for: the light fork server, the heavy one, and a heavy supervisor.
LOOP_LIGHT = "fork server's imports"
LOOP_HEAVY = "fork server's imports, heavy agents module"
LOOP_SUPERVISOR = "with taiat imported, heavy agents module"
#: case -> (agents, supervisor options, the loop of the size of the process that forks)
DRAINS: dict[str, tuple[dict[str, str], tuple[str, ...], str]] = {
    "light agents": (AGENTS, (), LOOP_LIGHT),
    "heavy agents module": (HEAVY, (), LOOP_HEAVY),
    "heavy module in the supervisor only": (
        {"noop": "bench.heavy_supervisor:noop"},
        (),
        LOOP_LIGHT,
    ),
    "heavy agents module, --no-fork-server": (HEAVY, ("--no-fork-server",), LOOP_SUPERVISOR),
}
#: The agent that imports the heavy module in each job's process: a few jobs say enough.
IN_EACH_JOB = {"noop": "bench.agents:heavy_import"}


def run(quick: bool = False) -> list[dict[str, Any]]:
    if importlib.util.find_spec("numpy") is None:
        return [{"what": "not run", "case": "numpy is missing: pip install -e '.[bench]'"}]
    forks, jobs, repeats, samples, each = (200, 60, 1, 10, 4) if quick else (500, 300, 3, 50, 20)
    rows: list[dict[str, Any]] = []
    loops = _fork_loops(forks, repeats)
    for (loop, at_once), figures in loops.items():
        rows.append(
            {
                "what": f"bare fork loop, {at_once} at once",
                "case": loop,
                "jobs_per_s": round(figures["jobs_per_s"], 1),
                "forking_rss_mb": round(figures["parent_rss_mb"], 1),
                "cpu_ms_a_job": round(figures["cpu_ms_a_job"], 2),
            }
        )
    drains = _drains(jobs, repeats)
    for case, (agents, options, loop) in DRAINS.items():
        rate = drains[case]
        rows.append(
            {
                "what": f"drain, PostgreSQL, 1 x {SLOTS}",
                "case": case,
                "jobs": jobs,
                "jobs_per_s": round(rate, 1),
                "ratio_to_loop_of_same_size": round(rate / loops[loop, 2]["jobs_per_s"], 3),
                "runs": repeats,
                **_idle_then_drain(agents, options, jobs),
            }
        )
    with fresh_database("postgresql") as url:
        rate = _rate(url, each, IN_EACH_JOB, ())
    rows.append(
        {
            "what": f"drain, PostgreSQL, 1 x {SLOTS}",
            "case": "each job imports the heavy module",
            "jobs": each,
            "jobs_per_s": round(rate, 1),
        }
    )
    for case, agents, loop in (
        ("light agents", AGENTS, LOOP_LIGHT),
        ("heavy agents module", HEAVY, LOOP_HEAVY),
    ):
        with fresh_database("postgresql") as url:
            figures = latency.measure(url, samples, "--poll-interval", "60", agents=agents)
        rows.append(
            {
                "what": "start latency, LISTEN/NOTIFY",
                "case": case,
                **figures,
                "loop_ms_a_job_1_at_once": round(1000 / loops[loop, 1]["jobs_per_s"], 2),
            }
        )
    rows += _rq(rows, jobs, repeats, samples)
    return rows


def _fork_loops(forks: int, repeats: int) -> dict[tuple[str, int], dict[str, float]]:
    """The bare fork loop of each size, 1 and 2 at once: the median run of `repeats`, the
    loops taking turns."""
    runs: dict[tuple[str, int], list[dict[str, float]]] = {}
    for _ in range(repeats):
        for loop in (LOOP_LIGHT, LOOP_HEAVY, LOOP_SUPERVISOR):
            for at_once in (1, 2):
                runs.setdefault((loop, at_once), []).append(fork_loop(at_once, loop, forks))
    return {key: _median_run(found, "jobs_per_s") for key, found in runs.items()}


def _drains(jobs: int, repeats: int) -> dict[str, float]:
    """Each drain case's median jobs/s (first start to last end), the cases taking turns."""
    rates: dict[str, list[float]] = {case: [] for case in DRAINS}
    for _ in range(repeats):
        for case, (agents, options, _) in DRAINS.items():
            with fresh_database("postgresql") as url:
                rates[case].append(_rate(url, jobs, agents, options))
    return {case: statistics.median(found) for case, found in rates.items()}


def _rate(url: str, jobs: int, agents: dict[str, str], options: tuple[str, ...]) -> float:
    figures = drain(url, jobs, 1, SLOTS, *options, agents=agents)
    return jobs / figures["span"]


def _idle_then_drain(
    agents: dict[str, str], options: tuple[str, ...], jobs: int
) -> dict[str, float | None]:
    """An idle supervisor with `agents` and `options`: its resident MiB and its fork server's
    (None without one); then, as it drains `jobs` no-op jobs, the CPU ms a job of each: the
    supervisor, the fork server, and the jobs' children (reaped by the server, or by the
    supervisor without one). CPU depends much less than time on the machine's other work."""
    with fresh_database("postgresql") as url, tempfile.TemporaryDirectory() as folder:
        status_file = Path(folder) / "status.json"
        sup = start_supervisor(
            url,
            "--status-file",
            str(status_file),
            "--poll-interval",
            "60",
            "--max-concurrent-jobs",
            str(SLOTS),
            *options,
            agents=agents,
        )
        jobs_manager = manager(url)
        try:
            wait_for(lambda: _status(status_file).get("state") == "running", 60, "a supervisor")
            time.sleep(0.5)
            supervisor = psutil.Process(sup.pid)
            server_pid = _status(status_file).get("fork_server_pid")
            server = psutil.Process(server_pid) if server_pid else None
            figures: dict[str, float | None] = {
                "supervisor_rss_mb": round(supervisor.memory_info().rss / MiB, 1),
                "fork_server_rss_mb": round(server.memory_info().rss / MiB, 1) if server else None,
            }
            forker = server or supervisor
            before = supervisor.cpu_times(), forker.cpu_times()
            jobs_manager.create_jobs([NOOP] * jobs)
            wait_for(lambda: _completed(status_file) >= jobs, DRAIN_TIMEOUT, "the drain")
            after = supervisor.cpu_times(), forker.cpu_times()
        finally:
            stop(sup)
            jobs_manager.engine.dispose()
    per_job = 1000 / jobs
    own = (after[0].user + after[0].system - before[0].user - before[0].system) * per_job
    children = after[1].children_user + after[1].children_system
    children -= before[1].children_user + before[1].children_system
    figures["cpu_ms_a_job_supervisor"] = round(own, 2)
    if server is not None:
        spent = after[1].user + after[1].system - before[1].user - before[1].system
        figures["cpu_ms_a_job_fork_server"] = round(spent * per_job, 2)
    figures["cpu_ms_a_job_children"] = round(children * per_job, 2)
    return figures


def _completed(status_file: Path) -> int:
    return _status(status_file).get("counters", {}).get("completed", 0)


def _status(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # not written yet


def _rq(ours: list[dict[str, Any]], jobs: int, repeats: int, samples: int) -> list[dict]:
    """RQ's rows, with the ratio of our figure to theirs on ours; none without the peers."""
    found = peers.rq_heavy(jobs, repeats, samples)
    if found is None:
        return []
    rows = []
    for cls, case in (("Worker", "light agents"), ("HeavyWorker", "heavy agents module")):
        rate = _median_run(found["drain"][cls], "steady_jobs_s")["steady_jobs_s"]
        rows.append(
            {
                "what": "drain, RQ Worker x 2 (its own script)",
                "case": case,
                "jobs": jobs,
                "jobs_per_s": round(rate, 1),
                "runs": repeats,
            }
        )
        ms = summary_ms([value / 1000 for value in found["latency"][cls]])
        rows.append({"what": "start latency, RQ Worker (its own script)", "case": case, **ms})
        for row in ours:
            if row["case"] != case:
                continue
            if row["what"].startswith("drain, PostgreSQL"):
                row["ratio_to_rq"] = round(row["jobs_per_s"] / rate, 2)
            elif row["what"].startswith("start latency"):
                row["p50_ratio_to_rq"] = round(row["p50_ms"] / ms["p50_ms"], 2)
    return rows


def _median_run(runs: list[dict[str, float]], key: str) -> dict[str, float]:
    return sorted(runs, key=lambda run: run[key])[len(runs) // 2]
