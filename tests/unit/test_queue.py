"""DeadLetterQueue over MemoryStore: records, limits, the state machine, operator actions.

Time is a FakeClock, retries are driven with ``RetryProcessor.run_once``/``drain``,
and nothing sleeps: every test is deterministic on asyncio and trio.
"""

from __future__ import annotations

import math
import os
import platform
import random
import re
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any, cast

import anyio
import pytest

from mahavishnu_dlq import DeadLetterQueue, RetryProcessor, lifecycle
from mahavishnu_dlq.errors import (
    InvalidPayloadError,
    PayloadTooLargeError,
    QueueFullError,
    RetryAfter,
    TaskBusyError,
    TaskNotFoundError,
)
from mahavishnu_dlq.models import (
    AttemptOutcome,
    DeadLetterStatus,
    ErrorCategory,
    FailedTask,
    ReplayReport,
    RetryPolicy,
    TaskFilter,
)
from mahavishnu_dlq.testing import FakeClock, FlakyHandler, drain_over_time

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
WORKER = "w-test"

PENDING = DeadLetterStatus.PENDING
RETRYING = DeadLetterStatus.RETRYING
EXHAUSTED = DeadLetterStatus.EXHAUSTED
COMPLETED = DeadLetterStatus.COMPLETED
ARCHIVED = DeadLetterStatus.ARCHIVED


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def raised(exc: BaseException) -> BaseException:
    """``exc`` after being raised and caught, so it carries a traceback."""
    try:
        raise exc
    except BaseException as caught:
        return caught


def connection_error(shard: int = 1) -> BaseException:
    """The same failure each time (one fingerprint), with a varying number in it."""

    def connect() -> None:
        raise ConnectionError(f"connection to shard {shard} refused")

    try:
        connect()
    except ConnectionError as caught:
        return caught
    raise AssertionError("unreachable")  # pragma: no cover


def value_error() -> BaseException:
    return raised(ValueError("invalid email address"))


class SlowDownError(Exception):
    """A failure that asks for a later retry through a ``retry_after`` attribute."""

    retry_after = 120


class ThrottledError(ConnectionError):
    retry_after = 120


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def dlq(clock: FakeClock) -> DeadLetterQueue:
    return DeadLetterQueue(clock=clock, rng=random.Random(1234), worker_id=WORKER)


async def fetch(dlq: DeadLetterQueue, task_id: str) -> FailedTask:
    task = await dlq.get_task(task_id)
    assert task is not None, f"{task_id} is not stored"
    return task


async def ids(dlq: DeadLetterQueue, **kwargs: Any) -> list[str]:
    return [task.task_id for task in await dlq.list_tasks(**kwargs)]


async def succeed(task: dict[str, Any], repos: list[str]) -> dict[str, Any]:
    return {"echo": task, "repos": repos}


# -- enqueue builds a correct record ------------------------------------------------------


async def test_network_error_is_classified_and_scheduled_exponentially(
    dlq: DeadLetterQueue,
) -> None:
    error = connection_error()
    stored = await dlq.enqueue("t1", {"order": 42}, ["repo-a", "repo-b"], error)
    assert stored.task_id == "t1"
    assert stored.task == {"order": 42}
    assert stored.repos == ["repo-a", "repo-b"]
    assert stored.workflow == ""
    assert stored.error == "connection to shard 1 refused"
    assert stored.error_type == "ConnectionError"
    assert stored.last_error == stored.error
    assert stored.last_error_type == "ConnectionError"
    assert stored.error_category is ErrorCategory.NETWORK
    assert stored.retry_policy is RetryPolicy.EXPONENTIAL
    assert stored.status is PENDING
    assert stored.next_retry_at == at(60)  # first retry after 1 min
    assert stored.retry_count == 0
    assert stored.max_retries == 3
    assert stored.total_attempts == 1
    assert stored.attempts == []
    assert re.fullmatch(r"[0-9a-f]{16}", stored.error_fingerprint)
    assert stored.traceback is not None
    assert stored.traceback.startswith("Traceback (most recent call last)")
    assert "ConnectionError: connection to shard 1 refused" in stored.traceback
    assert "in connect" in stored.traceback
    assert stored.failed_at == stored.created_at == stored.updated_at == T0
    assert stored.completed_at is None
    assert stored.archived_at is None
    assert stored.lease_owner is None
    assert await fetch(dlq, "t1") == stored


async def test_validation_error_waits_for_an_operator(dlq: DeadLetterQueue) -> None:
    stored = await dlq.enqueue("t1", {}, None, value_error())
    assert stored.error_category is ErrorCategory.VALIDATION
    assert stored.retry_policy is RetryPolicy.NEVER
    assert stored.status is PENDING
    assert stored.next_retry_at is None
    assert stored.error_type == "ValueError"
    assert stored.repos == []


async def test_failure_context_is_captured_next_to_the_callers_metadata(
    dlq: DeadLetterQueue,
) -> None:
    stored = await dlq.enqueue(
        "t1", {}, error=connection_error(), metadata={"user": "alice", "run": {"n": 1}}
    )
    assert stored.metadata["user"] == "alice"
    assert stored.metadata["run"] == {"n": 1}
    context = stored.metadata["failure_context"]
    assert context["host"]
    assert isinstance(context["host"], str)
    assert context["pid"] == os.getpid()
    assert context["python"] == platform.python_version()
    assert isinstance(context["uptime_seconds"], float)
    assert context["uptime_seconds"] >= 0
    stored_again = await fetch(dlq, "t1")
    assert stored_again.metadata == stored.metadata  # survives the store round trip


