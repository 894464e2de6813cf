"""The supervisor's command line: exit codes, environment variables, --status, --version."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support import agent_job

from taiat import JobManager, JobStatus, __version__


def run(*args: str, env: dict | None = None, cwd: Path | None = None):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("TAIAT_")}
    return subprocess.run(
        [sys.executable, "-m", "taiat.run_worker", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**full_env, **(env or {})},
        cwd=cwd,
    )


def test_version_and_help() -> None:
    assert run("--version").stdout.strip() == __version__
    help_text = run("--help").stdout
    for option in [
        "--database-url",
        "--poll-interval",
        "--max-concurrent-jobs",
        "--cleanup-interval-hours",
        "--history-retention-days",
        "--job-timeout",
        "--memory-limit",
        "--drain-timeout",
        "--status-file",
        "--metrics-file",
        "--burst",
        "--log-level",
        "--status",
        "--version",
    ]:
        assert option in help_text


@pytest.mark.parametrize(
    ("args", "env", "code", "words"),
    [
        (["--bogus"], {}, 64, "Usage:"),
        (["--max-concurrent-jobs", "0"], {}, 78, "--max-concurrent-jobs"),
        ([], {"TAIAT_POLL_INTERVAL": "soon"}, 78, "TAIAT_POLL_INTERVAL"),
        ([], {"TAIAT_HISTORY_RETENTION_DAYS": "nan"}, 78, "finite"),
        (["--log-level", "LOUD"], {}, 78, "log level"),
        (["--status-file", "/nonexistent/dir/status.json"], {}, 78, "create /nonexistent/dir"),
        (["--database-url", "mysql://x/y"], {}, 78, "unsupported database URL scheme"),
        ([], {"TAIAT_AGENT_CONFIG": "{not json"}, 78, "TAIAT_AGENT_CONFIG is not valid JSON"),
        ([], {"TAIAT_AGENT_CONFIG": '{"a": "nope.nothing:f"}'}, 78, "cannot import nope"),
        ([], {"TAIAT_AGENT_CONFIG": '{"a": ' * 10_000}, 78, "nests too deeply"),
        (["--database-url", "postgresql://postgres@127.0.0.1:1/x"], {}, 69, "unavailable"),
        (["--database-url", ""], {}, 78, "the database URL is empty"),
        (["--lease", "1e308"], {}, 78, "--lease (or TAIAT_LEASE) must be at most"),
        ([], {"TAIAT_MEMORY_LIMIT": "1e308"}, 78, "TAIAT_MEMORY_LIMIT) must be at most"),
        (["--history-retention-days", "40000"], {}, 78, "must be at most 36500"),
    ],
)
def test_bad_settings_exit_with_their_code(args, env, code, words, tmp_path: Path) -> None:
    result = run(*args, env=env, cwd=tmp_path)
    assert result.returncode == code, result.stderr
    assert words in result.stderr
    assert not (tmp_path / "taiat.db").exists() or code != 78


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["--database-url", "postgresql//u:S3cretPW@localhost/db"], 78),
        (["--database-url", "postgresql://u:S3cretPW@localhost:notaport/db"], 78),
        (
            [
                "--database-url=postgresql://u:S3cretPW@h/db",
                "--database-url=postgresql://u:S3cretPW@h/db",
            ],
            64,
        ),
        (["postgresql://u:S3cretPW@h/db"], 64),
    ],
)
def test_no_error_shows_the_password(args: list[str], code: int, tmp_path: Path) -> None:
    result = run(*args, cwd=tmp_path)
    assert result.returncode == code, result.stderr
    assert "S3cretPW" not in result.stderr + result.stdout


@pytest.mark.parametrize("setting", [["--memory-limit", "1e308"], ["--lease", "1e308"]])
def test_a_setting_out_of_range_changes_nothing(database_url: str, setting: list[str]) -> None:
    manager = JobManager(database_url)
    try:
        job = manager.create_job("agent", "waiting", payload={"agent_name": "plain"})
        result = run("--burst", "--database-url", database_url, *setting)
        assert result.returncode == 78, result.stderr
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
        found = manager.get_job(job.id)
        assert found is not None and found.status is JobStatus.PENDING
        assert found.retry_count == 0 and manager.get_attempts(job.id) == []
    finally:
        manager.engine.dispose()


def test_uninitialised_database_exit_code(empty_url: str) -> None:
    result = run("--database-url", empty_url)
    assert result.returncode == 65
    assert "python -m taiat.init_worker" in result.stderr


def test_environment_configures_the_supervisor(database_url: str, tmp_path: Path) -> None:
    manager = JobManager(database_url)
    [job] = manager.create_jobs([{**agent_job("slow", "sleep", seconds=30)}])
    status_file = tmp_path / "s.json"
    result = run(
        env={
            "TAIAT_DATABASE_URL": database_url,
            "TAIAT_BURST": "1",
            "TAIAT_JOB_TIMEOUT": "0.5",
            "TAIAT_POLL_INTERVAL": "0.1",
            "TAIAT_STATUS_FILE": str(status_file),
            "PYTHONPATH": str(Path(__file__).parent),
            "TAIAT_AGENT_CONFIG": '{"sleep": "agents:sleep"}',
            "TAIAT_MAX_CONCURRENT_JOBS": "2",
        }
    )
    assert result.returncode == 0, result.stderr
    done = manager.get_job(job.id)
    assert done.status is JobStatus.FAILED and done.error_message == "timed out after 0.5 s"
    assert done.retry_count == 3
    assert '"slots": 2' in status_file.read_text()
    manager.engine.dispose()


def test_status_prints_jobs_and_supervisors(database_url: str, tmp_path: Path) -> None:
    manager = JobManager(database_url)
    manager.create_jobs([agent_job("waiting", "plain"), agent_job("doomed", "plain")])
    doomed = manager.list_jobs(status="pending")[0]
    manager.cancel_job(doomed.id)
    result = run("--status", "--database-url", database_url)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "jobs: pending 1, running 0, completed 0, failed 0, cancelled 1" in out
    assert "ready jobs (1 shown" in out
    assert "cancelled" in out and "supervisors (0)" in out
    manager.engine.dispose()


def test_default_database_is_the_embedded_file(tmp_path: Path) -> None:
    assert (
        subprocess.run(
            [sys.executable, "-m", "taiat.init_worker"],
            cwd=tmp_path,
            capture_output=True,
            timeout=60,
            env={k: v for k, v in os.environ.items() if not k.startswith("TAIAT_")},
        ).returncode
        == 0
    )
    result = run("--burst", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"sqlite:///{tmp_path}/taiat.db" in result.stderr


def _agents() -> dict[str, str]:
    return {
        "PYTHONPATH": str(Path(__file__).parent),
        "TAIAT_AGENT_CONFIG": '{"plain": "agents:plain"}',
    }


def test_a_burst_leaves_jobs_scheduled_for_later_and_says_how_many_until_when(
    database_url: str,
) -> None:
    manager = JobManager(database_url)
    try:
        now = manager.create_job(**agent_job("now", "plain"))
        later = datetime.now(UTC) + timedelta(hours=1)
        scheduled = manager.create_job(**agent_job("in an hour", "plain"), run_at=later)
        after = manager.create_job(**agent_job("after it", "plain"), dependencies=[scheduled.id])
        result = run(
            "--burst", "--poll-interval", "0.2", "--database-url", database_url, env=_agents()
        )
        assert result.returncode == 0, result.stderr
        assert manager.get_job(now.id).status is JobStatus.COMPLETED
        for waiting in (scheduled, after):
            assert manager.get_job(waiting.id).status is JobStatus.PENDING
        when = f"{manager.get_job(scheduled.id).run_at:%Y-%m-%d %H:%M:%S} UTC"
        assert (
            f"burst: no job left to run before {when}: 2 jobs wait until then or later "
            "(1 for its run_at, 1 for a job they depend on); --burst-wait-scheduled waits"
        ) in result.stderr
        # The progress line says it too.
        assert "burst: 1 of 1 jobs done, 0 failed" in result.stderr
        assert f"; 2 jobs left waiting until {when} or later" in result.stderr
    finally:
        manager.engine.dispose()


@pytest.mark.parametrize("how", ["option", "variable"])
def test_a_burst_waiting_for_scheduled_jobs_runs_them_when_they_are_due(
    database_url: str, how: str
) -> None:
    manager = JobManager(database_url)
    try:
        soon = datetime.now(UTC) + timedelta(seconds=3)  # well beyond the poll interval
        job = manager.create_job(**agent_job("soon", "plain"), run_at=soon)
        if how == "option":
            args, env = ["--burst-wait-scheduled"], _agents()
        else:  # the variable alone makes a burst that waits
            args, env = [], {**_agents(), "TAIAT_BURST_WAIT_SCHEDULED": "1"}
        result = run(*args, "--poll-interval", "0.2", "--database-url", database_url, env=env)
        assert result.returncode == 0, result.stderr
        done = manager.get_job(job.id)
        assert done.status is JobStatus.COMPLETED and done.started_at >= soon.replace(tzinfo=None)
        assert "burst: no job left to run" in result.stderr
    finally:
        manager.engine.dispose()
