"""Engine handlers and dispatched retries (:mod:`mahavishnu_dlq.engines`): a handler
that sends the work to an engine keeps the attempt running under its token until the
engine reports; late, repeated and missing reports change nothing or cost one lost
attempt."""

from __future__ import annotations

from typing import Any

import pytest

from mahavishnu_dlq import Dispatched
from mahavishnu_dlq.models import AttemptOutcome, FailedTask
from mahavishnu_dlq.processor import RetryProcessor
from mahavishnu_dlq.queue import DeadLetterQueue

from .support import COMPLETED, EXHAUSTED, PENDING, RETRYING, dlq_clock, stored

pytestmark = pytest.mark.anyio


class Engine:
    """An engine handler that records what it was asked to send, and dispatches it."""

    def __init__(self, wait_seconds: float = 60.0) -> None:
        self.sent: list[FailedTask] = []
        self.wait_seconds = wait_seconds

    def __call__(self, record: FailedTask) -> None:
        self.sent.append(record)
        assert record.lease_owner == f"fake:{record.task_id}:{record.retry_count}"
        raise Dispatched("sent to the fake engine")


async def _enqueue(dlq: DeadLetterQueue, task_id: str, *, max_retries: int = 3) -> FailedTask:
    return await dlq.enqueue(
        task_id,
        {"args": [1, 2]},
        error=ConnectionError("broker connection reset"),
        retry_policy="immediate",
        max_retries=max_retries,
        metadata={"engine": "fake", "queue": "q1"},
        workflow="proj.add",
    )


async def test_engine_handler_gets_the_record_and_the_attempt_stays_running(
    dlq: DeadLetterQueue,
) -> None:
    engine = Engine()
    dlq.register_engine("fake", engine, wait_seconds=engine.wait_seconds)
    await _enqueue(dlq, "t1")
    processor = RetryProcessor(dlq)
    assert await processor.run_once() == 1
    assert [r.metadata["queue"] for r in engine.sent] == ["q1"]
    held = await stored(dlq, "t1")
    assert held.status is RETRYING
    assert held.lease_owner == "fake:t1:1"
    assert held.attempts[-1].outcome is AttemptOutcome.RUNNING
    assert dlq.lifetime["dispatched"] == 1
    # held by the token: the processor does not send it again meanwhile
    assert await processor.run_once() == 0
    assert len(engine.sent) == 1


async def test_success_report_completes(dlq: DeadLetterQueue) -> None:
    dlq.register_engine("fake", Engine())
    await _enqueue(dlq, "t1")
    await RetryProcessor(dlq).run_once()
    done = await dlq.report_outcome("t1", "fake:t1:1")
    assert done is not None
    assert done.status is COMPLETED
    assert done.attempts[-1].outcome is AttemptOutcome.SUCCESS
    assert dlq.lifetime["retry_success"] == 1
    # a repeated report changes nothing
    assert await dlq.report_outcome("t1", "fake:t1:1", error="late") is None
    assert (await stored(dlq, "t1")).status is COMPLETED


async def test_failure_report_counts_as_an_attempt_and_reschedules(dlq: DeadLetterQueue) -> None:
    engine = Engine()
    dlq.register_engine("fake", engine, wait_seconds=engine.wait_seconds)
    await _enqueue(dlq, "t1", max_retries=2)
    processor = RetryProcessor(dlq)
    await processor.run_once()
    after = await dlq.report_outcome("t1", "fake:t1:1", error=TimeoutError("worker timed out"))
    assert after is not None
    assert after.status is PENDING
    assert after.last_error_type == "TimeoutError"
    assert after.attempts[-1].outcome is AttemptOutcome.FAILURE
    dlq_clock(dlq).advance(60)
    await processor.run_once()
    assert [r.retry_count for r in engine.sent] == [1, 2]
    last = await dlq.report_outcome("t1", "fake:t1:2", error="worker said no")
    assert last is not None
    assert last.status is EXHAUSTED
    assert last.last_error == "worker said no"
    assert last.last_error_type == "EngineFailure"
    assert dlq.lifetime["retry_failed"] == 2


async def test_a_report_that_never_comes_costs_one_lost_attempt(dlq: DeadLetterQueue) -> None:
    engine = Engine(wait_seconds=30)
    dlq.register_engine("fake", engine, wait_seconds=engine.wait_seconds)
    await _enqueue(dlq, "t1")
    processor = RetryProcessor(dlq)
    await processor.run_once()
    dlq_clock(dlq).advance(31)  # the wait is over: the task is sent again
    assert await processor.run_once() == 1
    again = await stored(dlq, "t1")
    assert again.lease_owner == "fake:t1:2"
    assert [a.outcome for a in again.attempts] == [AttemptOutcome.LOST, AttemptOutcome.RUNNING]
    # the first dispatch's late report is refused: the second one holds the task
    assert await dlq.report_outcome("t1", "fake:t1:1") is None
    assert (await stored(dlq, "t1")).status is RETRYING


