"""DeadLetterQueue over MemoryStore: listing, statistics, replay, archive, purge and
clear."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

import pytest

from mahavishnu_dlq import DeadLetterQueue, RetryProcessor
from mahavishnu_dlq.errors import (
    TaskBusyError,
)
from mahavishnu_dlq.models import (
    DeadLetterStatus,
    ErrorCategory,
    FailedTask,
    ReplayReport,
    TaskFilter,
)
from mahavishnu_dlq.testing import FakeClock, FlakyHandler
from tests.unit.queue.conftest import (
    ARCHIVED,
    COMPLETED,
    EXHAUSTED,
    PENDING,
    T0,
    at,
    connection_error,
    fetch,
    ids,
    succeed,
    value_error,
)

pytestmark = pytest.mark.anyio


# -- listing ------------------------------------------------------------------------------


async def _variety(dlq: DeadLetterQueue, clock: FakeClock) -> None:
    """a..e, one every 10 s: a pending, b pending (never), c completed, d archived, e exhausted."""
    dlq.default_callback = succeed
    await dlq.enqueue("a", {}, error=connection_error(1), workflow="ingest")
    clock.advance(10)
    await dlq.enqueue("b", {}, error=value_error(), workflow="report")
    clock.advance(10)
    await dlq.enqueue("c", {}, error=connection_error(3), workflow="report")
    await dlq.retry_task("c")
    clock.advance(10)
    await dlq.enqueue("d", {}, error="disk quota exceeded", workflow="ingest")
    await dlq.archive_task("d")
    clock.advance(10)
    await dlq.enqueue("e", {}, error=connection_error(5), workflow="ingest", max_retries=0)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, ["e", "d", "c", "b", "a"]),
        ({"status": "pending"}, ["b", "a"]),
        ({"status": DeadLetterStatus.COMPLETED}, ["c"]),
        ({"status": ["archived", DeadLetterStatus.EXHAUSTED]}, ["e", "d"]),
        ({"error_category": "network"}, ["e", "c", "a"]),
        ({"error_category": [ErrorCategory.VALIDATION, "resource"]}, ["d", "b"]),
        ({"workflow": "report"}, ["c", "b"]),
        ({"workflow": ["ingest"]}, ["e", "d", "a"]),
        ({"since": at(10), "until": at(30)}, ["c", "b"]),
        ({"since": at(30)}, ["e", "d"]),
        ({"until": at(10)}, ["a"]),
        ({"text": "QUOTA"}, ["d"]),
        ({"text": "valueerror"}, ["b"]),
        ({"text": "shard"}, ["e", "c", "a"]),
        ({"workflow": "ingest", "status": "pending"}, ["a"]),
        ({"workflow": "ingest", "error_category": "network", "since": at(1)}, ["e"]),
        ({"text": "no such words"}, []),
    ],
)
async def test_list_filters(
    dlq: DeadLetterQueue, clock: FakeClock, kwargs: dict[str, Any], expected: list[str]
) -> None:
    await _variety(dlq, clock)
    page = await dlq.list_tasks(**kwargs)
    assert [t.task_id for t in page] == expected
    assert page.cursor is None


async def test_list_pages_through_everything_with_the_cursor(
    dlq: DeadLetterQueue, clock: FakeClock
) -> None:
    for i in range(7):
        await dlq.enqueue(f"t{i}", {"i": i}, error="boom")
        clock.advance(1)
    seen: list[str] = []
    sizes: list[int] = []
    cursor: str | None = None
    while True:
        page = await dlq.list_tasks(limit=3, cursor=cursor)
        seen.extend(t.task_id for t in page)
        sizes.append(len(page))
        cursor = page.cursor
        if cursor is None:
            break
    assert sizes == [3, 3, 1]
    assert seen == [f"t{i}" for i in reversed(range(7))]
    # a filter holds across pages
    first = await dlq.list_tasks(limit=2, text="t", since=at(2))
    rest = await dlq.list_tasks(limit=10, text="t", since=at(2), cursor=first.cursor)
    assert [t.task_id for t in [*first, *rest]] == ["t6", "t5", "t4", "t3", "t2"]


async def test_get_task_of_an_unknown_id_is_none(dlq: DeadLetterQueue) -> None:
    assert await dlq.get_task("ghost") is None


# -- statistics --------------------------------------------------------------------------


async def test_statistics(clock: FakeClock) -> None:
    dlq = DeadLetterQueue(clock=clock, max_size=8, retry_interval_seconds=45)
    dlq.default_callback = succeed
    await dlq.enqueue("n1", {}, error=connection_error(1))
    clock.advance(30)
    await dlq.enqueue("n2", {}, error=connection_error(2))
    await dlq.enqueue("x1", {}, error=connection_error(3), max_retries=0)
    await dlq.enqueue("v1", {}, error=value_error())
    await dlq.enqueue("v2", {}, error=value_error(), retry_policy="linear")
    await dlq.enqueue("v2", {}, error=value_error())  # a duplicate delivery
    await dlq.retry_task("v1")
    await dlq.archive_task("v2")
    clock.advance(60)

    stats = await dlq.get_statistics()
    assert {
        "queue_size",
        "max_size",
        "utilization_percent",
        "status_breakdown",
        "error_categories",
        "retry_policies",
        "lifetime_stats",
        "is_processor_running",
        "retry_interval_seconds",
        "backend",
        "oldest_pending_age_seconds",
        "top_fingerprints",
    } <= set(stats)
    assert stats["queue_size"] == 3  # n1, n2 pending; x1 exhausted
    assert stats["max_size"] == 8
    assert stats["utilization_percent"] == 37.5
    assert stats["status_breakdown"] == {
        "pending": 2,
        "retrying": 0,
        "exhausted": 1,
        "completed": 1,
        "archived": 1,
    }
    assert stats["error_categories"] == {
        "transient": 0,
        "network": 3,
        "resource": 0,
        "permission": 0,
        "validation": 2,
        "permanent": 0,
    }
    assert stats["retry_policies"] == {
        "never": 1,
        "linear": 1,
        "exponential": 3,
        "immediate": 0,
    }
    life = stats["lifetime_stats"]
    assert {
        "enqueued_total",
        "retry_success",
        "retry_failed",
        "exhausted",
        "manually_retried",
        "archived",
    } <= set(life)
    assert life["enqueued_total"] == 5
    assert life["deduplicated"] == 1
    assert life["retry_success"] == 1
    assert life["retry_failed"] == 0
    assert life["exhausted"] == 1
    assert life["manually_retried"] == 1
    assert life["archived"] == 1
    assert stats["is_processor_running"] is False
    assert stats["retry_interval_seconds"] is None  # no processor runs: no interval
    assert stats["backend"] == "memory"
    assert stats["oldest_pending_age_seconds"] == 90.0  # n1 failed at T0, now T0+90
    top = stats["top_fingerprints"]
    assert top[0]["count"] == 3  # the three connection failures, whatever their shard
    assert top[0]["error_type"] == "ConnectionError"
    assert top[0]["example_error"].startswith("connection to shard")
    assert sum(fp["count"] for fp in top) == stats["queue_size"]
    fingerprints = {(await fetch(dlq, i)).error_fingerprint for i in ("n1", "n2", "x1")}
    assert fingerprints == {top[0]["fingerprint"]}
    fewer = await dlq.get_statistics(top_fingerprints=1)
    assert fewer["top_fingerprints"] == top[:1]
    skipped = await dlq.get_statistics(top_fingerprints=0)  # what the console's overview asks
    assert skipped["top_fingerprints"] == []
    assert skipped["status_breakdown"] == stats["status_breakdown"]
    for bad, error in ((-1, ValueError), (101, ValueError), (True, TypeError), ("5", TypeError)):
        with pytest.raises(error, match="top_fingerprints"):
            await dlq.get_statistics(top_fingerprints=bad)  # type: ignore[arg-type]


async def test_statistics_of_an_empty_queue(dlq: DeadLetterQueue) -> None:
    stats = await dlq.get_statistics()
    assert stats["queue_size"] == 0
    assert stats["utilization_percent"] == 0.0
    assert stats["oldest_pending_age_seconds"] is None
    assert stats["top_fingerprints"] == []
    assert set(stats["status_breakdown"].values()) == {0}
    assert set(stats["lifetime_stats"].values()) == {0}


async def test_oldest_pending_age_follows_the_oldest_pending_task(
    dlq: DeadLetterQueue, clock: FakeClock
) -> None:
    dlq.default_callback = succeed
    await dlq.enqueue("old", {}, error=connection_error())
    clock.advance(100)
    await dlq.enqueue("new", {}, error=connection_error())
    clock.advance(20)
    assert (await dlq.get_statistics())["oldest_pending_age_seconds"] == 120.0
    await dlq.retry_task("old")
    assert (await dlq.get_statistics())["oldest_pending_age_seconds"] == 20.0
    await dlq.archive_task("new")
    assert (await dlq.get_statistics())["oldest_pending_age_seconds"] is None


# -- replay -------------------------------------------------------------------------------


async def _replayable(dlq: DeadLetterQueue) -> None:
    """p1, p2 pending in the future; x1 exhausted; done completed; a never task."""
    dlq.default_callback = succeed
    await dlq.enqueue("p1", {}, error=connection_error(), workflow="ingest")
    await dlq.enqueue("p2", {}, error=connection_error(), workflow="report")
    await dlq.enqueue("x1", {}, error=connection_error(), workflow="ingest", max_retries=0)
    await dlq.enqueue("done", {}, error=connection_error(), workflow="ingest")
    await dlq.retry_task("done")
    await dlq.enqueue("v1", {}, error=value_error(), workflow="report")


def assert_consistent(report: ReplayReport) -> None:
    """The report's counters agree with its items."""
    outcomes = Counter(item.outcome for item in report.items)
    assert report.matched == len(report.items)
    assert (
        report.replayed == outcomes["replayed"] + outcomes["would_replay"] + outcomes["succeeded"]
    )
    assert report.succeeded == outcomes["succeeded"]
    assert report.failed == outcomes["failed"]
    assert report.skipped == outcomes["skipped"]
    assert report.matched == report.replayed + report.failed + report.skipped
    assert len({item.task_id for item in report.items}) == report.matched  # each task once


