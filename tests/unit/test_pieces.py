"""Pure pieces, no database: checking job specs, backoff, words for endings, settings, and a
job sealed for its child."""

from __future__ import annotations

import signal
from datetime import UTC, datetime
from fractions import Fraction
from zoneinfo import ZoneInfo

import pytest

from taiat.cli.supervisor_command import supervisor_config
from taiat.config import SupervisorConfig
from taiat.errors import ConfigurationError, InvalidDependency, InvalidJob
from taiat.forking import wire
from taiat.forking.posix import signal_words
from taiat.jobs import Job, JobStatus, JobType
from taiat.store.db import mask_url
from taiat.store.leases import describe, new_worker_id
from taiat.store.state_machine import RetryPolicy
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


def test_backoff_is_bounded_by_its_ceiling() -> None:
    policy = RetryPolicy(base_delay=2.0, max_delay=5.0)
    assert all(1.0 <= policy.delay(0) <= 2.0 for _ in range(100))
    assert all(2.5 <= policy.delay(10) <= 5.0 for _ in range(100))


def test_signal_words() -> None:
    assert signal_words(signal.SIGSEGV) == "signal 11 (SIGSEGV): segmentation fault"
    assert signal_words(signal.SIGKILL) == "signal 9 (SIGKILL)"
    assert signal_words(200) == "signal 200"


def test_worker_ids_carry_host_and_pid() -> None:
    worker_id = new_worker_id("db-host.example", 4242, "abcd")
    assert describe(worker_id) == "(db-host.example, 4242)"
    assert describe(None) == "(unknown host, unknown pid)"


def test_command_line_wins_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAIAT_POLL_INTERVAL", "2.5")
    monkeypatch.setenv("TAIAT_MAX_CONCURRENT_JOBS", "7")
    monkeypatch.setenv("TAIAT_NO_LISTEN", "yes")
    config, level = supervisor_config({"--max-concurrent-jobs": "3", "--log-level": "debug"})
    assert (config.poll_interval, config.max_concurrent_jobs) == (2.5, 3)
    assert config.listen is False and level == "DEBUG"
    assert config.drain_timeout == 60.0  # untouched: the default


def test_switches_turn_off_the_fork_server_and_claiming_ahead(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config, _ = supervisor_config({})
    assert config.fork_server and config.claim_ahead
    config, _ = supervisor_config({"--no-fork-server": True, "--no-claim-ahead": True})
    assert not config.fork_server and not config.claim_ahead
    monkeypatch.setenv("TAIAT_NO_CLAIM_AHEAD", "1")
    config, _ = supervisor_config({})
    assert not config.claim_ahead and config.fork_server


@pytest.mark.parametrize(
    ("option", "value"),
    [("--poll-interval", "0"), ("--max-concurrent-jobs", "1.5"), ("--lease", "inf")],
)
def test_bad_numbers_are_configuration_errors(option: str, value: str) -> None:
    with pytest.raises(ConfigurationError, match=option):
        supervisor_config({option: value})


@pytest.mark.parametrize(
    ("option", "value", "words"),
    [
        ("--lease", "1e308", "at most 3153600000 \\(100 years\\)"),
        ("--memory-limit", "1e308", "at most 1073741824 \\(1 PiB\\)"),
        ("--history-retention-days", "40000", "at most 36500"),
        ("--max-concurrent-jobs", "99999999999999999999", "at most 10000"),
        ("--max-result-bytes", "99999999999999999999", "at most 1073741824"),
        ("--quarantine-after", "99999999999999999999", "at most 2147483647"),
        ("--job-timeout", "1e12", "at most 3153600000"),
        ("--poll-interval", "1e308", "at most"),
        ("--cleanup-interval-hours", "1e308", "at most 876000"),
        ("--drain-timeout", "1e308", "at most"),
        ("--kill-grace", "1e308", "at most"),
    ],
)
def test_settings_out_of_range_are_configuration_errors(
    option: str, value: str, words: str
) -> None:
    with pytest.raises(ConfigurationError, match=f"{option} .*{words}"):
        supervisor_config({option: value})


def test_a_configuration_made_in_code_is_checked_too() -> None:
    with pytest.raises(ConfigurationError, match="lease must be a finite number"):
        SupervisorConfig(lease=float("inf"))
    with pytest.raises(ConfigurationError, match="memory_limit_mb must be at most"):
        SupervisorConfig(memory_limit_mb=1e308)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("postgresql://u:S3cret@h/db", "postgresql://u:***@h/db"),
        ("postgresql//u:S3cret@h/db", "postgresql//u:***@h/db"),  # cannot be parsed
        ("postgresql://u:S3cret@[::1:5432/db", "postgresql://u:***@[::1:5432/db"),
        ("postgresql://u:S3c@ret@h/db", "postgresql://u:***@h/db"),
        (
            "postgresql://u@h/db?password=S3cret&sslmode=require",
            "postgresql://u@h/db?password=***&sslmode=require",
        ),
        ("--database-url=postgres:u:S3cret@h", "--database-url=postgres:***@h"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("sqlite:////var/lib/taiat/taiat.db", "sqlite:////var/lib/taiat/taiat.db"),
        (
            "unmatched [Option(None, '--database-url', 1, 'postgresql://u:S3cret@h/db'), "
            "Argument(None, 'postgresql://v:S3cret@h/db')]",
            "unmatched [Option(None, '--database-url', 1, 'postgresql://u:***@h/db'), "
            "Argument(None, 'postgresql://v:***@h/db')]",
        ),
    ],
)
def test_mask_url_hides_every_password(text: str, shown: str) -> None:
    assert mask_url(text) == shown


