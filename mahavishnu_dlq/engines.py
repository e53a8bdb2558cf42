"""Engines: retrying through a workflow engine instead of in the processor's process.

A Celery task, a Dramatiq message or a Prefect flow run that failed for good is
stored with ``metadata["engine"]`` naming its engine (see
:mod:`mahavishnu_dlq.integrations`). Its retry must run where the engine runs
it — re-sent to the task's queue, not called here — so an integration registers
an *engine handler* with :meth:`EngineMethods.register_engine`: it is called with
the whole :class:`~mahavishnu_dlq.models.FailedTask` (routing, ids, args) for
every record of its engine whose workflow has no handler of its own.

Before an engine handler runs, the attempt the processor claimed is passed to its
*dispatch token* (``<engine>:<task id>:<attempt>``, the record's ``lease_owner`` as
the handler gets it) for the engine's ``wait_seconds``. The handler then either
returns (the retry succeeded here), raises (a failed attempt, as for any handler),
or puts the token in what it sends and raises
:class:`~mahavishnu_dlq.errors.Dispatched`: the attempt stays running, and the
engine's worker reports the outcome with :meth:`EngineMethods.report_outcome` —
success completes the task, a failure counts as the attempt. Passing the lease
*before* sending means a worker that runs and reports before the handler has even
returned finds the attempt held under its token. A report is a compare-and-set on
that token, so a late one (after the wait ran out and the task was sent again)
changes nothing, and an engine that never reports costs one lost attempt when the
wait is over.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

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

__all__ = [
    "DEFAULT_WAIT_SECONDS",
    "ENGINE_KEY",
    "EngineHandler",
    "EngineMethods",
    "dispatch_token",
    "dispatched",
    "hand_off",
    "record_report",
]

_log = library_logger("mahavishnu_dlq")

#: How long a dispatched attempt waits for its engine's report by default.
DEFAULT_WAIT_SECONDS = 3600.0

#: The metadata key naming the engine a record came from ("celery", "dramatiq" …).
ENGINE_KEY = "engine"

#: An engine handler: called with the whole record (sync or async).
EngineHandler = Callable[[FailedTask], Any]


class EngineMethods:
    """The engine methods of :class:`~mahavishnu_dlq.queue.DeadLetterQueue`."""

    engines: dict[str, EngineHandler]
    engine_waits: dict[str, float]

    def _queue(self) -> DeadLetterQueue:
        return self  # type: ignore[return-value]  # mixed into DeadLetterQueue only

    def register_engine(
        self, engine: str, handler: EngineHandler, *, wait_seconds: float = DEFAULT_WAIT_SECONDS
    ) -> None:
        """Retry the records of ``engine`` (``metadata["engine"]``) with
        ``handler(record)``, unless their workflow has a handler of its own.

        Before the handler runs, the attempt is held under its dispatch token
        (``record.lease_owner``, :func:`dispatch_token`) for ``wait_seconds``: the
        handler puts the token in what it sends and raises
        :class:`~mahavishnu_dlq.errors.Dispatched`, and the engine's worker reports
        with :meth:`report_outcome` within that time (else the attempt is lost and
        the task sent again). A handler may also return (success) or raise (a failed
        attempt) when it knows the outcome at once."""
        if not isinstance(engine, str) or not engine:
            raise ValueError("an engine handler needs the engine's name")
        if not callable(handler):
            raise TypeError(f"an engine handler must be callable, got {type(handler).__name__}")
        if isinstance(wait_seconds, bool) or not wait_seconds > 0:  # also NaN
            raise ValueError(f"wait_seconds must be > 0, got {wait_seconds!r}")
        self.engines[engine] = handler
        self.engine_waits[engine] = float(wait_seconds)

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
        comes next). ``token`` is the one the attempt was held under
        (``record.lease_owner`` as the engine's handler got it). Returns the record as
        stored, or None when the report came too late or twice (the task is no
        longer held under ``token``): nothing is changed then."""
        dlq = self._queue()
        require_str(task_id, "task_id")
        require_str(token, "token")
        return await record_report(dlq, task_id, token, error)


def dispatch_token(engine: str, task: FailedTask) -> str:
    """The token an engine's attempt is held under: ``<engine>:<task id>:<attempt>``."""
    return f"{engine}:{task.task_id}:{task.retry_count}"


async def hand_off(dlq: DeadLetterQueue, task: FailedTask, owner: str) -> FailedTask | None:
    """Before its engine's handler runs, pass the attempt ``owner`` claimed to its
    dispatch token for the engine's wait: a worker that runs the re-sent work and
    reports before the handler has even returned finds the attempt already held
    under the token it carries. None when ``owner``'s lease was lost meanwhile."""
    engine = dlq.engine_of(task) or ""
    token = dispatch_token(engine, task)
    now = dlq.clock.now()

    def pass_lease(current: FailedTask | None) -> FailedTask:
        return lifecycle.hand_off(
            require_present(current, task.task_id),
            now=now,
            owner=owner,
            token=token,
            wait_seconds=dlq.engine_waits.get(engine, DEFAULT_WAIT_SECONDS),
        )

    try:
        return await dlq.traced_store.mutate(task.task_id, pass_lease)
    except TaskBusyError as exc:
        dlq.lifetime["lost"] += 1
        _log.warning(
            "dlq.retry %s: not sent to %s: %s",
            task.task_id,
            engine,
            exc,
            extra={"action": "dlq.retry", "task_id": task.task_id, "outcome": "lease_lost"},
        )
        return None


def dispatched(dlq: DeadLetterQueue, task: FailedTask, signal: Dispatched) -> AttemptResult:
    """The engine's handler sent the work (``task`` is held under its token): count
    and log it; the attempt stays running until :func:`record_report`."""
    dlq.lifetime["dispatched"] += 1
    if _log.isEnabledFor(logging.INFO):
        _log.info(
            "dlq.retry %s attempt %d: sent as %s%s",
            task.task_id,
            task.retry_count,
            task.lease_owner,
            f" ({signal.reason})" if signal.reason else "",
            extra={
                "action": "dlq.retry",
                "task_id": task.task_id,
                "workflow": task.workflow,
                "attempt": task.retry_count,
                "outcome": "dispatched",
                "token": task.lease_owner,
            },
        )
    return AttemptResult(
        task.task_id, AttemptOutcome.RUNNING, DeadLetterStatus.RETRYING, record=task
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
