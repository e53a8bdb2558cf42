"""Engines: retrying through a workflow engine instead of in the processor's process.

A Celery task, a Dramatiq message or a Prefect flow run that failed for good is
stored with ``metadata["engine"]`` naming its engine (see
:mod:`mahavishnu_dlq.integrations`). Its retry must run where the engine runs
it — re-sent to the task's queue, not called here — so an integration registers
an *engine handler* with :meth:`EngineMethods.register_engine`: it is called with
the whole :class:`~mahavishnu_dlq.models.FailedTask` (routing, ids, args) for
every record of its engine whose workflow has no handler of its own.

An engine handler either returns (the retry succeeded here), raises (a failed
attempt, as for any handler), or raises :class:`~mahavishnu_dlq.errors.Dispatched`
once it has sent the work: the attempt then stays running, its lease passed to the
dispatch token, and the engine's worker reports the outcome with
:meth:`EngineMethods.report_outcome` — success completes the task, a failure
counts as the attempt. A report is a compare-and-set on that token, so a late one
(after the wait ran out and the task was retried again) changes nothing, and an
engine that never reports costs one lost attempt when the wait is over.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio

from mahavishnu_dlq import lifecycle
from mahavishnu_dlq.attempt import (
    AttemptResult,
    _category,
    _failure,
    _record,
    require_present,
)
from mahavishnu_dlq.errors import Dispatched, TaskBusyError
from mahavishnu_dlq.limits import bound_text, clean_text, require_str
from mahavishnu_dlq.models import AttemptOutcome, DeadLetterStatus, ErrorCategory, FailedTask
from mahavishnu_dlq.printable import library_logger

if TYPE_CHECKING:
    from mahavishnu_dlq.queue import DeadLetterQueue

__all__ = ["ENGINE_KEY", "EngineHandler", "EngineMethods", "hand_off", "record_report"]

_log = library_logger("mahavishnu_dlq")

#: The metadata key naming the engine a record came from ("celery", "dramatiq" …).
ENGINE_KEY = "engine"

#: An engine handler: called with the whole record (sync or async).
EngineHandler = Callable[[FailedTask], Any]


class EngineMethods:
    """The engine methods of :class:`~mahavishnu_dlq.queue.DeadLetterQueue`."""

    engines: dict[str, EngineHandler]

    def _queue(self) -> DeadLetterQueue:
        return self  # type: ignore[return-value]  # mixed into DeadLetterQueue only

    def register_engine(self, engine: str, handler: EngineHandler) -> None:
        """Retry the records of ``engine`` (``metadata["engine"]``) with
        ``handler(record)``, unless their workflow has a handler of its own."""
        if not isinstance(engine, str) or not engine:
            raise ValueError("an engine handler needs the engine's name")
        self.engines[engine] = handler

    def engine_of(self, task: FailedTask) -> str | None:
        """The engine ``task`` came from (``metadata["engine"]``), or None."""
        engine = task.metadata.get(ENGINE_KEY)
        return engine if isinstance(engine, str) else None

    def can_retry(self, task: FailedTask) -> bool:
        """Whether this queue has something to retry ``task`` with: its workflow's
        handler, its engine's handler, or the default callback."""
        dlq = self._queue()
        if task.workflow in dlq.handlers or dlq.default_callback is not None:
            return True
        engine = self.engine_of(task) if self.engines else None
        return engine is not None and engine in self.engines

    async def enqueue_record(self, record: FailedTask) -> FailedTask:
        """Store a record made by :meth:`~DeadLetterQueue.build_record`, as
        :meth:`~DeadLetterQueue.enqueue` stores its own (idempotent by task id, the
        same limits). An integration builds the record in the engine's thread, where
        the failing run's span is current, and stores it from the queue's loop."""
        if not isinstance(record, FailedTask):
            raise TypeError(f"enqueue_record takes a FailedTask, got {type(record).__name__}")
        return await self._queue()._capture.enqueue(record)

    async def report_outcome(
        self, task_id: str, token: str, *, error: BaseException | str | None = None
    ) -> FailedTask | None:
        """Record how a dispatched retry ended: ``error=None`` is a success (the task
        completes), an exception or text a failed attempt (the policy decides what
        comes next). ``token`` is the one the handler raised
        :class:`~mahavishnu_dlq.errors.Dispatched` with. Returns the record as
        stored, or None when the report came too late or twice (the task is no
        longer held under ``token``): nothing is changed then."""
        dlq = self._queue()
        require_str(task_id, "task_id")
        require_str(token, "token")
        return await record_report(dlq, task_id, token, error)


