"""Progress bars for long work (rich), quiet when output is not a terminal or in tests."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager


def enabled() -> bool:
    if os.environ.get("SDF_PROGRESS") == "0":
        return False
    return os.environ.get("SDF_PROGRESS") == "1" or sys.stderr.isatty()


@contextmanager
def counter(
    description: str, total: int | None = None, unit: str = "items"
) -> Iterator[Callable[[int], None]]:
    """Yields ``tick(n)``; shows a bar (or a spinner without ``total``) on a terminal."""
    if not enabled():
        yield lambda n=1: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    cols = [
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*cols, transient=False) as prog:
        task = prog.add_task(description, total=total)
        yield lambda n=1: prog.advance(task, n)
