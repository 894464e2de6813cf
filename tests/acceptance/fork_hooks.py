"""An agent module that registers fork hooks when imported, as some libraries do."""

from __future__ import annotations

import os

EVENTS: list[str] = []

os.register_at_fork(
    before=lambda: EVENTS.append("before"),
    after_in_parent=lambda: EVENTS.append("parent"),
    after_in_child=lambda: EVENTS.append(f"child {os.getpid()}"),
)


def hooks_seen() -> dict:
    """The hooks' last events as this job's child sees them."""
    return {"pid": os.getpid(), "events": EVENTS[-3:]}
