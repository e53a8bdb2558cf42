"""The Store contract, continued: queries and pages, counts and statistics, purge and
clear. Every backend must pass every test here, unchanged."""

from __future__ import annotations

import pytest

from mahavishnu_dlq.models import (
    DeadLetterStatus,
    ErrorCategory,
    FailedTask,
    RetryPolicy,
    TaskFilter,
)
from mahavishnu_dlq.storage import Store
from mahavishnu_dlq.testing import make_task
from tests.contract._records import (
    at,
    claimer,
    seed,
)

pytestmark = pytest.mark.anyio


# -- queries ------------------------------------------------------------------------


def _variety() -> list[FailedTask]:
    return [
        make_task(
            task_id="net-1",
            workflow="ingest",
            failed_at=at(1),
            error="connection reset",
            error_category=ErrorCategory.NETWORK,
            error_fingerprint="fp-net",
        ),
        make_task(
            task_id="net-2",
            workflow="ingest",
            failed_at=at(2),
            error="connection refused",
            error_category=ErrorCategory.NETWORK,
            error_fingerprint="fp-net",
        ),
        make_task(
            task_id="val-1",
            workflow="report",
            failed_at=at(3),
            error="invalid email address",
            error_type="ValueError",
            error_category=ErrorCategory.VALIDATION,
            retry_policy=RetryPolicy.NEVER,
            next_retry_at=None,
            error_fingerprint="fp-val",
        ),
        make_task(
            task_id="done-1",
            workflow="report",
            failed_at=at(4),
            status=DeadLetterStatus.COMPLETED,
            next_retry_at=None,
            error="service temporarily unavailable",
            error_category=ErrorCategory.TRANSIENT,
            error_fingerprint="fp-tr",
        ),
        make_task(
            task_id="exh-1",
            workflow="ingest",
            failed_at=at(5),
            status=DeadLetterStatus.EXHAUSTED,
            next_retry_at=None,
            error="Quota exceeded",
            error_category=ErrorCategory.RESOURCE,
            retry_policy=RetryPolicy.LINEAR,
            error_fingerprint="fp-res",
        ),
    ]


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        (TaskFilter(), ["exh-1", "done-1", "val-1", "net-2", "net-1"]),
        (TaskFilter(status=DeadLetterStatus.PENDING), ["val-1", "net-2", "net-1"]),
        (TaskFilter(status=["completed", "exhausted"]), ["exh-1", "done-1"]),
        (TaskFilter(error_category=ErrorCategory.NETWORK), ["net-2", "net-1"]),
        (TaskFilter(workflow="report"), ["done-1", "val-1"]),
        (TaskFilter(since=at(2), until=at(4)), ["val-1", "net-2"]),
        (TaskFilter(text="CONNECTION RE"), ["net-2", "net-1"]),
        (TaskFilter(text="valueerror"), ["val-1"]),
        (TaskFilter(text="exh-"), ["exh-1"]),
        (TaskFilter(fingerprint="fp-net"), ["net-2", "net-1"]),
        (TaskFilter(workflow="ingest", status="pending", text="refused"), ["net-2"]),
        (TaskFilter(text="nothing like this"), []),
    ],
)
async def test_query_filters(store: Store, flt: TaskFilter, expected: list[str]) -> None:
    await seed(store, *_variety())
    page = await store.query(flt, limit=100)
    assert [t.task_id for t in page] == expected
    assert page.cursor is None
    assert await store.count(flt) == len(expected)


