"""Wrapping workflows: execute_with_dlq, @dlq.workflow, guard, and DLQIntegration strategies.

The rule under test everywhere: success returns the workflow's own result and
stores nothing; a failure is stored and the *original* exception object is
re-raised, marked with ``dlq_task_id`` / ``dlq_error`` and a note — even when the
DLQ cannot store it. Control-flow exceptions (cancellation, KeyboardInterrupt)
pass through untouched.
"""

from __future__ import annotations

import random
import threading
from typing import Any

import anyio
import pytest

from mahavishnu_dlq.errors import (
    InvalidPayloadError,
    PayloadTooLargeError,
    QueueFullError,
    StoreUnavailableError,
)
from mahavishnu_dlq.integration import DLQIntegration
from mahavishnu_dlq.models import (
    DeadLetterStatus,
    DLQIntegrationStrategy,
    ErrorCategory,
    FailedTask,
    RetryPolicy,
    TaskFilter,
)
from mahavishnu_dlq.policy import PolicyBook, PolicyOverride
from mahavishnu_dlq.processor import RetryProcessor
from mahavishnu_dlq.queue import DeadLetterQueue
from mahavishnu_dlq.storage import MemoryStore
from mahavishnu_dlq.storage.base import Mutation
from mahavishnu_dlq.testing import FakeClock

pytestmark = pytest.mark.anyio

AUTOMATIC = DLQIntegrationStrategy.AUTOMATIC
SELECTIVE = DLQIntegrationStrategy.SELECTIVE
MANUAL = DLQIntegrationStrategy.MANUAL
DISABLED = DLQIntegrationStrategy.DISABLED
TASK = {"order": 42, "items": ["a", "b"]}


@pytest.fixture
def dlq() -> DeadLetterQueue:
    return DeadLetterQueue(clock=FakeClock(), worker_id="main", rng=random.Random(3))


async def all_tasks(dlq: DeadLetterQueue) -> list[FailedTask]:
    return list(await dlq.store.query(TaskFilter(), limit=1000))


class Unstorable(MemoryStore):
    """A store that is down: every write fails."""

    async def mutate(self, task_id: str, fn: Mutation) -> FailedTask:
        raise StoreUnavailableError("memory", "switched off by the test")


def notes(exc: BaseException) -> list[str]:
    return list(getattr(exc, "__notes__", []))


# -- execute_with_dlq -------------------------------------------------------------------
# The async workflows given to ``dlq.execute_with_dlq`` return ``Any``: with a precise
# return type mypy infers ``Never`` from that method's ``Awaitable[R] | R`` union
# (DLQIntegration.execute_with_dlq has overloads for it; the queue method has not yet).


async def test_success_returns_the_result_itself_and_stores_nothing(
    dlq: DeadLetterQueue,
) -> None:
    result = {"rows": [1, 2, 3]}
    seen: list[tuple[Any, Any]] = []

    async def workflow(task: dict[str, Any], repos: list[str]) -> Any:
        seen.append((task, repos))
        return result

    assert await dlq.execute_with_dlq(workflow, TASK, ("r1", "r2")) is result
    assert seen == [(TASK, ["r1", "r2"])]
    assert await dlq.store.count() == 0
    assert dlq.lifetime["enqueued_total"] == 0


async def test_sync_workflow_runs_in_a_worker_thread(dlq: DeadLetterQueue) -> None:
    result = object()
    threads: list[int] = []

    def workflow(task: dict[str, Any], repos: list[str]) -> object:
        threads.append(threading.get_ident())
        assert repos == []
        return result

    assert await dlq.execute_with_dlq(workflow, TASK) is result
    assert threads
    assert threads[0] != threading.get_ident()
    assert await dlq.store.count() == 0


