"""What the RetryProcessor's tests share: a store a test can wait on, enqueueing,
reading back, a recording handler (the fixtures are in ``conftest``)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel

from mahavishnu_dlq.models import AttemptOutcome, DeadLetterStatus, FailedTask
from mahavishnu_dlq.queue import DeadLetterQueue
from mahavishnu_dlq.storage import MemoryStore
from mahavishnu_dlq.storage.base import Mutation
from mahavishnu_dlq.testing import FakeClock

PENDING = DeadLetterStatus.PENDING
RETRYING = DeadLetterStatus.RETRYING
EXHAUSTED = DeadLetterStatus.EXHAUSTED
COMPLETED = DeadLetterStatus.COMPLETED


class WatchedStore(MemoryStore):
    """A MemoryStore a test can wait on: every successful write wakes the waiters."""

    def __init__(self) -> None:
        super().__init__()
        self._changed: anyio.Event | None = None

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def mutate(self, task_id: str, fn: Mutation) -> FailedTask:
        stored = await super().mutate(task_id, fn)
        self._notify()
        return stored

    async def mutate_many(
        self, items: Sequence[tuple[str, Mutation]]
    ) -> list[FailedTask | Exception]:
        results = await super().mutate_many(items)
        self._notify()
        return results

    async def claim_due(
        self, now: datetime, limit: int, fn: Mutation, *, skip_workflows: Collection[str] = ()
    ) -> list[FailedTask]:
        claimed = await super().claim_due(now, limit, fn, skip_workflows=skip_workflows)
        self._notify()
        return claimed

    async def wait_for(self, task_id: str, predicate: Callable[[FailedTask], bool]) -> FailedTask:
        """The record of ``task_id`` once ``predicate`` holds for it (no polling)."""
        while True:
            current = await self.get(task_id)
            if current is not None and predicate(current):
                return current
            if self._changed is None:
                self._changed = anyio.Event()
            await self._changed.wait()


def has_status(status: DeadLetterStatus) -> Callable[[FailedTask], bool]:
    return lambda task: task.status is status


async def add(
    dlq: DeadLetterQueue,
    task_id: str,
    *,
    policy: str = "immediate",
    max_retries: int = 3,
    workflow: str = "wf",
    error: BaseException | None = None,
) -> FailedTask:
    return await dlq.enqueue(
        task_id,
        {"id": task_id},
        ["repo-a", "repo-b"],
        error if error is not None else ConnectionError("connection reset"),
        retry_policy=policy,
        max_retries=max_retries,
        workflow=workflow,
    )


async def stored(dlq: DeadLetterQueue, task_id: str) -> FailedTask:
    task = await dlq.get_task(task_id)
    assert task is not None, f"{task_id} is not stored"
    return task


def dlq_clock(dlq: DeadLetterQueue) -> FakeClock:
    assert isinstance(dlq.clock, FakeClock)
    return dlq.clock


def history(task: FailedTask) -> list[tuple[str, AttemptOutcome]]:
    return [(attempt.worker, attempt.outcome) for attempt in task.attempts]


class Recorder:
    """An async handler that records the ids it was called with."""

    def __init__(self, result: Any = "ok") -> None:
        self.result = result
        self.calls: list[tuple[dict[str, Any], list[str]]] = []

    @property
    def ids(self) -> list[str]:
        return [task["id"] for task, _repos in self.calls]

    async def __call__(self, task: dict[str, Any], repos: list[str]) -> Any:
        self.calls.append((task, repos))
        return self.result
