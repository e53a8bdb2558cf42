"""The failover store's set-wide reads: listings, counts, statistics, aggregations.

:class:`FailoverReads` is the part of
:class:`~mahavishnu_dlq.storage.failover.FailoverStore` that reads many records.
Each read is the primary's answer, through the failover's timeout and circuit
breaker (``FailoverStore._primary``); while the circuit is open, or when the primary
fails to answer, it is the fallback's (which holds only what changed during the
outage: a partial view, shown rather than nothing). Fail-closed (no fallback), the
primary's failure is the caller's. :meth:`~FailoverReads.next_due_at` asks both:
tasks whose newest version awaits re-sync are due in the fallback.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, TypeVar

from mahavishnu_dlq.errors import StoreUnavailableError
from mahavishnu_dlq.jobs.model import TaskSummary
from mahavishnu_dlq.models import DeadLetterStatus, FailedTask, RetryPolicy, TaskFilter, TaskPage
from mahavishnu_dlq.storage.aggregations import check_limit, histogram_buckets
from mahavishnu_dlq.storage.base import (
    FingerprintGroup,
    HistogramBucket,
    Store,
    StoreStatistics,
)
from mahavishnu_dlq.storage.oldest import check_oldest_limit, oldest_records

__all__ = ["FailoverReads"]

T = TypeVar("T")


class FailoverReads:
    """The set-wide reads of :class:`~mahavishnu_dlq.storage.failover.FailoverStore`
    (a mixin)."""

    primary: Store
    fallback: Store | None
    _open: bool
    _journal: dict[str, int]

    if TYPE_CHECKING:  # FailoverStore's

        async def _primary(
            self, action: str, call: Callable[[], Awaitable[T]], *, probing: bool = False
        ) -> T: ...

    async def next_due_at(self) -> datetime | None:
        times: list[datetime] = []
        if self.fallback is not None and (self._open or self._journal):
            found = await self.fallback.next_due_at()
            if found is not None:
                times.append(found)
        if not self._open:
            try:
                found = await self._primary("next_due_at", self.primary.next_due_at)
            except StoreUnavailableError:
                if self.fallback is None:
                    raise
            else:
                if found is not None:
                    times.append(found)
        return min(times, default=None)

    async def _read(self, action: str, call: Callable[[Store], Awaitable[T]]) -> T:
        """A set-wide read: the primary's answer, or the fallback's while it serves."""
        if self.fallback is not None and self._open:
            return await call(self.fallback)
        try:
            return await self._primary(action, lambda: call(self.primary))
        except StoreUnavailableError:
            if self.fallback is None:
                raise
            return await call(self.fallback)

    async def query(
        self, flt: TaskFilter, *, limit: int, cursor: str | None = None
    ) -> TaskPage[FailedTask]:
        return await self._read("query", lambda s: s.query(flt, limit=limit, cursor=cursor))

    async def oldest(
        self, status: DeadLetterStatus, *, limit: int, retry_policy: RetryPolicy | None = None
    ) -> list[FailedTask]:
        """See :mod:`mahavishnu_dlq.storage.oldest` (the primary's, or the fallback's
        while it serves)."""
        check_oldest_limit(limit)
        return await self._read(
            "oldest", lambda s: oldest_records(s, status, limit=limit, retry_policy=retry_policy)
        )

    async def count(self, flt: TaskFilter | None = None) -> int:
        return await self._read("count", lambda s: s.count(flt))

    async def open_count(self) -> int:
        return await self._read("open_count", lambda s: s.open_count())

    async def summarize(self, flt: TaskFilter, *, sample: int = 20) -> TaskSummary:
        return await self._read("summarize", lambda s: s.summarize(flt, sample=sample))

    async def statistics(self, *, top_fingerprints: int = 5) -> StoreStatistics:
        return await self._read(
            "statistics", lambda s: s.statistics(top_fingerprints=top_fingerprints)
        )

    async def fingerprint_groups(
        self, flt: TaskFilter | None = None, *, limit: int = 50
    ) -> list[FingerprintGroup]:
        check_limit(limit)  # a bad argument is refused even while nothing answers
        return await self._read(
            "fingerprint_groups", lambda s: s.fingerprint_groups(flt, limit=limit)
        )

    async def failure_histogram(
        self, *, since: datetime, until: datetime, bucket: timedelta
    ) -> list[HistogramBucket]:
        histogram_buckets(since, until, bucket)  # checked here too, as above
        return await self._read(
            "failure_histogram",
            lambda s: s.failure_histogram(since=since, until=until, bucket=bucket),
        )
