"""The queue's aggregations (:class:`~mahavishnu_dlq.insights.InsightMethods`) on the
memory store with a fake clock, their spans while tracing is on, and the failover
store's answer while its primary is down. What each store computes is pinned down by
``tests/contract/test_store_insights.py``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta, timezone

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from mahavishnu_dlq import DeadLetterQueue
from mahavishnu_dlq.errors import StoreUnavailableError
from mahavishnu_dlq.models import DeadLetterStatus, ErrorCategory, FailedTask, TaskFilter
from mahavishnu_dlq.storage import (
    FailoverStore,
    FingerprintGroup,
    HistogramBucket,
    MemoryStore,
    Mutation,
)
from mahavishnu_dlq.testing import FakeClock, make_task
from tests.contract._records import put as storing

pytestmark = pytest.mark.anyio

NOW = datetime(2026, 5, 4, 10, 30, 0, 250000, tzinfo=timezone.utc)
MICRO = timedelta(microseconds=1)
HOUR = timedelta(hours=1)


def record(
    task_id: str,
    failed_at: datetime,
    *,
    status: DeadLetterStatus = DeadLetterStatus.PENDING,
    fingerprint: str = "fp",
    workflow: str = "wf",
    category: ErrorCategory = ErrorCategory.NETWORK,
) -> FailedTask:
    pending = status is DeadLetterStatus.PENDING
    return make_task(
        task_id=task_id,
        failed_at=failed_at,
        status=status,
        next_retry_at=failed_at if pending else None,
        error_fingerprint=fingerprint,
        workflow=workflow,
        error_category=category,
    )


async def put(dlq: DeadLetterQueue, *tasks: FailedTask) -> None:
    for task in tasks:
        await dlq.store.mutate(task.task_id, storing(task))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW)


@pytest.fixture
def dlq(clock: FakeClock) -> DeadLetterQueue:
    return DeadLetterQueue(MemoryStore(), clock=clock, worker_id="insights")


def every_status(fingerprint: str = "fp") -> list[FailedTask]:
    """One task per status, failed an hour apart (pending the oldest)."""
    return [
        record(f"{status.value}-1", NOW - (5 - i) * HOUR, status=status, fingerprint=fingerprint)
        for i, status in enumerate(DeadLetterStatus)
    ]


# -- fingerprint groups ------------------------------------------------------------------


async def test_groups_are_of_open_tasks_by_default(dlq: DeadLetterQueue) -> None:
    await put(dlq, *every_status())
    [group] = await dlq.fingerprint_groups()
    assert group.by_status == {"pending": 1, "retrying": 1, "exhausted": 1}
    assert group.count == 3
    [everything] = await dlq.fingerprint_groups(status=None)
    assert everything.count == len(DeadLetterStatus)
    assert everything.by_status == {status.value: 1 for status in DeadLetterStatus}
    [closed] = await dlq.fingerprint_groups(status=["completed", DeadLetterStatus.ARCHIVED])
    assert closed.by_status == {"completed": 1, "archived": 1}
    [one] = await dlq.fingerprint_groups(status="exhausted")
    assert one.by_status == {"exhausted": 1}


async def test_groups_narrowed_by_workflow_and_category(dlq: DeadLetterQueue) -> None:
    await put(
        dlq,
        record("a", NOW - 3 * HOUR, fingerprint="fp-a", workflow="ingest"),
        record("b", NOW - 2 * HOUR, fingerprint="fp-a", workflow="report"),
        record("c", NOW - HOUR, fingerprint="fp-c", category=ErrorCategory.VALIDATION),
        record("d", NOW, fingerprint="fp-c", category=ErrorCategory.VALIDATION),
        record("e", NOW, fingerprint="fp-c", status=DeadLetterStatus.COMPLETED),
    )
    groups = await dlq.fingerprint_groups()
    assert [(g.fingerprint, g.count) for g in groups] == [("fp-a", 2), ("fp-c", 2)]
    [report] = await dlq.fingerprint_groups(workflow="report")
    assert (report.fingerprint, report.count, report.workflows) == ("fp-a", 1, {"report": 1})
    [valid] = await dlq.fingerprint_groups(error_category="validation")
    assert (valid.fingerprint, valid.count) == ("fp-c", 2)
    assert (valid.first_seen, valid.last_seen) == (NOW - HOUR, NOW)
    assert await dlq.fingerprint_groups(workflow=["ingest", "report"], limit=1) == groups[:1]
    assert await dlq.fingerprint_groups(error_category=[ErrorCategory.PERMISSION]) == []
    [one] = await dlq.fingerprint_groups(fingerprint="fp-c", status=None)  # a group page
    assert (one.fingerprint, one.count, one.by_status["completed"]) == ("fp-c", 3, 1)
    assert await dlq.fingerprint_groups(fingerprint="fp-none") == []


async def test_groups_refuse_bad_arguments_by_name(dlq: DeadLetterQueue) -> None:
    with pytest.raises(ValueError, match="status"):
        await dlq.fingerprint_groups(status="frozen")
    with pytest.raises(ValueError, match="error_category"):
        await dlq.fingerprint_groups(error_category="cosmic")
    with pytest.raises(ValueError, match="limit"):
        await dlq.fingerprint_groups(limit=0)
    with pytest.raises(ValueError, match="limit"):
        await dlq.fingerprint_groups(limit=1001)
    with pytest.raises(TypeError, match="limit"):
        await dlq.fingerprint_groups(limit="10")  # type: ignore[arg-type]


# -- failure histogram -------------------------------------------------------------------


async def test_histogram_of_the_last_day_by_the_queue_clock(
    dlq: DeadLetterQueue, clock: FakeClock
) -> None:
    since = NOW - 24 * HOUR
    await put(
        dlq,
        record("too-old", since - MICRO),
        record("first", since),  # exactly 24 h ago: bucket 0
        record("first-late", since + HOUR - MICRO, category=ErrorCategory.RESOURCE),
        record("second", since + HOUR, status=DeadLetterStatus.COMPLETED),  # any status
        record("last", NOW - MICRO, category=ErrorCategory.VALIDATION),
        record("now", NOW),  # at now: out
    )
    histogram = await dlq.failure_histogram()
    assert [b.start for b in histogram] == [since + i * HOUR for i in range(24)]
    assert histogram[0].by_category == {"network": 1, "resource": 1}
    assert histogram[1].by_category == {"network": 1}
    assert histogram[23].by_category == {"validation": 1}
    assert all(b.by_category == {} for b in histogram[2:23])

    clock.advance(HOUR)  # "now" moves with the clock: the oldest hour leaves
    later = await dlq.failure_histogram()
    assert later[0] == HistogramBucket(since + HOUR, {"network": 1})
    assert later[22] == HistogramBucket(NOW - HOUR, {"validation": 1})
    assert later[23] == HistogramBucket(NOW, {"network": 1})  # "now" is in the past now


async def test_histogram_with_an_explicit_now_and_other_spans(dlq: DeadLetterQueue) -> None:
    at = NOW - 30 * timedelta(days=1)
    await put(dlq, record("t", at - timedelta(minutes=1)))
    histogram = await dlq.failure_histogram(hours=6, buckets=3, now=at)
    assert histogram == [
        HistogramBucket(at - 6 * HOUR, {}),
        HistogramBucket(at - 4 * HOUR, {}),
        HistogramBucket(at - 2 * HOUR, {"network": 1}),
    ]
    [whole] = await dlq.failure_histogram(hours=1, buckets=1, now=at)
    assert whole == HistogramBucket(at - HOUR, {"network": 1})


async def test_histogram_of_buckets_that_do_not_divide_the_hours(dlq: DeadLetterQueue) -> None:
    await put(dlq, record("last", NOW - MICRO), record("first", NOW - HOUR))
    histogram = await dlq.failure_histogram(hours=1, buckets=7)
    assert len(histogram) == 7  # the width rounded up: no eighth sliver of a bucket
    width = timedelta(microseconds=514_285_715)  # 3600 s / 7, rounded up
    assert [b.start for b in histogram] == [NOW - HOUR + i * width for i in range(7)]
    assert histogram[0].by_category == histogram[6].by_category == {"network": 1}
    assert len(await dlq.failure_histogram(hours=24 * 90, buckets=1000)) == 1000


@pytest.mark.parametrize(
    ("arguments", "error", "named"),
    [
        ({"hours": 0}, ValueError, "hours"),
        ({"hours": -3}, ValueError, "hours"),
        ({"hours": 1.5}, TypeError, "hours"),
        ({"hours": True}, TypeError, "hours"),
        ({"hours": 10**12}, ValueError, "hours"),
        ({"buckets": 0}, ValueError, "buckets"),
        ({"buckets": 1001}, ValueError, "buckets"),
        ({"buckets": "24"}, TypeError, "buckets"),
        ({"now": NOW.replace(tzinfo=None)}, ValueError, "now"),
        ({"now": "2026-05-04"}, TypeError, "now"),
    ],
)
async def test_histogram_refuses_bad_arguments_by_name(
    dlq: DeadLetterQueue, arguments: dict[str, object], error: type[Exception], named: str
) -> None:
    with pytest.raises(error, match=named):
        await dlq.failure_histogram(**arguments)  # type: ignore[arg-type]


# -- through the traced store --------------------------------------------------------------


async def test_both_are_store_spans_while_tracing_is_on(clock: FakeClock) -> None:
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    dlq = DeadLetterQueue(MemoryStore(), clock=clock, tracer_provider=provider)
    await put(dlq, record("t", NOW - HOUR))
    [group] = await dlq.fingerprint_groups()
    assert group.count == 1
    histogram = await dlq.failure_histogram(hours=2, buckets=2)
    assert histogram[1].by_category == {"network": 1}
    names = [span.name for span in spans.get_finished_spans()]
    assert "dlq.store.fingerprint_groups" in names
    assert "dlq.store.failure_histogram" in names


# -- on a failover store whose primary is down ---------------------------------------------


class Downable(MemoryStore):
    """A memory store that refuses every call while ``down``."""

    backend = "downable"

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise StoreUnavailableError(self.backend, "connection refused")

    async def mutate(self, task_id: str, fn: Mutation) -> FailedTask:
        self._check()
        return await super().mutate(task_id, fn)

    async def fingerprint_groups(
        self, flt: TaskFilter | None = None, *, limit: int = 50
    ) -> list[FingerprintGroup]:
        self._check()
        return await super().fingerprint_groups(flt, limit=limit)

    async def failure_histogram(
        self, *, since: datetime, until: datetime, bucket: timedelta
    ) -> list[HistogramBucket]:
        self._check()
        return await super().failure_histogram(since=since, until=until, bucket=bucket)


def fingerprints(groups: Sequence[FingerprintGroup]) -> list[tuple[str, int]]:
    return [(g.fingerprint, g.count) for g in groups]


async def test_failover_answers_from_the_fallback_while_the_primary_is_down() -> None:
    primary = Downable()
    store = FailoverStore(primary, failure_threshold=1, probe_interval=3600)
    await store.open()
    for task in (record("old-1", NOW - HOUR, fingerprint="fp-old"), record("old-2", NOW)):
        await store.mutate(task.task_id, storing(task))
    assert fingerprints(await store.fingerprint_groups()) == [("fp", 1), ("fp-old", 1)]

    async def hourly() -> list[dict[str, int]]:
        found = await store.failure_histogram(since=NOW - 2 * HOUR, until=NOW + HOUR, bucket=HOUR)
        return [b.by_category for b in found]

    assert await hourly() == [
        {},
        {"network": 1},
        {"network": 1},
    ]

    primary.down = True
    outage = record("new-1", NOW - HOUR, fingerprint="fp-new", category=ErrorCategory.RESOURCE)
    await store.mutate(outage.task_id, storing(outage))  # served by the fallback
    assert store.health["circuit_open"]
    assert fingerprints(await store.fingerprint_groups()) == [("fp-new", 1)]
    assert await hourly() == [
        {},
        {"resource": 1},
        {},
    ]
    with pytest.raises(ValueError, match="limit"):
        await store.fingerprint_groups(limit=0)
    await store.close()


async def test_fail_closed_failover_refuses_while_the_primary_is_down() -> None:
    primary = Downable()
    store = FailoverStore(primary, fail_closed=True, failure_threshold=1, probe_interval=3600)
    await store.open()
    primary.down = True
    with pytest.raises(StoreUnavailableError):
        await store.fingerprint_groups()
    with pytest.raises(StoreUnavailableError):  # the circuit is open now: refused at once
        await store.failure_histogram(since=NOW - HOUR, until=NOW, bucket=HOUR)
    with pytest.raises(ValueError, match="bucket"):  # a bad argument is still named
        await store.failure_histogram(since=NOW - HOUR, until=NOW, bucket=timedelta(0))
    with pytest.raises(ValueError, match="limit"):
        await store.fingerprint_groups(limit=5000)
    primary.down = False
    await store.close()
