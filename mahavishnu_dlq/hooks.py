"""Hooks: user callbacks run when something happens to a task, which never break the queue.

:class:`Hooks` holds the ``on_exhausted`` callbacks, run when a task has no retry
left (a death handler: page someone, open a ticket, copy the task elsewhere).
A hook may be a function or a coroutine function; sync ones run in a worker
thread. Every call is limited by a timeout. A hook that raises or runs too long
is logged at ERROR with the action ``dlq.hook_failed`` and is never raised: the
task is already stored, and what a hook does cannot undo that.

:func:`guarded_call` is that "call, time out, log, never raise" step; alert
callbacks (:mod:`mahavishnu_dlq.alerts`) use it too.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import anyio

from mahavishnu_dlq.jobs.model import Job
from mahavishnu_dlq.models import FailedTask
from mahavishnu_dlq.printable import library_logger

__all__ = [
    "DEFAULT_TIMEOUT_SECONDS",
    "ExhaustedHook",
    "Hooks",
    "JobFinishedHook",
    "callable_name",
    "check_timeout",
    "guarded_call",
]

_log = library_logger(__name__)

#: ``hook(task)``: a function or coroutine function; its return value is ignored.
ExhaustedHook = Callable[[FailedTask], Any]

#: ``hook(job)``: called when a bulk job ends; a function or coroutine function.
JobFinishedHook = Callable[[Job], Any]

#: How long one hook or alert callback call may run by default.
DEFAULT_TIMEOUT_SECONDS = 10.0


def callable_name(fn: Callable[..., Any]) -> str:
    """``module.qualname`` of a function, or of the class of a callable object."""
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    module = getattr(fn, "__module__", None)
    return f"{module}.{name}" if module else str(name)


def check_timeout(timeout: float) -> float:
    """``timeout`` as a float: a finite number above 0 (TypeError, ValueError otherwise)."""
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout_seconds must be a number, got {timeout!r}")
    if not 0 < timeout < math.inf:
        raise ValueError(f"timeout_seconds must be a finite number > 0, got {timeout!r}")
    return float(timeout)


async def guarded_call(
    fn: Callable[[Any], Any],
    arg: Any,
    *,
    timeout: float,
    action: str,
    role: str,
    extra: Mapping[str, Any],
    logger: logging.Logger = _log,
) -> bool:
    """Call ``fn(arg)`` (sync or async) within ``timeout``; log a failure, never raise it.

    A failure is logged at ERROR on ``logger`` with ``action`` and the extras
    ``extra``, ``{role}`` (the callable's name), ``reason`` (``error`` or
    ``timeout``) and ``error_type`` or ``timeout_seconds``. Returns whether the
    call succeeded. A cancellation of the caller still propagates.
    """
    # Imported here: the processor may import this module (through alerts).
    from mahavishnu_dlq.attempt import call_handler  # noqa: PLC0415

    name = callable_name(fn)
    fields = {"action": action, role: name, **extra}
    try:
        with anyio.move_on_after(timeout) as scope:
            await call_handler(fn, arg)
    except Exception as exc:  # a user callback's failure is logged, never raised
        logger.exception(
            "%s: %s %s raised %s",
            action,
            role,
            name,
            type(exc).__name__,
            extra={**fields, "reason": "error", "error_type": type(exc).__name__},
        )
        return False
    if scope.cancelled_caught:
        logger.error(
            "%s: %s %s timed out after %gs",
            action,
            role,
            name,
            timeout,
            extra={**fields, "reason": "timeout", "timeout_seconds": timeout},
        )
        return False
    return True


class Hooks:
    """Callbacks run when a task is exhausted (no retry left).

    ``await hooks.exhausted(task)`` calls every ``on_exhausted`` hook with the
    exhausted :class:`FailedTask`, all at the same time. A hook that raises, or
    runs longer than ``timeout_seconds`` (it is then cancelled; a sync one is
    abandoned in its thread), is logged at ERROR with action ``dlq.hook_failed``
    and extras ``task_id``, ``workflow``, ``hook``, ``reason`` (``error`` /
    ``timeout``); the other hooks still run and nothing is raised.
    """

    def __init__(
        self,
        on_exhausted: Iterable[ExhaustedHook] = (),
        *,
        on_job_finished: Iterable[JobFinishedHook] = (),
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        self.on_exhausted: list[ExhaustedHook] = list(on_exhausted)
        self.on_job_finished: list[JobFinishedHook] = list(on_job_finished)
        self.timeout_seconds = check_timeout(timeout_seconds)

    def add_on_exhausted(self, hook: ExhaustedHook) -> ExhaustedHook:
        """Register ``hook``; returns it, so it also works as a decorator."""
        self.on_exhausted.append(hook)
        return hook

    async def exhausted(self, task: FailedTask) -> None:
        """Run every ``on_exhausted`` hook for ``task``; failures are logged, never raised."""
        if not self.on_exhausted:
            return
        async with anyio.create_task_group() as group:
            for hook in list(self.on_exhausted):
                group.start_soon(self._run, hook, task, name=callable_name(hook))

    async def _run(self, hook: ExhaustedHook, task: FailedTask) -> None:
        await guarded_call(
            hook,
            task,
            timeout=self.timeout_seconds,
            action="dlq.hook_failed",
            role="hook",
            extra={"task_id": task.task_id, "workflow": task.workflow},
        )

    def add_on_job_finished(self, hook: JobFinishedHook) -> JobFinishedHook:
        """Register ``hook``, called with each bulk job that ends; returns it."""
        self.on_job_finished.append(hook)
        return hook

    async def job_finished(self, job: Job) -> None:
        """Run every ``on_job_finished`` hook for ``job``; failures are logged, never raised."""
        if not self.on_job_finished:
            return
        async with anyio.create_task_group() as group:
            for hook in list(self.on_job_finished):
                group.start_soon(self._run_job_hook, hook, job, name=callable_name(hook))

    async def _run_job_hook(self, hook: JobFinishedHook, job: Job) -> None:
        await guarded_call(
            hook,
            job,
            timeout=self.timeout_seconds,
            action="dlq.hook_failed",
            role="hook",
            extra={"job_id": job.job_id, "kind": job.kind.value},
        )
