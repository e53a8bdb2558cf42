"""Claims of due tasks from one OpenSearch index, safe for any number of processes.

:meth:`OpenSearchStore.claim_due <mahavishnu_dlq.storage.opensearch.OpenSearchStore.claim_due>`
and :meth:`~mahavishnu_dlq.storage.opensearch.OpenSearchStore.next_due_at` hand
their work to :class:`Claims`.

:meth:`Claims.claim_due` searches ``due_us <= now`` (``due_us`` is
``next_retry_at`` while pending, ``lease_expires_at`` while retrying), oldest
first, with ``seq_no_primary_term``, then writes every claim conditionally on
the version it saw, in one bulk request. A claim answered 409 was taken (or
changed) by someone else and is skipped, so any number of processes can claim
from one index and no task is claimed twice while its lease holds.

1. **Visible.** The store refreshes the index first when it wrote since its last
   refresh, so a process claims what it has just written.
2. **Search.** Twice the number of claims still wanted is asked for, skipping the
   documents this store found undecodable (a document first found so here is
   skipped too, and counted).
3. **Plan.** The lease function is applied to each hit; a hit it refuses (a
   :class:`~mahavishnu_dlq.errors.DLQError`, e.g. not due after all) or whose result
   is too large to write stays as it is.
4. **Write.** As many claims as are still wanted go out in one bulk request
   (:meth:`BulkWriter.write`), each an ``index`` with ``if_seq_no``/``if_primary_term``
   of the version the search returned; if some are lost, the next hits of the page
   follow in another. A won claim's version is remembered (:class:`LastWrites`), so
   its finish needs no read.
5. **Conflicts.** The ids answered 409 are read again (one ``_mget``): one whose
   stored ``write_id`` is the one just sent was won (the transport's retry conflicted
   with it); the others are skipped.
6. **Refusals.** Other failed writes are raised (the first) only when no claim of the
   request was won; otherwise they are logged (``dlq.claim``, on the store's logger)
   and the won claims returned.
7. **Pages.** While the page was full and fewer than ``limit`` are claimed, the next
   page follows with ``search_after``.

:meth:`Claims.next_due_at` is the ``due_us`` of the first document in the same order
(one search of one hit, no source), after the same refresh.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mahavishnu_dlq.clock import from_micros, to_micros
from mahavishnu_dlq.errors import DLQError
from mahavishnu_dlq.models import FailedTask
from mahavishnu_dlq.printable import library_logger
from mahavishnu_dlq.storage import opensearch_query as q
from mahavishnu_dlq.storage.base import Mutation, UnreadableRecords
from mahavishnu_dlq.storage.opensearch_write import BulkWriter, Doc, Entry, Item, LastWrites

__all__ = ["Claims", "Search"]

#: One search request (a body, the action its errors name): its hits.
Search = Callable[[dict[str, Any], str], Awaitable[list[dict[str, Any]]]]

_log = library_logger("mahavishnu_dlq.storage.opensearch")  # the store's log

_MAX_PAGE = 10_000  # index.max_result_window
_MAX_SPREAD = 8  # a claim searches at most this many times the tasks it needs
_OK = frozenset({200, 201})


@dataclass(eq=False)
class Contention:
    """How much this store's claims collide with other processes' claims.

    While none are lost, a claim searches exactly the tasks it still needs, oldest
    due first. Claims lost to another process double ``spread`` (at most
    :data:`_MAX_SPREAD`): the next claim searches ``spread`` times as many and takes
    them in a random order, so processes claiming at the same moment mostly take
    different tasks of the oldest due. A claim that loses none narrows it again by one.
    """

    spread: int = 1
    lost: int = 0  # claims lost to another process, in all

    def settle(self, lost: int) -> None:
        self.lost += lost
        if lost:
            self.spread = min(2 * self.spread, _MAX_SPREAD)
        elif self.spread > 1:
            self.spread -= 1


@dataclass(frozen=True)
class Claims:
    """``claim_due`` and ``next_due_at`` of one
    :class:`~mahavishnu_dlq.storage.opensearch.OpenSearchStore`."""

    writer: BulkWriter
    search: Search
    visible: Callable[[], Awaitable[None]]  # refresh if the store wrote since the last one
    known: LastWrites
    unreadable: UnreadableRecords
    item_error: Callable[[Item, str], DLQError]
    contention: Contention = field(default_factory=Contention)

    async def claim_due(
        self, now: datetime, limit: int, fn: Mutation, *, skip_workflows: Collection[str] = ()
    ) -> list[FailedTask]:
        """Up to ``limit`` due tasks, each changed by ``fn`` and written conditionally."""
        if limit <= 0:
            return []
        await self.visible()
        claimed: list[FailedTask] = []
        body: dict[str, Any] = {  # unreadable documents: never looked at again here
            "query": q.due_query(
                to_micros(now), skip=self.unreadable.keys, skip_workflows=skip_workflows
            ),
            "sort": q.DUE_SORT,
            "seq_no_primary_term": True,
            "track_total_hits": False,
        }
        contention = self.contention
        spread = contention.spread
        lost = 0
        while len(claimed) < limit:
            # what the batch still needs; a wider window while claims collide
            body["size"] = min((limit - len(claimed)) * spread, _MAX_PAGE)
            hits = await self.search(body, "claim_due")
            order = hits
            if spread > 1:  # each process takes its own random part of the oldest due
                order = random.sample(hits, len(hits))
            start = 0
            while start < len(order) and len(claimed) < limit:
                chunk = order[start : start + limit - len(claimed)]
                start += len(chunk)
                won, lost_now = await self._claim(chunk, fn)
                lost += lost_now
                claimed.extend(won)
            if len(hits) < body["size"]:
                break
            body["search_after"] = hits[-1]["sort"]
        contention.settle(lost)
        return claimed

    def _plan(
        self, hits: list[dict[str, Any]], fn: Mutation
    ) -> tuple[list[tuple[FailedTask, Doc]], list[Entry]]:
        """``fn`` applied to each readable hit it accepts: the claimed records and the
        conditional writes of them."""
        planned: list[tuple[FailedTask, Doc]] = []
        entries: list[Entry] = []
        for hit in hits:
            current = self.unreadable.read(hit["_id"], hit["_source"])
            if current is None:
                continue  # unreadable: skipped (and counted)
            try:
                new = fn(current)
                if new.task_id != current.task_id:
                    raise ValueError(
                        f"a mutation of {current.task_id!r} returned task {new.task_id!r}"
                    )
                doc = self.writer.document(new)
            except DLQError:
                continue  # refused (or too large to write): the task stays due
            condition = {"if_seq_no": hit["_seq_no"], "if_primary_term": hit["_primary_term"]}
            entries.append(({"index": {"_id": hit["_id"], **condition}}, doc))
            planned.append((new, doc))
        return planned, entries

    async def _claim(
        self, hits: list[dict[str, Any]], fn: Mutation
    ) -> tuple[list[FailedTask], int]:
        """Apply ``fn`` to each hit and write the results conditionally, in one bulk: the
        claims won, and how many other processes took first."""
        planned, entries = self._plan(hits, fn)
        if not entries:
            return [], 0
        items = await self.writer.write(entries, "claim_due")
        won: list[FailedTask | None] = [None] * len(planned)
        lost: list[int] = []
        taken_by_others = 0
        failures: list[DLQError] = []
        for i, item in enumerate(items):
            if item["status"] in _OK:
                won[i] = planned[i][0]
                doc_id = next(iter(entries[i][0].values()))["_id"]
                self.known.remember(doc_id, planned[i][1], item)
            elif item["status"] == 409:
                lost.append(i)  # someone else changed it first … unless the write was ours
            else:
                failures.append(self.item_error(item, "claim_due"))
        if lost:
            ours = await self.writer.written([entries[i] for i in lost], "get")
            for i, mine in zip(lost, ours, strict=True):
                won[i] = planned[i][0] if mine else None
            taken_by_others = len(lost) - sum(ours)
        result = [task for task in won if task is not None]
        if failures:
            if not result:
                raise failures[0]
            _log.warning(
                "dlq.claim: %d claims were not written: %s",
                len(failures),
                failures[0],
                extra={"action": "dlq.claim", "outcome": "not_written", "count": len(failures)},
            )
        return result, taken_by_others

    async def next_due_at(self) -> datetime | None:
        """The earliest ``due_us`` in the index (it may be past), or None when no task is due
        now or later."""
        await self.visible()
        body = {
            "query": {"exists": {"field": "due_us"}},
            "sort": q.DUE_SORT,
            "size": 1,
            "_source": False,
            "track_total_hits": False,
        }
        hits = await self.search(body, "next_due_at")
        return from_micros(hits[0]["sort"][0]) if hits else None
