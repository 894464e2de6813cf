"""`python -m taiat.init_worker`: creates the tables once, then says there is nothing to do."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import insert

from taiat import JobManager
from taiat.errors import SchemaVersionMismatch
from taiat.store import db, schema


def run_init(*args: str, env: dict | None = None, cwd: Path | None = None):
    return subprocess.run(
        [sys.executable, "-m", "taiat.init_worker", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )


def test_init_is_idempotent(empty_url: str) -> None:
    first = run_init("--database-url", empty_url)
    assert first.returncode == 0, first.stderr
    assert "created" in first.stdout
    second = run_init(env={"TAIAT_DATABASE_URL": empty_url})
    assert second.returncode == 0, second.stderr
    assert "nothing to do" in second.stdout
    engine = db.engine_from_url(empty_url)
    with engine.connect() as conn:
        assert schema.current_version(conn) == schema.SCHEMA_VERSION
    engine.dispose()


def test_default_is_sqlite_file_in_taiat_home(tmp_path: Path) -> None:
    env = {"TAIAT_HOME": str(tmp_path)}
    env_without_url = {k: v for k, v in os.environ.items() if k != "TAIAT_DATABASE_URL"}
    result = subprocess.run(
        [sys.executable, "-m", "taiat.init_worker"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**env_without_url, **env},
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "taiat.db").exists()


def test_bad_url_exits_with_config_code(tmp_path: Path) -> None:
    result = run_init("--database-url", "mysql://x/y")
    assert result.returncode == 78
    assert result.stderr.startswith("error: unsupported database URL scheme")


def test_unreachable_database_exit_code() -> None:
    result = run_init("--database-url", "postgresql://postgres@127.0.0.1:1/x")
    assert result.returncode == 69
    assert "unavailable" in result.stderr and result.stderr.count("\n") == 1


def test_newer_schema_is_refused(database_url: str) -> None:
    engine = db.engine_from_url(database_url)
    with engine.begin() as conn:
        conn.execute(insert(schema.schema_version).values(version=schema.SCHEMA_VERSION + 1))
    result = run_init("--database-url", database_url)
    assert result.returncode == 65
    assert "newer than this release" in result.stderr
    with pytest.raises(SchemaVersionMismatch, match="upgrade the taiat package"):
        JobManager(engine).get_job("x")
    engine.dispose()


def test_a_new_sqlite_file_is_private_whatever_the_umask(tmp_path: Path) -> None:
    """Under umask 022 SQLite made the file and its -wal and -shm 0644: any local user could
    read payloads and results. A file that exists keeps the mode its operator chose."""
    kept = tmp_path / "shared.db"
    kept.touch(mode=0o640)
    kept.chmod(0o640)
    before = os.umask(0o022)
    try:
        for path in (tmp_path / "taiat.db", kept):
            manager = JobManager(f"sqlite:///{path}")
            schema.initialise(manager.engine)
            manager.create_job("agent", "payload with secrets", payload={"token": "x"})
            modes = {
                suffix: Path(f"{path}{suffix}").stat().st_mode & 0o777
                for suffix in ("", "-wal", "-shm")
            }
            manager.engine.dispose()
            expected = 0o600 if path != kept else 0o640
            assert modes == {"": expected, "-wal": expected, "-shm": expected}, path
    finally:
        os.umask(before)
