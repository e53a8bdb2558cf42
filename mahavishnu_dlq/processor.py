"""RetryProcessor: claims due tasks and retries them in the background.

``run()`` keeps up to ``concurrency`` attempts in flight: it claims due tasks
from the store (a lease each), runs their handlers with a per-attempt timeout
(:mod:`mahavishnu_dlq.attempt`), and records the outcome through the state
machine. It holds up to ``concurrency`` times ``prefetch`` claimed tasks (running, and
waiting for a slot) so that one claim serves many attempts, and claims again when
half of the waiting ones have started; a waiting task whose breaker opened
meanwhile is given back unattempted. It wakes when a task falls due, when its
buffer is half empty, when new work is enqueued, or every ``check_interval``.
Leases of the held tasks are renewed in one batch; stopping (or cancelling) the
processor releases in-flight attempts back to PENDING in shielded cleanup.

It never dies of an error of the store or of one record: a failed claim, lease
renewal, statistics read or recording of an outcome is logged and tried again
later (a claim after the check interval), and an unexpected error ends only the
current cycle, which starts again after a growing pause (1 s, doubling, at most
a minute). So nothing the processor meets cancels the host's task. Only a
handler's ``KeyboardInterrupt`` or ``SystemExit`` (and other ``BaseException``)
ends it: its attempt is given back first, then the exception propagates as
itself, from :meth:`run_once` as from :meth:`run`.

For tests, :meth:`run_once` does one cycle to completion and :meth:`drain`
repeats cycles until nothing is due — both deterministic under a fake clock.
Any number of processors (threads, processes, machines) may share one store:
claims are atomic, so a task never runs twice at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING

import anyio
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from mahavishnu_dlq import lifecycle
from mahavishnu_dlq.attempt import (
    AttemptResult,
    Slot,
    call_handler,
    release,
    require_present,
    run_attempt,
)
from mahavishnu_dlq.downstream.shared import Gate
from mahavishnu_dlq.errors import TaskBusyError
from mahavishnu_dlq.jobs.runner import JobRunner
from mahavishnu_dlq.models import DeadLetterStatus, FailedTask
from mahavishnu_dlq.printable import library_logger

if TYPE_CHECKING:
    from mahavishnu_dlq.queue import DeadLetterQueue

__all__ = ["AttemptResult", "RetryProcessor", "call_handler", "run_attempt"]

_log = library_logger("mahavishnu_dlq")

_OBSERVE_EVERY = 5.0  # seconds: the shortest interval between two observations
_RESTART_FIRST, _RESTART_MAX = 1.0, 60.0  # pauses before a crashed cycle starts again


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
        prefetch: int | None = None,
    ) -> None:
        concurrency = dlq.concurrency if concurrency is None else concurrency
        prefetch = dlq.prefetch if prefetch is None else prefetch
        check_interval = dlq.retry_interval_seconds if check_interval is None else check_interval
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if check_interval <= 0:
            raise ValueError(f"check_interval must be > 0, got {check_interval}")
        if prefetch < 1:
            raise ValueError(f"prefetch must be >= 1, got {prefetch}")
        self.dlq = dlq
        self.concurrency = concurrency
        self.attempt_timeout = (
            dlq.attempt_timeout_seconds if attempt_timeout is None else attempt_timeout
        )
        self.check_interval = check_interval
        self.batch_size = dlq.batch_size if batch_size is None else batch_size
        self.lease_seconds = lease_seconds or dlq.lease_seconds
        self.worker_id = worker_id or dlq.worker_id
        self.prefetch = prefetch
        #: tasks ``run`` holds at most: running, and claimed ahead for the next free slots
        self.capacity = concurrency * prefetch
        #: ``run`` claims again when it holds this many or fewer (its buffer is half empty)
        self.low_water = concurrency + (self.capacity - concurrency) // 2
        self.running = False
        self.cycles = 0
        self._in_flight: dict[str, FailedTask] = {}
        self._probes: set[str] = set()  # claimed as a half-open breaker's probes
        self._scope: anyio.CancelScope | None = None
        self._pool_scope: anyio.CancelScope | None = None
        self._wake: anyio.Event | None = None
        self._job_wake: anyio.Event | None = None
        #: runs the bulk jobs this processor takes (:mod:`mahavishnu_dlq.jobs`)
        self.jobs = JobRunner(dlq, worker_id=self.worker_id, retention=True)
        self._fatal: BaseException | None = None  # a handler's KeyboardInterrupt, SystemExit …

    # -- claiming -----------------------------------------------------------------

    def _claimer(self, now: datetime, gate: Gate) -> Callable[[FailedTask | None], FailedTask]:
        def claim(current: FailedTask | None) -> FailedTask:
            if current is None:
                raise TaskBusyError("?", reason="gone")
            if not self.dlq.can_retry(current):
                raise TaskBusyError(
                    current.task_id, reason=f"no handler here for workflow {current.workflow!r}"
                )
            if (
                current.status is DeadLetterStatus.RETRYING
                and current.retry_count >= current.max_retries
                and not current.lease_active(now)
            ):
                return lifecycle.expire(current, now=now)
            if not gate.admits(current.workflow):  # its downstream's breaker is open
                raise TaskBusyError(current.task_id, reason=gate.reason(current.workflow))
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
        gate = await self.dlq.downstream.gate(limit)
        now = self.dlq.clock.now()
        claimer = self._claimer(now, gate)
        tracer = self.dlq.telemetry.tracer()
        try:
            if tracer is None:
                changed = await self.dlq.traced_store.claim_due(
                    now, limit, claimer, skip_workflows=gate.blocked
                )
            else:
                attributes = {"dlq.backend": self.dlq.store.backend, "dlq.worker": self.worker_id}
                with tracer.start_as_current_span("dlq.claim", attributes=attributes) as span:
                    changed = await self.dlq.traced_store.claim_due(
                        now, limit, claimer, skip_workflows=gate.blocked
                    )
                    span.set_attribute("dlq.claimed", len(changed))
        finally:
            if gate.probes or gate.tokens or gate.unseen:
                await self.dlq.downstream.settle(gate)
        mine = []
        for task in changed:
            if task.status is DeadLetterStatus.RETRYING and task.lease_owner == self.worker_id:
                mine.append(task)
                if task.workflow in gate.probes:
                    self._probes.add(task.task_id)
            else:  # a stranded attempt that had no retry left
                self.dlq.lifetime["lost"] += 1
                self.dlq.lifetime["exhausted"] += 1
                self.dlq.telemetry.count("exhausted", task)
                await self.dlq.exhausted(task)
        return mine

    async def _attempt(self, task: FailedTask, slot: Slot) -> None:
        self._in_flight[task.task_id] = task
        slot.task = task
        slot.attempt += 1
        result: AttemptResult | None = None
        try:
            if task.task_id not in self._probes and self.dlq.downstream.holds(task.workflow):
                # its breaker opened (or its workflow was paused) while it waited for a
                # slot: given back unattempted, claimed again once the gate lets it
                await release(self.dlq, task, self.worker_id)
                return
            result = await run_attempt(
                self.dlq, task, owner=self.worker_id, timeout=self.attempt_timeout, slot=slot
            )
        except Exception as exc:  # noqa: BLE001 - the outcome could not be written: the
            # lease runs out and the task is claimed again; the worker goes on
            _log.warning(
                "dlq.retry %s: the outcome was not recorded (%s: %s); the task is retried "
                "when its lease expires",
                task.task_id,
                type(exc).__name__,
                exc,
                extra={"action": "dlq.retry", "task_id": task.task_id, "outcome": "not_recorded"},
            )
        except anyio.get_cancelled_exc_class():
            raise
        except BaseException as exc:  # noqa: BLE001 - a handler's KeyboardInterrupt, SystemExit: the
            # attempt was given back; stop everything and raise it from the driving task,
            # as itself (raised here it would come out wrapped in an exception group)
            self._halt(exc)
        finally:
            slot.task = None  # the watchdog leaves this slot alone from here on
            self._in_flight.pop(task.task_id, None)
            self._probes.discard(task.task_id)
            if self._wake is not None and len(self._in_flight) <= self.low_water:
                self._wake.set()  # room for a claim worth its round trips
        if result is not None:
            await self._feed_breaker(task, result)
        if (
            result is not None
            and result.status is DeadLetterStatus.EXHAUSTED
            and result.record is not None
        ):
            await self.dlq.hooks.exhausted(result.record)

    async def _feed_breaker(self, task: FailedTask, result: AttemptResult) -> None:
        """Add the attempt's outcome to its workflow's breaker (a store that cannot be
        reached for it costs this one outcome, not the processor)."""
        try:
            await self.dlq.downstream.record(task, result)
        except Exception as exc:  # noqa: BLE001 - the breaker sees the next outcome
            _log.warning(
                "dlq.breaker %s: the outcome was not recorded (%s: %s)",
                task.workflow,
                type(exc).__name__,
                exc,
                extra={"action": "dlq.breaker", "workflow": task.workflow, "outcome": "failed"},
            )

    def _halt(self, exc: BaseException) -> None:
        if self._fatal is None:
            self._fatal = exc
        for scope in (self._scope, self._pool_scope):
            if scope is not None:
                scope.cancel()

    def _raise_fatal(self) -> None:
        fatal, self._fatal = self._fatal, None
        if fatal is not None:
            raise fatal

    async def _work(
        self, tasks: Iterator[FailedTask] | MemoryObjectReceiveStream[FailedTask], slot: Slot
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

    async def _watchdog(self, slots: list[Slot]) -> None:
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
        slots = [Slot() for _ in range(workers)]
        async with anyio.create_task_group() as group:
            self._pool_scope = group.cancel_scope
            group.start_soon(self._watchdog, slots)
            async with anyio.create_task_group() as pool:
                for slot in slots:
                    pool.start_soon(self._work, tasks, slot)
            group.cancel_scope.cancel()

    # -- deterministic driving ------------------------------------------------------------

    async def run_once(self) -> int:
        """One cycle: run the bulk jobs waiting for a runner to their end, then claim
        what is due now (up to ``batch_size``) and run it all to the end.

        Returns the number of attempts made. A handler's ``KeyboardInterrupt`` or
        ``SystemExit`` propagates as itself once every attempt of the cycle was given back.
        """
        await self.jobs.run_pending()
        tasks = await self.claim(self.batch_size)
        if tasks:
            try:
                await self._pool(iter(tasks), min(self.concurrency, len(tasks)))
            finally:
                self._pool_scope = None
            self._raise_fatal()
        self.cycles += 1
        if self.dlq.alerts.rules:
            await self._observe_once()
        return len(tasks)

    async def _observe_once(self) -> None:
        try:
            await self.dlq.observe()
        except Exception as exc:  # noqa: BLE001 - statistics are not worth stopping for
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
        """Look for due work and new jobs now instead of at the next planned check."""
        if self._wake is not None:
            self._wake.set()
        if self._job_wake is not None:
            self._job_wake.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Retry due tasks until stopped or cancelled.

        An unexpected error ends the current cycle (its attempts are given back) and
        a new one starts after a pause; only cancellation, :meth:`stop` or a handler's
        ``KeyboardInterrupt``/``SystemExit`` end the processor.
        """
        self.running = True
        self._wake = anyio.Event()
        self.dlq._wakeup = self.wakeup
        send, receive = anyio.create_memory_object_stream[FailedTask](math.inf)
        try:
            with anyio.CancelScope() as scope:
                self._scope = scope
                task_status.started()
                pause = _RESTART_FIRST
                while True:
                    try:
                        async with anyio.create_task_group() as group:
                            group.start_soon(self._renew_leases)
                            group.start_soon(self._observe)
                            group.start_soon(self._run_jobs)
                            group.start_soon(self._pool, receive, self.concurrency)
                            await self._loop(send)
                    except Exception as exc:  # noqa: BLE001 - never let the host's task die
                        _log.error(
                            "dlq.processor %s: the cycle failed (%s: %s); starting again in %g s",
                            self.worker_id,
                            type(exc).__name__,
                            exc,
                            pause,
                            extra={"action": "dlq.processor", "outcome": "restarted"},
                        )
                        await anyio.sleep(pause)
                        pause = min(2 * pause, _RESTART_MAX)
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
                    self._probes.discard(task.task_id)
                    await release(self.dlq, task, self.worker_id)
            send.close()
            receive.close()
        self._raise_fatal()

    async def _loop(self, send: MemoryObjectSendStream[FailedTask]) -> None:
        while True:
            self._wake = anyio.Event()
            held = len(self._in_flight)
            want = min(self.capacity - held, self.batch_size) if held <= self.low_water else 0
            claimed: list[FailedTask] = []
            if want > 0:
                try:
                    claimed = await self.claim(want)
                except Exception as exc:  # noqa: BLE001 - tried again after the interval
                    _log.warning(
                        "dlq.claim failed: %s: %s",
                        type(exc).__name__,
                        exc,
                        extra={"action": "dlq.claim", "outcome": "failed"},
                    )
                for task in claimed:
                    self._in_flight[task.task_id] = task
                    send.send_nowait(task)
            self.cycles += 1
            if want <= 0 or len(claimed) == want:
                await self._wake.wait()  # saturated: go on when the buffer is half empty
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
        except Exception:  # noqa: BLE001 - then the check interval decides
            due = None
        if due is not None:
            until_due = (due - self.dlq.clock.now()).total_seconds()
            if until_due > 0 or took_any:
                wait = min(wait, max(0.0, until_due))
        held = self.dlq.downstream.wake_in()  # a rate limit's next token, a pause's end
        if held is not None:
            wait = min(wait, max(0.0, held))
        if wait <= 0:
            await anyio.lowlevel.checkpoint()
            return
        wake = self._wake
        assert wake is not None  # noqa: S101 - set by run()
        with anyio.move_on_after(wait):
            await wake.wait()

    async def _run_jobs(self) -> None:
        """Take bulk jobs as they come (every ``job_poll_seconds``, or at once when one
        is started in this process) and run each to its end, one at a time."""
        while True:
            self._job_wake = anyio.Event()
            try:
                await self.jobs.run_pending()
            except Exception as exc:  # noqa: BLE001 - the job was given back or failed
                _log.warning(
                    "dlq.job run stopped: %s: %s",
                    type(exc).__name__,
                    exc,
                    extra={"action": "dlq.job", "outcome": "stopped"},
                )
            with anyio.move_on_after(self.dlq.job_poll_seconds):
                await self._job_wake.wait()

    async def _renew_leases(self) -> None:
        interval = max(0.05, self.lease_seconds / 3)
        while True:
            await anyio.sleep(interval)
            await self._renew_held()

    async def _renew_held(self) -> None:
        """Renew the lease of every task this processor holds (running or waiting for a
        slot), in one batch. A task that finished meanwhile needs none: its refusal is
        not a failure."""
        now = self.dlq.clock.now()
        held = list(self._in_flight)
        if not held:
            return
        items = [(task_id, partial(self._renew, task_id, now)) for task_id in held]
        try:
            results: list[FailedTask | Exception] = await self.dlq.traced_store.mutate_many(items)
        except Exception as exc:  # noqa: BLE001 - the attempts go on; so does renewal
            results = [exc] * len(held)
        for task_id, result in zip(held, results, strict=True):
            if isinstance(result, Exception) and task_id in self._in_flight:
                _log.warning(
                    "dlq.renew %s failed: %s",
                    task_id,
                    result,
                    extra={"action": "dlq.renew", "task_id": task_id, "outcome": "failed"},
                )

    def _renew(self, task_id: str, now: datetime, current: FailedTask | None) -> FailedTask:
        return lifecycle.renew(
            require_present(current, task_id),
            now=now,
            owner=self.worker_id,
            lease_seconds=self.lease_seconds,
        )