def _job(**changes: object) -> Job:
    fields = {
        "id": "j1",
        "job_type": JobType.QUERY,
        "name": "n",
        "status": JobStatus.RUNNING,
        "payload": {"query": "q", "nested": [1, 2.5, None, True, {"x": "é"}]},
        "dependencies": ["a", "b"],
        "created_at": datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
        "started_at": datetime(2026, 1, 2, 3, 4, 6, 1),  # naive UTC, as the database gives it
        "timeout_seconds": 2.5,
        "claim_seq": 7,
        **changes,
    }
    return Job(**fields)  # type: ignore[arg-type]


def test_a_sealed_job_opens_to_the_same_job_and_results() -> None:
    job = _job()
    results = {"a": {"answer": 42}, "b": [None, "x"]}
    sealed = wire.seal(job, results)
    assert sealed[:1] == b"m"  # JSON values travel by marshal
    opened, opened_results = wire.unseal(sealed)
    assert (opened, opened_results) == (job, results)
    assert opened.job_type is JobType.QUERY and opened.status is JobStatus.RUNNING
    assert opened.created_at.tzinfo is UTC and opened.started_at.tzinfo is None
    assert opened.attempt == job.attempt and wire.unseal(wire.seal(job, None))[1] is None


def test_a_value_marshal_cannot_carry_is_sealed_by_pickle() -> None:
    job = _job(result=Fraction(1, 3))
    sealed = wire.seal(job, {"a": {1, 2}})
    assert sealed[:1] == b"p"
    assert wire.unseal(sealed) == (job, {"a": {1, 2}})


def test_plain_values_keep_every_field() -> None:
    job = _job(run_at=datetime(2027, 5, 6, tzinfo=UTC), worker_id="w", retry_count=2)
    plain = job.to_plain()
    assert all(type(v) in (str, int, float, list, dict, type(None)) for v in plain)
    assert Job.from_plain(plain) == job
    with pytest.raises(ValueError):
        Job.from_plain(plain[:-1])


def test_a_job_from_a_whole_row_is_the_job_its_fields_make() -> None:
    """A whole row skips the frozen `__init__`; a partial one gets the fields' defaults."""
    job = _job(payload={"k": 1}, dependencies=["a"], worker_id="w", claim_seq=3)
    row = {**vars(job), "job_type": "query", "status": "running", "not_a_field": 1}
    built = Job.from_row(row)
    assert built == job and vars(built) == vars(job)
    assert built.job_type is JobType.QUERY and built.status is JobStatus.RUNNING
    with pytest.raises(AttributeError):
        built.name = "changed"  # type: ignore[misc]
    partial = Job.from_row({"id": "p", "job_type": "query", "name": "n", "status": "pending"})
    assert partial == Job("p", JobType.QUERY, "n", JobStatus.PENDING)
    assert partial.payload == {} and partial.claim_seq == 0
    with pytest.raises(ValueError, match="is not a valid JobStatus"):
        Job.from_row({**row, "status": "bogus"})


def test_what_marshal_would_not_keep_exactly_goes_by_pickle() -> None:
    zoned = _job(created_at=datetime(2026, 1, 2, 3, 4, tzinfo=ZoneInfo("Europe/Paris")))
    odd_result = _job(result={"when": datetime(2026, 1, 2), "status": JobStatus.FAILED})
    for job in (zoned, odd_result):
        sealed = wire.seal(job, None)
        assert sealed[:1] == b"p"
        assert wire.unseal(sealed) == (job, None)
    assert wire.unseal(wire.seal(zoned, None))[0].created_at.tzinfo == ZoneInfo("Europe/Paris")
    status = wire.unseal(wire.seal(odd_result, None))[0].result["status"]
    assert status is JobStatus.FAILED