async def _snapshot(dlq: DeadLetterQueue) -> dict[str, FailedTask]:
    return {task.task_id: task for task in await dlq.list_tasks(limit=1000)}


async def test_replay_dry_run_touches_nothing(dlq: DeadLetterQueue, clock: FakeClock) -> None:
    await _replayable(dlq)
    before = await _snapshot(dlq)
    report = await dlq.replay(dry_run=True, rate_per_second=1)
    assert_consistent(report)
    assert report.dry_run is True
    assert sorted(item.task_id for item in report.items) == ["p1", "p2", "v1", "x1"]
    assert {item.outcome for item in report.items} == {"would_replay"}
    assert report.matched == report.replayed == 4
    assert report.succeeded == report.failed == report.skipped == 0
    assert await _snapshot(dlq) == before
    assert clock.slept == []
    assert clock.now() == T0
    assert await RetryProcessor(dlq).run_once() == 0


async def test_replay_makes_tasks_due_and_the_processor_retries_them(
    dlq: DeadLetterQueue, clock: FakeClock
) -> None:
    await _replayable(dlq)
    processor = RetryProcessor(dlq)
    assert await processor.run_once() == 0
    clock.advance(10)
    report = await dlq.replay()
    assert_consistent(report)
    assert report.dry_run is False
    assert sorted(item.task_id for item in report.items) == ["p1", "p2", "v1", "x1"]
    assert {item.outcome for item in report.items} == {"replayed"}
    assert report.matched == report.replayed == 4
    assert report.failures == []

    p1 = await fetch(dlq, "p1")
    assert p1.status is PENDING
    assert p1.next_retry_at == at(10)
    assert p1.max_retries == 3
    x1 = await fetch(dlq, "x1")
    assert x1.status is PENDING
    assert x1.next_retry_at == at(10)
    assert x1.max_retries == x1.retry_count + 1 == 1
    done = await fetch(dlq, "done")
    assert done.status is COMPLETED  # closed tasks are not matched

    assert await processor.run_once() == 4
    for task_id in ("p1", "p2", "x1", "v1"):
        assert (await fetch(dlq, task_id)).status is COMPLETED


