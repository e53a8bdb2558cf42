"""The original's DeadLetterQueue through the compat names: constructor, defaults,
answers and errors as the original's own tests check them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from anyio import wait_all_tasks_blocked

from mahavishnu_dlq.compat import (
    DeadLetterQueue,
    DeadLetterStatus,
    ErrorCategory,
    ExternalServiceError,
    FailedTask,
    QueueFullError,
    RetryPolicy,
    TaskNotFoundError,
)
from mahavishnu_dlq.errors import StoreUnavailableError

pytestmark = pytest.mark.anyio

TASK = {"type": "code_sweep"}
REPOS = ["/path/to/repo"]


@pytest.fixture
async def dlq() -> AsyncIterator[DeadLetterQueue]:
    queue = DeadLetterQueue(max_size=5)
    try:
        yield queue
    finally:
        await queue.shutdown()


async def test_enqueue_defaults_to_the_exponential_policy(dlq: DeadLetterQueue) -> None:
    task = await dlq.enqueue("wf_1", TASK, REPOS, "Connection timeout")
    assert isinstance(task, FailedTask)
    assert task.retry_policy is RetryPolicy.EXPONENTIAL
    assert task.max_retries == 3
    assert task.status is DeadLetterStatus.PENDING
    assert task.next_retry_at is not None
    assert (task.task, task.repos, task.error) == (TASK, REPOS, "Connection timeout")


async def test_enqueue_takes_the_original_keywords(dlq: DeadLetterQueue) -> None:
    task = await dlq.enqueue(
        task_id="wf_2",
        task=TASK,
        repos=REPOS,
        error="disk full",
        retry_policy=RetryPolicy.NEVER,
        max_retries=5,
        metadata={"k": "v"},
        error_category="resource",
    )
    assert (task.retry_policy, task.max_retries) == (RetryPolicy.NEVER, 5)
    assert task.next_retry_at is None
    assert task.error_category is ErrorCategory.RESOURCE
    assert task.metadata["k"] == "v"  # beside the native failure_context


async def test_a_full_queue_raises_value_error() -> None:
    dlq = DeadLetterQueue(max_size=1)
    await dlq.enqueue("a", TASK, REPOS, "boom")
    with pytest.raises(ValueError, match="full") as caught:
        await dlq.enqueue("b", TASK, REPOS, "boom")
    assert isinstance(caught.value, QueueFullError)


async def test_get_task_and_list_tasks(dlq: DeadLetterQueue) -> None:
    await dlq.enqueue("a", TASK, REPOS, "boom")
    await dlq.enqueue("b", TASK, REPOS, "boom")
    found = await dlq.get_task("a")
    assert found is not None
    assert found.task_id == "a"
    assert await dlq.get_task("missing") is None
    assert {t.task_id for t in await dlq.list_tasks()} == {"a", "b"}
    assert len(await dlq.list_tasks(limit=1)) == 1
    assert await dlq.list_tasks(status=DeadLetterStatus.EXHAUSTED) == []


async def test_archived_tasks_leave_the_queue(dlq: DeadLetterQueue) -> None:
    await dlq.enqueue("a", TASK, REPOS, "boom")
    assert await dlq.archive_task("a") is True
    assert await dlq.archive_task("missing") is False
    assert await dlq.get_task("a") is None
    assert await dlq.list_tasks() == []
    assert (await dlq.get_statistics())["lifetime_stats"]["archived"] == 1


async def test_retry_task_errors(dlq: DeadLetterQueue) -> None:
    with pytest.raises(ValueError, match="missing") as caught:
        await dlq.retry_task("missing")
    assert isinstance(caught.value, TaskNotFoundError)
    await dlq.enqueue("a", TASK, REPOS, "boom")
    with pytest.raises(RuntimeError, match="No retry callback configured"):
        await dlq.retry_task("a")


async def test_manual_retry_with_the_processor_callback(dlq: DeadLetterQueue) -> None:
    calls: list[tuple[dict[str, Any], list[str]]] = []

    async def callback(task: dict[str, Any], repos: list[str]) -> str:
        calls.append((task, repos))
        return "ok"

    await dlq.enqueue("a", TASK, REPOS, "boom")  # exponential: not due for a minute
    await dlq.start_retry_processor(callback, check_interval_seconds=30)  # returns None
    result = await dlq.retry_task("a")
    assert result["success"] is True
    assert (result["task_id"], result["result"]) == ("a", "ok")
    assert calls == [(TASK, REPOS)]
    assert await dlq.get_task("a") is None  # completed: gone from the queue
    with pytest.raises(ValueError, match="'a'"):
        await dlq.retry_task("a")
    stats = await dlq.get_statistics()
    assert stats["lifetime_stats"]["manually_retried"] == 1


async def test_the_processor_retries_due_tasks(dlq: DeadLetterQueue) -> None:
    done = anyio.Event()

    async def callback(task: dict[str, Any], repos: list[str]) -> None:
        done.set()

    await dlq.enqueue("a", TASK, REPOS, "boom", retry_policy=RetryPolicy.IMMEDIATE)
    await dlq.start_retry_processor(callback, check_interval_seconds=30)
    with anyio.fail_after(10):
        await done.wait()
    await wait_all_tasks_blocked()
    assert await dlq.get_task("a") is None
    stats = await dlq.get_statistics()
    assert stats["lifetime_stats"]["retry_success"] == 1
    assert stats["is_processor_running"] is True
    assert stats["retry_interval_seconds"] == 30
    await dlq.stop_retry_processor()
    stats = await dlq.get_statistics()
    assert (stats["is_processor_running"], stats["retry_interval_seconds"]) == (False, None)


async def test_statistics_have_the_original_keys(dlq: DeadLetterQueue) -> None:
    await dlq.enqueue("a", TASK, REPOS, "Connection timeout")
    stats = await dlq.get_statistics()
    assert stats["queue_size"] == 1
    assert stats["max_size"] == 5
    assert stats["utilization_percent"] == 20.0
    assert stats["status_breakdown"]["pending"] == 1
    assert stats["retry_policies"]["exponential"] == 1
    assert stats["lifetime_stats"]["enqueued_total"] == 1
    assert stats["is_processor_running"] is False
    assert stats["retry_interval_seconds"] is None


async def test_clear_all(dlq: DeadLetterQueue) -> None:
    await dlq.enqueue("a", TASK, REPOS, "boom")
    await dlq.enqueue("b", TASK, REPOS, "boom")
    assert await dlq.clear_all() == 2
    assert await dlq.list_tasks() == []


async def test_fail_closed_without_a_client_refuses_to_enqueue() -> None:
    dlq = DeadLetterQueue(fail_on_opensearch_unavailable=True)
    with pytest.raises(ExternalServiceError, match="no OpenSearch client"):
        await dlq.enqueue("a", TASK, REPOS, "boom")
    assert ExternalServiceError is StoreUnavailableError
    assert (await dlq.get_statistics())["queue_size"] == 0


async def test_an_object_that_is_not_a_client_means_memory() -> None:
    dlq = DeadLetterQueue(opensearch_client=object(), observability_manager=object())
    await dlq.enqueue("a", TASK, REPOS, "boom")
    assert (await dlq.get_statistics())["backend"] == "memory"
