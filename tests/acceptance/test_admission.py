"""Admission by memory, through the real supervisor: a job whose agent lately needed more
memory than the host has to spare, less `--memory-reserve`, waits, pending, and the status file
says so; another supervisor with room runs it, or the same one once memory is freed; an agent
never seen is admitted as before."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import psutil
from conftest import Supervisor, wait_until
from support import agent_job, finished

from taiat import JobManager, JobStatus

MiB = 1 << 20


def test_a_job_whose_agent_lately_needed_more_memory_than_is_left_waits_for_room(
    database_url: str, manager: JobManager, tmp_path: Path
) -> None:
    sups: list[Supervisor] = []

    def start(name: str, *args: str) -> Supervisor:
        (tmp_path / name).mkdir()
        sups.append(Supervisor(database_url, tmp_path / name, *args))
        return sups[-1]

    try:
        # The agent's recent peaks: three attempts of 200 MiB.
        first = start("first")
        seeds = manager.create_jobs(
            [agent_job(f"seed-{n}", "allocate", megabytes=200) for n in range(3)]
        )
        for job in seeds:
            done = wait_until(lambda j=job: finished(manager, j.id), 60, "the seeds", watch=first)
            assert done.status is JobStatus.COMPLETED, done.error_message
            [attempt] = manager.get_attempts(job.id)
            assert attempt.peak_rss_bytes is not None and attempt.peak_rss_bytes >= 200 * MiB
        first.signal(signal.SIGTERM)
        assert first.wait() == 0

        # 99% of the host's memory kept free: nothing is left for a job of a known agent.
        tight = start("tight", "--memory-reserve", "99%")
        big = manager.create_job(**agent_job("big", "allocate", megabytes=200))
        never_seen = manager.create_job(**agent_job("never-seen", "plain", value=1))
        done = wait_until(lambda: finished(manager, never_seen.id), 60, "the new agent's job")
        assert done.status is JobStatus.COMPLETED, done.error_message

        def waiting() -> dict | None:
            shown = tight.status().get("waiting_for_memory")
            if shown and shown["agents"].get("allocate", {}).get("ready_jobs") == 1:
                return shown
            return None

        shown = wait_until(waiting, 30, "waiting_for_memory in the status file", watch=tight)
        assert shown["agents"]["allocate"]["estimate_bytes"] >= 200 * MiB
        assert shown["room_bytes"] == 0 and shown["reserve_bytes"] > shown["available_bytes"]
        # "plain" ran, never seen before; now that its peak is known, it has no room either.
        assert set(shown["agents"]) == {"allocate", "plain"}
        still = manager.get_job(big.id)
        assert still is not None and still.status is JobStatus.PENDING
        assert "agent allocate held back: its jobs lately peaked at" in tight.log()

        # Room returns: a supervisor that keeps 1% free takes the job; the tight one never did.
        roomy = start("roomy", "--memory-reserve", "1%")
        done = wait_until(lambda: finished(manager, big.id), 60, "the big job", watch=roomy)
        assert done.status is JobStatus.COMPLETED, done.error_message
        [attempt] = manager.get_attempts(big.id)
        assert attempt.worker_id == wait_until(lambda: roomy.status().get("worker_id"))
        assert roomy.status()["waiting_for_memory"] is None
        # Once the tight one counts again, no job of the agent waits.
        wait_until(
            lambda: tight.status()["waiting_for_memory"]["agents"]["allocate"]["ready_jobs"] == 0,
            30,
            "no job left waiting",
            watch=tight,
        )
    finally:
        for sup in sups:
            sup.stop()


#: Holds this many MiB, touched, until killed (the host's memory taken, then given back).
BALLAST = (
    "import sys, time; block = bytearray(int(sys.argv[1]) << 20); "
    "[block.__setitem__(i, 1) for i in range(0, len(block), 4096)]; "
    "print('held', flush=True); time.sleep(600)"
)


def test_a_held_job_starts_on_the_same_host_when_room_returns(
    manager: JobManager, supervisor
) -> None:
    """The room made small by a reserve of all but 600 MiB of what the host has free, less a
    GiB another process then holds: a job whose agent lately peaked at 200 MiB waits; once that
    process lets go of its memory, the same supervisor starts it."""
    seeder = supervisor()
    seeds = manager.create_jobs(
        [agent_job(f"seed-{n}", "allocate", megabytes=200) for n in range(3)]
    )
    for job in seeds:
        done = wait_until(lambda j=job: finished(manager, j.id), 60, "the seeds", watch=seeder)
        assert done.status is JobStatus.COMPLETED, done.error_message
    seeder.signal(signal.SIGTERM)
    assert seeder.wait() == 0
    seeder.status_file.unlink()  # the next one writes the same file

    reserve = psutil.virtual_memory().available - 600 * MiB
    with subprocess.Popen(
        [sys.executable, "-c", BALLAST, "1024"], stdout=subprocess.PIPE, text=True
    ) as ballast:
        try:
            assert ballast.stdout is not None and ballast.stdout.readline() == "held\n"
            tight = supervisor("--memory-reserve", f"{reserve // MiB}M")
            big = manager.create_job(**agent_job("big", "allocate", megabytes=200))

            def waiting() -> dict | None:
                shown = tight.status().get("waiting_for_memory")
                if shown and shown["agents"].get("allocate", {}).get("ready_jobs") == 1:
                    return shown
                return None

            wait_until(waiting, 30, "waiting_for_memory in the status file", watch=tight)
            still = manager.get_job(big.id)
            assert still is not None and still.status is JobStatus.PENDING
        finally:
            ballast.kill()
    done = wait_until(lambda: finished(manager, big.id), 60, "the big job", watch=tight)
    assert done.status is JobStatus.COMPLETED, done.error_message
    assert "agent allocate admitted again" in tight.log()


def test_a_reserve_that_is_no_percentage_or_size_is_refused(tmp_path: Path) -> None:
    sup = Supervisor(f"sqlite:///{tmp_path / 'x.db'}", tmp_path, "--memory-reserve", "5")
    try:
        assert sup.wait() == 78
        assert "--memory-reserve (or TAIAT_MEMORY_RESERVE) must be a percentage" in sup.log()
    finally:
        sup.stop()