async def test_a_replayed_exhausted_task_that_fails_again_is_exhausted_again(
    dlq: DeadLetterQueue,
) -> None:
    dlq.default_callback = FlakyHandler(failures=1000)
    await dlq.enqueue("x1", {}, error=connection_error(), retry_policy="immediate", max_retries=1)
    processor = RetryProcessor(dlq)
    assert await processor.drain() == 1
    assert (await fetch(dlq, "x1")).status is EXHAUSTED
    await dlq.replay()
    assert await processor.drain() == 1  # exactly one more retry
    task = await fetch(dlq, "x1")
    assert task.status is EXHAUSTED
    assert task.retry_count == task.max_retries == 2


async def test_replay_limit(dlq: DeadLetterQueue) -> None:
    for i in range(5):
        await dlq.enqueue(f"t{i}", {}, error=connection_error())
    report = await dlq.replay(limit=2)
    assert_consistent(report)
    assert report.matched == report.replayed == len(report.items) == 2
    due = [t.task_id for t in await dlq.list_tasks() if t.next_retry_at == T0]
    assert sorted(due) == sorted(item.task_id for item in report.items)
    assert (await dlq.replay(limit=0)).matched == 0


async def test_replay_is_paced_by_the_clock(dlq: DeadLetterQueue, clock: FakeClock) -> None:
    for i in range(5):
        await dlq.enqueue(f"t{i}", {}, error=connection_error())
    report = await dlq.replay(rate_per_second=2)
    assert_consistent(report)
    assert report.replayed == 5
    assert clock.slept == pytest.approx([0.5] * 4)
    assert sum(clock.slept) == pytest.approx((5 - 1) / 2)
    assert clock.now() == at(2)
    # each task was made due at the moment its turn came
    due = sorted(t.next_retry_at for t in await dlq.list_tasks() if t.next_retry_at is not None)
    assert due == [at(0), at(0.5), at(1), at(1.5), at(2)]


