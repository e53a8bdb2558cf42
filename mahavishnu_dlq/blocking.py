"""A blocking facade for sync hosts (Flask, Django, scripts, threads).

:class:`BlockingDLQ` runs a :class:`DeadLetterQueue` on an event loop in a
background thread (an anyio blocking portal) and exposes the same operations
as plain methods::

    with BlockingDLQ(DeadLetterQueue()) as dlq:
        dlq.execute_with_dlq(sync_workflow, {"order": 42})
        print(dlq.get_statistics())

Every call is forwarded to that loop, so the queue's state is only ever touched
from one thread.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from contextlib import ExitStack
from datetime import datetime, timedelta
from functools import partial
from types import TracebackType
from typing import Any, Literal, TypeVar

from anyio.from_thread import BlockingPortal, start_blocking_portal

from mahavishnu_dlq.capture import Failure
from mahavishnu_dlq.errors import DLQError
from mahavishnu_dlq.models import (
    DeadLetterStatus,
    FailedTask,
    ReplayReport,
    TaskFilter,
    TaskPage,
)
from mahavishnu_dlq.queue import DeadLetterQueue

__all__ = ["BlockingDLQ"]

R = TypeVar("R")


class BlockingDLQ:
    """Drive a :class:`DeadLetterQueue` from synchronous code."""

    def __init__(
        self, dlq: DeadLetterQueue, *, backend: Literal["asyncio", "trio"] = "asyncio"
    ) -> None:
        self.dlq = dlq
        self._backend = backend
        self._stack: ExitStack | None = None
        self._portal: BlockingPortal | None = None

    def __enter__(self) -> BlockingDLQ:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start the event-loop thread and the queue (store, processor if configured)."""
        if self._portal is not None:
            return
        with ExitStack() as stack:
            portal = stack.enter_context(start_blocking_portal(self._backend))
            # `async with dlq` runs in one task of the loop, so the processor's task
            # group is entered and exited by the same task (a portal call per step
            # would not be).
            stack.enter_context(portal.wrap_async_context_manager(self.dlq))
            self._stack = stack.pop_all()
            self._portal = portal

    def stop(self) -> None:
        """Stop the queue gracefully, then the event-loop thread."""
        stack, self._stack, self._portal = self._stack, None, None
        if stack is not None:
            stack.close()

    @property
    def portal(self) -> BlockingPortal:
        if self._portal is None:
            raise RuntimeError("BlockingDLQ is not started: use `with BlockingDLQ(...)`")
        return self._portal

    def execute_with_dlq(
        self,
        fn: Callable[..., R],
        task: Mapping[str, Any],
        repos: Iterable[str] | None = None,
        **options: Any,
    ) -> R:
        """Run a sync ``fn(task, repos)`` in this thread; a failure is stored, then re-raised."""
        portal = self.portal  # not started: say so before running anything
        repo_list = list(repos) if repos is not None else []
        try:
            return fn(task, repo_list)
        except Exception as exc:
            from mahavishnu_dlq.integration import capture_failure  # noqa: PLC0415

            portal.call(partial(capture_failure, self.dlq, exc, task, repo_list, **options))
            raise

    def enqueue(
        self,
        task_id: str,
        task: Mapping[str, Any],
        repos: Iterable[str] | None = None,
        error: BaseException | str = "",
        **options: Any,
    ) -> FailedTask:
        return self.portal.call(partial(self.dlq.enqueue, task_id, task, repos, error, **options))

    def enqueue_many(self, failures: Iterable[Failure]) -> list[FailedTask | DLQError]:
        return self.portal.call(self.dlq.enqueue_many, list(failures))

    def report_outcome(
        self, task_id: str, token: str, *, error: BaseException | str | None = None
    ) -> FailedTask | None:
        return self.portal.call(partial(self.dlq.report_outcome, task_id, token, error=error))

    def get_task(self, task_id: str) -> FailedTask | None:
        return self.portal.call(self.dlq.get_task, task_id)

    def list_tasks(
        self, status: DeadLetterStatus | str | None = None, limit: int = 100, **filters: Any
    ) -> TaskPage[FailedTask]:
        return self.portal.call(partial(self.dlq.list_tasks, status, limit, **filters))

    def retry_task(self, task_id: str) -> dict[str, Any]:
        return self.portal.call(self.dlq.retry_task, task_id)

    def replay(self, filter: TaskFilter | None = None, **options: Any) -> ReplayReport:
        return self.portal.call(partial(self.dlq.replay, filter, **options))

    def archive_task(self, task_id: str) -> bool:
        return self.portal.call(self.dlq.archive_task, task_id)

    def purge(
        self,
        *,
        older_than: timedelta | datetime | None = None,
        status: DeadLetterStatus | str | Iterable[DeadLetterStatus | str] | None = None,
    ) -> int:
        return self.portal.call(partial(self.dlq.purge, older_than=older_than, status=status))

    def clear_all(self) -> int:
        return self.portal.call(self.dlq.clear_all)

    def get_statistics(self) -> dict[str, Any]:
        return self.portal.call(self.dlq.get_statistics)
