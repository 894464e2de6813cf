"""What the supervisor tells the world: a JSON status file, a Prometheus textfile, sd_notify.

The supervisor builds a snapshot dict and hands it to `StatusReporter.publish`. Its keys are a
public contract for monitoring; keys beyond these are written through unchanged::

    {"pid": int, "host": str, "version": str, "started_at": ISO str, "updated_at": ISO str,
     "state": "starting" | "running" | "draining" | "stopped", "slots": int,
     "running": [{"job_id": str, "name": str, "pid": int, "started_at": ISO str,
                  "deadline": ISO str | None, "rss_bytes": int}],
     "counters": {"completed": int, "failed": int, "timed_out": int, "crashed": int},
     "database": "ok" | "unreachable"}

(The supervisor also writes `worker_id`, `pending_results`, `claimed_ahead`, `finishing`, the
number of children that have sent their results and are exiting, `fork_server_pid`,
`job_user`, the user jobs run as (`--job-user`; null: the supervisor's own), and
`waiting_on_limit`: for each key with a limit set (50 at most), the ready jobs that carry it,
or null until counted.)

The metrics file carries the snapshot's figures, none of them labelled by job (a label value
per job would make a new series for every job), and `taiat_jobs{status=...}`, the jobs in the
database by what they wait for, which the supervisor counts apart from the snapshot, with the
same by queue, `taiat_jobs{queue=...,status=...}`: the `MAX_QUEUE_LABELS` queues with the most
active jobs by name, the others added up under `queue="other"` (`bounded_queues`), so that the
series stay few however many queues there are (the status file has the same per-queue counts
under `queues`); and `taiat_jobs_waiting_on_limit{key=...}`, the snapshot's
`waiting_on_limit` (keys with a limit set only, so the label's values stay few).

Nothing here may stop the daemon: a monitoring failure is logged and the jobs keep running.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import tempfile
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: The keys every status file has: a contract for monitoring.
CONTRACT_KEYS = frozenset(
    {
        "pid",
        "host",
        "version",
        "started_at",
        "updated_at",
        "state",
        "slots",
        "running",
        "counters",
        "database",
    }
)
#: Every value of the snapshot's "state", in lifecycle order.
STATES = ("starting", "running", "draining", "stopped")
#: The snapshot's "counters" keys; each becomes `taiat_supervisor_jobs_<key>_total`.
COUNTERS = ("completed", "failed", "timed_out", "crashed")

# A stuck service manager must not stall the supervisor's loop for longer than this.
_NOTIFY_TIMEOUT_SECONDS = 1.0

Labels = Mapping[str, str]
Sample = tuple[Labels, float | int | None]


_FIRST = datetime.min.replace(tzinfo=UTC)
_LAST = datetime.max.replace(tzinfo=UTC)


def iso(dt: datetime | float | None) -> str | None:
    """ISO 8601 in UTC with a "+00:00" offset; a float is a unix time, a naive datetime is UTC.

    Naive means UTC because the database hands back naive UTC timestamps (see `schema`).
    """
    if dt is None:
        return None
    if isinstance(dt, datetime):
        moment = dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
    elif dt != dt:  # NaN: no time at all
        return None
    else:
        try:
            moment = datetime.fromtimestamp(dt, UTC)
        except (OverflowError, ValueError, OSError):
            # Beyond what a datetime holds (a job's deadline 30,000 years away): the last
            # moment it does hold, or the first.
            moment = _LAST if dt > 0 else _FIRST
    return moment.isoformat(timespec="milliseconds")


def _unix_time(value: str | datetime | float | None) -> float | None:
    if value is None or isinstance(value, int | float):
        return value
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def write_text_atomically(path: Path, text: str) -> None:
    """Replace `path` with `text` so that a reader sees the old file or the new one, never half.

    The temporary file lives in the same directory (a rename is atomic only within one file
    system) and is named ".<name>.*.tmp" so node_exporter's textfile collector, which reads only
    "*.prom", never picks it up. The parent directory is not created: a missing one is a
    configuration error of the caller's.
    """
    path = Path(path)
    if not path.parent.is_dir():
        # OSError picks the subclass from the code: FileNotFoundError or NotADirectoryError.
        raise OSError(
            errno.ENOTDIR if path.parent.exists() else errno.ENOENT,
            f"no directory to write {path.name} in (create it or choose another path)",
            str(path.parent),
        )
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as tmp:
            tmp.write(text)
            tmp.flush()
            # mkstemp makes 0600 files; monitoring runs as another user and must read them.
            os.fchmod(tmp.fileno(), 0o644)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _json_default(value: object) -> object:
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to the status file: {value!r}")


def write_json_atomically(path: Path, data: Mapping[str, Any]) -> None:
    """Write `data` as JSON to `path` atomically (see `write_text_atomically`)."""
    write_text_atomically(path, _json_text(data))


def _json_text(data: Mapping[str, Any]) -> str:
    return json.dumps(data, indent=2, default=_json_default) + "\n"


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float | int) -> str:
    # Counts stay integers; times keep their fraction (repr is the shortest exact form).
    return str(int(value)) if isinstance(value, bool | int) else repr(float(value))


#: The metrics families, each (name after "taiat_supervisor_", type, help), in output order.
METRICS = (
    ("info", "gauge", "Always 1; the labels identify the supervisor."),
    ("start_time_seconds", "gauge", "Unix time the supervisor started."),
    ("last_update_time_seconds", "gauge", "Unix time of this snapshot; stale means stuck."),
    ("slots", "gauge", "Jobs the supervisor may run at once."),
    ("running_jobs", "gauge", "Jobs running now."),
    ("state", "gauge", "1 for the supervisor's current state, 0 for the others."),
    ("database_up", "gauge", "1 if the last database round trip worked, else 0."),
    *(
        (f"jobs_{key}_total", "counter", f"Jobs ended {key.replace('_', ' ')} since the start.")
        for key in COUNTERS
    ),
    (
        "running_job_rss_bytes",
        "gauge",
        "The largest resident memory of a running job's process tree (per job: the status file).",
    ),
    (
        "running_job_start_time_seconds",
        "gauge",
        "Unix time the longest-running job started (per job: the status file).",
    ),
)

#: The statuses of `taiat_jobs`, in output order (see `taiat.store.port.Backlog.by_status`).
JOB_STATUSES = ("pending", "ready", "scheduled", "running")
_JOBS_HELP = (
    "Jobs in the database: pending (waiting for a dependency or a retry's backoff), ready "
    "(for a free slot), scheduled (for its run_at), running (claimed by a supervisor)."
)


_WAITING_HELP = (
    "Ready jobs that carry a key with a limit set, not yet started: they start as the key's "
    "cap and rate give room (the first 50 keys by name)."
)


#: The most queues `taiat_jobs{queue=...}` and the status file's `queues` name; the others
#: are added up under `OTHER_QUEUES`.
MAX_QUEUE_LABELS = 20
OTHER_QUEUES = "other"


def bounded_queues(
    queues: Mapping[str, Mapping[str, int]], limit: int = MAX_QUEUE_LABELS
) -> dict[str, dict[str, int]]:
    """The counts of the `limit` queues with the most jobs (ties by name), and of the others
    added up under `OTHER_QUEUES` (with a queue of that name, if any), by name."""
    ranked = sorted(queues.items(), key=lambda item: (-sum(item[1].values()), item[0]))
    if len(ranked) <= limit:
        return {name: dict(counts) for name, counts in sorted(ranked)}
    kept = {name: dict(counts) for name, counts in ranked[: limit - 1]}
    rest: dict[str, int] = {}
    for _name, counts in ranked[limit - 1 :]:
        for status, count in counts.items():
            rest[status] = rest.get(status, 0) + count
    if OTHER_QUEUES in kept:  # a queue named "other" among the biggest takes the rest in
        for status, count in rest.items():
            kept[OTHER_QUEUES][status] = kept[OTHER_QUEUES].get(status, 0) + count
    else:
        kept[OTHER_QUEUES] = rest
    return dict(sorted(kept.items()))


def _extreme(pick: Callable[..., Any], values: list[Any]) -> Any:
    """`pick` (max or min) of the figures that could be taken; None if none could."""
    taken = [value for value in values if value is not None]
    return pick(taken) if taken else None


def render_metrics(
    snapshot: Mapping[str, Any],
    jobs: Mapping[str, int] | None = None,
    queues: Mapping[str, Mapping[str, int]] | None = None,
) -> str:
    """The snapshot in the Prometheus text exposition format (for node_exporter's textfile);
    with `jobs`, the jobs in the database by status (`taiat_jobs{status=...}`), and with
    `queues` (bounded already: `bounded_queues`) by queue and status
    (`taiat_jobs{queue=...,status=...}`)."""
    info = {"host": str(snapshot.get("host", "")), "version": str(snapshot.get("version", ""))}
    if snapshot.get("worker_id") is not None:
        info["worker_id"] = str(snapshot["worker_id"])
    running = list(snapshot.get("running") or [])
    counters = snapshot.get("counters") or {}
    samples: dict[str, list[Sample]] = {
        "info": [(info, 1)],
        "start_time_seconds": [({}, _unix_time(snapshot.get("started_at")))],
        "last_update_time_seconds": [({}, _unix_time(snapshot.get("updated_at")))],
        "slots": [({}, snapshot.get("slots"))],
        "running_jobs": [({}, len(running))],
        "state": [({"state": s}, int(s == snapshot.get("state"))) for s in STATES],
        "database_up": [({}, int(snapshot.get("database") == "ok"))],
        **{f"jobs_{key}_total": [({}, int(counters.get(key, 0)))] for key in COUNTERS},
        "running_job_rss_bytes": [({}, _extreme(max, [j.get("rss_bytes") for j in running]))],
        "running_job_start_time_seconds": [
            ({}, _extreme(min, [_unix_time(j.get("started_at")) for j in running]))
        ],
    }
    families = [(f"taiat_supervisor_{name}", kind, text) for name, kind, text in METRICS]
    families.append(("taiat_jobs", "gauge", _JOBS_HELP))
    samples["taiat_jobs"] = [
        ({"status": status}, None if jobs is None else jobs.get(status, 0))
        for status in JOB_STATUSES
    ]
    for name, counts in (queues or {}).items():
        samples["taiat_jobs"] += [
            ({"queue": name, "status": status}, counts.get(status, 0)) for status in JOB_STATUSES
        ]
    families.append(("taiat_jobs_waiting_on_limit", "gauge", _WAITING_HELP))
    samples["taiat_jobs_waiting_on_limit"] = [
        ({"key": key}, count)
        for key, count in sorted((snapshot.get("waiting_on_limit") or {}).items())
    ]
    lines: list[str] = []
    for full, kind, help_text in families:
        lines += [f"# HELP {full} {help_text}", f"# TYPE {full} {kind}"]
        for labels, value in samples[full.removeprefix("taiat_supervisor_")]:
            if value is None:  # a figure the supervisor could not take this time
                continue
            text = ",".join(f'{key}="{_escape_label(str(v))}"' for key, v in labels.items())
            selector = f"{{{text}}}" if text else ""
            lines.append(f"{full}{selector} {_number(value)}")
    return "\n".join(lines) + "\n"


class StatusReporter:
    """Writes the status file and the metrics file, each optional, never raising.

    A failing write is logged once while it keeps failing the same way, and once more when it
    works again, so a full disk does not flood the journal every tick.
    """

    def __init__(self, status_file: Path | None = None, metrics_file: Path | None = None) -> None:
        self.status_file = status_file
        self.metrics_file = metrics_file
        self._failing: dict[Path, str] = {}

    def publish(
        self,
        snapshot: Mapping[str, Any],
        jobs: Mapping[str, int] | None = None,
        queues: Mapping[str, Mapping[str, int]] | None = None,
    ) -> None:
        """Write the snapshot to both files; `jobs`, the jobs in the database by status, and
        `queues`, the same by queue, to the metrics file only."""
        if self.status_file is not None:
            self._write(self.status_file, "status file", lambda: _json_text(snapshot))
        if self.metrics_file is not None:
            self._write(
                self.metrics_file, "metrics file", lambda: render_metrics(snapshot, jobs, queues)
            )

    def _write(self, path: Path, what: str, render: Callable[[], str]) -> None:
        try:
            write_text_atomically(path, render())
        # Broad on purpose: monitoring must never take the daemon and its jobs down with it.
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}"
            if self._failing.get(path) != message:
                self._failing[path] = message
                # An OSError is the environment's doing; anything else is a bug worth a traceback.
                logger.warning(
                    "cannot write the %s %s: %s; carrying on without it",
                    what,
                    path,
                    message,
                    exc_info=not isinstance(exc, OSError),
                )
            return
        if self._failing.pop(path, None) is not None:
            logger.info("the %s %s is written again", what, path)


def notify(*lines: str) -> bool:
    """Send sd_notify lines ("READY=1", "STATUS=...", "WATCHDOG=1") as one datagram.

    False when not run under a service manager that listens (no NOTIFY_SOCKET), or when the
    send fails; the daemon works the same either way.
    """
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # Linux abstract namespace
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.settimeout(_NOTIFY_TIMEOUT_SECONDS)
            sock.sendto("\n".join(lines).encode(), address)
    except OSError as exc:
        logger.debug("sd_notify to %r failed: %s", os.environ.get("NOTIFY_SOCKET"), exc)
        return False
    return True


def watchdog_interval() -> float | None:
    """Seconds between "WATCHDOG=1" pings (half the unit's WatchdogSec), or None if not asked.

    WATCHDOG_PID names the process the watchdog is meant for; a forked job inheriting the
    environment must not take it for its own.
    """
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid.strip() != str(os.getpid())):
        return None
    try:
        period = int(usec)
    except ValueError:
        logger.debug("ignoring WATCHDOG_USEC=%r: not an integer", usec)
        return None
    return period / 2_000_000 if period > 0 else None
