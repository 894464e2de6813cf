"""The `taiat` command's pure pieces: words for durations and sizes, patterns, times, and the
graph as a tree and as Graphviz source."""

from __future__ import annotations

import io
from datetime import datetime, timedelta

import pytest

from taiat.cli.progress import ProgressDisplay, summary
from taiat.jobs import Attempt, Job, JobHistoryEntry, JobStatus, JobType
from taiat.operator import graph, render
from taiat.operator.cli import UsageError
from taiat.operator.job_commands import parse_time
from taiat.operator.lookups import Graph
from taiat.store.queries.reading import like_pattern

NOW = datetime(2030, 1, 2, 3, 4, 5)


@pytest.mark.parametrize(
    ("seconds", "words"),
    [
        (None, "-"),
        (0.25, "250 ms"),
        (12.34, "12.3 s"),
        (245, "4 m 05 s"),
        (7380, "2 h 03 m"),
        (3 * 86400 + 4 * 3600, "3 d 04 h"),
    ],
)
def test_durations_in_words(seconds: float | None, words: str) -> None:
    assert render.duration(seconds) == words


def test_sizes_in_binary_units() -> None:
    assert [render.size(n) for n in (None, 512, 2048, 12 << 20, 3 << 30)] == [
        "-",
        "512 B",
        "2.0 KiB",
        "12.0 MiB",
        "3.0 GiB",
    ]


def test_shell_patterns_become_like_patterns() -> None:
    assert like_pattern("load-*") == "load-%"
    assert like_pattern("a?c") == "a_c"
    assert like_pattern("100%_done\\") == "100\\%\\_done\\\\"


def test_run_at_times() -> None:
    assert parse_time("+90", NOW) == NOW + timedelta(seconds=90)
    assert parse_time("+2h", NOW) == NOW + timedelta(hours=2)
    assert parse_time("2030-01-31T09:00:00") == datetime(2030, 1, 31, 9)
    assert parse_time("2030-01-31T10:00:00+01:00") == datetime(2030, 1, 31, 9)
    with pytest.raises(UsageError, match="not a time"):
        parse_time("tomorrow")


def _job(job_id: str, status: str, deps: list[str], ran: float | None = None) -> Job:
    started = None if ran is None else NOW - timedelta(seconds=ran + 60)
    done = None if ran is None else NOW - timedelta(seconds=60)
    return Job(
        id=job_id,
        job_type=JobType.AGENT,
        name=f"{job_id}-name",
        status=JobStatus(status),
        dependencies=deps,
        started_at=started,
        completed_at=done,
    )


@pytest.fixture
def diamond() -> Graph:
    jobs = [
        _job("a", "completed", [], 1.5),
        _job("b", "failed", ["a"], 0.2),
        _job("c", "cancelled", ["a"]),
        _job("d", "cancelled", ["b", "c", "gone"]),
    ]
    edges = {("a", "b"), ("a", "c"), ("b", "d"), ("c", "d"), ("gone", "d")}
    return Graph("b", {j.id: j for j in jobs}, edges, missing={"gone"}, now=NOW)


def test_graph_as_an_indented_tree(diamond: Graph) -> None:
    out = render.console(io.StringIO())
    out.print(graph.text_tree(diamond))
    lines = out.file.getvalue().splitlines()
    assert lines[0] == "b-name  b  failed  200 ms"
    assert lines[1:] == [
        "├── depends on",
        "│   └── a-name  a  completed  1.5 s",
        "└── needed by",
        "    └── d-name  d  cancelled",
    ]


def test_graph_as_graphviz_source(diamond: Graph) -> None:
    dot = graph.to_dot(diamond)
    assert dot.startswith("digraph taiat {") and dot.endswith("}\n")
    assert '"b" [label="b-name\\nfailed · 200 ms\\nb", fillcolor="#f5b0b0"' in dot
    assert dot.count("penwidth=3") == 1 and '"gone" [label="gone\\ngone"' in dot
    for a, b in diamond.edges:
        assert f'"{a}" -> "{b}";' in dot
    assert graph._quote('say "hi"\\') == '"say \\"hi\\"\\\\"'


