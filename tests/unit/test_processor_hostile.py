"""Handlers and stores that misbehave cannot poison the retry processor.

- a handler raising ``CancelledError`` on its own is a failed attempt, counted;
- ``KeyboardInterrupt`` / ``SystemExit`` from a handler give the attempt back
  (pending, retry returned) and then propagate as themselves, not in a group;
- an ``immediate`` task that fails again waits for the floor;
- a store that fails (claims, outcomes, renewals, statistics) is logged and
  retried: the background processor goes on, and the host's task is never
  cancelled by it.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Any

import anyio
import pytest

from mahavishnu_dlq.models import AttemptOutcome, DeadLetterStatus, FailedTask
from mahavishnu_dlq.processor import RetryProcessor
from mahavishnu_dlq.queue import DeadLetterQueue
from mahavishnu_dlq.storage.base import Mutation
from mahavishnu_dlq.testing import FakeClock
from tests.unit.processor.support import WatchedStore, add, has_status, stored

pytestmark = pytest.mark.anyio

PENDING = DeadLetterStatus.PENDING
EXHAUSTED = DeadLetterStatus.EXHAUSTED
COMPLETED = DeadLetterStatus.COMPLETED


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store() -> WatchedStore:
    return WatchedStore()


@pytest.fixture
def dlq(store: WatchedStore, clock: FakeClock) -> DeadLetterQueue:
    return DeadLetterQueue(store, clock=clock, worker_id="main", rng=random.Random(7))


# -- handlers ---------------------------------------------------------------------------


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # trio.Cancelled cannot be raised by hand
async def test_a_handler_raising_cancelled_error_itself_is_a_failed_attempt(
    dlq: DeadLetterQueue,
) -> None:
    async def cancels(task: dict[str, Any], repos: list[str]) -> None:
        raise asyncio.CancelledError("raised by the handler, nobody cancelled anything")

    dlq.register_handler("wf", cancels)
    await add(dlq, "t", policy="exponential", max_retries=2)
    dlq.clock.advance(3600)  # type: ignore[attr-defined]
    processor = RetryProcessor(dlq)
    assert await processor.run_once() == 1
    task = await stored(dlq, "t")
    assert task.status is PENDING
    assert task.retry_count == 1  # the retry was spent, not handed back
    assert task.attempts[-1].outcome is AttemptOutcome.FAILURE
    assert task.attempts[-1].error_type == "asyncio.exceptions.CancelledError"
    dlq.clock.advance(3600)  # type: ignore[attr-defined]
    assert await processor.run_once() == 1
    assert (await stored(dlq, "t")).status is EXHAUSTED
    assert dlq.lifetime["retry_failed"] == 2


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_sync_handler_raising_cancelled_error_is_a_failed_attempt(
    dlq: DeadLetterQueue,
) -> None:
    def cancels(task: dict[str, Any], repos: list[str]) -> None:
        raise asyncio.CancelledError

    dlq.register_handler("wf", cancels)
    await add(dlq, "t", max_retries=1)
    assert await RetryProcessor(dlq).run_once() == 1
    task = await stored(dlq, "t")
    assert (task.status, task.retry_count) == (EXHAUSTED, 1)


async def test_a_real_cancellation_still_releases_the_attempt(
    dlq: DeadLetterQueue, store: WatchedStore
) -> None:
    started = anyio.Event()

    async def hangs(task: dict[str, Any], repos: list[str]) -> None:
        started.set()
        await anyio.Event().wait()

    dlq.register_handler("wf", hangs)
    await add(dlq, "t", max_retries=3)
    async with anyio.create_task_group() as group:
        group.start_soon(RetryProcessor(dlq).run_once)
        await started.wait()
        group.cancel_scope.cancel()
    task = await stored(dlq, "t")
    assert (task.status, task.retry_count) == (PENDING, 0)  # given back, not failed
    assert task.attempts[-1].outcome is AttemptOutcome.CANCELLED


@pytest.mark.parametrize("signal", [KeyboardInterrupt, SystemExit])
async def test_keyboard_interrupt_and_system_exit_propagate_as_themselves(
    dlq: DeadLetterQueue, signal: type[BaseException]
) -> None:
    other_started = anyio.Event()

    async def handler(task: dict[str, Any], repos: list[str]) -> None:
        if task["id"] == "slow":
            other_started.set()
            await anyio.Event().wait()  # cancelled when the processor stops
        await other_started.wait()
        raise signal("from the handler")

    dlq.register_handler("wf", handler)
    await add(dlq, "slow")
    await add(dlq, "stop")
    with pytest.raises(signal) as caught:
        await RetryProcessor(dlq).run_once()
    assert type(caught.value) is signal  # not an exception group
    for task_id in ("slow", "stop"):  # both attempts given back
        task = await stored(dlq, task_id)
        assert (task.status, task.retry_count, task.lease_owner) == (PENDING, 0, None)
        assert task.attempts[-1].outcome is AttemptOutcome.CANCELLED


async def test_keyboard_interrupt_ends_the_background_processor_as_itself(
    dlq: DeadLetterQueue, store: WatchedStore
) -> None:
    async def handler(task: dict[str, Any], repos: list[str]) -> None:
        raise KeyboardInterrupt

    dlq.register_handler("wf", handler)
    await add(dlq, "t")
    processor = RetryProcessor(dlq, check_interval=3600)
    with pytest.raises(KeyboardInterrupt):
        await processor.run()
    assert not processor.running
    task = await stored(dlq, "t")
    assert (task.status, task.retry_count) == (PENDING, 0)


async def test_an_immediate_task_that_fails_again_waits_for_the_floor(
    dlq: DeadLetterQueue, clock: FakeClock
) -> None:
    calls: list[datetime] = []

    async def fails(task: dict[str, Any], repos: list[str]) -> None:
        calls.append(clock.now())
        raise ConnectionError("still down")

    dlq.register_handler("wf", fails)
    await add(dlq, "t", policy="immediate", max_retries=5)
    processor = RetryProcessor(dlq)
    assert await processor.drain() == 1  # the first retry is immediate …
    task = await stored(dlq, "t")
    assert task.next_retry_at == clock.now() + timedelta(seconds=1)  # … the next is not
    clock.advance(0.999)
    assert await processor.run_once() == 0
    clock.advance(0.001)
    assert await processor.run_once() == 1
    assert len(calls) == 2


# -- stores -----------------------------------------------------------------------------


class FlakyStore(WatchedStore):
    """Fails the next ``n`` calls of chosen operations with a plain RuntimeError."""

    def __init__(self) -> None:
        super().__init__()
        self.fail: dict[str, int] = {}
        self.failed: list[str] = []
        self._failing = anyio.Event()

    def _maybe_fail(self, operation: str) -> None:
        left = self.fail.get(operation, 0)
        if left:
            self.fail[operation] = left - 1
            self.failed.append(operation)
            self._failing.set()
            raise RuntimeError(f"{operation} broke (not a DLQError)")

    async def failure_of(self, operation: str) -> None:
        """Return once ``operation`` has failed (no polling)."""
        while operation not in self.failed:
            self._failing = anyio.Event()
            await self._failing.wait()

    async def claim_due(
        self, now: datetime, limit: int, fn: Mutation, *, skip_workflows: Collection[str] = ()
    ) -> list[FailedTask]:
        self._maybe_fail("claim_due")
        return await super().claim_due(now, limit, fn, skip_workflows=skip_workflows)

    async def mutate(self, task_id: str, fn: Mutation) -> FailedTask:
        self._maybe_fail("mutate")
        return await super().mutate(task_id, fn)

    async def next_due_at(self) -> datetime | None:
        self._maybe_fail("next_due_at")
        return await super().next_due_at()


async def test_the_background_processor_survives_a_broken_store(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    store = FlakyStore()
    dlq = DeadLetterQueue(store, clock=clock, worker_id="main")
    done: list[str] = []

    async def handler(task: dict[str, Any], repos: list[str]) -> str:
        done.append(task["id"])
        return "ok"

    dlq.register_handler("wf", handler)
    await add(dlq, "first")
    store.fail = {"claim_due": 1, "next_due_at": 2}
    caplog.set_level(logging.WARNING, logger="mahavishnu_dlq")
    host_went_on = False
    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            processor = RetryProcessor(dlq, check_interval=0.01)
            await group.start(processor.run)
            await store.wait_for("first", has_status(COMPLETED))
            await add(dlq, "second")
            store.fail = {"mutate": 1}  # its outcome cannot be written
            processor.wakeup()
            await store.failure_of("mutate")
            second = await stored(dlq, "second")  # claimed; its outcome was lost
            assert (second.status, second.lease_owner) == (DeadLetterStatus.RETRYING, "main")
            await add(dlq, "third")
            processor.wakeup()
            await store.wait_for("third", has_status(COMPLETED))
            host_went_on = True
            processor.stop()
    assert host_went_on
    assert done[0] == "first"
    assert "third" in done
    messages = " ".join(record.getMessage() for record in caplog.records)
    assert "dlq.claim failed: RuntimeError: claim_due broke" in messages
    assert "the outcome was not recorded (RuntimeError: mutate broke" in messages


async def test_an_unexpected_error_restarts_the_cycle_and_spares_the_host(
    dlq: DeadLetterQueue, store: WatchedStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in the loop itself (here: the lease renewal) ends the cycle, not the host."""
    calls = 0
    real_renew = RetryProcessor._renew_leases

    async def broken_once(self: RetryProcessor) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug in a background loop")
        await real_renew(self)

    monkeypatch.setattr(RetryProcessor, "_renew_leases", broken_once)
    monkeypatch.setattr("mahavishnu_dlq.processor._RESTART_FIRST", 0.001)
    dlq.register_handler("wf", lambda task, repos: "ok")
    await add(dlq, "t")
    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            processor = RetryProcessor(dlq, check_interval=0.01)
            await group.start(processor.run)
            await store.wait_for("t", has_status(COMPLETED))
            processor.stop()
    assert calls >= 2  # the cycle started again
