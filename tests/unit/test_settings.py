"""Settings come from the top: only the command lines' configuration, and the default
database of `JobManager()` with no arguments, read `TAIAT_*` variables; every module below
gets its settings passed in. The supervisor's command line wins over its environment, and every
setting, given there or made in code, is checked: a bad number or one out of range is a
configuration error that names it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from taiat.agents.executors import QueryExecutor
from taiat.cli.supervisor_command import _SUPERVISOR_OPTIONS, supervisor_config
from taiat.config import SupervisorConfig, parse_size
from taiat.errors import ConfigurationError

PACKAGE = Path(__file__).resolve().parents[2] / "taiat"

#: Where `TAIAT_*` variables may be read: module -> the functions that may read them (None:
#: anywhere in it). The command lines' option handling, the supervisor's configuration, and
#: the database of `JobManager()` with no arguments.
ALLOWED: dict[str, set[str] | None] = {"config.py": None}


def _is_environment(node: ast.AST) -> bool:
    """`os.environ`, `environ`, `os.getenv` or `getenv`."""
    if isinstance(node, ast.Attribute):
        return node.attr in ("environ", "getenv")
    return isinstance(node, ast.Name) and node.id in ("environ", "getenv")


def _reads(tree: ast.AST) -> list[tuple[str | None, int, str | None]]:
    """Every read of the environment: (enclosing function, line, the variable's name when it
    is a literal, else None)."""
    found: list[tuple[str | None, int, str | None]] = []

    def visit(node: ast.AST, function: str | None) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            function = node.name
        if _is_environment(node):
            found.append((function, node.lineno, None))
        for child in ast.iter_child_nodes(node):
            visit(child, function)

    visit(tree, None)
    # Name the variable of each read whose key is a literal: environ[...], environ.get(...),
    # getenv(...).
    named: dict[int, str] = {}
    for node in ast.walk(tree):
        key: ast.AST | None = None
        if isinstance(node, ast.Subscript) and _is_environment(node.value):
            key = node.slice
        elif isinstance(node, ast.Call) and node.args:
            target = node.func
            if _is_environment(target) or (
                isinstance(target, ast.Attribute) and _is_environment(target.value)
            ):
                key = node.args[0]
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            named[node.lineno] = key.value
    return [(function, line, named.get(line)) for function, line, _ in found]


def test_no_module_below_the_configuration_reads_a_taiat_variable() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = path.relative_to(PACKAGE).as_posix()
        allowed = ALLOWED.get(module, set())
        for function, line, name in _reads(ast.parse(path.read_text(), str(path))):
            if name is not None and not name.startswith("TAIAT_"):
                continue  # NOTIFY_SOCKET, WATCHDOG_USEC, COLUMNS...: not a setting of ours
            if allowed is None or function in allowed:
                continue
            offenders.append(f"taiat/{module}:{line} ({function}) reads {name or 'a variable'}")
    assert not offenders, "\n".join(offenders)


def test_the_scan_sees_every_kind_of_read() -> None:
    source = """
import os
from os import environ
def f(name):
    a = os.environ.get("TAIAT_A")
    b = os.environ["TAIAT_B"]
    c = os.getenv("TAIAT_C")
    d = environ.get(name)
    e = os.environ.get("NOTIFY_SOCKET")