async def test_replay_reports_each_item_as_it_goes(dlq: DeadLetterQueue) -> None:
    for i in range(4):
        await dlq.enqueue(f"t{i}", {}, error=connection_error())
    seen: list[str] = []
    selected = dlq.replay_filter()
    assert selected.status == (
        DeadLetterStatus.PENDING,
        DeadLetterStatus.EXHAUSTED,
        DeadLetterStatus.RETRYING,
    )
    assert await dlq.count_tasks(selected) == 4
    report = await dlq.replay(on_item=lambda item: seen.append(item.task_id), limit=3)
    assert seen == [item.task_id for item in report.items]
    assert len(seen) == 3
    # a filter with a status is taken as it is
    only_done = TaskFilter(status="completed")
    assert dlq.replay_filter(only_done) is only_done


async def test_replay_by_filter(dlq: DeadLetterQueue) -> None:
    await _replayable(dlq)
    report = await dlq.replay(TaskFilter(workflow="ingest", error_category=ErrorCategory.NETWORK))
    assert_consistent(report)
    assert sorted(item.task_id for item in report.items) == ["p1", "x1"]
    assert (await fetch(dlq, "p2")).next_retry_at == at(60)  # untouched
    assert (await fetch(dlq, "v1")).next_retry_at is None
    # an explicit status narrows the default selection
    only_exhausted = await dlq.replay(TaskFilter(status=EXHAUSTED))
    assert_consistent(only_exhausted)
    assert only_exhausted.matched == 0  # x1 is pending now


async def test_replay_with_run_retries_inline(dlq: DeadLetterQueue) -> None:
    async def picky(task: dict[str, Any], repos: list[str]) -> str:
        if task.get("fail"):
            raise ConnectionError("still down")
        return "ok"

    dlq.default_callback = picky
    await dlq.enqueue("good-1", {}, error=connection_error())
    await dlq.enqueue("good-2", {}, error=connection_error())
    await dlq.enqueue("bad", {"fail": True}, error=connection_error())
    report = await dlq.replay(run=True)
    assert_consistent(report)
    outcomes = {item.task_id: item.outcome for item in report.items}
    assert outcomes == {"good-1": "succeeded", "good-2": "succeeded", "bad": "failed"}
    assert report.matched == 3
    assert report.succeeded == 2
    assert report.failed == 1
    assert report.replayed == 2
    assert [item.detail for item in report.failures] == ["still down"]
    assert (await fetch(dlq, "good-1")).status is COMPLETED
    bad = await fetch(dlq, "bad")
    assert bad.status is PENDING
    assert bad.retry_count == 1
    assert (await dlq.get_statistics())["lifetime_stats"]["manually_retried"] == 3


