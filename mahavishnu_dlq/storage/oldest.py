"""The oldest records of one status: what an overflow policy sets aside first.

``on_full="archive_oldest"`` (:mod:`mahavishnu_dlq.room`) makes room in a full queue
by archiving the oldest ``exhausted`` tasks, then the oldest ``pending`` ones under
the ``never`` policy. Finding them is a read a store answers with its listing index
read the other way round; the stores of this package have a method for it::

    async def oldest(
        self, status: DeadLetterStatus, *, limit: int, retry_policy: RetryPolicy | None = None
    ) -> list[FailedTask]

which returns up to ``limit`` readable records in ``status`` (and with
``retry_policy`` when given), oldest ``failed_at`` first, ties by ``task_id``. It is
not part of the :class:`~mahavishnu_dlq.storage.base.Store` protocol: a store
without it (one written against an earlier version) is read through
:meth:`Store.query` to the last page instead — correct, only slower.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, cast

from mahavishnu_dlq.clock import to_micros
from mahavishnu_dlq.models import DeadLetterStatus, FailedTask, RetryPolicy, TaskFilter
from mahavishnu_dlq.storage.base import Store

__all__ = ["check_oldest_limit", "oldest_first", "oldest_records", "policy_value"]

_PAGE = 1000  # records per page when a store without ``oldest`` is paged through

OldestFinder = Callable[..., Awaitable[list[FailedTask]]]


def check_oldest_limit(limit: int) -> None:
    """``ValueError`` unless ``limit`` is 1 to 10,000 (one search's window)."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 10_000:
        raise ValueError(f"limit must be between 1 and 10000, got {limit!r}")


def oldest_first(task: FailedTask) -> tuple[int, str]:
    """The order of :func:`oldest_records`: oldest failure first, ties by id."""
    return (to_micros(task.failed_at), task.task_id)


async def oldest_records(
    store: Store,
    status: DeadLetterStatus,
    *,
    limit: int,
    retry_policy: RetryPolicy | None = None,
) -> list[FailedTask]:
    """Up to ``limit`` records of ``store`` in ``status`` (with ``retry_policy`` when
    given), oldest ``failed_at`` first: the store's ``oldest`` when it has one, else
    every page of :meth:`Store.query` (newest first) with the last ``limit`` kept."""
    check_oldest_limit(limit)
    finder = cast("OldestFinder | None", getattr(store, "oldest", None))
    if finder is not None:
        return await finder(status, limit=limit, retry_policy=retry_policy)
    kept: deque[FailedTask] = deque(maxlen=limit)
    flt = TaskFilter(status=status)
    cursor: str | None = None
    while True:
        page = await store.query(flt, limit=_PAGE, cursor=cursor)
        kept.extend(t for t in page if retry_policy is None or t.retry_policy is retry_policy)
        cursor = page.cursor
        if cursor is None:
            return sorted(kept, key=oldest_first)


def policy_value(retry_policy: RetryPolicy | None) -> Any:
    """The stored value of ``retry_policy`` (None: any)."""
    return None if retry_policy is None else RetryPolicy(retry_policy).value
