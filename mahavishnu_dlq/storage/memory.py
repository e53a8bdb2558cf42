"""The in-memory store: full semantics in one process, and the failover fallback.

Records are kept as compact rows (plain tuples of atoms; the mutable JSON parts —
``task`` and ``metadata`` — as encoded strings; immutable values shared), so a
stored task costs a few hundred bytes beyond its payload and nobody can change
a stored record through an object they were handed: every read decodes a fresh
:class:`FailedTask`.

- get by id: one dict lookup, O(1);
- due-task selection: a heap keyed by the time a task becomes claimable
  (``next_retry_at`` for pending, ``lease_expires_at`` for retrying), with lazy
  deletion of stale entries, O(log n) per claim — no scan per processor cycle;
- counts per status, category, policy and fingerprint: kept incrementally.

All methods run without suspending, so each one is atomic on the event loop.
"""

from __future__ import annotations

import heapq
import json
import operator
from collections.abc import Collection, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple, TypeVar

from mahavishnu_dlq.clock import to_micros
from mahavishnu_dlq.errors import DLQError
from mahavishnu_dlq.jobs.model import TaskSummary
from mahavishnu_dlq.limits import require_str
from mahavishnu_dlq.models import (
    OPEN_STATUSES,
    Attempt,
    DeadLetterStatus,
    ErrorCategory,
    FailedTask,
    RetryPolicy,
    TaskFilter,
    TaskPage,
    decode_cursor,
    encode_cursor,
    encode_json,
)
from mahavishnu_dlq.storage.aggregations import GroupCounter, check_limit, histogram_buckets
from mahavishnu_dlq.storage.base import (
    FingerprintCount,
    FingerprintGroup,
    HistogramBucket,
    Mutation,
    StoreStatistics,
)
from mahavishnu_dlq.storage.memory_jobs import MemoryControlStore, MemoryJobStore
from mahavishnu_dlq.storage.oldest import check_oldest_limit, policy_value

__all__ = ["MemoryStore"]

K = TypeVar("K")
_EMPTY_OBJECT = "{}"
_PENDING = DeadLetterStatus.PENDING
_RETRYING = DeadLetterStatus.RETRYING
_PENDING_VALUE = _PENDING.value  # what a row holds (the same string object)


_raw_decode = json.JSONDecoder().raw_decode


def _loads(text: str) -> Any:
    """Decode JSON this store encoded itself (compact, no surrounding whitespace)."""
    if text == _EMPTY_OBJECT:
        return {}
    return _raw_decode(text)[0]


def _dumps(value: dict[str, Any]) -> str:
    if not value:
        return _EMPTY_OBJECT
    return encode_json(value)


#: A stored row: an exact tuple laid out as :class:`_Columns`.
_Row = tuple[Any, ...]


class _Columns(NamedTuple):
    """The layout of a stored row, compact: a tuple in :class:`FailedTask` field order
    (then the time it becomes claimable). Immutable values (strings, timestamps,
    attempts) are shared with the records handed out; ``task`` and ``metadata`` are kept encoded,
    ``repos`` and ``attempts`` as tuples, so no caller can change a stored row.

    Status, category and policy are kept as their string values, not the enum
    members: a tuple holding only strings, numbers, timestamps and None is not
    tracked by Python's cyclic garbage collector, so a store of a million tasks
    that were never retried adds nothing to a full collection (rows with attempts
    hold Attempt objects and stay tracked). That is also why rows are exact tuples
    indexed by position, not instances of this class: the collector untracks only
    exact tuples. This class names the columns and lends its attributes to
    :meth:`TaskFilter.matches` while a listing scans rows."""

    task_id: str
    workflow: str
    task: str
    repos: tuple[str, ...]
    error: str
    error_type: str
    error_category: str  # enums as their values: see the class docstring
    error_fingerprint: str
    traceback: str | None
    last_error: str | None
    last_error_type: str | None
    attempts: tuple[Attempt, ...]
    retry_count: int
    max_retries: int
    total_attempts: int
    retry_policy: str
    next_retry_at: datetime | None
    status: str
    lease_owner: str | None
    lease_expires_at: datetime | None
    metadata: str
    failed_at: datetime
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None
    archived_at: datetime | None
    last_job_id: str | None
    due: datetime | None


