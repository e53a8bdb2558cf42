"""``on_full``: what a full queue does with a new failure, on every store.

``reject`` (the default) refuses it; ``archive_oldest`` archives the oldest
exhausted tasks, then the oldest pending ones under ``never``, and never a task with
an automatic retry ahead. Also the store read behind it: the oldest records of one
status (:mod:`mahavishnu_dlq.storage.oldest`).
"""

from __future__ import annotations

from datetime import datetime

import pytest

from mahavishnu_dlq import DeadLetterQueue, Failure, QueueFullError
from mahavishnu_dlq.models import DeadLetterStatus, FailedTask, RetryPolicy
from mahavishnu_dlq.storage import Store
from mahavishnu_dlq.storage.oldest import oldest_records
from mahavishnu_dlq.testing import FakeClock, make_task
from tests.contract._records import at, seed

pytestmark = pytest.mark.anyio

_EXHAUSTED = DeadLetterStatus.EXHAUSTED
_PENDING = DeadLetterStatus.PENDING
_ARCHIVED = DeadLetterStatus.ARCHIVED


def _exhausted(task_id: str, seconds: float) -> FailedTask:
    return make_task(task_id=task_id, status=_EXHAUSTED, failed_at=at(seconds), next_retry_at=None)


def _manual(task_id: str, seconds: float) -> FailedTask:
    """Pending under ``never``: waits for someone to retry it by hand."""
    return make_task(
        task_id=task_id,
        status=_PENDING,
        retry_policy=RetryPolicy.NEVER,
        failed_at=at(seconds),
        next_retry_at=None,
    )


def _retrying_later(task_id: str, seconds: float) -> FailedTask:
    """Pending with an automatic retry ahead: never archived to make room."""
    return make_task(task_id=task_id, status=_PENDING, failed_at=at(seconds))


def _queue(store: Store, max_size: int) -> DeadLetterQueue:
    return DeadLetterQueue(
        store,
        max_size=max_size,
        on_full="archive_oldest",
        clock=FakeClock(datetime(2026, 3, 2, tzinfo=at(0).tzinfo)),
    )


async def _statuses(store: Store, *ids: str) -> dict[str, DeadLetterStatus | None]:
    found = {task_id: await store.get(task_id) for task_id in ids}
    return {task_id: None if t is None else t.status for task_id, t in found.items()}


async def test_oldest_records_come_oldest_first_by_status_and_policy(store: Store) -> None:
    await seed(
        store,
        _exhausted("ex-b", 2),
        _exhausted("ex-a", 2),  # same failure time: by id
        _exhausted("ex-c", 1),
        _manual("never-1", 0),
        _retrying_later("later-1", -1),
    )
    oldest = await oldest_records(store, _EXHAUSTED, limit=2)
    assert [t.task_id for t in oldest] == ["ex-c", "ex-a"]
    pending_never = await oldest_records(store, _PENDING, limit=5, retry_policy=RetryPolicy.NEVER)
    assert [t.task_id for t in pending_never] == ["never-1"]
    assert [t.task_id for t in await oldest_records(store, _PENDING, limit=5)] == [
        "later-1",
        "never-1",
    ]
    with pytest.raises(ValueError, match="limit"):
        await oldest_records(store, _EXHAUSTED, limit=0)


async def test_reject_stays_the_default(store: Store) -> None:
    await seed(store, *(_exhausted(f"ex-{n}", n) for n in range(3)))
    dlq = DeadLetterQueue(store, max_size=3)
    assert dlq.on_full == "reject"
    with pytest.raises(QueueFullError, match="archive or purge tasks"):
        await dlq.enqueue("new-1", {"n": 1}, error="boom")
    assert await store.open_count() == 3
    assert dlq.lifetime["archived_to_make_room"] == 0


async def test_archive_oldest_keeps_capturing_and_archives_exactly_the_oldest(
    store: Store,
) -> None:
    await seed(store, *(_exhausted(f"ex-{n}", n) for n in range(4)))
    dlq = _queue(store, max_size=4)
    for n in range(3):
        stored = await dlq.enqueue(f"new-{n}", {"n": n}, error="boom", retry_policy="never")
        assert stored.status is _PENDING
    assert await _statuses(store, "ex-0", "ex-1", "ex-2", "ex-3") == {
        "ex-0": _ARCHIVED,
        "ex-1": _ARCHIVED,
        "ex-2": _ARCHIVED,
        "ex-3": _EXHAUSTED,
    }
    assert await store.open_count() == 4
    archived = await store.get("ex-0")
    assert archived is not None
    assert archived.metadata["archived_reason"] == "overflow"
    assert archived.archived_at is not None
    stats = await dlq.get_statistics(top_fingerprints=0)
    assert stats["lifetime_stats"]["archived_to_make_room"] == 3
    assert stats["lifetime_stats"]["archived"] == 3
    assert stats["lifetime_stats"]["enqueued_total"] == 3


async def test_exhausted_first_then_pending_never_never_one_with_retries(store: Store) -> None:
    await seed(
        store,
        _retrying_later("later", 0),  # the oldest of all, and never archived
        _manual("never-1", 1),
        _manual("never-2", 2),
        _exhausted("ex-1", 3),
        _exhausted("ex-2", 4),
    )
    dlq = _queue(store, max_size=5)
    order = []
    for n in range(4):
        before = await _statuses(store, "ex-1", "ex-2", "never-1", "never-2")
        await dlq.enqueue(f"new-{n}", {"n": n}, error="timeout", retry_policy="exponential")
        after = await _statuses(store, "ex-1", "ex-2", "never-1", "never-2")
        order += [task_id for task_id in after if before[task_id] != after[task_id]]
    assert order == ["ex-1", "ex-2", "never-1", "never-2"]
    # what is open now has automatic retries ahead: nothing can make room
    with pytest.raises(QueueFullError, match=r"archive_oldest.*no open task can be archived"):
        await dlq.enqueue("new-9", {"n": 9}, error="timeout", retry_policy="exponential")
    assert (await _statuses(store, "later"))["later"] is _PENDING
    assert await store.open_count() == 5
    assert dlq.lifetime["archived_to_make_room"] == 4


async def test_archive_oldest_in_a_batch_enqueue(store: Store) -> None:
    await seed(store, *(_exhausted(f"ex-{n}", n) for n in range(5)))
    dlq = _queue(store, max_size=5)
    failures = [Failure(f"new-{n}", {"n": n}, error="boom") for n in range(3)]
    results = await dlq.enqueue_many(failures)
    assert all(isinstance(result, FailedTask) for result in results)
    assert await _statuses(store, *(f"ex-{n}" for n in range(5))) == {
        "ex-0": _ARCHIVED,
        "ex-1": _ARCHIVED,
        "ex-2": _ARCHIVED,
        "ex-3": _EXHAUSTED,
        "ex-4": _EXHAUSTED,
    }
    assert await store.open_count() == 5
    assert dlq.lifetime["archived_to_make_room"] == 3
