"""Where a job hung: its stack, dumped before a timeout or a cancel ends it, and on demand."""

from __future__ import annotations

from pathlib import Path

from conftest import HERE, pid_alive, wait_until
from support import agent_job, finished

from taiat import JobManager, JobStatus


def _hang_line() -> int:
    """The line of `agents.wait_for_api` where the `stuck` agent sleeps."""
    lines = (HERE / "agents.py").read_text().splitlines()
    return next(n for n, line in enumerate(lines, 1) if "# where it hangs" in line)


def test_a_timed_out_job_says_where_it_was(manager: JobManager, supervisor) -> None:
    [job] = manager.create_jobs(
        [{**agent_job("hung", "stuck", seconds=60), "timeout_seconds": 1, "max_retries": 0}]
    )
    sup = supervisor("--kill-grace", "1")
    done = wait_until(lambda: finished(manager, job.id), 60, "the timeout", watch=sup)
    assert done.status is JobStatus.FAILED
    where = f'agents.py", line {_hang_line()}, in wait_for_api'
    assert done.error_message.startswith('timed out after 1 s; it was at: File "')
    assert done.error_message.endswith(where), done.error_message
    [attempt] = manager.get_attempts(job.id)
    assert attempt.outcome == "timed_out"
    assert attempt.stack is not None and "in wait_for_api" in attempt.stack
    assert "in stuck" in attempt.stack  # the whole stack, its caller too


def test_a_cancelled_job_says_where_it_was(manager: JobManager, supervisor, tmp_path: Path) -> None:
    pid_file = tmp_path / "job.pid"
    [job] = manager.create_jobs([agent_job("hung", "stuck", seconds=60, pid_file=str(pid_file))])
    sup = supervisor()
    wait_until(lambda: pid_file.exists() and pid_file.read_text(), 30, "the job", watch=sup)
    child = int(pid_file.read_text())
    assert manager.cancel_job(job.id)
    wait_until(lambda: not pid_alive(child), 10, "the child to be killed", watch=sup)
    [attempt] = wait_until(lambda: manager.get_attempts(job.id), 10, "the attempt", watch=sup)
    assert attempt.outcome in ("cancelled", "superseded")
    start = "cancelled while running" if attempt.outcome == "cancelled" else "cancelled, or"
    assert attempt.error_message.startswith(start), attempt.error_message
    where = f'; it was at: File "{HERE / "agents.py"}", line {_hang_line()}, in wait_for_api'
    assert attempt.error_message.endswith(where), attempt.error_message
    assert manager.get_job(job.id).status is JobStatus.CANCELLED


def test_taiat_jobs_stack_shows_a_running_job_where_it_is(
    manager: JobManager, supervisor, tmp_path: Path
) -> None:
    from test_operator_cli import taiat

    pid_file = tmp_path / "job.pid"
    [job] = manager.create_jobs([agent_job("hung", "stuck", seconds=60, pid_file=str(pid_file))])
    url = str(manager.engine.url.render_as_string(hide_password=False))
    sup = supervisor()
    wait_until(lambda: pid_file.exists() and pid_file.read_text(), 30, "the job", watch=sup)
    child = int(pid_file.read_text())
    for _ in range(2):  # asked twice, answered twice: a request is counted, not a flag
        shown = taiat("jobs", "stack", job.id[:8], "--timeout", "20", url=url)
        assert shown.returncode == 0, shown.stderr
        assert f'agents.py", line {_hang_line()} in wait_for_api' in shown.stdout
        assert "in stuck" in shown.stdout
    # Without stopping it: the job runs on, and nothing was recorded as an attempt.
    assert pid_alive(child)
    assert manager.get_job(job.id).status is JobStatus.RUNNING
    assert manager.get_attempts(job.id) == []
    assert "in wait_for_api" in manager.job_stack(job.id, timeout=20)
    assert manager.cancel_job(job.id)
    wait_until(lambda: not pid_alive(child), 10, "the child to be killed", watch=sup)
    gone = taiat("jobs", "stack", job.id, "--timeout", "2", url=url)
    assert gone.returncode == 1
    assert "is cancelled, not running" in gone.stderr
