"""DeadLetterQueue over MemoryStore: what its tests share (records, limits, the state
machine and operator actions are tested in this package's modules).

Time is a FakeClock, retries are driven with ``RetryProcessor.run_once``/``drain``,
and nothing sleeps: every test is deterministic on asyncio and trio.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from mahavishnu_dlq import DeadLetterQueue
from mahavishnu_dlq.models import (
    DeadLetterStatus,
    FailedTask,
)
from mahavishnu_dlq.testing import FakeClock

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
WORKER = "w-test"

PENDING = DeadLetterStatus.PENDING
RETRYING = DeadLetterStatus.RETRYING
EXHAUSTED = DeadLetterStatus.EXHAUSTED
COMPLETED = DeadLetterStatus.COMPLETED
ARCHIVED = DeadLetterStatus.ARCHIVED


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def raised(exc: BaseException) -> BaseException:
    """``exc`` after being raised and caught, so it carries a traceback."""
    try:
        raise exc
    except BaseException as caught:
        return caught


def connection_error(shard: int = 1) -> BaseException:
    """The same failure each time (one fingerprint), with a varying number in it."""

    def connect() -> None:
        raise ConnectionError(f"connection to shard {shard} refused")

    try:
        connect()
    except ConnectionError as caught:
        return caught
    raise AssertionError("unreachable")  # pragma: no cover


def value_error() -> BaseException:
    return raised(ValueError("invalid email address"))


class SlowDownError(Exception):
    """A failure that asks for a later retry through a ``retry_after`` attribute."""

    retry_after = 120


class ThrottledError(ConnectionError):
    retry_after = 120


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def dlq(clock: FakeClock) -> DeadLetterQueue:
    return DeadLetterQueue(clock=clock, rng=random.Random(1234), worker_id=WORKER)


async def fetch(dlq: DeadLetterQueue, task_id: str) -> FailedTask:
    task = await dlq.get_task(task_id)
    assert task is not None, f"{task_id} is not stored"
    return task


async def ids(dlq: DeadLetterQueue, **kwargs: Any) -> list[str]:
    return [task.task_id for task in await dlq.list_tasks(**kwargs)]


async def succeed(task: dict[str, Any], repos: list[str]) -> dict[str, Any]:
    return {"echo": task, "repos": repos}
