"""RetryProcessor: what it claims, how many at once, timeouts, handlers, leases, stopping.

Time is a :class:`FakeClock` and the processor is driven by ``run_once()`` /
``drain()`` wherever possible; background runs synchronise on anyio Events (a
store that signals each write), with ``fail_after`` only as a safety net. Two
tests need real time on purpose: the per-attempt timeout (0.05 s) and lease
renewal (a 0.5 s lease renewed by the running processor).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Collection
from datetime import datetime, timedelta
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import pytest

from mahavishnu_dlq import RetryAfter
from mahavishnu_dlq.models import AttemptOutcome, DeadLetterStatus, FailedTask
from mahavishnu_dlq.policy import PolicyBook, PolicyParams
from mahavishnu_dlq.processor import RetryProcessor, run_attempt
from mahavishnu_dlq.queue import DeadLetterQueue
from mahavishnu_dlq.storage import MemoryStore
from mahavishnu_dlq.storage.base import Mutation
from mahavishnu_dlq.testing import FakeClock, FlakyHandler, drain_over_time, make_task

pytestmark = pytest.mark.anyio

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


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store() -> WatchedStore:
    return WatchedStore()


@pytest.fixture
def dlq(store: WatchedStore, clock: FakeClock) -> DeadLetterQueue:
    return DeadLetterQueue(store, clock=clock, worker_id="main", rng=random.Random(7))


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


# -- timeouts -------------------------------------------------------------------------


async def test_attempt_timeout_reschedules_then_exhausts(dlq: DeadLetterQueue) -> None:
    async def hangs(task: dict[str, Any], repos: list[str]) -> None:
        await anyio.Event().wait()

    dlq.register_handler("wf", hangs)
    await add(dlq, "t", policy="immediate", max_retries=2)
    processor = RetryProcessor(dlq, attempt_timeout=0.05)

    with anyio.fail_after(5):
        assert await processor.run_once() == 1
    first = await stored(dlq, "t")
    assert first.status is PENDING  # rescheduled: one retry left
    assert first.next_retry_at == dlq.clock.now() + timedelta(seconds=1)  # the floor
    last = first.attempts[-1]
    assert last.outcome is AttemptOutcome.TIMEOUT
    assert last.error == "attempt timed out after 0.05s"
    assert last.error_type == "TimeoutError"
    assert first.last_error is not None
    assert "timed out" in first.last_error

    dlq_clock(dlq).advance(1)
    with anyio.fail_after(5):
        assert await processor.run_once() == 1
    second = await stored(dlq, "t")
    assert second.status is EXHAUSTED
    assert [a.outcome for a in second.attempts] == [AttemptOutcome.TIMEOUT] * 2
    assert dlq.lifetime["exhausted"] == 1


async def test_a_timeout_ends_only_its_own_attempt(dlq: DeadLetterQueue) -> None:
    """One worker, three tasks: the hanging one times out, the worker goes on."""

    async def handler(task: dict[str, Any], repos: list[str]) -> str:
        if task["id"] == "hangs":
            await anyio.Event().wait()
        await anyio.lowlevel.checkpoint()
        return "ok"

    dlq.register_handler("wf", handler)
    for task_id in ("before", "hangs", "after"):
        await add(dlq, task_id)
    processor = RetryProcessor(dlq, concurrency=1, attempt_timeout=0.05)
    with anyio.fail_after(5):
        assert await processor.run_once() == 3
    assert (await stored(dlq, "before")).status is COMPLETED
    assert (await stored(dlq, "after")).status is COMPLETED
    hung = await stored(dlq, "hangs")
    assert hung.status is PENDING
    assert [a.outcome for a in hung.attempts] == [AttemptOutcome.TIMEOUT]
    assert dlq.lifetime == {**dlq.lifetime, "retry_success": 2, "retry_failed": 1}


async def test_the_run_loop_times_out_attempts_and_keeps_going(dlq: DeadLetterQueue) -> None:
    done = anyio.Event()

    async def handler(task: dict[str, Any], repos: list[str]) -> str:
        if task["id"] == "hangs":
            await anyio.Event().wait()
        if task["id"] == "after":
            done.set()
        return "ok"

    dlq.register_handler("wf", handler)
    await add(dlq, "hangs", max_retries=1)
    processor = RetryProcessor(dlq, concurrency=1, attempt_timeout=0.05, check_interval=3600)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            await group.start(processor.run)
            await add(dlq, "after")
            await done.wait()
            processor.stop()
    hung = await stored(dlq, "hangs")
    assert hung.status is EXHAUSTED
    assert [a.outcome for a in hung.attempts] == [AttemptOutcome.TIMEOUT]
    assert (await stored(dlq, "after")).status is COMPLETED


async def test_sync_handler_that_hangs_times_out_too(dlq: DeadLetterQueue) -> None:
    unblock = threading.Event()

    def hangs(task: dict[str, Any], repos: list[str]) -> None:
        unblock.wait(10)

    dlq.register_handler("wf", hangs)
    await add(dlq, "t")
    processor = RetryProcessor(dlq)
    [claimed] = await processor.claim(1)
    try:
        with anyio.fail_after(5):
            result = await run_attempt(dlq, claimed, owner=processor.worker_id, timeout=0.05)
    finally:
        unblock.set()  # let the abandoned worker thread end
    assert result.outcome is AttemptOutcome.TIMEOUT
    assert not result.success
    assert result.status is PENDING
    assert result.error is not None
    assert "timed out" in result.error


# -- handlers -------------------------------------------------------------------------


async def test_handlers_are_chosen_by_workflow_else_the_default(dlq: DeadLetterQueue) -> None:
    alpha, default = Recorder("alpha"), Recorder("default")
    loop_thread = threading.get_ident()
    beta_threads: list[int] = []

    def beta(task: dict[str, Any], repos: list[str]) -> str:
        beta_threads.append(threading.get_ident())
        assert isinstance(task, dict)
        assert repos == ["repo-a", "repo-b"]
        return "beta"

    dlq.register_handler("alpha", alpha)
    dlq.register_handler("beta", beta)
    dlq.default_callback = default
    await add(dlq, "a", workflow="alpha")
    await add(dlq, "b", workflow="beta")
    await add(dlq, "c", workflow="gamma")
    await add(dlq, "d", workflow="")

    assert await RetryProcessor(dlq).run_once() == 4
    assert alpha.calls == [({"id": "a"}, ["repo-a", "repo-b"])]
    assert sorted(default.ids) == ["c", "d"]
    assert len(beta_threads) == 1
    assert beta_threads[0] != loop_thread  # sync handlers run in a worker thread
    for task_id in "abcd":
        assert (await stored(dlq, task_id)).status is COMPLETED


async def test_a_task_without_a_handler_here_is_left_for_a_worker_that_has_one(
    dlq: DeadLetterQueue,
) -> None:
    known = Recorder()
    dlq.register_handler("known", known)
    ghost_before = await add(dlq, "ghost", workflow="ghost", max_retries=1)
    await add(dlq, "fine", workflow="known")

    assert await RetryProcessor(dlq).run_once() == 1  # no crash, the cycle went on
    assert known.ids == ["fine"]
    assert (await stored(dlq, "fine")).status is COMPLETED
    assert await stored(dlq, "ghost") == ghost_before  # retries are not burnt here
    dlq.default_callback = Recorder()
    assert await RetryProcessor(dlq).run_once() == 1  # the default callback takes it


async def test_an_attempt_whose_handler_is_gone_is_a_recorded_failure(
    dlq: DeadLetterQueue,
) -> None:
    dlq.register_handler("ghost", Recorder())
    await add(dlq, "ghost", workflow="ghost", max_retries=1)
    processor = RetryProcessor(dlq)
    [claimed] = await processor.claim(10)
    del dlq.handlers["ghost"]  # unregistered between claim and run

    result = await run_attempt(dlq, claimed, owner=processor.worker_id)
    assert (result.outcome, result.status) == (AttemptOutcome.FAILURE, EXHAUSTED)
    ghost = await stored(dlq, "ghost")
    assert ghost.status is EXHAUSTED
    attempt = ghost.attempts[-1]
    assert attempt.outcome is AttemptOutcome.FAILURE
    assert attempt.error == "no handler registered for workflow 'ghost'"
    assert attempt.error_type == "LookupError"


class QuotaError(Exception):
    pass


@pytest.mark.parametrize(
    ("error", "message", "error_type"),
    [
        (ValueError("bad row 7"), "bad row 7", "ValueError"),
        (QuotaError("quota gone"), "quota gone", f"{__name__}.QuotaError"),
        (RuntimeError(), "RuntimeError", "RuntimeError"),
    ],
)
async def test_a_raising_handler_is_recorded_as_failure(
    dlq: DeadLetterQueue, error: Exception, message: str, error_type: str
) -> None:
    async def fails(task: dict[str, Any], repos: list[str]) -> None:
        raise error

    dlq.register_handler("wf", fails)
    await add(dlq, "t", policy="exponential", max_retries=3)
    dlq.clock.advance(60)  # type: ignore[attr-defined]
    assert await RetryProcessor(dlq).run_once() == 1
    task = await stored(dlq, "t")
    attempt = task.attempts[-1]
    assert (attempt.outcome, attempt.error, attempt.error_type) == (
        AttemptOutcome.FAILURE,
        message,
        error_type,
    )
    assert (task.last_error, task.last_error_type) == (message, error_type)
    assert task.error == "connection reset"  # the first failure is kept
    assert task.status is PENDING
    # exponential: 60 s after the first failure, then 120 s after the first retry
    assert task.next_retry_at == dlq.clock.now() + timedelta(seconds=120)
    assert attempt.finished_at == dlq.clock.now()


async def test_sync_handler_failure_is_recorded(dlq: DeadLetterQueue) -> None:
    def fails(task: dict[str, Any], repos: list[str]) -> None:
        raise PermissionError("access denied")

    dlq.register_handler("wf", fails)
    await add(dlq, "t")
    assert await RetryProcessor(dlq).run_once() == 1
    task = await stored(dlq, "t")
    assert task.attempts[-1].error_type == "PermissionError"
    assert task.last_error == "access denied"


async def test_retry_after_defers_without_using_a_retry(dlq: DeadLetterQueue) -> None:
    async def later(task: dict[str, Any], repos: list[str]) -> None:
        raise RetryAfter(30, "rate limited")

    dlq.register_handler("wf", later)
    await add(dlq, "t", max_retries=1)
    processor = RetryProcessor(dlq)
    assert await processor.run_once() == 1
    task = await stored(dlq, "t")
    assert task.status is PENDING
    assert task.retry_count == 0
    assert task.next_retry_at == dlq.clock.now() + timedelta(seconds=30)
    assert task.attempts[-1].outcome is AttemptOutcome.DEFERRED
    assert await processor.run_once() == 0


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
