"""A job's spec, checked before anything is written: its dependencies in order, a cycle named
along its path, a long chain checked quickly, NUL characters told from escaped ones, a dict
given more than once in a batch checked once, and new ids that are UUIDs."""

from __future__ import annotations

import uuid

import pytest

from taiat.errors import DuplicateJob, InvalidDependency, InvalidJob
from taiat.store.validation import (
    build_batch,
    build_spec,
    clean_text,
    json_text,
    new_job_id,
    new_job_ids,
)


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


def test_a_dict_given_again_is_checked_once_and_makes_jobs_of_their_own() -> None:
    template = {"job_type": "agent", "name": "n", "payload": {"agent_name": "a", "k": [1]}}
    specs = build_batch([template] * 3 + [dict(template)])
    assert len({spec.id for spec in specs}) == 4
    assert [spec.payload for spec in specs] == [template["payload"]] * 4
    assert len({id(spec.payload) for spec in specs} | {id(template["payload"])}) == 5
    assert {spec[1:4] + spec[5:] for spec in specs[1:]} == {specs[0][1:4] + specs[0][5:]}


def test_a_dict_with_an_id_given_again_is_a_duplicate() -> None:
    with pytest.raises(DuplicateJob, match="job id x appears twice"):
        build_batch([{"job_type": "agent", "name": "n", "id": "x"}] * 2)


def test_a_bad_dict_given_again_is_refused_at_its_first_place() -> None:
    bad = {"job_type": "agent", "name": "n", "priority": 2**31}
    with pytest.raises(InvalidJob, match="priority must be a whole number"):
        build_batch([{"job_type": "agent", "name": "ok"}, bad, bad])


def test_new_ids_are_version_4_uuids() -> None:
    for text in [*new_job_ids(500), new_job_id()]:
        found = uuid.UUID(text)
        assert str(found) == text and found.version == 4 and found.variant == uuid.RFC_4122