async def test_replay_skips_tasks_being_retried(dlq: DeadLetterQueue) -> None:
    dlq.default_callback = succeed
    await dlq.enqueue("busy", {}, error=connection_error(), retry_policy="immediate")
    await dlq.enqueue("free", {}, error=connection_error())
    (claimed,) = await RetryProcessor(dlq).claim(10)
    assert claimed.task_id == "busy"
    report = await dlq.replay()
    assert_consistent(report)
    outcomes = {item.task_id: item.outcome for item in report.items}
    assert outcomes == {"busy": "skipped", "free": "replayed"}
    assert report.matched == 2
    assert report.skipped == 1
    assert report.replayed == 1
    assert report.matched == report.replayed + report.failed + report.skipped
    (skipped,) = report.failures
    assert "busy" in skipped.detail
    assert await fetch(dlq, "busy") == claimed
    dry = await dlq.replay(dry_run=True)
    assert_consistent(dry)
    assert {item.task_id: item.outcome for item in dry.items}["busy"] == "skipped"


@pytest.mark.parametrize(
    "kwargs", [{"rate_per_second": 0}, {"rate_per_second": -1.0}, {"limit": -1}]
)
async def test_replay_arguments_are_checked(dlq: DeadLetterQueue, kwargs: dict[str, Any]) -> None:
    await dlq.enqueue("t1", {}, error=connection_error())
    with pytest.raises(ValueError, match=r"rate_per_second|limit"):
        await dlq.replay(**kwargs)
    assert (await fetch(dlq, "t1")).next_retry_at == at(60)


# -- archive, purge, clear ----------------------------------------------------------------


async def test_archive(dlq: DeadLetterQueue, clock: FakeClock) -> None:
    dlq.default_callback = succeed
    await dlq.enqueue("pending", {}, error=connection_error(), retry_policy="immediate")
    await dlq.enqueue("exhausted", {}, error=connection_error(), max_retries=0)
    await dlq.enqueue("completed", {}, error=connection_error())
    await dlq.retry_task("completed")
    clock.advance(15)
    for task_id in ("pending", "exhausted", "completed"):
        assert await dlq.archive_task(task_id) is True
        task = await fetch(dlq, task_id)
        assert task.status is ARCHIVED
        assert task.archived_at == at(15)
        assert task.next_retry_at is None
    clock.advance(15)
    assert await dlq.archive_task("pending") is True  # idempotent
    assert (await fetch(dlq, "pending")).archived_at == at(15)
    assert await dlq.archive_task("ghost") is False
    stats = await dlq.get_statistics()
    assert stats["lifetime_stats"]["archived"] == 3
    assert stats["status_breakdown"]["archived"] == 3
    assert stats["queue_size"] == 0
    # archived tasks are never picked, however long we wait
    clock.advance(timedelta(days=30))
    assert await RetryProcessor(dlq).drain() == 0


async def test_archive_of_a_task_being_retried_is_refused(dlq: DeadLetterQueue) -> None:
    dlq.default_callback = succeed
    await dlq.enqueue("t1", {}, error=connection_error(), retry_policy="immediate")
    (claimed,) = await RetryProcessor(dlq).claim(1)
    with pytest.raises(TaskBusyError):
        await dlq.archive_task("t1")
    assert await fetch(dlq, "t1") == claimed
    assert (await dlq.get_statistics())["lifetime_stats"]["archived"] == 0


async def _closed_and_open(dlq: DeadLetterQueue, clock: FakeClock) -> None:
    """done-0 completed at T0, arch-100 archived at T0+100, pend and exh open."""
    dlq.default_callback = succeed
    await dlq.enqueue("done-0", {}, error=connection_error())
    await dlq.retry_task("done-0")
    await dlq.enqueue("pend", {}, error=connection_error())
    await dlq.enqueue("exh", {}, error=connection_error(), max_retries=0)
    clock.advance(100)
    await dlq.enqueue("arch-100", {}, error=connection_error())
    await dlq.archive_task("arch-100")
    clock.advance(50)


