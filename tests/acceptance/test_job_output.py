"""What a job writes to stdout and stderr, its grandchildren's too: kept per attempt (the last
`--log-tail-bytes` of each stream, what came before counted), shown by `taiat jobs logs` and
`taiat jobs show`, followed as it grows with `--follow`, logged by the supervisor with the
job's id under `--forward-output`; and a job that writes 100 MB neither blocks nor grows the
supervisor. The real supervisor and the real `taiat` command, on PostgreSQL and SQLite."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import AGENT_CONFIG, HERE, ROOT, wait_until
from support import finished

from taiat import JobManager, JobStatus

TAIAT = [sys.executable, "-m", "taiat"]


def taiat(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAIAT_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(HERE), os.environ.get("PYTHONPATH", "")])
    env["TAIAT_AGENT_CONFIG"] = json.dumps(AGENT_CONFIG)
    return subprocess.run(
        [*TAIAT, *args, "--database-url", url],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def ok(url: str, *args: str) -> str:
    result = taiat(url, *args)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result.stdout


def agent(manager: JobManager, name: str, agent_name: str, **parameters: object):
    payload = {"agent_name": agent_name, "parameters": parameters}
    return manager.create_job("agent", name, payload=payload)


def test_each_attempt_keeps_what_it_and_its_grandchildren_wrote(
    database_url: str, manager: JobManager, supervisor, tmp_path: Path
) -> None:
    url = database_url
    job = agent(manager, "chatty", "chatty", text="hi", fail_once=str(tmp_path / "failed"))
    sup = supervisor("--burst")
    assert sup.wait(60) == 0, sup.log()
    assert manager.get_job(job.id).status is JobStatus.COMPLETED
    first, second = (a.attempt for a in manager.get_attempts(job.id))

    everything = ok(url, "jobs", "logs", job.id)
    for attempt, number in ((1, first), (2, second)):
        assert f"== attempt {number}: " in everything
        assert f"hi on stdout, attempt {attempt}" in everything
        assert f"hi on stderr, attempt {attempt}" in everything
        assert f"hi from a grandchild, attempt {attempt}" in everything
    assert "RuntimeError: first attempt fails" not in everything  # the error is the attempt's

    only_first = ok(url, "jobs", "logs", job.id, "--attempt", str(first))
    assert only_first.startswith(f"== attempt {first}: failed, exit code 0")
    assert "--- stdout: " in only_first and "--- stderr: " in only_first
    assert "hi on stdout, attempt 1" in only_first and "attempt 2" not in only_first
    assert "hi grandchild err" in only_first.split("--- stderr: ")[1]

    shown = ok(url, "jobs", "show", job.id)
    assert "hi on stdout, attempt 1" in shown and "hi on stdout, attempt 2" in shown
    assert "hi from a grandchild, attempt 2" in shown

    record = json.loads(ok(url, "jobs", "show", job.id, "--json"))
    outputs = [a["output"] for a in record["attempts"]]
    assert [o["attempt"] for o in outputs] == [first, second]
    assert outputs[1]["stdout_tail"] == (
        "hi on stdout, attempt 2\nhi from a grandchild, attempt 2\n"
    )
    assert outputs[1]["stderr_tail"] == "hi on stderr, attempt 2\nhi grandchild err\n"
    assert outputs[1]["stdout_dropped_bytes"] == 0 and outputs[1]["final"] is True

    as_json = json.loads(ok(url, "jobs", "logs", job.id, "--attempt", str(second), "--json"))
    assert [(r["attempt"], r["outcome"], r["running"]) for r in as_json] == [
        (second, "completed", False)
    ]
    assert as_json[0]["output"]["stderr_tail"] == "hi on stderr, attempt 2\nhi grandchild err\n"

    missing = taiat(url, "jobs", "logs", job.id, "--attempt", "99")
    assert missing.returncode == 66 and "has no attempt 99" in missing.stderr


def test_a_job_writing_100_mb_ends_and_the_supervisor_stays_small(
    database_url: str, manager: JobManager, supervisor
) -> None:
    sup = supervisor()
    warm = agent(manager, "warm up", "plain", value=1)
    wait_until(lambda: finished(manager, warm.id), 30, "a first job", watch=sup)
    before = _memory(sup.pid)

    job = agent(manager, "flood", "flood", megabytes=100)
    done = wait_until(lambda: finished(manager, job.id), 120, "the 100 MB job", watch=sup)
    assert done.status is JobStatus.COMPLETED and done.result == 100
    after = _memory(sup.pid)
    # Its peak: the tail (64 KiB) and a read or two, not the 100 MB that went by.
    assert after["VmHWM"] - before["VmRSS"] < 24 << 20, (before, after)
    assert after["VmHWM"] < 100 << 20, after

    written = 100 * (1 << 20) + len("the last line\n")
    [attempt] = manager.get_attempts(job.id)
    output = attempt.output
    assert output is not None
    assert len(output.stdout_tail) == 65536
    assert output.stdout_dropped_bytes == written - 65536
    assert output.stdout_tail.endswith(b"x\nthe last line\n")
    shown = ok(database_url, "jobs", "logs", job.id)
    assert f"--- stdout: the last 65536 of {written} bytes ({written - 65536} dropped) ---" in shown


def _memory(pid: int) -> dict[str, int]:
    """The supervisor's resident memory now (VmRSS) and at its peak (VmHWM), in bytes."""
    figures = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            figures[key] = int(value.split()[0]) * 1024
    return figures


