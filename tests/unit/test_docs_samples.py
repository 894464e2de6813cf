"""The samples in the docs say what the code says: the unregistered agent's error in the `taiat`
command's walk-through names every example agent, in the words the executor uses."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from taiat.agents.examples import AGENTS
from taiat.agents.executors import AgentExecutor
from taiat.errors import FinalFailure
from taiat.jobs import Job, JobStatus, JobType

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_the_sample_error_of_an_unregistered_agent_is_the_one_it_gets() -> None:
    page = (DOCS / "cli.md").read_text()
    sample = re.search(r"^error {8}(agent gpu_trainer is not registered.*?)\n\n", page, re.S | re.M)
    assert sample is not None
    shown = " ".join(sample.group(1).split())
    job = Job("j", JobType.AGENT, "train", JobStatus.RUNNING, payload={"agent_name": "gpu_trainer"})
    with pytest.raises(FinalFailure) as refused:
        AgentExecutor(AGENTS).execute(job)
    assert shown == str(refused.value)
    assert all(name in shown for name in AGENTS)
