"""DLQIntegration's counters and explicit enqueues per strategy (issue 16, point 2).

``auto_enqueued`` counts every failure stored, explicit ones too (as the original);
``skipped_by_strategy`` every failure kept out, and ``skipped_permission`` /
``skipped_permanent`` split those by category. Under SELECTIVE and MANUAL an explicit
enqueue of a permission or permanent failure is skipped, as the original did, unless
``enqueue_unretryable=True``. An ``async def should_enqueue`` override is awaited.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from mahavishnu_dlq.errors import QueueFullError, TaskNotFoundError
from mahavishnu_dlq.integration import DLQIntegration
from mahavishnu_dlq.models import DLQIntegrationStrategy, ErrorCategory
from mahavishnu_dlq.queue import DeadLetterQueue
from mahavishnu_dlq.testing import FakeClock

pytestmark = pytest.mark.anyio

SELECTIVE = DLQIntegrationStrategy.SELECTIVE
MANUAL = DLQIntegrationStrategy.MANUAL
TASK = {"order": 7}


@pytest.fixture
def dlq() -> DeadLetterQueue:
    return DeadLetterQueue(clock=FakeClock(), worker_id="main", rng=random.Random(5))


def failing(error: BaseException) -> Any:
    async def workflow(task: dict[str, Any], repos: list[str]) -> None:
        raise error

    return workflow


async def test_explicit_enqueue_counts_as_auto_enqueued(dlq: DeadLetterQueue) -> None:
    integration = DLQIntegration(dlq)
    record = await integration.enqueue_failed_workflow("e-1", TASK, [], RuntimeError("boom"))
    assert record is not None
    stats = integration.get_statistics()
    assert (stats["auto_enqueued"], stats["manually_enqueued"]) == (1, 1)


@pytest.mark.parametrize("strategy", [SELECTIVE, MANUAL])
@pytest.mark.parametrize(
    ("error", "counter"),
    [
        (PermissionError("forbidden"), "skipped_permission"),
        (RuntimeError("boom"), "skipped_permanent"),
    ],
)
async def test_unretryable_explicit_enqueues_are_skipped(
    dlq: DeadLetterQueue, strategy: DLQIntegrationStrategy, error: Exception, counter: str
) -> None:
    integration = DLQIntegration(dlq, strategy)
    assert await integration.enqueue_failed_workflow("e-1", TASK, [], error) is None
    assert await dlq.get_task("e-1") is None
    stats = integration.get_statistics()
    assert stats[counter] == 1
    assert stats["skipped_by_strategy"] == 1
    assert stats["auto_enqueued"] == 0


@pytest.mark.parametrize("strategy", [SELECTIVE, MANUAL])
async def test_enqueue_unretryable_stores_them_anyway(
    dlq: DeadLetterQueue, strategy: DLQIntegrationStrategy
) -> None:
    integration = DLQIntegration(dlq, strategy, enqueue_unretryable=True)
    record = await integration.enqueue_failed_workflow(
        "e-1", TASK, [], PermissionError("forbidden")
    )
    assert record is not None
    assert record.error_category is ErrorCategory.PERMISSION
    assert integration.get_statistics()["skipped_by_strategy"] == 0


async def test_selective_explicit_enqueue_of_a_retryable_failure(dlq: DeadLetterQueue) -> None:
    integration = DLQIntegration(dlq, SELECTIVE)
    record = await integration.enqueue_failed_workflow("e-1", TASK, [], ConnectionError("reset"))
    assert record is not None
    assert integration.get_statistics()["auto_enqueued"] == 1


async def test_strategy_skips_in_the_wrapper_count_by_strategy_and_category(
    dlq: DeadLetterQueue,
) -> None:
    integration = DLQIntegration(dlq, MANUAL)
    for i, error in enumerate(
        [PermissionError("forbidden"), RuntimeError("boom"), ConnectionError("x")]
    ):
        with pytest.raises(type(error)):
            await integration.execute_with_dlq(failing(error), TASK, task_id=f"t{i}")
    stats = integration.get_statistics()
    assert stats["skipped_by_strategy"] == 3
    assert (stats["skipped_permission"], stats["skipped_permanent"]) == (1, 1)
    assert await dlq.count_tasks() == 0


async def test_an_async_should_enqueue_override_is_awaited(dlq: DeadLetterQueue) -> None:
    class Never(DLQIntegration):
        async def should_enqueue(self, error: Any) -> bool:  # type: ignore[override]
            return False

    integration = Never(dlq)
    error = ConnectionError("reset")
    with pytest.raises(ConnectionError):
        await integration.execute_with_dlq(failing(error), TASK, task_id="t")
    assert await dlq.get_task("t") is None
    assert error.dlq_task_id is None  # type: ignore[attr-defined]
    assert integration.get_statistics()["skipped_by_strategy"] == 1


async def test_queue_errors_are_value_errors_too() -> None:
    dlq = DeadLetterQueue(max_size=1)
    await dlq.enqueue("a", TASK, [], "boom")
    with pytest.raises(ValueError, match="full"):
        await dlq.enqueue("b", TASK, [], "boom")
    with pytest.raises(ValueError, match="no task"):
        await dlq.retry_task("missing")
    assert issubclass(QueueFullError, ValueError)
    assert issubclass(TaskNotFoundError, LookupError)
