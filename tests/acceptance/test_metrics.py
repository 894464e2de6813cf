"""The metrics file, as node_exporter's textfile collector reads it: the jobs in the database by
what they wait for (`taiat_jobs{status=...}`), no series labelled by job, and a file that
`promtool check metrics` accepts."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from conftest import wait_until
from support import agent_job, check_metrics

from taiat import JobManager, JobStatus


def test_the_metrics_count_the_jobs_by_what_they_wait_for(
    manager: JobManager, supervisor, tmp_path
) -> None:
    pid_file = tmp_path / "job.pid"
    running = manager.create_job(
        **agent_job("sleeper-7", "sleep", seconds=60, pid_file=str(pid_file)), priority=1
    )
    manager.create_job(**agent_job("next", "plain"))  # ready: it waits for the one slot
    later = datetime.now(UTC) + timedelta(hours=1)
    scheduled = manager.create_job(**agent_job("in an hour", "plain"), run_at=later)
    manager.create_job(**agent_job("after it", "plain"), dependencies=[scheduled.id])
    sup = supervisor("--max-concurrent-jobs", "1", "--no-claim-ahead")
    wait_until(pid_file.exists, 30, "the long job to start", watch=sup)
    assert manager.get_job(running.id).status is JobStatus.RUNNING
    wanted = {"pending": 1, "ready": 1, "scheduled": 1, "running": 1}

    def counted() -> str | None:
        text = sup.metrics_file.read_text() if sup.metrics_file.exists() else ""
        found = dict(re.findall(r'^taiat_jobs\{status="(\w+)"\} (\d+)$', text, re.M))
        return text if {k: int(v) for k, v in found.items()} == wanted else None

    # Counted once every few seconds, and written with the next status.
    text = wait_until(counted, 30, f"taiat_jobs to count {wanted}", watch=sup)
    assert "# TYPE taiat_jobs gauge" in text
    # One series per figure, whatever runs: no label names a job.
    assert "job_id=" not in text and running.id not in text and "sleeper-7" not in text
    rss = re.findall(r"^taiat_supervisor_running_job_rss_bytes(\S*) ", text, re.M)
    assert rss in ([], [""])
    check_metrics(text)