async def test_failure_reraises_the_original_exception_marked_and_stored(
    dlq: DeadLetterQueue,
) -> None:
    error = ConnectionError("connection refused by db-1")

    async def workflow(task: dict[str, Any], repos: list[str]) -> Any:
        raise error

    with pytest.raises(ConnectionError) as caught:
        await dlq.execute_with_dlq(
            workflow,
            TASK,
            ["repo"],
            task_id="order-42",
            workflow="orders",
            metadata={"user": "ops"},
        )
    assert caught.value is error
    assert error.dlq_task_id == "order-42"  # type: ignore[attr-defined]
    assert error.dlq_error is None  # type: ignore[attr-defined]
    assert any("order-42" in note and "dead-letter queue" in note for note in notes(error))

    record = await dlq.get_task("order-42")
    assert record is not None
    assert record.workflow == "orders"
    assert (record.task, record.repos) == (TASK, ["repo"])
    assert (record.error, record.error_type) == ("connection refused by db-1", "ConnectionError")
    assert record.error_category is ErrorCategory.NETWORK
    assert record.retry_policy is RetryPolicy.EXPONENTIAL
    assert record.status is DeadLetterStatus.PENDING
    assert record.metadata["user"] == "ops"
    assert record.traceback is not None
    assert "connection refused by db-1" in record.traceback


async def test_failure_without_task_id_gets_a_generated_one(dlq: DeadLetterQueue) -> None:
    def workflow(task: dict[str, Any], repos: list[str]) -> None:
        raise ValueError("bad order")

    with pytest.raises(ValueError, match="bad order") as caught:
        await dlq.execute_with_dlq(workflow, TASK)  # sync: run in a thread
    task_id = caught.value.dlq_task_id  # type: ignore[attr-defined]
    assert isinstance(task_id, str)
    assert len(task_id) == 32
    [record] = await all_tasks(dlq)
    assert record.task_id == task_id
    assert record.workflow == ""
    assert record.error_type == "ValueError"
    assert record.status is DeadLetterStatus.PENDING
    assert record.next_retry_at is None  # validation errors wait for an operator


async def test_policy_and_retries_can_be_chosen_per_call(dlq: DeadLetterQueue) -> None:
    async def workflow(task: dict[str, Any], repos: list[str]) -> Any:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await dlq.execute_with_dlq(
            workflow, TASK, task_id="t", retry_policy="immediate", max_retries=5
        )
    record = await dlq.get_task("t")
    assert record is not None
    assert (record.retry_policy, record.max_retries) == (RetryPolicy.IMMEDIATE, 5)
    assert record.next_retry_at == dlq.clock.now()


async def _fill(dlq: DeadLetterQueue) -> None:
    await dlq.enqueue("occupant", {}, [], "earlier failure")


@pytest.mark.parametrize(
    ("options", "task", "dlq_error"),
    [
        ({"max_size": 1}, TASK, QueueFullError),
        ({"max_payload_bytes": 64}, {"blob": "x" * 100}, PayloadTooLargeError),
        ({}, {"not json": object()}, InvalidPayloadError),
        ({"store": "down"}, TASK, StoreUnavailableError),
    ],
    ids=["queue-full", "too-large", "not-json", "store-down"],
)
async def test_when_the_dlq_cannot_store_the_original_failure_still_propagates(
    options: dict[str, Any], task: dict[str, Any], dlq_error: type[Exception]
) -> None:
    options = dict(options)
    if options.pop("store", None) == "down":
        options["store"] = Unstorable()
    dlq = DeadLetterQueue(**options)
    if dlq.max_size == 1:
        await _fill(dlq)
    before = 1 if dlq.max_size == 1 else 0
    error = KeyError("customer 17")

    async def workflow(task: dict[str, Any], repos: list[str]) -> Any:
        raise error

    with pytest.raises(KeyError) as caught:
        await dlq.execute_with_dlq(workflow, task, task_id="t")
    assert caught.value is error
    assert error.dlq_task_id is None  # type: ignore[attr-defined]
    assert isinstance(error.dlq_error, dlq_error)  # type: ignore[attr-defined]
    assert any("could not store" in note for note in notes(error))
    if not isinstance(dlq.store, Unstorable):
        assert await dlq.get_task("t") is None
        assert await dlq.store.count() == before