async def test_query_pages_cover_everything_once_in_order(store: Store) -> None:
    tasks = [make_task(task_id=f"t{i:03d}", failed_at=at(i // 3)) for i in range(25)]
    await seed(store, *tasks)
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = await store.query(TaskFilter(), limit=7, cursor=cursor)
        seen.extend(t.task_id for t in page)
        pages += 1
        cursor = page.cursor
        if cursor is None:
            break
    expected = [
        t.task_id for t in sorted(tasks, key=lambda t: (-t.failed_at.timestamp(), t.task_id))
    ]
    assert seen == expected
    assert pages == 4


async def test_cursor_stays_valid_while_records_change(store: Store) -> None:
    await seed(store, *(make_task(task_id=f"t{i}", failed_at=at(i)) for i in range(6)))
    first = await store.query(TaskFilter(), limit=3)
    assert [t.task_id for t in first] == ["t5", "t4", "t3"]
    # records on both sides of the cursor change and one is deleted
    await store.mutate("t5", lambda c: c.model_copy(update={"retry_count": 2}))  # type: ignore[union-attr]
    await store.mutate("t2", lambda c: c.model_copy(update={"retry_count": 2}))  # type: ignore[union-attr]
    await store.delete("t1")
    rest = await store.query(TaskFilter(), limit=10, cursor=first.cursor)
    assert [t.task_id for t in rest] == ["t2", "t0"]


async def test_malformed_cursor_is_a_clear_error(store: Store) -> None:
    with pytest.raises(ValueError, match="malformed cursor"):
        await store.query(TaskFilter(), limit=5, cursor="not-a-cursor!")


async def test_counts_and_statistics(store: Store) -> None:
    await seed(store, *_variety())
    assert await store.count() == 5
    assert await store.open_count() == 4
    stats = await store.statistics()
    assert stats.total == 5
    assert stats.by_status[DeadLetterStatus.PENDING] == 3
    assert stats.by_status[DeadLetterStatus.COMPLETED] == 1
    assert stats.by_status[DeadLetterStatus.EXHAUSTED] == 1
    assert stats.by_status.get(DeadLetterStatus.RETRYING, 0) == 0
    assert stats.open_count == 4
    assert stats.by_category == {"network": 2, "validation": 1, "transient": 1, "resource": 1}
    assert stats.by_policy == {"exponential": 3, "never": 1, "linear": 1}
    assert stats.oldest_pending_failed_at == at(1)
    top = stats.top_fingerprints
    assert top[0].fingerprint == "fp-net"
    assert top[0].count == 2
    assert top[0].example_error.startswith("connection re")
    # completed tasks are not "open", so their fingerprint is not among the top
    assert "fp-tr" not in {fp.fingerprint for fp in top}


async def test_statistics_follow_changes(store: Store) -> None:
    await seed(store, *_variety())
    await store.claim_due(at(1000), 10, claimer(at(1000)))
    stats = await store.statistics()
    assert stats.by_status[DeadLetterStatus.RETRYING] == 2
    assert stats.by_status[DeadLetterStatus.PENDING] == 1
    assert stats.oldest_pending_failed_at == at(3)
    await store.delete("val-1")
    stats = await store.statistics()
    assert stats.oldest_pending_failed_at is None
    assert stats.total == 4


async def test_empty_statistics(store: Store) -> None:
    stats = await store.statistics()
    assert stats.total == 0
    assert stats.open_count == 0
    assert stats.oldest_pending_failed_at is None
    assert stats.top_fingerprints == []
    assert stats.unreadable == 0


@pytest.mark.parametrize(
    "needle",
    [
        "ÄäSSx" * 120 + "connection refused" * 20,  # 960 characters, cased and not
        "=" * 315,  # repetitive: costly for an automaton
        "ab" * 64,
        "\x00" * 50,
    ],
    ids=["mixed-960", "equals-315", "ab-128", "nul-50"],
)
async def test_a_long_text_filter_selects_what_matches_selects(store: Store, needle: str) -> None:
    """A needle far longer than one regular expression may be (Lucene's default is
    1000 characters, and a costly automaton is refused too) still selects exactly the
    records ``TaskFilter.matches`` does."""
    hit = make_task(task_id="hit", error=f"boom: {needle.upper()} at the end")
    near = make_task(task_id="near", error=f"boom: {needle[:-1]}")  # one character short
    other = make_task(task_id="other", error="connection refused")
    in_last = make_task(task_id="last", error="elsewhere", last_error=f"now {needle.swapcase()}")
    await seed(store, hit, near, other, in_last)
    flt = TaskFilter(text=needle)
    expected = sorted(t.task_id for t in (hit, near, other, in_last) if flt.matches(t))
    assert expected == ["hit", "last"]
    page = await store.query(flt, limit=10)
    assert sorted(t.task_id for t in page) == expected
    assert await store.count(flt) == len(expected)
    first = await store.query(flt, limit=1)  # paging across the checked hits
    assert first.cursor is not None
    rest = await store.query(flt, limit=10, cursor=first.cursor)
    assert sorted(t.task_id for t in [*first, *rest]) == expected


async def test_purge_by_status_and_age(store: Store) -> None:
    await seed(
        store,
        make_task(task_id="old-done", status=DeadLetterStatus.COMPLETED, updated_at=at(0)),
        make_task(task_id="new-done", status=DeadLetterStatus.COMPLETED, updated_at=at(100)),
        make_task(task_id="old-arch", status=DeadLetterStatus.ARCHIVED, updated_at=at(0)),
        make_task(task_id="old-pending", updated_at=at(0)),
    )
    done = (DeadLetterStatus.COMPLETED, DeadLetterStatus.ARCHIVED)
    # updated_before selects what purge deletes (a dry run counts with it)
    selected = TaskFilter(status=done, updated_before=at(50))
    assert await store.count(selected) == 2
    assert {t.task_id for t in await store.query(selected, limit=10)} == {"old-done", "old-arch"}
    assert await store.count(TaskFilter(updated_before=at(100))) == 3  # at(100) itself is not
    assert await store.purge(older_than=at(50), statuses=done) == 2
    assert await store.get("old-done") is None
    assert await store.get("old-arch") is None
    assert await store.get("new-done") is not None
    assert await store.get("old-pending") is not None
    assert await store.purge(older_than=None, statuses=done) == 1
    assert await store.count() == 1


async def test_clear(store: Store) -> None:
    await seed(store, *_variety())
    assert await store.clear() == 5
    assert await store.count() == 0
    assert await store.get("net-1") is None
    assert await store.claim_due(at(10_000), 10, claimer(at(10_000))) == []
    assert await store.clear() == 0
