"""The systemd unit and its environment file: the settings that matter, and systemd's view."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from taiat.cli.exits import EXIT_CONFIG, EXIT_DB_SCHEMA, EXIT_DB_UNAVAILABLE, EXIT_USAGE

SYSTEMD = Path(__file__).resolve().parents[2] / "systemd"
UNIT = SYSTEMD / "taiat-supervisor.service"
ENV_EXAMPLE = SYSTEMD / "supervisor.env.example"
#: The supervisor's default --drain-timeout, in seconds; TimeoutStopSec must exceed it.
DEFAULT_DRAIN_TIMEOUT = 60

Unit = dict[str, dict[str, list[str]]]


def parse_unit(text: str) -> Unit:
    """Sections to keys to every value given, in order (systemd allows a key more than once)."""
    unit: Unit = {}
    section: dict[str, list[str]] | None = None
    for line in re.sub(r"\\\n", " ", text).splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = unit.setdefault(line.strip("[]"), {})
            continue
        assert section is not None, f"setting outside a section: {line}"
        key, sep, value = line.partition("=")
        assert sep, f"not a setting: {line}"
        section.setdefault(key.strip(), []).append(value.strip())
    return unit


@pytest.fixture(scope="module")
def service() -> dict[str, str]:
    """The [Service] section, each key's last value (the one systemd uses for these keys)."""
    return {key: values[-1] for key, values in parse_unit(UNIT.read_text())["Service"].items()}


def test_unit_runs_the_supervisor_with_its_status_files(service: dict[str, str]) -> None:
    argv = service["ExecStart"].split()

    assert argv[0] == "/usr/local/bin/taiat-supervisor"
    assert argv[argv.index("--status-file") + 1] == "/run/taiat/status.json"
    assert argv[argv.index("--metrics-file") + 1] == "/run/taiat/metrics.prom"
    assert service["RuntimeDirectory"] == "taiat"
    assert service["RuntimeDirectoryMode"] == "0755"


def test_unit_talks_sd_notify_with_a_watchdog(service: dict[str, str]) -> None:
    assert service["Type"] == "notify"
    assert service["NotifyAccess"] == "main"
    assert service["WatchdogSec"] == "30"


def test_unit_lets_the_supervisor_drain_its_jobs(service: dict[str, str]) -> None:
    assert service["KillMode"] == "mixed"
    assert service["KillSignal"] == "SIGTERM"
    assert int(service["TimeoutStopSec"]) > DEFAULT_DRAIN_TIMEOUT
    assert service["OOMPolicy"] == "continue"


def test_unit_restarts_only_what_a_restart_can_fix(service: dict[str, str]) -> None:
    assert service["Restart"] == "on-failure"
    assert service["RestartSec"] == "5"
    prevented = {int(code) for code in service["RestartPreventExitStatus"].split()}
    assert prevented == {EXIT_USAGE, EXIT_DB_SCHEMA, EXIT_CONFIG}
    assert EXIT_DB_UNAVAILABLE not in prevented  # the database may come up later


def test_unit_runs_as_taiat_with_its_state_directory(service: dict[str, str]) -> None:
    assert service["User"] == "taiat"
    assert service["Group"] == "taiat"
    assert service["StateDirectory"] == "taiat"
    assert service["WorkingDirectory"] == "/var/lib/taiat"
    assert service["Environment"] == "TAIAT_HOME=/var/lib/taiat"
    assert service["EnvironmentFile"] == "-/etc/taiat/supervisor.env"


def test_unit_says_where_agents_are_imported_from() -> None:
    # The supervisor imports agents from its working directory first, or from TAIAT_PATH.
    text = UNIT.read_text()
    assert "TAIAT_PATH" in text and "--path DIR" in text
    assert "WorkingDirectory" in ENV_EXAMPLE.read_text()


def test_unit_is_hardened(service: dict[str, str]) -> None:
    expected = {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        # The supervisor writes its delegated cgroup subtree: a cgroup per job.
        "ProtectControlGroups": "no",
        "RestrictSUIDSGID": "yes",
        "LockPersonality": "yes",
        "RestrictRealtime": "yes",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "SystemCallArchitectures": "native",
    }

    assert {key: service.get(key) for key in expected} == expected


def test_unit_delegates_its_cgroup_to_the_supervisor(service: dict[str, str]) -> None:
    assert service.get("Delegate") == "yes"


def test_unit_is_enabled_for_multi_user() -> None:
    assert parse_unit(UNIT.read_text())["Install"]["WantedBy"] == ["multi-user.target"]


