"""The `taiat` command through its real entry points, on PostgreSQL and SQLite: every
subcommand, its output and exit code, bad input, the live view and progress on a terminal."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import AGENT_CONFIG, HERE, ROOT, wait_until
from pty_run import PtyProcess
from support import agent_job, finished

from taiat import JobManager, JobStatus, __version__
from taiat.cli.exits import EXIT_CANCELLED, EXIT_CONFIG
from taiat.store import schema

TAIAT = [sys.executable, "-m", "taiat"]


def environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAIAT_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(HERE), os.environ.get("PYTHONPATH", "")])
    env["TAIAT_AGENT_CONFIG"] = json.dumps(AGENT_CONFIG)
    return {**env, **extra}


def taiat(*args: str, url: str | None = None, **extra: str) -> subprocess.CompletedProcess[str]:
    command = [*TAIAT, *args] + (["--database-url", url] if url else [])
    return subprocess.run(
        command, capture_output=True, text=True, timeout=60, env=environment(**extra)
    )


def ok(*args: str, url: str | None = None) -> str:
    result = taiat(*args, url=url)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result.stdout


@pytest.fixture
def manager(database_url: str) -> Iterator[JobManager]:
    jm = JobManager(database_url)
    yield jm
    jm.engine.dispose()


def test_entry_points_agree() -> None:
    assert ok("--version").strip() == __version__
    launcher = subprocess.run(
        [str(ROOT / "bin" / "taiat"), "--help"], capture_output=True, text=True, timeout=60
    )
    assert launcher.returncode == 0
    assert launcher.stdout == ok("--help")
    for command in ["jobs list", "jobs create", "graph ID", "top", "wait ID...", "Exit codes"]:
        assert command in launcher.stdout


def test_a_commands_help_is_its_own(tmp_path: Path) -> None:
    for words, usage_line, unrelated in [
        (
            ["jobs", "create", "--help"],
            "taiat jobs create --type TYPE --name NAME",
            "taiat jobs list",
        ),
        (["graph", "-h"], "taiat graph ID", "--name NAME"),
        (["wait", "abcdef12", "--help"], "taiat wait ID...", "--format F"),
    ]:
        result = subprocess.run(
            [*TAIAT, *words],
            capture_output=True,
            text=True,
            timeout=60,
            env=environment(),
            cwd=tmp_path,
        )
        assert result.returncode == 0 and result.stderr == "", result.stderr
        assert result.stdout.startswith(f"Usage:\n  {usage_line}")
        assert "\nOptions:\n" in result.stdout and "-h --help" in result.stdout
        assert unrelated not in result.stdout and "taiat top" not in result.stdout
    assert "--name NAME" in ok("jobs", "create", "--help") and "--file FILE" in ok(
        "jobs", "create", "--help"
    )
    assert list(tmp_path.iterdir()) == []
    missing = taiat("jobs", "create", "--type", "agent")
    assert missing.returncode == 64 and missing.stdout == ""
    assert missing.stderr == "taiat: error: jobs create: --name is required\n"


def test_create_list_and_show(database_url: str, manager: JobManager) -> None:
    url = database_url
    first = ok(
        "jobs",
        "create",
        "--type",
        "agent",
        "--name",
        "fetch-data",
        "--payload",
        '{"agent_name": "plain", "parameters": {"value": 1}}',
        url=url,
    ).strip()
    second = ok(
        "jobs",
        "create",
        "--type",
        "query",
        "--name",
        "load-data",
        "--payload",
        '{"inferred_goal_output": "table"}',
        "--depends-on",
        first,
        "--priority",
        "5",
        "--max-retries",
        "1",
        "--timeout",
        "30",
        url=url,
    ).strip()
    later = ok(
        "jobs", "create", "--type", "agent", "--name", "Report", "--run-at", "+1h", url=url
    ).strip()
    job = manager.get_job(second)
    assert job.dependencies == [first] and job.priority == 5 and job.max_retries == 1
    assert job.timeout_seconds == 30 and job.unmet_dependencies == 1
    assert manager.get_job(later).run_at > manager.get_job(first).run_at

    table = ok("jobs", "list", url=url)
    assert table.splitlines()[0].split()[:3] == ["ID", "NAME", "STATUS"]
    for job_id in (first, second, later):
        assert job_id in table
    ready = ok("jobs", "list", "--ready", url=url)
    assert first in ready and second not in ready and later not in ready
    named = ok("jobs", "list", "--name", "*-DATA", "--json", url=url)
    assert sorted(j["name"] for j in json.loads(named)) == ["fetch-data", "load-data"]
    limited = json.loads(
        ok("jobs", "list", "--status", "pending", "--limit", "1", "--json", url=url)
    )
    assert len(limited) == 1 and limited[0]["status"] == "pending"

    shown = json.loads(ok("jobs", "show", second, "--json", url=url))
    assert shown["job"]["id"] == second and shown["job"]["status"] == "pending"
    assert shown["dependencies"] == [{"id": first, "name": "fetch-data", "status": "pending"}]
    assert shown["attempts"] == []
    text = ok("jobs", "show", first, url=url)
    assert f"job {first}" in text and '"agent_name": "plain"' in text
    assert "dependencies: none" in text and "attempts: none yet" in text


def test_cancel_retry_history_and_cleanup(database_url: str, manager: JobManager) -> None:
    url = database_url
    first, second = (
        j.id
        for j in manager.create_jobs(
            [
                {"id": "a-1", **agent_job("first", "plain")},
                {"id": "a-2", **agent_job("second", "plain"), "dependencies": ["a-1"]},
            ]
        )
    )
    assert "cancelled job a-1" in ok("jobs", "cancel", first, url=url)
    assert manager.get_job(second).status is JobStatus.CANCELLED
    again = taiat("jobs", "cancel", first, url=url)
    assert again.returncode == 1
    assert again.stderr == f"taiat: error: job {first} already cancelled; nothing to cancel\n"

    history = json.loads(ok("history", "--json", url=url))
    assert {(e["job_id"], e["status"]) for e in history} == {
        (first, "cancelled"),
        (second, "cancelled"),
    }
    text = ok("history", "--status", "cancelled", "--limit", "5", url=url)
    assert "cancelled by request" in text and "dependency job a-1 (first) was cancelled" in text

    created = manager.get_job(first).created_at
    assert "is pending again" in ok("jobs", "retry", first, url=url)
    retried = manager.get_job(first)
    assert retried.status is JobStatus.PENDING and retried.created_at == created
    # It never ran: none of its four tries used. Its history says when it was retried.
    [row] = [line for line in ok("jobs", "list", url=url).splitlines() if line.startswith(first)]
    assert row.split()[2:4] == ["pending", "0"] and row.split()[4] == "0/4", row
    assert "retried by request at " in ok("history", "--status", "cancelled", url=url)
    refused = taiat("jobs", "retry", first, url=url)
    assert refused.returncode == 1 and "only a failed or cancelled job" in refused.stderr

    assert ok("cleanup", "--days", "30", url=url).startswith("deleted 0 history entries")
    assert ok("cleanup", "--days", "0", url=url).startswith("deleted 2 history entries")
    assert json.loads(ok("history", "--json", url=url)) == []


def test_every_command_takes_the_beginning_of_an_id(database_url: str, manager: JobManager) -> None:
    url = database_url
    first = manager.create_job("agent", "first")
    short = first.id[:8]  # as the graph pictures print it
    second = ok(
        "jobs", "create", "--type", "agent", "--name", "second", "--depends-on", short, url=url
    )
    assert manager.get_job(second.strip()).dependencies == [first.id]
    assert json.loads(ok("jobs", "show", short, "--json", url=url))["job"]["id"] == first.id
    assert json.loads(ok("graph", first.id[:6], "--json", url=url))["root"] == first.id
    assert ok("jobs", "cancel", short, url=url).startswith(f"cancelled job {first.id} ")
    waited = taiat("wait", short, url=url)
    assert waited.stdout == f"{first.id}  cancelled  first\n", waited.stderr
    assert ok("jobs", "retry", short, url=url).startswith(f"job {first.id} (first) is pending")

    manager.create_jobs(
        [{"id": f"same01-{n}", "job_type": "agent", "name": f"twin-{n}"} for n in "ab"]
    )
    for command in (["jobs", "show"], ["jobs", "cancel"], ["graph"], ["wait"]):
        result = taiat(*command, "same01", url=url)
        assert result.returncode == 64, result.stderr
        assert result.stderr == (
            "taiat: error: ambiguous job id same01: it begins the ids of same01-a (twin-a, "
            "pending), same01-b (twin-b, pending); give more of the id\n"
        )
    result = taiat("jobs", "show", first.id[:5], url=url)
    assert result.returncode == 66
    assert "a shortened id needs at least 6 characters" in result.stderr
    assert manager.get_job("same01-a").status is JobStatus.PENDING


def test_create_a_whole_graph_from_a_file(
    database_url: str, manager: JobManager, tmp_path: Path
) -> None:
    url = database_url
    before = manager.create_job("agent", "before")
    graph = [
        {"id": "extract", "job_type": "agent", "name": "extract", "payload": {"n": 1}},
        {"id": "train", "job_type": "agent", "name": "train", "dependencies": ["extract"]},
        {
            "job_type": "agent",
            "name": "report",
            "dependencies": ["train", before.id[:8]],
            "priority": 5,
            "run_at": "+1h",
        },
    ]
    path = tmp_path / "jobs.json"
    path.write_text(json.dumps(graph))
    lines = ok("jobs", "create", "--file", str(path), url=url).splitlines()
    assert lines[:2] == ["extract  extract", "train  train"]
    key, report_id = lines[2].split("  ")
    assert key == "#2" and len(lines) == 3
    report = manager.get_job(report_id)
    assert report.dependencies == ["train", before.id] and report.priority == 5
    assert report.unmet_dependencies == 2 and report.run_at > manager.get_job("train").run_at
    assert manager.get_job("train").dependencies == ["extract"]

    renamed = json.dumps(graph).replace("extract", "load").replace('"train"', '"fit"')
    piped = subprocess.run(
        [*TAIAT, "jobs", "create", "--file", "-", "--json", "--database-url", url],
        input=renamed,
        capture_output=True,
        text=True,
        timeout=60,
        env=environment(),
    )
    assert piped.returncode == 0, piped.stderr
    created = json.loads(piped.stdout)
    assert list(created) == ["load", "fit", "#2"] and created["fit"] == "fit"
    assert manager.get_job(created["#2"]).dependencies == ["fit", before.id]

    count = manager.count_jobs()
    bad = [
        (graph[:2], "--file {}: job id extract is already taken"),
        ({"jobs": graph}, "--file {} must be a JSON list of jobs"),
        ([], "--file {} holds no jobs"),
        ([graph[0], 7], "--file {}: job #1 must be a JSON object of create_job's keywords"),
        ([{"job_type": "agent", "name": "x", "colour": "red"}], "job #0 has unknown keys"),
        ([{"job_type": "agent", "name": "x", "run_at": "soon"}], "job #0's run_at 'soon'"),
        ([{"job_type": "agent", "name": "x", "dependencies": ["ghost"]}], "dependency ghost"),
        ([{"id": "a", "job_type": "agent", "name": "a", "dependencies": ["a"]}], "itself"),
    ]
    for content, words in bad:
        path.write_text(json.dumps(content))
        result = taiat("jobs", "create", "--file", str(path), url=url)
        assert result.returncode == 64, result.stderr
        assert result.stderr.startswith("taiat: error: ") and result.stderr.count("\n") == 1
        assert words.format(path) in result.stderr and result.stdout == ""
    path.write_text("[{")
    result = taiat("jobs", "create", "--file", str(path), url=url)
    assert result.returncode == 64 and f"--file {path} is not valid JSON" in result.stderr
    assert manager.count_jobs() == count


#: Bad input whose refusal the database decides: (arguments, exit code, words of the error).
ABOUT_JOBS = [
    (["jobs", "show", "nope"], 66, "no job has id nope"),
    (["jobs", "cancel", "nope"], 66, "no job has id nope"),
    (["jobs", "retry", "nope"], 66, "no job has id nope"),
    (["graph", "nope"], 66, "no job has id nope"),
    (["wait", "nope"], 66, "no job has id nope"),
    (
        ["jobs", "create", "--type", "agent", "--name", "x", "--depends-on", "ghost"],
        64,
        "no job has that id",
    ),
]

#: Bad input refused before the database is asked.
BAD_COMMAND_LINES = [
    (
        ["jobs", "create", "--type", "agent", "--name", "x", "--payload", "{bad"],
        64,
        "--payload is not valid JSON",
    ),
    (
        ["jobs", "create", "--type", "agent", "--name", "x", "--payload", "[1]"],
        64,
        "must be a JSON object",
    ),
    (
        ["jobs", "create", "--type", "agent", "--name", "x", "--payload-file", "/no/file"],
        64,
        "cannot read --payload-file",
    ),
    (["jobs", "create", "--type", "robot", "--name", "x"], 64, "unknown job type 'robot'"),
    (
        ["jobs", "create", "--type", "agent", "--name", "x", "--run-at", "soon"],
        64,
        "--run-at 'soon' is not a time",
    ),
    (
        ["jobs", "create", "--type", "agent", "--name", "x", "--priority", "high"],
        64,
        "--priority must be a number",
    ),
    (["jobs", "list", "--status", "sleeping"], 64, "unknown status 'sleeping'"),
    (["history", "--status", "sleeping"], 64, "unknown status 'sleeping'"),
    (["jobs", "list", "--limit", "0"], 64, "--limit must be a number of at least 1"),
    (["cleanup", "--days", "-1"], 64, "--days must be a number of at least 0"),
    (["graph", "x", "--format", "gif"], 64, "unknown format 'gif'"),
    (["jobs", "frobnicate"], 64, "bad command line"),
    (["jobs", "create", "--type", "agent"], 64, "jobs create: --name is required"),
    (["jobs", "create", "--name", "x"], 64, "jobs create: --type is required"),
    (["cleanup"], 64, "cleanup: --days is required"),
    (["graph", "--json"], 64, "graph: a job ID is required"),
    (["jobs", "list", "--colour", "red"], 64, "jobs list: unknown option --colour"),
    # An undecodable byte arrives as a lone surrogate, which no job id or name can hold.
    (["jobs", "show", "\udcff"], 64, "the job id holds a lone surrogate"),
    (["jobs", "cancel", "a\udcff"], 64, "the job id holds a lone surrogate"),
    (["graph", "\udcff"], 64, "the job id holds a lone surrogate"),
    (["wait", "\udcff"], 64, "the job id holds a lone surrogate"),
    (["jobs", "list", "--name", "\udcff"], 64, "the name pattern holds a lone surrogate"),
    (["jobs", "create", "--type", "agent", "--name", "\udcff"], 64, "the name holds a lone"),
    (
        ["jobs", "create", "--type", "agent", "--name", "x", "--payload", '{"a": "\\udcff"}'],
        64,
        "payload holds a lone surrogate",
    ),
    (
        ["jobs", "create", "--type", "agent", "--name", "x", "--run-at", "+99999999999999d"],
        64,
        "--run-at '+99999999999999d' is out of range",
    ),
    (
        [
            "jobs",
            "create",
            "--type",
            "agent",
            "--name",
            "x",
            "--run-at",
            "9999-12-31T23:59:59-05:00",
        ],
        64,
        "is out of range",
    ),
    (
        ["jobs", "create", "--type", "agent", "--name", "x", "--priority", "99999999999999999999"],
        64,
        "--priority must be a number from -2147483648 to 2147483647",
    ),
    (
        ["jobs", "create", "--type", "agent", "--name", "x", "--max-retries", "2147483648"],
        64,
        "--max-retries must be a number from 0 to 2147483647",
    ),
    (["jobs", "list", "--limit", "99999999999999999999"], 64, "--limit must be a number from 1"),
    (["history", "--limit", "99999999999999999999"], 64, "--limit must be a number from 1"),
    (["wait", "x", "--interval", "1e308"], 64, "--interval must be a number from 0.01 to 86400"),
    (
        ["jobs", "create", "--type", "agent", "--name", "x", "--payload", "[" * 100_000],
        64,
        "--payload nests objects and arrays more than 128 deep",
    ),
]


def _refused(url: str, manager: JobManager, cases: list[tuple[list[str], int, str]]) -> None:
    manager.create_job("agent", "bystander")
    before = manager.count_jobs()
    for args, code, words in cases:
        result = taiat(*args, url=url)
        assert result.returncode == code, (args, result.stderr)
        assert result.stderr.startswith("taiat: error: ") and words in result.stderr, args
        assert result.stderr.count("\n") == 1 and result.stdout == "", args
    assert manager.count_jobs() == before


def test_unknown_ids_are_refused_in_one_line(database_url: str, manager: JobManager) -> None:
    _refused(database_url, manager, ABOUT_JOBS)


@pytest.fixture
def sqlite_manager(sqlite_url: str) -> Iterator[JobManager]:
    jm = JobManager(sqlite_url)
    schema.initialise(jm.engine)
    yield jm
    jm.engine.dispose()


def test_bad_command_lines_are_refused_in_one_line(
    sqlite_url: str, sqlite_manager: JobManager
) -> None:
    _refused(sqlite_url, sqlite_manager, BAD_COMMAND_LINES)


@pytest.mark.parametrize(
    "args",
    [
        ["jobs", "lisst", "--database-url", "postgresql://u:S3cretPW@localhost/db"],
        ["jobs", "list", "--database-url=postgresql://u:S3cretPW@localhost/db", "extra"],
        ["jobs", "list", "--database-url", "postgresql//u:S3cretPW@localhost/db"],
        ["jobs", "list", "--database-url", "postgresql://u:S3cretPW@[::1:5432/db"],
        ["jobs", "list", "--database-url", "postgresql://u:S3cretPW@localhost/db?bogus=1"],
    ],
)
def test_no_error_shows_the_password(args: list[str]) -> None:
    result = taiat(*args)
    assert result.returncode in (64, 78), result.stderr
    assert result.stderr.startswith("taiat: error: ") and result.stderr.count("\n") == 1
    assert "S3cretPW" not in result.stderr + result.stdout


def test_database_not_initialised_then_init(empty_url: str) -> None:
    result = taiat("jobs", "list", url=empty_url)
    assert result.returncode == 65
    assert result.stderr.startswith("taiat: error: the job tables are missing in ")
    assert "run `taiat init` (or `python -m taiat.init_worker`)" in result.stderr
    assert "created the Taiat job tables" in ok("init", url=empty_url)
    assert "nothing to do" in ok("init", url=empty_url)
    assert ok("jobs", "list", "--json", url=empty_url).strip() == "[]"


def test_unreachable_database_and_the_embedded_default(tmp_path: Path) -> None:
    result = taiat("supervisors", url="postgresql://postgres@127.0.0.1:1/x")
    assert result.returncode == 69 and "unavailable" in result.stderr
    home = taiat("init", TAIAT_HOME=str(tmp_path))
    assert home.returncode == 0 and f"sqlite:///{tmp_path}/taiat.db" in home.stdout
    assert (tmp_path / "taiat.db").exists()


def test_no_database_chosen_and_none_there_creates_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()

    def run(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*TAIAT, *args],
            capture_output=True,
            text=True,
            timeout=60,
            env=environment(**extra),
            cwd=tmp_path,
        )

    for args, extra, where in [
        (["jobs", "list"], {}, tmp_path),
        (["jobs", "show", "abcdef12"], {}, tmp_path),
        (["top", "--once"], {"TAIAT_HOME": str(home)}, home),
    ]:
        result = run(*args, **extra)
        assert result.returncode == 78 == EXIT_CONFIG, result.stderr
        assert result.stderr.startswith(
            f"taiat: error: no database: taiat would use the embedded SQLite file "
            f"sqlite:///{where / 'taiat.db'} "
        )
        for words in ["--database-url", "TAIAT_DATABASE_URL", "`taiat init`"]:
            assert words in result.stderr
        assert result.stderr.count("\n") == 1 and result.stdout == ""
        assert list(tmp_path.iterdir()) == [home] and list(home.iterdir()) == []
    named = tmp_path / "named.db"
    result = run("jobs", "list", "--database-url", f"sqlite:///{named}")
    assert result.returncode == 65 and "run `taiat init`" in result.stderr
    assert not named.exists()
    assert run("init").returncode == 0 and (tmp_path / "taiat.db").exists()
    listed = run("jobs", "list", "--json")
    assert listed.returncode == 0 and listed.stdout.strip() == "[]"


def test_supervisors_wait_and_attempts(
    database_url: str, manager: JobManager, supervisor: Any
) -> None:
    sup = supervisor("--max-concurrent-jobs", "2")
    slow = manager.create_job("agent", "slow", payload={"agent_name": "sleep"})
    wait_until(
        lambda: manager.get_job(slow.id).status is JobStatus.RUNNING, what="slow runs", watch=sup
    )
    [row] = json.loads(ok("supervisors", "--json", url=database_url))
    assert row["alive"] and row["pid"] == sup.pid and row["running_jobs"] == [slow.id]
    table = ok("supervisors", url=database_url)
    assert row["id"] in table and "alive" in table and slow.id in table
    ok("jobs", "cancel", slow.id, url=database_url)

    good = manager.create_job("agent", "good", payload={"agent_name": "plain"})
    bad = manager.create_job("agent", "bad", payload={"agent_name": "explode"}, max_retries=0)
    result = taiat("wait", good.id, bad.id, "--interval", "0.05", url=database_url)
    assert result.returncode == 1, result.stderr
    assert f"wait: job {good.id} (good) completed" in result.stderr
    assert f"wait: job {bad.id} (bad) failed" in result.stderr
    assert "wait: 2 of 2 jobs done, 1 failed" in result.stderr
    assert result.stdout.splitlines() == [f"{good.id}  completed  good", f"{bad.id}  failed  bad"]
    assert taiat("wait", good.id, url=database_url).returncode == 0

    shown = json.loads(ok("jobs", "show", bad.id, "--json", url=database_url))
    [attempt] = shown["attempts"]
    assert attempt["outcome"] == "failed" and attempt["error_message"].startswith("ValueError")
    assert attempt["host"] and attempt["wall_seconds"] is not None
    text = ok("jobs", "show", bad.id, url=database_url)
    assert "ValueError: kaboom" in text and attempt["host"] in text


def test_wait_reports_a_cancelled_job_as_cancelled(database_url: str, manager: JobManager) -> None:
    kept = manager.create_job("agent", "kept")
    dropped = manager.create_job("agent", "dropped", dependencies=[kept.id])
    manager.cancel_job(kept.id)  # `dropped` goes with it
    result = taiat("wait", kept.id, dropped.id, "--interval", "0.05", url=database_url)
    assert result.returncode == 3 == EXIT_CANCELLED, result.stderr
    assert f"wait: job {kept.id} (kept) cancelled" in result.stderr
    assert "wait: 2 of 2 jobs done, 0 failed, 2 cancelled" in result.stderr
    assert result.stdout.splitlines() == [
        f"{kept.id}  cancelled  kept",
        f"{dropped.id}  cancelled  dropped",
    ]
    broken = manager.create_job("agent", "broken", max_retries=0)
    [claimed] = manager.claim_jobs("test-worker", 1)
    assert manager.fail_job(claimed.id, claimed.claim_seq, "boom") is JobStatus.FAILED
    both = taiat("wait", kept.id, broken.id, url=database_url)
    assert both.returncode == 1, both.stderr  # a failure outweighs a cancellation
    assert "2 of 2 jobs done, 1 failed, 1 cancelled" in both.stderr


def test_history_and_graph_tell_one_run_time(
    database_url: str, manager: JobManager, supervisor: Any, tmp_path: Path
) -> None:
    job = manager.create_job(
        "agent",
        "twice",
        payload={"agent_name": "flaky", "parameters": {"marker": str(tmp_path / "failed")}},
    )
    assert supervisor("--burst").wait(60) == 0
    walls = [attempt.wall_seconds for attempt in manager.get_attempts(job.id)]
    assert len(walls) == 2  # it failed once, then completed
    [node] = json.loads(ok("graph", job.id, "--json", url=database_url))["jobs"]
    assert node["seconds"] == pytest.approx(sum(walls))
    ran = " ".join(ok("graph", job.id, url=database_url).splitlines()[0].split()[3:])
    [row] = [line for line in ok("history", url=database_url).splitlines() if job.id in line]
    assert row.split()[5:8] == [*ran.split(), "2"], (ran, row)


def test_piped_tables_keep_long_errors_whole(database_url: str, manager: JobManager) -> None:
    job = manager.create_job("agent", "long error", max_retries=0)
    error = "agent gpu_trainer is not registered (known: " + ", ".join(["an_agent"] * 40) + ")"
    [claimed] = manager.claim_jobs("here:1:a", 1)
    manager.fail_job(job.id, claimed.claim_seq, f"{error}\nsecond line")
    for command in (["jobs", "list"], ["history"]):
        table = ok(*command, url=database_url)
        assert error in table and "…" not in table and "second line" not in table, table


def test_wait_gives_up_after_its_timeout(database_url: str, manager: JobManager) -> None:
    job = manager.create_job("agent", "never-run")
    result = taiat("wait", job.id, "--timeout", "0.3", "--interval", "0.05", url=database_url)
    assert result.returncode == 75
    assert result.stderr.endswith(f"timed out waiting for 1 of 1 jobs: {job.id}\n")


def _diamond(manager: JobManager) -> None:
    manager.create_jobs(
        [
            {"id": "top", **agent_job("top", "plain")},
            {"id": "left", **agent_job("left", "plain"), "dependencies": ["top"]},
            {"id": "right", **agent_job("right", "plain"), "dependencies": ["top"]},
            {"id": "bottom", **agent_job("bottom", "plain"), "dependencies": ["left", "right"]},
            {"id": "other", **agent_job("other", "plain")},
        ]
    )


def test_graph_text_dot_and_json(database_url: str, manager: JobManager) -> None:
    _diamond(manager)
    manager.cancel_job("right")  # bottom goes with it
    data = json.loads(ok("graph", "left", "--json", url=database_url))
    assert {j["id"] for j in data["jobs"]} == {"top", "left", "bottom"}
    assert {(e["dependency"], e["dependent"]) for e in data["edges"]} == {
        ("top", "left"),
        ("left", "bottom"),
    }
    tree = ok("graph", "left", url=database_url)
    lines = tree.splitlines()
    assert lines[0].startswith("left  left  pending")
    assert any("depends on" in line for line in lines)
    assert any("top  top  pending" in line for line in lines)
    assert any("bottom  bottom  cancelled" in line for line in lines)
    assert "right" not in tree and "other" not in tree

    dot = ok("graph", "bottom", "--format", "dot", url=database_url)
    assert dot.startswith("digraph taiat {")
    for edge in [
        '"top" -> "left"',
        '"top" -> "right"',
        '"left" -> "bottom"',
        '"right" -> "bottom"',
    ]:
        assert edge in dot
    assert '"other"' not in dot and 'fillcolor="#ddd0ea"' in dot


def test_graph_of_a_query_shows_its_plans_agents(database_url: str, manager: JobManager) -> None:
    payload = {"query": "make joined", "inferred_goal_output": "joined", "inputs": {"m": 1}}
    query = manager.create_job("query", "both sides", payload=payload)
    after = manager.create_job("agent", "after", dependencies=[query.id])
    [claimed] = manager.claim_jobs("test-worker", 1)
    plan = {
        "goal": "joined",
        "steps": [
            {"agent": "left", "inputs": {"m": None}, "outputs": ["left_part"]},
            {"agent": "right", "inputs": {"m": None}, "outputs": ["right_part"]},
            {
                "agent": "join",
                "inputs": {"left_part": "left", "right_part": "right"},
                "outputs": ["joined"],
            },
        ],
    }
    left, right, join = manager.expand_query(claimed.id, claimed.claim_seq, plan)
    for expected in ({left, right}, {join}):
        claims = manager.claim_jobs("test-worker", 2)
        assert {job.id for job in claims} == expected
        for job in claims:
            assert manager.complete_job(job.id, job.claim_seq, {"out": job.name})
    assert manager.get_job(query.id).status is JobStatus.COMPLETED
    edges = {
        (left, join),
        (right, join),
        (join, query.id),
        (query.id, after.id),
    }
    data = json.loads(ok("graph", query.id, "--json", url=database_url))
    assert {j["id"] for j in data["jobs"]} == {query.id, left, right, join, after.id}
    assert {(e["dependency"], e["dependent"]) for e in data["edges"]} == edges
    tree = ok("graph", query.id, url=database_url)
    lines = tree.splitlines()
    assert lines[0].startswith(f"both sides  {query.id}  completed")
    for name, job_id in [("join", join), ("left", left), ("right", right)]:
        assert any(f"both sides/{name}  {job_id}  completed" in line for line in lines), tree
    depends_on = tree.split("needed by")[0]
    assert "both sides/join" in depends_on and "nothing" not in depends_on
    dot = ok("graph", query.id, "--format", "dot", url=database_url)
    assert f'"{join}" -> "{query.id}"' in dot and f'"{left}" -> "{join}"' in dot
    # From one of its agents, the query is what the plan leads to.
    below = json.loads(ok("graph", left, "--json", url=database_url))
    assert {(e["dependency"], e["dependent"]) for e in below["edges"]} == {
        (left, join),
        (join, query.id),
        (query.id, after.id),
    }


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz is not installed")
def test_graph_as_svg(database_url: str, manager: JobManager, tmp_path: Path) -> None:
    _diamond(manager)
    out = tmp_path / "graph.svg"
    ok("graph", "top", "--output", str(out), url=database_url)
    svg = ET.parse(out).getroot()
    ns = {"svg": "http://www.w3.org/2000/svg"}
    groups = svg.findall(".//svg:g", ns)
    nodes = {g.findtext("svg:title", namespaces=ns) for g in groups if g.get("class") == "node"}
    edges = {g.findtext("svg:title", namespaces=ns) for g in groups if g.get("class") == "edge"}
    assert nodes == {"top", "left", "right", "bottom"}
    assert edges == {"top->left", "top->right", "left->bottom", "right->bottom"}
    texts = " ".join(t.text or "" for t in svg.iter("{http://www.w3.org/2000/svg}text"))
    assert "pending" in texts and "bottom" in texts


def test_graph_picture_without_graphviz(database_url: str, manager: JobManager) -> None:
    _diamond(manager)
    result = taiat("graph", "top", "--format", "svg", url=database_url, PATH="/nonexistent")
    assert result.returncode == 69
    assert "Graphviz is not installed" in result.stderr and "--format dot" in result.stderr


def test_top_once_and_json(database_url: str, manager: JobManager) -> None:
    _diamond(manager)
    text = ok("top", "--once", url=database_url)
    assert "queue: pending 5 (ready 2), running 0, completed 0" in text
    assert "no supervisor is registered" in text and "no job is running" in text
    data = json.loads(ok("top", "--json", url=database_url))
    assert data["queue"]["pending"] == 5 and data["queue"]["ready"] == 2


def test_top_on_a_terminal_refreshes_and_quits_on_q(
    database_url: str, manager: JobManager, supervisor: Any
) -> None:
    sup = supervisor("--max-concurrent-jobs", "3")
    slow = manager.create_job(
        "agent", "slow-one", payload={"agent_name": "busy", "parameters": {"seconds": 60}}
    )
    wait_until(
        lambda: manager.get_job(slow.id).status is JobStatus.RUNNING,
        watch=sup,
        what="the job to run",
    )
    command = [
        *TAIAT,
        "top",
        "--interval",
        "0.2",
        "--status-file",
        str(sup.status_file),
        "--database-url",
        database_url,
    ]
    top = PtyProcess(command, environment())
    try:
        screen = top.read_until(lambda s: "slow-one" in s)
        assert "supervisors" in screen and "1/3" in screen and "queue:" in screen
        assert "pending 0 (ready 0)" in screen
        manager.create_job("agent", "held", run_at=datetime(2999, 1, 1))
        top.read_until(lambda s: "pending 1 (ready 0)" in s)  # it refreshed
        # Memory and CPU of the job (in a sandbox, the memory charged to its cgroup: what the
        # job touched itself, which for this one is under a MiB).
        top.read_until(lambda s: (" MiB" in s or " KiB" in s) and " %" in s)
        top.send(b"q")
        assert top.wait() == 0
    finally:
        top.close()
        manager.cancel_job(slow.id)


def test_wait_shows_a_progress_bar_on_a_terminal(
    database_url: str, manager: JobManager, supervisor: Any
) -> None:
    jobs = manager.create_jobs([agent_job(f"j{i}", "plain") for i in range(3)])
    command = [
        *TAIAT,
        "wait",
        *(j.id for j in jobs),
        "--interval",
        "0.05",
        "--database-url",
        database_url,
    ]
    waiting = PtyProcess(command, environment())
    try:
        waiting.read_until(lambda s: "0/3" in s)
        supervisor("--max-concurrent-jobs", "3")
        waiting.read_until(lambda s: "3/3" in s and "jobs/s" in s and "0 failed" in s)
        assert waiting.wait() == 0
    finally:
        waiting.close()
    assert all(finished(manager, j.id) for j in jobs)


def test_burst_supervisor_progress(database_url: str, manager: JobManager, tmp_path: Path) -> None:
    manager.create_jobs(
        [agent_job(f"ok{i}", "plain") for i in range(4)]
        + [{**agent_job("boom", "explode"), "max_retries": 0}]
    )
    command = [
        sys.executable,
        "-m",
        "taiat.run_worker",
        "--burst",
        "--poll-interval",
        "0.1",
        "--database-url",
        database_url,
    ]
    burst = PtyProcess(command, environment())
    try:
        screen = burst.read_until(lambda s: "5/5" in s and "1 failed" in s)
        assert "burst" in screen and "jobs/s" in screen
        assert burst.wait() == 0
    finally:
        burst.close()
    manager.create_jobs([agent_job("more", "plain")])
    plain = subprocess.run(
        command, capture_output=True, text=True, timeout=60, env=environment(), cwd=tmp_path
    )
    assert plain.returncode == 0, plain.stderr
    assert "burst: 1 of 1 jobs done, 0 failed" in plain.stderr
    assert "\x1b[" not in plain.stderr
