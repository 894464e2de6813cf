"""The README's Python quick start runs as written, on the embedded SQLite file: the tables
made by `taiat init`, the snippet run as it stands, and a burst supervisor completing both of
its jobs. So does the seed's example in docs/python-api.md, after the setup the page gives
before it, on PostgreSQL."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from taiat import JobManager, JobStatus

if TYPE_CHECKING:
    from private_postgres import PrivateCluster

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


def _blocks(page: Path, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", page.read_text(), re.S)


def test_the_seed_example_runs_as_written_after_its_setup(
    private_pg: PrivateCluster, tmp_path: Path
) -> None:
    """docs/python-api.md: its first shell block (create the `taiat` database, its tables, the
    agents), then the seed's code as it stands, then a burst supervisor, in one shell. The
    example's `postgresql://localhost/taiat` reaches this test's own cluster through PGPORT
    and PGUSER, which it leaves to libpq."""
    if shutil.which("createdb") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("PostgreSQL's createdb is required under CI")
        pytest.skip("PostgreSQL's createdb is not installed")
    page = ROOT / "docs" / "python-api.md"
    setup, seed = _blocks(page, "bash")[0], _blocks(page, "python")[0]
    assert 'create_engine("postgresql://localhost/taiat")' in seed  # the seed's, unchanged
    # `taiat` and `taiat-supervisor` as installed, but on this checkout's code, which the
    # setup's own PYTHONPATH would hide.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, module in (("taiat", "taiat"), ("taiat-supervisor", "taiat.run_worker")):
        script = bin_dir / name
        script.write_text(
            f'#!/bin/sh\nPYTHONPATH="$PYTHONPATH:{ROOT}" exec {sys.executable} -m {module} "$@"\n'
        )
        script.chmod(0o755)
    (tmp_path / "seed.py").write_text(seed)
    script = "\n".join(
        [
            "set -e",
            setup,
            f'PYTHONPATH="$PYTHONPATH:{ROOT}" {sys.executable} seed.py',
            "taiat-supervisor --burst --poll-interval 0.2",
        ]
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TAIAT_", "PG"))}
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{env['PATH']}",
        PGPORT=str(private_pg.port),
        PGUSER=private_pg.user,
    )
    done = subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1] == "Job analyze_results: pending", done.stdout
    url = f"postgresql://{private_pg.user}@127.0.0.1:{private_pg.port}/taiat"
    manager = JobManager(url)
    try:
        history = {entry.name: entry for entry in manager.get_job_history(limit=None)}
        assert history["data_processing"].result == {"rows": 3, "from": "data.csv"}
        assert history["analyze_results"].status is JobStatus.COMPLETED
        assert history["analyze_results"].result == "3 rows, nothing unusual"
    finally:
        manager.engine.dispose()
