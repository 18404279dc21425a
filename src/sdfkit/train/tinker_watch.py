"""What the Tinker service was doing while a call waited: queueing, answering 5xx, or silent.

A Tinker call blocks inside the SDK for as long as the service asks it to wait: the request
sits in a queue (the SDK treats pauses under 15 minutes as normal and says nothing before),
or the service answers 503 and the SDK retries. From the outside all three look alike, a
call that does not return. The SDK reports them on two side channels, which this module
listens to while a call runs, so a deadline's message can say which it was:

- queue state: the SDK hands every change to its observers (``QueueStateLogger`` for training
  and model creation, the ``SamplingClient`` itself for sampling); we note the state as it
  arrives, without waiting out the grace period;
- HTTP answers: the SDK's client logs each response at DEBUG on ``tinker._base_client``;
  we lower that logger to DEBUG while watching and drop what we read, so nothing new
  reaches the user's log handlers (a filter kept on that logger judges late records too).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

HTTP_LOGGER = "tinker._base_client"


@dataclass
class Seen:
    """The latest signals of the service since the watch began."""

    queue_state: str | None = None  # e.g. "paused_capacity"; None when active or unknown
    queue_reason: str | None = None
    queue_since: float | None = None
    last_status: int | None = None  # the latest HTTP status the SDK logged
    server_errors: int = 0  # 5xx answers seen

    def describe(self) -> str:
        """One clause: what the service was doing."""
        if self.queue_state:
            since = (
                f" for {time.monotonic() - self.queue_since:.0f} s"
                if self.queue_since is not None
                else ""
            )
            why = f": {self.queue_reason}" if self.queue_reason else ""
            return f"the service kept the request queued ({self.queue_state}{why}){since}"
        if self.last_status is not None and self.last_status >= 500:
            return (
                f"the service kept answering HTTP {self.last_status} "
                f"({self.server_errors} times: unavailable or overloaded)"
            )
        return "the service sent no answer"


_lock = threading.Lock()
_watchers: list[Seen] = []
_saved: dict[str, Any] = {}


class _HttpFilter(logging.Filter):
    """Reads the SDK's response records; passes on only what the logger passed before.

    Installed once and kept: a record the SDK made while we watched (the logger at DEBUG)
    may reach the logger's handlers only after the watch ended, on another thread. It is
    judged then by the logger's own level, so it does not leak to the user's handlers."""

    def __init__(self) -> None:
        super().__init__()
        self.level = logging.NOTSET  # the logger's effective level before the watch

    def filter(self, record: logging.LogRecord) -> bool:
        status = None
        if record.msg.startswith("HTTP Response:") and len(record.args or ()) >= 3:
            status = record.args[2]  # type: ignore[index]
        elif record.msg.startswith("Retrying due to status code") and record.args:
            status = record.args[0]  # type: ignore[index]
        with _lock:
            watching = bool(_watchers)
            if isinstance(status, int):
                for seen in _watchers:
                    seen.last_status = status
                    if status >= 500:
                        seen.server_errors += 1
        level = self.level if watching else logging.getLogger(HTTP_LOGGER).getEffectiveLevel()
        return record.levelno >= level


_filter = _HttpFilter()


def _on_queue_state(state: Any, reason: str | None) -> None:
    name = getattr(state, "value", None) or getattr(state, "name", None) or str(state)
    name = str(name).lower()
    with _lock:
        for seen in _watchers:
            if name == "active":
                seen.queue_state = seen.queue_reason = seen.queue_since = None
            elif seen.queue_state != name:
                seen.queue_state, seen.queue_reason = name, reason
                seen.queue_since = time.monotonic()


def _install() -> None:
    logger = logging.getLogger(HTTP_LOGGER)
    _filter.level = logger.getEffectiveLevel()
    _saved["level"] = logger.level
    logger.addFilter(_filter)  # once: a logger holds a filter at most once
    logger.setLevel(logging.DEBUG)
    patched = []
    for cls in _observers():
        original = cls.__dict__["on_queue_state_change"]

        def observed(
            self: Any, queue_state: Any, queue_state_reason: str | None, _orig: Any = original
        ) -> None:
            _on_queue_state(queue_state, queue_state_reason)
            _orig(self, queue_state, queue_state_reason)

        cls.on_queue_state_change = observed
        patched.append((cls, original))
    _saved["queue"] = patched


def _observers() -> list[type]:
    """The SDK's queue-state observers: training and model creation (``QueueStateLogger``)
    and sampling (``SamplingClient`` observes its own requests)."""
    out: list[type] = []
    try:
        from tinker.lib.queue_state_logger import QueueStateLogger

        out.append(QueueStateLogger)
        from tinker.lib.public_interfaces.sampling_client import SamplingClient

        out.append(SamplingClient)
    except ImportError:  # pragma: no cover - the SDK moved them: no queue signal, still safe
        pass
    return [c for c in out if "on_queue_state_change" in c.__dict__]


def _uninstall() -> None:
    logger = logging.getLogger(HTTP_LOGGER)
    logger.setLevel(_saved.pop("level"))  # the filter stays (see _HttpFilter)
    for cls, original in _saved.pop("queue", []):
        cls.on_queue_state_change = original


@contextmanager
def watch() -> Iterator[Seen]:
    """Note the service's signals while inside (re-entrant, thread-safe)."""
    seen = Seen()
    with _lock:
        if not _watchers:
            _install()
        _watchers.append(seen)
    try:
        yield seen
    finally:
        with _lock:
            _watchers.remove(seen)
            if not _watchers:
                _uninstall()
