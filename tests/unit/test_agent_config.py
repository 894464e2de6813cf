"""`TAIAT_AGENT_CONFIG`: a JSON object, or the path of a file holding one. A value that is
JSON is read as JSON, never taken for a path, and one of the wrong shape says what it is."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from taiat.agents.registry import load_agents
from taiat.errors import ConfigurationError

SHAPE = 'TAIAT_AGENT_CONFIG must be a JSON object of agent names, {"name": "module:function", ...}'
ENTRY = 'TAIAT_AGENT_CONFIG: agent greet needs "module:function"'


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('["json:dumps"]', f"{SHAPE}, not a JSON array"),
        ('  [{"greet": "json:dumps"}]', f"{SHAPE}, not a JSON array"),
        ('"json:dumps"', f'{SHAPE}, not the JSON string "json:dumps"'),
        ("42", f"{SHAPE}, not the JSON number 42"),
        ("true", f"{SHAPE}, not JSON true"),
        ("null", f"{SHAPE}, not JSON null"),
        ('{"greet": 3}', f"{ENTRY}, not the JSON number 3"),
        ('{"greet": ["json:dumps"]}', f"{ENTRY}, not a JSON array"),
        ('{"greet": null}', f"{ENTRY}, not JSON null"),
    ],
)
def test_json_of_the_wrong_shape_is_reported_as_such(value: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        load_agents(value)

    assert str(raised.value) == message
    assert "cannot read" not in str(raised.value)  # not taken for a file's path


def test_an_array_that_is_not_valid_json_is_reported_as_json() -> None:
    with pytest.raises(ConfigurationError, match="^TAIAT_AGENT_CONFIG is not valid JSON: "):
        load_agents('["json:dumps"')


def test_a_file_of_the_wrong_shape_is_named(tmp_path: Path) -> None:
    path = tmp_path / "agents.json"
    path.write_text('["json:dumps"]')
    with pytest.raises(ConfigurationError) as raised:
        load_agents(str(path))
    assert str(raised.value) == f"{SHAPE}, not a JSON array (in {path})"

    path.write_text("[1,")
    with pytest.raises(
        ConfigurationError, match=f"^TAIAT_AGENT_CONFIG is not valid JSON \\(in {path}\\)"
    ):
        load_agents(str(path))


def test_an_object_or_a_file_holding_one_gives_the_agents(tmp_path: Path) -> None:
    config = {"dump": "json:dumps", "load": {"function": "json:loads", "outputs": ["value"]}}
    path = tmp_path / "agents.json"
    path.write_text(json.dumps(config))
    numbered = tmp_path / "42"  # a file whose name is a JSON number is still a file
    numbered.write_text(json.dumps(config))

    for value in (json.dumps(config), str(path), str(numbered)):
        agents = load_agents(value)
        assert agents["dump"].function is json.dumps
        assert agents["load"].outputs == ("value",)


def test_a_path_to_no_file_is_reported_as_a_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=f"^TAIAT_AGENT_CONFIG: cannot read {tmp_path}/no"):
        load_agents(str(tmp_path / "no.json"))
