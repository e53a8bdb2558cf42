"""The Store contract, continued: the console's aggregations, ``fingerprint_groups`` and
``failure_histogram``. Every backend must pass every test here, unchanged."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from mahavishnu_dlq.models import DeadLetterStatus, ErrorCategory, FailedTask, TaskFilter
from mahavishnu_dlq.storage import FingerprintGroup, HistogramBucket, Store
from mahavishnu_dlq.testing import make_task
from tests.contract._records import T0, at, claimer, seed

pytestmark = pytest.mark.anyio

PENDING, EXHAUSTED, COMPLETED = (
    DeadLetterStatus.PENDING,
    DeadLetterStatus.EXHAUSTED,
    DeadLetterStatus.COMPLETED,
)
NETWORK, VALIDATION, RESOURCE = (
    ErrorCategory.NETWORK,
    ErrorCategory.VALIDATION,
    ErrorCategory.RESOURCE,
)


def task(
    task_id: str,
    fingerprint: str,
    seconds: float,
    *,
    workflow: str = "ingest",
    status: DeadLetterStatus = PENDING,
    category: ErrorCategory = NETWORK,
    error: str = "connection reset",
    error_type: str = "ConnectionResetError",
) -> FailedTask:
    return make_task(
        task_id=task_id,
        error_fingerprint=fingerprint,
        failed_at=at(seconds),
        workflow=workflow,
        status=status,
        next_retry_at=at(seconds) if status is PENDING else None,
        error_category=category,
        error=error,
        error_type=error_type,
    )


def _variety() -> list[FailedTask]:
    """fp-a: 4 tasks (3 workflows, 3 statuses); fp-b and fp-c: 2 each (a tie); one task
    with no fingerprint."""
    return [
        task("a1", "fp-a", 10, workflow="ingest"),
        task("a2", "fp-a", 30, workflow="report", status=EXHAUSTED),
        task("a3", "fp-a", 20, workflow="ingest", status=COMPLETED),
        task(
            "a4",
            "fp-a",
            40,
            workflow="billing",
            error="connection refused by 10.0.0.7",
            error_type="ConnectionRefusedError",
        ),
        task("c1", "fp-c", 5, category=VALIDATION, error="bad email", error_type="ValueError"),
        task("c2", "fp-c", 6, category=VALIDATION, error="bad phone", error_type="ValueError"),
        task("b1", "fp-b", 50, category=RESOURCE, error="quota", error_type="QuotaError"),
        task("b2", "fp-b", 1, category=RESOURCE, error="disk full", error_type="OSError"),
        task("none", "", 60, error="no fingerprint here"),
    ]


A = FingerprintGroup(
    fingerprint="fp-a",
    count=4,
    error_type="ConnectionRefusedError",
    example_error="connection refused by 10.0.0.7",
    first_seen=at(10),
    last_seen=at(40),
    workflows={"ingest": 2, "billing": 1, "report": 1},
    by_status={"pending": 2, "exhausted": 1, "completed": 1},
)
B = FingerprintGroup(
    fingerprint="fp-b",
    count=2,
    error_type="QuotaError",
    example_error="quota",
    first_seen=at(1),
    last_seen=at(50),
    workflows={"ingest": 2},
    by_status={"pending": 2},
)
C = FingerprintGroup(
    fingerprint="fp-c",
    count=2,
    error_type="ValueError",
    example_error="bad phone",
    first_seen=at(5),
    last_seen=at(6),
    workflows={"ingest": 2},
    by_status={"pending": 2},
)


# -- fingerprint groups ------------------------------------------------------------------


async def test_groups_count_and_describe_each_fingerprint(store: Store) -> None:
    await seed(store, *_variety())
    groups = await store.fingerprint_groups()
    assert groups == [A, B, C]  # biggest first; the tie of fp-b and fp-c by fingerprint
    assert list(groups[0].workflows) == ["ingest", "billing", "report"]  # ties by name
    for group in groups:
        assert group.first_seen.utcoffset() == timedelta(0)
        assert group.last_seen.utcoffset() == timedelta(0)
    assert await store.fingerprint_groups(None) == await store.fingerprint_groups(TaskFilter())


async def test_groups_at_most_limit_biggest_first(store: Store) -> None:
    await seed(store, *_variety())
    assert await store.fingerprint_groups(limit=1) == [A]
    assert await store.fingerprint_groups(limit=2) == [A, B]
    assert await store.fingerprint_groups(limit=1000) == [A, B, C]


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        (TaskFilter(status=PENDING), {"fp-a": 2, "fp-b": 2, "fp-c": 2}),
        (TaskFilter(status=[EXHAUSTED, COMPLETED]), {"fp-a": 2}),
        (TaskFilter(workflow="report"), {"fp-a": 1}),
        (TaskFilter(workflow=["billing", "report"]), {"fp-a": 2}),
        (TaskFilter(error_category=VALIDATION), {"fp-c": 2}),
        (TaskFilter(since=at(5), until=at(30)), {"fp-a": 2, "fp-c": 2}),
        (TaskFilter(fingerprint="fp-b"), {"fp-b": 2}),
        (TaskFilter(text="BAD"), {"fp-c": 2}),
        (TaskFilter(text="no fingerprint"), {}),
        (TaskFilter(text="connection refused by 10.0.0.7, then nothing"), {}),
        (TaskFilter(workflow="nope"), {}),
    ],
)
async def test_groups_of_what_the_filter_selects(
    store: Store, flt: TaskFilter, expected: dict[str, int]
) -> None:
    await seed(store, *_variety())
    groups = await store.fingerprint_groups(flt)
    assert {g.fingerprint: g.count for g in groups} == expected
    assert [g.fingerprint for g in groups] == sorted(expected, key=lambda fp: (-expected[fp], fp))
    for group in groups:  # each group counts its own matches only
        assert sum(group.by_status.values()) == group.count
        assert sum(group.workflows.values()) == group.count
        narrowed = flt.model_copy(update={"fingerprint": group.fingerprint})
        assert await store.count(narrowed) == group.count


async def test_groups_describe_only_the_selected_records(store: Store) -> None:
    await seed(store, *_variety())
    [pending] = await store.fingerprint_groups(TaskFilter(status=PENDING, fingerprint="fp-a"))
    assert pending == FingerprintGroup(
        fingerprint="fp-a",
        count=2,
        error_type="ConnectionRefusedError",
        example_error="connection refused by 10.0.0.7",
        first_seen=at(10),
        last_seen=at(40),
        workflows={"ingest": 1, "billing": 1},
        by_status={"pending": 2},
    )
    [early] = await store.fingerprint_groups(TaskFilter(until=at(35), fingerprint="fp-a"))
    assert (early.count, early.first_seen, early.last_seen) == (3, at(10), at(30))
    assert (early.error_type, early.example_error) == ("ConnectionResetError", "connection reset")


async def test_a_long_text_filter_is_checked_exactly(store: Store) -> None:
    """A text longer than one regular expression takes (on OpenSearch) a listing."""
    needle = "timeout while reading the response of the upstream"
    await seed(
        store,
        task("l1", "fp-long", 1, error=f"a {needle} service"),
        task("l2", "fp-long", 2, error=f"a {needle[:-1]}X service"),  # only the prefix matches
        task("l3", "fp-other", 3, error=f"{needle.upper()}!"),
    )
    groups = await store.fingerprint_groups(TaskFilter(text=needle))
    assert [(g.fingerprint, g.count) for g in groups] == [("fp-long", 1), ("fp-other", 1)]
    assert groups[0].example_error == f"a {needle} service"
    assert groups[0].first_seen == groups[0].last_seen == at(1)
    assert await store.fingerprint_groups(TaskFilter(text=needle), limit=1) == groups[:1]


async def test_records_without_a_fingerprint_form_no_group(store: Store) -> None:
    assert await store.fingerprint_groups() == []
    await seed(store, task("x1", "", 1), task("x2", "", 2))
    assert await store.fingerprint_groups() == []
    assert await store.count() == 2


async def test_the_example_is_the_newest_record_ties_by_id(store: Store) -> None:
    await seed(
        store,
        task("t-old", "fp", 1, error="oldest", error_type="OldError"),
        task("t-2", "fp", 9, error="second by id", error_type="TwoError"),
        task("t-1", "fp", 9, error="first by id", error_type="OneError"),
    )
    [group] = await store.fingerprint_groups()
    assert (group.error_type, group.example_error) == ("OneError", "first by id")
    assert (group.first_seen, group.last_seen) == (at(1), at(9))


async def test_the_example_error_is_its_first_200_characters(store: Store) -> None:
    long_error = "x" * 150 + "y" * 150
    await seed(store, task("t1", "fp", 1, error=long_error))
    [group] = await store.fingerprint_groups()
    assert group.example_error == long_error[:200]


async def test_a_group_names_its_ten_biggest_workflows(store: Store) -> None:
    tasks = [task(f"big-{i}", "fp", i, workflow="wf-big") for i in range(3)]
    tasks += [task(f"mid-{i}", "fp", 10 + i, workflow="wf-mid") for i in range(2)]
    tasks += [task(f"one-{i:02d}", "fp", 20 + i, workflow=f"wf-{i:02d}") for i in range(12)]
    await seed(store, *tasks)
    [group] = await store.fingerprint_groups()
    assert group.count == 17
    assert list(group.workflows.items()) == [
        ("wf-big", 3),
        ("wf-mid", 2),
        *((f"wf-{i:02d}", 1) for i in range(8)),
    ]
    assert group.by_status == {"pending": 17}


async def test_groups_see_changes_at_once(store: Store) -> None:
    await seed(store, *_variety())
    claimed = await store.claim_due(at(1000), 10, claimer(at(1000)))
    assert {t.task_id for t in claimed} == {"a1", "a4", "b1", "b2", "c1", "c2", "none"}
    assert await store.delete("c2")
    groups = await store.fingerprint_groups()
    assert [(g.fingerprint, g.count, g.by_status) for g in groups] == [
        ("fp-a", 4, {"retrying": 2, "exhausted": 1, "completed": 1}),
        ("fp-b", 2, {"retrying": 2}),
        ("fp-c", 1, {"retrying": 1}),
    ]
    assert groups[2].example_error == "bad email"


@pytest.mark.parametrize("limit", [0, -1, 1001, 10**9])
async def test_groups_refuse_a_limit_out_of_range(store: Store, limit: int) -> None:
    with pytest.raises(ValueError, match="limit"):
        await store.fingerprint_groups(limit=limit)


@pytest.mark.parametrize("limit", [True, 2.0, "5", None])
async def test_groups_refuse_a_limit_that_is_no_int(store: Store, limit: object) -> None:
    with pytest.raises(TypeError, match="limit"):
        await store.fingerprint_groups(limit=limit)  # type: ignore[arg-type]


# -- failure histogram -------------------------------------------------------------------

MICRO = timedelta(microseconds=1)


def failing_at(task_id: str, when: datetime, category: ErrorCategory = NETWORK) -> FailedTask:
    return make_task(task_id=task_id, failed_at=when, next_retry_at=when, error_category=category)


async def test_histogram_places_records_by_failed_at_from_since(store: Store) -> None:
    since, until, bucket = at(0), at(60), timedelta(seconds=20)
    await seed(
        store,
        failing_at("before", since - MICRO),  # out: before since
        failing_at("at-since", since),  # in bucket 0
        failing_at("end-of-0", since + bucket - MICRO, VALIDATION),  # still bucket 0
        failing_at("start-of-1", since + bucket, VALIDATION),  # bucket 1
        failing_at("in-1", at(30), RESOURCE),
        failing_at("last", until - MICRO),  # bucket 2
        failing_at("at-until", until),  # out: until is excluded
    )
    histogram = await store.failure_histogram(since=since, until=until, bucket=bucket)
    assert histogram == [
        HistogramBucket(start=at(0), by_category={"network": 1, "validation": 1}),
        HistogramBucket(start=at(20), by_category={"validation": 1, "resource": 1}),
        HistogramBucket(start=at(40), by_category={"network": 1}),
    ]
    for found in histogram:
        assert found.start.utcoffset() == timedelta(0)


async def test_histogram_returns_every_bucket_empty_ones_too(store: Store) -> None:
    await seed(store, failing_at("t1", at(35)))
    histogram = await store.failure_histogram(
        since=at(0), until=at(60), bucket=timedelta(seconds=10)
    )
    assert [b.start for b in histogram] == [at(s) for s in range(0, 60, 10)]
    assert [b.by_category for b in histogram] == [{}, {}, {}, {"network": 1}, {}, {}]
    empty = await store.failure_histogram(since=at(100), until=at(160), bucket=timedelta(minutes=1))
    assert empty == [HistogramBucket(start=at(100), by_category={})]


async def test_histogram_cuts_the_last_bucket_short_at_until(store: Store) -> None:
    await seed(store, failing_at("in", at(49)), failing_at("out", at(50)))
    histogram = await store.failure_histogram(
        since=at(0), until=at(50), bucket=timedelta(seconds=20)
    )
    assert histogram == [
        HistogramBucket(start=at(0), by_category={}),
        HistogramBucket(start=at(20), by_category={}),
        HistogramBucket(start=at(40), by_category={"network": 1}),
    ]


async def test_histogram_buckets_are_anchored_at_since_not_the_epoch(store: Store) -> None:
    """An hour bucket from 12:00:00.123456 + 7 min: not aligned to whole hours."""
    since = at(7 * 60)
    await seed(
        store,
        failing_at("t1", since + timedelta(minutes=59)),
        failing_at("t2", since + timedelta(minutes=61), RESOURCE),
    )
    histogram = await store.failure_histogram(
        since=since, until=since + timedelta(hours=2), bucket=timedelta(hours=1)
    )
    assert histogram == [
        HistogramBucket(start=since, by_category={"network": 1}),
        HistogramBucket(start=since + timedelta(hours=1), by_category={"resource": 1}),
    ]


async def test_histogram_counts_every_status_and_takes_any_timezone(store: Store) -> None:
    await seed(
        store,
        task("p", "fp", 5, status=PENDING),
        task("e", "fp", 6, status=EXHAUSTED, category=VALIDATION),
        task("c", "", 7, status=COMPLETED, category=VALIDATION),
    )
    plus_two = timezone(timedelta(hours=2))
    histogram = await store.failure_histogram(
        since=at(0).astimezone(plus_two), until=at(10).astimezone(plus_two), bucket=timedelta(1)
    )
    assert histogram == [HistogramBucket(start=at(0), by_category={"network": 1, "validation": 2})]
    assert histogram[0].start.utcoffset() == timedelta(0)


async def test_histogram_sees_changes_at_once(store: Store) -> None:
    await seed(store, failing_at("t1", at(0.5)))
    first = await store.failure_histogram(since=at(0), until=at(2), bucket=timedelta(seconds=1))
    assert first == [HistogramBucket(at(0), {"network": 1}), HistogramBucket(at(1), {})]
    await seed(store, failing_at("t2", at(1.5), RESOURCE))
    assert await store.delete("t1")
    second = await store.failure_histogram(since=at(0), until=at(2), bucket=timedelta(seconds=1))
    assert second == [HistogramBucket(at(0), {}), HistogramBucket(at(1), {"resource": 1})]


async def test_histogram_has_at_most_1000_buckets(store: Store) -> None:
    await seed(store, failing_at("t1", at(999)))
    most = await store.failure_histogram(since=at(0), until=at(1000), bucket=timedelta(seconds=1))
    assert len(most) == 1000
    assert most[-1] == HistogramBucket(at(999), {"network": 1})
    assert sum(len(b.by_category) for b in most) == 1
    with pytest.raises(ValueError, match="bucket"):
        await store.failure_histogram(since=at(0), until=at(1001), bucket=timedelta(seconds=1))
    with pytest.raises(ValueError, match="bucket"):
        await store.failure_histogram(
            since=at(0), until=at(1000) + MICRO, bucket=timedelta(seconds=1)
        )


@pytest.mark.parametrize(
    ("since", "until", "bucket", "named"),
    [
        (at(0), at(60), timedelta(0), "bucket"),
        (at(0), at(60), timedelta(seconds=-1), "bucket"),
        (at(60), at(60), timedelta(seconds=1), "since"),
        (at(61), at(60), timedelta(seconds=1), "since"),
        (T0.replace(tzinfo=None), at(60), timedelta(seconds=1), "since"),
        (at(0), at(60).replace(tzinfo=None), timedelta(seconds=1), "until"),
    ],
)
async def test_histogram_refuses_bad_arguments(
    store: Store, since: datetime, until: datetime, bucket: timedelta, named: str
) -> None:
    with pytest.raises(ValueError, match=named):
        await store.failure_histogram(since=since, until=until, bucket=bucket)


async def test_histogram_refuses_arguments_of_the_wrong_type(store: Store) -> None:
    with pytest.raises(TypeError, match="bucket"):
        await store.failure_histogram(since=at(0), until=at(60), bucket=60)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="since"):
        await store.failure_histogram(since="2026-03-01", until=at(60), bucket=timedelta(1))  # type: ignore[arg-type]
