"""Agents with declared inputs and outputs, and query engines, for the query acceptance tests."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

AGENTS = {
    "left": {"function": "query_agents:left", "inputs": ["meeting"], "outputs": ["left_part"]},
    "right": {"function": "query_agents:right", "inputs": ["meeting"], "outputs": ["right_part"]},
    "join": {
        "function": "query_agents:join",
        "inputs": ["left_part", "right_part"],
        "outputs": ["joined"],
    },
    "fail_once_right_runs": {
        "function": "query_agents:fail_once_right_runs",
        "inputs": ["meeting"],
        "outputs": ["left_part"],
    },
}


def _meet(meeting: str, me: str, other: str) -> dict[str, Any]:
    """Say we are here, and wait (with a deadline) for the other branch to be here too: only
    two branches running at the same time both get past this."""
    place = Path(meeting)
    (place / me).write_text(str(os.getpid()))
    deadline = time.monotonic() + 30
    while not (place / other).exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{other} never ran while {me} did")
        time.sleep(0.02)
    return {"side": me, "pid": os.getpid()}


def left(meeting: str) -> dict[str, Any]:
    return _meet(meeting, "left", "right")


def right(meeting: str) -> dict[str, Any]:
    part = _meet(meeting, "right", "left")
    if (Path(meeting) / "right-sleeps").exists():
        signal.pause()  # until the supervisor kills it
    return part


def join(left_part: dict[str, Any], right_part: dict[str, Any]) -> dict[str, Any]:
    return {"joined": [left_part["side"], right_part["side"]]}


def fail_once_right_runs(meeting: str) -> None:
    _meet(meeting, "left", "right")
    raise ValueError("left branch broke")


class TaiatShapedEngine:
    """An engine with the Taiat engine's call shape: `run(state)`."""

    def run(self, state: dict[str, Any]) -> dict[str, Any]:
        query = state["query"]
        state["data"][query.inferred_goal_output] = f"{query.query}: {state['data']}"
        return state


def hop(**given: Any) -> list[int]:
    """One hop of a relay across hosts: what came before, and this process's pid."""
    (before,) = given.values()
    return [*before, os.getpid()]


def _hop(before: str, after: str, queue: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"function": "query_agents:hop", "inputs": [before]}
    entry["outputs"] = [after]
    if queue is not None:
        entry["queue"] = queue
    return entry


#: A relay whose hops alternate between two hosts: `first`'s agents, then `second`'s.
RELAY_FIRST = {"a1": _hop("start", "s1"), "a2": _hop("s2", "s3")}
RELAY_SECOND = {"b1": _hop("s1", "s2", "relay.b"), "b2": _hop("s3", "s4", "relay.b")}
