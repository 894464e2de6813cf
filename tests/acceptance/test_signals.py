"""SIGTERM drains, a second signal ends the drain, SIGKILL leaves no child behind."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

from conftest import pid_alive, wait_until
from support import agent_job, check_metrics, finished

from taiat import JobManager, JobStatus

#: The keys every status file has, promised to monitoring (docs/supervisor.md).
CONTRACT_KEYS = {
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


def running(manager: JobManager, job_id: str) -> bool:
    job = manager.get_job(job_id)
    return job is not None and job.status is JobStatus.RUNNING


def test_sigterm_lets_a_short_job_finish(manager: JobManager, supervisor) -> None:
    [job] = manager.create_jobs([agent_job("short", "sleep", seconds=1.5)])
    sup = supervisor("--drain-timeout", "30")
    wait_until(lambda: running(manager, job.id), 30, "the job to start", watch=sup)
    sup.signal(signal.SIGTERM)
    assert sup.wait(30) == 0
    done = manager.get_job(job.id)
    assert done.status is JobStatus.COMPLETED and done.result == {"slept": 1.5}
    assert "SIGTERM: stopped claiming; draining 1 running jobs" in sup.log()
    assert sup.status()["state"] == "stopped"


def test_job_longer_than_the_drain_is_requeued(manager: JobManager, supervisor, tmp_path) -> None:
    pid_file = tmp_path / "job.pid"
    [job] = manager.create_jobs([agent_job("long", "sleep", seconds=60, pid_file=str(pid_file))])
    sup = supervisor("--drain-timeout", "0.5", "--kill-grace", "1")
    wait_until(lambda: pid_file.exists() and pid_file.read_text(), 30, "the job", watch=sup)
    sup.signal(signal.SIGTERM)
    assert sup.wait(30) == 0
    again = manager.get_job(job.id)
    assert again.status is JobStatus.PENDING
    assert again.retry_count == 0 and again.worker_id is None
    assert not pid_alive(int(pid_file.read_text()))
    [attempt] = manager.get_attempts(job.id)
    assert attempt.outcome == "stopped" and attempt.exit_signal == signal.SIGTERM


def test_second_signal_ends_the_drain_at_once(manager: JobManager, supervisor, tmp_path) -> None:
    pid_file = tmp_path / "job.pid"
    [job] = manager.create_jobs(
        [agent_job("stubborn", "stubborn", seconds=60, pid_file=str(pid_file))]
    )
    sup = supervisor("--drain-timeout", "600", "--kill-grace", "1")
    wait_until(lambda: pid_file.exists() and pid_file.read_text(), 30, "the job", watch=sup)
    sup.signal(signal.SIGTERM)
    wait_until(lambda: sup.status().get("state") == "draining", 10, "draining", watch=sup)
    sup.signal(signal.SIGINT)
    assert sup.wait(30) == 0  # far sooner than the 600 s drain
    assert manager.get_job(job.id).status is JobStatus.PENDING
    assert not pid_alive(int(pid_file.read_text()))
    [attempt] = manager.get_attempts(job.id)
    assert attempt.exit_signal == signal.SIGKILL  # it ignored SIGTERM


def test_sigkill_of_the_supervisor_leaves_no_child(manager: JobManager, supervisor, tmp_path):
    pid_file = tmp_path / "job.pid"
    manager.create_jobs([agent_job("long", "sleep", seconds=60, pid_file=str(pid_file))])
    sup = supervisor()
    wait_until(lambda: pid_file.exists() and pid_file.read_text(), 30, "the job", watch=sup)
    child = int(pid_file.read_text())
    assert pid_alive(child)
    sup.signal(signal.SIGKILL)
    sup.wait(10)
    wait_until(lambda: not pid_alive(child), 10, "the child to die with its supervisor")


def test_status_and_metrics_files(manager: JobManager, supervisor, tmp_path: Path) -> None:
    pid_file = tmp_path / "job.pid"
    [job] = manager.create_jobs([agent_job("long", "sleep", seconds=60, pid_file=str(pid_file))])
    sup = supervisor("--max-concurrent-jobs", "3")
    # The status shows the job once its pid is known, a moment before the job itself runs
    # (and writes its pid file): after it has joined its cgroup, in a sandbox.
    wait_until(
        lambda: sup.status().get("running") and pid_file.exists() and pid_file.read_text(),
        30,
        "a running job in the status",
        watch=sup,
    )
    status = sup.status()
    assert CONTRACT_KEYS <= set(status)
    assert (status["pid"], status["slots"], status["state"]) == (sup.pid, 3, "running")
    assert status["database"] == "ok"
    assert set(status["counters"]) == {"completed", "failed", "timed_out", "crashed"}
    [entry] = status["running"]
    assert entry["job_id"] == job.id and entry["name"] == "long"
    assert entry["pid"] == int(pid_file.read_text()) and entry["deadline"]
    wait_until(lambda: sup.status()["running"][0]["rss_bytes"] > 0, 10, "rss", watch=sup)

    def metrics_with_the_job() -> str | None:
        text = sup.metrics_file.read_text()
        return text if "taiat_supervisor_running_jobs 1" in text else None

    # The metrics file is written just after the status file: it may be a write behind.
    metrics = wait_until(metrics_with_the_job, 10, "the running job in the metrics", watch=sup)
    assert "taiat_supervisor_slots 3" in metrics
    if shutil.which("promtool") or os.environ.get("CI") == "true":
        check_metrics(metrics)  # not a reason to skip the rest of this test elsewhere
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temp files behind
    json.loads((tmp_path / "status.json").read_text())
    sup.signal(signal.SIGTERM)
    wait_until(lambda: sup.status().get("state") == "draining", 10, "draining", watch=sup)
    sup.signal(signal.SIGTERM)
    assert sup.wait(30) == 0
    assert sup.status()["state"] == "stopped"


def test_finished_in_burst(manager: JobManager, supervisor) -> None:
    jobs = manager.create_jobs([agent_job(f"p{i}", "plain", value=i) for i in range(6)])
    sup = supervisor("--burst", "--max-concurrent-jobs", "2", entry="bin")
    assert sup.wait(60) == 0
    assert all(finished(manager, j.id).status is JobStatus.COMPLETED for j in jobs)


def test_tells_systemd_ready_and_stopping(manager: JobManager, supervisor, tmp_path) -> None:
    import socket

    path = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(path))
    listener.settimeout(30)
    sup = supervisor(env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000"})
    messages: list[str] = []

    def heard(text: str) -> bool:
        messages.append(listener.recv(4096).decode())
        return any(text in message for message in messages)

    wait_until(lambda: heard("READY=1"), 30, "READY=1", watch=sup)
    wait_until(lambda: heard("WATCHDOG=1"), 30, "WATCHDOG=1", watch=sup)
    sup.signal(signal.SIGTERM)
    wait_until(lambda: heard("STOPPING=1"), 30, "STOPPING=1")
    assert sup.wait(30) == 0
    listener.close()


def test_cleanup_runs_at_start(manager: JobManager, supervisor) -> None:
    job = manager.create_job("agent", "old")
    manager.cancel_job(job.id)
    assert supervisor("--burst", "--history-retention-days", "0").wait(60) == 0
    assert manager.get_job_history() == []


def test_sighup_rewrites_the_status_files_and_stops_nothing(
    manager: JobManager, supervisor, tmp_path: Path
) -> None:
    [job] = manager.create_jobs([agent_job("short", "sleep", seconds=1.5)])
    sup = supervisor()
    wait_until(lambda: running(manager, job.id), 30, "the job to start", watch=sup)
    sup.status_file.unlink()
    sup.signal(signal.SIGHUP)
    rewritten = "SIGHUP: status and metrics files rewritten"
    wait_until(lambda: rewritten in sup.log(), 10, "SIGHUP", watch=sup)
    wait_until(lambda: sup.status().get("state") == "running", 10, "the status file", watch=sup)
    done = wait_until(lambda: finished(manager, job.id), 30, "the job", watch=sup)
    assert done.status is JobStatus.COMPLETED and done.result == {"slept": 1.5}
    [attempt] = manager.get_attempts(job.id)
    assert attempt.outcome == "completed"
    assert sup.process.poll() is None
    sup.signal(signal.SIGTERM)
    assert sup.wait(30) == 0
