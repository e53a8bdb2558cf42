"""EngineBridge: an engine's worker talking to the queue, safely.

An engine calls us from its own threads (Celery's signals, Dramatiq's middleware)
or its own loop (Prefect's hooks), often in processes forked after the host set
us up. The bridge gives each process its own queue, started on an event loop in
a background thread (:class:`~mahavishnu_dlq.blocking.BlockingDLQ`) the first
time it is needed, so nothing opened before a fork is used after it.

Nothing the bridge does may break the host's worker: every capture or report
that fails is logged, counted (:attr:`EngineBridge.counters`) and swallowed, and
the engine's own handling goes on. The record is built in the caller's thread,
where the failing run's OpenTelemetry span is current, so the stored failure
context carries its trace and retry spans link to it.
"""

from __future__ import annotations

import atexit
import os
import re
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from mahavishnu_dlq.context import current_span_ids
from mahavishnu_dlq.printable import library_logger

if TYPE_CHECKING:
    from mahavishnu_dlq.blocking import BlockingDLQ
    from mahavishnu_dlq.models import FailedTask
    from mahavishnu_dlq.queue import DeadLetterQueue
    from mahavishnu_dlq.settings import DLQSettings

__all__ = ["COUNTERS", "EngineBridge"]

_log = library_logger("mahavishnu_dlq.integrations")

#: What :attr:`EngineBridge.counters` counts.
COUNTERS = ("captured", "capture_failed", "reported", "report_ignored", "report_failed")


