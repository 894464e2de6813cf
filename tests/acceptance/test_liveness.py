"""Who is dead, and who only looks it: supervisors judged by their own leases, in their own
places, through outages and stalls of their own or of their peers."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import psycopg
import pytest
from conftest import Supervisor, wait_until
from private_postgres import PrivateCluster
from support import agent_job, finished

from taiat import JobManager, JobStatus


def _gone_pid() -> int:
    """A pid no process has now (that of a child just reaped)."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def _here() -> dict[str, str]:
    """Where this process's pids mean something, as the kernel tells it: the boot and the PID
    namespace, which the supervisors the test starts share."""
    boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    return {"boot_id": boot_id, "pid_namespace": os.readlink("/proc/self/ns/pid")}


def _running(manager: JobManager, job_id: str) -> str | None:
    """The supervisor running the job, if it is running."""
    job = manager.get_job(job_id)
    return job.worker_id if job is not None and job.status is JobStatus.RUNNING else None


def test_a_gone_pid_means_dead_only_in_the_same_boot_and_pid_namespace(
    manager: JobManager, supervisor
) -> None:
    host, pid, here = socket.gethostname(), _gone_pid(), _here()
    places = {
        "other-boot": {**here, "boot_id": "another boot"},
        "other-namespace": {**here, "pid_namespace": "pid:[1]"},
        "same-place": here,
    }
    jobs = manager.create_jobs([agent_job(name, "plain") for name in places])
    for job, (name, place) in zip(jobs, places.items(), strict=True):
        worker_id = f"{host}:{pid}:{name}"
        manager.port.register(worker_id, host, pid, lease=600.0, **place)
        [claimed] = manager.claim_jobs(worker_id, 1)
        assert claimed.id == job.id
    sup = supervisor("--lease", "600")
    same = wait_until(lambda: finished(manager, jobs[2].id), 30, "the same place's job", watch=sup)
    assert same.status is JobStatus.COMPLETED and same.retry_count == 1
    # Fresh heartbeats, and a pid that means nothing here: their leases decide.
    assert _running(manager, jobs[0].id) == f"{host}:{pid}:other-boot"
    assert _running(manager, jobs[1].id) == f"{host}:{pid}:other-namespace"


def test_each_supervisor_is_judged_by_its_own_lease(
    manager: JobManager, supervisor, tmp_path: Path
) -> None:
    pid_file = tmp_path / "job.pid"
    job = manager.create_job(
        "agent",
        "slow",
        payload={"agent_name": "sleep", "parameters": {"seconds": 6, "pid_file": str(pid_file)}},
    )
    patient = supervisor("--lease", "30")  # heartbeats every 10 s
    wait_until(lambda: pid_file.exists(), 30, "the job to start", watch=patient)
    hasty = supervisor("--lease", "3")
    done = wait_until(lambda: finished(manager, job.id), 30, "the job", watch=hasty)
    assert done.status is JobStatus.COMPLETED and done.retry_count == 0
    [attempt] = manager.get_attempts(job.id)
    assert attempt.outcome == "completed"
    assert patient.process.poll() is None


@pytest.mark.timeout(120)
def test_an_outage_longer_than_a_heartbeat_takes_back_no_job(
    private_pg: PrivateCluster, private_pg_url: str, tmp_path: Path
) -> None:
    manager = JobManager(private_pg_url)
    files = [tmp_path / f"job{i}.pid" for i in range(4)]
    jobs = manager.create_jobs(
        [agent_job(f"j{i}", "sleep", seconds=8, pid_file=str(f)) for i, f in enumerate(files)]
    )
    args = ("--lease", "6", "--max-concurrent-jobs", "2")
    fleet = [Supervisor(private_pg_url, tmp_path, *args) for _ in range(2)]
    try:
        wait_until(lambda: all(f.exists() for f in files), 30, "every job to start", watch=fleet[0])
        assert len({_running(manager, job.id) for job in jobs}) == 2
        private_pg.stop()
        outage = time.monotonic()
        wait_until(lambda: time.monotonic() - outage >= 5, 10, "5 s of outage")
        private_pg.start()
        for job in jobs:
            done = wait_until(lambda j=job: _finished(manager, j.id), 60, job.name, watch=fleet[1])
            assert done.status is JobStatus.COMPLETED and done.retry_count == 0, done
            assert [a.outcome for a in manager.get_attempts(job.id)] == ["completed"]
        for sup in fleet:
            assert sup.process.poll() is None
            log = sup.log()  # back, its heartbeat went first
            assert log.index("heartbeat again after") < log.index("database reachable again")
    finally:
        for sup in fleet:
            sup.stop()
        manager.engine.dispose()


