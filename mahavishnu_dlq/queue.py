"""DeadLetterQueue: the public face of the library and the only caller of the store.

It turns a failure into a record (classified, fingerprinted, scheduled by its
policy; :mod:`mahavishnu_dlq.capture`), enforces the limits (``max_size`` and
:class:`~mahavishnu_dlq.limits.Limits`), applies the state machine of
:mod:`mahavishnu_dlq.lifecycle` through :meth:`Store.mutate`, keeps the lifetime
counters, and owns the background :class:`RetryProcessor`. Operator actions
(retry now, replay, archive, purge) live in :mod:`mahavishnu_dlq.operations`, and
the methods of :class:`~mahavishnu_dlq.operator_actions.OperatorActions` delegate to
them; the ``max_size`` estimate and the ``on_full`` policy are
:mod:`mahavishnu_dlq.room`'s; wrapping workflows (``execute_with_dlq``,
``workflow``, ``guard``) are methods it inherits from
:class:`~mahavishnu_dlq.integration.WorkflowWrapping`.
"""

from __future__ import annotations

import os
import random
import socket
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
from anyio.abc import TaskGroup

from mahavishnu_dlq.alerts import Alert, AlertCallback, AlertEvaluator, AlertRule
from mahavishnu_dlq.capture import Capture, Failure
from mahavishnu_dlq.classifier import ErrorClassifier
from mahavishnu_dlq.clock import Clock, SystemClock
from mahavishnu_dlq.downstream.breaker import BreakerBook
from mahavishnu_dlq.downstream.rates import RateBook
from mahavishnu_dlq.downstream.shared import BreakerMethods, Downstream
from mahavishnu_dlq.engines import EngineHandler, EngineMethods
from mahavishnu_dlq.errors import ConfigurationError, DLQError
from mahavishnu_dlq.hooks import ExhaustedHook, Hooks, JobFinishedHook
from mahavishnu_dlq.insights import InsightMethods
from mahavishnu_dlq.integration import WorkflowWrapping
from mahavishnu_dlq.jobs.control import JobMethods
from mahavishnu_dlq.limits import Limits, require_str
from mahavishnu_dlq.models import (
    ErrorCategory,
    FailedTask,
    RetryPolicy,
    TaskPage,
    decode_cursor,
)
from mahavishnu_dlq.operations import (
    Operations,
    StatusArg,
    make_filter,
    statuses,
)
from mahavishnu_dlq.operator_actions import OperatorActions
from mahavishnu_dlq.policy import PolicyBook
from mahavishnu_dlq.printable import library_logger
from mahavishnu_dlq.processor import RetryProcessor
from mahavishnu_dlq.retention import Retention
from mahavishnu_dlq.room import LifetimeCounters, OnFull, Room, check_on_full
from mahavishnu_dlq.storage.base import Store, open_store
from mahavishnu_dlq.storage.build import store_from_settings
from mahavishnu_dlq.storage.failover import FailoverStore
from mahavishnu_dlq.storage.memory import MemoryStore
from mahavishnu_dlq.telemetry import Telemetry, TracedStore

if TYPE_CHECKING:
    from mahavishnu_dlq.settings import DLQSettings

__all__ = ["DeadLetterQueue", "Handler"]

_log = library_logger("mahavishnu_dlq")
R = TypeVar("R")

#: A retry handler: called with the task's input and repos, sync or async.
Handler = Callable[[dict[str, Any], list[str]], Any]

_LIFETIME_KEYS = (
    "enqueued_total",
    "deduplicated",
    "retry_success",
    "retry_failed",
    "exhausted",
    "manually_retried",
    "archived",
    "archived_to_make_room",
    "purged",
    "deferred",
    "dispatched",
    "lost",
    "retention_runs",
    "retention_archived",
    "retention_purged",
)


