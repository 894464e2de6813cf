"""Every bad input is a TaiatError with a one-line message, and nothing is written."""

from __future__ import annotations

import pytest

from taiat import JobManager, JobType
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
