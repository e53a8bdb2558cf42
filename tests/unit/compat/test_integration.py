"""The original's DLQIntegration through the compat names: strategies, retry policy
choice, execute_with_dlq's result dict and AdapterError, statistics, and
create_dlq_integration."""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest

from mahavishnu_dlq.compat import (
    AdapterError,
    DeadLetterQueue,
    DLQIntegration,
    DLQIntegrationStrategy,
    ErrorCategory,
    RetryPolicy,
    create_dlq_integration,
)

pytestmark = pytest.mark.anyio

AUTOMATIC = DLQIntegrationStrategy.AUTOMATIC
SELECTIVE = DLQIntegrationStrategy.SELECTIVE
MANUAL = DLQIntegrationStrategy.MANUAL
DISABLED = DLQIntegrationStrategy.DISABLED


class App:
    """A host app: ``execute_workflow_parallel`` raises ``error`` or returns a result."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.calls: list[dict[str, Any]] = []
        self.config = SimpleNamespace(dlq_default_max_retries=4)

    async def execute_workflow_parallel(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(kwargs)
        if self.error is not None:
            raise self.error
        return {"status": "completed", "workflow_id": "done"}


@pytest.fixture
async def dlq() -> AsyncIterator[DeadLetterQueue]:
    queue = DeadLetterQueue(max_size=10)
    try:
        yield queue
    finally:
        await queue.shutdown()


async def test_strategy_defaults_to_automatic_and_can_be_set(dlq: DeadLetterQueue) -> None:
    integration = DLQIntegration(App(), dlq)
    assert integration.get_strategy() is AUTOMATIC
    integration.set_strategy(SELECTIVE)
    assert integration.get_strategy() is SELECTIVE


@pytest.mark.parametrize(
    ("strategy", "category", "expected"),
    [
        (AUTOMATIC, ErrorCategory.PERMANENT, True),
        (MANUAL, ErrorCategory.TRANSIENT, False),
        (DISABLED, ErrorCategory.TRANSIENT, False),
        (SELECTIVE, ErrorCategory.TRANSIENT, True),
        (SELECTIVE, ErrorCategory.NETWORK, True),
        (SELECTIVE, ErrorCategory.RESOURCE, True),
        (SELECTIVE, ErrorCategory.PERMISSION, False),
        (SELECTIVE, ErrorCategory.VALIDATION, False),
        (SELECTIVE, ErrorCategory.PERMANENT, False),
    ],
)
async def test_should_enqueue(
    dlq: DeadLetterQueue,
    strategy: DLQIntegrationStrategy,
    category: ErrorCategory,
    expected: bool,
) -> None:
    integration = DLQIntegration(App(), dlq)
    integration.set_strategy(strategy)
    assert await integration.should_enqueue(RuntimeError("x"), category) is expected


async def test_should_enqueue_classifies_when_no_category_is_given(dlq: DeadLetterQueue) -> None:
    integration = DLQIntegration(App(), dlq)
    integration.set_strategy(SELECTIVE)
    assert await integration.should_enqueue(ConnectionError("connection reset")) is True
    assert await integration.should_enqueue(PermissionError("forbidden")) is False


@pytest.mark.parametrize(
    ("category", "policy"),
    [
        (ErrorCategory.TRANSIENT, RetryPolicy.EXPONENTIAL),
        (ErrorCategory.NETWORK, RetryPolicy.EXPONENTIAL),
        (ErrorCategory.RESOURCE, RetryPolicy.LINEAR),
        (ErrorCategory.PERMISSION, RetryPolicy.NEVER),
        (ErrorCategory.VALIDATION, RetryPolicy.NEVER),
        (ErrorCategory.PERMANENT, RetryPolicy.NEVER),
    ],
)
async def test_determine_retry_policy(
    dlq: DeadLetterQueue, category: ErrorCategory, policy: RetryPolicy
) -> None:
    integration = DLQIntegration(App(), dlq)
    assert await integration.determine_retry_policy(RuntimeError("x"), category) is policy


async def test_the_apps_error_recovery_manager_classifies(dlq: DeadLetterQueue) -> None:
    async def classify_error(error: Exception) -> ErrorCategory:
        return ErrorCategory.RESOURCE

    app = App()
    app.error_recovery_manager = SimpleNamespace(classify_error=classify_error)  # type: ignore[attr-defined]
    integration = DLQIntegration(app, dlq)
    assert await integration.determine_retry_policy(RuntimeError("x")) is RetryPolicy.LINEAR


async def test_execute_with_dlq_returns_the_workflows_result(dlq: DeadLetterQueue) -> None:
    app = App()
    integration = DLQIntegration(app, dlq)
    result = await integration.execute_with_dlq({"id": "wf-1"}, "llamaindex", ["/r"], "u1")
    assert result == {"status": "completed", "workflow_id": "done"}
    assert app.calls == [
        {"task": {"id": "wf-1"}, "adapter_name": "llamaindex", "repos": ["/r"], "user_id": "u1"}
    ]
    assert (await integration.get_statistics())["workflows_executed"] == 1


async def test_an_enqueued_failure_is_returned_as_a_dict(dlq: DeadLetterQueue) -> None:
    integration = DLQIntegration(App(ConnectionError("connection reset")), dlq)
    result = await integration.execute_with_dlq({"id": "wf-1", "type": "sweep"}, "llamaindex")
    assert result == {
        "workflow_id": "wf-1",
        "status": "failed",
        "error": "connection reset",
        "error_type": "ConnectionError",
        "dlq_enqueued": True,
        "dlq_task_id": "wf-1",
        "retry_policy": "exponential",
        "max_retries": 4,  # the app's dlq_default_max_retries
    }
    task = await dlq.get_task("wf-1")
    assert task is not None
    assert task.metadata["enqueued_by"] == "automatic"
    assert task.metadata["original_error_type"] == "ConnectionError"
    stats = await integration.get_statistics()
    assert (stats["workflows_failed"], stats["auto_enqueued"], stats["enqueue_rate"]) == (
        1,
        1,
        100.0,
    )


async def test_a_generated_workflow_id(dlq: DeadLetterQueue) -> None:
    integration = DLQIntegration(App(ConnectionError("reset")), dlq)
    result = await integration.execute_with_dlq({"type": "sweep"}, "llamaindex")
    assert result["workflow_id"].startswith("wf_")
    assert result["workflow_id"].endswith("_sweep")
    assert await dlq.get_task(result["workflow_id"]) is not None


async def test_a_skipped_failure_raises_adapter_error(dlq: DeadLetterQueue) -> None:
    error = PermissionError("forbidden")
    integration = DLQIntegration(App(error), dlq)
    integration.set_strategy(SELECTIVE)
    with pytest.raises(AdapterError, match="not enqueued in DLQ: forbidden") as caught:
        await integration.execute_with_dlq({"id": "wf-1"}, "llamaindex")
    assert caught.value.__cause__ is error
    assert caught.value.details["workflow_id"] == "wf-1"
    assert caught.value.details["adapter"] == "llamaindex"
    assert caught.value.details["dlq_reason"] == "skipped_by_policy"
    stats = await integration.get_statistics()
    assert (stats["skipped_permission"], stats["skipped_by_strategy"]) == (1, 1)
    assert await dlq.get_task("wf-1") is None


async def test_enqueue_failed_workflow_is_none_when_the_queue_is_full() -> None:
    dlq = DeadLetterQueue(max_size=1)
    integration = DLQIntegration(App(), dlq)
    assert await integration.enqueue_failed_workflow("a", {}, [], ConnectionError("x")) is not None
    assert await integration.enqueue_failed_workflow("b", {}, [], ConnectionError("x")) is None


async def test_manual_strategy_skips_as_the_original(dlq: DeadLetterQueue) -> None:
    integration = DLQIntegration(App(), dlq)
    integration.set_strategy(MANUAL)
    assert await integration.enqueue_failed_workflow("a", {}, [], RuntimeError("boom")) is None
    stats = await integration.get_statistics()
    assert (stats["skipped_permanent"], stats["skipped_by_strategy"]) == (1, 1)


async def test_explicit_arguments_win(dlq: DeadLetterQueue) -> None:
    integration = DLQIntegration(App(), dlq)
    task = await integration.enqueue_failed_workflow(
        "a", {"x": 1}, ["/r"], ConnectionError("x"), RetryPolicy.LINEAR, 7, {"who": "me"}
    )
    assert task is not None
    assert (task.retry_policy, task.max_retries, task.metadata["who"]) == (
        RetryPolicy.LINEAR,
        7,
        "me",
    )


async def test_reset_statistics(dlq: DeadLetterQueue) -> None:
    integration = DLQIntegration(App(ConnectionError("x")), dlq)
    await integration.execute_with_dlq({"id": "a"}, "llamaindex")
    await integration.reset_statistics()
    stats = await integration.get_statistics()
    assert stats["strategy"] == "automatic"
    assert all(v == 0 for k, v in stats.items() if k != "strategy")
    assert set(stats) >= {
        "workflows_executed",
        "workflows_failed",
        "auto_enqueued",
        "manually_enqueued",
        "skipped_permanent",
        "skipped_permission",
        "enqueue_rate",
    }


async def test_create_dlq_integration_creates_the_queue() -> None:
    app = App()
    app.config = SimpleNamespace(
        dlq=SimpleNamespace(max_size=123, fail_on_opensearch_unavailable=False),
        dlq_integration_strategy="selective",
    )
    app.opensearch_integration = None  # type: ignore[attr-defined]
    app.observability = None  # type: ignore[attr-defined]
    app.dlq = None  # type: ignore[attr-defined]
    integration = await create_dlq_integration(app)
    assert isinstance(app.dlq, DeadLetterQueue)  # type: ignore[attr-defined]
    assert app.dlq.max_size == 123  # type: ignore[attr-defined]
    assert integration.dlq is app.dlq  # type: ignore[attr-defined]
    assert integration.get_strategy() is SELECTIVE


async def test_create_dlq_integration_keeps_an_existing_queue(dlq: DeadLetterQueue) -> None:
    app = App()
    app.config = SimpleNamespace(dlq_integration_strategy="bogus")
    app.dlq = dlq  # type: ignore[attr-defined]
    integration = await create_dlq_integration(app)
    assert integration.dlq is dlq
    assert integration.get_strategy() is AUTOMATIC
