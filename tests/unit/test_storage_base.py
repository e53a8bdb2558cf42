"""``mutate_each`` beyond the store contract: how many mutations it keeps in flight,
that one id's items never overlap, and that cancellation is not handed back as a result.

The store here is a MemoryStore whose ``mutate`` parks until the test opens a gate,
so what is in flight is observed at a point where every task is blocked (no sleeps).
"""

from __future__ import annotations

import anyio
import pytest

from mahavishnu_dlq.errors import StoreUnavailableError
from mahavishnu_dlq.models import FailedTask
from mahavishnu_dlq.storage import MemoryStore, Mutation
from mahavishnu_dlq.storage.base import mutate_each
from mahavishnu_dlq.testing import make_task

pytestmark = pytest.mark.anyio


class Gated(MemoryStore):
    """A memory store whose mutations wait for ``gate``; it records what is in flight."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = anyio.Event()
        self.in_flight: list[str] = []
        self.peak = 0
        self.calls = 0

    async def mutate(self, task_id: str, fn: Mutation) -> FailedTask:
        self.calls += 1
        assert task_id not in self.in_flight, "two mutations of one id overlapped"
        self.in_flight.append(task_id)
        self.peak = max(self.peak, len(self.in_flight))
        try:
            await self.gate.wait()
            if task_id == "down":
                raise StoreUnavailableError("gated", "connection refused")
            return await super().mutate(task_id, fn)
        finally:
            self.in_flight.remove(task_id)


def put(task: FailedTask) -> Mutation:
    return lambda _current: task


async def test_at_most_concurrency_ids_are_in_flight() -> None:
    store = Gated()
    items = [(f"t{i}", put(make_task(task_id=f"t{i}"))) for i in range(5)]
    items += [("t0", put(make_task(task_id="t0", retry_count=7)))]
    results: list[FailedTask | Exception] = []

    async def run() -> None:
        results.extend(await mutate_each(store, items, concurrency=2))

    async with anyio.create_task_group() as group:
        group.start_soon(run)
        await anyio.wait_all_tasks_blocked()
        assert len(store.in_flight) == 2  # which two is the scheduler's choice (trio's varies)
        store.gate.set()
    assert store.peak == 2
    assert store.calls == len(items)
    assert [r.task_id for r in results if isinstance(r, FailedTask)] == [i[0] for i in items]
    stored = await store.get("t0")
    assert stored is not None
    assert stored.retry_count == 7  # t0's items applied in their order


async def test_store_failures_land_in_their_slot() -> None:
    store = Gated()
    store.gate.set()
    results = await mutate_each(
        store, [("down", put(make_task(task_id="down"))), ("up", put(make_task(task_id="up")))]
    )
    assert isinstance(results[0], StoreUnavailableError)
    assert results[1] == make_task(task_id="up")


async def test_nothing_to_do_calls_nothing() -> None:
    store = Gated()
    assert await mutate_each(store, []) == []
    assert store.calls == 0


async def test_cancellation_propagates_instead_of_becoming_a_result() -> None:
    store = Gated()
    finished = False

    async def run() -> None:
        nonlocal finished
        await mutate_each(store, [("a", put(make_task(task_id="a")))])
        finished = True

    async with anyio.create_task_group() as group:
        group.start_soon(run)
        await anyio.wait_all_tasks_blocked()
        assert store.in_flight == ["a"]
        group.cancel_scope.cancel()
    assert not finished
    assert store.in_flight == []
    assert await store.get("a") is None
