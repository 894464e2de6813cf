"""The README's Python quick start runs as written, on the embedded SQLite file: the tables
made by `taiat init`, the snippet run as it stands, and a burst supervisor completing both of
its jobs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from taiat import JobManager, JobStatus

ROOT = Path(__file__).resolve().parents[2]


def _python_quick_start() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Python quick start", 1)[1].split("\n## ", 1)[0]
    [snippet] = re.findall(r"```python\n(.*?)```", section, re.S)
    return snippet


def test_the_python_quick_start_runs_as_written(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAIAT_")}

    def run(*command: str) -> str:
        done = subprocess.run(
            command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    run(sys.executable, "-m", "taiat", "init")
    assert run(sys.executable, "-c", _python_quick_start()).strip() == "pending"
    run(sys.executable, "-m", "taiat.run_worker", "--burst", "--poll-interval", "0.2")
    manager = JobManager(f"sqlite:///{tmp_path / 'taiat.db'}")
    try:
        history = manager.get_job_history(limit=None)
        assert {entry.name: entry.status for entry in history} == {
            "numbers": JobStatus.COMPLETED,
            "summary": JobStatus.COMPLETED,
        }
    finally:
        manager.engine.dispose()