async def test_explicit_policy_retries_category_and_workflow_are_honoured(
    dlq: DeadLetterQueue,
) -> None:
    stored = await dlq.enqueue(
        "t1",
        {"n": 1},
        ["r"],
        value_error(),  # would be validation / never on its own
        retry_policy="linear",
        max_retries=5,
        error_category="resource",
        workflow="ingest",
    )
    assert stored.retry_policy is RetryPolicy.LINEAR
    assert stored.max_retries == 5
    assert stored.error_category is ErrorCategory.RESOURCE
    assert stored.workflow == "ingest"
    assert stored.next_retry_at == at(300)  # linear: 5 min
    # enums work as well as strings
    other = await dlq.enqueue(
        "t2",
        {},
        error=value_error(),
        retry_policy=RetryPolicy.IMMEDIATE,
        error_category=ErrorCategory.TRANSIENT,
    )
    assert other.retry_policy is RetryPolicy.IMMEDIATE
    assert other.error_category is ErrorCategory.TRANSIENT
    assert other.next_retry_at == T0


async def test_explicit_category_chooses_the_default_policy(dlq: DeadLetterQueue) -> None:
    stored = await dlq.enqueue("t1", {}, error=value_error(), error_category="network")
    assert stored.retry_policy is RetryPolicy.EXPONENTIAL
    assert stored.next_retry_at == at(60)


@pytest.mark.parametrize(
    ("message", "category", "policy", "next_retry_at"),
    [
        ("connection refused by upstream", ErrorCategory.NETWORK, RetryPolicy.EXPONENTIAL, at(60)),
        ("disk quota exceeded", ErrorCategory.RESOURCE, RetryPolicy.LINEAR, at(300)),
        ("something odd happened", ErrorCategory.PERMANENT, RetryPolicy.NEVER, None),
    ],
)
async def test_string_errors(
    dlq: DeadLetterQueue,
    message: str,
    category: ErrorCategory,
    policy: RetryPolicy,
    next_retry_at: datetime | None,
) -> None:
    stored = await dlq.enqueue("t1", {}, None, message)
    assert stored.error == message
    assert stored.error_type == ""
    assert stored.traceback is None
    assert stored.error_category is category
    assert stored.retry_policy is policy
    assert stored.next_retry_at == next_retry_at
    assert re.fullmatch(r"[0-9a-f]{16}", stored.error_fingerprint)


async def test_an_exception_that_was_never_raised_has_no_traceback(
    dlq: DeadLetterQueue,
) -> None:
    stored = await dlq.enqueue("t1", {}, error=TimeoutError("slow"))
    assert stored.traceback is None
    assert stored.error_category is ErrorCategory.NETWORK
    assert stored.error == "slow"


async def test_an_exception_without_a_message_uses_its_type(dlq: DeadLetterQueue) -> None:
    stored = await dlq.enqueue("t1", {}, error=raised(ConnectionResetError()))
    assert stored.error == "ConnectionResetError"


async def test_a_retry_after_hint_sets_the_first_retry(dlq: DeadLetterQueue) -> None:
    stored = await dlq.enqueue("t1", {}, error=raised(ThrottledError("slow down")))
    assert stored.error_category is ErrorCategory.NETWORK
    assert stored.next_retry_at == at(120)  # the hint, not the policy's 60 s


@pytest.mark.parametrize("policy", ["immediate", "linear", "exponential"])
async def test_zero_retries_with_a_retrying_policy_is_exhausted_at_once(
    dlq: DeadLetterQueue, policy: str
) -> None:
    stored = await dlq.enqueue(
        "t1", {}, error=connection_error(), retry_policy=policy, max_retries=0
    )
    assert stored.status is EXHAUSTED
    assert stored.next_retry_at is None
    assert stored.retry_count == 0
    stats = await dlq.get_statistics()
    assert stats["lifetime_stats"]["exhausted"] == 1
    assert stats["status_breakdown"]["exhausted"] == 1
    assert await RetryProcessor(dlq).drain() == 0


async def test_zero_retries_with_never_stays_pending_for_an_operator(
    dlq: DeadLetterQueue,
) -> None:
    stored = await dlq.enqueue("t1", {}, error=value_error(), max_retries=0)
    assert stored.status is PENDING
    assert stored.next_retry_at is None


# -- idempotent enqueue -------------------------------------------------------------------


async def test_reenqueue_of_an_open_task_updates_it_and_keeps_its_schedule(
    dlq: DeadLetterQueue, clock: FakeClock
) -> None:
    first = await dlq.enqueue(
        "t1", {"v": 1}, ["r1"], connection_error(1), metadata={"user": "alice", "a": 1}
    )
    clock.advance(10)
    second = await dlq.enqueue(
        "t1",
        {"v": 2},
        ["r2"],
        raised(TimeoutError("db timeout")),
        metadata={"user": "bob"},
    )
    # updated
    assert second.task == {"v": 2}
    assert second.repos == ["r2"]
    assert second.last_error == "db timeout"
    assert second.last_error_type == "TimeoutError"
    assert second.metadata["user"] == "bob"
    assert second.metadata["a"] == 1
    assert "failure_context" in second.metadata
    assert second.updated_at == at(10)
    # kept
    assert second.error == first.error
    assert second.error_type == "ConnectionError"
    assert second.error_fingerprint == first.error_fingerprint
    assert second.traceback == first.traceback
    assert second.next_retry_at == at(60)
    assert second.retry_count == 0
    assert second.total_attempts == 1
    assert second.failed_at == second.created_at == T0
    # never duplicated
    assert await ids(dlq) == ["t1"]
    assert await fetch(dlq, "t1") == second
    stats = await dlq.get_statistics()
    assert stats["queue_size"] == 1
    assert stats["lifetime_stats"]["enqueued_total"] == 1
    assert stats["lifetime_stats"]["deduplicated"] == 1


async def test_duplicate_deliveries_at_the_same_instant_are_deduplicated(
    dlq: DeadLetterQueue,
) -> None:
    # the clock does not move: duplicates are told apart by what is stored, not by time
    for _ in range(3):
        await dlq.enqueue("t1", {"v": 1}, error=connection_error())
    await dlq.enqueue("t2", {"v": 1}, error=connection_error())
    assert sorted(await ids(dlq)) == ["t1", "t2"]
    life = (await dlq.get_statistics())["lifetime_stats"]
    assert life["enqueued_total"] == 2
    assert life["deduplicated"] == 2


