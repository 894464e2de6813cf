"""Status file, Prometheus textfile and sd_notify, against real files and real sockets."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import stat
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from support import check_metrics

from taiat.supervisor.publishing import (
    CONTRACT_KEYS,
    COUNTERS,
    STATES,
    StatusReporter,
    iso,
    notify,
    render_metrics,
    watchdog_interval,
    write_json_atomically,
)

NASTY_NAME = 'say "hi"\\now\nsecond line'


def snapshot(**overrides: Any) -> dict[str, Any]:
    started = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
    data: dict[str, Any] = {
        "pid": 4242,
        "host": "worker-1.example.com",
        "version": "0.1.0",
        "started_at": iso(started),
        "updated_at": iso(started + timedelta(minutes=5)),
        "state": "running",
        "slots": 4,
        "running": [
            {
                "job_id": "job-1",
                "name": "nightly report",
                "pid": 5000,
                "started_at": iso(started + timedelta(minutes=1)),
                "deadline": iso(started + timedelta(minutes=61)),
                "rss_bytes": 123_456_789,
            },
            {
                "job_id": "job-2",
                "name": NASTY_NAME,
                "pid": 5001,
                "started_at": iso(started + timedelta(minutes=2)),
                "deadline": None,
                "rss_bytes": 4096,
            },
        ],
        "counters": {"completed": 10, "failed": 2, "timed_out": 1, "crashed": 3},
        "database": "ok",
        "worker_id": "worker-1.example.com:4242",
    }
    data.update(overrides)
    return data


def leftovers(directory: Path, keep: set[str]) -> list[str]:
    return sorted(name for name in os.listdir(directory) if name not in keep)


# --- the status file ---------------------------------------------------------------------------


def test_write_json_atomically_writes_every_key_readable_by_others(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    write_json_atomically(path, snapshot())

    written = json.loads(path.read_text())
    assert CONTRACT_KEYS <= written.keys()
    assert written == snapshot()  # extra keys such as worker_id pass through unchanged
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert leftovers(tmp_path, {"status.json"}) == []


def test_write_json_atomically_replaces_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    path.write_text("old and not even JSON")

    write_json_atomically(path, snapshot(state="draining"))
    write_json_atomically(path, snapshot(state="stopped"))

    assert json.loads(path.read_text())["state"] == "stopped"
    assert leftovers(tmp_path, {"status.json"}) == []


def test_write_json_atomically_writes_datetimes_as_iso(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    write_json_atomically(path, snapshot(updated_at=datetime(2024, 5, 1, 12, 5)))

    assert json.loads(path.read_text())["updated_at"] == "2024-05-01T12:05:00.000+00:00"


def test_write_json_atomically_removes_its_temp_file_when_the_rename_fails(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    path.mkdir()  # a directory cannot be replaced by a file

    with pytest.raises(IsADirectoryError):
        write_json_atomically(path, snapshot())

    assert leftovers(tmp_path, {"status.json"}) == []


def test_write_json_atomically_refuses_a_missing_directory(tmp_path: Path) -> None:
    path = tmp_path / "absent" / "status.json"

    with pytest.raises(FileNotFoundError, match="no directory to write status.json in"):
        write_json_atomically(path, snapshot())

    assert not path.parent.exists()


def test_write_json_atomically_refuses_a_file_for_a_directory(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("")

    with pytest.raises(NotADirectoryError, match="no directory to write status.json in"):
        write_json_atomically(tmp_path / "plain" / "status.json", snapshot())


def test_iso_is_utc_with_an_offset() -> None:
    assert iso(None) is None
    assert iso(0.0) == "1970-01-01T00:00:00.000+00:00"
    assert iso(datetime(2024, 5, 1, 12, 0)) == "2024-05-01T12:00:00.000+00:00"
    paris = timezone(timedelta(hours=2))
    assert iso(datetime(2024, 5, 1, 14, 0, tzinfo=paris)) == "2024-05-01T12:00:00.000+00:00"


# --- the Prometheus textfile -------------------------------------------------------------------

SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(?:,|$)')


def unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), value)


Sample = tuple[str, dict[str, str], float]


def parse_metrics(text: str) -> tuple[dict[str, str], dict[str, str], list[Sample]]:
    """HELP texts, TYPEs and samples (name, labels, value), checking the grouping as we go."""
    helps: dict[str, str] = {}
    types: dict[str, str] = {}
    samples: list[Sample] = []
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, help_text = line[len("# HELP ") :].partition(" ")
            assert name not in helps, f"second HELP for {name}"
            helps[name] = help_text
        elif line.startswith("# TYPE "):
            name, _, kind = line[len("# TYPE ") :].partition(" ")
            assert name in helps and name not in types, f"TYPE out of place: {line}"
            types[name] = kind
        else:
            match = SAMPLE.match(line)
            assert match, f"not a sample line: {line!r}"
            name = match["name"]
            assert name in types, f"{name} has no HELP and TYPE before it"
            assert name == list(types)[-1], f"{name} is not grouped with its family"
            label_text = match["labels"] or ""
            pairs = LABEL.findall(label_text)
            assert "".join(f'{k}="{v}",' for k, v in pairs).rstrip(",") == label_text
            samples.append((name, {k: unescape(v) for k, v in pairs}, float(match["value"])))
    return helps, types, samples


def test_render_metrics_every_family_is_declared_and_well_named() -> None:
    helps, types, samples = parse_metrics(render_metrics(snapshot()))

    assert helps.keys() == types.keys()
    for name, kind in types.items():
        assert re.fullmatch(r"taiat_supervisor(_[a-z0-9]+)+|taiat_jobs(_[a-z0-9]+)*", name), name
        assert kind in {"gauge", "counter"}
        assert (kind == "counter") == name.endswith("_total"), name
        assert helps[name].strip(), f"{name} has an empty HELP"
    assert {name for name, _, _ in samples} <= types.keys()


def test_render_metrics_values() -> None:
    _, types, samples = parse_metrics(render_metrics(snapshot()))
    by_name: dict[str, list[tuple[dict[str, str], float]]] = {}
    for name, labels, value in samples:
        by_name.setdefault(name, []).append((labels, value))

    info_labels = {"host": "worker-1.example.com", "version": "0.1.0"}
    assert by_name["taiat_supervisor_info"] == [
        ({**info_labels, "worker_id": "worker-1.example.com:4242"}, 1.0)
    ]
    started = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC).timestamp()
    assert by_name["taiat_supervisor_start_time_seconds"] == [({}, started)]
    assert by_name["taiat_supervisor_slots"] == [({}, 4.0)]
    assert by_name["taiat_supervisor_running_jobs"] == [({}, 2.0)]
    assert by_name["taiat_supervisor_database_up"] == [({}, 1.0)]
    states = {labels["state"]: value for labels, value in by_name["taiat_supervisor_state"]}
    assert states == {state: float(state == "running") for state in STATES}
    for key, value in snapshot()["counters"].items():
        assert types[f"taiat_supervisor_jobs_{key}_total"] == "counter"
        assert by_name[f"taiat_supervisor_jobs_{key}_total"] == [({}, float(value))]
    assert set(COUNTERS) == snapshot()["counters"].keys()
    # No series per job (each would be a new label value): the largest, and the earliest start.
    assert by_name["taiat_supervisor_running_job_rss_bytes"] == [({}, 123_456_789.0)]
    first_start = datetime(2024, 5, 1, 12, 1, 0, tzinfo=UTC).timestamp()
    assert by_name["taiat_supervisor_running_job_start_time_seconds"] == [({}, first_start)]
    assert all("job_id" not in labels for _, labels, _ in samples)


def test_render_metrics_escapes_label_values() -> None:
    text = render_metrics(snapshot(host='a"b\\c\nd'))

    assert 'host="a\\"b\\\\c\\nd"' in text
    assert NASTY_NAME.splitlines()[0] not in text  # a job's name is no label
    assert all(line for line in text.splitlines()), "a raw newline leaked into the output"


def test_render_metrics_while_idle_and_without_a_database() -> None:
    idle = snapshot(running=[], state="draining", database="unreachable")
    del idle["worker_id"]
    _, types, samples = parse_metrics(render_metrics(idle))

    values = {(name, tuple(sorted(labels.items()))): value for name, labels, value in samples}
    assert values[("taiat_supervisor_database_up", ())] == 0.0
    assert values[("taiat_supervisor_running_jobs", ())] == 0.0
    assert values[("taiat_supervisor_state", (("state", "draining"),))] == 1.0
    assert "taiat_supervisor_running_job_rss_bytes" in types
    assert not any(name == "taiat_supervisor_running_job_rss_bytes" for name, _, _ in samples)
    info = [labels for name, labels, _ in samples if name == "taiat_supervisor_info"]
    assert info == [{"host": "worker-1.example.com", "version": "0.1.0"}]


def test_render_metrics_skips_a_figure_that_could_not_be_taken() -> None:
    data = snapshot()
    data["running"][0]["rss_bytes"] = None
    _, _, samples = parse_metrics(render_metrics(data))

    rss = [value for name, _, value in samples if name.endswith("_rss_bytes")]
    assert rss == [4096.0]  # the largest of those taken
    data["running"][1]["rss_bytes"] = None
    _, _, samples = parse_metrics(render_metrics(data))
    assert not [name for name, _, _ in samples if name.endswith("_rss_bytes")]


def test_render_metrics_counts_the_jobs_in_the_database_by_status() -> None:
    counts = {"pending": 7, "ready": 3, "scheduled": 2, "running": 4}
    _, types, samples = parse_metrics(render_metrics(snapshot(), counts))
    assert types["taiat_jobs"] == "gauge"
    found = {labels["status"]: value for name, labels, value in samples if name == "taiat_jobs"}
    assert found == {status: float(count) for status, count in counts.items()}
    # Not counted (yet, or the database is away): the family, with no figure.
    _, types, samples = parse_metrics(render_metrics(snapshot()))
    assert "taiat_jobs" in types and not [s for s in samples if s[0] == "taiat_jobs"]


def test_render_metrics_shows_the_jobs_waiting_on_each_limited_key() -> None:
    waits = {"queue:gpu": 3, "agent:render": 0, 'odd"key/1': 12}
    _, types, samples = parse_metrics(render_metrics(snapshot(waiting_on_limit=waits)))
    assert types["taiat_jobs_waiting_on_limit"] == "gauge"
    found = {
        labels["key"]: value
        for name, labels, value in samples
        if name == "taiat_jobs_waiting_on_limit"
    }
    assert found == {key: float(count) for key, count in waits.items()}
    # Not counted yet, or no limit set: the family, with no figure.
    for data in (snapshot(), snapshot(waiting_on_limit={})):
        _, types, samples = parse_metrics(render_metrics(data))
        assert "taiat_jobs_waiting_on_limit" in types
        assert not [s for s in samples if s[0] == "taiat_jobs_waiting_on_limit"]


@pytest.mark.parametrize(
    ("data", "jobs"),
    [
        (
            snapshot(waiting_on_limit={"queue:gpu": 3, "openai": 1}),
            {"pending": 7, "ready": 3, "scheduled": 2, "running": 4},
        ),
        (snapshot(running=[], state="stopped", database="unreachable"), None),
    ],
    ids=["busy", "idle"],
)
def test_render_metrics_passes_promtool(data: dict[str, Any], jobs: dict[str, int] | None) -> None:
    check_metrics(render_metrics(data, jobs))


# --- StatusReporter ----------------------------------------------------------------------------


def test_status_reporter_writes_both_files(tmp_path: Path) -> None:
    reporter = StatusReporter(tmp_path / "status.json", tmp_path / "metrics.prom")

    reporter.publish(snapshot())

    assert json.loads((tmp_path / "status.json").read_text()) == snapshot()
    assert (tmp_path / "metrics.prom").read_text() == render_metrics(snapshot())
    assert leftovers(tmp_path, {"status.json", "metrics.prom"}) == []


def test_status_reporter_without_files_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    StatusReporter(None, None).publish(snapshot())

    assert os.listdir(tmp_path) == []


def test_status_reporter_logs_an_unwritable_path_once_and_carries_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where a directory should be")
    status_file = blocker / "status.json"
    reporter = StatusReporter(status_file, tmp_path / "metrics.prom")
    caplog.set_level(logging.INFO, logger="taiat.supervisor.publishing")

    for _ in range(3):
        reporter.publish(snapshot())

    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
    assert str(status_file) in warnings[0].getMessage()
    assert "no directory to write status.json in" in warnings[0].getMessage()
    assert not warnings[0].exc_info  # an environment problem, not a bug: no traceback
    assert (tmp_path / "metrics.prom").exists(), "one failing file must not stop the other"

    caplog.clear()
    blocker.unlink()
    blocker.mkdir()
    reporter.publish(snapshot())

    assert json.loads(status_file.read_text())["pid"] == 4242
    assert [r.levelno for r in caplog.records] == [logging.INFO]
    assert "written again" in caplog.records[0].getMessage()


def test_status_reporter_survives_a_snapshot_it_cannot_render(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reporter = StatusReporter(tmp_path / "status.json", tmp_path / "metrics.prom")
    caplog.set_level(logging.WARNING, logger="taiat.supervisor.publishing")

    reporter.publish(snapshot(started_at="not a time", extra=object()))

    assert len(caplog.records) == 2
    assert all(record.exc_info is not None for record in caplog.records)
    assert leftovers(tmp_path, set()) == []


# --- sd_notify ---------------------------------------------------------------------------------


@pytest.fixture
def receiver() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.settimeout(10)
    yield sock
    sock.close()


def test_notify_sends_one_datagram_to_a_path_socket(
    tmp_path: Path, receiver: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    address = tmp_path / "notify.sock"
    receiver.bind(str(address))
    monkeypatch.setenv("NOTIFY_SOCKET", str(address))

    assert notify("READY=1", "STATUS=x") is True

    assert receiver.recv(4096) == b"READY=1\nSTATUS=x"


def test_notify_sends_to_an_abstract_socket(
    receiver: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"taiat-test-{uuid.uuid4().hex}"
    receiver.bind(f"\0{name}")
    monkeypatch.setenv("NOTIFY_SOCKET", f"@{name}")

    assert notify("WATCHDOG=1") is True

    assert receiver.recv(4096) == b"WATCHDOG=1"


def test_notify_without_a_socket_is_a_quiet_no(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)

    assert notify("READY=1") is False


def test_notify_to_nobody_listening_is_a_logged_no(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone.sock"))
    caplog.set_level(logging.DEBUG, logger="taiat.supervisor.publishing")

    assert notify("STOPPING=1") is False

    assert [r.levelno for r in caplog.records] == [logging.DEBUG]


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        ("30000000", None, 15.0),
        ("30000000", "self", 15.0),
        ("30000000", "other", None),
        (None, None, None),
        ("0", None, None),
        ("soon", None, None),
    ],
)
def test_watchdog_interval(
    usec: str | None, pid: str | None, expected: float | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable, value in (("WATCHDOG_USEC", usec), ("WATCHDOG_PID", pid)):
        if value is None:
            monkeypatch.delenv(variable, raising=False)
        else:
            own = str(os.getpid())
            value = {"self": own, "other": str(os.getpid() + 1)}.get(value, value)
            monkeypatch.setenv(variable, value)

    assert watchdog_interval() == expected
