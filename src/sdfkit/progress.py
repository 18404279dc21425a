"""Progress bars for long work (rich), quiet when output is not a terminal or in tests.

``$SDF_PROGRESS``: ``auto`` (the default: bars when stderr is a terminal), ``1`` (always) or
``0`` (never); any other value is an error naming the variable.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

#: Accepted values of ``$SDF_PROGRESS``.
PROGRESS_MODES = ("auto", "1", "0")


def enabled() -> bool:
    """Whether bars show: ``$SDF_PROGRESS`` (auto, 1 or 0), auto meaning stderr is a terminal."""
    from sdfkit.settings import env_choice

    mode = env_choice("SDF_PROGRESS", "auto", PROGRESS_MODES)
    return mode == "1" or (mode == "auto" and sys.stderr.isatty())


class Tick:
    """``tick(n)`` advances the bar; ``tick.status(text)`` shows a live status after its label
    (e.g. batch states and counts while polling)."""

    def __init__(self, progress: Any = None, task: Any = None, label: str = "") -> None:
        self._progress, self._task, self._label = progress, task, label

    def __call__(self, n: int = 1) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def status(self, text: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, description=f"{self._label} [{text}]")


@contextmanager
def counter(description: str, total: int | None = None, unit: str = "items") -> Iterator[Tick]:
    """Yields a ``Tick``; shows a bar (or a spinner without ``total``) on a terminal."""
    if not enabled():
        yield Tick()
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
        yield Tick(prog, task, description)
