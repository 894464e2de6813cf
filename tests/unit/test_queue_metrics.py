"""The jobs by queue in the metrics (`taiat_jobs{queue=...,status=...}`) and the status file:
label values bounded, the rest added up under queue "other"."""

from __future__ import annotations

from test_publishing import parse_metrics, snapshot

from taiat.store.port import Backlog
from taiat.supervisor.publishing import MAX_QUEUE_LABELS, bounded_queues, render_metrics


def _counts(ready: int) -> dict[str, int]:
    return {"pending": 0, "ready": ready, "scheduled": 0, "running": 1}


def test_few_queues_are_shown_as_they_are() -> None:
    queues = {"b": _counts(1), "a": _counts(2)}
    assert bounded_queues(queues) == {"a": _counts(2), "b": _counts(1)}


def test_many_queues_are_bounded_and_the_smallest_added_up_as_other() -> None:
    queues = {f"q{i:03}": _counts(i) for i in range(100)}
    shown = bounded_queues(queues)
    assert len(shown) == MAX_QUEUE_LABELS
    kept = {f"q{i:03}" for i in range(100 - (MAX_QUEUE_LABELS - 1), 100)}
    assert set(shown) == kept | {"other"}
    folded = range(100 - (MAX_QUEUE_LABELS - 1))
    assert shown["other"] == {
        "pending": 0,
        "ready": sum(folded),
        "scheduled": 0,
        "running": len(folded),
    }
    total = sum(sum(c.values()) for c in shown.values())
    assert total == sum(sum(c.values()) for c in queues.values())


def test_a_queue_named_other_takes_in_the_rest() -> None:
    queues = {"other": _counts(50), **{f"q{i}": _counts(0) for i in range(30)}}
    shown = bounded_queues(queues, limit=3)
    assert set(shown) == {"other", "q0"}
    assert shown["other"]["running"] == 1 + 29


def test_metrics_have_the_jobs_by_queue_and_status_beside_the_totals() -> None:
    text = render_metrics(
        snapshot(),
        jobs={"pending": 1, "ready": 3, "scheduled": 0, "running": 2},
        queues={"gpu": _counts(2), "default": _counts(1)},
    )
    _, types, samples = parse_metrics(text)
    assert types["taiat_jobs"] == "gauge"
    found = {
        tuple(sorted(labels.items())): value
        for name, labels, value in samples
        if name == "taiat_jobs"
    }
    assert found[(("status", "ready"),)] == 3
    assert found[(("queue", "gpu"), ("status", "ready"))] == 2
    assert found[(("queue", "default"), ("status", "running"))] == 1
    assert 'taiat_jobs{queue="gpu",status="ready"} 2' in text


def test_the_backlog_counts_each_queue_by_status() -> None:
    backlog = Backlog(
        running=1,
        ready=2,
        queues={"a": {"running": 1, "ready": 1}, "b": {"ready": 1, "blocked": 2, "later": 1}},
    )
    assert backlog.by_queue() == {
        "a": {"pending": 0, "ready": 1, "scheduled": 0, "running": 1},
        "b": {"pending": 2, "ready": 1, "scheduled": 1, "running": 0},
    }
