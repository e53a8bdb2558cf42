"""BlockingDLQ: the queue driven from plain synchronous code, on asyncio and on trio.

These tests are sync on purpose (a Flask view or a script has no event loop);
each runs once per backend of the blocking portal. Cross-thread waits use
``threading.Event`` with a timeout as the safety net.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any, Literal

import anyio
import pytest

from mahavishnu_dlq import BlockingDLQ, DeadLetterQueue, DLQSettings
from mahavishnu_dlq.errors import QueueFullError, TaskNotFoundError
from mahavishnu_dlq.models import AttemptOutcome, DeadLetterStatus, TaskFilter

Backend = Literal["asyncio", "trio"]
TASK = {"invoice": 7}


@pytest.fixture(params=["asyncio", "trio"])
def backend(request: pytest.FixtureRequest) -> Backend:
    value: Backend = request.param
    return value


@pytest.fixture
def blocking(backend: Backend) -> Iterator[BlockingDLQ]:
    with BlockingDLQ(DeadLetterQueue(worker_id="sync-host"), backend=backend) as dlq:
        yield dlq


def test_success_returns_the_result_itself_and_stores_nothing(blocking: BlockingDLQ) -> None:
    result = {"total": 99}
    threads: list[int] = []

    def workflow(task: dict[str, Any], repos: list[str]) -> dict[str, Any]:
        threads.append(threading.get_ident())
        assert repos == ["r1"]
        return result

    assert blocking.execute_with_dlq(workflow, TASK, ["r1"]) is result
    assert threads == [threading.get_ident()]  # runs in the caller's thread
    assert blocking.get_statistics()["queue_size"] == 0


def test_failure_is_stored_and_the_original_reraised(blocking: BlockingDLQ) -> None:
    error = ConnectionError("connection refused")

    def workflow(task: dict[str, Any], repos: list[str]) -> None:
        assert repos == ["r1", "r2"]
        raise error

    with pytest.raises(ConnectionError) as caught:
        blocking.execute_with_dlq(
            workflow, TASK, (repo for repo in ["r1", "r2"]), task_id="inv-7", workflow="invoices"
        )
    assert caught.value is error
    assert error.dlq_task_id == "inv-7"  # type: ignore[attr-defined]
    assert error.dlq_error is None  # type: ignore[attr-defined]
    record = blocking.get_task("inv-7")
    assert record is not None
    assert (record.workflow, record.task, record.repos) == ("invoices", TASK, ["r1", "r2"])
    assert record.error == "connection refused"
    assert record.status is DeadLetterStatus.PENDING


def test_failure_the_dlq_cannot_store_still_propagates(backend: Backend) -> None:
    def workflow(task: dict[str, Any], repos: list[str]) -> None:
        raise KeyError("customer")

    with BlockingDLQ(DeadLetterQueue(max_size=1), backend=backend) as blocking:
        blocking.enqueue("occupant", {}, [], "earlier failure")
        with pytest.raises(KeyError) as caught:
            blocking.execute_with_dlq(workflow, TASK, task_id="t")
        assert caught.value.dlq_task_id is None  # type: ignore[attr-defined]
        assert isinstance(caught.value.dlq_error, QueueFullError)  # type: ignore[attr-defined]
        assert blocking.get_task("t") is None


def test_operator_actions(blocking: BlockingDLQ) -> None:
    handler_threads: list[int] = []

    def handler(task: dict[str, Any], repos: list[str]) -> str:
        handler_threads.append(threading.get_ident())
        return f"re-sent {task['n']}"

    blocking.dlq.register_handler("mail", handler)
    a = blocking.enqueue("a", {"n": 1}, ["r"], ConnectionError("reset"), workflow="mail")
    blocking.enqueue("b", {"n": 2}, None, "quota exceeded", workflow="mail")
    blocking.enqueue("c", {"n": 3}, None, ValueError("bad address"), workflow="other")

    assert blocking.get_task("a") == a
    assert blocking.get_task("nope") is None
    assert len(blocking.list_tasks()) == 3
    first = blocking.list_tasks("pending", limit=2)
    assert len(first) == 2
    assert first.cursor is not None
    rest = blocking.list_tasks("pending", limit=2, cursor=first.cursor)
    assert {t.task_id for t in [*first, *rest]} == {"a", "b", "c"}
    assert [t.task_id for t in blocking.list_tasks(workflow="other")] == ["c"]

    outcome = blocking.retry_task("a")
    assert outcome["success"] is True
    assert outcome["result"] == "re-sent 1"
    assert handler_threads
    assert handler_threads[0] != threading.get_ident()
    with pytest.raises(TaskNotFoundError):
        blocking.retry_task("nope")

    assert blocking.archive_task("b") is True
    assert blocking.archive_task("nope") is False
    report = blocking.replay(TaskFilter(workflow="other"), dry_run=True)
    assert (report.matched, report.replayed) == (1, 1)

    stats = blocking.get_statistics()
    assert stats["queue_size"] == 1
    assert stats["status_breakdown"]["completed"] == 1
    assert stats["status_breakdown"]["archived"] == 1
    assert stats["lifetime_stats"]["enqueued_total"] == 3
    assert stats["lifetime_stats"]["manually_retried"] == 1

    assert blocking.purge() == 2  # completed and archived
    assert blocking.get_task("a") is None
    assert blocking.purge(status="pending") == 1
    blocking.enqueue("d", {}, None, "error")
    assert blocking.clear_all() == 1
    assert blocking.get_statistics()["queue_size"] == 0


CALLS: list[tuple[str, Callable[[BlockingDLQ], object]]] = [
    ("get_task", lambda b: b.get_task("t")),
    ("list_tasks", lambda b: b.list_tasks()),
    ("enqueue", lambda b: b.enqueue("t", {}, None, "error")),
    ("retry_task", lambda b: b.retry_task("t")),
    ("archive_task", lambda b: b.archive_task("t")),
    ("purge", lambda b: b.purge()),
    ("clear_all", lambda b: b.clear_all()),
    ("get_statistics", lambda b: b.get_statistics()),
    ("replay", lambda b: b.replay()),
]


@pytest.mark.parametrize(("name", "call"), CALLS, ids=[name for name, _ in CALLS])
def test_using_it_before_start_or_after_stop_is_a_clear_error(
    backend: Backend, name: str, call: Callable[[BlockingDLQ], object]
) -> None:
    blocking = BlockingDLQ(DeadLetterQueue(), backend=backend)
    with pytest.raises(RuntimeError, match=r"not started.*with BlockingDLQ"):
        call(blocking)
    with blocking:
        blocking.enqueue("t", {}, None, "error")
        call(blocking)  # works while started
    with pytest.raises(RuntimeError, match="not started"):
        call(blocking)


def test_execute_before_start_does_not_run_the_workflow(backend: Backend) -> None:
    ran: list[bool] = []

    def workflow(task: dict[str, Any], repos: list[str]) -> None:
        ran.append(True)
        raise ConnectionError("reset")

    blocking = BlockingDLQ(DeadLetterQueue(), backend=backend)
    with pytest.raises(RuntimeError, match="not started"):
        blocking.execute_with_dlq(workflow, TASK)
    assert ran == []  # a workflow is never run where its failure could not be stored


def test_start_and_stop_are_idempotent_and_restartable(backend: Backend) -> None:
    dlq = DeadLetterQueue()
    blocking = BlockingDLQ(dlq, backend=backend)
    blocking.stop()  # never started: nothing to do
    blocking.start()
    portal = blocking.portal
    blocking.start()
    assert blocking.portal is portal
    blocking.enqueue("t", {}, None, "error")
    blocking.stop()
    blocking.stop()
    with blocking:  # the records live in the queue's store, not in the portal
        assert blocking.get_task("t") is not None


def test_the_queue_is_stopped_when_the_block_raises(backend: Backend) -> None:
    blocking = BlockingDLQ(DeadLetterQueue(), backend=backend)

    def enqueue_then_crash() -> None:
        blocking.enqueue("t", {}, None, "error")
        raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError), blocking:
        enqueue_then_crash()
    with pytest.raises(RuntimeError, match="not started"):
        blocking.get_statistics()


def processor_queue(handler: Callable[[dict[str, Any], list[str]], Any]) -> DeadLetterQueue:
    """A queue whose settings start the background processor, with one workflow."""
    dlq = DeadLetterQueue.from_settings(DLQSettings(retry_interval_seconds=10))
    dlq.register_handler("wf", handler)
    return dlq


def test_a_configured_processor_runs_and_stops_with_the_facade(backend: Backend) -> None:
    handled = threading.Event()

    def handler(task: dict[str, Any], repos: list[str]) -> str:
        handled.set()
        return "ok"

    dlq = processor_queue(handler)
    with BlockingDLQ(dlq, backend=backend) as blocking:
        assert blocking.get_statistics()["is_processor_running"] is True
        blocking.enqueue(
            "t", TASK, None, ConnectionError("reset"), retry_policy="immediate", workflow="wf"
        )
        assert handled.wait(5), "the processor did not retry the task"
    assert not dlq.is_processor_running


def test_stopping_the_facade_releases_an_in_flight_retry(backend: Backend) -> None:
    started, unblock = threading.Event(), threading.Event()

    def handler(task: dict[str, Any], repos: list[str]) -> None:
        started.set()
        unblock.wait(10)

    dlq = processor_queue(handler)
    try:
        with BlockingDLQ(dlq, backend=backend) as blocking:
            blocking.enqueue(
                "t", TASK, None, ConnectionError("reset"), retry_policy="immediate", workflow="wf"
            )
            assert started.wait(5), "the processor did not start the retry"
    finally:
        unblock.set()
    assert not dlq.is_processor_running
    task = anyio.run(dlq.store.get, "t")
    assert task is not None
    assert (task.status, task.retry_count) == (DeadLetterStatus.PENDING, 0)
    assert task.attempts[-1].outcome is AttemptOutcome.CANCELLED
