"""RetryProcessor: claims due tasks and retries them in the background.

``run()`` keeps up to ``concurrency`` attempts in flight: it claims due tasks
from the store (a lease each), runs their handlers with a per-attempt timeout,
and records the outcome through the state machine. It wakes when a task falls
due, when a slot frees, when new work is enqueued, or every ``check_interval``.
Leases of long attempts are renewed; stopping (or cancelling) the processor
releases in-flight attempts back to PENDING in shielded cleanup.

For tests, :meth:`run_once` does one cycle to completion and :meth:`drain`
repeats cycles until nothing is due — both deterministic under a fake clock.
Any number of processors (threads, processes, machines) may share one store:
claims are atomic, so a task never runs twice at once.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache, partial
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from mahavishnu_dlq import lifecycle
from mahavishnu_dlq.classifier import error_type_name
from mahavishnu_dlq.errors import DLQError, RetryAfter, TaskBusyError
from mahavishnu_dlq.models import AttemptOutcome, DeadLetterStatus, FailedTask
from mahavishnu_dlq.policy import (
    RetryAction,
    RetryDecision,
    RetryState,
    decide,
    retry_after_hint,
)

if TYPE_CHECKING:
    from mahavishnu_dlq.queue import DeadLetterQueue, Handler

__all__ = ["AttemptResult", "RetryProcessor", "call_handler", "run_attempt"]

_log = logging.getLogger("mahavishnu_dlq")


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """How one attempt ended, and the task's status after it."""

    task_id: str
    outcome: AttemptOutcome
    status: DeadLetterStatus
    result: Any = None
    error: str | None = None
    record: FailedTask | None = None  # as stored after the attempt (None: lease lost)

    @property
    def success(self) -> bool:
        return self.outcome is AttemptOutcome.SUCCESS


def _inspect_async(fn: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - callable objects with async __call__
    )


_inspect_cached = lru_cache(maxsize=1024)(_inspect_async)


