"""Wrapping workflows so that their failures land in the dead-letter queue.

Three ways in — ``execute_with_dlq(fn, task, repos)``, the ``@dlq.workflow(name)``
decorator, and ``async with dlq.guard(...)`` — and one rule for what the caller
sees:

- **success**: the workflow's result, untouched (nothing is stored, nothing
  allocated beyond the call itself);
- **failure**: the *original* exception is re-raised. It carries
  ``dlq_task_id`` (the id it is stored under) and ``dlq_error`` (None, or the
  :class:`~mahavishnu_dlq.errors.DLQError` that kept it from being stored —
  queue full, payload too large, store down), plus a note saying which. A
  failure is never swallowed and never replaced by a DLQ error.

Sync workflow functions run in a worker thread. :class:`DLQIntegration` adds
strategies (enqueue every failure, only retryable ones, or only explicit
enqueues) and its own counters.
"""

from __future__ import annotations

import functools
import inspect
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, cast, overload

from mahavishnu_dlq.attempt import call_handler, is_async
from mahavishnu_dlq.models import (
    DLQIntegrationStrategy,
    ErrorCategory,
    FailedTask,
    RetryPolicy,
)
from mahavishnu_dlq.printable import library_logger

if TYPE_CHECKING:
    from mahavishnu_dlq.queue import DeadLetterQueue

__all__ = [
    "DLQIntegration",
    "capture_failure",
    "execute_with_dlq",
    "guard",
    "workflow_decorator",
]

_log = library_logger("mahavishnu_dlq")
R = TypeVar("R")

_SELECTIVE = frozenset({ErrorCategory.TRANSIENT, ErrorCategory.NETWORK, ErrorCategory.RESOURCE})
_UNRETRYABLE = frozenset({ErrorCategory.PERMISSION, ErrorCategory.PERMANENT})


def _note(exc: BaseException, text: str) -> None:
    """Add a note to ``exc``, best effort: an exception whose ``__notes__`` is not a
    list, or whose attribute access raises, is re-raised without it."""
    try:
        add_note = getattr(exc, "add_note", None)
        if add_note is not None:
            add_note(text)
            return
        notes = getattr(exc, "__notes__", None)  # Python 3.10
        if notes is None:
            notes = []
            exc.__notes__ = notes  # type: ignore[attr-defined]
        notes.append(text)
    except Exception:  # noqa: BLE001 - the caller's exception matters, not our note
        _log.debug("dlq: could not add a note to %s", type(exc).__name__)


def _mark(exc: BaseException, task_id: str | None, error: BaseException | None) -> None:
    """Set ``dlq_task_id`` and ``dlq_error`` on ``exc``, best effort (``__slots__``, a
    raising ``__setattr__``: the note still tells)."""
    try:
        exc.dlq_task_id = task_id  # type: ignore[attr-defined]
        exc.dlq_error = error  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - the caller's exception matters, not our marks
        _log.debug("dlq: could not mark %s with its task id", type(exc).__name__)


def _stored_as(exc: BaseException) -> str | None:
    """The id an inner wrapper stored ``exc`` under, if it did: read from the instance's
    own attributes, so a ``__getattr__`` that answers every name cannot fake it."""
    try:
        found = object.__getattribute__(exc, "__dict__").get("dlq_task_id")
    except Exception:  # noqa: BLE001 - no __dict__ (slots), or a hostile one
        return None
    return found if isinstance(found, str) else None


