"""The OpenSearch store's write path: bounded bulk requests, group commit, back-pressure.

Group commit
    Every write — a mutation, a claim, a deletion — goes through ``_bulk``. While
    bulk requests are in flight (at most ``max_in_flight``), the writes of other
    tasks queue up and are sent together in the next one; each caller still
    awaits the results of its own items. A few requests in flight keep a node's
    write threads busy while the next batch forms; one request (one translog
    fsync) per batch is what makes writes cheap.

Bounds
    A bulk request holds at most ``max_items`` items and ``max_bytes`` bytes of
    NDJSON (default 8 MiB: below the node's ``http.max_content_length``, 100 MB,
    and well below its indexing-pressure limit, 10% of the heap), however many
    callers' writes it gathers; one caller's many writes (a claim of a hundred
    tasks) are split over several requests when they do not fit in one. A record
    whose document alone is larger than ``max_bytes`` is refused with
    :class:`~mahavishnu_dlq.errors.PayloadTooLargeError` before anything is sent.

Back-pressure
    A node that answers HTTP 429 — for a whole request (indexing pressure) or for
    single items (a full write queue) — is alive and asks us to slow down: the
    request, or just its refused items, is sent again after a growing, jittered
    pause (50 ms doubling up to 2 s) for up to ``backpressure_seconds``; only then
    does the caller get :class:`~mahavishnu_dlq.errors.StoreOverloadedError`,
    which a failover store does not count toward opening its circuit.
    :attr:`BulkWriter.backpressure_at` tells when the node last pushed back.

Last writes
    :class:`LastWrites` remembers the document and version of the store's own last
    write per document (bounded): a mutation of a record this process just wrote (a
    claim, then its finish) starts from it instead of a read. The write that follows
    is conditional, so a stale entry costs a 409 and a read, never a lost update.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any, NamedTuple

from opensearchpy import AsyncOpenSearch, TransportError
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_delay,
    wait_random_exponential,
)

from mahavishnu_dlq.errors import (
    PayloadTooLargeError,
    StoreOverloadedError,
    StoreUnavailableError,
)
from mahavishnu_dlq.models import FailedTask, encode_json
from mahavishnu_dlq.storage import opensearch_query as q

__all__ = ["BulkWriter", "Doc", "Entry", "Item", "LastWrites"]

Item = dict[str, Any]

_BULK_FILTER = (
    "items.*.status,items.*.error.type,items.*.error.reason,items.*._seq_no,items.*._primary_term"
)
_OVERHEAD = 2  # bytes: the newlines after an action line and after its document
_FIRST_PAUSE, _LONGEST_PAUSE = 0.05, 2.0  # seconds between sends the node refused with 429


class _MalformedReply(Exception):  # noqa: N818 - private; becomes StoreUnavailableError
    """A bulk reply of unexpected shape (no ``items``, an item that is not one action)."""


def _reply_items(response: object, expected: int) -> list[Item]:
    """The per-item results of a bulk reply, checked: ``expected`` items, each one
    ``{action: {"status": int, ...}}``. A reply of any other shape raises
    :class:`_MalformedReply` (a real node never sends one; a proxy might)."""
    items = response.get("items") if isinstance(response, dict) else None
    if not isinstance(items, list):
        raise _MalformedReply(f"no 'items' list in the reply ({type(response).__name__})")
    if len(items) != expected:
        raise _MalformedReply(f"{len(items)} items in the reply for {expected} sent")
    results: list[Item] = []
    for position, item in enumerate(items):
        result = next(iter(item.values())) if isinstance(item, dict) and len(item) == 1 else None
        if not isinstance(result, dict) or not isinstance(result.get("status"), int):
            raise _MalformedReply(f"item {position} is not one action with a status: {item!r:.200}")
        results.append(result)
    return results


class Doc(NamedTuple):
    """A document as written: its JSON text (:func:`q.document_json`), write id and UTF-8 size."""

    text: str
    write_id: str
    size: int
    #: the record it encodes (what a later mutation of our own last write starts from)
    record: FailedTask | None = None


#: One bulk item: the action line and the document (None for deletes).
Entry = tuple[dict[str, Any], Doc | None]


class LastWrites:
    """The document and ``(seq_no, primary_term)`` of our own last write, per document id."""

    def __init__(self, kept: int = 4096) -> None:
        self._kept = kept
        self._entries: OrderedDict[str, tuple[Doc, tuple[int, int]]] = OrderedDict()

    def remember(self, doc_id: str, doc: Doc, item: Item) -> None:
        """Note ``doc`` as written with the version in ``item`` (a bulk item or a get)."""
        if "_seq_no" not in item or "_primary_term" not in item:
            return
        self._entries[doc_id] = (doc, (item["_seq_no"], item["_primary_term"]))
        self._entries.move_to_end(doc_id)
        if len(self._entries) > self._kept:
            self._entries.popitem(last=False)

    def take(self, doc_id: str) -> tuple[Doc, tuple[int, int]] | None:
        """The entry of ``doc_id``, forgotten (the mutation that takes it writes anew)."""
        return self._entries.pop(doc_id, None)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


def _utf8_size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _line(action: dict[str, Any]) -> str:
    return encode_json(action)


def _overloaded(exc: BaseException) -> bool:
    return isinstance(exc, TransportError) and exc.status_code == 429


class _Batch(NamedTuple):
    lines: list[str]  # NDJSON: each action line, then its document (none for a delete)
    entries: int  # how many
    size: int  # bytes
    future: asyncio.Future[list[Item]]


class BulkWriter:
    """Writes the documents of one index in bounded, group-committed bulk requests."""

    def __init__(
        self,
        client: AsyncOpenSearch,
        index: str,
        *,
        refresh: str,
        translated: Callable[[str], AbstractContextManager[None]],
        max_items: int = 1000,
        max_bytes: int = 8_388_608,
        max_in_flight: int = 4,
        backpressure_seconds: float = 30.0,
    ) -> None:
        self._client = client
        self._index = index
        self._refresh = refresh
        self._translated = translated
        self.max_items = max(1, max_items)
        self.max_bytes = max_bytes
        self._max_in_flight = max(1, max_in_flight)
        self._backpressure_seconds = backpressure_seconds
        self._queue: list[_Batch] = []
        self._workers: set[asyncio.Task[None]] = set()
        #: ``time.monotonic()`` of the node's last 429, or None
        self.backpressure_at: float | None = None
        #: bulk requests sent (whatever their answer): reads refresh after them
        self.writes = 0
        # write ids: unique per write (this writer's random prefix and a counter)
        self._write_ids = map(f"{uuid.uuid4().hex[:16]}-{{}}".format, itertools.count())

    # -- documents -----------------------------------------------------------------------

    def document(self, task: FailedTask) -> Doc:
        """The document of ``task``, tagged with a new write id; a document larger than a
        bulk request may be is refused here, before anything is sent."""
        write_id = next(self._write_ids)
        text = q.document_json(task, write_id)
        size = _utf8_size(text)
        if size + _OVERHEAD + 200 > self.max_bytes:  # its action line takes ~150 bytes
            raise PayloadTooLargeError(
                task.task_id,
                size,
                self.max_bytes,
                setting="opensearch.bulk_max_bytes",
                what="stored record",
            )
        return Doc(text, write_id, size, task)

    # -- writing ---------------------------------------------------------------------------

    async def write(self, entries: list[Entry], action: str) -> list[Item]:
        """Send ``entries`` (in the next group commits); their bulk item results, in order.

        Items the node refused with 429 are sent again after a pause, for up to
        ``backpressure_seconds``; then the caller gets :class:`StoreOverloadedError`.
        """
        results: list[Item | None] = [None] * len(entries)
        pending = list(range(len(entries)))
        deadline = time.monotonic() + self._backpressure_seconds
        pause = _FIRST_PAUSE
        while True:
            items = await self._submit_all([entries[i] for i in pending], action)
            refused: list[int] = []
            for index, item in zip(pending, items, strict=True):
                results[index] = item
                if item.get("status") == 429:
                    refused.append(index)
            if not refused:
                break
            self.backpressure_at = time.monotonic()
            if time.monotonic() + pause > deadline:
                raise StoreOverloadedError(
                    "opensearch",
                    f"{action}: the node refused {len(refused)} of {len(entries)} writes with "
                    f"HTTP 429 for {self._backpressure_seconds:g} s",
                )
            await asyncio.sleep(pause * random.uniform(0.5, 1.0))
            pause = min(2 * pause, _LONGEST_PAUSE)
            pending = refused
        return [item for item in results if item is not None]

    async def _submit_all(self, entries: list[Entry], action: str) -> list[Item]:
        chunks = list(self._chunks(entries))
        try:
            with self._translated(action):
                if len(chunks) == 1:
                    return await self._submit(*chunks[0])
                parts = await asyncio.gather(*(self._submit(*chunk) for chunk in chunks))
        except _MalformedReply as exc:  # a store fault like any other: failover takes it
            raise StoreUnavailableError(
                "opensearch", f"{action}: malformed bulk reply from index {self._index}: {exc}"
            ) from exc
        return [item for part in parts for item in part]

    def _chunks(self, entries: list[Entry]) -> Iterator[tuple[list[str], int, int]]:
        """``entries`` as NDJSON lines (each encoded once), cut into pieces that fit a
        bulk request: (lines, entries, bytes)."""
        lines: list[str] = []
        count = size = 0
        for action, doc in entries:
            line = _line(action)
            entry_size = len(line) + _OVERHEAD + (0 if doc is None else doc.size)
            if count and (count >= self.max_items or size + entry_size > self.max_bytes):
                yield lines, count, size
                lines, count, size = [], 0, 0
            lines.append(line)
            if doc is not None:
                lines.append(doc.text)
            count += 1
            size += entry_size
        yield lines, count, size

    async def _submit(self, lines: list[str], count: int, size: int) -> list[Item]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Item]] = loop.create_future()
        self._queue.append(_Batch(lines, count, size, future))
        if len(self._workers) < self._max_in_flight:
            worker = loop.create_task(self._drain())
            self._workers.add(worker)
        return await future

    async def flush(self) -> None:
        """Wait until everything submitted so far has been sent."""
        while self._workers:
            await asyncio.wait(set(self._workers))

    def _take(self) -> list[_Batch]:
        count = items = size = 0
        for batch in self._queue:
            if count and (
                items + batch.entries > self.max_items or size + batch.size > self.max_bytes
            ):
                break
            count += 1
            items += batch.entries
            size += batch.size
        taken = self._queue[:count]
        del self._queue[:count]
        return taken

    async def _drain(self) -> None:
        me = asyncio.current_task()
        try:
            while self._queue:
                taken = self._take()
                lines: list[str] = []  # NDJSON, encoded here: the client sends it as is
                for batch in taken:
                    lines += batch.lines
                lines.append("")
                try:
                    items = _reply_items(
                        await self._send("\n".join(lines)), sum(b.entries for b in taken)
                    )
                except Exception as exc:  # noqa: BLE001 - handed to every waiting submitter
                    for batch in taken:
                        if not batch.future.done():
                            batch.future.set_exception(exc)
                    continue
                except BaseException:
                    for batch in taken + self._queue:
                        batch.future.cancel()
                    self._queue.clear()
                    raise
                start = 0
                for batch in taken:
                    if not batch.future.done():
                        batch.future.set_result(items[start : start + batch.entries])
                    start += batch.entries
        finally:
            # leave the set in the same step as the loop ends: a submit that comes
            # next must see the free slot and start a worker, or its items would wait
            self._workers.discard(me)

    async def _send(self, body: str) -> object:
        """One bulk request; a whole request refused with 429 is sent again after a pause."""
        params = {"filter_path": _BULK_FILTER}
        if self._refresh != "false":
            params["refresh"] = self._refresh

        def pushed_back(exc: BaseException) -> bool:
            if _overloaded(exc):
                self.backpressure_at = time.monotonic()
                return True
            return False

        retrying = AsyncRetrying(
            retry=retry_if_exception(pushed_back),
            wait=wait_random_exponential(multiplier=_FIRST_PAUSE, max=_LONGEST_PAUSE),
            stop=stop_after_delay(self._backpressure_seconds),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    self.writes += 1
                    response = await self._client.bulk(body=body, index=self._index, params=params)
        except TransportError as exc:
            if _overloaded(exc):
                raise StoreOverloadedError(
                    "opensearch",
                    f"bulk: the node refused the request with HTTP 429 for "
                    f"{self._backpressure_seconds:g} s ({exc.error})",
                ) from exc
            raise
        return response

    async def written(self, entries: list[Entry], action: str) -> list[bool]:
        """Whether each (conditional) write answered 409 was in fact applied: a
        transport retry of an applied write conflicts with itself."""
        doc_ids = [next(iter(action_line.values()))["_id"] for action_line, _ in entries]
        with self._translated(action):
            found = await self._client.mget(index=self._index, body={"ids": doc_ids})
        return [
            bool(stored.get("found"))
            and doc is not None
            and stored["_source"].get("write_id") == doc.write_id
            for stored, (_, doc) in zip(found["docs"], entries, strict=True)
        ]