class EngineBridge:
    """One engine's link between its workers and a queue (see the module docstring).

    ``dlq`` is the queue the host set up (its processor retries the engine's
    records); worker processes capture through a queue of their own built from
    its settings (or ``dlq_settings``, or :meth:`DLQSettings.load`), with no
    processor. A queue built without settings (a test's memory store) is used
    as it is, in the process that made it.
    """

    def __init__(
        self,
        engine: str,
        dlq: DeadLetterQueue | None = None,
        *,
        dlq_settings: DLQSettings | None = None,
    ) -> None:
        self.engine = engine
        self._given = dlq
        self._settings = dlq_settings if dlq_settings is not None else _settings_of(dlq)
        self._dlq: DeadLetterQueue | None = dlq
        self._lock = threading.RLock()  # blocking() may build the host queue (dlq) under it
        self._pid = os.getpid()
        self._blocking: BlockingDLQ | None = None
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)

    # -- the queues ---------------------------------------------------------------------

    @property
    def dlq(self) -> DeadLetterQueue:
        """The host's queue: the one whose processor retries this engine's records."""
        if self._dlq is None:
            with self._lock:
                if self._dlq is None:
                    self._dlq = self._build()
        return self._dlq

    def _build(self) -> DeadLetterQueue:
        from mahavishnu_dlq.queue import DeadLetterQueue  # noqa: PLC0415 - on first use
        from mahavishnu_dlq.settings import DLQSettings  # noqa: PLC0415

        settings = self._settings if self._settings is not None else DLQSettings.load()
        self._settings = settings
        return DeadLetterQueue.from_settings(settings)

    def blocking(self) -> BlockingDLQ:
        """This process's capturing queue on its own loop thread (started on first use;
        a process forked since gets a new one)."""
        pid = os.getpid()
        blocking = self._blocking
        if blocking is not None and self._pid == pid:
            return blocking
        with self._lock:
            if self._blocking is None or self._pid != pid:
                self._pid = pid
                self._blocking = self._start_capturing()
            return self._blocking

    def _start_capturing(self) -> BlockingDLQ:
        from mahavishnu_dlq.blocking import BlockingDLQ  # noqa: PLC0415 - on first use
        from mahavishnu_dlq.queue import DeadLetterQueue  # noqa: PLC0415

        if self._settings is None and self._given is not None:
            queue = self._given  # built by hand, without settings: used as it is
        else:
            settings = self._settings if self._settings is not None else self.dlq.settings
            if settings is None:  # pragma: no cover - _build always sets them
                raise RuntimeError("the queue has no settings to build a capturing queue from")
            # capture only: the processors run elsewhere (the host's queue, the CLI)
            queue = DeadLetterQueue.from_settings(
                settings.model_copy(update={"retry_processor_enabled": False})
            )
        blocking = BlockingDLQ(queue)
        blocking.start()
        atexit.register(blocking.stop)
        return blocking

    def close(self) -> None:
        """Stop this process's capturing queue (its store closed); a later capture
        starts it again."""
        with self._lock:
            blocking, self._blocking = self._blocking, None
        if blocking is not None and self._pid == os.getpid():
            atexit.unregister(blocking.stop)
            blocking.stop()

    # -- from the engine's worker ------------------------------------------------------

    def capture(
        self,
        task_id: str,
        task: Mapping[str, Any],
        error: BaseException | str,
        *,
        workflow: str,
        metadata: Mapping[str, Any] | None = None,
        traceparent: str | None = None,
    ) -> FailedTask | None:
        """Store a run that failed for good; the record, or None when it could not be
        stored (logged and counted; never raised into the engine).

        The failing run's span is the current OpenTelemetry span, or else the one a
        W3C ``traceparent`` from the engine's message names: the stored failure
        context carries its ids, and retry spans link to it."""
        try:
            blocking = self.blocking()
            with _remote_span(traceparent):
                record = blocking.dlq.build_record(
                    task_id,
                    task,
                    None,
                    error,
                    workflow=workflow,
                    metadata={**(metadata or {}), "engine": self.engine},
                )
            stored = blocking.portal.call(blocking.dlq.enqueue_record, record)
        except Exception as exc:  # noqa: BLE001 - never break the host's worker
            self._failed("capture", task_id, f"({workflow}) not stored", exc)
            return None
        self.counters["captured"] += 1
        return stored

    def report(
        self, task_id: str, token: str, error: BaseException | str | None = None
    ) -> FailedTask | None:
        """Report how a dispatched retry ended (:meth:`DeadLetterQueue.report_outcome`);
        never raises into the engine."""
        try:
            blocking = self.blocking()
            stored = blocking.report_outcome(task_id, token, error=error)
        except Exception as exc:  # noqa: BLE001 - never break the host's worker
            self._failed("report", task_id, f"({token}) not recorded", exc)
            return None
        self.counters["reported" if stored is not None else "report_ignored"] += 1
        return stored

    def _failed(self, what: str, task_id: object, detail: str, exc: Exception) -> None:
        """Count and log (one line) a capture or report that failed; the worker goes on."""
        self.counters[f"{what}_failed"] += 1
        _log.error(
            "dlq.%s.%s %s %s: %s: %s",
            self.engine,
            what,
            task_id,
            detail,
            type(exc).__name__,
            exc,
            extra={"action": f"dlq.{self.engine}.{what}", "task_id": task_id},
        )


_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


@contextmanager
def _remote_span(traceparent: str | None) -> Iterator[None]:
    """Make the span ``traceparent`` names current, unless a span already is (or the
    header is absent, malformed or OpenTelemetry missing)."""
    match = _TRACEPARENT.match(traceparent.strip()) if isinstance(traceparent, str) else None
    if match is None or current_span_ids() is not None:
        yield
        return
    try:
        from opentelemetry import trace  # noqa: PLC0415 - only with a traceparent
    except ImportError:  # pragma: no cover - the otel extra is not installed
        yield
        return
    trace_id, span_id = int(match[1], 16), int(match[2], 16)
    if not trace_id or not span_id:
        yield
        return
    remote = trace.SpanContext(
        trace_id, span_id, is_remote=True, trace_flags=trace.TraceFlags(int(match[3], 16))
    )
    with trace.use_span(trace.NonRecordingSpan(remote)):
        yield


def _settings_of(dlq: DeadLetterQueue | None) -> DLQSettings | None:
    return None if dlq is None else dlq.settings
