"""Re-sync: taking the changes a failover store's fallback kept over to its primary.

While its primary is down, a :class:`~mahavishnu_dlq.storage.failover.FailoverStore`
serves from a fallback and writes down which records it changed there (the
*journal*: id → change number) and which it deleted there (id → when). When the
primary answers again, :meth:`Resync.run` takes them over, one pass over the journal
as it stands:

Merges
    The changed records are read from the fallback and merged into the primary with
    ``mutate_many`` (on OpenSearch: a realtime ``_mget`` and one conditional bulk
    write per thousand records), in batches, two in flight — one is read from the
    fallback while the other is written. Every merge is compare-and-set:
    :func:`merge_versions` keeps the newer ``updated_at`` and the attempts of both
    versions, so two processes re-syncing at once cannot overwrite each other's newer
    changes. A merged record leaves the journal and the fallback — unless it was
    changed again meanwhile: then it stays, for the next pass.

Batches
    Each batch is bounded by the store's timeout. The first holds 256 records; the
    next one is twice as large (up to 8192) when one took under a quarter of the
    timeout, half as large when one took more than half of it or timed out — as
    large as the primary takes quickly.

Deletions
    A record deleted in the fallback is deleted in the primary unless the primary
    holds a version newer than the deletion, 64 at a time.

Failures
    A failure of the primary (unavailable, overloaded, no answer in time) stops the
    pass; what it did not take stays journaled. A change the primary refuses (its
    record there cannot be read, say) is *set aside*: kept in the fallback, logged
    once as an error, counted as ``unsynced``, not re-synced again.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from itertools import islice
from typing import Protocol, runtime_checkable

import anyio

from mahavishnu_dlq.errors import StoreUnavailableError, UnreadableRecordError
from mahavishnu_dlq.models import Attempt, FailedTask
from mahavishnu_dlq.printable import library_logger
from mahavishnu_dlq.storage.base import Mutation, Store

__all__ = ["Journaled", "Resync", "merge_versions"]

_log = library_logger("mahavishnu_dlq.storage.failover")  # the failover store's log

_FIRST_BATCH, _LARGEST_BATCH = 256, 8192  # merges per mutate_many
_MERGES_IN_FLIGHT = 2  # batches
_DELETIONS_IN_FLIGHT = 64


def merge_versions(stored: FailedTask | None, incoming: FailedTask) -> FailedTask:
    """Two versions of one record: the newer ``updated_at`` wins, attempts of both kept.

    Attempts are told apart by ``(number, started_at)``; when both versions hold
    one, the winner's copy is kept (it may have finished it). The merged history is
    ordered by start (each side was bounded already, so the sum is too).
    """
    if stored is None:
        return incoming
    winner, loser = (
        (incoming, stored)
        if incoming.updated_at >= stored.updated_at
        else (
            stored,
            incoming,
        )
    )
    known = {(a.number, a.started_at) for a in winner.attempts}
    extra = [a for a in loser.attempts if (a.number, a.started_at) not in known]
    if not extra:
        return winner
    attempts: list[Attempt] = sorted([*winner.attempts, *extra], key=lambda a: a.started_at)
    return winner.evolve(attempts=attempts)


#: What tells one stored version of a record from another (the journal's stored text;
#: the record itself for other fallbacks): a re-synced record is removed only while
#: its version is the one that was merged.
Version = object


@runtime_checkable
class Journaled(Protocol):
    """A fallback that keeps its journal itself (a :class:`~mahavishnu_dlq.storage.journal.
    JournalStore`): what re-sync took over is removed from it in one transaction."""

    async def records(self, task_ids: Sequence[str]) -> dict[str, tuple[FailedTask, Version]]: ...

    async def discard(self, versions: Sequence[tuple[str, Version]]) -> None: ...

    async def forget_tombstones(self, items: Sequence[tuple[str, datetime]]) -> None: ...


@dataclass(eq=False)
class Resync:
    """The re-sync of one failover store: its primary, its fallback and its journal
    (the store's own dicts, changed in place)."""

    primary: Store
    fallback: Store
    journal: dict[str, int]  # id -> change number: changed in the fallback
    deleted: dict[str, datetime]  # id -> when: deleted in the fallback
    unsynced: dict[str, str]  # id -> why the primary refused its change
    batch: int = _FIRST_BATCH  # merges in the next batch

    async def run(self, timeout: float) -> tuple[int, BaseException | None]:
        """One pass over the journal as it is now: the number of changes it covered and
        the failure that stopped it (the primary is down again), if any."""
        journaled = list(self.journal)
        writes = iter(journaled)
        deletions = list(self.deleted.items())
        limiter = anyio.Semaphore(_DELETIONS_IN_FLIGHT)
        failures: list[BaseException] = []

        async def merge() -> None:
            while not failures:
                task_ids = list(islice(writes, self.batch))
                if not task_ids:
                    return
                failure = await self._merge(task_ids, timeout)
                if failure is not None:
                    failures.append(failure)

        async def delete(task_id: str, when: datetime) -> None:
            async with limiter:
                try:
                    await self._delete(task_id, when, timeout)
                except (StoreUnavailableError, TimeoutError) as exc:
                    failures.append(exc)  # the primary is down again: stop, keep the journal
                except Exception as exc:  # noqa: BLE001 - this change only: set it aside
                    self.set_aside(task_id, exc)

        async with anyio.create_task_group() as group:
            for _ in range(_MERGES_IN_FLIGHT):
                group.start_soon(merge)
            for task_id, when in deletions:
                group.start_soon(delete, task_id, when)
        return len(journaled) + len(deletions), failures[0] if failures else None

    async def _merge(self, task_ids: list[str], timeout: float) -> BaseException | None:
        """Merge the fallback's records of ``task_ids`` into the primary with one
        ``mutate_many`` within ``timeout``; the failure that stops the pass, if any."""
        batch: list[tuple[str, int, FailedTask, Version]] = []
        changes = {t: c for t in task_ids if (c := self.journal.get(t)) is not None}
        found = await self._records(list(changes))
        for task_id, change in changes.items():  # else deleted (or set aside) meanwhile
            if task_id not in found:
                await self._missing(task_id, change)
                continue
            batch.append((task_id, change, *found[task_id]))
        if not batch:
            return None
        merges: list[tuple[str, Mutation]] = [
            (task_id, partial(merge_versions, incoming=record)) for task_id, _, record, _ in batch
        ]
        started = time.perf_counter()
        try:
            with anyio.fail_after(timeout):
                results = await self.primary.mutate_many(merges)
        except (StoreUnavailableError, TimeoutError) as exc:
            self._resize(timeout, timeout)
            return exc
        self._resize(time.perf_counter() - started, timeout)
        failure: BaseException | None = None
        synced: list[tuple[str, Version]] = []
        for (task_id, change, _, version), result in zip(batch, results, strict=True):
            if isinstance(result, (StoreUnavailableError, TimeoutError)):
                failure = failure or result  # the primary is down again: keep the journal
            elif isinstance(result, Exception):
                self.set_aside(task_id, result)
            elif self.journal.get(task_id) == change:  # not changed again meanwhile
                del self.journal[task_id]
                synced.append((task_id, version))
        await self._discard(synced)
        return failure

    async def _missing(self, task_id: str, change: int) -> None:
        """A journaled record the fallback did not give: deleted meanwhile (its tombstone
        is re-synced instead), or unreadable there (set aside: kept, reported)."""
        try:
            still = await self.fallback.get(task_id)
        except UnreadableRecordError as exc:
            self.set_aside(task_id, exc)
            return
        if still is None and self.journal.get(task_id) == change:
            del self.journal[task_id]

    async def _records(self, task_ids: list[str]) -> dict[str, tuple[FailedTask, Version]]:
        """The fallback's records of ``task_ids`` with their versions (one read from a
        journal file)."""
        if isinstance(self.fallback, Journaled):
            return await self.fallback.records(task_ids)
        found: dict[str, tuple[FailedTask, Version]] = {}
        for task_id in task_ids:
            record = await self.fallback.get(task_id)
            if record is not None:
                found[task_id] = (record, record)
        return found

    async def _discard(self, versions: list[tuple[str, Version]]) -> None:
        """Remove the re-synced records from the fallback, each only while it holds the
        version that was merged (no await between the journal's check and the removal's
        queueing, so a change made meanwhile is applied after it, and stays)."""
        if isinstance(self.fallback, Journaled):
            await self.fallback.discard(versions)
            return
        for task_id, version in versions:
            if await self.fallback.get(task_id) == version:
                await self.fallback.delete(task_id)

    def _resize(self, seconds: float, timeout: float) -> None:
        """Double the next batch after one that took under a quarter of the timeout;
        halve it after one that took more than half."""
        if seconds < timeout / 4:
            self.batch = min(_LARGEST_BATCH, 2 * self.batch)
        elif seconds > timeout / 2:
            self.batch = max(_FIRST_BATCH, self.batch // 2)

    async def _delete(self, task_id: str, when: datetime, timeout: float) -> None:
        with anyio.fail_after(timeout):
            try:
                stored = await self.primary.get(task_id)
            except UnreadableRecordError:  # unreadable there: the deletion stands
                await self.primary.delete(task_id)
            else:
                if stored is not None and stored.updated_at <= when:
                    await self.primary.delete(task_id)
        if self.deleted.get(task_id) == when:
            del self.deleted[task_id]
            if isinstance(self.fallback, Journaled):
                await self.fallback.forget_tombstones([(task_id, when)])

    def set_aside(self, task_id: str, exc: BaseException) -> None:
        """A change the primary refuses (its record there cannot be read, …): kept in the
        fallback (calls about the id stay there), reported once, no longer re-synced."""
        why = f"{type(exc).__name__}: {exc}"
        self.unsynced[task_id] = why
        self.journal.pop(task_id, None)
        self.deleted.pop(task_id, None)
        _log.error(
            "dlq.failover: the change of task %r cannot be re-synced to %s (%s); it stays in "
            "the fallback of this process",
            task_id,
            self.primary.backend,
            why,
            extra={"action": "dlq.failover", "task_id": task_id, "outcome": "unsynced"},
        )
