"""`taiat top`: a live view of the supervisors, their slots, the running jobs (elapsed time,
CPU, memory) and the queue depth per status, from the database and the supervisors' status
files. Redraws every `--interval` seconds; q or Ctrl-C quits."""

from __future__ import annotations

import json
import os
import select
import sys
import termios
import time
import tty
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
from rich.console import Group, RenderableType
from rich.live import Live
from rich.text import Text

from taiat.cli.exits import EXIT_OK
from taiat.job_manager import JobManager
from taiat.operator import lookups, render
from taiat.operator.admin import supervisor_rows
from taiat.operator.options import MAX_INTERVAL, lease, manager, number, status_files
from taiat.store import db


class CpuMeter:
    """CPU use of local processes (and their children) between two looks, in percent of one
    core; psutil needs a first look to measure from."""

    def __init__(self) -> None:
        self._seen: dict[int, psutil.Process] = {}

    def percent(self, pid: int | None) -> float | None:
        """None on the first look at `pid`, or when it is not a local process."""
        if pid is None:
            return None
        try:
            proc = self._seen.get(pid)
            if proc is None:
                self._seen[pid] = psutil.Process(pid)
                self._seen[pid].cpu_percent(None)
                return None
            total = proc.cpu_percent(None)
            for child in proc.children(recursive=True):
                known = self._seen.setdefault(child.pid, child)
                total += known.cpu_percent(None)
            return total
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            self._seen.pop(pid, None)
            return None


def read_status_files(paths: list[Path]) -> dict[str, dict[str, Any]]:
    """The supervisors' status files that can be read, by worker id."""
    found: dict[str, dict[str, Any]] = {}
    for path in paths:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError, RecursionError):
            continue
        if isinstance(data, dict) and data.get("worker_id"):
            found[str(data["worker_id"])] = data
    return found


def gather(
    jm: JobManager, status_files: list[Path], lease_seconds: float, cpu: CpuMeter
) -> dict[str, Any]:
    """One snapshot: queue depth, supervisors with their slots, running jobs with figures."""
    statuses = read_status_files(status_files)
    supervisors = supervisor_rows(jm, lease_seconds)
    local = {}  # job id -> its entry in a status file
    for data in statuses.values():
        for entry in data.get("running") or []:
            local[entry.get("job_id")] = entry
    for worker in supervisors:
        data = statuses.get(worker["id"], {})
        worker["slots"] = data.get("slots")
        worker["state"] = data.get("state")
        worker["counters"] = data.get("counters")
    running = lookups.running_jobs(jm)
    for job in running:
        entry = local.get(job["id"], {})
        job["pid"] = entry.get("pid")
        job["cpu_percent"] = cpu.percent(job["pid"]) if job["pid"] else None
        job["rss_bytes"] = entry.get("rss_bytes")
    return {
        "database": db.describe(jm.engine),
        "at": datetime.now(UTC).replace(tzinfo=None),
        "queue": lookups.queue_depth(jm),
        "supervisors": supervisors,
        "running": running,
    }


def view(snapshot: dict[str, Any], live: bool, width: int | None = None) -> RenderableType:
    """The snapshot as a header line, the queue, and two tables."""
    header = Text.assemble(
        ("taiat top", "bold"),
        f"  {snapshot['database']}  {render.when(snapshot['at'])} UTC",
        ("  (q quits)" if live else "", "dim"),
    )
    queue = snapshot["queue"]
    line = Text("queue: ")
    for index, status in enumerate(render.STATUS_STYLES):
        if index:
            line.append(", ")
        line.append(f"{status} {queue.get(status, 0)}", style=render.STATUS_STYLES[status])
        if status == "pending":
            line.append(f" (ready {queue.get('ready', 0)})")
    supervisor_rows = []
    for worker in snapshot["supervisors"]:
        busy = len(worker["running_jobs"])
        counters = worker.get("counters") or {}
        state = worker.get("state") or "alive"
        supervisor_rows.append(
            (
                worker["id"],
                Text(state, "green") if worker["alive"] else Text("dead", "red"),
                f"{busy}/{worker['slots']}" if worker.get("slots") else f"{busy}/?",
                f"{render.duration(worker['heartbeat_age'])} ago",
                str(counters.get("completed", "-")),
                str(counters.get("failed", "-")),
            )
        )
    supervisors = render.table(
        "SUPERVISOR",
        "STATE",
        "SLOTS",
        "HEARTBEAT",
        "DONE",
        "FAILED",
        rows=supervisor_rows,
        title="supervisors",
        width=width,
    )
    job_rows = []
    for job in snapshot["running"]:
        cpu = job.get("cpu_percent")
        job_rows.append(
            (
                job["id"],
                job["name"],
                job["worker_id"] or "-",
                render.duration(job["elapsed"]),
                "-" if cpu is None else f"{cpu:.0f} %",
                render.size(job.get("rss_bytes")),
            )
        )
    running = render.table(
        "JOB ID",
        "NAME",
        "SUPERVISOR",
        "ELAPSED",
        "CPU",
        "MEMORY",
        rows=job_rows,
        title="running jobs",
        width=width,
    )
    parts: list[RenderableType] = [header, line, supervisors]
    if not snapshot["supervisors"]:
        parts.append(Text("no supervisor is registered", style="dim"))
    parts.append(running)
    if not snapshot["running"]:
        parts.append(Text("no job is running", style="dim"))
    return Group(*parts)


@contextmanager
def keys() -> Iterator[Any]:
    """Standard input a key at a time (Ctrl-C still interrupts); a function that returns the
    key pressed within `timeout` seconds, or '' when none was."""
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)

    def key(timeout: float) -> str:
        ready, _, _ = select.select([fd], [], [], max(timeout, 0.0))
        return os.read(fd, 32).decode(errors="replace") if ready else ""

    try:
        yield key
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def top_command(args: dict) -> int:
    interval = number(args, "--interval", float, 1.0, 0.05, MAX_INTERVAL)
    lease_seconds = lease(args)
    paths = status_files(args)
    jm = manager(args)
    cpu = CpuMeter()
    interactive = sys.stdout.isatty() and sys.stdin.isatty()
    if args["--json"]:
        render.print_json(gather(jm, paths, lease_seconds, cpu))
        return EXIT_OK
    if args["--once"] or not interactive:
        out = render.console()
        snapshot = gather(jm, paths, lease_seconds, cpu)
        render.show(out, view(snapshot, live=False, width=out.width))
        return EXIT_OK
    out = render.console()
    with keys() as key, Live(console=out, auto_refresh=False, screen=True) as live:
        try:
            while True:
                snapshot = gather(jm, paths, lease_seconds, cpu)
                live.update(view(snapshot, live=True, width=out.width), refresh=True)
                deadline = time.monotonic() + interval
                while (left := deadline - time.monotonic()) > 0:
                    if key(left).lower().startswith("q"):
                        return EXIT_OK
        except KeyboardInterrupt:
            return EXIT_OK
