"""Everything that comes from a job is untrusted: its payload's limits, its result, its error
text, the bytes on its pipe. Each is judged, made valid or refused in words, never let crash
the supervisor."""

from __future__ import annotations

import json
import math
import os
from datetime import UTC, datetime
from typing import Any

import pytest

from taiat.errors import InvalidJob
from taiat.forking import wire
from taiat.forking.job_process import Ending
from taiat.forking.wire import read_message
from taiat.jobs import Attempt, Job, JobStatus, JobType
from taiat.store.validation import MAX_JSON_DEPTH, clean_json, clean_text
from taiat.supervisor import publishing
from taiat.supervisor.daemon import memory_limit_bytes
from taiat.supervisor.recorder import Record, reason, storable

MiB = 1 << 20
#: What `os.listdir` makes of a file name whose bytes are not UTF-8.
UNDECODABLE = os.fsdecode(b"report-\xff.txt")


def deep(levels: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(levels):
        value = [value]
    return value


# -- text made valid -----------------------------------------------------------------------


def test_lone_surrogates_and_nul_are_shown_as_escapes() -> None:
    assert UNDECODABLE == "report-\udcff.txt"
    assert clean_text(UNDECODABLE) == "report-\\udcff.txt"
    assert clean_text("a\x00b\ud800") == "a\\0b\\ud800"
    assert clean_text("fine: é 😀") == "fine: é 😀"
    clean_text(UNDECODABLE).encode()  # storable text: valid UTF-8


def test_json_is_made_valid_at_any_depth_in_strings_and_keys() -> None:
    value = {UNDECODABLE: [{"k\x00": "v\udcfe"}, 1, 2.5, None, True], "ok": "é"}
    cleaned = clean_json(value, "the result")
    assert cleaned == {
        "report-\\udcff.txt": [{"k\\0": "v\\udcfe"}, 1, 2.5, None, True],
        "ok": "é",
    }
    json.dumps(cleaned, ensure_ascii=False).encode()  # no lone surrogate, no NUL left
    assert clean_json({1: UNDECODABLE, None: 2}, "it") == {"1": "report-\\udcff.txt", "null": 2}


def test_valid_json_is_passed_on_as_it_is() -> None:
    value = {"a": [1, "\\ and \\u as text", {"b": "é"}]}
    assert clean_json(value, "the result") is value
    many = [{"name": f"file {i}", "tags": ["[", "{", "😀"]} for i in range(1000)]
    assert clean_json(many, "the result") is many  # an emoji is a surrogate pair in JSON text


def test_json_may_nest_as_deep_as_can_be_read_back() -> None:
    assert clean_json(deep(MAX_JSON_DEPTH - 1), "it") == deep(MAX_JSON_DEPTH - 1)
    with pytest.raises(InvalidJob, match=f"it is nested too deep \\(more than {MAX_JSON_DEPTH}"):
        clean_json(deep(MAX_JSON_DEPTH), "it")
    with pytest.raises(InvalidJob, match="nested too deep"):
        clean_json({"x": [deep(MAX_JSON_DEPTH), UNDECODABLE]}, "it")
    # Brackets in strings are not nesting.
    assert clean_json(["[" * 1000, "{" * 1000, '\\"[['], "it") == ["[" * 1000, "{" * 1000, '\\"[[']


@pytest.mark.parametrize(
    ("value", "words_"),
    [
        (math.nan, "number nan"),
        ([1e400], "number inf"),
        ({(1, 2): UNDECODABLE}, "key that is not text"),
        ({math.nan: UNDECODABLE}, "key that is not text"),
        ({"x": object()}, "object, which is not JSON"),
        (deep(100_000), "nested too deep"),
    ],
)
def test_json_that_cannot_be_stored_is_refused_in_words(value: Any, words_: str) -> None:
    with pytest.raises(InvalidJob, match=words_):
        clean_json(value, "the result")


# -- endings made storable -----------------------------------------------------------------


def record(ending: Ending) -> Record:
    job = Job(id="j", job_type=JobType.AGENT, name="n", status=JobStatus.RUNNING, claim_seq=1)
    attempt = Attempt(job_id="j", attempt=1, outcome=ending.cause, error_message=ending.error)
    return Record(job, ending, attempt)


def ending(ok: bool, result: Any = None, error: str | None = None, **more: Any) -> Ending:
    cause = "completed" if ok else "failed"
    return Ending(ok, result, error, cause, 0, None, 1.0, 0.1, 0.0, 1 << 20, **more)


def test_an_ending_whose_text_is_valid_is_left_as_it_is() -> None:
    given = record(ending(True, {"files": ["a.txt"]}))
    assert storable(given) is given


def test_an_endings_text_is_made_valid_in_its_error_and_attempt() -> None:
    made = storable(record(ending(False, error=f"ValueError: bad file name {UNDECODABLE}")))
    assert made.ending.error == "ValueError: bad file name report-\\udcff.txt"
    assert made.attempt is not None
    assert made.attempt.error_message == made.ending.error
    assert (made.ending.cause, made.attempt.outcome) == ("failed", "failed")


def test_an_endings_result_and_plan_are_made_valid() -> None:
    made = storable(record(ending(True, {UNDECODABLE: "x\x00"})))
    assert made.ending.ok and made.ending.result == {"report-\\udcff.txt": "x\\0"}
    planned = storable(record(ending(True, plan={"goal": UNDECODABLE})))
    assert planned.ending.plan == {"goal": "report-\\udcff.txt"}


def test_a_result_that_cannot_be_stored_makes_the_attempt_a_failure_that_says_so() -> None:
    made = storable(record(ending(True, [math.inf])))
    assert not made.ending.ok and made.ending.result is None
    assert made.ending.cause == "failed"
    assert made.ending.error == (
        "its result could not be stored: it holds the number inf, which JSON has no room for"
    )
    assert made.attempt is not None and made.attempt.outcome == "failed"


def test_reasons_never_fail_whatever_the_exception_holds() -> None:
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RecursionError("maximum recursion depth exceeded")

    assert reason(Unprintable()) == "Unprintable"
    assert reason(ValueError("first line\nsecond")) == "ValueError: first line"


# -- the result pipe -----------------------------------------------------------------------


def test_the_child_does_not_refuse_nul_in_a_result_the_supervisor_makes_valid() -> None:
    body = wire.encode_message({"ok": True, "result": "a\x00b"}, 1 << 20)[wire.HEADER.size :]
    assert read_message(body) == {"ok": True, "result": "a\x00b", "plan": None}


def test_a_result_too_deep_to_encode_is_a_failure_the_child_sends() -> None:
    body = wire.encode_message({"ok": True, "result": deep(100_000)}, 1 << 20)[wire.HEADER.size :]
    message = read_message(body)
    assert message["ok"] is False and "nested too deep" in message["error"]


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"[1, 2, 3]", "it is a JSON array, not an object"),
        (b'"hello"', "it is a JSON string, not an object"),
        (b"42", "it is a JSON number, not an object"),
        (b"null", "it is a JSON null, not an object"),
        (b"[" * 100_000, "it is nested too deep to be read"),
        (b"{not json", "it is not JSON"),
        (b"\xff\xfe\xfd", "it is not JSON"),
        (b'{"result": 1}', 'its "ok" is neither true nor false'),
        (b'{"ok": "yes"}', 'its "ok" is neither true nor false'),
        (b'{"ok": true, "plan": [1]}', "its plan is a JSON array, not an object"),
    ],
)
def test_whatever_arrives_on_the_pipe_is_judged(body: bytes, why: str) -> None:
    message = read_message(body)
    assert message["ok"] is False
    assert message["error"].startswith(f"the child sent a malformed result: {why}")


