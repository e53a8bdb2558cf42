"""Spans and metrics through the OpenTelemetry SDK's in-memory exporter and reader.

The providers are handed to the queue (the global ones are never set here, so
other tests keep the API's no-op default). Names, attributes, parent/child
relations, the link from a retry to the failing run, and metric values are
asserted.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from mahavishnu_dlq import DeadLetterQueue, FailoverStore, MemoryStore, RetryProcessor
from mahavishnu_dlq.telemetry import MAX_WORKFLOW_LABELS, TracedStore
from mahavishnu_dlq.testing import FakeClock
from tests.unit.test_failover_store import Switchable

pytestmark = pytest.mark.anyio


class Otel:
    """An SDK tracer provider and meter provider with in-memory outputs."""

    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def finished(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans.get_finished_spans() if s.name == name]

    def points(self, metric: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        found: list[Any] = []
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for m in scope.metrics:
                    if m.name == metric:
                        found.extend(m.data.data_points)
        return found

    def total(self, metric: str, **labels: str) -> float:
        wanted = {f"dlq.{k}": v for k, v in labels.items()}
        return sum(
            float(p.value)
            for p in self.points(metric)
            if all(p.attributes.get(k) == v for k, v in wanted.items())
        )


@pytest.fixture
def otel() -> Iterator[Otel]:
    made = Otel()
    yield made
    made.tracer_provider.shutdown()
    made.meter_provider.shutdown()


@pytest.fixture
def dlq(otel: Otel) -> DeadLetterQueue:
    return DeadLetterQueue(
        MemoryStore(),
        clock=FakeClock(),
        tracer_provider=otel.tracer_provider,
        meter_provider=otel.meter_provider,
    )


async def test_without_configured_providers_no_span_or_count_is_made() -> None:
    dlq = DeadLetterQueue()  # the global providers are the API's stand-ins in tests
    assert dlq.telemetry.tracer() is None
    assert dlq.traced_store is dlq.store  # no wrapper on the hot paths
    assert dlq.telemetry._made() is None  # nothing counted either


async def test_a_failed_run_is_a_span_and_the_record_keeps_its_context(
    dlq: DeadLetterQueue, otel: Otel
) -> None:
    async def charge(task: dict[str, Any], repos: list[str]) -> None:
        raise ConnectionError("gateway reset")

    with pytest.raises(ConnectionError):
        await dlq.execute_with_dlq(charge, {"order": 7}, task_id="o-7", workflow="charge")
    (execute,) = otel.finished("dlq.execute")
    (enqueue,) = otel.finished("dlq.enqueue")
    assert execute.status.status_code is StatusCode.ERROR
    assert [e.name for e in execute.events] == ["exception"]
    assert execute.attributes is not None
    assert execute.attributes["dlq.workflow"] == "charge"
    assert execute.attributes["dlq.task_id"] == "o-7"
    assert enqueue.parent is not None
    assert enqueue.parent.span_id == execute.context.span_id  # stored inside the run
    assert enqueue.attributes is not None
    assert enqueue.attributes["dlq.category"] == "network"
    assert enqueue.attributes["dlq.status"] == "pending"
    assert enqueue.attributes["dlq.backend"] == "memory"
    record = await dlq.get_task("o-7")
    assert record is not None
    context = record.metadata["failure_context"]
    assert context["trace_id"] == format(execute.context.trace_id, "032x")
    assert context["span_id"] == format(execute.context.span_id, "016x")


async def test_a_retry_is_a_span_linked_to_the_failing_run(
    dlq: DeadLetterQueue, otel: Otel
) -> None:
    calls = 0

    async def flaky(task: dict[str, Any], repos: list[str]) -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise TimeoutError("upstream slow")
        return "ok"

    dlq.register_handler("sync", flaky)
    with pytest.raises(TimeoutError):
        await dlq.execute_with_dlq(
            flaky, {}, task_id="s-1", workflow="sync", retry_policy="immediate"
        )
    (failed_run,) = otel.finished("dlq.execute")
    assert await RetryProcessor(dlq).run_once() == 1
    (claim,) = otel.finished("dlq.claim")
    (retry,) = otel.finished("dlq.retry")
    assert claim.attributes is not None
    assert claim.attributes["dlq.claimed"] == 1
    assert retry.attributes is not None
    assert retry.attributes["dlq.task_id"] == "s-1"
    assert retry.attributes["dlq.attempt"] == 1
    assert retry.attributes["dlq.outcome"] == "success"
    assert retry.attributes["dlq.status"] == "completed"
    (link,) = retry.links
    assert link.context.trace_id == failed_run.context.trace_id
    assert link.context.span_id == failed_run.context.span_id
    assert retry.context.trace_id != failed_run.context.trace_id  # its own trace, linked


async def test_a_failed_retry_sets_an_error_status(dlq: DeadLetterQueue, otel: Otel) -> None:
    async def broken(task: dict[str, Any], repos: list[str]) -> None:
        raise ValueError("still bad")

    dlq.register_handler("wf", broken)
    await dlq.enqueue("t", {}, error=ConnectionError("x"), workflow="wf", retry_policy="immediate")
    await RetryProcessor(dlq).run_once()
    (retry,) = otel.finished("dlq.retry")
    assert retry.status.status_code is StatusCode.ERROR
    assert retry.status.description == "still bad"
    assert retry.links == ()  # enqueued outside any span: nothing to link to


async def test_counters_histogram_and_gauges(dlq: DeadLetterQueue, otel: Otel) -> None:
    outcomes = {"good": "ok", "bad": None}

    async def handler(task: dict[str, Any], repos: list[str]) -> str:
        if outcomes[task["kind"]] is None:
            raise ConnectionError("down")
        return "ok"

    dlq.register_handler("wf", handler)
    for n, kind in enumerate(["good", "good", "bad"]):
        await dlq.enqueue(
            f"t{n}",
            {"kind": kind},
            error=ConnectionError("x"),
            workflow="wf",
            retry_policy="immediate",
            max_retries=1,
        )
    await dlq.enqueue("v", {}, error=ValueError("bad input"), workflow="other-wf")
    await RetryProcessor(dlq).drain()
    await dlq.archive_task("v")
    await dlq.purge()  # the two completed and the archived one
    await dlq.get_statistics()

    assert otel.total("dlq.tasks.enqueued") == 4
    assert otel.total("dlq.tasks.enqueued", category="network", workflow="wf") == 3
    assert otel.total("dlq.tasks.enqueued", category="validation", workflow="other-wf") == 1
    assert otel.total("dlq.tasks.retried", workflow="wf") == 3
    assert otel.total("dlq.tasks.succeeded") == 2
    assert otel.total("dlq.tasks.failed") == 1
    assert otel.total("dlq.tasks.exhausted") == 1
    assert otel.total("dlq.tasks.archived", workflow="other-wf") == 1
    assert otel.total("dlq.tasks.purged") == 3
    (histogram,) = [
        p for p in otel.points("dlq.attempt.duration") if p.attributes["dlq.outcome"] == "success"
    ]
    assert histogram.count == 2
    depth = {p.attributes["dlq.status"]: p.value for p in otel.points("dlq.tasks.depth")}
    assert depth == {"pending": 0, "retrying": 0, "exhausted": 1, "completed": 0, "archived": 0}
    assert otel.points("dlq.oldest_pending.age") == []  # nothing pending


async def test_workflow_labels_are_bounded(dlq: DeadLetterQueue, otel: Otel) -> None:
    for n in range(MAX_WORKFLOW_LABELS + 20):
        await dlq.enqueue(f"t{n}", {}, error=ValueError("x"), workflow=f"wf-{n}")
    workflows = {p.attributes["dlq.workflow"] for p in otel.points("dlq.tasks.enqueued")}
    assert len(workflows) == MAX_WORKFLOW_LABELS + 1
    assert otel.total("dlq.tasks.enqueued", workflow="other") == 20


async def test_failover_transitions_are_counted(otel: Otel) -> None:
    primary = Switchable()
    store = FailoverStore(primary, failure_threshold=1, probe_interval=3600)
    dlq = DeadLetterQueue(store, meter_provider=otel.meter_provider)
    await dlq.connect()
    try:
        primary.down = True
        await dlq.enqueue("a", {}, error=ConnectionError("x"))
        primary.down = False
        assert await store.probe()
    finally:
        await dlq.stop()
    assert otel.total("dlq.failover.transitions", to="fallback") == 1
    assert otel.total("dlq.failover.transitions", to="primary") == 1


async def test_store_calls_are_spans_under_the_operation(dlq: DeadLetterQueue, otel: Otel) -> None:
    await dlq.enqueue("t1", {}, error=ConnectionError("x"))
    await dlq.get_task("t1")
    (enqueue,) = otel.finished("dlq.enqueue")
    mutates = otel.finished("dlq.store.mutate")
    assert [s.parent.span_id for s in mutates if s.parent] == [enqueue.context.span_id]
    assert mutates[0].attributes is not None
    assert mutates[0].attributes["dlq.task_id"] == "t1"
    assert mutates[0].attributes["dlq.backend"] == "memory"
    (get,) = otel.finished("dlq.store.get")
    assert get.parent is None  # called outside any span: a root span of its own
    assert {s.name for s in otel.spans.get_finished_spans()} >= {"dlq.store.open_count"}
    traced = dlq.traced_store
    assert isinstance(traced, TracedStore)
    assert traced.inner is dlq.store  # the store itself is untouched
