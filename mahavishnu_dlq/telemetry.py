"""OpenTelemetry spans and metrics, through the API only (the ``otel`` extra).

The library never configures OpenTelemetry: the host installs an SDK and
exporters (OTLP, Prometheus …) and the queue reports through whatever is set —
the global providers, or providers handed to :class:`DeadLetterQueue`. Without
the ``opentelemetry-api`` package, or while no tracer provider is configured,
no span object is even created, so the wrapped success path pays one cheap check.

Spans: ``dlq.execute`` (around a wrapped workflow run), ``dlq.enqueue``,
``dlq.claim`` (one per claimed batch), ``dlq.retry`` (one per attempt, linked to
the span of the failing run whose context the record keeps in
``metadata["failure_context"]``), ``dlq.store.<op>`` (each store call, through
:class:`TracedStore`). Attributes use the ``dlq.`` prefix: task id,
workflow, category, attempt, outcome, backend.

Metrics (meter ``mahavishnu_dlq``): counters ``dlq.tasks.enqueued``,
``dlq.tasks.retried``, ``dlq.tasks.succeeded``, ``dlq.tasks.failed``,
``dlq.tasks.exhausted``, ``dlq.tasks.archived``, ``dlq.tasks.purged`` labelled by
``dlq.category`` and ``dlq.workflow`` (at most :data:`MAX_WORKFLOW_LABELS`
distinct workflow names, the rest as ``other``); the histogram
``dlq.attempt.duration`` (seconds); observable gauges ``dlq.tasks.depth`` (by
``dlq.status``) and ``dlq.oldest_pending.age`` read from the last statistics
the queue computed; the counter ``dlq.failover.transitions`` (``dlq.to``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from mahavishnu_dlq.storage.base import open_store

if TYPE_CHECKING:
    from mahavishnu_dlq.jobs.model import TaskSummary
    from mahavishnu_dlq.models import DeadLetterStatus, FailedTask, TaskFilter, TaskPage
    from mahavishnu_dlq.storage.base import (
        FingerprintGroup,
        HistogramBucket,
        Mutation,
        Store,
        StoreStatistics,
    )

T = TypeVar("T")

__all__ = ["MAX_WORKFLOW_LABELS", "Telemetry", "TracedStore"]

MAX_WORKFLOW_LABELS = 100

_trace: Any
_metrics: Any
try:
    from opentelemetry import metrics as _metrics
    from opentelemetry import trace as _trace
except ImportError:  # pragma: no cover - the otel extra is not installed
    _trace = _metrics = None

_unset_meters: type
try:  # the API's stand-in until a host installs an SDK; not public, so looked up softly
    from opentelemetry.metrics._internal import _ProxyMeterProvider as _unset_meters
except ImportError:  # pragma: no cover - then metrics are always reported

    class _unset_meters:  # type: ignore[no-redef]  # noqa: N801 - matches nothing
        pass


_NAME = "mahavishnu_dlq"
_COUNTERS = ("enqueued", "retried", "succeeded", "failed", "exhausted", "archived", "purged")


def _version() -> str:
    from mahavishnu_dlq import __version__  # noqa: PLC0415 - the package imports this module

    return __version__


class Telemetry:
    """One queue's tracer and instruments (created on first use)."""

    def __init__(self, *, tracer_provider: Any = None, meter_provider: Any = None) -> None:
        self._tracer_provider = tracer_provider
        self._meter_provider = meter_provider
        self._tracer: Any = None
        self._tracer_from: Any = None
        self._recheck_at = 0.0
        self._instruments: dict[str, Any] | None = None
        self._metrics_recheck_at = 0.0
        self._workflows: set[str] = set()
        self._label_sets: dict[tuple[str, str], dict[str, str]] = {}
        self.snapshot: Mapping[str, Any] = {}  # the last statistics, for the gauges

    # -- tracing ---------------------------------------------------------------------

    def tracer(self) -> Any:
        """The tracer, or None while no tracer provider is configured (no spans then).

        The global provider is looked up at most once a second (the lookup reads the
        environment): a host that installs its SDK after building the queue sees
        spans within a second.
        """
        if _trace is None:  # pragma: no cover - the otel extra is not installed
            return None
        provider = self._tracer_provider
        if provider is None:
            now = time.monotonic()
            if now < self._recheck_at:
                return self._tracer
            self._recheck_at = now + 1.0
            provider = _trace.get_tracer_provider()
        if provider is not self._tracer_from:
            self._tracer_from = provider
            if isinstance(provider, _trace.ProxyTracerProvider):
                self._tracer = None  # the API's default: nothing would record
            else:
                self._tracer = provider.get_tracer(_NAME, _version())
        return self._tracer

    @staticmethod
    def failure_link(task: FailedTask) -> list[Any]:
        """A link to the span of the run that failed, from the record's failure context."""
        if _trace is None:  # pragma: no cover - the otel extra is not installed
            return []
        context = task.metadata.get("failure_context")
        if not isinstance(context, Mapping):
            return []
        try:
            trace_id = int(context["trace_id"], 16)
            span_id = int(context["span_id"], 16)
        except (KeyError, TypeError, ValueError):
            return []
        linked = _trace.SpanContext(
            trace_id=trace_id,
            span_id=span_id,
            is_remote=True,
            trace_flags=_trace.TraceFlags(_trace.TraceFlags.SAMPLED),
        )
        return [_trace.Link(linked, {"dlq.link": "failed run"})]

    # -- metrics ---------------------------------------------------------------------

    def _made(self) -> dict[str, Any] | None:
        """The instruments, or None while no meter provider is configured (nothing is
        counted then; like the tracer, the global provider is looked up once a second)."""
        if self._instruments is not None or _metrics is None:
            return self._instruments
        provider = self._meter_provider
        if provider is None:
            now = time.monotonic()
            if now < self._metrics_recheck_at:
                return None
            self._metrics_recheck_at = now + 1.0
            provider = _metrics.get_meter_provider()
            if isinstance(provider, _unset_meters):
                return None
        # created once, from the provider that is configured
        meter = provider.get_meter(_NAME, _version())
        made: dict[str, Any] = {
            name: meter.create_counter(f"dlq.tasks.{name}", unit="{task}") for name in _COUNTERS
        }
        made["duration"] = meter.create_histogram(
            "dlq.attempt.duration", unit="s", description="how long one retry attempt ran"
        )
        made["failover"] = meter.create_counter("dlq.failover.transitions", unit="{transition}")
        made["breaker"] = meter.create_counter(
            "dlq.breaker.transitions",
            unit="{transition}",
            description="workflow circuit breakers moving to a state",
        )
        meter.create_observable_gauge(
            "dlq.breaker.state",
            callbacks=[self._breakers],
            unit="1",
            description="a workflow's circuit breaker: 0 closed, 1 half-open, 2 open",
        )
        made["job_items"] = meter.create_counter(
            "dlq.jobs.items", unit="{task}", description="tasks bulk jobs acted on, by outcome"
        )
        meter.create_observable_gauge(
            "dlq.tasks.depth",
            callbacks=[self._depth],
            unit="{task}",
            description="stored tasks by status",
        )
        meter.create_observable_gauge(
            "dlq.oldest_pending.age",
            callbacks=[self._oldest],
            unit="s",
            description="age of the oldest pending task",
        )
        self._instruments = made
        return self._instruments

    def _labels(self, task: FailedTask) -> dict[str, str]:
        key = (task.error_category.value, task.workflow or "")
        labels = self._label_sets.get(key)
        if labels is None:  # at most 6 categories x (MAX_WORKFLOW_LABELS + 1) sets
            category, workflow = key
            if workflow not in self._workflows:
                if len(self._workflows) >= MAX_WORKFLOW_LABELS:
                    workflow = "other"
                else:
                    self._workflows.add(workflow)
            labels = {"dlq.category": category, "dlq.workflow": workflow}
            if workflow != "other":
                self._label_sets[key] = labels
        return labels

    def count(self, event: str, task: FailedTask, amount: int = 1) -> None:
        """Add ``amount`` to the ``dlq.tasks.<event>`` counter, labelled by ``task``."""
        instruments = self._made()
        if instruments is not None:
            instruments[event].add(amount, self._labels(task))

    def purged(self, amount: int) -> None:
        """Records deleted by purge or clear (no single task to label them by)."""
        instruments = self._made()
        if instruments is not None and amount:
            instruments["purged"].add(amount, {"dlq.category": "", "dlq.workflow": ""})

    def attempt(self, task: FailedTask, outcome: str, seconds: float) -> None:
        """One attempt's duration, labelled by workflow and outcome."""
        instruments = self._made()
        if instruments is not None:
            labels = {"dlq.workflow": self._labels(task)["dlq.workflow"], "dlq.outcome": outcome}
            instruments["duration"].record(seconds, labels)

    def job_items(self, kind: str, done: int, skipped: int, failed: int) -> None:
        """One page of a bulk job: ``dlq.jobs.items`` by kind and outcome."""
        instruments = self._made()
        if instruments is None:
            return
        counter = instruments["job_items"]
        for outcome, amount in (("done", done), ("skipped", skipped), ("failed", failed)):
            if amount:
                counter.add(amount, {"dlq.kind": kind, "dlq.outcome": outcome})

    def breaker_transition(self, workflow: str, to: str) -> None:
        """A workflow's breaker moved to ``to`` (closed, open, half_open)."""
        instruments = self._made()
        if instruments is not None:
            label = self._workflow_label(workflow)
            instruments["breaker"].add(1, {"dlq.workflow": label, "dlq.to": to})

    def _workflow_label(self, workflow: str) -> str:
        if workflow in self._workflows or len(self._workflows) < MAX_WORKFLOW_LABELS:
            self._workflows.add(workflow)
            return workflow
        return "other"

    def _breakers(self, _options: Any) -> Iterator[Any]:
        levels = {"closed": 0, "half_open": 1, "open": 2}
        for workflow, breaker in (self.snapshot.get("breakers") or {}).items():
            level = levels.get(breaker.get("state"), 0)
            yield _metrics.Observation(level, {"dlq.workflow": self._workflow_label(workflow)})

    def failover(self, to: str) -> None:
        """The failover store switched to ``to`` ("fallback" or "primary")."""
        instruments = self._made()
        if instruments is not None:
            instruments["failover"].add(1, {"dlq.to": to})

    def _depth(self, _options: Any) -> Iterator[Any]:
        breakdown = self.snapshot.get("status_breakdown") or {}
        for status, count in breakdown.items():
            yield _metrics.Observation(count, {"dlq.status": status})

    def _oldest(self, _options: Any) -> Iterator[Any]:
        age = self.snapshot.get("oldest_pending_age_seconds")
        if age is not None:
            yield _metrics.Observation(age, {})


