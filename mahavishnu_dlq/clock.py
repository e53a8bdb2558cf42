"""Time, injected.

Everything that reads the time or waits takes a :class:`Clock`, so tests can run
background work deterministically with :class:`~mahavishnu_dlq.testing.FakeClock`
instead of sleeping. Timestamps are timezone-aware UTC datetimes.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Protocol, runtime_checkable

import anyio

__all__ = ["EPOCH", "Clock", "SystemClock", "from_micros", "to_micros", "utcnow"]

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICRO = timedelta(microseconds=1)


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(timezone.utc)


def to_micros(value: datetime) -> int:
    """Whole microseconds since the Unix epoch (exact, unlike float timestamps)."""
    return (value - EPOCH) // _MICRO


def from_micros(value: int) -> datetime:
    """Inverse of :func:`to_micros`."""
    return EPOCH + timedelta(microseconds=value)


@runtime_checkable
class Clock(Protocol):
    """Reads the time and waits."""

    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (a checkpoint even when 0)."""
        ...


class SystemClock:
    """The real wall clock; waiting uses the running event loop."""

    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(max(0.0, seconds))