async def test_workflow_handler_wins_over_the_engine(dlq: DeadLetterQueue) -> None:
    engine = Engine()
    calls: list[dict[str, Any]] = []
    dlq.register_engine("fake", engine, wait_seconds=engine.wait_seconds)
    dlq.register_handler("proj.add", lambda task, repos: calls.append(task))
    await _enqueue(dlq, "t1")
    await RetryProcessor(dlq).run_once()
    assert calls == [{"args": [1, 2]}]
    assert engine.sent == []
    assert (await stored(dlq, "t1")).status is COMPLETED


async def test_records_of_an_unknown_engine_wait_for_a_handler(dlq: DeadLetterQueue) -> None:
    dlq.register_engine("other", Engine())
    await _enqueue(dlq, "t1")
    assert not dlq.can_retry(await stored(dlq, "t1"))
    assert await RetryProcessor(dlq).run_once() == 0
    assert (await stored(dlq, "t1")).status is PENDING


async def test_manual_retry_of_an_engine_record_dispatches(dlq: DeadLetterQueue) -> None:
    engine = Engine()
    dlq.register_engine("fake", engine, wait_seconds=engine.wait_seconds)
    await _enqueue(dlq, "t1")
    reply = await dlq.retry_task("t1")
    assert reply["success"] is False
    assert len(engine.sent) == 1
    assert (await stored(dlq, "t1")).lease_owner == "fake:t1:1"


async def test_a_report_before_the_handler_returns_is_taken(dlq: DeadLetterQueue) -> None:
    """The attempt is held under its token before the handler sends anything, so a
    worker that runs and reports at once (before ``Dispatched`` is even raised) counts."""
    early: list[FailedTask | None] = []

    async def send_and_run_at_once(record: FailedTask) -> None:
        assert record.lease_owner is not None
        early.append(await dlq.report_outcome(record.task_id, record.lease_owner))
        raise Dispatched

    dlq.register_engine("fake", send_and_run_at_once)
    await _enqueue(dlq, "t1")
    assert await RetryProcessor(dlq).run_once() == 1
    assert [r.status if r else None for r in early] == [COMPLETED]
    done = await stored(dlq, "t1")
    assert done.status is COMPLETED
    assert [a.outcome for a in done.attempts] == [AttemptOutcome.SUCCESS]


async def test_an_engine_handler_may_end_the_attempt_itself(dlq: DeadLetterQueue) -> None:
    outcomes = iter([ConnectionError("send refused"), None])

    def send(record: FailedTask) -> str:
        error = next(outcomes)
        if error is not None:
            raise error
        return "ran in-process"

    dlq.register_engine("fake", send)
    await _enqueue(dlq, "t1")
    processor = RetryProcessor(dlq)
    await processor.run_once()
    failed = await stored(dlq, "t1")
    assert failed.status is PENDING
    assert failed.lease_owner is None
    assert failed.last_error == "send refused"
    dlq_clock(dlq).advance(60)
    await processor.run_once()
    assert (await stored(dlq, "t1")).status is COMPLETED


async def test_dispatched_from_a_workflow_handler_is_a_failed_attempt(
    dlq: DeadLetterQueue,
) -> None:
    def not_an_engine(task: dict[str, Any], repos: list[str]) -> None:
        raise Dispatched

    dlq.register_handler("proj.add", not_an_engine)
    await _enqueue(dlq, "t1")
    await RetryProcessor(dlq).run_once()
    task = await stored(dlq, "t1")
    assert task.status is PENDING
    assert task.last_error_type == "TypeError"
    assert "no engine's" in (task.last_error or "")


def test_register_engine_checks_its_arguments(dlq: DeadLetterQueue) -> None:
    with pytest.raises(ValueError, match="engine's name"):
        dlq.register_engine("", Engine())
    with pytest.raises(TypeError, match="callable"):
        dlq.register_engine("fake", "send")  # type: ignore[arg-type]
    for wait in (0, -1, float("nan"), True):
        with pytest.raises(ValueError, match="wait_seconds"):
            dlq.register_engine("fake", Engine(), wait_seconds=wait)