class TracedStore:
    """A store whose calls are ``dlq.store.<op>`` spans while tracing is on.

    The queue and the processor talk to their store through this wrapper; with no
    tracer configured each call costs one check and goes straight through.
    """

    def __init__(self, store: Store, telemetry: Telemetry) -> None:
        self.inner = store
        self._telemetry = telemetry
        self.backend = store.backend
        #: the store's bulk jobs, untraced (a few small writes a second at most)
        self.jobs = store.jobs
        self.controls = store.controls

    async def _run(
        self,
        op: str,
        call: Callable[[], Awaitable[T]],
        task_id: str = "",
        *,
        items: int | None = None,
    ) -> T:
        tracer = self._telemetry.tracer()
        if tracer is None:
            return await call()
        attributes: dict[str, str | int] = {"dlq.backend": self.backend}
        if task_id:
            attributes["dlq.task_id"] = task_id
        if items is not None:
            attributes["dlq.items"] = items
        with tracer.start_as_current_span(f"dlq.store.{op}", attributes=attributes):
            return await call()

    async def open(self, *, create: bool = True) -> None:
        await self._run("open", lambda: open_store(self.inner, create=create))

    async def close(self) -> None:
        await self._run("close", self.inner.close)

    async def get(self, task_id: str) -> FailedTask | None:
        return await self._run("get", lambda: self.inner.get(task_id), task_id)

    async def mutate(self, task_id: str, fn: Mutation) -> FailedTask:
        return await self._run("mutate", lambda: self.inner.mutate(task_id, fn), task_id)

    async def mutate_many(
        self, items: Sequence[tuple[str, Mutation]]
    ) -> list[FailedTask | Exception]:
        return await self._run(
            "mutate_many", lambda: self.inner.mutate_many(items), items=len(items)
        )

    async def claim_due(
        self, now: datetime, limit: int, fn: Mutation, *, skip_workflows: Collection[str] = ()
    ) -> list[FailedTask]:
        return await self._run(
            "claim_due",
            lambda: self.inner.claim_due(now, limit, fn, skip_workflows=skip_workflows),
        )

    async def next_due_at(self) -> datetime | None:
        return await self._run("next_due_at", self.inner.next_due_at)

    async def delete(self, task_id: str) -> bool:
        return await self._run("delete", lambda: self.inner.delete(task_id), task_id)

    async def query(
        self, flt: TaskFilter, *, limit: int, cursor: str | None = None
    ) -> TaskPage[FailedTask]:
        return await self._run("query", lambda: self.inner.query(flt, limit=limit, cursor=cursor))

    async def count(self, flt: TaskFilter | None = None) -> int:
        return await self._run("count", lambda: self.inner.count(flt))

    async def open_count(self) -> int:
        return await self._run("open_count", self.inner.open_count)

    async def summarize(self, flt: TaskFilter, *, sample: int = 20) -> TaskSummary:
        return await self._run("summarize", lambda: self.inner.summarize(flt, sample=sample))

    async def statistics(self, *, top_fingerprints: int = 5) -> StoreStatistics:
        return await self._run(
            "statistics", lambda: self.inner.statistics(top_fingerprints=top_fingerprints)
        )

    async def fingerprint_groups(
        self, flt: TaskFilter | None = None, *, limit: int = 50
    ) -> list[FingerprintGroup]:
        return await self._run(
            "fingerprint_groups", lambda: self.inner.fingerprint_groups(flt, limit=limit)
        )

    async def failure_histogram(
        self, *, since: datetime, until: datetime, bucket: timedelta
    ) -> list[HistogramBucket]:
        return await self._run(
            "failure_histogram",
            lambda: self.inner.failure_histogram(since=since, until=until, bucket=bucket),
        )

    async def purge(
        self, *, older_than: datetime | None, statuses: Collection[DeadLetterStatus]
    ) -> int:
        return await self._run(
            "purge", lambda: self.inner.purge(older_than=older_than, statuses=statuses)
        )

    async def clear(self) -> int:
        return await self._run("clear", self.inner.clear)
