"""Admission by memory, its pure parts: the percentile, each agent's latest peaks, which agents
are held back for a given room and which jobs of a claim fit it, and `--memory-reserve`."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import psutil
import pytest

from taiat.cli.common import parse
from taiat.cli.supervisor_command import SUPERVISOR_USAGE, supervisor_config
from taiat.config import MemoryReserve, SupervisorConfig, parse_reserve
from taiat.errors import ConfigurationError
from taiat.jobs import Attempt, Job, JobStatus, JobType
from taiat.supervisor.admission import Admission, Memory, RecentPeaks, host_memory, percentile

T0 = datetime(2026, 1, 1)
MiB = 1 << 20


def test_the_95th_percentile_is_the_nearest_rank() -> None:
    assert percentile([5]) == 5
    assert percentile([3, 1, 2]) == 3  # fewer than 20: the highest
    assert percentile(list(range(1, 20))) == 19
    twenty = list(range(1, 21))
    assert percentile(twenty) == 19  # one outlier in twenty is ignored
    assert percentile([*[10] * 19, 10_000]) == 10
    assert percentile(twenty, 0.5) == 10
    with pytest.raises(ValueError):
        percentile([])


def test_recent_peaks_keep_each_agents_latest_attempts_once() -> None:
    peaks = RecentPeaks(per_agent=3)
    for n in range(5):
        assert peaks.add("a", f"j{n}", 1, T0 + timedelta(seconds=n), (n + 1) * 100)
    assert peaks.estimate("a") == 500  # of 300, 400, 500
    assert not peaks.add("a", "j4", 1, T0 + timedelta(seconds=4), 100)  # the same attempt
    assert not peaks.add("a", "old", 1, T0, 10_000)  # older than the three kept
    assert not peaks.add("a", "none", 1, T0 + timedelta(seconds=9), 0)  # no peak recorded
    assert peaks.add("a", "j4", 2, T0 + timedelta(seconds=9), 50)  # its retry is another
    assert [k[3] for k in peaks._peaks["a"]] == [50, 500, 400]  # 300, the oldest, is gone
    assert peaks.add("a", "j5", 1, T0 + timedelta(seconds=10), 60)
    assert peaks.add("a", "j6", 1, T0 + timedelta(seconds=11), 70)
    assert peaks.estimate("a") == 70  # the 500 has aged out
    assert peaks.estimate("b") is None and peaks.estimate(None) is None
    # A time with a zone is the database's naive UTC.
    assert peaks.add("b", "k", 1, datetime(2026, 1, 1, 1, tzinfo=UTC), 7)
    assert peaks.estimates() == {"a": 70, "b": 7}


def test_reading_rows_moves_the_time_to_read_from() -> None:
    peaks = RecentPeaks()
    assert peaks.since() is None
    later = T0 + timedelta(minutes=5)
    peaks.read(
        [
            {"agent": "a", "job_id": "j", "attempt": 1, "ended_at": later, "peak_rss_bytes": 9},
            {"agent": "a", "job_id": "k", "attempt": 1, "ended_at": T0, "peak_rss_bytes": 3},
        ]
    )
    assert peaks.estimate("a") == 9
    since = peaks.since()
    assert since is not None and T0 < since < later


def agent_job(agent: str, n: int = 0) -> Job:
    payload = {"agent_name": agent}
    return Job(
        id=f"{agent}-{n}",
        job_type=JobType.AGENT,
        name=agent,
        status=JobStatus.RUNNING,
        payload=payload,
    )


def query_job() -> Job:
    return Job(id="q", job_type=JobType.QUERY, name="q", status=JobStatus.RUNNING)


def admission_with(room: int) -> tuple[Admission, list[int]]:
    """An admission whose host always has `room` bytes for new jobs before what is committed;
    the committed figures it was asked with."""
    asked: list[int] = []

    def memory(reserve: MemoryReserve, committed: int) -> Memory:
        asked.append(committed)
        return Memory(total=10 * room, available=2 * room, reserve=room, committed=committed)

    return Admission(MemoryReserve(), memory), asked


def seen(admission: Admission, agent: str, peak: int) -> None:
    attempt = Attempt(job_id=f"{agent}-0", attempt=1, ended_at=T0, peak_rss_bytes=peak)
    admission.ended(agent_job(agent), attempt)


def test_agents_whose_estimate_exceeds_the_room_are_held_back_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="taiat.supervisor.admission")
    admission, asked = admission_with(1000 * MiB)
    assert admission.hold_back(0) == frozenset()  # nothing known: everything admitted
    assert asked == [] and admission.status() is None
    seen(admission, "big", 1500 * MiB)
    seen(admission, "small", 10 * MiB)
    admission.ended(query_job(), Attempt(job_id="q", attempt=1, ended_at=T0, peak_rss_bytes=1))
    assert admission.hold_back(0) == {"big"}
    assert admission.hold_back(0) == {"big"}
    held = [r.getMessage() for r in caplog.records if "held back" in r.getMessage()]
    assert held == [
        "agent big held back: its jobs lately peaked at 1500 MiB, more than the 1000 MiB left "
        "(2000 MiB available, less 1000 MiB kept by --memory-reserve 5%, less 0 MiB that the "
        "jobs claimed here may still grow)"
    ]
    admission.ready = {"big": 2}
    assert admission.status() == {
        "available_bytes": 2000 * MiB,
        "reserve_bytes": 1000 * MiB,
        "committed_bytes": 0,
        "room_bytes": 1000 * MiB,
        "agents": {"big": {"estimate_bytes": 1500 * MiB, "ready_jobs": 2}},
    }
    # What running jobs may still grow counts against the room.
    assert admission.hold_back(995 * MiB) == {"big", "small"}
    assert admission.status()["room_bytes"] == 5 * MiB  # type: ignore[index]
    # Held back, it needs 16 MiB more than its estimate to come back: it does not flap.
    assert admission.hold_back(980 * MiB) == {"big", "small"}
    assert admission.hold_back(970 * MiB) == {"big"}
    assert admission.hold_back(985 * MiB) == {"big"}  # not held yet: its estimate fits
    seen(admission, "big", 100 * MiB)  # its peaks fall: of 1500 and 100, the 95th is 1500
    assert admission.hold_back(0) == {"big"}
    admitted = [r.getMessage() for r in caplog.records if "admitted" in r.getMessage()]
    assert admitted == ["agent small admitted again: memory for its jobs is to be had"]


def test_what_claimed_jobs_may_still_grow_is_committed() -> None:
    admission, _ = admission_with(1000 * MiB)
    seen(admission, "big", 600 * MiB)
    claimed = [(agent_job("big", 1), 100 * MiB), (agent_job("big", 2), 700 * MiB)]
    claimed += [(agent_job("new"), 0), (query_job(), 0)]
    assert admission.committed(claimed) == 500 * MiB


def test_the_jobs_of_one_claim_share_the_room() -> None:
    admission, _ = admission_with(1000 * MiB)
    jobs = [agent_job("big", n) for n in range(3)] + [agent_job("new"), query_job()]
    assert admission.fit(jobs) == (jobs, [])  # nothing known, the room unread: all kept
    seen(admission, "big", 400 * MiB)
    admission.hold_back(0)
    keep, back = admission.fit(jobs)
    assert [j.id for j in keep] == ["big-0", "big-1", "new-0", "q"]
    assert [j.id for j in back] == ["big-2"]


def test_the_reserve_is_a_percentage_or_a_size() -> None:
    assert parse_reserve("5%", "x") == MemoryReserve(percent=5.0)
    assert parse_reserve(" 12.5 % ", "x").of(1000) == 125
    assert parse_reserve("0%", "x").of(1000) == 0
    assert parse_reserve("512M", "x") == MemoryReserve(percent=None, size_bytes=512 * MiB)
    assert parse_reserve("2GiB", "x").of(1) == 2 << 30
    assert str(parse_reserve("1.5G", "x")) == "1536 MiB"
    for bad in ("5", "100%", "-1%", "nan%", "x%", "5 parsecs", "", "2P0"):
        with pytest.raises(ConfigurationError, match="x must be"):
            parse_reserve(bad, "x")
    with pytest.raises(ConfigurationError, match="at most 1 PiB"):
        parse_reserve("2P", "x")


def test_the_reserve_comes_from_the_option_or_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert SupervisorConfig().memory_reserve == MemoryReserve(percent=5.0)
    monkeypatch.setenv("TAIAT_MEMORY_RESERVE", "1G")
    config, _ = supervisor_config(parse(SUPERVISOR_USAGE, []))
    assert config.memory_reserve.of(0) == 1 << 30
    config, _ = supervisor_config(parse(SUPERVISOR_USAGE, ["--memory-reserve", "20%"]))
    assert config.memory_reserve.of(1000) == 200
    monkeypatch.setenv("TAIAT_MEMORY_RESERVE", "lots")
    with pytest.raises(ConfigurationError, match="TAIAT_MEMORY_RESERVE"):
        supervisor_config(parse(SUPERVISOR_USAGE, []))


def test_the_hosts_memory_is_read_as_psutil_reads_it() -> None:
    """Before each claim the kernel's MemTotal and MemAvailable are read straight from
    /proc/meminfo: the figures psutil gives, at a fraction of its cost."""
    memory = host_memory(MemoryReserve(None, 0), 0)
    seen = psutil.virtual_memory()
    assert memory.total == seen.total
    assert abs(memory.available - seen.available) < 64 << 20  # read a moment apart
    assert memory.reserve == 0 and memory.room == memory.available
