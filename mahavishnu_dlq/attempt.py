"""One retry attempt: run a claimed task's handler and record how it ended.

:func:`run_attempt` is shared by the processor and by manual retries
(:meth:`DeadLetterQueue.retry_task`). It calls the workflow's handler (sync
handlers in a worker thread) under the attempt's timeout, turns the outcome
into the next state through :mod:`mahavishnu_dlq.lifecycle`, and writes it with a
compare-and-set on the lease, so an attempt whose lease was lost meanwhile
changes nothing.

A handler cannot poison its caller:

- any ``Exception`` it raises is a failed attempt (its text bounded like every
  stored error);
- a ``CancelledError`` it raises itself, while nobody cancelled the attempt, is a
  failed attempt too — only a real cancellation (the processor stopping, the
  caller cancelled, the attempt's timeout) releases or times out the attempt;
- ``KeyboardInterrupt``, ``SystemExit`` and other ``BaseException``s give the
  attempt back first (the task pending again, its retry returned) and then
  propagate as themselves.
"""

from __future__ import annotations

import inspect
import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import TYPE_CHECKING, Any

import anyio

from mahavishnu_dlq import lifecycle
from mahavishnu_dlq.classifier import error_type_name
from mahavishnu_dlq.context import exception_message
from mahavishnu_dlq.errors import Dispatched, RetryAfter, TaskBusyError
from mahavishnu_dlq.limits import MAX_TYPE_CHARS, bound_text, clean_text
from mahavishnu_dlq.models import AttemptOutcome, DeadLetterStatus, ErrorCategory, FailedTask
from mahavishnu_dlq.policy import (
    RetryAction,
    RetryDecision,
    RetryState,
    clamp_seconds,
    decide,
    later,
    retry_after_hint,
)
from mahavishnu_dlq.printable import library_logger

if TYPE_CHECKING:
    from mahavishnu_dlq.queue import DeadLetterQueue, Handler

__all__ = [
    "AttemptResult",
    "Slot",
    "call_handler",
    "is_async",
    "release",
    "require_present",
    "run_attempt",
]

_log = library_logger("mahavishnu_dlq")


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """How one attempt ended, and the task's status after it."""

    task_id: str
    outcome: AttemptOutcome
    status: DeadLetterStatus
    result: Any = None
    error: str | None = None
    record: FailedTask | None = None  # as stored after the attempt (None: lease lost)
    #: the category of the exception a failed attempt raised (the breakers read it)
    category: ErrorCategory | None = None
    #: seconds a handler's ``RetryAfter`` asked for (a deferred attempt)
    defer_seconds: float | None = None

    @property
    def success(self) -> bool:
        return self.outcome is AttemptOutcome.SUCCESS


def _inspect_async(fn: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - callable objects with async __call__
    )


_inspect_cached = lru_cache(maxsize=1024)(_inspect_async)


