"""A job's spec, checked before anything is written: its dependencies in order, a cycle named
along its path, a long chain checked quickly, and NUL characters told from escaped ones."""

from __future__ import annotations

import pytest

from taiat.errors import InvalidDependency, InvalidJob
from taiat.store.validation import build_batch, build_spec, clean_text, json_text


def test_cycle_is_named_in_dependency_order() -> None:
    items = [
        {"id": "a", "job_type": "agent", "name": "a", "dependencies": ["b"]},
        {"id": "b", "job_type": "agent", "name": "b", "dependencies": ["a"]},
    ]
    with pytest.raises(InvalidDependency, match=r"cycle: a -> b -> a \(each depends"):
        build_batch(items)


def test_long_chain_is_checked_quickly() -> None:
    items = [
        {
            "id": f"j{i}",
            "job_type": "agent",
            "name": "x",
            "dependencies": [f"j{i - 1}"] if i else [],
        }
        for i in range(20_000)
    ]
    assert len(build_batch(items)) == 20_000


def test_duplicate_dependencies_collapse_and_jobs_count_as_ids() -> None:
    first = build_spec("agent", "a", id="first")
    spec = build_spec("agent", "b", dependencies=["first", first, "first"])
    assert spec.dependencies == ("first",)


def test_nul_detection_ignores_an_escaped_backslash() -> None:
    assert json_text({"s": "\\u0000"}, "payload") == '{"s": "\\\\u0000"}'
    with pytest.raises(InvalidJob, match="NUL"):
        json_text({"s": "\x00"}, "payload")
    assert clean_text("a\x00b") == "a\\0b"