async def test_reenqueue_of_an_exhausted_task_counts_it_exhausted_once(
    dlq: DeadLetterQueue,
) -> None:
    for _ in range(2):
        stored = await dlq.enqueue("t1", {}, error=connection_error(), max_retries=0)
    assert stored.status is EXHAUSTED
    life = (await dlq.get_statistics())["lifetime_stats"]
    assert life["exhausted"] == 1
    assert life["deduplicated"] == 1


async def test_reenqueue_after_retries_keeps_counters_and_history(
    dlq: DeadLetterQueue, clock: FakeClock
) -> None:
    dlq.default_callback = FlakyHandler(failures=10)
    await dlq.enqueue("t1", {}, error=connection_error())
    clock.advance(60)
    assert await RetryProcessor(dlq).run_once() == 1
    before = await fetch(dlq, "t1")
    assert before.retry_count == 1
    clock.advance(5)
    after = await dlq.enqueue("t1", {"new": True}, error="late duplicate")
    assert after.retry_count == 1
    assert after.total_attempts == 2
    assert after.attempts == before.attempts
    assert after.next_retry_at == before.next_retry_at == at(180)
    assert after.last_error == "late duplicate"
    assert after.task == {"new": True}


async def test_reenqueue_while_retrying_keeps_the_lease(dlq: DeadLetterQueue) -> None:
    dlq.default_callback = succeed
    await dlq.enqueue("t1", {}, error=connection_error(), retry_policy="immediate")
    (claimed,) = await RetryProcessor(dlq).claim(1)
    again = await dlq.enqueue("t1", {"v": 2}, error=connection_error())
    assert again.status is RETRYING
    assert again.lease_owner == WORKER
    assert again.lease_expires_at == claimed.lease_expires_at
    assert again.retry_count == 1
    assert again.task == {"v": 2}


@pytest.mark.parametrize("close", ["complete", "archive"])
async def test_reenqueue_of_a_closed_task_reopens_it(
    dlq: DeadLetterQueue, clock: FakeClock, close: str
) -> None:
    dlq.default_callback = succeed
    await dlq.enqueue("t1", {"v": 1}, error=connection_error())
    clock.advance(30)
    if close == "complete":
        assert (await dlq.retry_task("t1"))["success"] is True
    else:
        assert await dlq.archive_task("t1") is True
    closed = await fetch(dlq, "t1")
    clock.advance(100)
    reopened = await dlq.enqueue("t1", {"v": 2}, error=raised(TimeoutError("timed out")))
    assert reopened.status is PENDING
    assert reopened.created_at == T0
    assert reopened.failed_at == at(130)
    assert reopened.updated_at == at(130)
    assert reopened.error == "timed out"
    assert reopened.error_type == "TimeoutError"
    assert reopened.task == {"v": 2}
    assert reopened.attempts == closed.attempts
    assert reopened.total_attempts == closed.total_attempts + 1
    assert reopened.retry_count == 0
    assert reopened.next_retry_at == at(190)
    assert reopened.completed_at is None
    assert reopened.archived_at is None
    assert await ids(dlq) == ["t1"]
    life = (await dlq.get_statistics())["lifetime_stats"]
    assert life["enqueued_total"] == 2  # a new failure, not a duplicate delivery
    assert life["deduplicated"] == 0


# -- max_size -----------------------------------------------------------------------------


async def test_a_full_queue_refuses_new_tasks(clock: FakeClock) -> None:
    dlq = DeadLetterQueue(clock=clock, max_size=2)
    dlq.default_callback = succeed
    await dlq.enqueue("a", {}, error=connection_error())
    await dlq.enqueue("b", {}, error=connection_error())
    with pytest.raises(QueueFullError) as info:
        await dlq.enqueue("c", {}, error=connection_error())
    assert info.value.size == 2
    assert info.value.limit == 2
    assert "max_size is 2" in str(info.value)
    assert await dlq.get_task("c") is None
    stats = await dlq.get_statistics()
    assert stats["queue_size"] == 2
    assert stats["utilization_percent"] == 100.0
    assert stats["lifetime_stats"]["enqueued_total"] == 2

    # an update of an id that is already open still works
    updated = await dlq.enqueue("a", {"v": 2}, error=connection_error())
    assert updated.task == {"v": 2}

    # completed and archived tasks do not count toward max_size
    assert (await dlq.retry_task("a"))["success"] is True
    await dlq.enqueue("c", {}, error=connection_error())
    assert await dlq.archive_task("b") is True
    await dlq.enqueue("d", {}, error=connection_error())
    assert sorted(await ids(dlq, status="pending")) == ["c", "d"]

    # but reopening a closed one adds an open task, so it is refused while full
    with pytest.raises(QueueFullError):
        await dlq.enqueue("b", {}, error=connection_error())
    assert (await fetch(dlq, "b")).status is ARCHIVED
    assert (await dlq.get_statistics())["total_stored"] == 4


# -- invalid input ------------------------------------------------------------------------


@pytest.mark.parametrize("task", [["a", "list"], "text", None, 42])
async def test_task_must_be_a_mapping(dlq: DeadLetterQueue, task: object) -> None:
    with pytest.raises(InvalidPayloadError, match="must be a JSON object") as info:
        await dlq.enqueue("t1", cast(Any, task), error="boom")
    assert info.value.task_id == "t1"
    assert await dlq.get_task("t1") is None


@pytest.mark.parametrize(
    ("task", "metadata", "problem"),
    [
        ({"tags": {"a", "b"}}, None, "set"),
        ({"obj": object()}, None, "object"),
        ({"x": math.nan}, None, "float"),
        ({"x": math.inf}, None, "float"),
        ({}, {"when": datetime(2026, 1, 1, tzinfo=timezone.utc)}, "datetime"),
        ({}, {"tags": {1, 2}}, "set"),
    ],
    ids=["set", "object", "nan", "inf", "metadata-datetime", "metadata-set"],
)
async def test_values_that_are_not_json_are_refused(
    dlq: DeadLetterQueue, task: dict[str, Any], metadata: dict[str, Any] | None, problem: str
) -> None:
    with pytest.raises(InvalidPayloadError, match="not JSON") as info:
        await dlq.enqueue("t1", task, error="boom", metadata=metadata)
    assert problem in str(info.value)
    assert "t1" in str(info.value)
    assert await dlq.get_task("t1") is None