_FIELDS = tuple(FailedTask.model_fields)
if _Columns._fields[:-1] != _FIELDS:  # pragma: no cover - a field was added to one, not the other
    raise RuntimeError("MemoryStore's row and FailedTask list different fields")
_pick = operator.itemgetter(*_FIELDS)
_TASK, _REPOS, _ATTEMPTS, _METADATA, _STATUS_AT, _CATEGORY_AT, _POLICY_AT = (
    _FIELDS.index(name)
    for name in (
        "task",
        "repos",
        "attempts",
        "metadata",
        "status",
        "error_category",
        "retry_policy",
    )
)
_ID, _WORKFLOW, _ERROR, _ERROR_TYPE, _FINGERPRINT, _FAILED_AT, _UPDATED_AT = (
    _FIELDS.index(name)
    for name in (
        "task_id",
        "workflow",
        "error",
        "error_type",
        "error_fingerprint",
        "failed_at",
        "updated_at",
    )
)
_DUE = len(_FIELDS)
_STATUS = {status.value: status for status in DeadLetterStatus}
_CATEGORY = {category.value: category for category in ErrorCategory}
_POLICY = {policy.value: policy for policy in RetryPolicy}
_OPEN = frozenset(status.value for status in OPEN_STATUSES)


def _to_task(row: _Row) -> FailedTask:
    """A fresh record of ``row`` (its own dicts and lists)."""
    # field order; zip stops at the end of _FIELDS, before ``due``
    values: dict[str, Any] = dict(zip(_FIELDS, row, strict=False))
    task, metadata = row[_TASK], row[_METADATA]
    values["task"] = _loads(task)
    values["repos"] = list(row[_REPOS])
    values["attempts"] = list(row[_ATTEMPTS])
    values["metadata"] = _loads(metadata)
    values["status"] = _STATUS[row[_STATUS_AT]]
    values["error_category"] = _CATEGORY[row[_CATEGORY_AT]]
    values["retry_policy"] = _POLICY[row[_POLICY_AT]]
    return FailedTask.trusted(values, (task, metadata))


def _sort_key(row: _Row) -> tuple[int, str]:
    """Listing order: newest failure first, then by id."""
    return (-to_micros(row[_FAILED_AT]), row[_ID])


def _count(counts: dict[K, int], key: K, sign: int) -> None:
    n = counts.get(key, 0) + sign
    if n:
        counts[key] = n
    else:
        del counts[key]


def _row(t: FailedTask, previous: _Row | None, handed: FailedTask | None) -> _Row:
    """The row for ``t``. Its ``task``/``metadata`` encodings come from the record when
    it knows them, or from ``previous`` when ``t`` was derived from ``handed`` (the
    record read from ``previous``) and kept those very objects (mutations are pure)."""
    v = t.__dict__
    values = list(_pick(v))
    known = t.payload_json()
    if known is not None:
        values[_TASK], values[_METADATA] = known
    else:
        h = handed.__dict__ if handed is not None else None
        if h is not None and previous is not None and v["task"] is h["task"]:
            values[_TASK] = previous[_TASK]
        else:
            values[_TASK] = _dumps(v["task"])
        if h is not None and previous is not None and v["metadata"] is h["metadata"]:
            values[_METADATA] = previous[_METADATA]
        else:
            values[_METADATA] = _dumps(v["metadata"])
    values[_REPOS] = tuple(v["repos"])
    values[_ATTEMPTS] = tuple(v["attempts"])
    status = v["status"]
    # ``_value_``: the member's value itself (``.value`` is a property, 3x slower)
    values[_STATUS_AT] = status._value_
    values[_CATEGORY_AT] = v["error_category"]._value_
    values[_POLICY_AT] = v["retry_policy"]._value_
    if status is _PENDING:
        values.append(v["next_retry_at"])
    elif status is _RETRYING:
        values.append(v["lease_expires_at"])
    else:
        values.append(None)
    return tuple(values)


