"""The storage contract every backend implements.

A store keeps :class:`~mahavishnu_dlq.models.FailedTask` records by id and knows
nothing about retry rules: the queue decides *what* a record becomes and the
store makes the change atomic. The central operation is :meth:`Store.mutate`
— read a record, compute its successor with a pure function, write it only if
nobody changed it meanwhile (compare-and-set). The in-memory store does this in
one step; the OpenSearch store with ``if_seq_no``/``if_primary_term`` and a
retry on conflict. Claims, retries, archiving and idempotent enqueues are all
mutations, so every backend gets the same state machine for free.

The contract is pinned down by ``tests/contract/``, which runs against every
backend.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

from mahavishnu_dlq.models import DeadLetterStatus, FailedTask, TaskFilter, TaskPage

__all__ = ["FingerprintCount", "Mutation", "Store", "StoreStatistics"]

#: Computes a record's successor from the current record (None when absent).
#: It must be pure: under contention a store may call it more than once. It
#: aborts the change by raising (a :class:`~mahavishnu_dlq.errors.DLQError`).
Mutation = Callable[[FailedTask | None], FailedTask]


@dataclass(frozen=True, slots=True)
class FingerprintCount:
    """How many open tasks share one failure fingerprint."""

    fingerprint: str
    count: int
    error_type: str
    example_error: str


@dataclass(frozen=True, slots=True)
class StoreStatistics:
    """Counts a store can give without loading every record."""

    total: int
    by_status: dict[DeadLetterStatus, int]
    by_category: dict[str, int]
    by_policy: dict[str, int]
    oldest_pending_failed_at: datetime | None
    top_fingerprints: list[FingerprintCount] = field(default_factory=list)

    @property
    def open_count(self) -> int:
        """Tasks that still need something done (pending, retrying, exhausted)."""
        return (
            self.by_status.get(DeadLetterStatus.PENDING, 0)
            + self.by_status.get(DeadLetterStatus.RETRYING, 0)
            + self.by_status.get(DeadLetterStatus.EXHAUSTED, 0)
        )


@runtime_checkable
class Store(Protocol):
    """Where failed tasks live. All methods are coroutines; all timestamps UTC."""

    #: Short backend name shown in statistics: "memory", "opensearch", "failover".
    backend: str

    async def open(self) -> None:
        """Connect and create whatever the store needs (idempotent)."""
        ...

    async def close(self) -> None:
        """Release connections; buffered writes are flushed first."""
        ...

    async def get(self, task_id: str) -> FailedTask | None:
        """The stored record, or None. Read-your-writes: sees every acknowledged change."""
        ...

    async def mutate(self, task_id: str, fn: Mutation) -> FailedTask:
        """Atomically replace the record of ``task_id`` by ``fn(current)``.

        ``current`` is None when no record exists. If ``fn`` raises, nothing is
        written and the exception propagates. Returns the record as stored.
        """
        ...

    async def claim_due(self, now: datetime, limit: int, fn: Mutation) -> list[FailedTask]:
        """Apply ``fn`` to up to ``limit`` tasks that are due at ``now``.

        Due means PENDING with ``next_retry_at <= now``, or RETRYING with
        ``lease_expires_at <= now`` (its worker is presumed dead). Oldest due
        first. Each application is atomic like :meth:`mutate`; a task whose
        ``fn`` raises a ``DLQError`` or that another worker changed first is
        skipped. Returns the records as stored.
        """
        ...

    async def next_due_at(self) -> datetime | None:
        """The earliest time any task becomes due, if the store can tell cheaply."""
        ...

    async def delete(self, task_id: str) -> bool:
        """Remove one record; False when there was none."""
        ...

    async def query(
        self, flt: TaskFilter, *, limit: int, cursor: str | None = None
    ) -> TaskPage[FailedTask]:
        """Records matching ``flt``, newest ``failed_at`` first (ties by ``task_id``).

        The page's ``cursor`` continues after its last record and stays valid while
        records change; it is None on the last page.
        """
        ...

    async def count(self, flt: TaskFilter | None = None) -> int:
        """How many records match ``flt`` (all records when None)."""
        ...

    async def open_count(self) -> int:
        """How many records are pending, retrying or exhausted (checked against max_size)."""
        ...

    async def statistics(self, *, top_fingerprints: int = 5) -> StoreStatistics:
        """Counts per status, category and policy, oldest pending, top fingerprints."""
        ...

    async def purge(
        self, *, older_than: datetime | None, statuses: Collection[DeadLetterStatus]
    ) -> int:
        """Delete records in ``statuses`` last updated before ``older_than``; the count."""
        ...

    async def clear(self) -> int:
        """Delete every record; the count."""
        ...