async def test_a_huge_payload_is_refused_and_nothing_is_stored(clock: FakeClock) -> None:
    dlq = DeadLetterQueue(clock=clock, max_payload_bytes=1000)
    await dlq.enqueue("ok", {"blob": "x" * 900}, error="boom")
    with pytest.raises(PayloadTooLargeError) as info:
        await dlq.enqueue("big", {"blob": "x" * 2000}, error="boom")
    assert info.value.limit == 1000
    assert info.value.size > 2000
    assert info.value.task_id == "big"
    assert "1000" in str(info.value)
    assert await dlq.get_task("big") is None
    with pytest.raises(PayloadTooLargeError):
        await dlq.enqueue("big-meta", {}, error="boom", metadata={"blob": "y" * 2000})
    # an oversized update of a stored task leaves the stored record alone
    before = await fetch(dlq, "ok")
    with pytest.raises(PayloadTooLargeError):
        await dlq.enqueue("ok", {"blob": "x" * 2000}, error="boom")
    assert await fetch(dlq, "ok") == before
    assert await ids(dlq) == ["ok"]
    assert (await dlq.get_statistics())["lifetime_stats"]["enqueued_total"] == 1


@pytest.mark.parametrize("task_id", ["", "a" * 513])
async def test_bad_task_ids_are_refused(dlq: DeadLetterQueue, task_id: str) -> None:
    with pytest.raises(InvalidPayloadError, match="1-512 characters"):
        await dlq.enqueue(task_id, {}, error="boom")
    assert await ids(dlq) == []


@pytest.mark.parametrize("task_id", [None, 17, b"bytes", ["a"]])
async def test_ids_that_are_not_strings_are_a_type_error(
    dlq: DeadLetterQueue, task_id: object
) -> None:
    with pytest.raises(TypeError, match="task_id must be a string"):
        await dlq.enqueue(cast(Any, task_id), {}, error="boom")
    for read in (dlq.get_task, dlq.retry_task, dlq.archive_task):
        with pytest.raises(TypeError, match="task_id must be a string"):
            await read(cast(Any, task_id))
    assert await ids(dlq) == []


async def test_the_longest_task_id_is_accepted(dlq: DeadLetterQueue) -> None:
    stored = await dlq.enqueue("a" * 512, {}, error="boom")
    assert (await fetch(dlq, "a" * 512)) == stored


@pytest.mark.parametrize("max_retries", [-1, 1001])
async def test_bad_max_retries_are_refused(dlq: DeadLetterQueue, max_retries: int) -> None:
    with pytest.raises(ValueError, match="max_retries"):
        await dlq.enqueue("t1", {}, error="boom", max_retries=max_retries)
    assert await dlq.get_task("t1") is None


async def test_unknown_policy_or_category_is_refused(dlq: DeadLetterQueue) -> None:
    with pytest.raises(ValueError, match="sometimes"):
        await dlq.enqueue("t1", {}, error="boom", retry_policy="sometimes")
    with pytest.raises(ValueError, match="cosmic"):
        await dlq.enqueue("t1", {}, error="boom", error_category="cosmic")
    assert await dlq.get_task("t1") is None


@pytest.mark.parametrize("status", ["bogus", ["pending", "bogus"]])
async def test_unknown_status_in_list_tasks_names_the_allowed_ones(
    dlq: DeadLetterQueue, status: str | list[str]
) -> None:
    with pytest.raises(ValueError, match="bogus") as info:
        await dlq.list_tasks(status=status)
    message = str(info.value)
    for allowed in ("pending", "retrying", "exhausted", "completed", "archived"):
        assert allowed in message


@pytest.mark.parametrize("limit", [0, -5, 10001])
async def test_list_limit_out_of_range(dlq: DeadLetterQueue, limit: int) -> None:
    with pytest.raises(ValueError, match="limit"):
        await dlq.list_tasks(limit=limit)


async def test_list_limit_bounds_are_accepted(dlq: DeadLetterQueue) -> None:
    await dlq.enqueue("t1", {}, error="boom")
    await dlq.enqueue("t2", {}, error="boom")
    assert len(await dlq.list_tasks(limit=1)) == 1
    assert len(await dlq.list_tasks(limit=10000)) == 2


# -- NEVER tasks --------------------------------------------------------------------------


async def test_never_tasks_are_not_picked_by_the_processor_but_can_be_retried_by_hand(
    dlq: DeadLetterQueue, clock: FakeClock
) -> None:
    handler = FlakyHandler(result="fixed")
    dlq.default_callback = handler
    await dlq.enqueue("t1", {"n": 1}, ["r"], value_error())
    processor = RetryProcessor(dlq)
    assert await processor.drain() == 0
    clock.advance(timedelta(days=1))
    assert await processor.drain() == 0
    waiting = await fetch(dlq, "t1")
    assert waiting.status is PENDING
    assert waiting.retry_count == 0
    assert waiting.next_retry_at is None
    assert handler.calls == []

    result = await dlq.retry_task("t1")
    assert result["success"] is True
    assert result["result"] == "fixed"
    assert handler.calls == [({"n": 1}, ["r"])]
    done = await fetch(dlq, "t1")
    assert done.status is COMPLETED
    assert done.retry_count == 1


async def test_a_failed_manual_retry_of_a_never_task_keeps_it_manual(
    dlq: DeadLetterQueue, clock: FakeClock
) -> None:
    dlq.default_callback = FlakyHandler(failures=1, make_error=value_error)
    await dlq.enqueue("t1", {}, error=value_error())
    result = await dlq.retry_task("t1")
    assert result["success"] is False
    task = await fetch(dlq, "t1")
    assert task.status is PENDING
    assert task.next_retry_at is None
    assert task.retry_count == 1
    clock.advance(timedelta(days=1))
    assert await RetryProcessor(dlq).drain() == 0


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


