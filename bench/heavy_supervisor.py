"""An agent whose module makes only the supervisor heavy: loaded in the supervisor, it imports
the heavy agents module (`bench.heavy_agents`); loaded in the fork server, which has imported
its own loop before it loads the agents, it does not, so the jobs are forked from a light
process. This measures what the supervisor's own size costs when a fork server forks."""

from __future__ import annotations

import sys

if "taiat.forking.server_loop" not in sys.modules:
    import bench.heavy_agents  # noqa: F401


def noop() -> None:
    return None