def test_claims_held_through_a_stall_are_checked_before_any_starts(
    pg_database_url: str, pg_manager: JobManager, tmp_path: Path
) -> None:
    manager, out = pg_manager, tmp_path / "ran.txt"
    jobs = manager.create_jobs([agent_job(f"j{i}", "append", path=str(out)) for i in range(600)])
    args = ("--lease", "3", "--max-concurrent-jobs", "2")
    for name in ("stalled", "peer"):  # a status file each
        (tmp_path / name).mkdir()
    stalled = Supervisor(pg_database_url, tmp_path / "stalled", *args)
    peer = Supervisor(pg_database_url, tmp_path / "peer", *args)
    try:
        for _ in range(20):  # until it is stopped with jobs claimed ahead, not yet started
            state = wait_until(
                lambda: (s := stalled.status()).get("claimed_ahead") and s,
                60,
                "claims ahead",
                watch=stalled,
            )
            stalled.signal(signal.SIGSTOP)
            log = stalled.log()
            running = manager.list_jobs("running", None)
            mine = [j.id for j in running if j.worker_id == state["worker_id"]]
            held = [j for j in mine if not re.search(rf"job {j} \(.*\) started", log)]
            if held:
                break
            stalled.signal(signal.SIGCONT)
        assert held, "never stopped while holding claims"
        # The peer takes them back and runs them meanwhile.
        for job_id in mine:
            wait_until(lambda j=job_id: finished(manager, j), 60, job_id, watch=peer)
        seen = out.stat().st_size
        stalled.signal(signal.SIGCONT)
        wait_until(
            lambda: state["worker_id"] in {w["id"] for w in manager.port.list_workers()},
            30,
            "the stalled supervisor's heartbeat",
            watch=stalled,
        )
        wait_until(lambda: manager.count_jobs() == {"completed": len(jobs)}, 60, "every job")
        with out.open() as ran:
            ran.seek(seen)
            again = set(ran.read().split()) & set(mine)
        assert again.isdisjoint(held), f"held jobs started after their claims lapsed: {again}"
        assert not again, f"ran again after their claims lapsed: {again}"
    finally:
        for sup in (stalled, peer):
            sup.signal(signal.SIGCONT)
            sup.stop()


def test_a_transaction_left_open_stalls_no_supervisor(
    pg_database_url: str, pg_manager: JobManager, tmp_path: Path
) -> None:
    """A supervisor stopped in a transaction holds its row and its jobs locked; the others
    neither wait on them nor go silent, and take its jobs once the locks go."""
    manager = pg_manager
    stuck_job = manager.create_job("agent", "stuck", payload={"agent_name": "plain"})
    manager.port.register("stopped:1:aaaa", "stopped", 1, lease=1.0)
    [claimed] = manager.claim_jobs("stopped:1:aaaa", 1)
    assert claimed.id == stuck_job.id
    holder = psycopg.connect(pg_database_url.split("?")[0], options=_options(pg_database_url))
    try:
        holder.execute("SELECT 1 FROM taiat_workers WHERE id = 'stopped:1:aaaa' FOR UPDATE")
        holder.execute("SELECT 1 FROM taiat_jobs WHERE id = %s FOR UPDATE", (stuck_job.id,))
        sup = Supervisor(pg_database_url, tmp_path, "--lease", "3")
        try:
            wait_until(lambda: sup.status().get("state") == "running", 30, "start", watch=sup)
            first = _heartbeat_of(manager, sup.status()["worker_id"])
            # Heartbeats go on (every second) and jobs run, the locks held all along.
            wait_until(
                lambda: _heartbeat_of(manager, sup.status()["worker_id"]) - first >= 3,
                30,
                "three more heartbeats",
                watch=sup,
            )
            job = manager.create_job("agent", "meanwhile", payload={"agent_name": "plain"})
            wait_until(lambda: finished(manager, job.id), 30, "a job meanwhile", watch=sup)
            assert _running(manager, stuck_job.id) == "stopped:1:aaaa"
            holder.rollback()
            done = wait_until(lambda: finished(manager, stuck_job.id), 30, "the stopped's job")
            assert done.retry_count == 1
        finally:
            sup.stop()
    finally:
        holder.close()


def test_a_lock_held_on_its_job_delays_the_ending_but_not_the_supervisor(
    pg_database_url: str, pg_manager: JobManager, tmp_path: Path
) -> None:
    """Another transaction holds a running job's row (a stopped peer's, say): recording its
    ending gives up waiting and tries again later; heartbeats and other jobs go on."""
    manager, pid_file = pg_manager, tmp_path / "job.pid"
    job = manager.create_job(
        "agent",
        "held",
        payload={"agent_name": "sleep", "parameters": {"seconds": 1, "pid_file": str(pid_file)}},
    )
    sup = Supervisor(pg_database_url, tmp_path, "--lease", "3")
    holder = psycopg.connect(pg_database_url.split("?")[0], options=_options(pg_database_url))
    try:
        wait_until(lambda: pid_file.exists(), 30, "the job to start", watch=sup)
        holder.execute("SELECT 1 FROM taiat_jobs WHERE id = %s FOR UPDATE", (job.id,))
        worker_id = sup.status()["worker_id"]
        first = _heartbeat_of(manager, worker_id)
        wait_until(lambda: "gave up waiting" in sup.log(), 30, "a lock wait cut short", watch=sup)
        wait_until(
            lambda: _heartbeat_of(manager, worker_id) - first >= 3,
            30,
            "three more heartbeats",
            watch=sup,
        )
        assert _running(manager, job.id) == worker_id
        holder.rollback()
        done = wait_until(lambda: finished(manager, job.id), 30, "the job", watch=sup)
        assert done.status is JobStatus.COMPLETED and done.retry_count == 0
        assert [a.outcome for a in manager.get_attempts(job.id)] == ["completed"]
    finally:
        holder.close()
        sup.stop()


def _options(url: str) -> str:
    from urllib.parse import parse_qs, urlsplit

    return parse_qs(urlsplit(url).query).get("options", [""])[0]


def _heartbeat_of(manager: JobManager, worker_id: str) -> float:
    [row] = [w for w in manager.port.list_workers() if w["id"] == worker_id]
    return row["heartbeat_at"].timestamp()


def _finished(manager: JobManager, job_id: str):  # noqa: ANN202 - a Job or None
    try:
        return finished(manager, job_id)
    except Exception:  # noqa: BLE001 - the server may still be coming back
        return None
