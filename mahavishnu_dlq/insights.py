"""What the failures look like as a whole: groups by fingerprint, and failures over time.

:class:`InsightMethods` is the part of :class:`~mahavishnu_dlq.queue.DeadLetterQueue`
a console reads to see the shape of its dead letters rather than one record at a
time:

- :meth:`~InsightMethods.fingerprint_groups` — the tasks sharing one failure
  (:class:`~mahavishnu_dlq.storage.base.FingerprintGroup`), biggest first: how many,
  since when, in which workflows and statuses, with an example error;
- :meth:`~InsightMethods.failure_histogram` — how many tasks failed in each bucket
  of the last hours, by error category
  (:class:`~mahavishnu_dlq.storage.base.HistogramBucket`).

Both are read-only aggregations the store computes (a ``GROUP BY``, an OpenSearch
aggregation), never a walk over every record; they go through the queue's
``traced_store`` like its other reads.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from mahavishnu_dlq.models import DeadLetterStatus, ErrorCategory
from mahavishnu_dlq.operations import StatusArg, make_filter, statuses
from mahavishnu_dlq.storage.aggregations import MAX_BUCKETS, check_limit
from mahavishnu_dlq.storage.base import FingerprintGroup, HistogramBucket

if TYPE_CHECKING:
    from mahavishnu_dlq.queue import DeadLetterQueue

__all__ = ["OPEN", "InsightMethods"]

#: The statuses :meth:`InsightMethods.fingerprint_groups` looks at by default: the
#: tasks that still need something done.
OPEN = (DeadLetterStatus.PENDING, DeadLetterStatus.RETRYING, DeadLetterStatus.EXHAUSTED)

_MICROSECOND = timedelta(microseconds=1)


def _positive_int(value: object, name: str, most: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1 or (most is not None and value > most):
        allowed = "at least 1" if most is None else f"between 1 and {most}"
        raise ValueError(f"{name} must be {allowed}, got {value}")
    return value


class InsightMethods:
    """The aggregation methods of :class:`~mahavishnu_dlq.queue.DeadLetterQueue`."""

    def _queue(self) -> DeadLetterQueue:
        return self  # type: ignore[return-value]  # mixed into DeadLetterQueue only

    async def fingerprint_groups(
        self,
        *,
        status: StatusArg = OPEN,
        workflow: str | Iterable[str] | None = None,
        error_category: ErrorCategory | str | Iterable[ErrorCategory | str] | None = None,
        fingerprint: str | None = None,
        limit: int = 50,
    ) -> list[FingerprintGroup]:
        """The tasks grouped by failure fingerprint, biggest group first (ties by
        fingerprint), at most ``limit`` (1 to 1000) groups.

        ``status`` selects the tasks (one or several; by default the open ones:
        pending, retrying, exhausted; None for every status), ``workflow`` and
        ``error_category`` narrow them further; ``fingerprint`` picks one group (a
        group page). Tasks without a fingerprint form no
        group, and records that cannot be read are left out. A bad argument raises
        ``ValueError`` or ``TypeError`` naming it.
        """
        limit = check_limit(limit)
        flt = make_filter(
            status=statuses(status),
            workflow=workflow,
            error_category=error_category,
            fingerprint=fingerprint,
        )
        return await self._queue().traced_store.fingerprint_groups(flt, limit=limit)

    async def failure_histogram(
        self, *, hours: int = 24, buckets: int = 24, now: datetime | None = None
    ) -> list[HistogramBucket]:
        """How many stored tasks failed in each of ``buckets`` equal spans of the last
        ``hours`` before ``now`` (the queue's clock by default), by error category.

        Every bucket is there, oldest first, an empty one with ``{}``; a task that
        failed exactly ``hours`` ago is in the first, one that failed at ``now`` in
        none. When ``hours`` does not divide into ``buckets`` whole microseconds the
        last bucket is shorter by less than ``buckets`` microseconds. ``buckets`` is 1
        to 1000; a bad argument raises ``ValueError`` or ``TypeError`` naming it.
        """
        hours = _positive_int(hours, "hours")
        buckets = _positive_int(buckets, "buckets", MAX_BUCKETS)
        dlq = self._queue()
        if now is None:
            now = dlq.clock.now()
        elif not isinstance(now, datetime):
            raise TypeError(f"now must be a timezone-aware datetime, got {type(now).__name__}")
        elif now.tzinfo is None or now.utcoffset() is None:
            raise ValueError(f"now must be timezone-aware (UTC), got {now!r}")
        try:
            span = timedelta(hours=hours)
            since = now - span
        except OverflowError:
            raise ValueError(f"hours is too long: {hours}") from None
        # rounded up, so ``buckets`` of them cover the span: exactly that many buckets
        bucket = timedelta(microseconds=-(-(span // _MICROSECOND) // buckets))
        return await dlq.traced_store.failure_histogram(since=since, until=now, bucket=bucket)