# -- listing ------------------------------------------------------------------------------


async def _variety(dlq: DeadLetterQueue, clock: FakeClock) -> None:
    """a..e, one every 10 s: a pending, b pending (never), c completed, d archived, e exhausted."""
    dlq.default_callback = succeed
    await dlq.enqueue("a", {}, error=connection_error(1), workflow="ingest")
    clock.advance(10)
    await dlq.enqueue("b", {}, error=value_error(), workflow="report")
    clock.advance(10)
    await dlq.enqueue("c", {}, error=connection_error(3), workflow="report")
    await dlq.retry_task("c")
    clock.advance(10)
    await dlq.enqueue("d", {}, error="disk quota exceeded", workflow="ingest")
    await dlq.archive_task("d")
    clock.advance(10)
    await dlq.enqueue("e", {}, error=connection_error(5), workflow="ingest", max_retries=0)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, ["e", "d", "c", "b", "a"]),
        ({"status": "pending"}, ["b", "a"]),
        ({"status": DeadLetterStatus.COMPLETED}, ["c"]),
        ({"status": ["archived", DeadLetterStatus.EXHAUSTED]}, ["e", "d"]),
        ({"error_category": "network"}, ["e", "c", "a"]),
        ({"error_category": [ErrorCategory.VALIDATION, "resource"]}, ["d", "b"]),
        ({"workflow": "report"}, ["c", "b"]),
        ({"workflow": ["ingest"]}, ["e", "d", "a"]),
        ({"since": at(10), "until": at(30)}, ["c", "b"]),
        ({"since": at(30)}, ["e", "d"]),
        ({"until": at(10)}, ["a"]),
        ({"text": "QUOTA"}, ["d"]),
        ({"text": "valueerror"}, ["b"]),
        ({"text": "shard"}, ["e", "c", "a"]),
        ({"workflow": "ingest", "status": "pending"}, ["a"]),
        ({"workflow": "ingest", "error_category": "network", "since": at(1)}, ["e"]),
        ({"text": "no such words"}, []),
    ],
)
async def test_list_filters(
    dlq: DeadLetterQueue, clock: FakeClock, kwargs: dict[str, Any], expected: list[str]
) -> None:
    await _variety(dlq, clock)
    page = await dlq.list_tasks(**kwargs)
    assert [t.task_id for t in page] == expected
    assert page.cursor is None


async def test_list_pages_through_everything_with_the_cursor(
    dlq: DeadLetterQueue, clock: FakeClock
) -> None:
    for i in range(7):
        await dlq.enqueue(f"t{i}", {"i": i}, error="boom")
        clock.advance(1)
    seen: list[str] = []
    sizes: list[int] = []
    cursor: str | None = None
    while True:
        page = await dlq.list_tasks(limit=3, cursor=cursor)
        seen.extend(t.task_id for t in page)
        sizes.append(len(page))
        cursor = page.cursor
        if cursor is None:
            break
    assert sizes == [3, 3, 1]
    assert seen == [f"t{i}" for i in reversed(range(7))]
    # a filter holds across pages
    first = await dlq.list_tasks(limit=2, text="t", since=at(2))
    rest = await dlq.list_tasks(limit=10, text="t", since=at(2), cursor=first.cursor)
    assert [t.task_id for t in [*first, *rest]] == ["t6", "t5", "t4", "t3", "t2"]


async def test_get_task_of_an_unknown_id_is_none(dlq: DeadLetterQueue) -> None:
    assert await dlq.get_task("ghost") is None


# -- statistics --------------------------------------------------------------------------


async def test_statistics(clock: FakeClock) -> None:
    dlq = DeadLetterQueue(clock=clock, max_size=8, retry_interval_seconds=45)
    dlq.default_callback = succeed
    await dlq.enqueue("n1", {}, error=connection_error(1))
    clock.advance(30)
    await dlq.enqueue("n2", {}, error=connection_error(2))
    await dlq.enqueue("x1", {}, error=connection_error(3), max_retries=0)
    await dlq.enqueue("v1", {}, error=value_error())
    await dlq.enqueue("v2", {}, error=value_error(), retry_policy="linear")
    await dlq.enqueue("v2", {}, error=value_error())  # a duplicate delivery
    await dlq.retry_task("v1")
    await dlq.archive_task("v2")
    clock.advance(60)

    stats = await dlq.get_statistics()
    assert {
        "queue_size",
        "max_size",
        "utilization_percent",
        "status_breakdown",
        "error_categories",
        "retry_policies",
        "lifetime_stats",
        "is_processor_running",
        "retry_interval_seconds",
        "backend",
        "oldest_pending_age_seconds",
        "top_fingerprints",
    } <= set(stats)
    assert stats["queue_size"] == 3  # n1, n2 pending; x1 exhausted
    assert stats["max_size"] == 8
    assert stats["utilization_percent"] == 37.5
    assert stats["status_breakdown"] == {
        "pending": 2,
        "retrying": 0,
        "exhausted": 1,
        "completed": 1,
        "archived": 1,
    }
    assert stats["error_categories"] == {
        "transient": 0,
        "network": 3,
        "resource": 0,
        "permission": 0,
        "validation": 2,
        "permanent": 0,
    }
    assert stats["retry_policies"] == {
        "never": 1,
        "linear": 1,
        "exponential": 3,
        "immediate": 0,
    }
    life = stats["lifetime_stats"]
    assert {
        "enqueued_total",
        "retry_success",
        "retry_failed",
        "exhausted",
        "manually_retried",
        "archived",
    } <= set(life)
    assert life["enqueued_total"] == 5
    assert life["deduplicated"] == 1
    assert life["retry_success"] == 1
    assert life["retry_failed"] == 0
    assert life["exhausted"] == 1
    assert life["manually_retried"] == 1
    assert life["archived"] == 1
    assert stats["is_processor_running"] is False
    assert stats["retry_interval_seconds"] == 45
    assert stats["backend"] == "memory"
    assert stats["oldest_pending_age_seconds"] == 90.0  # n1 failed at T0, now T0+90
    top = stats["top_fingerprints"]
    assert top[0]["count"] == 3  # the three connection failures, whatever their shard
    assert top[0]["error_type"] == "ConnectionError"
    assert top[0]["example_error"].startswith("connection to shard")
    assert sum(fp["count"] for fp in top) == stats["queue_size"]
    fingerprints = {(await fetch(dlq, i)).error_fingerprint for i in ("n1", "n2", "x1")}
    assert fingerprints == {top[0]["fingerprint"]}


