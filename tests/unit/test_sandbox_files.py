"""The pure parts of the sandbox: the cgroup files' formats, the CPU quota, and the
`--sandbox`, `--max-processes` and `--cpu-limit` options (the kernel's side is in
tests/acceptance/test_sandbox.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from taiat.cli.supervisor_command import supervisor_config
from taiat.config import SupervisorConfig
from taiat.errors import ConfigurationError
from taiat.sandbox.cgroups import (
    JobGroup,
    Limits,
    cpu_quota,
    parse_keyed,
    parse_own_cgroups,
    parse_procs,
)
from taiat.sandbox.detect import detect
from taiat.supervisor.daemon import lowest, lowest_whole


def test_keyed_files_are_read_as_numbers() -> None:
    oom_control = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n"
    assert parse_keyed(oom_control) == {"oom_kill_disable": 0, "under_oom": 0, "oom_kill": 3}
    events = "low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\noom_group_kill 0\n"
    assert parse_keyed(events)["oom_kill"] == 1
    assert parse_keyed("max 5\n") == {"max": 5}
    assert parse_keyed("") == {}
    assert parse_keyed("usage_usec 1200\nnonsense\nbad x\n") == {"usage_usec": 1200}


def test_own_cgroups_by_controller() -> None:
    text = (
        "9:name=systemd:/\n8:pids:/\n4:memory:/process_api/abc\n2:cpu,cpuacct:/a\n0::/user.slice\n"
    )
    own = parse_own_cgroups(text)
    assert own["memory"] == "/process_api/abc"
    assert own["pids"] == "/"
    assert own["cpu"] == own["cpuacct"] == "/a"
    assert own[""] == "/user.slice"
    assert "name=systemd" not in own and "systemd" not in own


def test_only_v2() -> None:
    assert parse_own_cgroups("0::/system.slice/taiat-supervisor.service\n") == {
        "": "/system.slice/taiat-supervisor.service"
    }


def test_cpu_quota_in_microseconds_per_period() -> None:
    assert cpu_quota(1) == 100_000
    assert cpu_quota(0.5) == 50_000
    assert cpu_quota(2.25) == 225_000
    assert cpu_quota(0.000001) == 1000  # the kernel's smallest quota


def test_procs() -> None:
    assert parse_procs("12\n345\n") == [12, 345]
    assert parse_procs("") == []


def test_sandbox_options(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TAIAT_SANDBOX", "TAIAT_MAX_PROCESSES", "TAIAT_CPU_LIMIT"):
        monkeypatch.delenv(name, raising=False)
    config, _ = supervisor_config({})
    assert (config.sandbox, config.max_processes, config.cpu_limit) == ("auto", 1024, None)
    monkeypatch.setenv("TAIAT_SANDBOX", "none")
    monkeypatch.setenv("TAIAT_MAX_PROCESSES", "64")
    monkeypatch.setenv("TAIAT_CPU_LIMIT", "1.5")
    config, _ = supervisor_config({})
    assert (config.sandbox, config.max_processes, config.cpu_limit) == ("none", 64, 1.5)
    config, _ = supervisor_config({"--sandbox": "cgroup", "--max-processes": "50"})
    assert (config.sandbox, config.max_processes) == ("cgroup", 50)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--sandbox", "always"),
        ("--max-processes", "0"),
        ("--max-processes", "lots"),
        ("--cpu-limit", "0"),
        ("--cpu-limit", "-1"),
        ("--cpu-limit", "inf"),
    ],
)
def test_bad_sandbox_options(option: str, value: str) -> None:
    with pytest.raises(ConfigurationError, match=option):
        supervisor_config({option: value})


def test_a_config_made_in_code_has_no_sandbox_unless_asked() -> None:
    assert SupervisorConfig().sandbox == "none"
    assert detect("none").kind == "none"
    with pytest.raises(ConfigurationError, match="auto, cgroup or none"):
        detect("sometimes")


def test_a_payload_only_lowers_the_caps() -> None:
    assert lowest(1024, 50) == 50
    assert lowest(2.0, "lots", None, True, float("nan"), -1) == 2.0
    assert lowest(None, None) is None
    assert lowest_whole(1024, 2000) == 1024
    assert lowest_whole(1024, 0.5) == 1


def _group_files(tmp_path: Path, version: int, names: list[str]) -> JobGroup:
    """A group whose files are plain empty files in `tmp_path` (what is written is kept)."""
    for name in names:
        (tmp_path / name).write_text("")
    controllers = ("memory", "pids", "cpu", "cpuacct")
    return JobGroup(version, {c: str(tmp_path) for c in controllers})


def _written(tmp_path: Path) -> dict[str, str]:
    found = {p.name: p.read_text() for p in tmp_path.iterdir() if p.read_text()}
    for path in tmp_path.iterdir():
        path.write_text("")
    return found


@pytest.mark.parametrize("version", [1, 2])
def test_a_groups_limits_are_written_where_they_differ(tmp_path: Path, version: int) -> None:
    """A child forked ahead waits under the supervisor's limits; its job's own are written
    when it comes, only those that differ, and a cap lifted is written as none."""
    v1 = ["memory.limit_in_bytes", "pids.max", "cpu.cfs_quota_us", "cpu.cfs_period_us"]
    v2 = ["memory.max", "pids.max", "cpu.max"]
    group = _group_files(tmp_path, version, v1 if version == 1 else v2)
    group.limit(Limits(300 << 20, 40, None))
    first = _written(tmp_path)
    memory = "memory.limit_in_bytes" if version == 1 else "memory.max"
    assert first == {memory: str(300 << 20), "pids.max": "40"}
    group.limit(Limits(300 << 20, 40, None))
    assert _written(tmp_path) == {}  # nothing differs
    group.limit(Limits(100 << 20, None, 0.5))
    cpu = {"cpu.cfs_quota_us": "50000", "cpu.cfs_period_us": "100000"}
    if version == 2:
        cpu = {"cpu.max": "50000 100000"}
    lifted = "-1" if version == 1 else "max"
    assert _written(tmp_path) == {memory: str(100 << 20), "pids.max": "max", **cpu}
    group.limit(Limits())
    off = {"cpu.cfs_quota_us": "-1", "cpu.cfs_period_us": "100000"}
    if version == 2:
        off = {"cpu.max": "max 100000"}
    assert _written(tmp_path) == {memory: lifted, **off}
    assert group.limits == Limits()
