"""A fleet on simulated hosts: three supervisors, each in a network namespace of its own with a
host name of its own, against a PostgreSQL cluster of the test's own that listens on the host
ends of their links (tests/fleet_hosts.py). Needs root: runs under CI=true, skips elsewhere.

Shown today: cutting one host's link while it runs jobs. Its jobs are taken back after its
lease and finished elsewhere; once the link is back its late results are refused and it
rejoins (registers again, heartbeats, claims again); every job completed exactly once. A host
cut off says so and holds its results meanwhile, as through a stopped server: its connections
give up on a silent link within a heartbeat interval (`db.tcp_bounds`), rather than after the
many minutes TCP alone would wait.

Shown too: jobs go only to hosts that have their agent; a query whose agents live on two hosts
is planned with the live fleet's catalogue and completes across them; a concurrency cap of 2
and a rate of 10/s hold over the whole fleet (from the attempts' start and end times, checked by
`support.max_overlap` and `support.max_starts_in_window`); a paused queue starts nothing until
resumed."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import AGENT_CONFIG, Supervisor, pid_alive, wait_until
from fleet_hosts import Host, Hosts, ours, require_root
from private_postgres import PrivateCluster, _bin_dir
from query_agents import AGENTS as QUERY_AGENTS
from support import agent_job, finished, max_overlap, max_starts_in_window

from taiat import JobManager, JobStatus
from taiat.store import db, schema

#: Short leases: a host cut off is taken for dead within seconds.
LEASE = "3"
SLOTS = 2


@dataclass
class Fleet:
    """The simulated hosts, the cluster they reach, a manager on it (from the root namespace),
    and the supervisors started on the hosts."""

    hosts: Hosts
    cluster: PrivateCluster
    manager: JobManager
    folder: Path
    supervisors: list[Supervisor] = field(default_factory=list)

    def start(self, host: Host, *args: str, agents: dict[str, str] | None = None) -> Supervisor:
        """A supervisor on `host`, with its own folder (status file, log), its own
        TAIAT_AGENT_CONFIG (`agents`, else the acceptance tests' agents), short leases."""
        folder = self.folder / f"{host.name}-{len(self.supervisors)}"
        folder.mkdir()
        config = json.dumps(AGENT_CONFIG if agents is None else agents)
        sup = Supervisor(
            self.cluster.url_at(host.server_address),
            folder,
            "--lease", LEASE, "--max-concurrent-jobs", str(SLOTS), *args,
            env={"TAIAT_AGENT_CONFIG": config},
            wrap=host.wrap(),
        )  # fmt: skip
        self.supervisors.append(sup)
        return sup

    def running_on(self, worker_id: str) -> list[str]:
        return [j.id for j in self.manager.list_jobs("running", None) if j.worker_id == worker_id]

    def stop(self) -> None:
        for sup in self.supervisors:
            sup.stop()


@contextmanager
def simulated_fleet(folder: Path, count: int = 3) -> Iterator[Fleet]:
    """`count` hosts and a cluster on their links; everything goes at the end, also when the
    setup or the test fails: the supervisors, then the namespaces and links, then the cluster."""
    require_root()
    bin_dir = _bin_dir()
    if bin_dir is None:
        pytest.fail("PostgreSQL's initdb and pg_ctl are required for the fleet test")
    hosts = Hosts(count)
    fleet: Fleet | None = None
    cluster: PrivateCluster | None = None
    try:
        cluster = PrivateCluster(bin_dir, listen=hosts.server_addresses, trust=[str(hosts.subnet)])
        cluster.start()
        engine = db.engine_from_url(cluster.url)
        schema.initialise(engine)
        engine.dispose()
        fleet = Fleet(hosts, cluster, JobManager(cluster.url), folder)
        yield fleet
    finally:
        try:
            if fleet is not None:
                fleet.stop()
                fleet.manager.engine.dispose()
        finally:
            try:
                hosts.close()
            finally:
                if cluster is not None:
                    cluster.destroy()


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    with simulated_fleet(tmp_path) as made:
        yield made


def _started(fleet: Fleet, sup: Supervisor, host: Host) -> str:
    """Wait until the supervisor runs; check it reports its host's name; its worker id."""
    status = wait_until(
        lambda: (s := sup.status()).get("state") == "running" and s,
        30,
        f"the supervisor on {host.name}",
        watch=sup,
    )
    worker_id = status["worker_id"]
    assert status["host"] == host.name
    assert worker_id.startswith(f"{host.name}:{sup.pid}:"), worker_id
    return worker_id


def _registered(fleet: Fleet) -> dict[str, dict[str, Any]]:
    return {w["id"]: w for w in fleet.manager.port.list_workers()}


# -- what works today -------------------------------------------------------------------------


@pytest.mark.timeout(150)
def test_a_host_cut_off_loses_its_jobs_to_the_others_and_rejoins(fleet: Fleet) -> None:
    manager = fleet.manager
    sups = [fleet.start(host) for host in fleet.hosts]
    ids = [_started(fleet, sup, host) for sup, host in zip(sups, fleet.hosts, strict=True)]
    workers = _registered(fleet)
    assert {workers[i]["host"] for i in ids} == {"host1", "host2", "host3"}

    # As many jobs as slots: running at once, each host runs two.
    pid_files = [fleet.folder / f"first{i}.pid" for i in range(3 * SLOTS)]
    first = manager.create_jobs(
        [
            agent_job(f"first{i}", "sleep", seconds=5, pid_file=str(f))
            for i, f in enumerate(pid_files)
        ]
    )
    wait_until(lambda: all(f.exists() for f in pid_files), 30, "every job to start", watch=sups[0])
    victim, victim_id, host = sups[0], ids[0], fleet.hosts[0]
    cut_jobs = fleet.running_on(victim_id)
    assert len(cut_jobs) == SLOTS, manager.list_jobs("running", None)
    children = [int(f.read_text()) for f in pid_files if f.name in _pid_names(first, cut_jobs)]

    fleet.hosts.cut(host)
    assert not fleet.hosts.reaches(host, fleet.cluster.port)
    # Taken back after its lease, and finished elsewhere, while the link is still down.
    for job_id in cut_jobs:
        done = wait_until(lambda j=job_id: finished(manager, j), 60, f"{job_id} elsewhere")
        assert done.status is JobStatus.COMPLETED and done.retry_count == 1, done
        lost, ran = manager.get_attempts(job_id)
        assert lost.outcome == "lost" and lost.worker_id == victim_id
        assert lost.error_message == f"supervisor lost (host1, {victim.pid})"
        assert ran.outcome == "completed" and ran.worker_id in ids[1:]
    assert victim_id not in _registered(fleet)  # taken for dead
    # Its own runs went on: their results wait in it, to be written.
    wait_until(lambda: not any(map(pid_alive, children)), 30, "its runs to end", watch=victim)
    assert victim.process.poll() is None

    fleet.hosts.restore(host)
    # Its late results are refused, and it rejoins: registers again and heartbeats. (Whether
    # it finds its claims gone before it reaps its runs, and stops them, or after, and its
    # endings are refused, depends on where the cut found it.)
    refusals = re.compile(r"job (\S+) \(.*\): (?:its|this) claim is no longer current")
    wait_until(
        lambda: set(refusals.findall(victim.log())) >= set(cut_jobs),
        60,
        "its late results to be refused",
        watch=victim,
    )
    row = wait_until(
        lambda: _registered(fleet).get(victim_id), 30, "it to register again", watch=victim
    )
    assert row["host"] == "host1"
    beat = row["heartbeat_at"]
    wait_until(
        lambda: (r := _registered(fleet).get(victim_id)) and r["heartbeat_at"] > beat,
        30,
        "a heartbeat of its",
        watch=victim,
    )

    # It claims again: as many jobs as slots, each host runs two.
    pid_files = [fleet.folder / f"second{i}.pid" for i in range(3 * SLOTS)]
    second = manager.create_jobs(
        [
            agent_job(f"second{i}", "sleep", seconds=2, pid_file=str(f))
            for i, f in enumerate(pid_files)
        ]
    )
    for job in second:
        wait_until(lambda j=job: finished(manager, j.id), 60, job.name, watch=victim)
    ran_on = {manager.get_attempts(job.id)[-1].worker_id for job in second}
    assert victim_id in ran_on
    assert {i.split(":")[0] for i in ran_on} == {"host1", "host2", "host3"}

    # Nothing lost, nothing recorded twice.
    every = first + second
    assert manager.count_jobs() == {"completed": len(every)}
    history = manager.get_job_history(limit=None)
    assert sorted(entry.job_id for entry in history) == sorted(job.id for job in every)
    for entry in history:
        outcomes = [a.outcome for a in entry.attempts]
        assert outcomes.count("completed") == 1, (entry.job_id, outcomes)
        for attempt in entry.attempts:
            if attempt.outcome != "lost":  # written by the host that ran it, under its name
                assert attempt.host == attempt.worker_id.split(":")[0], attempt
            if attempt.worker_id == victim_id and entry.job_id in cut_jobs:
                assert attempt.outcome in ("lost", "superseded"), attempt
    for job_id in cut_jobs:
        [completed] = [a for a in manager.get_attempts(job_id) if a.outcome == "completed"]
        assert completed.worker_id != victim_id
    for sup in sups:
        assert sup.process.poll() is None


def test_a_host_cut_off_says_so_and_holds_its_results_meanwhile(fleet: Fleet) -> None:
    """As through a stopped server (test_liveness.py): the loop goes on, the status file says
    the database is unreachable, and the run that ends meanwhile waits in it to be written."""
    host = fleet.hosts[0]
    sup = fleet.start(host)
    _started(fleet, sup, host)
    pid_file = fleet.folder / "job.pid"
    job = fleet.manager.create_job(
        **agent_job("meanwhile", "sleep", seconds=2, pid_file=str(pid_file))
    )
    wait_until(lambda: pid_file.exists(), 30, "the job to start", watch=sup)
    fleet.hosts.cut(host)
    wait_until(
        lambda: (s := sup.status()).get("database") == "unreachable" and s["pending_results"],
        15,
        "a status file that says so, with the result held",
        watch=sup,
    )
    fleet.hosts.restore(host)
    done = wait_until(lambda: finished(fleet.manager, job.id), 60, "the job", watch=sup)
    assert done.status is JobStatus.COMPLETED and done.retry_count == 0


def _pid_names(jobs: list, chosen: list[str]) -> set[str]:
    return {f"{job.name}.pid" for job in jobs if job.id in chosen}


def test_the_fleet_leaves_nothing_behind_when_a_test_fails(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="the test failed"):
        with simulated_fleet(tmp_path) as made:
            sup = made.start(made.hosts[0])
            _started(made, sup, made.hosts[0])
            assert len(ours(os.getpid())) == 3 + 3
            raise RuntimeError("the test failed")
    assert ours(os.getpid()) == []
    assert sup.process.poll() is not None
    assert not made.cluster.folder.exists()


# -- once the other branches of issue 18 are merged ------------------------------------------

#: Agents of host 1 alone: "render" jobs may run there only.
AGENTS_ONLY_ON_HOST1 = {**AGENT_CONFIG, "render": "agents:sleep"}


def _intervals(manager: JobManager, jobs: list) -> list[tuple[Any, Any]]:
    """The start and end of every attempt of the jobs."""
    return [
        (a.started_at, a.ended_at)
        for job in jobs
        for a in manager.get_attempts(job.id)
        if a.started_at is not None and a.ended_at is not None
    ]


def _wait_all(manager: JobManager, jobs: list, timeout: float = 60) -> None:
    for job in jobs:
        done = wait_until(lambda j=job: finished(manager, j.id), timeout, job.name)
        assert done.status is JobStatus.COMPLETED, done


def test_jobs_go_only_to_hosts_that_have_their_agent(fleet: Fleet) -> None:
    manager = fleet.manager
    only = fleet.start(fleet.hosts[0], agents=AGENTS_ONLY_ON_HOST1)
    others = [fleet.start(host) for host in fleet.hosts[1:]]
    only_id = _started(fleet, only, fleet.hosts[0])
    for sup, host in zip(others, fleet.hosts[1:], strict=True):
        _started(fleet, sup, host)
    jobs = manager.create_jobs([agent_job(f"r{i}", "render", seconds=0.5) for i in range(12)])
    _wait_all(manager, jobs)
    for job in jobs:
        assert [(a.worker_id, a.outcome) for a in manager.get_attempts(job.id)] == [
            (only_id, "completed")
        ]


def test_a_query_whose_agents_live_on_two_hosts_completes(fleet: Fleet) -> None:
    manager = fleet.manager
    meeting = fleet.folder / "meeting"
    meeting.mkdir()
    # "left" and "join" on host 1, "right" on host 2, neither on host 3.
    where = {"host1": ["left", "join"], "host2": ["right"], "host3": []}
    ids = {}
    for host in fleet.hosts:
        agents = {**AGENT_CONFIG, **{name: QUERY_AGENTS[name] for name in where[host.name]}}
        ids[host.name] = _started(fleet, fleet.start(host, agents=agents), host)
    payload = {
        "query": "make joined",
        "inferred_goal_output": "joined",
        "inputs": {"meeting": str(meeting)},
        "producers": {"left_part": "left"},
    }
    job = manager.create_job("query", "across hosts", payload=payload)
    done = wait_until(lambda: finished(manager, job.id), 60, "the query")
    assert done.status is JobStatus.COMPLETED, done.error_message
    assert done.result == ["left", "right"]
    for step in manager.get_job(job.id).payload["plan"]:
        [attempt] = manager.get_attempts(step["job_id"])
        host = next(name for name, agents in where.items() if step["agent"] in agents)
        assert (attempt.worker_id, attempt.outcome) == (ids[host], "completed")


def test_a_concurrency_cap_of_2_holds_across_the_fleet(fleet: Fleet) -> None:
    manager = fleet.manager
    for host in fleet.hosts:
        _started(fleet, fleet.start(host), host)
    manager.set_limit("customer:42", concurrency=2)  # type: ignore[attr-defined]
    jobs = manager.create_jobs(
        [
            {**agent_job(f"c{i}", "sleep", seconds=0.5), "limit_keys": ["customer:42"]}
            for i in range(8)
        ]
    )
    _wait_all(manager, jobs)
    assert max_overlap(_intervals(manager, jobs)) <= 2


def test_a_rate_of_10_a_second_holds_across_the_fleet(fleet: Fleet) -> None:
    manager = fleet.manager
    for host in fleet.hosts:
        _started(fleet, fleet.start(host), host)
    manager.set_limit("openai", rate="10/s")  # type: ignore[attr-defined]
    jobs = manager.create_jobs(
        [{**agent_job(f"r{i}", "plain"), "limit_keys": ["openai"]} for i in range(30)]
    )
    _wait_all(manager, jobs)
    starts = [start for start, _ in _intervals(manager, jobs)]
    assert max_starts_in_window(starts, timedelta(seconds=1)) <= 10


def test_a_paused_queue_starts_nothing_until_resumed(fleet: Fleet) -> None:
    manager = fleet.manager
    sups = [fleet.start(host) for host in fleet.hosts]
    for sup, host in zip(sups, fleet.hosts, strict=True):
        _started(fleet, sup, host)
    manager.pause_queue("batch")  # type: ignore[attr-defined]
    held = manager.create_jobs(
        [{**agent_job(f"p{i}", "plain"), "queue": "batch"} for i in range(4)]
    )
    other = manager.create_job(**agent_job("free", "plain"))
    wait_until(lambda: finished(manager, other.id), 30, "a job of another queue")
    # Every supervisor has polled since: none started a paused job.
    for sup in sups:
        sup.settled_counters()
    assert all(manager.get_attempts(job.id) == [] for job in held)
    assert all(manager.get_job(job.id).status is JobStatus.PENDING for job in held)
    manager.resume_queue("batch")  # type: ignore[attr-defined]
    _wait_all(manager, held)
