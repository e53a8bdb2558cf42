"""Many compare-and-set mutations of one OpenSearch index, in a few bulk round trips.

:meth:`OpenSearchStore.mutate_many <mahavishnu_dlq.storage.opensearch.OpenSearchStore.mutate_many>`
hands its items to :class:`BatchMutations`. Each item is applied as ``mutate`` would
apply it — compare-and-set on ``_seq_no``/``_primary_term`` — but the reads and the
writes of many ids share requests:

1. **Group.** Items are grouped by id (first-seen order) and the ids taken
   ``chunk_ids`` at a time; ``chunks_in_flight`` chunks run at once, so one is
   planned while another waits for the node.
2. **Lock.** A chunk holds the per-id lock (:class:`~mahavishnu_dlq.storage.base.KeyedLock`)
   of each of its ids from its read to its last write, so no ``mutate`` of this
   process interleaves with it. Locks are taken in the sorted order of their keys: a
   holder waits only for keys above every key it holds (a ``mutate`` holds one key),
   so no two holders can wait for each other.
3. **Read.** An id whose last write this store made (:class:`LastWrites`) starts from
   that version; the others are read in realtime with one ``_mget``.
4. **Plan.** Each id's items are applied in their order, each to the previous one's
   result. An item whose function raises, changes the id, or makes a document too
   large gets that exception in its slot, and the next item sees the record before
   it. A stored document that cannot be decoded gives each item of its id an
   :class:`~mahavishnu_dlq.errors.UnreadableRecordError`. An id whose function
   refused the remembered version is read and planned again first (as ``mutate``).
5. **Write.** Each id's last result is its one write — ``create`` when there was no
   document, ``index`` with ``if_seq_no``/``if_primary_term`` otherwise — all sent by
   one :meth:`BulkWriter.write` (bounded bulk requests, group commit, 429 retried).
6. **Conflicts.** Ids answered 409 are read again (one ``_mget``). One whose stored
   ``write_id`` is the one just sent was written (the transport's retry conflicted
   with it); the others changed meanwhile and are planned and written again from the
   new version, until ``conflict_retries`` races are lost, then
   :class:`~mahavishnu_dlq.errors.TaskBusyError`.
7. **Refusals.** A write the node refuses otherwise (HTTP 400, …) fails the item whose
   result it held; one that held the results of several items is made again one item
   at a time from the same version, so the error reaches only the item whose result
   was refused. (The node sees only each id's last result; the store checks every
   result's id and size itself.)

A request that fails gives its error to every item it carried; after a
:class:`~mahavishnu_dlq.errors.StoreUnavailableError` the chunks not yet begun are
not sent (their items get the same error): the node is gone or refuses.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import anyio

from mahavishnu_dlq.errors import DLQError, StoreUnavailableError, TaskBusyError
from mahavishnu_dlq.limits import require_str
from mahavishnu_dlq.models import FailedTask
from mahavishnu_dlq.storage import opensearch_query as q
from mahavishnu_dlq.storage.base import KeyedLock, Mutation, UnreadableRecords
from mahavishnu_dlq.storage.opensearch_client import Versioned
from mahavishnu_dlq.storage.opensearch_write import BulkWriter, Doc, Entry, Item, LastWrites

__all__ = ["BatchMutations", "Read"]

#: Realtime reads of many documents by id: each its version, or why it could not be read.
Read = Callable[[list[str]], Awaitable[list[Versioned | DLQError]]]

_OK = frozenset({200, 201})
Results = list[FailedTask | Exception | None]


@dataclass(slots=True, eq=False)
class _Chain:
    """The items of one id in a batch, and where its compare-and-set stands."""

    task_id: str
    doc_id: str
    slots: list[int] = field(default_factory=list)  # indexes of its items, in order
    fns: list[Mutation] = field(default_factory=list)
    source: dict[str, Any] | None = None
    version: tuple[int, int] | None = None
    cached: bool = False  # the version is our own last write, not a read
    start: int = 0  # items before it are settled
    upto: int = 0  # the planned write holds the results of the items before it
    doc: Doc | None = None  # the planned write: the last successful result
    single: bool = False  # one write per item (the node refused a write of several)
    losses: int = 0  # writes another writer's change made fail (409)
    done: bool = False  # every slot holds its final outcome

    def settled(self, version: tuple[int, int]) -> bool:
        """The planned write is stored with ``version``: True when items remain."""
        if not self.single or self.upto == len(self.slots):
            self.done = True
            return False
        assert self.doc is not None  # noqa: S101 - only a planned write is stored
        self.start, self.losses = self.upto, 0
        self.source, self.version, self.cached = json.loads(self.doc.text), version, True
        return True


@dataclass(frozen=True)
class BatchMutations:
    """``mutate_many`` of one :class:`~mahavishnu_dlq.storage.opensearch.OpenSearchStore`."""

    writer: BulkWriter
    read: Read
    known: LastWrites
    unreadable: UnreadableRecords
    locks: KeyedLock
    item_error: Callable[[Item, str], DLQError]
    conflict_retries: int
    chunk_ids: int = 1000
    chunks_in_flight: int = 2

    async def __call__(self, items: Sequence[tuple[str, Mutation]]) -> list[FailedTask | Exception]:
        """Each ``(task_id, fn)`` as ``mutate``: results (or exceptions) in input order."""
        results: Results = [None] * len(items)
        chains: dict[str, _Chain] = {}
        for index, (given, fn) in enumerate(items):
            try:
                task_id = require_str(given, "task_id")
            except TypeError as exc:
                results[index] = exc
                continue
            chain = chains.get(task_id)
            if chain is None:
                chain = chains[task_id] = _Chain(task_id, q.doc_id(task_id))
            chain.slots.append(index)
            chain.fns.append(fn)
        ordered = list(chains.values())
        size = self.chunk_ids
        chunks = [ordered[at : at + size] for at in range(0, len(ordered), size)]
        gone: list[StoreUnavailableError] = []  # the node failed: later chunks are not sent
        limiter = anyio.Semaphore(max(1, self.chunks_in_flight))

        async def run(chunk: list[_Chain]) -> None:
            async with limiter:
                try:
                    if gone:
                        raise gone[0]
                    await self._chunk(chunk, results)
                except StoreUnavailableError as exc:
                    if not gone:
                        gone.append(exc)
                    _fail([chain for chain in chunk if not chain.done], results, exc)

        if len(chunks) == 1:
            await run(chunks[0])
        else:
            async with anyio.create_task_group() as group:
                for chunk in chunks:
                    group.start_soon(run, chunk)
        return cast("list[FailedTask | Exception]", results)  # every slot is filled by now

    async def _chunk(self, chains: list[_Chain], results: Results) -> None:
        """Read, plan, write and resolve the conflicts of one chunk, its ids locked.
        Raises StoreUnavailableError when the node failed (chains not done are left)."""
        async with self.locks.hold_all(chain.doc_id for chain in chains):
            unread: list[_Chain] = []
            for chain in chains:
                known = self.known.take(chain.doc_id)
                if known is None:
                    unread.append(chain)
                else:
                    chain.source, chain.version = json.loads(known[0].text), known[1]
                    chain.cached = True
            await self._load(unread, results)
            pending = [chain for chain in chains if not chain.done]
            while pending:  # each round settles items, or counts a lost race
                pending = await self._plan_all(pending, results)
                if pending:
                    pending = await self._write(pending, results)

    async def _load(self, chains: list[_Chain], results: Results) -> None:
        """Read ``chains`` in realtime (one ``_mget``); one that cannot be read gets the
        error and is done. Raises StoreUnavailableError when the request failed."""
        if not chains:
            return
        try:
            found = await self.read([chain.doc_id for chain in chains])
        except StoreUnavailableError:
            raise
        except DLQError as exc:
            _fail(chains, results, exc)
            return
        for chain, versioned in zip(chains, found, strict=True):
            if isinstance(versioned, DLQError):
                _fail([chain], results, versioned)
            else:
                chain.source, chain.version = versioned
                chain.cached = False

    async def _plan_all(self, chains: list[_Chain], results: Results) -> list[_Chain]:
        """Plan each chain; those with a write to make."""
        again = [chain for chain in chains if self._plan(chain, results) and chain.cached]
        if again:  # refused on our own last write: ask the index before refusing
            await self._load(again, results)
            for chain in again:
                if not chain.done:
                    self._plan(chain, results)
        return [chain for chain in chains if not chain.done]

    def _plan(self, chain: _Chain, results: Results) -> bool:
        """Apply the chain's unsettled items in order from its current version (only up
        to the first that succeeds when ``single``); True when one refused. A chain left
        with nothing to write is done."""
        chain.doc = None
        current: FailedTask | None = None
        if chain.source is not None:
            try:
                current = self.unreadable.read_or_raise(chain.task_id, chain.doc_id, chain.source)
            except DLQError as exc:  # UnreadableRecordError: every item of the id
                for slot in chain.slots[chain.start :]:
                    results[slot] = exc
                chain.done = True
                return False
        refused = False
        for at in range(chain.start, len(chain.slots)):
            slot = chain.slots[at]
            try:
                new = chain.fns[at](current)
                if new.task_id != chain.task_id:
                    raise ValueError(
                        f"a mutation of {chain.task_id!r} returned task {new.task_id!r}"
                    )
                doc = self.writer.document(new)
            except Exception as exc:  # noqa: BLE001 - this item's own failure, in its slot
                results[slot] = exc
                refused = True
                continue
            results[slot] = current = new
            chain.doc, chain.upto = doc, at + 1
            if chain.single:
                break
        chain.done = chain.doc is None
        return refused

    async def _write(self, chains: list[_Chain], results: Results) -> list[_Chain]:
        """Write each chain's planned document conditionally; the chains to plan and write
        again (a race lost, or items left to write one at a time)."""
        entries: list[Entry] = []
        for chain in chains:
            meta: dict[str, Any] = {"_id": chain.doc_id}
            if chain.version is None:
                entries.append(({"create": meta}, chain.doc))
            else:
                meta.update(if_seq_no=chain.version[0], if_primary_term=chain.version[1])
                entries.append(({"index": meta}, chain.doc))
        try:
            answers = await self.writer.write(entries, "mutate")
        except StoreUnavailableError:
            raise
        except DLQError as exc:
            _fail(chains, results, exc)
            return []
        lost: list[tuple[_Chain, Doc]] = []
        again: list[_Chain] = []
        for chain, (_, doc), item in zip(chains, entries, answers, strict=True):
            assert doc is not None  # noqa: S101 - only planned chains are written
            if item["status"] in _OK:
                self.known.remember(chain.doc_id, doc, item)
                if chain.settled((item["_seq_no"], item["_primary_term"])):
                    again.append(chain)
            elif item["status"] == 409:
                lost.append((chain, doc))  # someone else wrote first … unless it was ours
            elif _refused(chain, results, self.item_error(item, "mutate")):
                again.append(chain)
        return again + (await self._lost(lost, results) if lost else [])

    async def _lost(self, lost: list[tuple[_Chain, Doc]], results: Results) -> list[_Chain]:
        """The chains whose write was answered 409, read again: those another writer
        changed meanwhile (a stored ``write_id`` of our own write means it was applied),
        and those with items left to write one at a time."""
        await self._load([chain for chain, _ in lost], results)
        again: list[_Chain] = []
        for chain, doc in lost:
            if chain.done:
                continue  # could not be read
            if chain.source is not None and chain.source.get("write_id") == doc.write_id:
                # our write was applied; the 409 answered the transport's retry
                assert chain.version is not None  # noqa: S101 - a found document has one
                seq_no, term = chain.version
                self.known.remember(chain.doc_id, doc, {"_seq_no": seq_no, "_primary_term": term})
                if chain.settled(chain.version):
                    again.append(chain)
                continue
            chain.losses += 1
            if chain.losses < self.conflict_retries:
                again.append(chain)
            else:  # still losing the race after every retry
                reason = f"{self.conflict_retries} concurrent updates won the race; try again"
                _fail([chain], results, TaskBusyError(chain.task_id, reason=reason))
        return again


def _refused(chain: _Chain, results: Results, error: Exception) -> bool:
    """The node refused the chain's write (a 400, …); True when it is to be planned
    again. A write of several items' results is made again one item at a time, from
    the same version, so the error reaches only the item whose result was refused."""
    unsettled = chain.slots[chain.start : chain.upto]
    if not chain.single and sum(isinstance(results[slot], FailedTask) for slot in unsettled) > 1:
        chain.single = True
        return True
    results[chain.slots[chain.upto - 1]] = error  # the item whose result was refused
    if chain.single and chain.upto < len(chain.slots):
        chain.start = chain.upto  # the next items see the version before it
        return True
    chain.done = True
    return False


def _fail(chains: list[_Chain], results: Results, exc: Exception) -> None:
    """``exc`` in each unsettled slot of ``chains`` without an outcome or with an
    unwritten result; items whose own function refused keep their exception."""
    for chain in chains:
        for slot in chain.slots[chain.start :]:
            if results[slot] is None or isinstance(results[slot], FailedTask):
                results[slot] = exc
        chain.done = True
