"""The layers hold: import-linter checks the contracts written in pyproject.toml (command lines
-> supervisor -> forking -> agents -> store -> model; the fork server without the database
stack; the supervisor through its port)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _lint_imports() -> str:
    found = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    if not Path(found).exists():
        pytest.fail("lint-imports is missing: pip install -e '.[test]'")
    return found


def test_the_import_contracts_are_kept() -> None:
    result = subprocess.run(
        [_lint_imports(), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    kept = [line for line in result.stdout.splitlines() if line.endswith(" KEPT")]
    assert len(kept) == 3, result.stdout


def test_a_broken_layer_is_caught(tmp_path: Path) -> None:
    # The same contracts over a copy of the package in which the store imports the supervisor.
    copy = tmp_path / "taiat"
    shutil.copytree(ROOT / "taiat", copy, ignore=shutil.ignore_patterns("__pycache__"))
    leases = copy / "store" / "leases.py"
    leases.write_text(leases.read_text() + "\nfrom taiat.supervisor import liveness  # noqa\n")
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    result = subprocess.run(
        [_lint_imports(), "--no-cache"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode != 0
    assert "taiat.store is not allowed to import taiat.supervisor" in result.stdout
