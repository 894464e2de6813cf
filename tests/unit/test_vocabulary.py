"""One vocabulary: every exception of the package in `taiat.errors` under `TaiatError`, and
attempt outcomes as the one `Outcome` enum, whose values are what the database keeps."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from types import ModuleType

import pytest

import taiat
from taiat import errors
from taiat.jobs import Attempt, Outcome


def _modules() -> list[ModuleType]:
    names = [info.name for info in pkgutil.walk_packages(taiat.__path__, "taiat.")]
    return [importlib.import_module(name) for name in ["taiat", *names]]


def test_every_exception_is_in_errors_under_the_one_root() -> None:
    defined = {
        f"{module.__name__}.{name}": value
        for module in _modules()
        for name, value in vars(module).items()
        if inspect.isclass(value)
        and issubclass(value, BaseException)
        and value.__module__ == module.__name__
    }
    assert "taiat.errors.ForkServerError" in defined  # the walk did find them
    elsewhere = sorted(name for name in defined if not name.startswith("taiat.errors."))
    assert elsewhere == []
    root = errors.TaiatError
    outside = sorted(name for name, cls in defined.items() if not issubclass(cls, root))
    assert outside == []


@pytest.mark.parametrize(
    ("module", "name"),
    [
        ("taiat.agents.executors", "JobFailed"),
        ("taiat.agents.executors", "FinalFailure"),
        ("taiat.agents.query_engines", "EngineFailed"),
        ("taiat.forking.server", "ForkServerError"),
        ("taiat.operator.cli", "UsageError"),
        ("taiat.operator.cli", "Unavailable"),
        ("taiat", "TaiatError"),
    ],
)
def test_exceptions_moved_to_errors_can_be_imported_where_they_were(module: str, name: str) -> None:
    assert getattr(importlib.import_module(module), name) is getattr(errors, name)


def test_outcomes_are_the_values_the_database_keeps() -> None:
    assert {outcome.value for outcome in Outcome} == {
        "completed",
        "failed",
        "timed_out",
        "crashed",
        "memory",
        "stopped",
        "cancelled",
        "superseded",
        "lost",
        "planned",
    }
    assert len(Outcome) == 10
    assert taiat.Outcome is Outcome


def test_an_outcome_is_its_text() -> None:
    assert Outcome.TIMED_OUT == "timed_out" and str(Outcome.TIMED_OUT) == "timed_out"
    assert f"{Outcome.LOST}" == "lost" and "crashed" in frozenset({Outcome.CRASHED})
    # An attempt read back from the database holds plain text: it is the same attempt.
    assert Attempt("j", 1, outcome=Outcome.MEMORY) == Attempt("j", 1, outcome="memory")
