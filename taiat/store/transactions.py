"""Transactions on one database, as `JobManager` and the supervisor's port both run them: on a
schema this release understands (checked once), and run again from the start when PostgreSQL
aborts one for a deadlock or a serialisation conflict with another transaction."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from sqlalchemy.engine import Connection, Engine

from taiat.errors import LockTimeout, TransientConflict
from taiat.store import db, schema

T = TypeVar("T")
#: Tries of a transaction that conflicts with another before the conflict is raised.
CONFLICT_RETRIES = 8


class Transactions:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._schema_checked = False

    @contextmanager
    def transaction(self, *, single_statement: bool = False) -> Iterator[Connection]:
        """A transaction on a schema this release understands (see `db.begin` for
        `single_statement`)."""
        with db.begin(self.engine, single_statement=single_statement) as conn:
            if not self._schema_checked:
                schema.check_version(conn)
                self._schema_checked = True
            yield conn

    def run_alone(self, work: Callable[[Engine], T]) -> T:
        """`work(engine)`, whose one statement is atomic on its own (`db.first_row`), on a
        schema this release understands, run again when PostgreSQL aborts it for a conflict."""
        if not self._schema_checked:
            with self.transaction():
                pass
        return self._again_on_conflict(lambda: work(self.engine))

    def run(self, work: Callable[[Connection], T], *, single_statement: bool = False) -> T:
        """`work(conn)` in a transaction, run again from the start when PostgreSQL aborts it
        for a deadlock or serialisation conflict with another transaction."""

        def attempt() -> T:
            with self.transaction(single_statement=single_statement) as conn:
                return work(conn)

        return self._again_on_conflict(attempt)

    def _again_on_conflict(self, work: Callable[[], T]) -> T:
        for attempt in range(CONFLICT_RETRIES):
            try:
                return work()
            except LockTimeout:
                raise  # the holder is slow, or stopped: again at once would wait as long
            except TransientConflict:
                if attempt == CONFLICT_RETRIES - 1:
                    raise
                time.sleep(random.uniform(0, 0.01 * 2**attempt))
        raise AssertionError("unreachable")
