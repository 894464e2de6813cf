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


ROOT = DOCS.parent


def test_the_readmes_test_commands_name_the_tiers_that_exist() -> None:
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert "`python -m pytest tests/unit tests/integration`" in readme
    for tier in ("unit", "integration", "acceptance"):
        assert (ROOT / "tests" / tier).is_dir()
    # `-m "not slow"` selects by marker: it is no way to the fast tiers while no test is slow.
    assert '`-m "not slow"` leaves out no test' in readme
    tests = [path for path in (ROOT / "tests").rglob("*.py") if path != Path(__file__)]
    marked = [path for path in tests if "mark.slow" in path.read_text()]
    assert marked == [], "tests are marked slow now: say in the README how to leave them out"
