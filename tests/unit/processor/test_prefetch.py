"""RetryProcessor.run(): how much it claims ahead (``prefetch``) and when it claims again.

The handlers wait on events the test sets, and ``wait_all_tasks_blocked`` lets the
processor settle after each step: no timing is involved.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from datetime import datetime
from typing import Any

import anyio
import pytest

from mahavishnu_dlq.models import FailedTask, TaskFilter
from mahavishnu_dlq.processor import RetryProcessor
from mahavishnu_dlq.queue import DeadLetterQueue
from mahavishnu_dlq.storage.base import Mutation

from .support import COMPLETED, RETRYING, WatchedStore, add

pytestmark = pytest.mark.anyio


class CountedClaims(WatchedStore):
    """Records the limit of every ``claim_due`` and how many it took."""

    def __init__(self) -> None:
        super().__init__()
        self.claims: list[tuple[int, int]] = []

    async def claim_due(
        self, now: datetime, limit: int, fn: Mutation, *, skip_workflows: Collection[str] = ()
    ) -> list[FailedTask]:
        claimed = await super().claim_due(now, limit, fn, skip_workflows=skip_workflows)
        self.claims.append((limit, len(claimed)))
        return claimed


class Gates:
    """A handler whose attempts each wait until the test lets them finish."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self._open: dict[str, anyio.Event] = {}

    async def __call__(self, task: dict[str, Any], repos: list[str]) -> None:
        self.started.append(task["id"])
        await self._open.setdefault(task["id"], anyio.Event()).wait()

    def finish(self, count: int) -> None:
        running = [t for t in self.started if not self._open.setdefault(t, anyio.Event()).is_set()]
        for task_id in running[:count]:
            self._open[task_id].set()


async def _queue(store: CountedClaims, tasks: int, **options: Any) -> tuple[DeadLetterQueue, Gates]:
    dlq = DeadLetterQueue(store, max_size=10_000, **options)
    gates = Gates()
    dlq.default_callback = gates
    for n in range(tasks):
        await add(dlq, f"t{n:03}")
    return dlq, gates


async def test_a_processor_claims_ahead_and_again_only_when_half_its_buffer_started() -> None:
    store = CountedClaims()
    dlq, gates = await _queue(store, 40, concurrency=2, prefetch=4)
    processor = RetryProcessor(dlq, check_interval=3600)
    assert (processor.capacity, processor.low_water) == (8, 5)
    async with anyio.create_task_group() as group:
        await group.start(processor.run)
        await anyio.wait_all_tasks_blocked()
        assert store.claims == [(8, 8)]  # 2 running, 6 waiting for a slot
        assert len(gates.started) == 2
        waiting = [t for t in await store.query(TaskFilter(), limit=1000) if t.status is RETRYING]
        assert len(waiting) == 8  # every held task is leased, running or not
        gates.finish(2)  # 6 held: above the low water mark, no claim
        await anyio.wait_all_tasks_blocked()
        assert store.claims == [(8, 8)]
        assert len(gates.started) == 4
        gates.finish(1)  # 5 held: a claim of 3 fills it up again
        await anyio.wait_all_tasks_blocked()
        assert store.claims == [(8, 8), (3, 3)]
        processor.stop()
    counts: dict[str, int] = {}
    for task in await store.query(TaskFilter(), limit=1000):
        counts[task.status.value] = counts.get(task.status.value, 0) + 1
    # stopped: the finished ones are completed, everything held is given back
    assert counts == {"completed": 3, "pending": 37}
    done = {t.task_id for t in await store.query(TaskFilter(), limit=1000) if t.status is COMPLETED}
    assert done <= set(gates.started)


async def test_prefetch_one_claims_only_for_free_slots() -> None:
    store = CountedClaims()
    dlq, gates = await _queue(store, 10, concurrency=2, prefetch=1)
    processor = RetryProcessor(dlq, check_interval=3600)
    assert (processor.capacity, processor.low_water) == (2, 2)
    async with anyio.create_task_group() as group:
        await group.start(processor.run)
        await anyio.wait_all_tasks_blocked()
        assert store.claims == [(2, 2)]
        gates.finish(1)
        await anyio.wait_all_tasks_blocked()
        assert store.claims == [(2, 2), (1, 1)]
        processor.stop()


async def test_the_queue_and_the_settings_give_the_processor_its_prefetch() -> None:
    dlq = DeadLetterQueue(CountedClaims(), prefetch=3, concurrency=5)
    processor = RetryProcessor(dlq)
    assert (processor.prefetch, processor.capacity, processor.low_water) == (3, 15, 10)
    assert RetryProcessor(dlq, prefetch=1).capacity == 5
    with pytest.raises(ValueError, match="prefetch must be >= 1, got 0"):
        RetryProcessor(dlq, prefetch=0)


async def test_tasks_waiting_for_a_slot_are_given_back_when_their_breaker_opens() -> None:
    store = CountedClaims()
    dlq, gates = await _queue(store, 4, concurrency=1, prefetch=4)
    processor = RetryProcessor(dlq, check_interval=3600)
    async with anyio.create_task_group() as group:
        await group.start(processor.run)
        await anyio.wait_all_tasks_blocked()
        assert store.claims == [(4, 4)]
        assert len(gates.started) == 1  # 3 wait for the slot
        await dlq.open_breaker("wf", by="test")
        gates.finish(1)  # the slot frees: the waiting ones must not reach the downstream
        await anyio.wait_all_tasks_blocked()
        assert len(gates.started) == 1
        processor.stop()
    tasks = {t.task_id: t for t in await store.query(TaskFilter(), limit=10)}
    assert tasks[gates.started[0]].status is COMPLETED
    waited = [t for t in tasks.values() if t.task_id not in gates.started]
    assert [t.status.value for t in waited] == ["pending"] * 3
    assert all(t.retry_count == 0 for t in waited)  # given back unattempted
    assert all(a.outcome.value == "cancelled" for t in waited for a in t.attempts)


async def test_lease_renewal_is_one_batch_and_quiet_about_tasks_that_left_meanwhile(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = CountedClaims()
    dlq, _ = await _queue(store, 2, concurrency=2, lease_seconds=60)
    processor = RetryProcessor(dlq, check_interval=3600)
    held = await processor.claim(2)
    for task in held:
        processor._in_flight[task.task_id] = task
    await store.delete("t001")  # gone from the store while this processor holds it
    batches: list[int] = []
    original = store.mutate_many

    async def finishing_meanwhile(items: Any) -> list[FailedTask | Exception]:
        batches.append(len(items))
        if len(batches) == 2:
            processor._in_flight.pop("t001")  # its attempt ended while renewal ran
        return await original(items)

    store.mutate_many = finishing_meanwhile  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, logger="mahavishnu_dlq"):
        await processor._renew_held()  # t001 still held here: a real failure, said once
        await processor._renew_held()  # t001 left meanwhile: nothing to say
    assert batches == [2, 2]  # one batch per pass, not a write per task
    warned = [r for r in caplog.records if getattr(r, "action", None) == "dlq.renew"]
    assert [r.task_id for r in warned] == ["t001"]  # type: ignore[attr-defined]
    renewed = await store.get("t000")
    assert renewed is not None
    assert renewed.lease_owner == processor.worker_id
    assert renewed.lease_expires_at is not None
    assert renewed.lease_expires_at > held[0].lease_expires_at  # type: ignore[operator]