def test_env_example_documents_every_setting() -> None:
    text = ENV_EXAMPLE.read_text()
    settings = re.findall(r"^#?\s*(TAIAT_[A-Z_]+)=", text, flags=re.MULTILINE)

    assert set(settings) >= {
        "TAIAT_DATABASE_URL",
        "TAIAT_MAX_CONCURRENT_JOBS",
        "TAIAT_POLL_INTERVAL",
        "TAIAT_JOB_TIMEOUT",
        "TAIAT_MEMORY_LIMIT",
        "TAIAT_DRAIN_TIMEOUT",
        "TAIAT_LOG_LEVEL",
        "TAIAT_AGENT_CONFIG",
        "TAIAT_HISTORY_RETENTION_DAYS",
        "TAIAT_CLEANUP_INTERVAL_HOURS",
        "TAIAT_PATH",
    }
    assert len(settings) == len(set(settings)), "a setting is documented twice"
    for line in text.splitlines():  # an example: nothing takes effect until uncommented
        assert not line.strip() or line.startswith("#"), line
    drain = re.search(r"^#TAIAT_DRAIN_TIMEOUT=(\d+)$", text, flags=re.MULTILINE)
    assert drain is not None and int(drain.group(1)) == DEFAULT_DRAIN_TIMEOUT


# --- systemd's own opinion ---------------------------------------------------------------------


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("systemd-analyze is required under CI (Debian package systemd)")
        pytest.skip("systemd-analyze not installed")
    return found


def verify(unit_text: str, directory: Path, drop_in: str | None = None) -> list[str]:
    """What `systemd-analyze verify` says about this unit text; [] when it has no complaint.

    Without a `drop_in`, the copy runs an executable that exists here (verify rejects a missing
    ExecStart binary, and the supervisor need not be installed to check the unit); with one,
    the copy is left as it is and the drop-in goes beside it, where verify reads it. verify
    exits 0 even for unknown keys or unparsable values, so its complaints are read from the
    output, where each one names the unit file (or its drop-in folder).
    """
    path = directory / UNIT.name
    if drop_in is None:
        true = shutil.which("true")
        assert true is not None
        unit_text = unit_text.replace("/usr/local/bin/taiat-supervisor", true)
    else:
        (directory / f"{UNIT.name}.d").mkdir()
        (directory / f"{UNIT.name}.d" / "venv.conf").write_text(drop_in)
    path.write_text(unit_text)
    checked = subprocess.run(
        [systemd_analyze(), "verify", "--man=no", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SYSTEMD_LOG_COLOR": "0"},
    )
    output = (checked.stdout + checked.stderr).splitlines()
    complaints = [line for line in output if UNIT.name in line]
    # It exits 1 for a program that is not there, saying so.
    assert checked.returncode == 0 or complaints, checked.stdout + checked.stderr
    return complaints


def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    assert verify(UNIT.read_text(), tmp_path) == []


def test_systemd_analyze_complaints_are_seen(tmp_path: Path) -> None:
    # Without this, a verify that says nothing at all would pass the test above.
    broken = UNIT.read_text().replace("KillMode=mixed", "KillMode=mixd\nWatchdogSecs=30")

    complaints = "\n".join(verify(broken, tmp_path))

    assert "Unknown key" in complaints and "WatchdogSecs" in complaints
    assert "kill mode" in complaints


def documented_drop_in() -> str:
    """The drop-in docs/deployment.md gives to run the supervisor from a virtualenv."""
    text = (SYSTEMD.parent / "docs" / "deployment.md").read_text()
    [drop_in] = [
        block
        for block in re.findall(r"```ini\n(.*?)```", text, flags=re.DOTALL)
        if "ExecStart=" in block
    ]
    return drop_in


def test_the_documented_drop_in_runs_the_supervisor_of_a_virtualenv(tmp_path: Path) -> None:
    # The supervisor of the venv these tests run in, wherever that is: not /usr/local/bin.
    program = Path(sys.executable).parent / "taiat-supervisor"
    if not program.is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{program} is not installed (pip install -e '.[test]')")
        pytest.skip(f"{program} is not installed")
    drop_in = documented_drop_in()
    assert "/opt/taiat/venv/bin/taiat-supervisor" in drop_in
    drop_in = drop_in.replace("/opt/taiat/venv/bin/taiat-supervisor", str(program))

    assert verify(UNIT.read_text(), tmp_path, drop_in) == []

    # It replaces the unit's command rather than adding one, and keeps its options.
    commands = [value for value in parse_unit(drop_in)["Service"]["ExecStart"] if value]
    [unit_command] = parse_unit(UNIT.read_text())["Service"]["ExecStart"]
    assert parse_unit(drop_in)["Service"]["ExecStart"][0] == ""
    assert commands == [unit_command.replace("/usr/local/bin/taiat-supervisor", str(program))]


def test_a_drop_in_pointing_nowhere_is_refused(tmp_path: Path) -> None:
    # Without this, a verify that never read the drop-in would pass the test above.
    drop_in = documented_drop_in().replace("/opt/taiat/venv", str(tmp_path / "no-venv"))

    complaints = "\n".join(verify(UNIT.read_text(), tmp_path, drop_in))

    assert f"{tmp_path}/no-venv/bin/taiat-supervisor is not executable" in complaints
