"""Every bad input is a TaiatError with a one-line message, and nothing is written. NUL
characters, which a database cannot keep, are refused in a job's spec and result, and escaped in
its error text; nonsense days for a cleanup delete nothing."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from taiat import JobManager, JobStatus, JobType
from taiat.errors import (
    DatabaseNotInitialised,
    DatabaseUnavailable,
    DuplicateJob,
    InvalidDatabaseURL,
    InvalidDependency,
    InvalidJob,
    TaiatError,
)


def assert_nothing_written(manager: JobManager) -> None:
    assert manager.count_jobs() == {}


BAD_JOBS = [
    (
        {"job_type": "agent", "name": "x", "payload": {"f": object()}},
        InvalidJob,
        "not JSON-serialisable",
    ),
    (
        {"job_type": "agent", "name": "x", "payload": {"f": float("nan")}},
        InvalidJob,
        "not JSON-serialisable",
    ),
    ({"job_type": "agent", "name": "x", "payload": "{not json"}, InvalidJob, "JSON object"),
    ({"job_type": "bogus", "name": "x"}, InvalidJob, "unknown job type 'bogus'"),
    ({"job_type": "agent", "name": "x", "max_retries": -1}, InvalidJob, "max_retries"),
    ({"job_type": "agent", "name": "x", "max_retries": 1.5}, InvalidJob, "max_retries"),
    ({"job_type": "agent", "name": ""}, InvalidJob, "non-empty name"),
    ({"job_type": "agent", "name": "   "}, InvalidJob, "non-empty name"),
    ({"job_type": "agent", "name": "x", "priority": "high"}, InvalidJob, "priority"),
    ({"job_type": "agent", "name": "x", "timeout_seconds": 0}, InvalidJob, "timeout_seconds"),
    ({"job_type": "agent", "name": "x", "run_at": "tomorrow"}, InvalidJob, "run_at"),
    ({"job_type": "agent", "name": "x", "dependencies": "abc"}, InvalidDependency, "list"),
    (
        {"job_type": "agent", "name": "x", "dependencies": ["missing"]},
        InvalidDependency,
        "no job has that id",
    ),
    (
        {"job_type": "agent", "name": "x", "id": "me", "dependencies": ["me"]},
        InvalidDependency,
        "itself",
    ),
]


@pytest.mark.parametrize(("fields", "error", "words"), BAD_JOBS)
def test_bad_job_is_refused(manager: JobManager, fields: dict, error: type, words: str) -> None:
    with pytest.raises(error, match=words) as caught:
        manager.create_job(**fields)
    assert isinstance(caught.value, TaiatError)
    assert "\n" not in str(caught.value)
    assert_nothing_written(manager)


def _nested(depth: int) -> dict[str, Any]:
    payload: dict[str, Any] = {}
    inner = payload
    for _ in range(depth - 1):
        inner["a"] = {}
        inner = inner["a"]
    return payload


#: Values one database would take and the other refuse, or neither could store: refused
#: alike on both, naming the field, before anything is written.
UNSTORABLE_JOBS = [
    ({"payload": _nested(100_000)}, "payload is nested too deep to be stored"),
    ({"payload": _nested(129)}, "payload nests objects and arrays more than 128 deep"),
    ({"payload": {"agent_name": "file-\udcff"}}, "payload holds a lone surrogate"),
    ({"payload": {"\ud800": 1}}, "payload holds a lone surrogate"),
    ({"name": "report-\udcff"}, "the name holds a lone surrogate"),
    ({"description": "from \udcff"}, "the description holds a lone surrogate"),
    ({"id": "id-\udcff"}, "the job id holds a lone surrogate"),
    ({"dependencies": ["dep-\udcff"]}, "the dependency id holds a lone surrogate"),
    (
        {"run_at": datetime.min.replace(tzinfo=timezone(timedelta(hours=5)))},
        "run_at .* out of range",
    ),
    (
        {"run_at": datetime.max.replace(tzinfo=timezone(timedelta(hours=-5)))},
        "run_at .* out of range",
    ),
    ({"max_retries": 2**31}, "max_retries must be a whole number from 0 to 2147483647"),
    ({"priority": 2**31}, "priority must be a whole number from -2147483648 to 2147483647"),
    ({"priority": -(2**31) - 1}, "priority must be a whole number"),
    ({"priority": 2**63}, "priority must be a whole number"),
    ({"timeout_seconds": 10**400}, "timeout_seconds must be a positive number"),
]


@pytest.mark.parametrize(("fields", "words"), UNSTORABLE_JOBS)
def test_unstorable_values_are_refused_alike(manager: JobManager, fields: dict, words: str) -> None:
    with pytest.raises(InvalidJob, match=words) as caught:
        manager.create_job(**{"job_type": "agent", "name": "x", **fields})
    assert "\n" not in str(caught.value)
    with pytest.raises(InvalidJob, match=words):
        manager.create_jobs(
            [{"job_type": "agent", "name": "ok"}, {"job_type": "agent", "name": "x", **fields}]
        )
    assert_nothing_written(manager)


def test_the_edges_of_each_range_are_taken_alike(manager: JobManager) -> None:
    job = manager.create_job(
        "agent",
        "edges \U0001f600",
        payload={"deep": _nested(127), "pair": "\ud83d\ude00", "escaped": "\\udcff"},
        max_retries=2**31 - 1,
        priority=-(2**31),
        run_at=datetime(9999, 12, 31, 18, tzinfo=timezone(timedelta(hours=-5))),
    )
    found = manager.get_job(job.id)
    assert found is not None and found.max_retries == 2**31 - 1 and found.priority == -(2**31)
    assert found.payload["pair"] == "\U0001f600" and found.payload["escaped"] == "\\udcff"
    with pytest.raises(InvalidJob, match="priority"):
        manager.create_job("agent", "x", priority=2**31)
    assert manager.count_jobs() == {"pending": 1}


#: Look-ups with a value no job can hold: refused alike (SQLite would find nothing, PostgreSQL
#: refuses the NUL, and a lone surrogate reached the driver as a UnicodeEncodeError).
BAD_LOOKUPS: list[tuple[Callable[[JobManager], Any], str]] = [
    (lambda m: m.get_job("\udcff"), "the job id holds a lone surrogate"),
    (lambda m: m.get_job("a\x00"), "the job id contains a NUL"),
    (lambda m: m.get_attempts("\udcff"), "the job id holds a lone surrogate"),
    (lambda m: m.cancel_job("\udcff"), "the job id holds a lone surrogate"),
    (lambda m: m.retry_job("\udcff"), "the job id holds a lone surrogate"),
    (lambda m: m.list_jobs(name="\udcff"), "the name pattern holds a lone surrogate"),
    (lambda m: m.list_jobs(name="a\x00*"), "the name pattern contains a NUL"),
    (lambda m: m.get_ready_jobs(name="\udcff"), "the name pattern holds a lone surrogate"),
    (lambda m: m.list_jobs(limit=99999999999999999999), "limit must be a whole number"),
    (lambda m: m.list_jobs(limit=-1), "limit must be a whole number"),
    (lambda m: m.get_ready_jobs(limit=2**63), "limit must be a whole number"),
    (lambda m: m.get_job_history(limit=99999999999999999999), "limit must be a whole number"),
]


@pytest.mark.parametrize(("look_up", "words"), BAD_LOOKUPS)
def test_impossible_look_ups_are_refused_alike(
    manager: JobManager, look_up: Callable[[JobManager], Any], words: str
) -> None:
    manager.create_job("agent", "bystander")
    with pytest.raises(InvalidJob, match=words):
        look_up(manager)
    assert manager.count_jobs() == {"pending": 1}


def test_cycle_in_create_jobs_writes_nothing(manager: JobManager) -> None:
    with pytest.raises(InvalidDependency, match="cycle: a -> c -> b -> a"):
        manager.create_jobs(
            [
                {"id": "a", "job_type": "agent", "name": "a", "dependencies": ["c"]},
                {"id": "b", "job_type": "agent", "name": "b", "dependencies": ["a"]},
                {"id": "c", "job_type": "agent", "name": "c", "dependencies": ["b"]},
                {"id": "d", "job_type": "agent", "name": "d"},
            ]
        )
    assert_nothing_written(manager)


def test_one_bad_job_in_a_batch_writes_nothing(manager: JobManager) -> None:
    good = {"id": "good", "job_type": "agent", "name": "good"}
    with pytest.raises(InvalidDependency, match="no job has that id"):
        manager.create_jobs([good, {"job_type": "agent", "name": "b", "dependencies": ["zz"]}])
    with pytest.raises(InvalidJob, match="unknown keys: colour"):
        manager.create_jobs([good, {"job_type": "agent", "name": "b", "colour": "red"}])
    with pytest.raises(DuplicateJob, match="twice"):
        manager.create_jobs([good, good])
    assert_nothing_written(manager)


def test_taken_id_is_refused(manager: JobManager) -> None:
    manager.create_job(JobType.AGENT, "a", id="fixed")
    with pytest.raises(DuplicateJob, match="fixed"):
        manager.create_job(JobType.AGENT, "b", id="fixed")
    assert manager.count_jobs() == {"pending": 1}


def test_depending_on_failed_or_cancelled_job_is_refused(manager: JobManager) -> None:
    failed = manager.create_job(JobType.AGENT, "f", max_retries=0)
    [claimed] = manager.claim_jobs("w", 1)
    manager.fail_job(failed.id, claimed.claim_seq, "boom")
    cancelled = manager.create_job(JobType.AGENT, "c")
    manager.cancel_job(cancelled.id)
    for dep, words in [(failed.id, "failed"), (cancelled.id, "was cancelled")]:
        with pytest.raises(InvalidDependency, match=words):
            manager.create_job(JobType.AGENT, "x", dependencies=[dep])
    assert manager.count_jobs() == {"failed": 1, "cancelled": 1}


def test_wrong_url_scheme() -> None:
    with pytest.raises(InvalidDatabaseURL, match="unsupported database URL scheme 'mysql'"):
        JobManager("mysql://localhost/taiat")
    with pytest.raises(InvalidDatabaseURL, match="cannot parse"):
        JobManager("not a url")


#: URLs that cannot serve, each with the words of its refusal; none may show its password.
BAD_URLS = [
    ("postgresql//u:S3cretPW@localhost/db", "cannot parse database URL 'postgresql//u:\\*\\*\\*@"),
    ("postgresql://u:S3cretPW@localhost:notaport/db", "cannot parse"),
    ("postgresql://u:S3cretPW@[::1:5432/db", "cannot parse"),
    ("postgresql://u:S3cretPW@localhost:99999/db", "port .* from 1 to 65535"),
    ("postgresql://u:S3cretPW@localhost/db?bogus=1", "unknown option 'bogus'"),
    ("sqlite://u:S3cretPW@localhost/taiat.db", "names a file, not a user or host"),
    ("", "the database URL is empty"),
]


@pytest.mark.parametrize(("url", "words"), BAD_URLS)
def test_bad_url_is_refused_without_its_password(
    url: str, words: str, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TAIAT_DATABASE_URL", raising=False)
    with pytest.raises(InvalidDatabaseURL, match=words) as caught:
        JobManager(url)
    assert "S3cretPW" not in str(caught.value) and "\n" not in str(caught.value)
    assert list(tmp_path.iterdir()) == []  # not even an embedded ./taiat.db


def test_a_url_is_shown_without_any_part_of_its_password() -> None:
    # An @ in the password, not percent-encoded: the parser takes only "p" for the password.
    manager = JobManager("postgresql://u:p@S3cret@localhost/db?sslpassword=S3cretToo")
    assert "S3cret" not in repr(manager)
    assert repr(manager) == "JobManager('postgresql://u:***@localhost/db?sslpassword=***')"


def test_uninitialised_database(empty_url: str) -> None:
    manager = JobManager(empty_url)
    with pytest.raises(DatabaseNotInitialised, match=r"python -m taiat\.init_worker"):
        manager.create_job(JobType.AGENT, "a")
    manager.engine.dispose()


def test_unreachable_database() -> None:
    manager = JobManager("postgresql://postgres@127.0.0.1:1/taiat?connect_timeout=2")
    with pytest.raises(DatabaseUnavailable, match="unavailable") as caught:
        manager.get_job("x")
    assert "\n" not in str(caught.value)


def test_sqlite_file_in_missing_folder(tmp_path) -> None:
    with pytest.raises(InvalidDatabaseURL, match="does not exist"):
        JobManager(f"sqlite:///{tmp_path}/nope/taiat.db")


def test_bad_cleanup_days(manager: JobManager) -> None:
    with pytest.raises(InvalidJob, match="days"):
        manager.cleanup_old_history(days=-1)


def test_nul_characters_are_refused_or_escaped(manager: JobManager) -> None:
    with pytest.raises(InvalidJob, match="NUL"):
        manager.create_job(JobType.AGENT, "x", payload={"s": "a\x00b"})
    with pytest.raises(InvalidJob, match="NUL"):
        manager.create_job(JobType.AGENT, "a\x00b")
    job = manager.create_job(JobType.AGENT, "x", payload={"s": "a\\u0000 is fine"}, max_retries=0)
    assert manager.get_job(job.id).payload == {"s": "a\\u0000 is fine"}
    [claimed] = manager.claim_jobs("w", 1)
    with pytest.raises(InvalidJob, match="NUL"):
        manager.complete_job(job.id, claimed.claim_seq, {"s": "\x00"})
    assert manager.fail_job(job.id, claimed.claim_seq, "bad\x00byte") is JobStatus.FAILED
    assert manager.get_job(job.id).error_message == "bad\\0byte"


def test_cleanup_rejects_nonsense(manager: JobManager) -> None:
    job = manager.create_job(JobType.AGENT, "a")
    manager.cancel_job(job.id)
    for days in (float("nan"), float("inf"), -1, 1e12, "30"):
        with pytest.raises(InvalidJob, match="days"):
            manager.cleanup_old_history(days=days)
    assert len(manager.get_job_history()) == 1
