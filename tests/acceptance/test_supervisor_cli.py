"""The supervisor's command line: exit codes, environment variables, --status, --version."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url
from support import agent_job

from taiat import JobManager, JobStatus, __version__
from taiat.cli.exits import EXIT_CONFIG, EXIT_DB_UNAVAILABLE
from taiat.store import db, schema


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
        "--path",
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
        (["--bogus"], {}, 64, "error: unknown option --bogus"),
        (["--max-concurrent-jobs", "0"], {}, 78, "--max-concurrent-jobs"),
        ([], {"TAIAT_POLL_INTERVAL": "soon"}, 78, "TAIAT_POLL_INTERVAL"),
        ([], {"TAIAT_HISTORY_RETENTION_DAYS": "nan"}, 78, "finite"),
        (["--log-level", "LOUD"], {}, 78, "log level"),
        (["--status-file", "/nonexistent/dir/status.json"], {}, 78, "create /nonexistent/dir"),
        (["--database-url", "mysql://x/y"], {}, 78, "unsupported database URL scheme"),
        ([], {"TAIAT_AGENT_CONFIG": "{not json"}, 78, "TAIAT_AGENT_CONFIG is not valid JSON"),
        ([], {"TAIAT_AGENT_CONFIG": '{"a": "nope.nothing:f"}'}, 78, "cannot import nope"),
        ([], {"TAIAT_AGENT_CONFIG": '["agents:plain"]'}, 78, "agent names, {"),
        ([], {"TAIAT_AGENT_CONFIG": '["agents:plain"]'}, 78, "not a JSON array"),
        ([], {"TAIAT_AGENT_CONFIG": '{"a": ' * 10_000}, 78, "nests too deeply"),
        (["--database-url", "postgresql://postgres@127.0.0.1:1/x"], {}, 69, "unavailable"),
        (["--database-url", ""], {}, 78, "the database URL is empty"),
        (["--lease", "1e308"], {}, 78, "--lease (or TAIAT_LEASE) must be at most"),
        ([], {"TAIAT_MEMORY_LIMIT": "1e308"}, 78, "TAIAT_MEMORY_LIMIT) must be at most"),
        ([], {"TAIAT_MEMORY_LIMIT": "2X"}, 78, "TAIAT_MEMORY_LIMIT) must be a number of MB or"),
        (["--history-retention-days", "40000"], {}, 78, "must be at most 36500"),
        (["--job-user", "no-such-user-taiat"], {}, 78, "'no-such-user-taiat': no such user"),
        ([], {"TAIAT_JOB_USER": "root"}, 78, "jobs cannot run as user 'root': it is root"),
    ],
)
def test_bad_settings_exit_with_their_code(args, env, code, words, tmp_path: Path) -> None:
    result = run(*args, env=env, cwd=tmp_path)
    assert result.returncode == code, result.stderr
    assert words in result.stderr
    assert not (tmp_path / "taiat.db").exists() or code != 78


@pytest.mark.parametrize("entry", ["script", "module"])
def test_a_misspelt_option_is_named_in_one_line(entry: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [*entry_command(entry), "--max-concurent-jobs", "4"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )

    assert result.returncode == 64
    assert result.stderr == (
        "error: unknown option --max-concurent-jobs (did you mean --max-concurrent-jobs?); "
        "see `taiat-supervisor --help`\n"
    )
    assert result.stdout == ""


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
    assert done.status is JobStatus.FAILED and done.error_message.startswith(
        "timed out after 0.5 s; it was at: File "
    )
    assert done.retry_count == 3
    assert '"slots": 2' in status_file.read_text()
    manager.engine.dispose()


def test_a_memory_limit_with_a_unit_is_the_limit(database_url: str) -> None:
    # The environment file suggests TAIAT_MEMORY_LIMIT=2G; a size with a unit is taken.
    manager = JobManager(database_url)
    try:
        job = manager.create_job(**agent_job("hog", "hog", megabytes=150), max_retries=0)
        result = run(
            "--burst",
            "--database-url",
            database_url,
            env={
                "TAIAT_MEMORY_LIMIT": "100M",
                "PYTHONPATH": str(Path(__file__).parent),
                "TAIAT_AGENT_CONFIG": '{"hog": "agents:hog"}',
            },
        )
        assert result.returncode == 0, result.stderr
        done = manager.get_job(job.id)
        assert done is not None and done.status is JobStatus.FAILED
        # The kernel's words in a sandbox, the supervisor's without one.
        assert done.error_message.startswith("exceeded memory limit of 100 MB")
    finally:
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


# -- where agents are imported from ---------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]
AGENTS_MODULE = """
import os


