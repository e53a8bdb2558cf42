"""DeadLetterQueue over MemoryStore: the state machine through the processor,
``retry_task``, delay hints from handlers, the background processor and the injected
clock."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import anyio
import pytest

from mahavishnu_dlq import DeadLetterQueue, RetryProcessor, lifecycle
from mahavishnu_dlq.errors import (
    RetryAfter,
    TaskBusyError,
    TaskNotFoundError,
)
from mahavishnu_dlq.models import (
    AttemptOutcome,
    FailedTask,
    RetryPolicy,
)
from mahavishnu_dlq.testing import FakeClock, FlakyHandler, drain_over_time
from tests.unit.queue.conftest import (
    COMPLETED,
    EXHAUSTED,
    PENDING,
    RETRYING,
    T0,
    WORKER,
    SlowDownError,
    at,
    connection_error,
    fetch,
    succeed,
)

pytestmark = pytest.mark.anyio


# -- the state machine through the processor ---------------------------------------------


async def test_transient_failures_then_success(dlq: DeadLetterQueue, clock: FakeClock) -> None:
    handler = FlakyHandler(failures=2, result={"rows": 3})
    dlq.register_handler("ingest", handler)
    await dlq.enqueue("t1", {"n": 1}, ["r"], connection_error(), workflow="ingest")
    processor = RetryProcessor(dlq)

    assert await processor.run_once() == 0  # not due before +60 s
    clock.advance(59)
    assert await processor.run_once() == 0

    clock.advance(1)  # T0+60: first retry fails, next after 2 min
    assert await processor.run_once() == 1
    task = await fetch(dlq, "t1")
    assert task.status is PENDING
    assert task.retry_count == 1
    assert task.next_retry_at == at(180)
    assert task.last_error == "connection reset by peer"

    clock.set(at(180))  # second retry fails, next after 4 min
    assert await processor.run_once() == 1
    task = await fetch(dlq, "t1")
    assert task.retry_count == 2
    assert task.next_retry_at == at(420)

    clock.set(at(420))  # third retry succeeds
    assert await processor.run_once() == 1
    task = await fetch(dlq, "t1")
    assert task.status is COMPLETED
    assert task.completed_at == at(420)
    assert task.next_retry_at is None
    assert task.retry_count == 3
    assert task.total_attempts == 4
    assert task.lease_owner is None
    assert [a.outcome for a in task.attempts] == [
        AttemptOutcome.FAILURE,
        AttemptOutcome.FAILURE,
        AttemptOutcome.SUCCESS,
    ]
    assert [a.number for a in task.attempts] == [1, 2, 3]
    assert [a.started_at for a in task.attempts] == [at(60), at(180), at(420)]
    assert [a.finished_at for a in task.attempts] == [at(60), at(180), at(420)]
    assert {a.worker for a in task.attempts} == {WORKER}
    assert {a.trigger for a in task.attempts} == {"processor"}
    assert task.attempts[0].error == "connection reset by peer"
    assert task.attempts[0].error_type == "ConnectionError"
    assert task.attempts[2].error is None
    assert handler.calls == [({"n": 1}, ["r"])] * 3

    life = (await dlq.get_statistics())["lifetime_stats"]
    assert life["retry_failed"] == 2
    assert life["retry_success"] == 1
    assert life["exhausted"] == 0
    clock.advance(timedelta(days=1))
    assert await processor.drain() == 0


@pytest.mark.parametrize("max_retries", [1, 3, 5])
async def test_keep_failing_until_exhausted(
    dlq: DeadLetterQueue, clock: FakeClock, max_retries: int
) -> None:
    handler = FlakyHandler(failures=1000)
    dlq.default_callback = handler
    await dlq.enqueue("t1", {}, error=connection_error(), max_retries=max_retries)
    processor = RetryProcessor(dlq)
    attempts = 0
    for _ in range(max_retries + 5):
        clock.advance(3600)  # past any exponential delay (capped at 60 min)
        attempts += await processor.run_once()
    assert attempts == max_retries
    assert len(handler.calls) == max_retries
    task = await fetch(dlq, "t1")
    assert task.status is EXHAUSTED
    assert task.next_retry_at is None
    assert task.retry_count == max_retries
    assert task.total_attempts == max_retries + 1
    assert [a.outcome for a in task.attempts] == [AttemptOutcome.FAILURE] * max_retries
    life = (await dlq.get_statistics())["lifetime_stats"]
    assert life["exhausted"] == 1
    assert life["retry_failed"] == max_retries


async def test_immediate_retries_drain_to_exhaustion(dlq: DeadLetterQueue) -> None:
    dlq.default_callback = FlakyHandler(failures=1000)
    await dlq.enqueue("t1", {}, error=connection_error(), retry_policy="immediate", max_retries=4)
    assert await RetryProcessor(dlq).drain() == 1  # later retries wait for the 1 s floor
    assert isinstance(dlq.clock, FakeClock)
    assert await drain_over_time(RetryProcessor(dlq), dlq.clock) == 3
    task = await fetch(dlq, "t1")
    assert task.status is EXHAUSTED
    assert task.total_attempts == 5


async def test_attempt_history_is_bounded(clock: FakeClock) -> None:
    dlq = DeadLetterQueue(clock=clock, attempts_kept=3, worker_id=WORKER)
    dlq.default_callback = FlakyHandler(failures=1000)
    await dlq.enqueue("t1", {}, error=connection_error(), retry_policy="immediate", max_retries=7)
    assert await drain_over_time(RetryProcessor(dlq), clock) == 7
    task = await fetch(dlq, "t1")
    assert task.status is EXHAUSTED
    assert [a.number for a in task.attempts] == [5, 6, 7]
    assert task.total_attempts == 8


async def test_a_sync_handler_is_run_too(dlq: DeadLetterQueue) -> None:
    def double(task: dict[str, Any], repos: list[str]) -> int:
        return int(task["n"]) * 2 + len(repos)

    dlq.register_handler("math", double)
    await dlq.enqueue("t1", {"n": 20}, ["r1", "r2"], "boom", workflow="math")
    result = await dlq.retry_task("t1")
    assert result["success"] is True
    assert result["result"] == 42


async def test_a_registered_handler_wins_over_the_default(dlq: DeadLetterQueue) -> None:
    default = FlakyHandler(result="default")
    specific = FlakyHandler(result="specific")
    dlq.default_callback = default
    dlq.register_handler("ingest", specific)
    await dlq.enqueue("a", {}, error="boom", workflow="ingest")
    await dlq.enqueue("b", {}, error="boom", workflow="other")
    assert (await dlq.retry_task("a"))["result"] == "specific"
    assert (await dlq.retry_task("b"))["result"] == "default"
    assert len(default.calls) == len(specific.calls) == 1


async def test_an_attempt_that_runs_too_long_times_out(
    dlq: DeadLetterQueue, clock: FakeClock
) -> None:
    never = anyio.Event()

    async def hang(task: dict[str, Any], repos: list[str]) -> None:
        await never.wait()

    dlq.default_callback = hang
    await dlq.enqueue("t1", {}, error=connection_error(), retry_policy="immediate")
    # a zero limit cancels the handler at its first wait: no real time passes
    assert await RetryProcessor(dlq, attempt_timeout=0).run_once() == 1
    task = await fetch(dlq, "t1")
    assert task.status is PENDING
    assert task.retry_count == 1
    assert task.attempts[-1].outcome is AttemptOutcome.TIMEOUT
    assert task.attempts[-1].error_type == "TimeoutError"
    assert task.last_error_type == "TimeoutError"
    assert (await dlq.get_statistics())["lifetime_stats"]["retry_failed"] == 1


# -- retry_task -----------------------------------------------------------------------------


async def test_retry_of_an_unknown_task(dlq: DeadLetterQueue) -> None:
    dlq.default_callback = succeed
    with pytest.raises(TaskNotFoundError) as info:
        await dlq.retry_task("ghost")
    assert info.value.task_id == "ghost"


async def test_successful_manual_retry(dlq: DeadLetterQueue, clock: FakeClock) -> None:
    dlq.default_callback = succeed
    await dlq.enqueue("t1", {"n": 1}, ["r"], connection_error())
    clock.advance(5)
    result = await dlq.retry_task("t1")
    assert set(result) == {"success", "task_id", "result", "message"}
    assert result["success"] is True
    assert result["task_id"] == "t1"
    assert result["result"] == {"echo": {"n": 1}, "repos": ["r"]}
    assert "t1" in result["message"]
    task = await fetch(dlq, "t1")
    assert task.status is COMPLETED
    assert task.completed_at == at(5)
    (attempt,) = task.attempts
    assert attempt.trigger == "manual"
    assert attempt.worker == f"{WORKER}/manual"
    assert attempt.outcome is AttemptOutcome.SUCCESS
    life = (await dlq.get_statistics())["lifetime_stats"]
    assert life["manually_retried"] == 1
    assert life["retry_success"] == 1


async def test_failed_manual_retry(dlq: DeadLetterQueue, clock: FakeClock) -> None:
    dlq.default_callback = FlakyHandler(failures=1)
    await dlq.enqueue("t1", {}, error=connection_error())
    clock.advance(5)
    result = await dlq.retry_task("t1")
    assert set(result) == {"success", "task_id", "error", "message"}
    assert result["success"] is False
    assert result["task_id"] == "t1"
    assert result["error"] == "connection reset by peer"
    assert "pending" in result["message"]
    task = await fetch(dlq, "t1")
    assert task.status is PENDING
    assert task.retry_count == 1
    assert task.next_retry_at == at(5 + 120)  # the policy's delay after one retry
    assert task.last_error == "connection reset by peer"
    assert task.attempts[-1].outcome is AttemptOutcome.FAILURE
    assert task.attempts[-1].trigger == "manual"
    life = (await dlq.get_statistics())["lifetime_stats"]
    assert life["manually_retried"] == 1
    assert life["retry_failed"] == 1


async def test_failed_manual_retries_count_toward_exhaustion(dlq: DeadLetterQueue) -> None:
    dlq.default_callback = FlakyHandler(failures=1000)
    await dlq.enqueue("t1", {}, error=connection_error(), max_retries=2)
    first = await dlq.retry_task("t1")
    assert first["success"] is False
    assert (await fetch(dlq, "t1")).status is PENDING
    second = await dlq.retry_task("t1")
    assert second["success"] is False
    assert "exhausted" in second["message"]
    task = await fetch(dlq, "t1")
    assert task.status is EXHAUSTED
    assert task.retry_count == 2
    assert task.total_attempts == 3
    assert (await dlq.get_statistics())["lifetime_stats"]["exhausted"] == 1


async def test_manual_retry_of_an_exhausted_task_can_complete_it(
    dlq: DeadLetterQueue,
) -> None:
    handler = FlakyHandler(failures=2)
    dlq.default_callback = handler
    await dlq.enqueue("t1", {}, error=connection_error(), retry_policy="immediate", max_retries=2)
    assert isinstance(dlq.clock, FakeClock)
    assert await drain_over_time(RetryProcessor(dlq), dlq.clock) == 2
    assert (await fetch(dlq, "t1")).status is EXHAUSTED
    result = await dlq.retry_task("t1")
    assert result["success"] is True
    task = await fetch(dlq, "t1")
    assert task.status is COMPLETED
    assert task.retry_count == 3
    assert [a.trigger for a in task.attempts] == ["processor", "processor", "manual"]


async def test_manual_retry_without_a_handler_touches_nothing(dlq: DeadLetterQueue) -> None:
    await dlq.enqueue("t1", {}, error=connection_error(), workflow="unregistered")
    before = await fetch(dlq, "t1")
    result = await dlq.retry_task("t1")
    assert result["success"] is False
    assert result["task_id"] == "t1"
    assert result["error"] == "no handler"
    assert "unregistered" in result["message"]
    assert await fetch(dlq, "t1") == before
    assert (await dlq.get_statistics())["lifetime_stats"]["manually_retried"] == 0


async def test_manual_retry_of_a_task_claimed_by_the_processor_is_busy(
    dlq: DeadLetterQueue,
) -> None:
    handler = FlakyHandler()
    dlq.default_callback = handler
    await dlq.enqueue("t1", {}, error=connection_error(), retry_policy="immediate")
    (claimed,) = await RetryProcessor(dlq).claim(1)
    assert claimed.status is RETRYING
    with pytest.raises(TaskBusyError) as info:
        await dlq.retry_task("t1")
    assert info.value.task_id == "t1"
    assert info.value.owner == WORKER
    assert await fetch(dlq, "t1") == claimed
    assert handler.calls == []
    assert (await dlq.get_statistics())["lifetime_stats"]["manually_retried"] == 0


async def test_the_processor_does_not_take_a_task_under_manual_retry(
    dlq: DeadLetterQueue,
) -> None:
    started = anyio.Event()
    release = anyio.Event()
    calls: list[dict[str, Any]] = []

    async def handler(task: dict[str, Any], repos: list[str]) -> str:
        calls.append(task)
        started.set()
        await release.wait()
        return "done"

    dlq.default_callback = handler
    await dlq.enqueue("t1", {"n": 1}, error=connection_error(), retry_policy="immediate")
    processor = RetryProcessor(dlq)
    results: list[dict[str, Any]] = []

    async def manual() -> None:
        results.append(await dlq.retry_task("t1"))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(manual)
            await started.wait()
            assert await processor.run_once() == 0
            assert await processor.claim(10) == []
            during = await fetch(dlq, "t1")
            assert during.status is RETRYING
            assert during.lease_owner == f"{WORKER}/manual"
            with pytest.raises(TaskBusyError):
                await dlq.retry_task("t1")
            release.set()
    (result,) = results
    assert result["success"] is True
    assert result["result"] == "done"
    assert len(calls) == 1
    assert (await fetch(dlq, "t1")).status is COMPLETED
    assert await processor.run_once() == 0


@pytest.mark.parametrize("close", ["complete", "archive"])
async def test_manual_retry_of_a_closed_task_is_refused(dlq: DeadLetterQueue, close: str) -> None:
    dlq.default_callback = succeed
    await dlq.enqueue("t1", {}, error=connection_error())
    if close == "complete":
        await dlq.retry_task("t1")
    else:
        await dlq.archive_task("t1")
    before = await fetch(dlq, "t1")
    result = await dlq.retry_task("t1")
    assert result["success"] is False
    assert result["error"] == "not retryable"
    assert ("completed" if close == "complete" else "archived") in result["message"]
    assert await fetch(dlq, "t1") == before


# -- delay hints from handlers ---------------------------------------------------------------


async def test_retry_after_defers_without_counting(dlq: DeadLetterQueue, clock: FakeClock) -> None:
    async def busy(task: dict[str, Any], repos: list[str]) -> None:
        raise RetryAfter(30, "rate limited")

    dlq.default_callback = busy
    await dlq.enqueue("t1", {}, error=connection_error())
    clock.advance(60)
    assert await RetryProcessor(dlq).run_once() == 1
    task = await fetch(dlq, "t1")
    assert task.status is PENDING
    assert task.retry_count == 0
    assert task.next_retry_at == at(90)
    assert task.total_attempts == 2  # it ran, so it is in the total
    assert task.last_error == "connection to shard 1 refused"  # not a failure
    assert task.attempts[-1].outcome is AttemptOutcome.DEFERRED
    life = (await dlq.get_statistics())["lifetime_stats"]
    assert life["deferred"] == 1
    assert life["retry_failed"] == 0
    clock.advance(29)
    assert await RetryProcessor(dlq).run_once() == 0
    clock.advance(1)
    assert await RetryProcessor(dlq).run_once() == 1


async def test_a_retry_after_attribute_schedules_the_next_retry(
    dlq: DeadLetterQueue, clock: FakeClock
) -> None:
    dlq.default_callback = FlakyHandler(failures=1, make_error=lambda: SlowDownError("busy"))
    await dlq.enqueue("t1", {}, error=connection_error(), retry_policy="linear")
    assert (await fetch(dlq, "t1")).next_retry_at == at(300)
    clock.advance(300)
    assert await RetryProcessor(dlq).run_once() == 1
    task = await fetch(dlq, "t1")
    assert task.status is PENDING
    assert task.retry_count == 1
    assert task.next_retry_at == at(300 + 120)  # the hint, not linear's 600 s
    assert task.attempts[-1].outcome is AttemptOutcome.FAILURE
    assert task.last_error == "busy"


async def test_a_retry_after_attribute_overrides_the_policy(
    dlq: DeadLetterQueue, clock: FakeClock
) -> None:
    class LaterError(Exception):
        retry_after = 7

    dlq.default_callback = FlakyHandler(failures=1, make_error=lambda: LaterError("later"))
    await dlq.enqueue("t1", {}, error=connection_error())
    clock.advance(60)
    assert await RetryProcessor(dlq).run_once() == 1
    assert (await fetch(dlq, "t1")).next_retry_at == at(67)


# -- the background processor ---------------------------------------------------------------


def running(dlq: DeadLetterQueue) -> bool:
    """``dlq.is_processor_running``, read afresh (so mypy does not keep an earlier narrowing)."""
    return dlq.is_processor_running


async def test_stopping_the_processor_mid_retry_returns_the_task_to_pending(
    dlq: DeadLetterQueue, clock: FakeClock
) -> None:
    started = anyio.Event()
    never = anyio.Event()

    async def hang(task: dict[str, Any], repos: list[str]) -> None:
        started.set()
        await never.wait()

    await dlq.enqueue("t1", {}, error=connection_error(), retry_policy="immediate")
    clock.advance(5)
    with anyio.fail_after(10):
        processor = await dlq.start_retry_processor(hang, check_interval_seconds=3600)
        assert dlq.is_processor_running
        assert processor.running
        await started.wait()
        during = await fetch(dlq, "t1")
        assert during.status is RETRYING
        assert during.retry_count == 1
        assert during.lease_owner == WORKER
        assert (await dlq.get_statistics())["is_processor_running"] is True
        clock.advance(3)
        await dlq.stop_retry_processor()
    task = await fetch(dlq, "t1")
    assert task.status is PENDING
    assert task.next_retry_at == at(8)
    assert task.retry_count == 0
    assert task.total_attempts == 2
    assert task.lease_owner is None
    assert task.lease_expires_at is None
    assert task.attempts[-1].outcome is AttemptOutcome.CANCELLED
    assert task.attempts[-1].finished_at == at(8)
    assert not running(dlq)
    assert (await dlq.get_statistics())["is_processor_running"] is False
    await dlq.stop_retry_processor()  # stopping twice is harmless


async def test_leaving_async_with_stops_the_processor_and_releases_its_task(
    clock: FakeClock,
) -> None:
    started = anyio.Event()
    never = anyio.Event()

    async def hang(task: dict[str, Any], repos: list[str]) -> None:
        started.set()
        await never.wait()

    with anyio.fail_after(10):
        async with DeadLetterQueue(clock=clock, worker_id=WORKER) as dlq:
            assert not dlq.is_processor_running  # the plain constructor starts nothing
            await dlq.enqueue("t1", {}, error=connection_error(), retry_policy="immediate")
            await dlq.start_retry_processor(hang)
            await started.wait()
            assert (await fetch(dlq, "t1")).status is RETRYING
    assert not running(dlq)
    task = await fetch(dlq, "t1")
    assert task.status is PENDING
    assert task.next_retry_at == T0
    assert task.retry_count == 0
    assert task.attempts[-1].outcome is AttemptOutcome.CANCELLED


async def test_cancelling_the_host_releases_the_in_flight_task(clock: FakeClock) -> None:
    started = anyio.Event()
    never = anyio.Event()

    async def hang(task: dict[str, Any], repos: list[str]) -> None:
        started.set()
        await never.wait()

    with anyio.fail_after(10), anyio.CancelScope() as host:
        async with DeadLetterQueue(clock=clock, worker_id=WORKER) as dlq:
            await dlq.enqueue("t1", {}, error=connection_error(), retry_policy="immediate")
            await dlq.start_retry_processor(hang)
            await started.wait()
            host.cancel()  # e.g. the application shuts down
            await anyio.sleep_forever()
    assert host.cancelled_caught
    assert not running(dlq)
    task = await fetch(dlq, "t1")
    assert task.status is PENDING
    assert task.retry_count == 0
    assert task.lease_owner is None
    assert task.attempts[-1].outcome is AttemptOutcome.CANCELLED


async def test_the_background_processor_retries_a_task(
    dlq: DeadLetterQueue, clock: FakeClock
) -> None:
    finished = anyio.Event()

    async def work(task: dict[str, Any], repos: list[str]) -> str:
        finished.set()
        return "ok"

    await dlq.enqueue("t1", {}, error=connection_error(), retry_policy="immediate")
    with anyio.fail_after(10):
        await dlq.start_retry_processor(work, check_interval_seconds=3600)
        await finished.wait()
        while (await fetch(dlq, "t1")).status is not COMPLETED:
            await anyio.lowlevel.checkpoint()
        await dlq.stop_retry_processor()
    assert (await fetch(dlq, "t1")).status is COMPLETED
    assert (await dlq.get_statistics())["lifetime_stats"]["retry_success"] == 1


# -- the clock is injected everywhere ----------------------------------------------------------


def _timestamps(task: FailedTask) -> list[datetime]:
    values = [
        task.failed_at,
        task.created_at,
        task.updated_at,
        task.completed_at,
        task.archived_at,
        task.next_retry_at,
        task.lease_expires_at,
    ]
    for attempt in task.attempts:
        values += [attempt.started_at, attempt.finished_at]
    return [value for value in values if value is not None]


async def test_every_timestamp_comes_from_the_injected_clock(
    dlq: DeadLetterQueue, clock: FakeClock
) -> None:
    dlq.default_callback = FlakyHandler(failures=1)
    await dlq.enqueue("t1", {}, error=connection_error())
    seen = {clock.now()}
    task = await fetch(dlq, "t1")
    assert task.failed_at == task.created_at == task.updated_at == T0

    seen.add(clock.advance(60))
    assert await RetryProcessor(dlq).run_once() == 1  # fails; next after 120 s
    task = await fetch(dlq, "t1")
    assert task.updated_at == at(60)
    assert task.attempts[-1].started_at == task.attempts[-1].finished_at == at(60)

    seen.add(clock.advance(7))
    assert (await dlq.retry_task("t1"))["success"] is True
    task = await fetch(dlq, "t1")
    assert task.completed_at == task.updated_at == at(67)

    seen.add(clock.advance(3))
    assert await dlq.archive_task("t1") is True
    task = await fetch(dlq, "t1")
    assert task.archived_at == task.updated_at == at(70)

    schedules = {at(60), at(60 + 120)}  # computed from clock readings
    for value in _timestamps(task):
        assert value.tzinfo is not None
        assert value.utcoffset() == timedelta(0)
        assert value in seen | schedules, value
    assert set(_timestamps(task)) >= seen


@pytest.mark.parametrize("policy", list(RetryPolicy))
@pytest.mark.parametrize("max_retries", [0, 1, 3])
@pytest.mark.parametrize("deadline", [None, 0.0, 30.0, 7200.0])
def test_the_cached_first_decision_is_what_decide_says(
    policy: RetryPolicy, max_retries: int, deadline: float | None
) -> None:
    from mahavishnu_dlq.capture import first_plan  # noqa: PLC0415
    from mahavishnu_dlq.policy import PolicyParams, RetryState, decide  # noqa: PLC0415

    params = PolicyParams(policy=policy, max_retries=max_retries, deadline=deadline)
    now = datetime(2026, 5, 1, tzinfo=timezone.utc)
    direct = lifecycle.schedule(
        decide(params, RetryState(retry_count=0, first_failed_at=now, now=now))
    )
    cached, status, wait = first_plan(params)
    assert cached is params
    assert status is direct["status"]
    assert (None if wait is None else now + wait) == direct["next_retry_at"]