def test_forwarded_output_is_logged_with_the_job_id(manager: JobManager, supervisor) -> None:
    agent(manager, "quiet", "chatty", text="QUIET-TEXT")
    unforwarded = supervisor("--burst")
    assert unforwarded.wait(60) == 0
    # Not forwarded unless asked, and never written to the supervisor's output as it is.
    assert "QUIET-TEXT" not in unforwarded.log()

    job = agent(manager, "loud", "chatty", text="LOUD-TEXT")
    sup = supervisor("--burst", "--forward-output")
    assert sup.wait(60) == 0
    log = sup.log()
    assert f"job {job.id} (loud) stdout: LOUD-TEXT on stdout, attempt 1" in log
    assert f"job {job.id} (loud) stderr: LOUD-TEXT on stderr, attempt 1" in log
    assert f"job {job.id} (loud) stdout: LOUD-TEXT from a grandchild, attempt 1" in log
    assert f"job {job.id} (loud) stderr: LOUD-TEXT grandchild err" in log
    for line in log.splitlines():
        if "LOUD-TEXT" in line:
            assert f"job {job.id} (loud) std" in line, line


def test_forwarding_is_read_from_the_environment_too(manager: JobManager, supervisor) -> None:
    job = agent(manager, "loud", "chatty", text="by variable")
    sup = supervisor("--burst", env={"TAIAT_FORWARD_OUTPUT": "1", "TAIAT_LOG_TAIL_BYTES": "8"})
    assert sup.wait(60) == 0
    assert f"job {job.id} (loud) stdout: by variable on stdout, attempt 1" in sup.log()
    [attempt] = manager.get_attempts(job.id)
    assert attempt.output is not None and attempt.output.stdout_tail == b"tempt 1\n"


def test_follow_prints_the_running_attempt_and_ends_with_it(
    database_url: str, manager: JobManager, supervisor, tmp_path: Path
) -> None:
    marker = tmp_path / "go on"
    job = agent(manager, "waits", "print_and_wait", marker=str(marker))
    sup = supervisor()
    wait_until(
        lambda: manager.get_job(job.id).status is JobStatus.RUNNING, 30, "the job", watch=sup
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAIAT_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    printed = tmp_path / "followed.txt"
    with printed.open("w") as out:
        follower = subprocess.Popen(
            [*TAIAT, "jobs", "logs", job.id, "--follow", "--database-url", database_url],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        # What the running attempt printed shows while it runs (the supervisor writes it every
        # 2 s), and the follower goes on while the attempt does.
        wait_until(lambda: "before the marker" in printed.read_text(), 30, "live output")
        assert follower.poll() is None, printed.read_text()
        assert "== attempt 1: running" in printed.read_text()
        marker.touch()
        assert follower.wait(30) == 0, printed.read_text()
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    text = printed.read_text()
    assert text.index("before the marker") < text.index("after the marker")
    assert text.splitlines()[-1].startswith("== attempt 1 ended: completed, exit code 0, ended")
    assert manager.get_job(job.id).status is JobStatus.COMPLETED


def test_what_a_killed_job_printed_is_kept(
    database_url: str, manager: JobManager, supervisor
) -> None:
    job = manager.create_job(
        "agent",
        "hangs",
        payload={"agent_name": "print_and_hang", "parameters": {"text": "last words"}},
        max_retries=0,
        timeout_seconds=1,
    )
    sup = supervisor("--burst", "--kill-grace", "0.2")
    assert sup.wait(60) == 0
    assert manager.get_job(job.id).status is JobStatus.FAILED
    shown = ok(database_url, "jobs", "logs", job.id)
    assert "timed_out" in shown and "last words" in shown


def test_output_is_kept_when_the_supervisor_forks_jobs_itself(
    manager: JobManager, supervisor
) -> None:
    job = agent(manager, "direct", "chatty", text="direct")
    sup = supervisor("--burst", "--no-fork-server")
    assert sup.wait(60) == 0
    [attempt] = manager.get_attempts(job.id)
    assert attempt.output is not None
    assert attempt.output.stdout_tail == (
        b"direct on stdout, attempt 1\ndirect from a grandchild, attempt 1\n"
    )
    assert attempt.output.stderr_tail == b"direct on stderr, attempt 1\ndirect grandchild err\n"
    assert "direct on stdout" not in sup.log()