class Abort(BaseException):
    """A control-flow exception that is not a workflow failure."""


@pytest.mark.parametrize("kind", [KeyboardInterrupt, Abort])
async def test_base_exceptions_are_not_captured(
    dlq: DeadLetterQueue, kind: type[BaseException]
) -> None:
    error = kind()

    async def workflow(task: dict[str, Any], repos: list[str]) -> Any:
        raise error

    with pytest.raises(type(error)) as caught:
        await dlq.execute_with_dlq(workflow, TASK, task_id="t")
    assert caught.value is error
    assert not hasattr(error, "dlq_task_id")
    assert await dlq.store.count() == 0


async def test_cancellation_is_not_captured(dlq: DeadLetterQueue) -> None:
    started = anyio.Event()

    async def workflow(task: dict[str, Any], repos: list[str]) -> Any:
        started.set()
        await anyio.Event().wait()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(dlq.execute_with_dlq, workflow, TASK)
            await started.wait()
            group.cancel_scope.cancel()
    assert group.cancel_scope.cancel_called
    assert await dlq.store.count() == 0


async def test_the_same_task_id_failing_again_updates_one_record(dlq: DeadLetterQueue) -> None:
    async def workflow(task: dict[str, Any], repos: list[str]) -> Any:
        raise ConnectionError(f"attempt {task['n']}")

    for n in (1, 2):
        with pytest.raises(ConnectionError):
            await dlq.execute_with_dlq(workflow, {"n": n}, task_id="same")
    [record] = await all_tasks(dlq)
    assert (record.error, record.last_error) == ("attempt 1", "attempt 2")
    assert record.task == {"n": 2}


# -- @dlq.workflow ----------------------------------------------------------------------


async def test_workflow_decorator_registers_the_original_function(dlq: DeadLetterQueue) -> None:
    async def sync_orders(task: dict[str, Any], repos: list[str]) -> str:
        """Copy orders between systems."""
        return f"synced {task['order']}"

    wrapped = dlq.workflow("orders")(sync_orders)
    assert dlq.handlers["orders"] is sync_orders
    assert wrapped is not sync_orders
    assert wrapped.__name__ == "sync_orders"
    assert wrapped.__doc__ == "Copy orders between systems."
    assert wrapped.__wrapped__ is sync_orders  # type: ignore[attr-defined]
    assert wrapped.workflow_name == "orders"  # type: ignore[attr-defined]
    assert await wrapped(TASK, ["repo"]) == "synced 42"
    assert await dlq.store.count() == 0


async def test_workflow_decorator_stores_failures_under_its_name(dlq: DeadLetterQueue) -> None:
    calls: list[tuple[dict[str, Any], list[str]]] = []

    @dlq.workflow("billing")
    def charge(task: dict[str, Any], repos: list[str]) -> str:
        calls.append((task, repos))
        if len(calls) < 3:
            raise TimeoutError("payment gateway timeout")
        return "charged"

    with pytest.raises(TimeoutError) as caught:
        await charge(TASK, ["repo"], task_id="bill-1", metadata={"tenant": "acme"})
    assert caught.value.dlq_task_id == "bill-1"  # type: ignore[attr-defined]
    record = await dlq.get_task("bill-1")
    assert record is not None
    assert (record.workflow, record.metadata["tenant"]) == ("billing", "acme")

    # a retry calls the original function, not the wrapper: a failed retry is
    # recorded on the same task instead of being enqueued again as a new one
    failed = await dlq.retry_task("bill-1")
    assert failed["success"] is False
    assert await dlq.store.count() == 1
    succeeded = await dlq.retry_task("bill-1")
    assert succeeded["success"] is True
    assert succeeded["result"] == "charged"
    assert calls == [(TASK, ["repo"])] * 3
    record = await dlq.get_task("bill-1")
    assert record is not None
    assert record.status is DeadLetterStatus.COMPLETED
    assert await dlq.store.count() == 1