class MemoryStore:
    """Keeps tasks in this process. Fast, complete, and gone when the process ends."""

    backend = "memory"

    def __init__(self) -> None:
        self.jobs = MemoryJobStore()
        self.controls = MemoryControlStore()
        self._reset()

    def _reset(self) -> None:
        self._rows: dict[str, _Row] = {}
        self._due: list[tuple[datetime, str]] = []
        self._pending_age: list[tuple[datetime, str]] = []
        # plain dicts (``get`` + store costs half of a Counter's ``+=``); no zero entries
        self._by_status: dict[str, int] = {}  # keyed by the enums' values, as rows are
        self._by_category: dict[str, int] = {}
        self._by_policy: dict[str, int] = {}
        self._open_fingerprints: dict[str, int] = {}
        self._fingerprint_example: dict[str, tuple[str, str]] = {}

    # -- lifecycle -------------------------------------------------------------

    async def open(self, *, create: bool = True) -> None:
        """Nothing to connect or create (``create`` changes nothing here)."""

    async def close(self) -> None:
        return None

    # -- single records --------------------------------------------------------

    async def get(self, task_id: str) -> FailedTask | None:
        if task_id.__class__ is not str:
            task_id = require_str(task_id, "task_id")
        row = self._rows.get(task_id)
        return None if row is None else _to_task(row)

    async def mutate(self, task_id: str, fn: Mutation) -> FailedTask:
        if task_id.__class__ is not str:
            task_id = require_str(task_id, "task_id")
        row = self._rows.get(task_id)
        current = None if row is None else _to_task(row)
        new = fn(current)
        self._write(task_id, row, new, current)
        return new

    async def mutate_many(
        self, items: Sequence[tuple[str, Mutation]]
    ) -> list[FailedTask | Exception]:
        results: list[FailedTask | Exception] = []
        rows = self._rows
        for task_id, fn in items:
            row = rows.get(task_id)
            current = None if row is None else _to_task(row)
            try:
                new = fn(current)
                self._write(task_id, row, new, current)
            except Exception as exc:  # noqa: BLE001 - handed back in the item's place
                results.append(exc)
            else:
                results.append(new)
        return results

    async def delete(self, task_id: str) -> bool:
        row = self._rows.pop(require_str(task_id, "task_id"), None)
        if row is None:
            return False
        self._account(row, -1)
        return True

    # -- the processor's view ----------------------------------------------------

    async def claim_due(
        self, now: datetime, limit: int, fn: Mutation, *, skip_workflows: Collection[str] = ()
    ) -> list[FailedTask]:
        claimed: list[FailedTask] = []
        refused: list[tuple[datetime, str]] = []
        heap = self._due
        while heap and heap[0][0] <= now and len(claimed) < limit:
            entry = heapq.heappop(heap)
            row = self._rows.get(entry[1])
            if row is None or row[_DUE] != entry[0]:
                continue  # stale: the task changed or went away since this entry
            if skip_workflows and row[_WORKFLOW] in skip_workflows:
                refused.append(entry)
                continue
            current = _to_task(row)
            try:
                new = fn(current)
            except DLQError:
                refused.append(entry)
                continue
            except BaseException:  # not a refusal: put the entry back before it goes up
                refused.append(entry)
                for back in refused:
                    heapq.heappush(heap, back)
                raise
            self._write(row[_ID], row, new, current)
            claimed.append(new)
        for entry in refused:
            heapq.heappush(heap, entry)
        return claimed

    async def next_due_at(self) -> datetime | None:
        heap = self._due
        while heap:
            key, task_id = heap[0]
            row = self._rows.get(task_id)
            if row is not None and row[_DUE] == key:
                return key
            heapq.heappop(heap)
        return None

    # -- many records ------------------------------------------------------------

    def _select(self, flt: TaskFilter | None) -> Iterator[_Row]:
        if flt is None:
            yield from self._rows.values()
            return
        columns = _Columns._make
        for row in self._rows.values():
            if flt.matches(columns(row)):
                yield row

    async def query(
        self, flt: TaskFilter, *, limit: int, cursor: str | None = None
    ) -> TaskPage[FailedTask]:
        rows = self._select(flt)
        if cursor is not None:
            after = decode_cursor(cursor)
            rows = (row for row in rows if _sort_key(row) > after)
        page = heapq.nsmallest(limit + 1, rows, key=_sort_key)
        more = len(page) > limit
        page = page[:limit]
        next_cursor = encode_cursor(*_sort_key(page[-1])) if more else None
        return TaskPage((_to_task(row) for row in page), next_cursor)

    async def count(self, flt: TaskFilter | None = None) -> int:
        if flt is None:
            return len(self._rows)
        only_status = flt.model_dump(exclude_none=True).keys() <= {"status"}
        if only_status and flt.status is not None:
            return sum(self._by_status.get(status.value, 0) for status in set(flt.status))
        return sum(1 for _ in self._select(flt))

    async def open_count(self) -> int:
        return sum(self._by_status.get(status, 0) for status in _OPEN)

    async def oldest(
        self, status: DeadLetterStatus, *, limit: int, retry_policy: RetryPolicy | None = None
    ) -> list[FailedTask]:
        """See :mod:`mahavishnu_dlq.storage.oldest`."""
        check_oldest_limit(limit)
        wanted = DeadLetterStatus(status).value
        policy = policy_value(retry_policy)
        rows = (
            row
            for row in self._rows.values()
            if row[_STATUS_AT] == wanted and (policy is None or row[_POLICY_AT] == policy)
        )
        first = heapq.nsmallest(limit, rows, key=lambda row: (to_micros(row[_FAILED_AT]), row[_ID]))
        return [_to_task(row) for row in first]

    async def summarize(self, flt: TaskFilter, *, sample: int = 20) -> TaskSummary:
        by_status: dict[str, int] = {}
        by_category: dict[str, int] = {}
        by_workflow: dict[str, int] = {}
        rows = list(self._select(flt))
        for row in rows:
            by_status[row[_STATUS_AT]] = by_status.get(row[_STATUS_AT], 0) + 1
            by_category[row[_CATEGORY_AT]] = by_category.get(row[_CATEGORY_AT], 0) + 1
            by_workflow[row[_WORKFLOW]] = by_workflow.get(row[_WORKFLOW], 0) + 1
        first = heapq.nsmallest(sample, rows, key=_sort_key) if sample > 0 else []
        return TaskSummary.of(by_status, by_category, by_workflow, [row[_ID] for row in first])

    async def statistics(self, *, top_fingerprints: int = 5) -> StoreStatistics:
        top = [
            FingerprintCount(fp, count, *self._fingerprint_example.get(fp, ("", "")))
            for fp, count in heapq.nlargest(
                top_fingerprints, self._open_fingerprints.items(), key=operator.itemgetter(1)
            )
        ]
        return StoreStatistics(
            total=len(self._rows),
            by_status={status: self._by_status.get(status.value, 0) for status in DeadLetterStatus},
            by_category=dict(self._by_category),
            by_policy=dict(self._by_policy),
            oldest_pending_failed_at=self._oldest_pending(),
            top_fingerprints=top,
        )

    async def fingerprint_groups(
        self, flt: TaskFilter | None = None, *, limit: int = 50
    ) -> list[FingerprintGroup]:
        limit = check_limit(limit)
        counter = GroupCounter()
        add = counter.add
        for row in self._select(flt):
            fingerprint = row[_FINGERPRINT]
            if fingerprint:
                add(
                    fingerprint,
                    status=row[_STATUS_AT],
                    workflow=row[_WORKFLOW],
                    failed_at=row[_FAILED_AT],
                    task_id=row[_ID],
                    error_type=row[_ERROR_TYPE],
                    error=row[_ERROR],
                )
        return counter.groups(limit)

    async def failure_histogram(
        self, *, since: datetime, until: datetime, bucket: timedelta
    ) -> list[HistogramBucket]:
        buckets = histogram_buckets(since, until, bucket)
        counts: dict[int, dict[str, int]] = {}
        for row in self._rows.values():
            failed_at = row[_FAILED_AT]
            if since <= failed_at < until:
                index = buckets.index(to_micros(failed_at))
                if index is not None:
                    in_bucket = counts.setdefault(index, {})
                    category = row[_CATEGORY_AT]
                    in_bucket[category] = in_bucket.get(category, 0) + 1
        return buckets.histogram(counts)

    async def purge(
        self, *, older_than: datetime | None, statuses: Collection[DeadLetterStatus]
    ) -> int:
        wanted = {DeadLetterStatus(status).value for status in statuses}
        doomed = [
            task_id
            for task_id, row in self._rows.items()
            if row[_STATUS_AT] in wanted and (older_than is None or row[_UPDATED_AT] < older_than)
        ]
        for task_id in doomed:
            self._account(self._rows.pop(task_id), -1)
        return len(doomed)

    async def clear(self) -> int:
        count = len(self._rows)
        self._reset()
        return count

    # -- bookkeeping ---------------------------------------------------------------

    def _write(
        self, task_id: str, old: _Row | None, new: FailedTask, handed: FailedTask | None
    ) -> None:
        if new.task_id != task_id:
            raise ValueError(f"a mutation of {task_id!r} returned task {new.task_id!r}")
        row = _row(new, old, handed)
        self._rows[task_id] = row
        if old is None:
            self._account(row, +1)
        else:
            self._reaccount(old, row)
        due = row[_DUE]
        if due is not None and (old is None or old[_DUE] != due):
            heapq.heappush(self._due, (due, task_id))
        if row[_STATUS_AT] is _PENDING_VALUE and (
            old is None
            or old[_STATUS_AT] is not _PENDING_VALUE
            or old[_FAILED_AT] != row[_FAILED_AT]
        ):
            heapq.heappush(self._pending_age, (row[_FAILED_AT], task_id))
        if len(self._due) > 2 * len(self._rows) + 1024:
            self._due = [(r[_DUE], r[_ID]) for r in self._rows.values() if r[_DUE] is not None]
            heapq.heapify(self._due)
        if len(self._pending_age) > 2 * len(self._rows) + 1024:
            self._pending_age = [
                (r[_FAILED_AT], r[_ID])
                for r in self._rows.values()
                if r[_STATUS_AT] is _PENDING_VALUE
            ]
            heapq.heapify(self._pending_age)

    def _account(self, row: _Row, sign: int) -> None:
        _count(self._by_status, row[_STATUS_AT], sign)
        _count(self._by_category, row[_CATEGORY_AT], sign)
        _count(self._by_policy, row[_POLICY_AT], sign)
        self._count_fingerprint(row, sign)

    def _reaccount(self, old: _Row, row: _Row) -> None:
        """``_account(old, -1)`` then ``_account(row, +1)``, touching only what changed
        (a claim or a finish changes the status alone)."""
        old_status, status = old[_STATUS_AT], row[_STATUS_AT]
        if old_status is not status:
            _count(self._by_status, old_status, -1)
            _count(self._by_status, status, +1)
        if old[_CATEGORY_AT] is not row[_CATEGORY_AT]:
            _count(self._by_category, old[_CATEGORY_AT], -1)
            _count(self._by_category, row[_CATEGORY_AT], +1)
        if old[_POLICY_AT] is not row[_POLICY_AT]:
            _count(self._by_policy, old[_POLICY_AT], -1)
            _count(self._by_policy, row[_POLICY_AT], +1)
        if old[_FINGERPRINT] != row[_FINGERPRINT] or (
            (old_status in _OPEN) is not (status in _OPEN)
        ):
            self._count_fingerprint(old, -1)
            self._count_fingerprint(row, +1)

    def _count_fingerprint(self, row: _Row, sign: int) -> None:
        fp = row[_FINGERPRINT]
        if fp and row[_STATUS_AT] in _OPEN:
            fingerprints = self._open_fingerprints
            n = fingerprints.get(fp, 0) + sign
            if n > 0:
                fingerprints[fp] = n
                if n == 1 and sign > 0:
                    self._fingerprint_example[fp] = (row[_ERROR_TYPE], row[_ERROR][:200])
            else:
                fingerprints.pop(fp, None)
                self._fingerprint_example.pop(fp, None)

    def _oldest_pending(self) -> datetime | None:
        heap = self._pending_age
        while heap:
            failed_at, task_id = heap[0]
            row = self._rows.get(task_id)
            if (
                row is not None
                and row[_STATUS_AT] is _PENDING_VALUE
                and row[_FAILED_AT] == failed_at
            ):
                return failed_at
            heapq.heappop(heap)
        return None
