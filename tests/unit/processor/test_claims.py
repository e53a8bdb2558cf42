"""RetryProcessor: how it is built, what it claims, and how many attempts run at once."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import pytest

from mahavishnu_dlq.models import AttemptOutcome
from mahavishnu_dlq.policy import PolicyBook, PolicyParams
from mahavishnu_dlq.processor import RetryProcessor
from mahavishnu_dlq.queue import DeadLetterQueue
from mahavishnu_dlq.testing import FakeClock, FlakyHandler, drain_over_time, make_task

from .support import (
    COMPLETED,
    EXHAUSTED,
    PENDING,
    Recorder,
    WatchedStore,
    add,
    dlq_clock,
    has_status,
    stored,
)

pytestmark = pytest.mark.anyio


# -- construction -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [({"concurrency": 0}, "concurrency"), ({"check_interval": 0}, "check_interval")],
)
def test_constructor_rejects_bad_limits(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RetryProcessor(DeadLetterQueue(), **options)


def test_lease_and_worker_default_to_the_queue() -> None:
    queue = DeadLetterQueue(worker_id="host-1", lease_seconds=42.0)
    processor = RetryProcessor(queue)
    assert processor.worker_id == "host-1"
    assert processor.lease_seconds == 42.0
    other = RetryProcessor(queue, worker_id="B", lease_seconds=5.0)
    assert (other.worker_id, other.lease_seconds) == ("B", 5.0)


# -- what is claimed ----------------------------------------------------------------


async def test_run_once_claims_only_due_tasks(
    dlq: DeadLetterQueue, store: WatchedStore, clock: FakeClock
) -> None:
    handler = Recorder()
    dlq.register_handler("wf", handler)
    await add(dlq, "due", policy="immediate")
    await add(dlq, "later", policy="exponential")  # due in 60 s
    await add(dlq, "manual", policy="never")
    # a completed record (even one with a stale next_retry_at) is never retried
    await store.mutate(
        "done",
        lambda _: make_task(task_id="done", status=COMPLETED, next_retry_at=clock.now()),
    )
    processor = RetryProcessor(dlq)

    assert await processor.run_once() == 1
    assert handler.ids == ["due"]
    assert handler.calls[0] == ({"id": "due"}, ["repo-a", "repo-b"])
    assert (await stored(dlq, "due")).status is COMPLETED
    later = await stored(dlq, "later")
    assert (later.status, later.retry_count, later.attempts) == (PENDING, 0, [])
    manual = await stored(dlq, "manual")
    assert (manual.status, manual.next_retry_at, manual.attempts) == (PENDING, None, [])
    assert (await stored(dlq, "done")).attempts == []

    assert await processor.run_once() == 0  # nothing else is due yet
    clock.advance(59)
    assert await processor.run_once() == 0
    clock.advance(1)
    assert await processor.run_once() == 1
    assert handler.ids == ["due", "later"]
    clock.advance(timedelta(days=365))
    assert await processor.drain() == 0  # NEVER and COMPLETED stay untouched forever
    assert handler.ids == ["due", "later"]
    assert processor.cycles == 5


async def test_run_once_takes_at_most_batch_size(dlq: DeadLetterQueue) -> None:
    handler = Recorder()
    dlq.register_handler("wf", handler)
    for i in range(5):
        await add(dlq, f"t{i}")
    processor = RetryProcessor(dlq, batch_size=2)
    assert await processor.run_once() == 2
    assert await processor.run_once() == 2
    assert await processor.run_once() == 1
    assert await processor.run_once() == 0
    assert sorted(handler.ids) == [f"t{i}" for i in range(5)]


async def test_drain_retries_until_nothing_is_due(dlq: DeadLetterQueue) -> None:
    flaky = FlakyHandler(failures=2, result="finally")
    doomed = FlakyHandler(failures=100)
    dlq.register_handler("flaky", flaky)
    dlq.register_handler("doomed", doomed)
    await add(dlq, "f", workflow="flaky", max_retries=5)
    await add(dlq, "d", workflow="doomed", max_retries=2)
    await add(dlq, "later", workflow="doomed", policy="exponential")
    processor = RetryProcessor(dlq)

    assert await processor.drain() == 2  # the first retries are immediate …
    assert await processor.drain() == 0  # … a second one waits for the floor (1 s)
    assert await drain_over_time(processor, dlq_clock(dlq), horizon=30) == 3
    f = await stored(dlq, "f")
    assert f.status is COMPLETED
    assert [a.outcome for a in f.attempts] == [
        AttemptOutcome.FAILURE,
        AttemptOutcome.FAILURE,
        AttemptOutcome.SUCCESS,
    ]
    assert (f.retry_count, f.total_attempts) == (3, 4)
    d = await stored(dlq, "d")
    assert d.status is EXHAUSTED
    assert (d.retry_count, d.total_attempts, d.next_retry_at) == (2, 3, None)
    assert (await stored(dlq, "later")).attempts == []
    assert await processor.drain() == 0
    assert dlq.lifetime["retry_success"] == 1
    assert dlq.lifetime["retry_failed"] == 4
    assert dlq.lifetime["exhausted"] == 1


async def test_drain_stops_after_max_cycles(store: WatchedStore, clock: FakeClock) -> None:
    no_floor = PolicyBook(PolicyParams(immediate_min_delay=0))  # every retry due at once
    dlq = DeadLetterQueue(store, clock=clock, worker_id="main", policies=no_floor)
    dlq.register_handler("wf", FlakyHandler(failures=100))
    await add(dlq, "t", max_retries=10)
    processor = RetryProcessor(dlq)
    assert await processor.drain(max_cycles=2) == 2
    assert (await stored(dlq, "t")).retry_count == 2


# -- concurrency ----------------------------------------------------------------------


class Gauge:
    """A handler that records how many calls run at once.

    Every call waits until ``limit`` calls run together, so the test fails (by its
    ``fail_after``) if the processor runs fewer at once, and ``peak`` exceeds the
    limit if it runs more.
    """

    def __init__(self, limit: int, expected: int) -> None:
        self.limit = limit
        self.expected = expected
        self.running = 0
        self.peak = 0
        self.full = anyio.Event()
        self.all_done = anyio.Event()
        self.done: list[str] = []

    async def __call__(self, task: dict[str, Any], repos: list[str]) -> str:
        self.running += 1
        self.peak = max(self.peak, self.running)
        if self.running >= self.limit:
            self.full.set()
        await self.full.wait()
        await anyio.lowlevel.checkpoint()  # let any over-eager extra call start
        self.running -= 1
        self.done.append(task["id"])
        if len(self.done) == self.expected:
            self.all_done.set()
        return "ok"


async def test_run_once_never_runs_more_than_concurrency_at_once(dlq: DeadLetterQueue) -> None:
    gauge = Gauge(limit=3, expected=10)
    dlq.register_handler("wf", gauge)
    for i in range(10):
        await add(dlq, f"t{i}")
    processor = RetryProcessor(dlq, concurrency=3)
    with anyio.fail_after(5):
        assert await processor.run_once() == 10
    assert gauge.peak == 3
    assert sorted(gauge.done) == sorted(f"t{i}" for i in range(10))
    for i in range(10):
        assert (await stored(dlq, f"t{i}")).status is COMPLETED


async def test_run_loop_never_runs_more_than_concurrency_at_once(
    dlq: DeadLetterQueue, store: WatchedStore
) -> None:
    gauge = Gauge(limit=3, expected=10)
    dlq.register_handler("wf", gauge)
    for i in range(10):
        await add(dlq, f"t{i}")
    processor = RetryProcessor(dlq, concurrency=3, check_interval=3600)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            await group.start(processor.run)
            await gauge.all_done.wait()
            for i in range(10):
                await store.wait_for(f"t{i}", has_status(COMPLETED))
            processor.stop()
    assert gauge.peak == 3
    assert not processor.running


async def test_saturated_run_loop_waits_for_a_free_slot_instead_of_spinning(
    dlq: DeadLetterQueue, store: WatchedStore
) -> None:
    release = anyio.Event()
    both_running = anyio.Event()
    running: list[str] = []

    async def handler(task: dict[str, Any], repos: list[str]) -> None:
        running.append(task["id"])
        if len(running) == 2:
            both_running.set()
        await release.wait()

    dlq.register_handler("wf", handler)
    for i in range(3):
        await add(dlq, f"t{i}")
    processor = RetryProcessor(dlq, concurrency=2, check_interval=3600)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            await group.start(processor.run)
            await both_running.wait()
            # more work arrives while every slot is busy and a backlog is due
            await add(dlq, "t3")
            cycles = processor.cycles
            for _ in range(50):
                await anyio.lowlevel.checkpoint()
            assert processor.cycles - cycles <= 2, "the loop spins while saturated"
            assert len(running) == 2
            release.set()
            for i in range(4):
                await store.wait_for(f"t{i}", has_status(COMPLETED))
            processor.stop()
    assert sorted(running) == ["t0", "t1", "t2", "t3"]