async def test_decorated_workflow_is_retried_by_the_processor(dlq: DeadLetterQueue) -> None:
    attempts: list[int] = []

    @dlq.workflow("flaky")
    async def flaky(task: dict[str, Any], repos: list[str]) -> None:
        attempts.append(task["n"])
        if len(attempts) == 1:
            raise RuntimeError("service temporarily unavailable")

    with pytest.raises(RuntimeError):
        await flaky({"n": 1}, task_id="f")
    dlq.clock.advance(60)  # type: ignore[attr-defined]  # exponential: first retry after 1 min
    assert await RetryProcessor(dlq).drain() == 1
    record = await dlq.get_task("f")
    assert record is not None
    assert record.status is DeadLetterStatus.COMPLETED
    assert attempts == [1, 1]


# -- guard ------------------------------------------------------------------------------


async def test_guard_stores_a_failure_and_reraises_it(dlq: DeadLetterQueue) -> None:
    error = PermissionError("access denied to bucket")
    with pytest.raises(PermissionError) as caught:
        async with dlq.guard("g-1", TASK, ["repo"], workflow="export"):
            raise error
    assert caught.value is error
    assert error.dlq_task_id == "g-1"  # type: ignore[attr-defined]
    record = await dlq.get_task("g-1")
    assert record is not None
    assert (record.workflow, record.task, record.repos) == ("export", TASK, ["repo"])
    assert record.error_category is ErrorCategory.PERMISSION


async def test_guard_success_stores_nothing(dlq: DeadLetterQueue) -> None:
    done = []
    async with dlq.guard("g-1", TASK):
        done.append(True)
    assert done == [True]
    assert await dlq.store.count() == 0


async def test_guard_without_task_id_generates_one(dlq: DeadLetterQueue) -> None:
    with pytest.raises(RuntimeError) as caught:
        async with dlq.guard():
            raise RuntimeError("boom")
    [record] = await all_tasks(dlq)
    assert record.task_id == caught.value.dlq_task_id  # type: ignore[attr-defined]
    assert record.task == {}


async def test_guard_does_not_capture_base_exceptions(dlq: DeadLetterQueue) -> None:
    with pytest.raises(Abort):
        async with dlq.guard("g", TASK):
            raise Abort
    assert await dlq.store.count() == 0


# -- DLQIntegration ---------------------------------------------------------------------

CATEGORY_ERRORS: dict[ErrorCategory, tuple[type[Exception], str]] = {
    ErrorCategory.TRANSIENT: (RuntimeError, "service temporarily unavailable"),
    ErrorCategory.NETWORK: (ConnectionError, "connection reset"),
    ErrorCategory.RESOURCE: (MemoryError, "out of memory"),
    ErrorCategory.PERMISSION: (PermissionError, "forbidden"),
    ErrorCategory.VALIDATION: (ValueError, "invalid order"),
    ErrorCategory.PERMANENT: (RuntimeError, "boom"),
}


def error_of(category: ErrorCategory) -> Exception:
    """A fresh exception the default classifier puts in ``category``."""
    cls, message = CATEGORY_ERRORS[category]
    return cls(message)


RETRYABLE = {ErrorCategory.TRANSIENT, ErrorCategory.NETWORK, ErrorCategory.RESOURCE}


@pytest.mark.parametrize("category", list(ErrorCategory))
@pytest.mark.parametrize("strategy", list(DLQIntegrationStrategy))
def test_should_enqueue_per_strategy_and_category(
    strategy: DLQIntegrationStrategy, category: ErrorCategory
) -> None:
    integration = DLQIntegration(DeadLetterQueue(), strategy)
    expected = {
        AUTOMATIC: True,
        SELECTIVE: category in RETRYABLE,
        MANUAL: False,
        DISABLED: False,
    }[strategy]
    assert integration.should_enqueue(category) is expected
    assert integration.should_enqueue(error_of(category)) is expected  # classified


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
def test_determine_retry_policy_per_category(category: ErrorCategory, policy: RetryPolicy) -> None:
    integration = DLQIntegration(DeadLetterQueue())
    assert integration.determine_retry_policy(category) is policy
    assert integration.determine_retry_policy(error_of(category)) is policy
    assert integration.determine_retry_policy(str(error_of(category))) is policy