async def test_statistics_of_an_empty_queue(dlq: DeadLetterQueue) -> None:
    stats = await dlq.get_statistics()
    assert stats["queue_size"] == 0
    assert stats["utilization_percent"] == 0.0
    assert stats["oldest_pending_age_seconds"] is None
    assert stats["top_fingerprints"] == []
    assert set(stats["status_breakdown"].values()) == {0}
    assert set(stats["lifetime_stats"].values()) == {0}


async def test_oldest_pending_age_follows_the_oldest_pending_task(
    dlq: DeadLetterQueue, clock: FakeClock
) -> None:
    dlq.default_callback = succeed
    await dlq.enqueue("old", {}, error=connection_error())
    clock.advance(100)
    await dlq.enqueue("new", {}, error=connection_error())
    clock.advance(20)
    assert (await dlq.get_statistics())["oldest_pending_age_seconds"] == 120.0
    await dlq.retry_task("old")
    assert (await dlq.get_statistics())["oldest_pending_age_seconds"] == 20.0
    await dlq.archive_task("new")
    assert (await dlq.get_statistics())["oldest_pending_age_seconds"] is None


# -- replay -------------------------------------------------------------------------------


async def _replayable(dlq: DeadLetterQueue) -> None:
    """p1, p2 pending in the future; x1 exhausted; done completed; a never task."""
    dlq.default_callback = succeed
    await dlq.enqueue("p1", {}, error=connection_error(), workflow="ingest")
    await dlq.enqueue("p2", {}, error=connection_error(), workflow="report")
    await dlq.enqueue("x1", {}, error=connection_error(), workflow="ingest", max_retries=0)
    await dlq.enqueue("done", {}, error=connection_error(), workflow="ingest")
    await dlq.retry_task("done")
    await dlq.enqueue("v1", {}, error=value_error(), workflow="report")


def assert_consistent(report: ReplayReport) -> None:
    """The report's counters agree with its items."""
    outcomes = Counter(item.outcome for item in report.items)
    assert report.matched == len(report.items)
    assert (
        report.replayed == outcomes["replayed"] + outcomes["would_replay"] + outcomes["succeeded"]
    )
    assert report.succeeded == outcomes["succeeded"]
    assert report.failed == outcomes["failed"]
    assert report.skipped == outcomes["skipped"]
    assert report.matched == report.replayed + report.failed + report.skipped
    assert len({item.task_id for item in report.items}) == report.matched  # each task once


async def _snapshot(dlq: DeadLetterQueue) -> dict[str, FailedTask]:
    return {task.task_id: task for task in await dlq.list_tasks(limit=1000)}


async def test_replay_dry_run_touches_nothing(dlq: DeadLetterQueue, clock: FakeClock) -> None:
    await _replayable(dlq)
    before = await _snapshot(dlq)
    report = await dlq.replay(dry_run=True, rate_per_second=1)
    assert_consistent(report)
    assert report.dry_run is True
    assert sorted(item.task_id for item in report.items) == ["p1", "p2", "v1", "x1"]
    assert {item.outcome for item in report.items} == {"would_replay"}
    assert report.matched == report.replayed == 4
    assert report.succeeded == report.failed == report.skipped == 0
    assert await _snapshot(dlq) == before
    assert clock.slept == []
    assert clock.now() == T0
    assert await RetryProcessor(dlq).run_once() == 0


async def test_replay_makes_tasks_due_and_the_processor_retries_them(
    dlq: DeadLetterQueue, clock: FakeClock
) -> None:
    await _replayable(dlq)
    processor = RetryProcessor(dlq)
    assert await processor.run_once() == 0
    clock.advance(10)
    report = await dlq.replay()
    assert_consistent(report)
    assert report.dry_run is False
    assert sorted(item.task_id for item in report.items) == ["p1", "p2", "v1", "x1"]
    assert {item.outcome for item in report.items} == {"replayed"}
    assert report.matched == report.replayed == 4
    assert report.failures == []

    p1 = await fetch(dlq, "p1")
    assert p1.status is PENDING
    assert p1.next_retry_at == at(10)
    assert p1.max_retries == 3
    x1 = await fetch(dlq, "x1")
    assert x1.status is PENDING
    assert x1.next_retry_at == at(10)
    assert x1.max_retries == x1.retry_count + 1 == 1
    done = await fetch(dlq, "done")
    assert done.status is COMPLETED  # closed tasks are not matched

    assert await processor.run_once() == 4
    for task_id in ("p1", "p2", "x1", "v1"):
        assert (await fetch(dlq, task_id)).status is COMPLETED


async def test_a_replayed_exhausted_task_that_fails_again_is_exhausted_again(
    dlq: DeadLetterQueue,
) -> None:
    dlq.default_callback = FlakyHandler(failures=1000)
    await dlq.enqueue("x1", {}, error=connection_error(), retry_policy="immediate", max_retries=1)
    processor = RetryProcessor(dlq)
    assert await processor.drain() == 1
    assert (await fetch(dlq, "x1")).status is EXHAUSTED
    await dlq.replay()
    assert await processor.drain() == 1  # exactly one more retry
    task = await fetch(dlq, "x1")
    assert task.status is EXHAUSTED
    assert task.retry_count == task.max_retries == 2


