"""Records and mutations the contract tests build."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from mahavishnu_dlq import lifecycle
from mahavishnu_dlq.models import (
    FailedTask,
)
from mahavishnu_dlq.storage import Store

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def put(task: FailedTask) -> Any:
    """A mutation that stores ``task`` whatever is there."""
    return lambda _current: task


async def seed(store: Store, *tasks: FailedTask) -> None:
    for task in tasks:
        await store.mutate(task.task_id, put(task))


def claimer(now: datetime, owner: str = "w1") -> Any:
    def claim(current: FailedTask | None) -> FailedTask:
        assert current is not None
        return lifecycle.claim(
            current, now=now, owner=owner, lease_seconds=30, trigger="processor", attempts_kept=5
        )

    return claim
