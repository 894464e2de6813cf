"""Old names kept working. The modules that moved into the concept folders still import under
their old paths (`import taiat.db` gives `taiat.store.db` itself, not a copy), and a package
names what it re-exports without importing it before it is used."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

#: Each module path that no longer exists -> where that module lives now.
OLD_PATHS: dict[str, str] = {
    "taiat.ahead": "taiat.supervisor.claim_ahead",
    "taiat.child": "taiat.forking.child",
    "taiat.db": "taiat.store.db",
    "taiat.engines": "taiat.agents.query_engines",
    "taiat.examples": "taiat.agents.examples",
    "taiat.executors": "taiat.agents.executors",
    "taiat.exits": "taiat.cli.exits",
    "taiat.forkloop": "taiat.forking.server_loop",
    "taiat.forkserver": "taiat.forking.server",
    "taiat.lifecycle": "taiat.store.state_machine",
    "taiat.operator.jobs": "taiat.operator.job_commands",
    "taiat.operator.progress": "taiat.cli.progress",
    "taiat.operator.store": "taiat.operator.lookups",
    "taiat.planner": "taiat.agents.planner",
    "taiat.plans": "taiat.store.plans",
    "taiat.process": "taiat.forking.job_process",
    "taiat.queries": "taiat.store.queries",
    "taiat.queries.endings": "taiat.store.queries.endings",
    "taiat.queries.operator": "taiat.store.queries.operator",
    "taiat.queries.plans": "taiat.store.queries.plans",
    "taiat.queries.reading": "taiat.store.queries.reading",
    "taiat.queries.supervisors": "taiat.store.queries.supervisors",
    "taiat.quickfork": "taiat.forking.fast_fork",
    "taiat.recorder": "taiat.supervisor.recorder",
    "taiat.report": "taiat.cli.status_report",
    "taiat.schema": "taiat.store.schema",
    "taiat.specs": "taiat.store.validation",
    "taiat.spool": "taiat.forking.spool",
    "taiat.status": "taiat.supervisor.publishing",
    "taiat.storing": "taiat.supervisor.large_results",
    "taiat.wakeup": "taiat.supervisor.wakeup",
    "taiat.workers": "taiat.store.leases",
}


class _OldPaths(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old path, and loads it by putting the module of its new path in its place
    (the import system returns what `sys.modules` holds under the name once loading ends)."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname not in OLD_PATHS:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: Any) -> None:
        return None  # a blank module, replaced in exec_module

    def exec_module(self, module: ModuleType) -> None:
        sys.modules[module.__name__] = importlib.import_module(OLD_PATHS[module.__name__])


def keep_old_paths() -> None:
    """Let the old module paths import (once per process)."""
    if not any(isinstance(finder, _OldPaths) for finder in sys.meta_path):
        sys.meta_path.insert(0, _OldPaths())


def lazy_names(
    package: str, where: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A package's `__getattr__` and `__dir__` for the names it re-exports: each name ->
    the module that defines it, imported when the name is first used."""
    namespace = sys.modules[package].__dict__

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted([*namespace, *where])

    return __getattr__, __dir__