def test_progress_off_a_terminal_is_plain_lines() -> None:
    said: list[str] = []
    display = ProgressDisplay("batch", stream=io.StringIO(), plain=said.append, every=0)
    display.update(1, 3, 0)
    display.update(1, 3, 0)  # nothing new: nothing said
    display.update(3, 3, 1)
    display.close()
    assert [line.split(", ")[:2] for line in said] == [
        ["batch: 1 of 3 jobs done", "0 failed"],
        ["batch: 3 of 3 jobs done", "1 failed"],
    ]
    assert summary(10, 40, 2, 4.0) == "10 of 40 jobs done, 2 failed, 2.5 jobs/s"


def test_progress_counts_the_cancelled_apart_from_the_failed() -> None:
    said: list[str] = []
    display = ProgressDisplay("wait", stream=io.StringIO(), plain=said.append, every=0)
    display.update(2, 3, 1, 1)
    display.close()
    assert said[0].startswith("wait: 2 of 3 jobs done, 1 failed, 1 cancelled, ")
    assert (
        summary(3, 3, 0, 1.0, cancelled=2) == "3 of 3 jobs done, 0 failed, 2 cancelled, 3.0 jobs/s"
    )


def test_the_tries_column_counts_the_attempts_used() -> None:
    def job(status: str, **fields: object) -> Job:
        return Job("j", JobType.AGENT, "n", JobStatus(status), max_retries=3, **fields)  # type: ignore[arg-type]

    started = {"started_at": NOW}
    assert render.tries_text(job("pending")) == "0/4"  # never ran
    assert render.tries_text(job("cancelled")) == "0/4"  # cancelled before it ever ran
    assert render.tries_text(job("running", **started)) == "1/4"
    assert render.tries_text(job("completed", **started)) == "1/4"
    assert render.tries_text(job("pending", retry_count=1, **started)) == "1/4"  # backing off
    assert render.tries_text(job("failed", retry_count=3, **started)) == "4/4"
    assert render.tries_text(job("cancelled", retry_count=1, **started)) == "2/4"
    planned = job("pending", payload={"plan": []}, **started)  # a query waiting on its plan
    assert render.tries_text(planned) == "1/4"


def test_run_time_is_the_wall_time_of_the_attempts_made_up_to_the_state_shown() -> None:
    def attempt(number: int, wall: float) -> Attempt:
        return Attempt("j", number, wall_seconds=wall)

    attempts = [attempt(1, 0.25), attempt(2, 0.5), attempt(3, 2.0)]
    span = {"started_at": NOW - timedelta(seconds=30), "completed_at": NOW}
    done = Job("j", JobType.AGENT, "n", JobStatus.COMPLETED, claim_seq=3, **span)  # type: ignore[arg-type]
    assert render.took(done, attempts) == 2.75  # not the 30 s from its claim to its end
    # The failed entry of a job retried since: only the attempts made before it.
    entry = JobHistoryEntry("e", "j", JobType.AGENT, "n", JobStatus.FAILED, claim_seq=2, **span)  # type: ignore[arg-type]
    assert render.took(entry, attempts) == 0.75 and len(render.runs(entry, attempts)) == 2
    running = Job("j", JobType.AGENT, "n", JobStatus.RUNNING, claim_seq=4, **span)  # type: ignore[arg-type]
    assert render.took(running, attempts, NOW) == 32.75  # and the run going on now
    assert render.took(Job("j", JobType.AGENT, "n", JobStatus.PENDING)) is None
    no_attempt = Job("j", JobType.AGENT, "n", JobStatus.FAILED, claim_seq=1, **span)  # type: ignore[arg-type]
    assert render.took(no_attempt, ()) == 30.0  # failed before a child started: claim to end


def test_an_error_first_line_is_whole_unless_a_limit_is_asked_for() -> None:
    long = "agent x is not registered (known: " + ", ".join(["example"] * 60) + ")\ntraceback"
    assert render.first_line(long) == long.split("\n")[0]
    assert render.first_line(long, 20) == long[:19] + "…"