"""
    reads = _reads(ast.parse(source))
    assert [(line, name) for _, line, name in reads] == [
        (5, "TAIAT_A"),
        (6, "TAIAT_B"),
        (7, "TAIAT_C"),
        (8, None),
        (9, "NOTIFY_SOCKET"),
    ]


def test_a_config_reads_its_variables_when_made_and_not_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TAIAT_QUERY_ENGINE", "engines:First")
    monkeypatch.setenv("TAIAT_AGENT_CONFIG", '{"a": "agents:a"}')
    config = SupervisorConfig()
    monkeypatch.setenv("TAIAT_QUERY_ENGINE", "engines:Second")
    monkeypatch.delenv("TAIAT_AGENT_CONFIG")
    assert config.query_engine == "engines:First"
    assert config.agent_config == '{"a": "agents:a"}'
    # Empty counts as unset; given in Python, the value wins over the variable.
    monkeypatch.setenv("TAIAT_QUERY_ENGINE", "")
    assert SupervisorConfig().query_engine is None
    assert SupervisorConfig(query_engine="engines:Mine").query_engine == "engines:Mine"


def test_a_query_executor_reads_no_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAIAT_QUERY_ENGINE", "nowhere:Engine")
    assert QueryExecutor().engine is None
    assert QueryExecutor(engine="engines:Mine").engine == "engines:Mine"


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


def test_a_switch_turns_off_the_children_forked_ahead(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TAIAT_NO_WAITING_CHILDREN", raising=False)
    config, _ = supervisor_config({})
    assert config.waiting_children
    config, _ = supervisor_config({"--no-waiting-children": True})
    assert not config.waiting_children and config.fork_server
    monkeypatch.setenv("TAIAT_NO_WAITING_CHILDREN", "1")
    config, _ = supervisor_config({})
    assert not config.waiting_children
    assert SupervisorConfig().waiting_children  # in code too, by default


def test_a_burst_that_waits_for_scheduled_jobs(monkeypatch: pytest.MonkeyPatch) -> None:
    config, _ = supervisor_config({"--burst": True})
    assert config.burst and not config.burst_wait_scheduled
    config, _ = supervisor_config({"--burst-wait-scheduled": True})
    assert config.burst and config.burst_wait_scheduled  # it is a burst of its own accord
    monkeypatch.setenv("TAIAT_BURST_WAIT_SCHEDULED", "1")
    config, _ = supervisor_config({})
    assert config.burst and config.burst_wait_scheduled


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


# -- sizes -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "unit", "expected"),
    [
        ("512", "MB", 512),
        ("512M", "MB", 512),
        ("2G", "MB", 2048),
        ("2g", "MB", 2048),
        ("1.5GiB", "MB", 1536),
        ("1.5 GB", "MB", 1536),
        ("256K", "MB", 0.25),
        ("1T", "MB", 1 << 20),
        ("1e3", "MB", 1000),
        ("4096", "B", 4096),
        ("64M", "B", 64 << 20),
        ("0.5KiB", "B", 512),
        ("7B", "B", 7),
        (" 10 kb ", "B", 10240),
        ("99999999999999999999G", "B", 99999999999999999999 << 30),  # exact, for the range check
    ],
)
def test_a_size_is_a_number_with_an_optional_unit(text: str, unit: str, expected: float) -> None:
    assert parse_size(text, "--x", unit) == expected


@pytest.mark.parametrize("text", ["2X", "G", "-5", "inf", "nan", "", "1e", "2 G B", "٣M", "0x10"])
def test_a_size_that_is_none_is_a_configuration_error_naming_it(text: str) -> None:
    with pytest.raises(ConfigurationError, match=r"^--x must be a number of MB or a size with a"):
        parse_size(text, "--x", "MB")


def test_a_size_too_long_to_read_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="--x is too long a number"):
        parse_size("9" * 5000, "--x")


def test_the_memory_limit_takes_a_size_with_a_unit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAIAT_MEMORY_LIMIT", "2G")
    assert supervisor_config({})[0].memory_limit_mb == 2048
    assert supervisor_config({"--memory-limit": "1.5GiB"})[0].memory_limit_mb == 1536
    assert supervisor_config({"--memory-limit": "300"})[0].memory_limit_mb == 300  # MB
    with pytest.raises(ConfigurationError, match=r"TAIAT_MEMORY_LIMIT\) must be a number of MB"):
        supervisor_config({"--memory-limit": "2X"})
    with pytest.raises(ConfigurationError, match="must be greater than 0"):
        supervisor_config({"--memory-limit": "0G"})
    with pytest.raises(ConfigurationError, match=r"must be at most 1073741824 \(1 PiB\)"):
        supervisor_config({"--memory-limit": "2P"})


def test_the_result_limit_takes_a_size_with_a_unit() -> None:
    assert supervisor_config({"--max-result-bytes": "64M"})[0].max_result_bytes == 64 << 20
    assert supervisor_config({"--max-result-bytes": "4096"})[0].max_result_bytes == 4096
    assert supervisor_config({"--max-result-bytes": "0.5K"})[0].max_result_bytes == 512
    with pytest.raises(ConfigurationError, match="must be a whole number of bytes"):
        supervisor_config({"--max-result-bytes": "1.5"})
    with pytest.raises(ConfigurationError, match="must be at most 1073741824"):
        supervisor_config({"--max-result-bytes": "2G"})


def test_every_value_the_environment_file_suggests_is_accepted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    example = (PACKAGE.parent / "systemd" / "supervisor.env.example").read_text()
    suggested = dict(re.findall(r"^#(TAIAT_[A-Z_]+)=(.+)$", example, flags=re.MULTILINE))
    assert suggested["TAIAT_MEMORY_LIMIT"] == "2G"
    options = {env: option for option, (env, _) in _SUPERVISOR_OPTIONS.items()}
    checked = []
    for name, value in suggested.items():
        if name in options:
            monkeypatch.setenv(name, value)
            checked.append(name)
    config, _ = supervisor_config({})
    assert config.memory_limit_mb == 2048
    assert len(checked) >= 8, checked