def is_async(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` must be awaited (cached: this sits on every wrapped call)."""
    try:
        return _inspect_cached(fn)
    except TypeError:  # unhashable callable object
        return _inspect_async(fn)


async def call_handler(fn: Callable[..., Any], *args: Any) -> Any:
    """Call a sync or async workflow function; sync ones run in a worker thread.

    A sync function's outcome comes back from its thread as a value and is raised
    here, so its exception reaches the caller as itself (the thread machinery would
    set attributes on it, which an exception refusing attributes turns into another
    error), and a coroutine it returns is awaited here (trio refuses to hand one
    back from a thread)."""
    if is_async(fn):
        return await fn(*args)
    ok, value = await anyio.to_thread.run_sync(partial(_outcome, fn, args), abandon_on_cancel=True)
    if not ok:
        raise value
    if inspect.isawaitable(value):
        return await value
    return value


def _outcome(fn: Callable[..., Any], args: tuple[Any, ...]) -> tuple[bool, Any]:
    """``(True, fn(*args))``, or ``(False, the exception it raised)``; in a worker thread."""
    try:
        return True, fn(*args)
    except BaseException as exc:  # noqa: BLE001 - raised again by the caller, in its task
        return False, exc


async def _record(
    dlq: DeadLetterQueue, task: FailedTask, owner: str, **outcome: Any
) -> FailedTask | None:
    """Write the attempt's outcome; None when our lease was lost meanwhile.

    A cancellation during the write (the processor is stopping) must not lose an
    attempt that already ran: the write is then repeated, shielded. The write is
    a compare-and-set on our lease, so repeating one that had landed is refused
    harmlessly.
    """
    finish = _finisher(dlq, owner=owner, **outcome)
    try:
        stored = await dlq.traced_store.mutate(task.task_id, finish)
    except anyio.get_cancelled_exc_class():
        with anyio.CancelScope(shield=True):
            try:
                stored = await dlq.traced_store.mutate(task.task_id, finish)
            except TaskBusyError:
                pass  # it had landed, or the lease is gone: nothing to record
            except Exception as exc:  # noqa: BLE001 - the cancellation goes on up regardless
                _log.warning(
                    "dlq.retry %s: outcome not recorded while stopping: %s",
                    task.task_id,
                    exc,
                    extra={"action": "dlq.retry", "task_id": task.task_id, "outcome": "lost"},
                )
            else:
                _count(dlq, task, outcome["outcome"], stored)
        raise
    except TaskBusyError as exc:
        _count(dlq, task, outcome["outcome"], None)
        _log.warning(
            "dlq.retry %s: outcome discarded, %s",
            task.task_id,
            exc,
            extra={"action": "dlq.retry", "task_id": task.task_id, "outcome": "lease_lost"},
        )
        return None
    _count(dlq, task, outcome["outcome"], stored)
    return stored


def _finisher(
    dlq: DeadLetterQueue,
    *,
    owner: str,
    outcome: AttemptOutcome,
    error: str | None = None,
    error_type: str | None = None,
    retry_after: float | None = None,
    defer_seconds: float | None = None,
) -> Callable[[FailedTask | None], FailedTask]:
    def finish(current: FailedTask | None) -> FailedTask:
        if current is None:
            raise TaskBusyError("?", reason="the task was deleted during its attempt")
        now = dlq.clock.now()
        if outcome is AttemptOutcome.SUCCESS:
            return lifecycle.finish(current, now=now, owner=owner, outcome=outcome)
        params = dlq.policies.resolve(
            workflow=current.workflow,
            category=current.error_category,
            policy=current.retry_policy,
            max_retries=current.max_retries,
        )
        if outcome is AttemptOutcome.DEFERRED:
            wait = clamp_seconds(defer_seconds or 0.0)
            until = later(now, wait)
            deadline = params.deadline
            deadline_at = None if deadline is None else later(current.failed_at, deadline)
            if until is not None and (deadline_at is None or until <= deadline_at):
                return lifecycle.finish(
                    current, now=now, owner=owner, outcome=outcome, defer_until=until
                )
            why = (
                f"deadline ({deadline:g}s) passed"
                if until is not None and deadline is not None
                else "the retry would fall after the year 9999"
            )
            return lifecycle.finish(  # a deferral past the deadline (or the calendar) gives up
                current,
                now=now,
                owner=owner,
                outcome=AttemptOutcome.FAILURE,
                error=f"RetryAfter({wait:g}s): {why}",
                error_type="RetryAfter",
                decision=RetryDecision(RetryAction.EXHAUST, None, None, why),
            )
        state = RetryState(
            retry_count=current.retry_count,
            first_failed_at=current.failed_at,
            now=now,
            retry_after=retry_after,
        )
        return lifecycle.finish(
            current,
            now=now,
            owner=owner,
            outcome=outcome,
            error=error,
            error_type=error_type,
            decision=decide(params, state, dlq.rng),
        )

    return finish


@dataclass(slots=True)
class Slot:
    """One worker of a processor: the attempt it runs now, watched for its timeout.

    A worker runs many attempts inside one cancel scope, and a watchdog cancels
    that scope when the current attempt runs too long — instead of a timer scope
    per attempt, which costs more than a trivial attempt itself. Starting an
    attempt only bumps ``attempt``; the watchdog notes when it first sees each
    attempt number, so the hot path never reads the clock.
    """

    scope: anyio.CancelScope | None = None
    task: FailedTask | None = None
    attempt: int = 0
    timed_out: bool = False
    seen_attempt: int = -1
    seen_at: float = 0.0


def _timeout(limit: float) -> dict[str, Any]:
    return {
        "outcome": AttemptOutcome.TIMEOUT,
        "error": f"attempt timed out after {limit:g}s",
        "error_type": "TimeoutError",
    }


async def run_attempt(
    dlq: DeadLetterQueue,
    task: FailedTask,
    *,
    owner: str,
    timeout: float | None = None,
    slot: Slot | None = None,
) -> AttemptResult:
    """Run one claimed attempt of ``task`` and record its outcome.

    Used by the processor and by manual retries alike. The attempt times out
    after ``timeout`` seconds (by its own timer, or — inside a processor worker,
    ``slot`` — by the worker's watchdog). If the caller is cancelled, the lease
    is released (shielded) and the cancellation propagates. With tracing on, the
    attempt is a ``dlq.retry`` span linked to the span of the run that failed.
    """
    started = time.monotonic()
    tracer = dlq.telemetry.tracer()
    if tracer is None:
        result = await _run_attempt(dlq, task, owner=owner, timeout=timeout, slot=slot)
    else:
        attributes = {
            "dlq.task_id": task.task_id,
            "dlq.workflow": task.workflow,
            "dlq.category": task.error_category.value,
            "dlq.attempt": task.retry_count,
            "dlq.backend": dlq.store.backend,
        }
        links = dlq.telemetry.failure_link(task)
        with tracer.start_as_current_span("dlq.retry", attributes=attributes, links=links) as span:
            result = await _run_attempt(dlq, task, owner=owner, timeout=timeout, slot=slot)
            span.set_attribute("dlq.outcome", result.outcome.value)
            span.set_attribute("dlq.status", result.status.value)
            if result.error is not None:
                span.set_status(_trace_status_error(result.error))
    dlq.telemetry.attempt(task, result.outcome.value, time.monotonic() - started)
    return result


def _trace_status_error(description: str) -> Any:
    from opentelemetry.trace import Status, StatusCode  # noqa: PLC0415 - tracing is on

    return Status(StatusCode.ERROR, description)


async def _run_attempt(  # noqa: PLR0912 - one branch per way a handler can end
    dlq: DeadLetterQueue,
    task: FailedTask,
    *,
    owner: str,
    timeout: float | None,
    slot: Slot | None,
) -> AttemptResult:
    handler, args = _handler_call(dlq, task)
    if handler is not None and args[0] is task:  # an engine's: hand the attempt over first
        handed = await _hand_off(dlq, task, owner)
        if handed is None:
            return AttemptResult(task.task_id, AttemptOutcome.LOST, DeadLetterStatus.RETRYING)
        task, owner, args = handed, handed.lease_owner or owner, (handed,)
    limit = dlq.attempt_timeout_seconds if timeout is None else timeout
    result: Any = None
    outcome: dict[str, Any]
    category: ErrorCategory | None = None
    try:
        if handler is None:
            raise LookupError(f"no handler registered for workflow {task.workflow!r}")
        if slot is None:
            with anyio.move_on_after(limit) as scope:
                result = await call_handler(handler, *args)
            timed_out = scope.cancelled_caught
        else:
            result = await call_handler(handler, *args)
            timed_out = False
        outcome = _timeout(limit) if timed_out else {"outcome": AttemptOutcome.SUCCESS}
    except RetryAfter as signal:
        outcome = {"outcome": AttemptOutcome.DEFERRED, "defer_seconds": signal.seconds}
    except Dispatched as signal:
        if args[0] is task:  # sent by its engine's handler: the worker reports the outcome
            from mahavishnu_dlq.engines import dispatched  # noqa: PLC0415 - engines import this

            return dispatched(dlq, task, signal)
        outcome = _failure(dlq, TypeError(f"{signal!r} raised by a handler that is no engine's"))
    except anyio.get_cancelled_exc_class() as exc:
        if not _cancelled():  # the handler raised it itself: a failure like any other
            outcome = _failure(dlq, exc)
            category = _category(dlq, exc)
        else:
            with anyio.CancelScope(shield=True):
                if slot is not None and slot.timed_out:  # our watchdog: a timeout, not a stop
                    await _record(dlq, task, owner, **_timeout(limit))
                else:
                    await release(dlq, task, owner)
            raise
    except Exception as exc:  # noqa: BLE001 - a workflow's failure is data, never a crash
        outcome = _failure(dlq, exc)
        category = _category(dlq, exc)
    except BaseException:  # KeyboardInterrupt, SystemExit …: give the attempt back, go on up
        with anyio.CancelScope(shield=True):
            await release(dlq, task, owner)
        raise
    stored = await _record(dlq, task, owner, **outcome)
    status = stored.status if stored is not None else DeadLetterStatus.RETRYING
    error = outcome.get("error")
    if error is None and stored is not None and status is DeadLetterStatus.EXHAUSTED:
        error = stored.last_error  # a deferral that gave up says why
    return AttemptResult(
        task.task_id,
        outcome["outcome"],
        status,
        result,
        error,
        stored,
        category,
        outcome.get("defer_seconds"),
    )


def _handler_call(
    dlq: DeadLetterQueue, task: FailedTask
) -> tuple[Callable[..., Any] | None, tuple[Any, ...]]:
    """What retries ``task`` and with what: its workflow's handler with the input and
    repos, else its engine's handler with the whole record, else the default callback."""
    handler: Handler | None = dlq.handlers.get(task.workflow)
    if handler is None and dlq.engines:
        engine = dlq.engine_of(task)
        engine_handler = None if engine is None else dlq.engines.get(engine)
        if engine_handler is not None:
            return engine_handler, (task,)
    if handler is None:
        handler = dlq.default_callback
    return handler, (dict(task.task), list(task.repos))


async def _hand_off(dlq: DeadLetterQueue, task: FailedTask, owner: str) -> FailedTask | None:
    from mahavishnu_dlq.engines import hand_off  # noqa: PLC0415 - engines import this module

    return await hand_off(dlq, task, owner)


def _category(dlq: DeadLetterQueue, exc: BaseException) -> ErrorCategory | None:
    """The category of a retry's exception for the breakers; None when the exception
    cannot even be looked at (a hostile one): it then trips nothing."""
    try:
        return dlq.classifier.classify(exc)
    except Exception:  # noqa: BLE001 - the attempt's outcome matters more than its category
        return None


def _failure(dlq: DeadLetterQueue, exc: BaseException) -> dict[str, Any]:
    """The outcome of an attempt that raised ``exc``: its text bounded like every error."""
    error_type = error_type_name(exc)[:MAX_TYPE_CHARS]
    message = exception_message(exc) or error_type
    return {
        "outcome": AttemptOutcome.FAILURE,
        "error": bound_text(message, dlq.limits.max_error_bytes),
        "error_type": clean_text(error_type),
        "retry_after": retry_after_hint(exc),  # read once, outside the store's retries
    }


def _cancelled() -> bool:
    """Whether the current task is being cancelled for real: a cancel scope around it
    was cancelled (a stop, a timeout), or — on asyncio — someone called ``cancel()``
    on it. False when a handler raised ``CancelledError`` on its own."""
    if anyio.current_effective_deadline() == -math.inf:
        return True
    if sys.version_info >= (3, 11):
        import asyncio  # noqa: PLC0415 - only asked about when a cancellation arrives

        try:
            current = asyncio.current_task()
        except RuntimeError:  # not on asyncio (trio)
            return False
        return current is not None and current.cancelling() > 0
    return False  # pragma: no cover - Python 3.10: an anyio scope is the only evidence


def _count(
    dlq: DeadLetterQueue, task: FailedTask, outcome: AttemptOutcome, stored: FailedTask | None
) -> None:
    life = dlq.lifetime
    if stored is None:
        life["lost"] += 1
        return
    telemetry = dlq.telemetry
    telemetry.count("retried", stored)
    if outcome is AttemptOutcome.SUCCESS:
        life["retry_success"] += 1
        telemetry.count("succeeded", stored)
    elif outcome is AttemptOutcome.DEFERRED and stored.status is not DeadLetterStatus.EXHAUSTED:
        life["deferred"] += 1
    else:
        life["retry_failed"] += 1
        telemetry.count("failed", stored)
        if stored.status is DeadLetterStatus.EXHAUSTED:
            life["exhausted"] += 1
            telemetry.count("exhausted", stored)
            dlq.alerts.record_exhausted()  # the hooks run after the attempt (async)
    level = logging.WARNING if stored.status is DeadLetterStatus.EXHAUSTED else logging.INFO
    if _log.isEnabledFor(level):  # an exhausted task is told at the default WARNING level too
        extra = {
            "action": "dlq.retry",
            "task_id": task.task_id,
            "workflow": task.workflow,
            "attempt": task.retry_count,
            "outcome": outcome.value,
            "status": stored.status.value,
        }
        error = _attempt_error(outcome, stored)
        if error:
            extra["error"] = error
        _log.log(
            level,
            "dlq.retry %s attempt %d: %s -> %s%s",
            task.task_id,
            task.retry_count,
            outcome.value,
            stored.status.value,
            f": {error}" if error else "",
            extra=extra,
        )


#: Characters of a failed attempt's error its ``dlq.retry`` log line carries.
LOGGED_ERROR_CHARS = 500
_NOT_FAILED = (AttemptOutcome.SUCCESS, AttemptOutcome.DEFERRED)


def _attempt_error(outcome: AttemptOutcome, stored: FailedTask) -> str:
    """``Type: message`` of the attempt that just failed, on one line and cut ("" for
    a success): the operator watching ``processor run`` sees why, not only that."""
    if outcome in _NOT_FAILED or not (stored.last_error or stored.last_error_type):
        return ""
    kind = stored.last_error_type or "error"
    text = " ".join(f"{kind}: {stored.last_error or ''}".split())
    if len(text) > LOGGED_ERROR_CHARS:
        text = text[: LOGGED_ERROR_CHARS - 1] + "…"
    return text


async def release(dlq: DeadLetterQueue, task: FailedTask, owner: str) -> None:
    now = dlq.clock.now()
    try:
        await dlq.traced_store.mutate(
            task.task_id,
            lambda current: lifecycle.release(
                require_present(current, task.task_id), now=now, owner=owner
            ),
        )
    except Exception as exc:  # noqa: BLE001 - whatever the store says, the caller goes on
        _log.warning(
            "dlq.release %s failed: %s",
            task.task_id,
            exc,
            extra={"action": "dlq.release", "task_id": task.task_id, "outcome": "failed"},
        )


def require_present(task: FailedTask | None, task_id: str) -> FailedTask:
    if task is None:
        raise TaskBusyError(task_id, reason="the task was deleted during its attempt")
    return task
