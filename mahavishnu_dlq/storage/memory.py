"""The in-memory store: full semantics in one process, and the failover fallback.

Records are kept as compact rows (``__slots__``; the mutable JSON parts —
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
from collections import Counter
from collections.abc import Collection, Iterator
from datetime import datetime
from typing import Any

from mahavishnu_dlq.clock import to_micros
from mahavishnu_dlq.errors import DLQError
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
from mahavishnu_dlq.storage.base import FingerprintCount, Mutation, StoreStatistics

__all__ = ["MemoryStore"]

_EMPTY_OBJECT = "{}"
_PENDING = DeadLetterStatus.PENDING
_RETRYING = DeadLetterStatus.RETRYING


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


class _Row:
    """One stored task, compact. Immutable parts (strings, timestamps, attempts) are
    shared with the records handed out; the mutable JSON parts are kept encoded."""

    __slots__ = (
        "archived_at",
        "attempts",
        "completed_at",
        "created_at",
        "due",
        "error",
        "error_category",
        "error_fingerprint",
        "error_type",
        "failed_at",
        "last_error",
        "last_error_type",
        "lease_expires_at",
        "lease_owner",
        "max_retries",
        "metadata",
        "next_retry_at",
        "repos",
        "retry_count",
        "retry_policy",
        "status",
        "task",
        "task_id",
        "total_attempts",
        "traceback",
        "updated_at",
        "workflow",
    )

    task_id: str
    workflow: str
    task: str
    repos: tuple[str, ...]
    error: str
    error_type: str
    error_category: ErrorCategory
    error_fingerprint: str
    traceback: str | None
    last_error: str | None
    last_error_type: str | None
    attempts: tuple[Attempt, ...]
    retry_count: int
    max_retries: int
    total_attempts: int
    retry_policy: RetryPolicy
    next_retry_at: datetime | None
    status: DeadLetterStatus
    lease_owner: str | None
    lease_expires_at: datetime | None
    metadata: str
    failed_at: datetime
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None
    archived_at: datetime | None
    due: datetime | None

    def __init__(  # noqa: PLR0915 - one assignment per field
        self,
        t: FailedTask,
        interned: dict[str, str],
        previous: _Row | None = None,
        handed: FailedTask | None = None,
    ) -> None:
        """Encode ``t``. When ``t`` was derived from ``handed`` (the record read from
        ``previous``) and kept its very ``task``/``metadata`` objects — mutations are
        pure, so those are unchanged — their encodings are reused."""
        v = t.__dict__
        h = handed.__dict__ if handed is not None else None
        intern = interned.setdefault
        self.task_id = v["task_id"]
        workflow = v["workflow"]
        self.workflow = intern(workflow, workflow)
        if h is not None and previous is not None and v["task"] is h["task"]:
            self.task = previous.task
        else:
            self.task = _dumps(v["task"])
        self.repos = tuple([intern(repo, repo) for repo in v["repos"]])
        self.error = v["error"]
        error_type = v["error_type"]
        self.error_type = intern(error_type, error_type)
        category = v["error_category"]
        self.error_category = (
            category if category.__class__ is ErrorCategory else ErrorCategory(category)
        )
        fingerprint = v["error_fingerprint"]
        self.error_fingerprint = intern(fingerprint, fingerprint)
        self.traceback = v["traceback"]
        self.last_error = v["last_error"]
        last_type = v["last_error_type"]
        self.last_error_type = None if last_type is None else intern(last_type, last_type)
        self.attempts = tuple(v["attempts"])
        self.retry_count = v["retry_count"]
        self.max_retries = v["max_retries"]
        self.total_attempts = v["total_attempts"]
        policy = v["retry_policy"]
        self.retry_policy = policy if policy.__class__ is RetryPolicy else RetryPolicy(policy)
        self.next_retry_at = v["next_retry_at"]
        status = v["status"]
        if status.__class__ is not DeadLetterStatus:
            status = DeadLetterStatus(status)
        self.status = status
        owner = v["lease_owner"]
        self.lease_owner = None if owner is None else intern(owner, owner)
        self.lease_expires_at = v["lease_expires_at"]
        if h is not None and previous is not None and v["metadata"] is h["metadata"]:
            self.metadata = previous.metadata
        else:
            self.metadata = _dumps(v["metadata"])
        self.failed_at = v["failed_at"]
        self.created_at = v["created_at"]
        self.updated_at = v["updated_at"]
        self.completed_at = v["completed_at"]
        self.archived_at = v["archived_at"]
        if status is _PENDING:
            self.due = self.next_retry_at
        elif status is _RETRYING:
            self.due = self.lease_expires_at
        else:
            self.due = None

    def to_task(self) -> FailedTask:
        return FailedTask.trusted(
            {
                "task_id": self.task_id,
                "workflow": self.workflow,
                "task": _loads(self.task),
                "repos": list(self.repos),
                "error": self.error,
                "error_type": self.error_type,
                "error_category": self.error_category,
                "error_fingerprint": self.error_fingerprint,
                "traceback": self.traceback,
                "last_error": self.last_error,
                "last_error_type": self.last_error_type,
                "attempts": list(self.attempts),
                "retry_count": self.retry_count,
                "max_retries": self.max_retries,
                "total_attempts": self.total_attempts,
                "retry_policy": self.retry_policy,
                "next_retry_at": self.next_retry_at,
                "status": self.status,
                "lease_owner": self.lease_owner,
                "lease_expires_at": self.lease_expires_at,
                "metadata": _loads(self.metadata),
                "failed_at": self.failed_at,
                "created_at": self.created_at,
                "updated_at": self.updated_at,
                "completed_at": self.completed_at,
                "archived_at": self.archived_at,
            }
        )

    def sort_key(self) -> tuple[int, str]:
        """Listing order: newest failure first, then by id."""
        return (-to_micros(self.failed_at), self.task_id)


class MemoryStore:
    """Keeps tasks in this process. Fast, complete, and gone when the process ends."""

    backend = "memory"

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._rows: dict[str, _Row] = {}
        self._due: list[tuple[datetime, str]] = []
        self._pending_age: list[tuple[datetime, str]] = []
        self._by_status: Counter[DeadLetterStatus] = Counter()
        self._by_category: Counter[ErrorCategory] = Counter()
        self._by_policy: Counter[RetryPolicy] = Counter()
        self._open_fingerprints: Counter[str] = Counter()
        self._fingerprint_example: dict[str, tuple[str, str]] = {}
        self._interned: dict[str, str] = {}

    # -- lifecycle -------------------------------------------------------------

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    # -- single records --------------------------------------------------------

    async def get(self, task_id: str) -> FailedTask | None:
        row = self._rows.get(task_id)
        return None if row is None else row.to_task()

    async def mutate(self, task_id: str, fn: Mutation) -> FailedTask:
        row = self._rows.get(task_id)
        current = None if row is None else row.to_task()
        new = fn(current)
        self._write(task_id, row, new, current)
        return new

    async def delete(self, task_id: str) -> bool:
        row = self._rows.pop(task_id, None)
        if row is None:
            return False
        self._account(row, -1)
        return True

    # -- the processor's view ----------------------------------------------------

    async def claim_due(self, now: datetime, limit: int, fn: Mutation) -> list[FailedTask]:
        claimed: list[FailedTask] = []
        refused: list[tuple[datetime, str]] = []
        heap = self._due
        while heap and heap[0][0] <= now and len(claimed) < limit:
            entry = heapq.heappop(heap)
            row = self._rows.get(entry[1])
            if row is None or row.due != entry[0]:
                continue  # stale: the task changed or went away since this entry
            current = row.to_task()
            try:
                new = fn(current)
            except DLQError:
                refused.append(entry)
                continue
            self._write(row.task_id, row, new, current)
            claimed.append(new)
        for entry in refused:
            heapq.heappush(heap, entry)
        return claimed

    async def next_due_at(self) -> datetime | None:
        heap = self._due
        while heap:
            key, task_id = heap[0]
            row = self._rows.get(task_id)
            if row is not None and row.due == key:
                return key
            heapq.heappop(heap)
        return None

    # -- many records ------------------------------------------------------------

    def _select(self, flt: TaskFilter | None) -> Iterator[_Row]:
        if flt is None:
            yield from self._rows.values()
            return
        for row in self._rows.values():
            if flt.matches(row):
                yield row

    async def query(
        self, flt: TaskFilter, *, limit: int, cursor: str | None = None
    ) -> TaskPage[FailedTask]:
        rows = self._select(flt)
        if cursor is not None:
            after = decode_cursor(cursor)
            rows = (row for row in rows if row.sort_key() > after)
        page = heapq.nsmallest(limit + 1, rows, key=_Row.sort_key)
        more = len(page) > limit
        page = page[:limit]
        next_cursor = encode_cursor(*page[-1].sort_key()) if more else None
        return TaskPage((row.to_task() for row in page), next_cursor)

    async def count(self, flt: TaskFilter | None = None) -> int:
        if flt is None:
            return len(self._rows)
        only_status = flt.model_dump(exclude_none=True).keys() <= {"status"}
        if only_status and flt.status is not None:
            return sum(self._by_status[status] for status in set(flt.status))
        return sum(1 for _ in self._select(flt))

    async def open_count(self) -> int:
        return sum(self._by_status[status] for status in OPEN_STATUSES)

    async def statistics(self, *, top_fingerprints: int = 5) -> StoreStatistics:
        top = [
            FingerprintCount(fp, count, *self._fingerprint_example.get(fp, ("", "")))
            for fp, count in self._open_fingerprints.most_common(top_fingerprints)
        ]
        return StoreStatistics(
            total=len(self._rows),
            by_status={status: self._by_status[status] for status in DeadLetterStatus},
            by_category={key.value: n for key, n in self._by_category.items() if n},
            by_policy={key.value: n for key, n in self._by_policy.items() if n},
            oldest_pending_failed_at=self._oldest_pending(),
            top_fingerprints=top,
        )

    async def purge(
        self, *, older_than: datetime | None, statuses: Collection[DeadLetterStatus]
    ) -> int:
        wanted = set(statuses)
        doomed = [
            task_id
            for task_id, row in self._rows.items()
            if row.status in wanted and (older_than is None or row.updated_at < older_than)
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
        row = _Row(new, self._interned, old, handed)
        if old is not None:
            self._account(old, -1)
        self._rows[task_id] = row
        self._account(row, +1)
        if row.due is not None and (old is None or old.due != row.due):
            heapq.heappush(self._due, (row.due, task_id))
        if row.status is _PENDING and (
            old is None or old.status is not _PENDING or old.failed_at != row.failed_at
        ):
            heapq.heappush(self._pending_age, (row.failed_at, task_id))
        if len(self._due) > 2 * len(self._rows) + 1024:
            self._due = [(r.due, r.task_id) for r in self._rows.values() if r.due is not None]
            heapq.heapify(self._due)
        if len(self._pending_age) > 2 * len(self._rows) + 1024:
            self._pending_age = [
                (r.failed_at, r.task_id) for r in self._rows.values() if r.status is _PENDING
            ]
            heapq.heapify(self._pending_age)

    def _account(self, row: _Row, sign: int) -> None:
        self._by_status[row.status] += sign
        self._by_category[row.error_category] += sign
        self._by_policy[row.retry_policy] += sign
        if row.status in OPEN_STATUSES and row.error_fingerprint:
            fp = row.error_fingerprint
            self._open_fingerprints[fp] += sign
            if self._open_fingerprints[fp] <= 0:
                del self._open_fingerprints[fp]
                self._fingerprint_example.pop(fp, None)
            elif sign > 0 and fp not in self._fingerprint_example:
                self._fingerprint_example[fp] = (row.error_type, row.error[:200])

    def _oldest_pending(self) -> datetime | None:
        heap = self._pending_age
        while heap:
            failed_at, task_id = heap[0]
            row = self._rows.get(task_id)
            if row is not None and row.status is _PENDING and row.failed_at == failed_at:
                return failed_at
            heapq.heappop(heap)
        return None
