"""RetryProcessor: crash recovery through leases, stopping with attempts in flight, and
running in the background (lease renewal uses a 0.5 s lease of real time on purpose)."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import pytest

from mahavishnu_dlq.models import AttemptOutcome, FailedTask
from mahavishnu_dlq.processor import RetryProcessor
from mahavishnu_dlq.queue import DeadLetterQueue
from mahavishnu_dlq.storage.base import Mutation
from mahavishnu_dlq.testing import FakeClock, FlakyHandler

from .support import (
    COMPLETED,
    EXHAUSTED,
    PENDING,
    RETRYING,
    Recorder,
    WatchedStore,
    add,
    has_status,
    history,
    stored,
)

pytestmark = pytest.mark.anyio


# -- crash recovery -------------------------------------------------------------------


async def test_a_crashed_workers_task_is_claimed_again_after_its_lease(
    dlq: DeadLetterQueue, clock: FakeClock
) -> None:
    handler = Recorder()
    dlq.register_handler("wf", handler)
    await add(dlq, "t", max_retries=3)
    crashed = RetryProcessor(dlq, worker_id="A", lease_seconds=30)
    survivor = RetryProcessor(dlq, worker_id="B", lease_seconds=30)

    [claimed] = await crashed.claim(10)  # A claims, then dies without running it
    assert (claimed.status, claimed.lease_owner) == (RETRYING, "A")
    assert (claimed.retry_count, claimed.total_attempts) == (1, 2)
    assert await survivor.run_once() == 0
    clock.advance(29.999)
    assert await survivor.run_once() == 0  # A's lease still holds
    clock.advance(0.001)
    assert await survivor.run_once() == 1

    task = await stored(dlq, "t")
    assert task.status is COMPLETED
    assert history(task) == [("A", AttemptOutcome.LOST), ("B", AttemptOutcome.SUCCESS)]
    assert task.attempts[0].finished_at == claimed.lease_expires_at
    assert (task.retry_count, task.total_attempts) == (2, 3)  # the lost attempt counts
    assert handler.ids == ["t"]


async def test_a_lost_last_attempt_exhausts_the_task_without_running_it(
    dlq: DeadLetterQueue, clock: FakeClock
) -> None:
    handler = Recorder()
    dlq.register_handler("wf", handler)
    await add(dlq, "t", max_retries=1)
    crashed = RetryProcessor(dlq, worker_id="A", lease_seconds=30)
    survivor = RetryProcessor(dlq, worker_id="B", lease_seconds=30)

    await crashed.claim(10)
    clock.advance(31)
    assert await survivor.run_once() == 0
    task = await stored(dlq, "t")
    assert task.status is EXHAUSTED
    assert history(task) == [("A", AttemptOutcome.LOST)]
    assert (task.retry_count, task.total_attempts) == (1, 2)
    assert (task.lease_owner, task.next_retry_at) == (None, None)
    assert task.last_error_type == "LeaseExpired"
    assert handler.calls == []
    assert dlq.lifetime["lost"] == 1
    assert dlq.lifetime["exhausted"] == 1
    assert await survivor.drain() == 0


async def test_a_lost_attempt_counts_toward_exhaustion(
    dlq: DeadLetterQueue, clock: FakeClock
) -> None:
    dlq.register_handler("wf", FlakyHandler(failures=10))
    await add(dlq, "t", max_retries=2)
    await RetryProcessor(dlq, worker_id="A", lease_seconds=30).claim(10)
    clock.advance(31)
    assert await RetryProcessor(dlq, worker_id="B").run_once() == 1
    task = await stored(dlq, "t")
    assert task.status is EXHAUSTED  # retry 1 lost, retry 2 failed: no retry left
    assert history(task) == [("A", AttemptOutcome.LOST), ("B", AttemptOutcome.FAILURE)]


async def test_the_outcome_of_an_attempt_whose_lease_was_lost_is_discarded(
    dlq: DeadLetterQueue, clock: FakeClock
) -> None:
    a_started, a_release = anyio.Event(), anyio.Event()

    async def handler(task: dict[str, Any], repos: list[str]) -> str:
        if not a_started.is_set():  # A's attempt: slow, and fails in the end
            a_started.set()
            await a_release.wait()
            raise RuntimeError("late failure from A")
        return "B done"

    dlq.register_handler("wf", handler)
    await add(dlq, "t", max_retries=3)
    slow = RetryProcessor(dlq, worker_id="A", lease_seconds=30)
    other = RetryProcessor(dlq, worker_id="B", lease_seconds=30)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(slow.run_once)
            await a_started.wait()
            clock.advance(31)  # A's lease runs out while A is still working
            assert await other.run_once() == 1
            a_release.set()

    task = await stored(dlq, "t")
    assert task.status is COMPLETED
    assert history(task) == [("A", AttemptOutcome.LOST), ("B", AttemptOutcome.SUCCESS)]
    assert task.last_error == "connection reset"  # A's late failure was not applied
    assert dlq.lifetime["lost"] == 1
    assert dlq.lifetime["retry_success"] == 1
    assert dlq.lifetime["retry_failed"] == 0


# -- stopping -------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["stop", "cancel"])
async def test_stopping_releases_in_flight_attempts(
    dlq: DeadLetterQueue, store: WatchedStore, how: str
) -> None:
    started = anyio.Event()

    async def blocks(task: dict[str, Any], repos: list[str]) -> None:
        started.set()
        await anyio.Event().wait()

    dlq.register_handler("wf", blocks)
    await add(dlq, "t", max_retries=3)
    processor = RetryProcessor(dlq, check_interval=3600)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            await group.start(processor.run)
            assert processor.running
            await started.wait()
            assert (await stored(dlq, "t")).status is RETRYING
            if how == "stop":
                processor.stop()
            else:
                group.cancel_scope.cancel()

    assert not processor.running
    task = await stored(dlq, "t")
    assert task.status is PENDING
    assert task.retry_count == 0  # the retry is given back
    assert task.attempts[-1].outcome is AttemptOutcome.CANCELLED
    assert (task.lease_owner, task.lease_expires_at) == (None, None)
    assert task.next_retry_at == dlq.clock.now()


async def test_stopping_releases_a_blocked_sync_handler(dlq: DeadLetterQueue) -> None:
    started = anyio.Event()
    unblock = threading.Event()

    def blocks(task: dict[str, Any], repos: list[str]) -> None:
        anyio.from_thread.run_sync(started.set)
        unblock.wait(10)

    dlq.register_handler("wf", blocks)
    await add(dlq, "t")
    processor = RetryProcessor(dlq, check_interval=3600)
    try:
        with anyio.fail_after(5):
            async with anyio.create_task_group() as group:
                await group.start(processor.run)
                await started.wait()
                processor.stop()
    finally:
        unblock.set()
    task = await stored(dlq, "t")
    assert (task.status, task.retry_count) == (PENDING, 0)
    assert task.attempts[-1].outcome is AttemptOutcome.CANCELLED


async def test_stop_retry_processor_releases_in_flight_attempts(dlq: DeadLetterQueue) -> None:
    started = anyio.Event()

    async def blocks(task: dict[str, Any], repos: list[str]) -> None:
        started.set()
        await anyio.Event().wait()

    await add(dlq, "t")
    with anyio.fail_after(5):
        processor = await dlq.start_retry_processor(blocks, check_interval_seconds=3600)
        try:
            assert (await dlq.get_statistics())["is_processor_running"] is True
            await started.wait()
        finally:
            await dlq.stop_retry_processor()
    assert not processor.running
    assert not dlq.is_processor_running
    assert (await dlq.get_statistics())["is_processor_running"] is False
    task = await stored(dlq, "t")
    assert (task.status, task.retry_count) == (PENDING, 0)
    assert task.attempts[-1].outcome is AttemptOutcome.CANCELLED


class SlowWriteStore(WatchedStore):
    """Holds the next write until released, like a store on a slow network."""

    def __init__(self) -> None:
        super().__init__()
        self.hold_next_write = False
        self.holding = anyio.Event()
        self.release = anyio.Event()

    async def mutate(self, task_id: str, fn: Mutation) -> FailedTask:
        if self.hold_next_write:
            self.hold_next_write = False
            self.holding.set()
            await self.release.wait()
        return await super().mutate(task_id, fn)


async def test_stopping_during_the_outcome_write_still_records_the_outcome(
    clock: FakeClock,
) -> None:
    store = SlowWriteStore()
    dlq = DeadLetterQueue(store, clock=clock)

    async def succeeds(task: dict[str, Any], repos: list[str]) -> str:
        store.hold_next_write = True  # the write of this attempt's outcome is slow
        return "ok"

    dlq.register_handler("wf", succeeds)
    await add(dlq, "t")
    processor = RetryProcessor(dlq, check_interval=3600)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            await group.start(processor.run)
            await store.holding.wait()
            processor.stop()  # the workflow already succeeded: that must not be lost
            store.release.set()
    task = await stored(dlq, "t")
    assert task.status is COMPLETED
    assert history(task) == [(dlq.worker_id, AttemptOutcome.SUCCESS)]
    assert dlq.lifetime["retry_success"] == 1


# -- running in the background --------------------------------------------------------


async def test_background_processor_runs_due_work_at_once_and_wakes_on_enqueue(
    dlq: DeadLetterQueue, store: WatchedStore
) -> None:
    handled: dict[str, anyio.Event] = {"early": anyio.Event(), "new": anyio.Event()}
    threads: list[int] = []

    def callback(task: dict[str, Any], repos: list[str]) -> str:
        threads.append(threading.get_ident())
        anyio.from_thread.run_sync(handled[task["id"]].set)
        return "done"

    await add(dlq, "early", workflow="")
    with anyio.fail_after(5):
        processor = await dlq.start_retry_processor(callback, check_interval_seconds=3600)
        try:
            assert dlq.default_callback is callback
            assert processor.check_interval == 3600
            assert processor.running
            await handled["early"].wait()  # the first cycle runs at once
            await store.wait_for("early", has_status(COMPLETED))
            # the loop now idles for an hour; an IMMEDIATE enqueue must wake it
            await add(dlq, "new", workflow="", policy="immediate")
            await handled["new"].wait()
            task = await store.wait_for("new", has_status(COMPLETED))
        finally:
            await dlq.stop_retry_processor()
    assert history(task) == [("main", AttemptOutcome.SUCCESS)]
    assert threading.get_ident() not in threads
    assert dlq._wakeup is None  # the stopped processor unhooked itself


async def test_a_running_lease_is_renewed(store: WatchedStore) -> None:
    dlq = DeadLetterQueue(store)  # real time: renewal runs on the wall clock
    started, release = anyio.Event(), anyio.Event()

    async def slow(task: dict[str, Any], repos: list[str]) -> str:
        started.set()
        await release.wait()
        return "ok"

    dlq.register_handler("wf", slow)
    await add(dlq, "t")
    lease = 0.5
    worker = RetryProcessor(dlq, worker_id="A", lease_seconds=lease, check_interval=3600)
    rival = RetryProcessor(dlq, worker_id="B", lease_seconds=lease)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            await group.start(worker.run)
            await started.wait()
            first = (await stored(dlq, "t")).lease_expires_at
            assert first is not None
            # a renewal a full lease after the first expiry was made after that expiry
            renewed = await store.wait_for(
                "t",
                lambda t: (
                    t.lease_expires_at is not None
                    and t.lease_expires_at >= first + timedelta(seconds=lease)
                ),
            )
            assert dlq.clock.now() >= first  # without renewal the lease would be gone
            assert renewed.lease_owner == "A"
            assert renewed.status is RETRYING
            assert await rival.claim(10) == []
            release.set()
            await store.wait_for("t", has_status(COMPLETED))
            worker.stop()
    task = await stored(dlq, "t")
    assert history(task) == [("A", AttemptOutcome.SUCCESS)]
    assert task.total_attempts == 2
