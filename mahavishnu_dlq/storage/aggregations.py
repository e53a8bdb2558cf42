"""What every store shares for the console's two aggregations.

:meth:`Store.fingerprint_groups <mahavishnu_dlq.storage.base.Store.fingerprint_groups>`
groups records by failure fingerprint; :meth:`Store.failure_histogram
<mahavishnu_dlq.storage.base.Store.failure_histogram>` counts failures per time
bucket and error category. Each store computes them its own way (SQL ``GROUP BY``,
OpenSearch aggregations); this module holds what they have in common:

- the checks of their arguments (:func:`check_limit`, :func:`histogram_buckets`),
  each ``ValueError`` or ``TypeError`` naming the argument;
- :class:`Buckets`, a histogram's boundaries in microseconds since the epoch (the
  unit the stores keep times in), and the list of :class:`HistogramBucket` it makes
  of counts per bucket index;
- :class:`GroupCounter`, the grouping done in Python, one record at a time (the
  memory store's way, and the OpenSearch store's for a filter its index cannot
  evaluate exactly).
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from mahavishnu_dlq.clock import from_micros, to_micros
from mahavishnu_dlq.storage.base import FingerprintGroup, HistogramBucket

__all__ = [
    "EXAMPLE_CHARS",
    "GROUP_WORKFLOWS",
    "MAX_BUCKETS",
    "MAX_GROUPS",
    "Buckets",
    "GroupCounter",
    "check_limit",
    "histogram_buckets",
    "top_workflows",
]

#: Most groups one call returns (``limit``).
MAX_GROUPS = 1000
#: Most buckets one histogram has.
MAX_BUCKETS = 1000
#: Workflows a group counts one by one: its biggest.
GROUP_WORKFLOWS = 10
#: Characters of a group's example error kept (as :class:`FingerprintCount` keeps).
EXAMPLE_CHARS = 200

_MICROSECOND = timedelta(microseconds=1)


def check_limit(limit: int) -> int:
    """``limit`` of :meth:`fingerprint_groups`: an int from 1 to :data:`MAX_GROUPS`."""
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise TypeError(f"limit must be an int, got {type(limit).__name__}")
    if not 1 <= limit <= MAX_GROUPS:
        raise ValueError(f"limit must be between 1 and {MAX_GROUPS}, got {limit}")
    return limit


@dataclass(frozen=True, slots=True)
class Buckets:
    """A histogram's buckets: ``count`` of ``width_us`` microseconds from ``since_us``,
    the last cut short at ``until_us`` when the span is not a whole number of them."""

    since_us: int
    until_us: int
    width_us: int
    count: int

    def index(self, failed_at_us: int) -> int | None:
        """The bucket of a failure at ``failed_at_us``; None outside ``[since, until)``."""
        if not self.since_us <= failed_at_us < self.until_us:
            return None
        return (failed_at_us - self.since_us) // self.width_us

    def ranges(self) -> list[tuple[int, int]]:
        """Each bucket's ``[from, to)`` in microseconds, in time order."""
        starts = [self.since_us + i * self.width_us for i in range(self.count)]
        return [(start, min(start + self.width_us, self.until_us)) for start in starts]

    def histogram(self, counts: Mapping[int, Mapping[str, int]]) -> list[HistogramBucket]:
        """Every bucket, in time order, with ``counts[index]`` (category -> count; none
        for an empty bucket, and no zero counts)."""
        return [
            HistogramBucket(
                start=from_micros(start),
                by_category={key: n for key, n in counts.get(i, {}).items() if n > 0},
            )
            for i, (start, _) in enumerate(self.ranges())
        ]


def _aware(value: object, name: str) -> datetime:
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a timezone-aware datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (UTC), got {value!r}")
    return value


def histogram_buckets(since: datetime, until: datetime, bucket: timedelta) -> Buckets:
    """The buckets of :meth:`failure_histogram`, its arguments checked: ``since`` before
    ``until``, both aware; ``bucket`` a positive timedelta; at most :data:`MAX_BUCKETS`."""
    since_us = to_micros(_aware(since, "since"))
    until_us = to_micros(_aware(until, "until"))
    if not isinstance(bucket, timedelta):
        raise TypeError(f"bucket must be a timedelta, got {type(bucket).__name__}")
    if bucket <= timedelta(0):
        raise ValueError(f"bucket must be longer than zero, got {bucket}")
    if since_us >= until_us:
        raise ValueError(f"since must be before until, got since={since} and until={until}")
    width_us = bucket // _MICROSECOND
    count = -(-(until_us - since_us) // width_us)  # the last bucket may be cut short
    if count > MAX_BUCKETS:
        raise ValueError(
            f"bucket: {bucket} makes {count} buckets from since to until; "
            f"at most {MAX_BUCKETS} (choose a longer bucket)"
        )
    return Buckets(since_us, until_us, width_us, count)


def top_workflows(counts: Mapping[str, int]) -> dict[str, int]:
    """The :data:`GROUP_WORKFLOWS` biggest of ``counts``, biggest first (ties by name)."""
    best = heapq.nsmallest(GROUP_WORKFLOWS, counts.items(), key=lambda item: (-item[1], item[0]))
    return dict(best)


class _Group:
    __slots__ = (
        "by_status",
        "count",
        "error",
        "error_type",
        "example",
        "first",
        "last",
        "workflows",
    )

    def __init__(self, failed_at: datetime) -> None:
        self.count = 0
        self.first = self.last = failed_at
        self.workflows: dict[str, int] = {}
        self.by_status: dict[str, int] = {}
        self.example: tuple[datetime, str] | None = None  # (failed_at, task_id) of the example
        self.error_type = self.error = ""


class GroupCounter:
    """:meth:`fingerprint_groups` computed in Python: :meth:`add` each record (those with
    a fingerprint), then :meth:`groups`. The example of a group is its newest record
    (ties: the first by id), as the other stores choose it."""

    def __init__(self) -> None:
        self._groups: dict[str, _Group] = {}

    def add(
        self,
        fingerprint: str,
        *,
        status: str,
        workflow: str,
        failed_at: datetime,
        task_id: str,
        error_type: str,
        error: str,
    ) -> None:
        group = self._groups.get(fingerprint)
        if group is None:
            group = self._groups[fingerprint] = _Group(failed_at)
        group.count += 1
        group.first = min(group.first, failed_at)
        group.last = max(group.last, failed_at)
        group.workflows[workflow] = group.workflows.get(workflow, 0) + 1
        group.by_status[status] = group.by_status.get(status, 0) + 1
        example = group.example
        if (
            example is None
            or failed_at > example[0]
            or (failed_at == example[0] and task_id < example[1])
        ):
            group.example = (failed_at, task_id)
            group.error_type, group.error = error_type, error[:EXAMPLE_CHARS]

    def groups(self, limit: int) -> list[FingerprintGroup]:
        """The ``limit`` biggest groups, biggest first (ties: fingerprint ascending)."""
        chosen = heapq.nsmallest(
            limit, self._groups.items(), key=lambda item: (-item[1].count, item[0])
        )
        return [
            FingerprintGroup(
                fingerprint=fingerprint,
                count=group.count,
                error_type=group.error_type,
                example_error=group.error,
                first_seen=group.first,
                last_seen=group.last,
                workflows=top_workflows(group.workflows),
                by_status=dict(group.by_status),
            )
            for fingerprint, group in chosen
        ]