class DeadLetterQueue(
    WorkflowWrapping, OperatorActions, JobMethods, BreakerMethods, InsightMethods, EngineMethods
):
    """Captures failed workflow runs, retries them under a policy, keeps them for operators.

    Use it as ``async with DeadLetterQueue.from_settings(s) as dlq:`` or with
    explicit :meth:`start` / :meth:`stop`. The plain constructor with no settings
    never starts a processor on its own.
    """

    def __init__(
        self,
        store: Store | None = None,
        *,
        max_size: int = 10000,
        on_full: OnFull = "reject",
        classifier: ErrorClassifier | None = None,
        settings: DLQSettings | None = None,
        policies: PolicyBook | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        worker_id: str | None = None,
        max_payload_bytes: int | None = None,
        limits: Limits | None = None,
        attempts_kept: int = 20,
        lease_seconds: float = 600.0,
        attempt_timeout_seconds: float = 300.0,
        concurrency: int = 10,
        batch_size: int = 100,
        prefetch: int = 4,
        retry_interval_seconds: float = 60.0,
        job_page_size: int = 500,
        job_lease_seconds: float = 60.0,
        job_poll_seconds: float = 2.0,
        breakers: BreakerBook | None = None,
        rates: RateBook | None = None,
        enabled: bool = True,
        tracer_provider: Any = None,
        meter_provider: Any = None,
        alert_rules: Iterable[AlertRule] = (),
        hooks: Hooks | None = None,
        retention: Retention | None = None,
    ) -> None:
        if max_size < 1:
            raise ConfigurationError(f"max_size must be >= 1, got {max_size}", field="max_size")
        self.store: Store = store if store is not None else MemoryStore()
        #: spans and metrics (OpenTelemetry API; the global providers unless given)
        self.telemetry = Telemetry(tracer_provider=tracer_provider, meter_provider=meter_provider)
        self._traced: TracedStore | None = None
        if isinstance(self.store, FailoverStore):
            self.store.on_transition = self.telemetry.failover
        self.settings = settings
        self.max_size = max_size
        #: what a full queue does with a new failure: "reject" or "archive_oldest"
        self.on_full: OnFull = check_on_full(on_full)
        self.classifier = classifier or ErrorClassifier()
        self.policies = policies or PolicyBook()
        self.clock: Clock = clock or SystemClock()
        #: ``on_exhausted`` callbacks, and the alert rules the processor evaluates
        self.hooks = hooks or Hooks()
        self.alerts = AlertEvaluator(alert_rules, clock=self.clock)
        self.rng = rng or random.Random()
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        limits = limits or Limits()
        if max_payload_bytes is not None:  # the original keyword, kept
            limits = Limits(
                max_payload_bytes=max_payload_bytes,
                max_payload_depth=limits.max_payload_depth,
                max_error_bytes=limits.max_error_bytes,
            )
        #: what the queue takes and keeps (payload size and depth, error text size)
        self.limits = limits
        self.attempts_kept = attempts_kept
        self.lease_seconds = lease_seconds
        self.attempt_timeout_seconds = attempt_timeout_seconds
        self.concurrency = concurrency
        self.batch_size = batch_size
        self.prefetch = prefetch
        self.enabled = enabled
        self.retry_interval_seconds = retry_interval_seconds
        #: bulk jobs (:mod:`mahavishnu_dlq.jobs`): tasks per page, the runner's lease,
        #: how often a processor looks for new jobs
        self.job_page_size = job_page_size
        self.job_lease_seconds = job_lease_seconds
        self.job_poll_seconds = job_poll_seconds
        #: the circuit breaker policy of each workflow, and the shared breakers
        self.breakers = breakers or BreakerBook()
        #: tasks per second allowed for each workflow, shared by every process
        self.rates = rates or RateBook()
        self.downstream = Downstream(self)
        self.handlers: dict[str, Handler] = {}
        self.default_callback: Handler | None = None
        #: retry handlers of engines' records (:mod:`mahavishnu_dlq.engines`)
        self.engines: dict[str, EngineHandler] = {}
        self.engine_waits: dict[str, float] = {}
        self._room = Room(self)  # the open-task estimate behind max_size, and on_full
        self.lifetime: dict[str, int] = LifetimeCounters(_LIFETIME_KEYS, self._room)
        self.processor: RetryProcessor | None = None
        self._task_group: TaskGroup | None = None
        self._maintenance: TaskGroup | None = None
        self._opened = False
        self._wakeup: Callable[[], None] | None = None
        self._capture = Capture(self)
        self._operations = Operations(self)
        #: what ages out on its own, run by the processors (:mod:`mahavishnu_dlq.retention`)
        self.retention = Retention() if retention is None else retention

    @property
    def max_payload_bytes(self) -> int:
        """The largest UTF-8 JSON size of a task's input, metadata and repos together."""
        return self.limits.max_payload_bytes

    # -- construction and lifecycle ------------------------------------------------

    @classmethod
    def from_settings(cls, settings: DLQSettings, *, store: Store | None = None) -> DeadLetterQueue:
        """Build a queue, its store, classifier and policies from :class:`DLQSettings`."""
        if store is None:
            store = store_from_settings(settings)
        return cls(
            store,
            max_size=settings.max_size,
            on_full=settings.on_full,
            classifier=settings.error_classifier(),
            settings=settings,
            policies=settings.policy_book(),
            worker_id=settings.processor.worker_id,
            limits=settings.limits(),
            attempts_kept=settings.attempts_kept,
            lease_seconds=settings.processor.lease_seconds,
            attempt_timeout_seconds=settings.processor.attempt_timeout_seconds,
            concurrency=settings.processor.concurrency,
            batch_size=settings.processor.batch_size,
            prefetch=settings.processor.prefetch,
            retry_interval_seconds=settings.retry_interval_seconds,
            job_page_size=settings.jobs.page_size,
            job_lease_seconds=settings.jobs.lease_seconds,
            job_poll_seconds=settings.jobs.poll_seconds,
            breakers=settings.processor.breaker.book(),
            rates=settings.processor.rate_book(),
            enabled=settings.enabled,
            alert_rules=settings.alert_rules(),
            retention=settings.retention.policy(),
        )

    async def connect(self, *, create: bool = True) -> None:
        """Connect the store (idempotent) without starting a processor, as tools like the CLI do.

        ``create=False`` is for tools that read (``status``, ``list``, the web console):
        the store creates nothing to open (no OpenSearch index or template), and a
        missing index raises :class:`~mahavishnu_dlq.errors.StoreNotFoundError` rather
        than show an empty queue (:meth:`Store.open`). Writing works on a store opened
        so, as long as it exists.

        A store with background work (the failover store's recovery probe) gets it
        started here, in a task group :meth:`stop` ends before closing the store.
        """
        if not self._opened:
            await open_store(self.traced_store, create=create)
            self._opened = True
            monitor = getattr(self.store, "monitor", None)
            if monitor is not None and self._maintenance is None:
                group = anyio.create_task_group()
                await group.__aenter__()
                self._maintenance = group
                group.start_soon(monitor)

    async def start(self) -> None:
        """Connect the store; start the processor when settings enable it and a handler exists."""
        await self.connect()
        wants = self.settings is not None and self.settings.enabled
        wants = wants and self.settings is not None and self.settings.retry_processor_enabled
        if (
            wants
            and (self.handlers or self.default_callback or self.engines)
            and not self.is_processor_running
        ):
            await self.start_retry_processor(check_interval_seconds=self.retry_interval_seconds)

    async def stop(self) -> None:
        """Stop the processor (in-flight attempts go back to pending), close the store.

        Call it from the task that called :meth:`connect` / :meth:`start`, and not
        inside a cancel scope entered since (it shields its own cleanup): the
        processor and the store's probe run in task groups of that task.
        """
        await self.stop_retry_processor()
        group, self._maintenance = self._maintenance, None
        if group is not None:
            group.cancel_scope.cancel()
            await group.__aexit__(None, None, None)
        if self._opened:
            self._opened = False
            with anyio.CancelScope(shield=True):
                await self.traced_store.close()

    async def __aenter__(self) -> DeadLetterQueue:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()  # shielded inside: the processor's group and the store's close

    @property
    def traced_store(self) -> Store:
        """The store as the queue and the processor call it: while tracing is on, a
        wrapper making each call a ``dlq.store.<op>`` span; otherwise ``store`` itself
        (the enqueue and claim paths pay no wrapper)."""
        if self.telemetry.tracer() is None:
            return self.store
        traced = self._traced
        if traced is None or traced.inner is not self.store:
            traced = self._traced = TracedStore(self.store, self.telemetry)
        return traced

    # -- handlers --------------------------------------------------------------------

    def register_handler(self, workflow: str, handler: Handler) -> None:
        """Retry tasks of ``workflow`` with ``handler(task, repos)`` (sync or async)."""
        if not workflow:
            raise ValueError("a handler needs a workflow name")
        self.handlers[workflow] = handler

    def handler_for(self, workflow: str) -> Handler | None:
        """The handler that retries tasks of ``workflow``: registered, else the default."""
        return self.handlers.get(workflow) or self.default_callback

    # -- hooks and alerts ---------------------------------------------------------------

    def on_exhausted(self, hook: ExhaustedHook) -> ExhaustedHook:
        """Call ``hook(task)`` (sync or async) whenever a task runs out of retries; a
        failing or slow hook is logged, never breaks the queue. Usable as a decorator."""
        return self.hooks.add_on_exhausted(hook)

    def on_job_finished(self, hook: JobFinishedHook) -> JobFinishedHook:
        """Call ``hook(job)`` (sync or async) when a bulk job ends (done, cancelled,
        failed, or a dry run reported), in the process that ran it. Usable as a decorator."""
        return self.hooks.add_on_job_finished(hook)

    def on_alert(self, callback: AlertCallback) -> AlertCallback:
        """Deliver every fired :class:`~mahavishnu_dlq.alerts.Alert` to ``callback``."""
        return self.alerts.add_callback(callback)

    async def exhausted(self, task: FailedTask) -> None:
        """A task just ran out of retries: count it for the alert rules, run the hooks."""
        self.alerts.record_exhausted()
        await self.hooks.exhausted(task)

    async def observe(self) -> list[Alert]:
        """Refresh the statistics the metrics' gauges report and evaluate the alert rules
        (the processor does it every check interval); the alerts that fired."""
        stats = await self.get_statistics()
        return await self.alerts.evaluate(stats)

    # -- enqueue ---------------------------------------------------------------------

    def build_record(
        self,
        task_id: str,
        task: Mapping[str, Any],
        repos: Iterable[str] | None,
        error: BaseException | str,
        *,
        retry_policy: RetryPolicy | str | None = None,
        max_retries: int | None = None,
        metadata: Mapping[str, Any] | None = None,
        error_category: ErrorCategory | str | None = None,
        workflow: str | None = None,
    ) -> FailedTask:
        """The record a failure becomes, scheduled by its policy (nothing is stored)."""
        return self._capture.build(
            task_id,
            task,
            repos,
            error,
            retry_policy=retry_policy,
            max_retries=max_retries,
            metadata=metadata,
            error_category=error_category,
            workflow=workflow,
        )

    async def enqueue(
        self,
        task_id: str,
        task: Mapping[str, Any],
        repos: Iterable[str] | None = None,
        error: BaseException | str = "",
        retry_policy: RetryPolicy | str | None = None,
        max_retries: int | None = None,
        metadata: Mapping[str, Any] | None = None,
        error_category: ErrorCategory | str | None = None,
        workflow: str | None = None,
    ) -> FailedTask:
        """Store a failed task (idempotent by ``task_id``) and schedule its retry.

        Raises :class:`QueueFullError` when ``max_size`` open tasks are stored,
        :class:`PayloadTooLargeError` / :class:`InvalidPayloadError` for input
        that cannot be stored. An id that is already open is updated, never
        duplicated (see :func:`mahavishnu_dlq.lifecycle.merge_failure`).
        """
        record = self._capture.build(
            task_id,
            task,
            repos,
            error,
            retry_policy=retry_policy,
            max_retries=max_retries,
            metadata=metadata,
            error_category=error_category,
            workflow=workflow,
        )
        return await self._capture.enqueue(record)

    async def enqueue_many(self, failures: Iterable[Failure]) -> list[FailedTask | DLQError]:
        """Store a batch of failed tasks; one result per :class:`Failure`, in order.

        Each failure is taken as :meth:`enqueue` would take it (idempotent by
        ``task_id``; several failures of one id in a batch apply in order, like
        successive enqueues). A failure that cannot be taken gets its error in its
        place instead of a record — :class:`QueueFullError`,
        :class:`PayloadTooLargeError`, :class:`InvalidPayloadError` (also for an
        unknown policy or category, or ``max_retries`` out of range), or
        :class:`StoreUnavailableError` — and the others are stored all the same.
        Check each result: nothing is raised for one bad item.

        The batch shares one clock reading (every record of it failed "now"), one
        failure context and one store call: on OpenSearch its new records go out
        together through the group commit, and a caller with many failures at once
        (a stage failing a whole fan-out) awaits one call instead of one per task.
        """
        return await self._capture.enqueue_many(failures)

    # -- reading ---------------------------------------------------------------------

    async def get_task(self, task_id: str) -> FailedTask | None:
        """The stored record, or None. Raises :class:`UnreadableRecordError` when a
        record is stored under ``task_id`` but cannot be read (its ``source`` shows it),
        and ``TypeError`` when ``task_id`` is not a string."""
        return await self.traced_store.get(require_str(task_id, "task_id"))

    async def list_tasks(
        self,
        status: StatusArg = None,
        limit: int = 100,
        *,
        error_category: ErrorCategory | str | Iterable[ErrorCategory | str] | None = None,
        workflow: str | Iterable[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        text: str | None = None,
        fingerprint: str | None = None,
        cursor: str | None = None,
    ) -> TaskPage[FailedTask]:
        """Tasks newest failure first; ``.cursor`` on the result fetches the next page.

        Records that cannot be read are skipped (see ``unreadable`` in
        :meth:`get_statistics`). A bad argument raises ``ValueError`` or
        ``TypeError`` naming it.
        """
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise TypeError(f"limit must be an int, got {type(limit).__name__}")
        if not 1 <= limit <= 10000:
            raise ValueError(f"limit must be between 1 and 10000, got {limit}")
        if cursor is not None:
            decode_cursor(require_str(cursor, "cursor"))  # a malformed one: ValueError here
        flt = make_filter(
            status=statuses(status),
            error_category=error_category,
            workflow=workflow,
            since=since,
            until=until,
            text=text,
            fingerprint=fingerprint,
        )
        return await self.traced_store.query(flt, limit=limit, cursor=cursor)

    async def get_statistics(self, *, top_fingerprints: int = 5) -> dict[str, Any]:
        """Counts, lifetime counters and health, with the original Mahavishnu keys (plus
        ``backend``, ``degraded``, ``failover``, ``total_stored``, ``unreadable``,
        ``oldest_pending_age_seconds`` and the ``top_fingerprints`` biggest groups of
        open tasks: 0 to 100, 0 skips that aggregation)."""
        if isinstance(top_fingerprints, bool) or not isinstance(top_fingerprints, int):
            raise TypeError(
                f"top_fingerprints must be an int, got {type(top_fingerprints).__name__}"
            )
        if not 0 <= top_fingerprints <= 100:
            raise ValueError(f"top_fingerprints must be between 0 and 100, got {top_fingerprints}")
        return await self._operations.statistics(top_fingerprints)

    # -- the processor ---------------------------------------------------------------------

    @property
    def is_processor_running(self) -> bool:
        """True while the background retry processor runs."""
        return self.processor is not None and self.processor.running

    async def start_retry_processor(
        self,
        callback: Handler | None = None,
        check_interval_seconds: float | None = None,
    ) -> RetryProcessor:
        """Start retrying due tasks in the background; the first cycle runs at once.

        ``callback`` becomes the default handler (for tasks whose workflow has no
        registered handler). Stop it with :meth:`stop_retry_processor` from the
        same task that started it (or use ``async with dlq``).
        """
        if callback is not None:
            self.default_callback = callback
        if self.is_processor_running and self.processor is not None:
            return self.processor
        await self.connect()
        processor = RetryProcessor(self, check_interval=check_interval_seconds)
        group = anyio.create_task_group()
        await group.__aenter__()
        self._task_group = group
        self.processor = processor
        await group.start(processor.run)
        return processor

    async def stop_retry_processor(self) -> None:
        """Stop the processor; in-flight attempts are released back to PENDING."""
        group, self._task_group = self._task_group, None
        if self.processor is not None:
            self.processor.stop()
        if group is not None:
            # Shield the group's own scope: exiting the group inside a scope entered after
            # it (``with CancelScope(shield=True)``) corrupts the task's cancel-scope stack.
            group.cancel_scope.shield = True
            await group.__aexit__(None, None, None)