async def test_purge_removes_completed_and_archived_by_default(
    dlq: DeadLetterQueue, clock: FakeClock
) -> None:
    await _closed_and_open(dlq, clock)
    assert await dlq.purge() == 2
    assert sorted(await ids(dlq)) == ["exh", "pend"]
    assert await dlq.purge() == 0
    stats = await dlq.get_statistics()
    assert stats["lifetime_stats"]["purged"] == 2
    assert stats["queue_size"] == 2


async def test_purge_older_than_an_age(dlq: DeadLetterQueue, clock: FakeClock) -> None:
    await _closed_and_open(dlq, clock)
    # now T0+150: a 100 s age means last updated before T0+50
    assert await dlq.purge(older_than=timedelta(seconds=100)) == 1
    assert await dlq.get_task("done-0") is None
    assert await dlq.get_task("arch-100") is not None
    assert await dlq.purge(older_than=timedelta(seconds=50)) == 0  # cut-off T0+100, exclusive
    assert await dlq.purge(older_than=timedelta(0)) == 1
    assert sorted(await ids(dlq)) == ["exh", "pend"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"older_than": timedelta(seconds=100)},
        {"older_than": at(101)},
        {"status": ["pending", "exhausted"]},
        {"status": "completed", "older_than": timedelta(0)},
    ],
)
async def test_purge_dry_run_counts_what_purge_deletes(
    dlq: DeadLetterQueue, clock: FakeClock, kwargs: dict[str, Any]
) -> None:
    await _closed_and_open(dlq, clock)
    before = sorted(await ids(dlq))
    would = await dlq.purge(dry_run=True, **kwargs)
    assert sorted(await ids(dlq)) == before  # nothing deleted
    assert (await dlq.get_statistics())["lifetime_stats"]["purged"] == 0
    assert await dlq.count_tasks(dlq.purge_filter(**kwargs)) == would
    assert await dlq.purge(**kwargs) == would
    assert len(await ids(dlq)) == len(before) - would


async def test_purge_older_than_a_time(dlq: DeadLetterQueue, clock: FakeClock) -> None:
    await _closed_and_open(dlq, clock)
    assert await dlq.purge(older_than=at(100)) == 1
    assert await dlq.get_task("arch-100") is not None
    assert await dlq.purge(older_than=at(101)) == 1
    assert sorted(await ids(dlq)) == ["exh", "pend"]


@pytest.mark.parametrize(
    ("status", "gone"),
    [
        ("exhausted", {"exh"}),
        ([DeadLetterStatus.PENDING], {"pend"}),
        (["pending", "exhausted", "completed"], {"pend", "exh", "done-0"}),
    ],
)
async def test_purge_by_status(
    dlq: DeadLetterQueue, clock: FakeClock, status: Any, gone: set[str]
) -> None:
    await _closed_and_open(dlq, clock)
    everything = {"done-0", "pend", "exh", "arch-100"}
    assert await dlq.purge(status=status) == len(gone)
    assert set(await ids(dlq)) == everything - gone


async def test_purge_arguments_are_checked(dlq: DeadLetterQueue, clock: FakeClock) -> None:
    await _closed_and_open(dlq, clock)
    with pytest.raises(ValueError, match="negative"):
        await dlq.purge(older_than=timedelta(seconds=-1))
    with pytest.raises(ValueError, match="allowed"):
        await dlq.purge(status="gone")
    assert len(await ids(dlq)) == 4


async def test_clear_all(dlq: DeadLetterQueue, clock: FakeClock) -> None:
    await _closed_and_open(dlq, clock)
    assert await dlq.clear_all() == 4
    assert await ids(dlq) == []
    assert await dlq.get_task("pend") is None
    stats = await dlq.get_statistics()
    assert stats["queue_size"] == 0
    assert stats["total_stored"] == 0
    assert stats["lifetime_stats"]["purged"] == 4
    assert await dlq.clear_all() == 0
    clock.advance(timedelta(days=1))
    assert await RetryProcessor(dlq).drain() == 0
