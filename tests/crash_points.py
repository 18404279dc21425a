"""Failure injection for atomicity tests: make a store's catalog connection raise (or die)
just before a chosen statement, and snapshot the catalog to compare before and after."""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from typing import Any

from sdfkit.store.catalog import Store


class CrashPoint:
    """Where to fail: the first statement matching ``pattern`` (a regex) after ``skip``
    earlier matches raises ``error`` instead of running; ``error=None`` ends the process on
    the spot (``os._exit``), as a kill -9 or power loss would, with no ROLLBACK or cleanup."""

    def __init__(self, pattern: str, error: BaseException | None, skip: int = 0) -> None:
        self.pattern = re.compile(pattern, re.IGNORECASE)
        self.error = error
        self.skip = skip
        self.fired = False
        self.statements: list[str] = []  # every statement seen, to debug a pattern

    def check(self, sql: str) -> None:
        self.statements.append(sql)
        if not self.fired and self.pattern.search(sql):
            if self.skip:
                self.skip -= 1
                return
            self.fired = True
            if self.error is None:
                os._exit(17)
            raise self.error


class _Connection:
    """A DuckDB connection whose ``execute``/``sql`` pass through a ``CrashPoint``."""

    def __init__(self, con: Any, point: CrashPoint) -> None:
        self._con = con
        self._point = point

    def execute(self, sql: str, *args: Any, **kwargs: Any) -> Any:
        self._point.check(sql)
        return self._con.execute(sql, *args, **kwargs)

    def sql(self, sql: str, *args: Any, **kwargs: Any) -> Any:
        self._point.check(sql)
        return self._con.sql(sql, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._con, name)


def crash_at(store: Store, pattern: str, error: BaseException | None, skip: int = 0) -> CrashPoint:
    """Make every later ``store.connect()`` fail at ``pattern``; returns the point (check
    ``.fired``: a test whose failure never happened proves nothing)."""
    point = CrashPoint(pattern, error, skip)
    real = store.connect

    @contextmanager
    def connect(*args: Any, **kwargs: Any):
        with real(*args, **kwargs) as con:
            yield _Connection(con, point)

    store.connect = connect  # type: ignore[method-assign]
    return point


def catalog(store: Store) -> dict[str, tuple[list[tuple[str, str]], list[str]]]:
    """Every table of ``sdf.duckdb``: its columns and types, and its rows (sorted)."""
    with Store(store.root).connect() as con:
        names = [
            r[0]
            for r in con.execute(
                "SELECT table_name FROM duckdb_tables() ORDER BY table_name"
            ).fetchall()
        ]
        out = {}
        for name in names:
            cols = [(r[0], r[1]) for r in con.execute(f'DESCRIBE "{name}"').fetchall()]
            rows = sorted(repr(r) for r in con.execute(f'SELECT * FROM "{name}"').fetchall())
            out[name] = (cols, rows)
    return out
