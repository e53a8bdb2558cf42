"""Helpers for tests — ours and yours.

- :class:`FakeClock`: a clock you move by hand; its ``sleep`` jumps time
  forward instead of waiting, so a processor loop or a rate-limited replay runs
  instantly and deterministically.
- :func:`make_task`: a valid :class:`FailedTask` with overridable fields.
- :class:`FlakyHandler`: a retry handler that fails a given number of times,
  then succeeds, recording every call.
- :func:`drain_over_time`: run a processor until nothing falls due within a
  horizon, moving a :class:`FakeClock` to each next due time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import anyio

from mahavishnu_dlq.models import FailedTask

if TYPE_CHECKING:
    from mahavishnu_dlq.processor import RetryProcessor

__all__ = ["FakeClock", "FlakyHandler", "drain_over_time", "make_task"]

_DEFAULT_START = datetime(2026, 1, 1, tzinfo=timezone.utc)


class FakeClock:
    """A clock that only moves when told to (or when something sleeps on it)."""

    def __init__(self, start: datetime = _DEFAULT_START) -> None:
        if start.tzinfo is None:
            raise ValueError("FakeClock needs a timezone-aware start time")
        self._now = start
        self.slept: list[float] = []

    def now(self) -> datetime:
        return self._now

    def advance(self, seconds: float | timedelta) -> datetime:
        """Move time forward; returns the new now."""
        delta = seconds if isinstance(seconds, timedelta) else timedelta(seconds=seconds)
        if delta < timedelta(0):
            raise ValueError("time only moves forward")
        self._now += delta
        return self._now

    def set(self, when: datetime) -> None:
        """Jump to ``when`` (not before now)."""
        if when < self._now:
            raise ValueError("time only moves forward")
        self._now = when

    async def sleep(self, seconds: float) -> None:
        """Jump forward ``seconds`` and yield to the event loop once."""
        self.slept.append(seconds)
        if seconds > 0:
            self.advance(seconds)
        await anyio.lowlevel.checkpoint()


def make_task(**overrides: Any) -> FailedTask:
    """A valid pending task (validated), with ``overrides`` applied."""
    now = overrides.pop("now", _DEFAULT_START)
    fields: dict[str, Any] = {
        "task_id": "task-1",
        "workflow": "wf",
        "task": {"n": 1},
        "repos": ["repo-a"],
        "error": "connection reset by peer",
        "error_type": "ConnectionResetError",
        "failed_at": now,
        "created_at": now,
        "updated_at": now,
        "next_retry_at": now,
    }
    fields.update(overrides)
    return FailedTask.model_validate(fields)


@dataclass
class FlakyHandler:
    """Fails ``failures`` times (raising ``make_error()``), then returns ``result``."""

    failures: int = 0
    result: Any = "ok"
    make_error: Callable[[], BaseException] = field(
        default=lambda: ConnectionError("connection reset by peer")
    )
    calls: list[tuple[dict[str, Any], list[str]]] = field(default_factory=list)

    async def __call__(self, task: dict[str, Any], repos: list[str]) -> Any:
        self.calls.append((task, repos))
        if len(self.calls) <= self.failures:
            raise self.make_error()
        return self.result


async def drain_over_time(
    processor: RetryProcessor, clock: FakeClock, *, horizon: float = 86400.0
) -> int:
    """Retry everything that falls due within ``horizon`` seconds from now.

    :meth:`RetryProcessor.drain` stops when nothing is due *now*; this moves
    ``clock`` to the next due time and drains again, until the next due time is
    beyond the horizon, nothing is scheduled, or what is due is not taken here.
    Returns the attempts made.
    """
    until = clock.now() + timedelta(seconds=horizon)
    total = 0
    while True:
        made = await processor.drain()
        total += made
        due = await processor.dlq.traced_store.next_due_at()
        if due is None or due > until:
            return total
        if due > clock.now():
            clock.set(due)
        elif not made:  # due, but nothing here takes it (no handler, or busy)
            return total