def _is_async(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` must be awaited (cached: this sits on every wrapped call)."""
    try:
        return _inspect_cached(fn)
    except TypeError:  # unhashable callable object
        return _inspect_async(fn)


async def call_handler(fn: Callable[..., Any], *args: Any) -> Any:
    """Call a sync or async workflow function; sync ones run in a worker thread."""
    if _is_async(fn):
        return await fn(*args)
    result = await anyio.to_thread.run_sync(partial(fn, *args), abandon_on_cancel=True)
    if inspect.isawaitable(result):
        return await result
    return result


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
            with contextlib.suppress(TaskBusyError):
                _count(
                    dlq,
                    task,
                    outcome["outcome"],
                    await dlq.traced_store.mutate(task.task_id, finish),
                )
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
    exc: BaseException | None = None,
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
            until = now + timedelta(seconds=defer_seconds or 0.0)
            deadline = params.deadline
            if deadline is None or until <= current.failed_at + timedelta(seconds=deadline):
                return lifecycle.finish(
                    current, now=now, owner=owner, outcome=outcome, defer_until=until
                )
            return lifecycle.finish(  # a deferral past the deadline gives up
                current,
                now=now,
                owner=owner,
                outcome=AttemptOutcome.FAILURE,
                error=f"RetryAfter({defer_seconds:g}s) would pass the deadline ({deadline:g}s)",
                error_type="RetryAfter",
                decision=RetryDecision(
                    RetryAction.EXHAUST, None, None, f"deadline ({deadline:g}s) passed"
                ),
            )
        state = RetryState(
            retry_count=current.retry_count,
            first_failed_at=current.failed_at,
            now=now,
            retry_after=retry_after_hint(exc),
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
class _Slot:
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
    slot: _Slot | None = None,
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


_OBSERVE_EVERY = 5.0  # seconds: the shortest interval between two observations


def _trace_status_error(description: str) -> Any:
    from opentelemetry.trace import Status, StatusCode  # noqa: PLC0415 - tracing is on

    return Status(StatusCode.ERROR, description)


async def _run_attempt(
    dlq: DeadLetterQueue,
    task: FailedTask,
    *,
    owner: str,
    timeout: float | None,
    slot: _Slot | None,
) -> AttemptResult:
    handler: Handler | None = dlq.handler_for(task.workflow)
    limit = dlq.attempt_timeout_seconds if timeout is None else timeout
    result: Any = None
    outcome: dict[str, Any]
    try:
        if handler is None:
            raise LookupError(f"no handler registered for workflow {task.workflow!r}")
        if slot is None:
            with anyio.move_on_after(limit) as scope:
                result = await call_handler(handler, dict(task.task), list(task.repos))
            timed_out = scope.cancelled_caught
        else:
            result = await call_handler(handler, dict(task.task), list(task.repos))
            timed_out = False
        outcome = _timeout(limit) if timed_out else {"outcome": AttemptOutcome.SUCCESS}
    except RetryAfter as signal:
        outcome = {"outcome": AttemptOutcome.DEFERRED, "defer_seconds": signal.seconds}
    except anyio.get_cancelled_exc_class():
        with anyio.CancelScope(shield=True):
            if slot is not None and slot.timed_out:  # our watchdog: a timeout, not a stop
                await _record(dlq, task, owner, **_timeout(limit))
            else:
                await _release(dlq, task, owner)
        raise
    except Exception as exc:  # noqa: BLE001 - a workflow's failure is data, never a crash
        outcome = {
            "outcome": AttemptOutcome.FAILURE,
            "error": str(exc) or error_type_name(exc),
            "error_type": error_type_name(exc),
            "exc": exc,
        }
    stored = await _record(dlq, task, owner, **outcome)
    status = stored.status if stored is not None else DeadLetterStatus.RETRYING
    return AttemptResult(
        task.task_id, outcome["outcome"], status, result, outcome.get("error"), stored
    )


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
    if _log.isEnabledFor(logging.INFO):
        level = logging.WARNING if stored.status is DeadLetterStatus.EXHAUSTED else logging.INFO
        _log.log(
            level,
            "dlq.retry %s attempt %d: %s -> %s",
            task.task_id,
            task.retry_count,
            outcome.value,
            stored.status.value,
            extra={
                "action": "dlq.retry",
                "task_id": task.task_id,
                "workflow": task.workflow,
                "attempt": task.retry_count,
                "outcome": outcome.value,
                "status": stored.status.value,
            },
        )


async def _release(dlq: DeadLetterQueue, task: FailedTask, owner: str) -> None:
    now = dlq.clock.now()
    try:
        await dlq.traced_store.mutate(
            task.task_id,
            lambda current: lifecycle.release(
                _present(current, task.task_id), now=now, owner=owner
            ),
        )
    except DLQError as exc:
        _log.warning(
            "dlq.release %s failed: %s",
            task.task_id,
            exc,
            extra={"action": "dlq.release", "task_id": task.task_id, "outcome": "failed"},
        )


def _present(task: FailedTask | None, task_id: str) -> FailedTask:
    if task is None:
        raise TaskBusyError(task_id, reason="the task was deleted during its attempt")
    return task


class RetryProcessor:
    """Retries due tasks of one :class:`DeadLetterQueue`, ``concurrency`` at a time."""

    def __init__(
        self,
        dlq: DeadLetterQueue,
        *,
        concurrency: int | None = None,
        attempt_timeout: float | None = None,
        check_interval: float | None = None,
        batch_size: int | None = None,
        lease_seconds: float | None = None,
        worker_id: str | None = None,
    ) -> None:
        concurrency = dlq.concurrency if concurrency is None else concurrency
        check_interval = dlq.retry_interval_seconds if check_interval is None else check_interval
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if check_interval <= 0:
            raise ValueError(f"check_interval must be > 0, got {check_interval}")
        self.dlq = dlq
        self.concurrency = concurrency
        self.attempt_timeout = (
            dlq.attempt_timeout_seconds if attempt_timeout is None else attempt_timeout
        )
        self.check_interval = check_interval
        self.batch_size = dlq.batch_size if batch_size is None else batch_size
        self.lease_seconds = lease_seconds or dlq.lease_seconds
        self.worker_id = worker_id or dlq.worker_id
        self.running = False
        self.cycles = 0
        self._in_flight: dict[str, FailedTask] = {}
        self._scope: anyio.CancelScope | None = None
        self._wake: anyio.Event | None = None

    # -- claiming -----------------------------------------------------------------

    def _claimer(self, now: datetime) -> Callable[[FailedTask | None], FailedTask]:
        def claim(current: FailedTask | None) -> FailedTask:
            if current is None:
                raise TaskBusyError("?", reason="gone")
            if self.dlq.handler_for(current.workflow) is None:
                raise TaskBusyError(
                    current.task_id, reason=f"no handler here for workflow {current.workflow!r}"
                )
            if (
                current.status is DeadLetterStatus.RETRYING
                and current.retry_count >= current.max_retries
                and not current.lease_active(now)
            ):
                return lifecycle.expire(current, now=now)
            return lifecycle.claim(
                current,
                now=now,
                owner=self.worker_id,
                lease_seconds=self.lease_seconds,
                trigger="processor",
                attempts_kept=self.dlq.attempts_kept,
            )

        return claim

    async def claim(self, limit: int) -> list[FailedTask]:
        """Lease up to ``limit`` due tasks to this processor."""
        now = self.dlq.clock.now()
        tracer = self.dlq.telemetry.tracer()
        if tracer is None:
            changed = await self.dlq.traced_store.claim_due(now, limit, self._claimer(now))
        else:
            attributes = {"dlq.backend": self.dlq.store.backend, "dlq.worker": self.worker_id}
            with tracer.start_as_current_span("dlq.claim", attributes=attributes) as span:
                changed = await self.dlq.traced_store.claim_due(now, limit, self._claimer(now))
                span.set_attribute("dlq.claimed", len(changed))
        mine = []
        for task in changed:
            if task.status is DeadLetterStatus.RETRYING and task.lease_owner == self.worker_id:
                mine.append(task)
            else:  # a stranded attempt that had no retry left
                self.dlq.lifetime["lost"] += 1
                self.dlq.lifetime["exhausted"] += 1
                self.dlq.telemetry.count("exhausted", task)
                await self.dlq.exhausted(task)
        return mine

    async def _attempt(self, task: FailedTask, slot: _Slot) -> None:
        self._in_flight[task.task_id] = task
        slot.task = task
        slot.attempt += 1
        try:
            result = await run_attempt(
                self.dlq, task, owner=self.worker_id, timeout=self.attempt_timeout, slot=slot
            )
        finally:
            slot.task = None  # the watchdog leaves this slot alone from here on
            self._in_flight.pop(task.task_id, None)
            if self._wake is not None:
                self._wake.set()
        if result.status is DeadLetterStatus.EXHAUSTED and result.record is not None:
            await self.dlq.hooks.exhausted(result.record)

    async def _work(
        self, tasks: Iterator[FailedTask] | MemoryObjectReceiveStream[FailedTask], slot: _Slot
    ) -> None:
        """Run attempts one after another until ``tasks`` ends.

        A timed-out attempt ends the worker's cancel scope (the watchdog cancels
        it); the worker then goes on with a fresh scope. Any other cancellation
        (the processor stopping) propagates.
        """
        while True:
            with anyio.CancelScope() as scope:
                slot.scope = scope
                slot.timed_out = False
                if isinstance(tasks, MemoryObjectReceiveStream):
                    async for task in tasks:
                        await self._attempt(task, slot)
                else:
                    for task in tasks:
                        await self._attempt(task, slot)
                return

    async def _watchdog(self, slots: list[_Slot]) -> None:
        """Cancel the scope of any worker whose attempt ran past ``attempt_timeout``.

        It looks every ``min(attempt_timeout / 8, 1 s)``, so an attempt is stopped
        at most that much after its timeout.
        """
        timeout = self.attempt_timeout
        if not math.isfinite(timeout):
            return
        interval = max(0.001, min(timeout / 8, 1.0))
        while True:
            now = anyio.current_time()
            for slot in slots:
                if slot.task is None or slot.timed_out or slot.scope is None:
                    continue
                if slot.attempt != slot.seen_attempt:  # started since the last look
                    slot.seen_attempt = slot.attempt
                    slot.seen_at = now  # it started at or before now: never stopped early
                elif now - slot.seen_at >= timeout:
                    slot.timed_out = True
                    slot.scope.cancel()
            await anyio.sleep(interval)

    async def _pool(
        self, tasks: Iterator[FailedTask] | MemoryObjectReceiveStream[FailedTask], workers: int
    ) -> None:
        """Run ``workers`` workers over ``tasks`` under one watchdog, until ``tasks`` ends."""
        slots = [_Slot() for _ in range(workers)]
        async with anyio.create_task_group() as group:
            group.start_soon(self._watchdog, slots)
            async with anyio.create_task_group() as pool:
                for slot in slots:
                    pool.start_soon(self._work, tasks, slot)
            group.cancel_scope.cancel()

    # -- deterministic driving ------------------------------------------------------------

    async def run_once(self) -> int:
        """One cycle: claim what is due now (up to ``batch_size``), run it all to the end.

        Returns the number of attempts made.
        """
        tasks = await self.claim(self.batch_size)
        if tasks:
            await self._pool(iter(tasks), min(self.concurrency, len(tasks)))
        self.cycles += 1
        if self.dlq.alerts.rules:
            await self._observe_once()
        return len(tasks)

    async def _observe_once(self) -> None:
        try:
            await self.dlq.observe()
        except DLQError as exc:
            _log.warning(
                "dlq.observe skipped: %s", exc, extra={"action": "dlq.observe", "outcome": "failed"}
            )

    async def _observe(self) -> None:
        """Every check interval (at most every 5 s): statistics for the gauges, then the
        alert rules. ``run_once`` evaluates them at the end of its cycle instead."""
        while True:
            await self._observe_once()
            await anyio.sleep(max(self.check_interval, _OBSERVE_EVERY))

    async def drain(self, *, max_cycles: int = 1_000_000) -> int:
        """Run cycles until nothing is due now; the number of attempts made."""
        total = 0
        for _ in range(max_cycles):
            done = await self.run_once()
            if not done:
                break
            total += done
        return total

    # -- running forever -----------------------------------------------------------------

    def stop(self) -> None:
        """Ask :meth:`run` to stop; in-flight attempts are released back to PENDING."""
        if self._scope is not None:
            self._scope.cancel()

    def wakeup(self) -> None:
        """Look for due work now instead of at the next planned check."""
        if self._wake is not None:
            self._wake.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Retry due tasks until stopped or cancelled."""
        self.running = True
        self._wake = anyio.Event()
        self.dlq._wakeup = self.wakeup
        send, receive = anyio.create_memory_object_stream[FailedTask](math.inf)
        try:
            with anyio.CancelScope() as scope:
                self._scope = scope
                task_status.started()
                async with anyio.create_task_group() as group:
                    group.start_soon(self._renew_leases)
                    group.start_soon(self._observe)
                    group.start_soon(self._pool, receive, self.concurrency)
                    await self._loop(send)
        finally:
            self.running = False
            self._scope = None
            if self.dlq._wakeup == self.wakeup:
                self.dlq._wakeup = None
            with anyio.CancelScope(shield=True):  # claimed but never started: give back
                while True:
                    try:
                        task = receive.receive_nowait()
                    except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                        break
                    self._in_flight.pop(task.task_id, None)
                    await _release(self.dlq, task, self.worker_id)
            send.close()
            receive.close()

    async def _loop(self, send: MemoryObjectSendStream[FailedTask]) -> None:
        while True:
            self._wake = anyio.Event()
            free = self.concurrency - len(self._in_flight)
            claimed: list[FailedTask] = []
            if free > 0:
                try:
                    claimed = await self.claim(min(free, self.batch_size))
                except DLQError as exc:
                    _log.warning("dlq.claim failed: %s", exc, extra={"action": "dlq.claim"})
                for task in claimed:
                    self._in_flight[task.task_id] = task
                    send.send_nowait(task)
            self.cycles += 1
            if len(claimed) == free:
                await self._wake.wait()  # saturated: go on when a slot frees
                continue
            await self._idle(took_any=bool(claimed))

    async def _idle(self, *, took_any: bool) -> None:
        """Wait for new work, a free slot, the next due task or the check interval.

        Tasks that are due but were not taken (no handler here, or busy) do not
        make the loop spin: without a claim this cycle it waits for the interval.
        """
        wait = self.check_interval
        try:
            due = await self.dlq.traced_store.next_due_at()
        except DLQError:
            due = None
        if due is not None:
            until_due = (due - self.dlq.clock.now()).total_seconds()
            if until_due > 0 or took_any:
                wait = min(wait, max(0.0, until_due))
        if wait <= 0:
            await anyio.lowlevel.checkpoint()
            return
        wake = self._wake
        assert wake is not None  # noqa: S101 - set by run()
        with anyio.move_on_after(wait):
            await wake.wait()

    async def _renew_leases(self) -> None:
        interval = max(0.05, self.lease_seconds / 3)
        while True:
            await anyio.sleep(interval)
            now = self.dlq.clock.now()
            for task_id in list(self._in_flight):
                try:
                    await self.dlq.traced_store.mutate(task_id, partial(self._renew, task_id, now))
                except DLQError as exc:
                    _log.warning(
                        "dlq.renew %s failed: %s",
                        task_id,
                        exc,
                        extra={"action": "dlq.renew", "task_id": task_id, "outcome": "failed"},
                    )

    def _renew(self, task_id: str, now: datetime, current: FailedTask | None) -> FailedTask:
        return lifecycle.renew(
            _present(current, task_id),
            now=now,
            owner=self.worker_id,
            lease_seconds=self.lease_seconds,
        )
