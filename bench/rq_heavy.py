"""RQ's forking worker, holding the heavy agents module: `rq worker -w
bench.rq_heavy.HeavyWorker` imports this module, and with it `bench.heavy_agents`, before it
forks its first work horse, as the fork server holds the agents' modules before it forks its
first job. Run in the peers' venv (`bench.peers`), which has RQ; the project does not."""

from __future__ import annotations

from rq import Worker

import bench.heavy_agents  # noqa: F401 - the ballast, held by the worker that forks


class HeavyWorker(Worker):
    """RQ's `Worker`, unchanged, in a process that holds the heavy agents module."""