def test_determine_retry_policy_honours_workflow_overrides() -> None:
    book = PolicyBook(by_workflow={"nightly": PolicyOverride(policy=RetryPolicy.LINEAR)})
    integration = DLQIntegration(DeadLetterQueue(policies=book))
    assert integration.determine_retry_policy(ErrorCategory.PERMANENT, "nightly") is (
        RetryPolicy.LINEAR
    )
    assert integration.determine_retry_policy(ErrorCategory.PERMANENT) is RetryPolicy.NEVER


def test_strategy_may_be_given_as_a_string() -> None:
    assert DLQIntegration(DeadLetterQueue(), "selective").strategy is SELECTIVE
    with pytest.raises(ValueError, match="sometimes"):
        DLQIntegration(DeadLetterQueue(), "sometimes")


def failing(error: BaseException) -> Any:
    async def workflow(task: dict[str, Any], repos: list[str]) -> None:
        raise error

    return workflow


async def run_all(integration: DLQIntegration, errors: list[BaseException]) -> None:
    for i, error in enumerate(errors):
        with pytest.raises(type(error)) as caught:
            await integration.execute_with_dlq(failing(error), TASK, task_id=f"t{i}")
        assert caught.value is error


async def test_automatic_enqueues_every_failure(dlq: DeadLetterQueue) -> None:
    integration = DLQIntegration(dlq)
    result = ["done"]

    async def succeeds(task: dict[str, Any], repos: list[str]) -> list[str]:
        return result

    assert await integration.execute_with_dlq(succeeds, TASK) is result
    errors: list[BaseException] = [error_of(c) for c in ErrorCategory]
    await run_all(integration, errors)
    stats = integration.get_statistics()
    assert stats["strategy"] == "automatic"
    assert stats["workflows_executed"] == 7
    assert stats["workflows_failed"] == 6
    assert stats["auto_enqueued"] == 6
    assert stats["enqueue_rate"] == 100.0
    assert (stats["skipped_permanent"], stats["skipped_permission"]) == (0, 0)
    assert await dlq.store.count() == 6
    assert [e.dlq_task_id for e in errors] == [f"t{i}" for i in range(6)]  # type: ignore[attr-defined]


async def test_selective_enqueues_only_retryable_failures(dlq: DeadLetterQueue) -> None:
    integration = DLQIntegration(dlq, SELECTIVE)
    errors: list[BaseException] = [
        error_of(ErrorCategory.NETWORK),
        error_of(ErrorCategory.PERMISSION),
        error_of(ErrorCategory.PERMANENT),
    ]
    await run_all(integration, errors)
    stats = integration.get_statistics()
    assert stats["workflows_executed"] == stats["workflows_failed"] == 3
    assert stats["auto_enqueued"] == 1
    assert stats["skipped_permission"] == 1
    assert stats["skipped_permanent"] == 1
    assert stats["enqueue_rate"] == 33.33
    assert [t.task_id for t in await all_tasks(dlq)] == ["t0"]
    assert errors[0].dlq_task_id == "t0"  # type: ignore[attr-defined]
    assert errors[1].dlq_task_id is None  # type: ignore[attr-defined]


async def test_sync_workflow_through_integration(dlq: DeadLetterQueue) -> None:
    integration = DLQIntegration(dlq)
    threads: list[int] = []

    def workflow(task: dict[str, Any], repos: list[str]) -> int:
        threads.append(threading.get_ident())
        return len(repos)

    assert await integration.execute_with_dlq(workflow, TASK, ["a", "b"]) == 2
    assert threads[0] != threading.get_ident()


