"""RetryProcessor: attempt timeouts (0.05 s of real time on purpose) and handlers: chosen
by workflow, missing, raising, deferring."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import pytest

from mahavishnu_dlq import RetryAfter
from mahavishnu_dlq.models import AttemptOutcome
from mahavishnu_dlq.processor import RetryProcessor, run_attempt
from mahavishnu_dlq.queue import DeadLetterQueue

from .support import (
    COMPLETED,
    EXHAUSTED,
    PENDING,
    Recorder,
    add,
    dlq_clock,
    stored,
)

pytestmark = pytest.mark.anyio


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
