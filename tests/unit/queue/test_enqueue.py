"""DeadLetterQueue.enqueue over MemoryStore: the record it builds, idempotent enqueues,
``max_size``, invalid input and NEVER tasks (how these tests run: ``conftest``)."""

from __future__ import annotations

import math
import os
import platform
import re
from datetime import datetime, timedelta, timezone
from typing import Any, cast

import pytest

from mahavishnu_dlq import DeadLetterQueue, RetryProcessor
from mahavishnu_dlq.errors import (
    InvalidPayloadError,
    PayloadTooLargeError,
    QueueFullError,
)
from mahavishnu_dlq.models import (
    ErrorCategory,
    RetryPolicy,
)
from mahavishnu_dlq.testing import FakeClock, FlakyHandler
from tests.unit.queue.conftest import (
    ARCHIVED,
    COMPLETED,
    EXHAUSTED,
    PENDING,
    RETRYING,
    T0,
    WORKER,
    ThrottledError,
    at,
    connection_error,
    fetch,
    ids,
    raised,
    succeed,
    value_error,
)

pytestmark = pytest.mark.anyio


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