async def hand_off(
    dlq: DeadLetterQueue, task: FailedTask, owner: str, signal: Dispatched
) -> AttemptResult:
    """The handler sent the retry to its engine: pass the lease to the dispatch token;
    the attempt stays running until :func:`record_report` (or the lease runs out)."""
    now = dlq.clock.now()

    def hand_off(current: FailedTask | None) -> FailedTask:
        return lifecycle.hand_off(
            require_present(current, task.task_id),
            now=now,
            owner=owner,
            token=signal.token,
            wait_seconds=signal.wait_seconds,
        )

    try:
        with anyio.CancelScope(shield=True):  # the work is sent: say so even when stopping
            stored: FailedTask | None = await dlq.traced_store.mutate(task.task_id, hand_off)
    except TaskBusyError as exc:
        stored = None
        dlq.lifetime["lost"] += 1
        _log.warning(
            "dlq.retry %s: dispatched as %s, but %s",
            task.task_id,
            signal.token,
            exc,
            extra={"action": "dlq.retry", "task_id": task.task_id, "outcome": "lease_lost"},
        )
    else:
        dlq.lifetime["dispatched"] += 1
        if _log.isEnabledFor(logging.INFO):
            _log.info(
                "dlq.retry %s attempt %d: dispatched as %s%s",
                task.task_id,
                task.retry_count,
                signal.token,
                f" ({signal.reason})" if signal.reason else "",
                extra={
                    "action": "dlq.retry",
                    "task_id": task.task_id,
                    "workflow": task.workflow,
                    "attempt": task.retry_count,
                    "outcome": "dispatched",
                    "token": signal.token,
                },
            )
    return AttemptResult(
        task.task_id, AttemptOutcome.RUNNING, DeadLetterStatus.RETRYING, record=stored
    )


async def record_report(
    dlq: DeadLetterQueue, task_id: str, token: str, error: BaseException | str | None
) -> FailedTask | None:
    """Record an engine's report on the attempt dispatched under ``token`` (see
    :meth:`DeadLetterQueue.report_outcome`); None when it is no longer held so."""
    current = await dlq.traced_store.get(task_id)
    if current is None or current.lease_owner != token:
        _log.info(
            "dlq.report %s: %s holds no attempt of it (late or repeated report); ignored",
            task_id,
            token,
            extra={"action": "dlq.report", "task_id": task_id, "outcome": "ignored"},
        )
        return None
    category: ErrorCategory | None = None
    if error is None:
        outcome: dict[str, Any] = {"outcome": AttemptOutcome.SUCCESS}
    elif isinstance(error, BaseException):
        outcome = _failure(dlq, error)
        category = _category(dlq, error)
    else:
        text = clean_text(str(error)) or "the engine reported a failure"
        outcome = {
            "outcome": AttemptOutcome.FAILURE,
            "error": bound_text(text, dlq.limits.max_error_bytes),
            "error_type": "EngineFailure",
        }
    stored = await _record(dlq, current, token, **outcome)
    if stored is None:
        return None
    result = AttemptResult(
        task_id, outcome["outcome"], stored.status, None, outcome.get("error"), stored, category
    )
    try:
        await dlq.downstream.record(stored, result)
    except Exception as exc:  # noqa: BLE001 - the breaker sees the next outcome
        _log.warning("dlq.breaker %s: the outcome was not recorded (%s)", stored.workflow, exc)
    if stored.status is DeadLetterStatus.EXHAUSTED:
        await dlq.hooks.exhausted(stored)
    return stored