def test_a_failure_message_has_text_where_text_is_expected() -> None:
    body = json.dumps({"ok": False, "error": [1, 2], "traceback": {"x": 1}, "final": 1})
    assert read_message(body.encode()) == {
        "ok": False,
        "error": "the job failed; its error is not text",
        "traceback": None,
        "final": False,
    }
    good = {"ok": False, "error": "boom", "traceback": "line", "final": True}
    assert read_message(json.dumps(good).encode()) == good
    plan = {"ok": True, "plan": {"agents": []}}
    assert read_message(json.dumps(plan).encode()) == {**plan, "result": None}


# -- limits and times ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limits", "expected"),
    [
        ((None, 10**400), None),
        ((None, 1e308), None),
        ((200, 10**400), 200 * MiB),
        ((200, 1e308), 200 * MiB),
        ((200, 50), 50 * MiB),
        ((None, math.nan), None),
        ((None, math.inf), None),
        ((None, -5), None),
        ((None, True), None),
        ((None, "100"), None),
        ((None, 1e-300), 1),
    ],
)
def test_memory_limits_from_a_payload_are_computed_safely(
    limits: tuple[Any, Any], expected: int | None
) -> None:
    assert memory_limit_bytes(*limits) == expected


def test_times_beyond_what_a_datetime_holds_are_shown_as_its_last_or_first() -> None:
    assert publishing.iso(datetime.now(UTC).timestamp() + 1e12) == "9999-12-31T23:59:59.999+00:00"
    assert publishing.iso(1e308) == "9999-12-31T23:59:59.999+00:00"
    assert publishing.iso(-1e20) == "0001-01-01T00:00:00.000+00:00"
    assert publishing.iso(math.nan) is None