async def test_replay_limit(dlq: DeadLetterQueue) -> None:
    for i in range(5):
        await dlq.enqueue(f"t{i}", {}, error=connection_error())
    report = await dlq.replay(limit=2)
    assert_consistent(report)
    assert report.matched == report.replayed == len(report.items) == 2
    due = [t.task_id for t in await dlq.list_tasks() if t.next_retry_at == T0]
    assert sorted(due) == sorted(item.task_id for item in report.items)
    assert (await dlq.replay(limit=0)).matched == 0


async def test_replay_is_paced_by_the_clock(dlq: DeadLetterQueue, clock: FakeClock) -> None:
    for i in range(5):
        await dlq.enqueue(f"t{i}", {}, error=connection_error())
    report = await dlq.replay(rate_per_second=2)
    assert_consistent(report)
    assert report.replayed == 5
    assert clock.slept == pytest.approx([0.5] * 4)
    assert sum(clock.slept) == pytest.approx((5 - 1) / 2)
    assert clock.now() == at(2)
    # each task was made due at the moment its turn came
    due = sorted(t.next_retry_at for t in await dlq.list_tasks() if t.next_retry_at is not None)
    assert due == [at(0), at(0.5), at(1), at(1.5), at(2)]


async def test_replay_reports_each_item_as_it_goes(dlq: DeadLetterQueue) -> None:
    for i in range(4):
        await dlq.enqueue(f"t{i}", {}, error=connection_error())
    seen: list[str] = []
    selected = dlq.replay_filter()
    assert selected.status == (
        DeadLetterStatus.PENDING,
        DeadLetterStatus.EXHAUSTED,
        DeadLetterStatus.RETRYING,
    )
    assert await dlq.count_tasks(selected) == 4
    report = await dlq.replay(on_item=lambda item: seen.append(item.task_id), limit=3)
    assert seen == [item.task_id for item in report.items]
    assert len(seen) == 3
    # a filter with a status is taken as it is
    only_done = TaskFilter(status="completed")
    assert dlq.replay_filter(only_done) is only_done


async def test_replay_by_filter(dlq: DeadLetterQueue) -> None:
    await _replayable(dlq)
    report = await dlq.replay(TaskFilter(workflow="ingest", error_category=ErrorCategory.NETWORK))
    assert_consistent(report)
    assert sorted(item.task_id for item in report.items) == ["p1", "x1"]
    assert (await fetch(dlq, "p2")).next_retry_at == at(60)  # untouched
    assert (await fetch(dlq, "v1")).next_retry_at is None
    # an explicit status narrows the default selection
    only_exhausted = await dlq.replay(TaskFilter(status=EXHAUSTED))
    assert_consistent(only_exhausted)
    assert only_exhausted.matched == 0  # x1 is pending now


async def test_replay_with_run_retries_inline(dlq: DeadLetterQueue) -> None:
    async def picky(task: dict[str, Any], repos: list[str]) -> str:
        if task.get("fail"):
            raise ConnectionError("still down")
        return "ok"

    dlq.default_callback = picky
    await dlq.enqueue("good-1", {}, error=connection_error())
    await dlq.enqueue("good-2", {}, error=connection_error())
    await dlq.enqueue("bad", {"fail": True}, error=connection_error())
    report = await dlq.replay(run=True)
    assert_consistent(report)
    outcomes = {item.task_id: item.outcome for item in report.items}
    assert outcomes == {"good-1": "succeeded", "good-2": "succeeded", "bad": "failed"}
    assert report.matched == 3
    assert report.succeeded == 2
    assert report.failed == 1
    assert report.replayed == 2
    assert [item.detail for item in report.failures] == ["still down"]
    assert (await fetch(dlq, "good-1")).status is COMPLETED
    bad = await fetch(dlq, "bad")
    assert bad.status is PENDING
    assert bad.retry_count == 1
    assert (await dlq.get_statistics())["lifetime_stats"]["manually_retried"] == 3


async def test_replay_skips_tasks_being_retried(dlq: DeadLetterQueue) -> None:
    dlq.default_callback = succeed
    await dlq.enqueue("busy", {}, error=connection_error(), retry_policy="immediate")
    await dlq.enqueue("free", {}, error=connection_error())
    (claimed,) = await RetryProcessor(dlq).claim(10)
    assert claimed.task_id == "busy"
    report = await dlq.replay()
    assert_consistent(report)
    outcomes = {item.task_id: item.outcome for item in report.items}
    assert outcomes == {"busy": "skipped", "free": "replayed"}
    assert report.matched == 2
    assert report.skipped == 1
    assert report.replayed == 1
    assert report.matched == report.replayed + report.failed + report.skipped
    (skipped,) = report.failures
    assert "busy" in skipped.detail
    assert await fetch(dlq, "busy") == claimed
    dry = await dlq.replay(dry_run=True)
    assert_consistent(dry)
    assert {item.task_id: item.outcome for item in dry.items}["busy"] == "skipped"


@pytest.mark.parametrize(
    "kwargs", [{"rate_per_second": 0}, {"rate_per_second": -1.0}, {"limit": -1}]
)
async def test_replay_arguments_are_checked(dlq: DeadLetterQueue, kwargs: dict[str, Any]) -> None:
    await dlq.enqueue("t1", {}, error=connection_error())
    with pytest.raises(ValueError, match=r"rate_per_second|limit"):
        await dlq.replay(**kwargs)
    assert (await fetch(dlq, "t1")).next_retry_at == at(60)


# -- archive, purge, clear ----------------------------------------------------------------


