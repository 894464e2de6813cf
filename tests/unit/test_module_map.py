"""The module map of docs/internals.md names every module of the package, each once, and no
module that is gone."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_module_map_names_every_module_and_only_those() -> None:
    text = (ROOT / "docs" / "internals.md").read_text()
    mapped = re.findall(r"^\| `(taiat/[\w/]+\.py)` \|", text, re.MULTILINE)
    present = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "taiat").rglob("*.py"))
    assert len(mapped) == len(set(mapped)), "a module is mapped twice"
    assert sorted(mapped) == present
