"""A job sealed for its child, with its dependencies' results: by marshal when that keeps every
value exactly, else by pickle; it opens to the same job and results."""

from __future__ import annotations

import enum
import json
import uuid
from datetime import UTC, datetime
from fractions import Fraction
from zoneinfo import ZoneInfo

import pytest
from support import sample_job

from taiat.forking import wire
from taiat.jobs import JobStatus, JobType
from taiat.store.validation import JsonText


def test_a_sealed_job_opens_to_the_same_job_and_results() -> None:
    job = sample_job()
    results = {"a": {"answer": 42}, "b": [None, "x"]}
    sealed = wire.seal(job, results)
    assert sealed[:1] == b"m"  # JSON values travel by marshal
    opened, opened_results = wire.unseal(sealed)
    assert (opened, opened_results) == (job, results)
    assert opened.job_type is JobType.QUERY and opened.status is JobStatus.RUNNING
    assert opened.created_at.tzinfo is UTC and opened.started_at.tzinfo is None
    assert opened.attempt == job.attempt and wire.unseal(wire.seal(job, None))[1] is None


def test_a_value_marshal_cannot_carry_is_sealed_by_pickle() -> None:
    job = sample_job(result=Fraction(1, 3))
    sealed = wire.seal(job, {"a": {1, 2}})
    assert sealed[:1] == b"p"
    assert wire.unseal(sealed) == (job, {"a": {1, 2}})


def test_what_marshal_would_not_keep_exactly_goes_by_pickle() -> None:
    zoned = sample_job(created_at=datetime(2026, 1, 2, 3, 4, tzinfo=ZoneInfo("Europe/Paris")))
    odd_result = sample_job(result={"when": datetime(2026, 1, 2), "status": JobStatus.FAILED})
    for job in (zoned, odd_result):
        sealed = wire.seal(job, None)
        assert sealed[:1] == b"p"
        assert wire.unseal(sealed) == (job, None)
    assert wire.unseal(wire.seal(zoned, None))[0].created_at.tzinfo == ZoneInfo("Europe/Paris")
    status = wire.unseal(wire.seal(odd_result, None))[0].result["status"]
    assert status is JobStatus.FAILED


def _sent(result: object) -> dict:
    """What the supervisor reads of a child's success with this result (the result as a
    value, not as the JSON text it stores)."""
    framed = wire.encode_message({"ok": True, "result": result}, 1 << 20)
    message = wire.read_message(framed[wire.HEADER.size :])
    if isinstance(message.get("result"), JsonText):
        message["result"] = json.loads(message["result"])
    return message


@pytest.mark.parametrize(
    "result",
    [None, 0, -(2**63), 2**63 - 1, 2**64, 1.5, 1e300, -0.0, "", "text", "null", "é\u0000", True],
)
def test_a_plain_result_reads_back_as_itself(result: object) -> None:
    """Whichever encoder writes it (orjson for a plain value, the json module else), what the
    supervisor reads is the value the job returned."""
    message = _sent(result)
    assert message["ok"] is True and message["result"] == result
    assert type(message["result"]) is type(result)


class Colour(enum.Enum):
    RED = "red"


@pytest.mark.parametrize(
    "result",
    [
        float("nan"),
        float("inf"),
        uuid.UUID(int=1),
        Colour.RED,
        {"id": uuid.UUID(int=1)},
        [Colour.RED],
        {"id": uuid.UUID(int=1), "none": None},
        "\ud800",  # a lone surrogate: sent as the json module writes it, made valid when stored
    ],
)
def test_a_result_is_accepted_or_refused_alike_whatever_its_shape(result: object) -> None:
    """A value the json module refuses is refused alone and inside a list or an object, with
    or without a null beside it: orjson, which would write some of them, writes none."""
    message = _sent(result)
    if isinstance(result, str):
        assert message["ok"] is True and message["result"] == result
    else:
        assert message["ok"] is False
        assert "not JSON-serialisable" in message["error"] or "Out of range" in message["error"]
