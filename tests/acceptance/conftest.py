"""Start the real supervisor with `subprocess`, and wait on what it does with a deadline."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from support import poll

HERE = Path(__file__).parent
ROOT = HERE.parent.parent

AGENT_CONFIG = {
    name: f"agents:{name}"
    for name in [
        "plain",
        "busy",
        "segfault",
        "exit_hard",
        "exit_soft",
        "explode",
        "sleep",
        "stubborn",
        "hog",
        "allocate",
        "orphan_maker",
        "unserialisable",
        "huge",
        "whoami",
        "flaky",
        "append",
        "parent_pid",
        "db_stack_loaded",
        "random_draw",
        "threads",
        "linger",
        "deep",
        "undecodable",
        "pipe_writer",
        "escape",
        "leave_behind",
        "write_file",
        "kill_parent",
        "chatty",
        "flood",
        "print_and_wait",
        "print_and_hang",
        "try_the_supervisor",
        "stuck",
        "gobble",
        "fork_bomb",
        "lift_limits",
        "leave_group",
        "where",
    ]
}


def wait_until(
    predicate: Callable[[], Any],
    timeout: float = 30.0,
    what: str = "",
    watch: Supervisor | None = None,
) -> Any:
    """Poll `predicate` until it returns something true, or fail after `timeout` seconds (or
    as soon as the watched supervisor exits), with the supervisor's log."""

    def check() -> Any:
        if watch is not None and watch.process.poll() is not None:
            raise AssertionError(
                f"supervisor exited ({watch.process.returncode}) while waiting for {what}:\n"
                + watch.log()
            )
        return predicate()

    try:
        return poll(check, timeout, what)
    except AssertionError as exc:
        if watch is None or "supervisor exited" in str(exc):
            raise
        raise AssertionError(f"{exc}\n{watch.log()[-5000:]}") from None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie waiting for init to reap it is dead for our purposes
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


class Supervisor:
    """The real program in a subprocess."""

    def __init__(
        self,
        url: str,
        tmp_path: Path,
        *args: str,
        env: dict | None = None,
        entry: str = "module",
        wrap: Sequence[str] = (),
    ) -> None:
        """`wrap`: a command prefix that execs the program (so that `pid` is still its own),
        such as one that runs it on a simulated host."""
        self.status_file = tmp_path / "status.json"
        self.metrics_file = tmp_path / "metrics.prom"
        self.log_file = tmp_path / f"supervisor-{time.monotonic_ns()}.log"
        command = [*wrap] + (
            [sys.executable, "-m", "taiat.run_worker"]
            if entry == "module"
            else [str(ROOT / "bin" / "taiat-supervisor")]
        )
        if "--poll-interval" not in args:
            command += ["--poll-interval", "0.2"]
        command += [
            "--database-url",
            url,
            "--status-file",
            str(self.status_file),
            "--metrics-file",
            str(self.metrics_file),
            "--log-level",
            "DEBUG",
            *args,
        ]
        full_env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
            "TAIAT_AGENT_CONFIG": json.dumps(AGENT_CONFIG),
            **(env or {}),
        }
        self._log = open(self.log_file, "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            command, env=full_env, stdout=self._log, stderr=subprocess.STDOUT, cwd=tmp_path
        )
        self.pid = self.process.pid

    def log(self) -> str:
        return self.log_file.read_text()

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = 60.0) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"supervisor still running after {timeout} s:\n{self.log()}"
            ) from None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)
        self._log.close()

    def status(self) -> dict[str, Any]:
        try:
            return json.loads(self.status_file.read_text())
        except (OSError, ValueError):
            return {}

    def settled_counters(self, timeout: float = 10.0) -> dict[str, int]:
        """The counters of a status file written after this call that shows no job running and
        no ending waiting to be written, or of the last one written if the supervisor has exited.
        (The file is written a moment after a change, and again every two seconds: one read at
        once may be a moment behind.)"""
        since = datetime.now(UTC)

        def settled() -> dict[str, int] | None:
            status = self.status()
            if self.process.poll() is not None:
                return status["counters"]
            written = status.get("updated_at")
            if written is None or datetime.fromisoformat(written) < since:
                return None
            if status["running"] or status["pending_results"]:
                return None
            return status["counters"]

        return wait_until(settled, timeout, "a status file with nothing running")


@pytest.fixture
def supervisor(database_url: str, tmp_path: Path) -> Iterator[Callable[..., Supervisor]]:
    started: list[Supervisor] = []

    def start(*args: str, **kwargs: Any) -> Supervisor:
        sup = Supervisor(database_url, tmp_path, *args, **kwargs)
        started.append(sup)
        return sup

    yield start
    for sup in started:
        sup.stop()