async def test_archive(dlq: DeadLetterQueue, clock: FakeClock) -> None:
    dlq.default_callback = succeed
    await dlq.enqueue("pending", {}, error=connection_error(), retry_policy="immediate")
    await dlq.enqueue("exhausted", {}, error=connection_error(), max_retries=0)
    await dlq.enqueue("completed", {}, error=connection_error())
    await dlq.retry_task("completed")
    clock.advance(15)
    for task_id in ("pending", "exhausted", "completed"):
        assert await dlq.archive_task(task_id) is True
        task = await fetch(dlq, task_id)
        assert task.status is ARCHIVED
        assert task.archived_at == at(15)
        assert task.next_retry_at is None
    clock.advance(15)
    assert await dlq.archive_task("pending") is True  # idempotent
    assert (await fetch(dlq, "pending")).archived_at == at(15)
    assert await dlq.archive_task("ghost") is False
    stats = await dlq.get_statistics()
    assert stats["lifetime_stats"]["archived"] == 3
    assert stats["status_breakdown"]["archived"] == 3
    assert stats["queue_size"] == 0
    # archived tasks are never picked, however long we wait
    clock.advance(timedelta(days=30))
    assert await RetryProcessor(dlq).drain() == 0


async def test_archive_of_a_task_being_retried_is_refused(dlq: DeadLetterQueue) -> None:
    dlq.default_callback = succeed
    await dlq.enqueue("t1", {}, error=connection_error(), retry_policy="immediate")
    (claimed,) = await RetryProcessor(dlq).claim(1)
    with pytest.raises(TaskBusyError):
        await dlq.archive_task("t1")
    assert await fetch(dlq, "t1") == claimed
    assert (await dlq.get_statistics())["lifetime_stats"]["archived"] == 0


async def _closed_and_open(dlq: DeadLetterQueue, clock: FakeClock) -> None:
    """done-0 completed at T0, arch-100 archived at T0+100, pend and exh open."""
    dlq.default_callback = succeed
    await dlq.enqueue("done-0", {}, error=connection_error())
    await dlq.retry_task("done-0")
    await dlq.enqueue("pend", {}, error=connection_error())
    await dlq.enqueue("exh", {}, error=connection_error(), max_retries=0)
    clock.advance(100)
    await dlq.enqueue("arch-100", {}, error=connection_error())
    await dlq.archive_task("arch-100")
    clock.advance(50)


async def test_purge_removes_completed_and_archived_by_default(
    dlq: DeadLetterQueue, clock: FakeClock
) -> None:
    await _closed_and_open(dlq, clock)
    assert await dlq.purge() == 2
    assert sorted(await ids(dlq)) == ["exh", "pend"]
    assert await dlq.purge() == 0
    stats = await dlq.get_statistics()
    assert stats["lifetime_stats"]["purged"] == 2
    assert stats["queue_size"] == 2


async def test_purge_older_than_an_age(dlq: DeadLetterQueue, clock: FakeClock) -> None:
    await _closed_and_open(dlq, clock)
    # now T0+150: a 100 s age means last updated before T0+50
    assert await dlq.purge(older_than=timedelta(seconds=100)) == 1
    assert await dlq.get_task("done-0") is None
    assert await dlq.get_task("arch-100") is not None
    assert await dlq.purge(older_than=timedelta(seconds=50)) == 0  # cut-off T0+100, exclusive
    assert await dlq.purge(older_than=timedelta(0)) == 1
    assert sorted(await ids(dlq)) == ["exh", "pend"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"older_than": timedelta(seconds=100)},
        {"older_than": at(101)},
        {"status": ["pending", "exhausted"]},
        {"status": "completed", "older_than": timedelta(0)},
    ],
)
async def test_purge_dry_run_counts_what_purge_deletes(
    dlq: DeadLetterQueue, clock: FakeClock, kwargs: dict[str, Any]
) -> None:
    await _closed_and_open(dlq, clock)
    before = sorted(await ids(dlq))
    would = await dlq.purge(dry_run=True, **kwargs)
    assert sorted(await ids(dlq)) == before  # nothing deleted
    assert (await dlq.get_statistics())["lifetime_stats"]["purged"] == 0
    assert await dlq.count_tasks(dlq.purge_filter(**kwargs)) == would
    assert await dlq.purge(**kwargs) == would
    assert len(await ids(dlq)) == len(before) - would


async def test_purge_older_than_a_time(dlq: DeadLetterQueue, clock: FakeClock) -> None:
    await _closed_and_open(dlq, clock)
    assert await dlq.purge(older_than=at(100)) == 1
    assert await dlq.get_task("arch-100") is not None
    assert await dlq.purge(older_than=at(101)) == 1
    assert sorted(await ids(dlq)) == ["exh", "pend"]


@pytest.mark.parametrize(
    ("status", "gone"),
    [
        ("exhausted", {"exh"}),
        ([DeadLetterStatus.PENDING], {"pend"}),
        (["pending", "exhausted", "completed"], {"pend", "exh", "done-0"}),
    ],
)
async def test_purge_by_status(
    dlq: DeadLetterQueue, clock: FakeClock, status: Any, gone: set[str]
) -> None:
    await _closed_and_open(dlq, clock)
    everything = {"done-0", "pend", "exh", "arch-100"}
    assert await dlq.purge(status=status) == len(gone)
    assert set(await ids(dlq)) == everything - gone


async def test_purge_arguments_are_checked(dlq: DeadLetterQueue, clock: FakeClock) -> None:
    await _closed_and_open(dlq, clock)
    with pytest.raises(ValueError, match="negative"):
        await dlq.purge(older_than=timedelta(seconds=-1))
    with pytest.raises(ValueError, match="allowed"):
        await dlq.purge(status="gone")
    assert len(await ids(dlq)) == 4


async def test_clear_all(dlq: DeadLetterQueue, clock: FakeClock) -> None:
    await _closed_and_open(dlq, clock)
    assert await dlq.clear_all() == 4
    assert await ids(dlq) == []
    assert await dlq.get_task("pend") is None
    stats = await dlq.get_statistics()
    assert stats["queue_size"] == 0
    assert stats["total_stored"] == 0
    assert stats["lifetime_stats"]["purged"] == 4
    assert await dlq.clear_all() == 0
    clock.advance(timedelta(days=1))
    assert await RetryProcessor(dlq).drain() == 0


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