async def capture_failure(
    dlq: DeadLetterQueue,
    exc: BaseException,
    task: Mapping[str, Any],
    repos: Iterable[str] | None,
    *,
    task_id: str | None = None,
    workflow: str | None = None,
    retry_policy: RetryPolicy | str | None = None,
    max_retries: int | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> FailedTask | None:
    """Store ``exc`` as a failed task and mark the exception; never raises.

    Returns the stored record, or None when the DLQ could not take it (then
    ``exc.dlq_error`` says why). The caller re-raises ``exc``.
    """
    if not dlq.enabled:  # the DLQ is switched off: the failure just propagates
        _mark(exc, None, None)
        return None
    if _stored_as(exc) is not None:  # stored by an inner wrapper already
        return None
    tid = task_id or uuid.uuid4().hex
    try:
        record = await dlq.enqueue(
            tid,
            task,
            repos,
            exc,
            retry_policy=retry_policy,
            max_retries=max_retries,
            metadata=metadata,
            workflow=workflow,
        )
    except Exception as error:  # noqa: BLE001 - the workflow's failure must reach the caller
        _mark(exc, None, error)
        _note(exc, f"mahavishnu-dlq could not store this failure (task {tid}): {error}")
        _log.error(
            "dlq.enqueue %s failed: %s",
            tid,
            error,
            extra={"action": "dlq.enqueue", "task_id": tid, "outcome": "not_stored"},
        )
        return None
    _mark(exc, record.task_id, None)
    _note(
        exc,
        f"stored in the dead-letter queue as task {record.task_id} "
        f"({record.error_category.value}, {record.status.value})",
    )
    return record


async def execute_with_dlq(
    dlq: DeadLetterQueue,
    fn: Callable[..., Awaitable[R]] | Callable[..., R],
    task: Mapping[str, Any],
    repos: Iterable[str] | None = None,
    *,
    task_id: str | None = None,
    workflow: str | None = None,
    retry_policy: RetryPolicy | str | None = None,
    max_retries: int | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> R:
    """Run ``fn(task, repos)``; store a failure in ``dlq`` and re-raise it.

    With tracing on, the run is a ``dlq.execute`` span; a failure is recorded on it
    and the record keeps its context, so retries link back to it.
    """
    tracer = dlq.telemetry.tracer()
    if tracer is not None:
        attributes = {"dlq.workflow": workflow or "", "dlq.task_id": task_id or ""}
        with tracer.start_as_current_span("dlq.execute", attributes=attributes) as span:
            try:
                return await _execute(
                    dlq, fn, task, repos, task_id, workflow, retry_policy, max_retries, metadata
                )
            except BaseException as exc:
                stored_as = _stored_as(exc)
                if stored_as is not None:
                    span.set_attribute("dlq.task_id", stored_as)
                raise
    return await _execute(
        dlq, fn, task, repos, task_id, workflow, retry_policy, max_retries, metadata
    )


async def _execute(
    dlq: DeadLetterQueue,
    fn: Callable[..., Awaitable[R]] | Callable[..., R],
    task: Mapping[str, Any],
    repos: Iterable[str] | None,
    task_id: str | None,
    workflow: str | None,
    retry_policy: RetryPolicy | str | None,
    max_retries: int | None,
    metadata: Mapping[str, Any] | None,
) -> R:
    repo_list = list(repos) if repos is not None else []
    try:
        if is_async(fn):
            return await fn(task, repo_list)  # type: ignore[no-any-return,misc]
        return await call_handler(fn, task, repo_list)  # type: ignore[no-any-return]
    except Exception as exc:
        await capture_failure(
            dlq,
            exc,
            task,
            repo_list,
            task_id=task_id,
            workflow=workflow,
            retry_policy=retry_policy,
            max_retries=max_retries,
            metadata=metadata,
        )
        raise


def workflow_decorator(
    dlq: DeadLetterQueue, name: str
) -> Callable[[Callable[..., Any]], Callable[..., Awaitable[Any]]]:
    """``@dlq.workflow(name)``: register the handler and wrap its calls with the DLQ.

    The wrapped function is called as ``await fn(task, repos=None, *, task_id=None,
    metadata=None)``; retries call the original ``fn(task, repos)``.
    """

    def decorate(fn: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
        dlq.register_handler(name, fn)

        @functools.wraps(fn)
        async def wrapper(
            task: Mapping[str, Any],
            repos: Iterable[str] | None = None,
            *,
            task_id: str | None = None,
            metadata: Mapping[str, Any] | None = None,
        ) -> Any:
            return await execute_with_dlq(
                dlq, fn, task, repos, task_id=task_id, workflow=name, metadata=metadata
            )

        wrapper.workflow_name = name  # type: ignore[attr-defined]
        return wrapper

    return decorate


class guard:  # noqa: N801 - used like a function: `async with dlq.guard(...)`
    """A failure inside the block is stored in ``dlq``, then re-raised.

    A plain class rather than ``@asynccontextmanager``: the success path is one
    object and two calls, no generator.
    """

    __slots__ = (
        "dlq",
        "max_retries",
        "metadata",
        "repos",
        "retry_policy",
        "task",
        "task_id",
        "workflow",
    )

    def __init__(
        self,
        dlq: DeadLetterQueue,
        task_id: str | None,
        task: Mapping[str, Any],
        repos: Iterable[str] | None = None,
        *,
        workflow: str | None = None,
        retry_policy: RetryPolicy | str | None = None,
        max_retries: int | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        self.dlq = dlq
        self.task_id = task_id
        self.task = task
        self.repos = repos
        self.workflow = workflow
        self.retry_policy = retry_policy
        self.max_retries = max_retries
        self.metadata = metadata

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        if isinstance(exc, Exception):
            await capture_failure(
                self.dlq,
                exc,
                self.task,
                self.repos,
                task_id=self.task_id,
                workflow=self.workflow,
                retry_policy=self.retry_policy,
                max_retries=self.max_retries,
                metadata=self.metadata,
            )
        return False  # never swallow: the failure propagates


class DLQIntegration:
    """Decides which workflow failures go to the DLQ, and counts what happened.

    - ``AUTOMATIC``: every failure is enqueued;
    - ``SELECTIVE``: only transient, network and resource failures;
    - ``MANUAL``: only explicit :meth:`enqueue_failed_workflow` calls;
    - ``DISABLED``: nothing is enqueued (failures still propagate).

    Under ``SELECTIVE`` and ``MANUAL`` an explicit :meth:`enqueue_failed_workflow` of a
    permission or permanent failure is skipped too, as the original did; pass
    ``enqueue_unretryable=True`` to store those explicit enqueues anyway.

    Counters: ``auto_enqueued`` counts every failure stored (by the wrapper or by
    :meth:`enqueue_failed_workflow`; ``manually_enqueued`` the explicit ones among
    them), ``skipped_by_strategy`` every failure the strategy kept out, and
    ``skipped_permission`` / ``skipped_permanent`` those skips by category
    (``skipped_permanent`` takes every category but permission). An ``async def
    should_enqueue`` override in a subclass is awaited.
    """

    def __init__(
        self,
        dlq: DeadLetterQueue,
        strategy: DLQIntegrationStrategy | str = DLQIntegrationStrategy.AUTOMATIC,
        *,
        enqueue_unretryable: bool = False,
    ) -> None:
        self.dlq = dlq
        self.strategy = DLQIntegrationStrategy(strategy)
        #: explicit enqueues of permission/permanent failures under SELECTIVE and MANUAL
        self.enqueue_unretryable = enqueue_unretryable
        self.reset_statistics()

    def reset_statistics(self) -> None:
        """Zero the counters."""
        self._stats: dict[str, int] = {
            "workflows_executed": 0,
            "workflows_failed": 0,
            "auto_enqueued": 0,
            "manually_enqueued": 0,
            "skipped_permanent": 0,
            "skipped_permission": 0,
            "skipped_by_strategy": 0,
            "not_stored": 0,
        }

    def _category(self, error: BaseException | str | ErrorCategory) -> ErrorCategory:
        if isinstance(error, ErrorCategory):
            return error
        return self.dlq.classifier.classify(error)

    def should_enqueue(self, error: BaseException | str | ErrorCategory) -> bool:
        """Whether a failure like ``error`` is enqueued automatically under this strategy."""
        if self.strategy is DLQIntegrationStrategy.AUTOMATIC:
            return True
        if self.strategy is DLQIntegrationStrategy.SELECTIVE:
            return self._category(error) in _SELECTIVE
        return False

    async def _should_enqueue(self, category: ErrorCategory) -> bool:
        """:meth:`should_enqueue`, awaited when a subclass made it ``async def``."""
        decision: object = self.should_enqueue(category)
        if inspect.isawaitable(decision):
            decision = await decision
        return bool(decision)

    def _skipped(self, category: ErrorCategory) -> None:
        self._stats["skipped_by_strategy"] += 1
        if category is ErrorCategory.PERMISSION:
            self._stats["skipped_permission"] += 1
        elif category not in _SELECTIVE:
            self._stats["skipped_permanent"] += 1

    def _explicit_allowed(self, category: ErrorCategory) -> bool:
        if self.strategy is DLQIntegrationStrategy.DISABLED:
            return False
        if self.enqueue_unretryable or self.strategy is DLQIntegrationStrategy.AUTOMATIC:
            return True
        return category not in _UNRETRYABLE

    def determine_retry_policy(
        self, error: BaseException | str | ErrorCategory, workflow: str = ""
    ) -> RetryPolicy:
        """The policy a failure like ``error`` would be retried with."""
        return self.dlq.policies.resolve(workflow=workflow, category=self._category(error)).policy

    async def enqueue_failed_workflow(
        self,
        task_id: str,
        task: Mapping[str, Any],
        repos: Iterable[str] | None,
        error: BaseException | str,
        *,
        workflow: str | None = None,
        retry_policy: RetryPolicy | str | None = None,
        max_retries: int | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> FailedTask | None:
        """Enqueue a failure explicitly; None when the strategy skips it (DISABLED, or a
        permission/permanent failure under SELECTIVE or MANUAL: see the class)."""
        category = self._category(error)
        if not self._explicit_allowed(category):
            self._skipped(category)
            return None
        record = await self.dlq.enqueue(
            task_id,
            task,
            repos,
            error,
            retry_policy=retry_policy,
            max_retries=max_retries,
            metadata=metadata,
            workflow=workflow,
        )
        self._stats["auto_enqueued"] += 1
        self._stats["manually_enqueued"] += 1
        return record

    # Overloads, because mypy cannot solve ``R`` from the union alone: an async
    # function also matches ``Callable[..., R]`` and the two answers give ``Never``.
    @overload
    async def execute_with_dlq(
        self,
        fn: Callable[..., Coroutine[Any, Any, R]],
        task: Mapping[str, Any],
        repos: Iterable[str] | None = None,
        *,
        task_id: str | None = None,
        workflow: str | None = None,
        retry_policy: RetryPolicy | str | None = None,
        max_retries: int | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> R: ...

    @overload
    async def execute_with_dlq(
        self,
        fn: Callable[..., R],
        task: Mapping[str, Any],
        repos: Iterable[str] | None = None,
        *,
        task_id: str | None = None,
        workflow: str | None = None,
        retry_policy: RetryPolicy | str | None = None,
        max_retries: int | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> R: ...

    async def execute_with_dlq(
        self,
        fn: Callable[..., Awaitable[R]] | Callable[..., R],
        task: Mapping[str, Any],
        repos: Iterable[str] | None = None,
        *,
        task_id: str | None = None,
        workflow: str | None = None,
        retry_policy: RetryPolicy | str | None = None,
        max_retries: int | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> R:
        """Run ``fn(task, repos)``; enqueue a failure if the strategy says so, re-raise it."""
        self._stats["workflows_executed"] += 1
        repo_list = list(repos) if repos is not None else []
        try:
            return await call_handler(fn, task, repo_list)  # type: ignore[no-any-return]
        except Exception as exc:
            self._stats["workflows_failed"] += 1
            category = self._category(exc)
            if await self._should_enqueue(category):
                record = await capture_failure(
                    self.dlq,
                    exc,
                    task,
                    repo_list,
                    task_id=task_id,
                    workflow=workflow,
                    retry_policy=retry_policy,
                    max_retries=max_retries,
                    metadata=metadata,
                )
                self._stats["auto_enqueued" if record is not None else "not_stored"] += 1
            else:
                _mark(exc, None, None)
                self._skipped(category)
            raise

    def get_statistics(self) -> dict[str, Any]:
        """The counters, the strategy and ``enqueue_rate`` (percent of failures enqueued)."""
        failed = self._stats["workflows_failed"]
        return {
            **self._stats,
            "strategy": self.strategy.value,
            "enqueue_rate": round(100.0 * self._stats["auto_enqueued"] / failed, 2)
            if failed
            else 0.0,
        }


class WorkflowWrapping:
    """The wrapping methods of :class:`~mahavishnu_dlq.queue.DeadLetterQueue`
    (``execute_with_dlq``, ``workflow``, ``guard``): each calls this module's function
    of the same name with the queue."""

    @overload
    async def execute_with_dlq(
        self,
        fn: Callable[..., Coroutine[Any, Any, R]],
        task: Mapping[str, Any],
        repos: Iterable[str] | None = None,
        *,
        task_id: str | None = None,
        workflow: str | None = None,
        retry_policy: RetryPolicy | str | None = None,
        max_retries: int | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> R: ...

    @overload
    async def execute_with_dlq(
        self,
        fn: Callable[..., R],
        task: Mapping[str, Any],
        repos: Iterable[str] | None = None,
        *,
        task_id: str | None = None,
        workflow: str | None = None,
        retry_policy: RetryPolicy | str | None = None,
        max_retries: int | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> R: ...

    async def execute_with_dlq(
        self,
        fn: Callable[..., Awaitable[R]] | Callable[..., R],
        task: Mapping[str, Any],
        repos: Iterable[str] | None = None,
        *,
        task_id: str | None = None,
        workflow: str | None = None,
        retry_policy: RetryPolicy | str | None = None,
        max_retries: int | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> R:
        """Run ``fn(task, repos)``; on failure store it and re-raise the original exception.

        Success returns the workflow's result untouched. On failure the original
        exception propagates with ``dlq_task_id`` set (and ``dlq_error`` plus a
        note when the DLQ could not store it).
        """
        return await execute_with_dlq(
            cast("DeadLetterQueue", self),
            fn,
            task,
            repos,
            task_id=task_id,
            workflow=workflow,
            retry_policy=retry_policy,
            max_retries=max_retries,
            metadata=metadata,
        )

    def workflow(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Awaitable[Any]]]:
        """Decorator: register ``fn`` as the retry handler of ``name`` and wrap its calls."""
        return workflow_decorator(cast("DeadLetterQueue", self), name)

    def guard(
        self,
        task_id: str | None = None,
        task: Mapping[str, Any] | None = None,
        repos: Iterable[str] | None = None,
        *,
        workflow: str | None = None,
        retry_policy: RetryPolicy | str | None = None,
        max_retries: int | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> AbstractAsyncContextManager[None]:
        """``async with dlq.guard(...)``: a failure inside the block is stored, then re-raised."""
        return guard(
            cast("DeadLetterQueue", self),
            task_id,
            task or {},
            repos,
            workflow=workflow,
            retry_policy=retry_policy,
            max_retries=max_retries,
            metadata=metadata,
        )