@pytest.mark.parametrize("strategy", [MANUAL, DISABLED])
async def test_manual_and_disabled_never_enqueue_automatically(
    dlq: DeadLetterQueue, strategy: DLQIntegrationStrategy
) -> None:
    integration = DLQIntegration(dlq, strategy)
    error = error_of(ErrorCategory.NETWORK)
    await run_all(integration, [error])
    stats = integration.get_statistics()
    assert stats["workflows_failed"] == 1
    assert stats["auto_enqueued"] == 0
    assert stats["enqueue_rate"] == 0.0
    assert error.dlq_task_id is None  # type: ignore[attr-defined]
    assert await dlq.store.count() == 0


async def test_manual_enqueue_of_a_failed_workflow(dlq: DeadLetterQueue) -> None:
    integration = DLQIntegration(dlq, MANUAL)
    record = await integration.enqueue_failed_workflow(
        "m-1", TASK, ["repo"], ConnectionError("reset"), workflow="orders", max_retries=1
    )
    assert record is not None
    assert (record.task_id, record.workflow, record.max_retries) == ("m-1", "orders", 1)
    assert await dlq.get_task("m-1") == record
    assert integration.get_statistics()["manually_enqueued"] == 1


async def test_disabled_enqueue_of_a_failed_workflow_is_none(dlq: DeadLetterQueue) -> None:
    integration = DLQIntegration(dlq, DISABLED)
    assert await integration.enqueue_failed_workflow("m-1", TASK, [], "error") is None
    assert await dlq.store.count() == 0
    assert integration.get_statistics()["manually_enqueued"] == 0


async def test_integration_counts_failures_it_could_not_store() -> None:
    dlq = DeadLetterQueue(max_size=1)
    await _fill(dlq)
    integration = DLQIntegration(dlq)
    error = ConnectionError("reset")
    await run_all(integration, [error])
    assert isinstance(error.dlq_error, QueueFullError)  # type: ignore[attr-defined]
    stats = integration.get_statistics()
    assert (stats["auto_enqueued"], stats["not_stored"]) == (0, 1)


async def test_reset_statistics(dlq: DeadLetterQueue) -> None:
    integration = DLQIntegration(dlq)
    await run_all(integration, [RuntimeError("boom")])
    await integration.enqueue_failed_workflow("m", TASK, [], "error")
    assert integration.get_statistics()["workflows_executed"] == 1
    integration.reset_statistics()
    stats = integration.get_statistics()
    counters = {k: v for k, v in stats.items() if k not in ("strategy", "enqueue_rate")}
    assert set(counters) >= {
        "workflows_executed",
        "workflows_failed",
        "auto_enqueued",
        "manually_enqueued",
        "skipped_permanent",
        "skipped_permission",
    }
    assert all(value == 0 for value in counters.values())
    assert stats["enqueue_rate"] == 0.0
    assert await dlq.store.count() == 2  # resetting counters touches no records


async def test_nested_wrappers_store_a_failure_once(dlq: DeadLetterQueue) -> None:
    async def boom(task: dict[str, Any], repos: list[str]) -> Any:
        raise ConnectionError("connection refused")

    with pytest.raises(ConnectionError) as caught:
        async with dlq.guard(None, {"outer": True}):
            await dlq.execute_with_dlq(boom, {"inner": True}, task_id="inner-id")
    assert caught.value.dlq_task_id == "inner-id"  # type: ignore[attr-defined]
    assert len(caught.value.__notes__) == 1  # type: ignore[attr-defined]
    assert (await dlq.get_statistics())["total_stored"] == 1


async def test_a_disabled_dlq_stores_nothing_and_reraises(dlq: DeadLetterQueue) -> None:
    dlq.enabled = False

    async def boom(task: dict[str, Any], repos: list[str]) -> Any:
        raise ConnectionError("connection refused")

    with pytest.raises(ConnectionError) as caught:
        await dlq.execute_with_dlq(boom, {}, task_id="t1")
    assert caught.value.dlq_task_id is None  # type: ignore[attr-defined]
    assert await dlq.get_task("t1") is None