def greet(name: str) -> dict:
    return {"greeting": f"hello {name}", "parent": os.getppid()}
"""


def entry_command(entry: str) -> list[str]:
    """The supervisor as `entry`: the installed script, the checkout's launcher, `python -m`."""
    if entry == "script":
        script = shutil.which("taiat-supervisor", path=str(Path(sys.executable).parent))
        if script is None:
            pytest.skip("taiat-supervisor is not installed beside this Python")
        return [script]
    if entry == "bin":
        return [sys.executable, str(ROOT / "bin" / "taiat-supervisor")]
    return [sys.executable, "-m", "taiat.run_worker"]


def greet_in(folder: Path, module: str = "myagents") -> str:
    """A database in `folder` holding one job for the agent greet of `module`; its id."""
    (folder / "taiat.db").unlink(missing_ok=True)
    url = f"sqlite:///{folder / 'taiat.db'}"
    engine = db.engine_from_url(url)
    schema.initialise(engine)
    engine.dispose()
    manager = JobManager(url)
    try:
        job = manager.create_job(
            "agent", "hi", payload={"agent_name": "greet", "parameters": {"name": "you"}}
        )
        return job.id
    finally:
        manager.engine.dispose()


def burst(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, str, int]:
    """Run a burst supervisor; its exit code, its stderr and its pid."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("TAIAT_")}
    process = subprocess.Popen(
        [*command, "--burst", "--poll-interval", "0.2"],
        cwd=cwd,
        env={**full_env, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _, stderr = process.communicate(timeout=60)
    return process.returncode, stderr, process.pid


def greeted(folder: Path, job_id: str) -> dict:
    manager = JobManager(f"sqlite:///{folder / 'taiat.db'}")
    try:
        job = manager.get_job(job_id)
        assert job is not None and job.status is JobStatus.COMPLETED, job
        return job.result
    finally:
        manager.engine.dispose()


@pytest.mark.parametrize("no_fork_server", [False, True])
@pytest.mark.parametrize("entry", ["script", "bin", "module"])
def test_every_entry_imports_agents_from_its_working_directory(
    entry: str, no_fork_server: bool, tmp_path: Path
) -> None:
    # The README's operator quick start: myagents.py in the folder the supervisor runs in.
    (tmp_path / "myagents.py").write_text(AGENTS_MODULE)
    (tmp_path / "agents.json").write_text(json.dumps({"greet": "myagents:greet"}))
    job_id = greet_in(tmp_path)
    command = entry_command(entry) + (["--no-fork-server"] if no_fork_server else [])

    code, stderr, pid = burst(
        command, tmp_path, {"TAIAT_AGENT_CONFIG": str(tmp_path / "agents.json")}
    )

    assert code == 0, stderr
    result = greeted(tmp_path, job_id)
    assert result["greeting"] == "hello you"
    # Run by a child of the fork server, which has the supervisor's import path.
    assert (result["parent"] == pid) is no_fork_server, stderr
    assert "cannot load the executors" not in stderr


def test_path_names_the_folders_agents_are_imported_from(tmp_path: Path) -> None:
    lib, other, run_in = tmp_path / "lib", tmp_path / "other", tmp_path / "run"
    for folder in (lib, other, run_in):
        folder.mkdir()
    (lib / "myagents.py").write_text(AGENTS_MODULE)
    (other / "moreagents.py").write_text(AGENTS_MODULE)
    config = {"TAIAT_AGENT_CONFIG": '{"greet": "myagents:greet", "more": "moreagents:greet"}'}

    # Not in the working directory: refused, naming the path searched and the way out.
    code, stderr, _ = burst(entry_command("script"), run_in, config)
    assert code == 78, stderr
    assert stderr.count("\n") == 1 and "cannot import myagents" in stderr
    assert f"searched the import path {run_in}:" in stderr and "--path DIR" in stderr

    # --path, repeatable and relative to the working directory; the fork server has it too.
    job_id = greet_in(run_in)
    code, stderr, pid = burst(
        [*entry_command("script"), "--path", "../lib", "--path", str(other)], run_in, config
    )
    assert code == 0, stderr
    result = greeted(run_in, job_id)
    assert result["greeting"] == "hello you" and result["parent"] != pid
    assert "cannot load the executors" not in stderr

    # TAIAT_PATH, folders separated by colons; --path wins over it.
    job_id = greet_in(run_in)
    env = {**config, "TAIAT_PATH": f"{lib}:{other}"}
    code, stderr, _ = burst(entry_command("module"), run_in, env)
    assert code == 0, stderr
    assert greeted(run_in, job_id)["greeting"] == "hello you"
    code, stderr, _ = burst(
        [*entry_command("module"), "--path", str(other)], run_in, {**env, "TAIAT_PATH": str(lib)}
    )
    assert code == 78 and "cannot import myagents" in stderr, stderr


@pytest.mark.parametrize(
    ("args", "env", "words"),
    [
        (["--path", "nowhere"], {}, "error: --path: nowhere is not a directory"),
        ([], {"TAIAT_PATH": "/nonexistent/agents"}, "TAIAT_PATH: /nonexistent/agents is not a"),
    ],
)
def test_a_path_that_is_not_a_folder_is_a_bad_setting(
    args: list[str], env: dict[str, str], words: str, tmp_path: Path
) -> None:
    result = run(*args, env=env, cwd=tmp_path)
    assert result.returncode == 78, result.stderr
    assert words in result.stderr


# -- a database that is there, or not --------------------------------------------------------

COMMANDS = {
    "supervisor": [sys.executable, "-m", "taiat.run_worker"],
    "taiat": [sys.executable, "-m", "taiat", "jobs", "list"],
    "init": [sys.executable, "-m", "taiat.init_worker"],
}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("missing", ["database", "role"])
def test_a_database_or_role_that_does_not_exist_is_a_bad_setting(
    pg_database: str, missing: str, command: str, tmp_path: Path
) -> None:
    # The server is reached and refuses: a typo in the URL, which restarting will not fix.
    name = f"taiat_no_such_{missing}_{os.getpid()}"
    url = make_url(pg_database).set(**{"database" if missing == "database" else "username": name})

    result = subprocess.run(
        [*COMMANDS[command], "--database-url", url.render_as_string(hide_password=False)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if not k.startswith("TAIAT_")},
    )

    assert result.returncode == EXIT_CONFIG, result.stderr
    assert f'refused the connection: {missing} "{name}" does not exist' in result.stderr
    assert f"create the {missing}" in result.stderr and "unavailable" not in result.stderr


@pytest.mark.parametrize(
    ("url", "code", "words"),
    [
        # Worth a retry: the server may come up later.
        ("postgresql://postgres@127.0.0.1:1/taiat", EXIT_DB_UNAVAILABLE, "is unavailable"),
        # A bad setting: no retry can fix it.
        ("mysql://taiat@db.example/taiat", EXIT_CONFIG, "unsupported database URL scheme 'mysql'"),
    ],
    ids=["unreachable", "unsupported"],
)
@pytest.mark.parametrize("command", COMMANDS)
def test_a_database_that_cannot_be_used_exits_by_why(
    command: str, url: str, code: int, words: str, tmp_path: Path
) -> None:
    result = subprocess.run(
        [*COMMANDS[command], "--database-url", url],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )

    assert result.returncode == code, result.stderr
    assert words in result.stderr
