"""OpenSearchStore: the Store contract on one OpenSearch index, with core APIs only.

Mapping
    :meth:`OpenSearchStore.open` puts a composable index template matching the
    index name exactly and creates the index, both with an explicit strict mapping
    (``dynamic: strict``; see :mod:`~mahavishnu_dlq.storage.opensearch_query`):
    keywords for ids, status, category, policy, fingerprint, workflow and worker;
    the error texts as keywords too (up to 8191 characters) so the
    case-insensitive substring filter is a ``regexp`` query (with explicit case
    classes: ``case_insensitive`` only folds ASCII); ``task``,
    ``metadata`` and ``attempts`` stored but not indexed; the timestamps as
    ``date`` plus ``long`` microsecond fields for exact sorting and ranges. An
    existing index with a conflicting field is refused with a
    :class:`~mahavishnu_dlq.errors.ConfigurationError`; one that lacks fields
    (an older mapping version, kept in ``_meta``) is upgraded in place.

Ids
    Task ids may be any string, so the document ``_id`` is the SHA-256 hex digest
    of the task id; the id itself is the ``task_id`` field. Records are
    ``FailedTask.model_dump(mode="json")`` and validated back: they round-trip
    exactly, microseconds and nested JSON included.

Compare-and-set
    :meth:`~OpenSearchStore.mutate` first tries an optimistic ``create`` of
    ``fn(None)`` (most enqueues are of new ids: this skips a read). When the
    record exists — or ``fn`` refuses a missing record — it reads the document in realtime (with its
    ``_seq_no``/``_primary_term``), computes the successor, and writes it only if
    nobody wrote in between (``if_seq_no``/``if_primary_term``, or ``create`` when
    there was no document). A 409 means another writer won: re-read, call the
    (pure) function again, up to ``conflict_retries`` times, then
    :class:`~mahavishnu_dlq.errors.TaskBusyError`. Every write carries a random
    ``write_id``, so a 409 that answers the transport's retry of a write that had
    in fact been applied is recognised as our own success.

Group commit
    Writes go through ``_bulk``: while bulk requests are in flight (at most
    ``max_in_flight``), the writes of other tasks queue up and are sent together
    in the next one; each caller still awaits the result of its own item. The
    store remembers the version of its own last write per document (bounded), so
    a claim's finish needs no read.

Claims
    :meth:`~OpenSearchStore.claim_due` searches ``due_us <= now`` (``due_us`` is
    ``next_retry_at`` while pending, ``lease_expires_at`` while retrying), oldest
    first, with ``seq_no_primary_term``, then writes every claim conditionally on
    the version it saw, in one bulk request. A claim answered 409 was taken (or
    changed) by someone else and is skipped, so any number of processes can claim
    from one index and no task is claimed twice while its lease holds.

Visibility (the trade-off)
    ``get`` and ``mutate`` are realtime. Searches and counts see a write only
    after a refresh. This store counts its own acknowledged writes and refreshes
    the index before a search-based read (claim, query, count, statistics, purge)
    when it wrote since the last refresh, so one process always reads its own
    writes; a process that only reads pays nothing. Writes of *other* processes
    become visible within the index's ``refresh_interval`` (1 s in the template),
    which can delay a claim by that long but never makes it unsafe: a claim
    based on a stale hit fails its version check. ``refresh="wait_for"`` (or
    ``"true"``) makes every write wait for visibility instead. :meth:`close`
    refreshes when this store wrote since its last refresh, so what a short-lived
    process (a CLI command) changed is searchable the moment it exits.

Errors
    Connection failures, timeouts, 429 and 5xx answers, and authentication or
    authorization failures become :class:`~mahavishnu_dlq.errors.StoreUnavailableError`
    (the client's exception as ``__cause__``); a request the index refuses (HTTP
    400, e.g. a mapping conflict) a :class:`~mahavishnu_dlq.errors.ConfigurationError`.
    The password never appears in messages or reprs.

opensearch-py's ``AsyncOpenSearch`` runs on asyncio only: every method refuses
to run under trio with a :class:`~mahavishnu_dlq.errors.ConfigurationError`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from opensearchpy import (
    AsyncOpenSearch,
    ConnectionTimeout,
    NotFoundError,
    RequestError,
    TransportError,
)
from opensearchpy import ConnectionError as OpenSearchConnectionError
from pydantic import SecretStr

from mahavishnu_dlq.clock import from_micros, to_micros
from mahavishnu_dlq.errors import (
    ConfigurationError,
    DLQError,
    StoreUnavailableError,
    TaskBusyError,
)
from mahavishnu_dlq.models import (
    DeadLetterStatus,
    FailedTask,
    TaskFilter,
    TaskPage,
    decode_cursor,
    encode_cursor,
    encode_json,
)
from mahavishnu_dlq.storage import opensearch_query as q
from mahavishnu_dlq.storage.base import Mutation, StoreStatistics, mutate_each

if TYPE_CHECKING:
    from mahavishnu_dlq.settings import OpenSearchSettings

__all__ = ["OpenSearchStore"]

_log = logging.getLogger(__name__)

Refresh = Literal["false", "wait_for", "true"]
_Item = dict[str, Any]


class _Doc(NamedTuple):
    """A document as written: its JSON text (:func:`q.document_json`) and write id."""

    text: str
    write_id: str


#: One bulk item: the action line and the document (None for deletes).
_Entry = tuple[dict[str, Any], _Doc | None]

_BACKEND = "opensearch"
_MASK = "**********"
_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")
_MAX_PAGE = 10_000  # index.max_result_window
_OK = frozenset({200, 201})
_BULK_FILTER = (
    "items.*.status,items.*.error.type,items.*.error.reason,items.*._seq_no,items.*._primary_term"
)
_KNOWN_LIMIT = 4096  # documents whose last write (ours) we remember, for reads we can skip
_TRIO_HINT = (
    "OpenSearchStore runs on asyncio (opensearch-py's AsyncOpenSearch); under trio use "
    "the memory store, or run the queue on asyncio (anyio.run(..., backend='asyncio') "
    "or BlockingDLQ(..., backend='asyncio'))"
)


def _async_library() -> str:
    try:
        import sniffio  # noqa: PLC0415 - optional: it comes with trio, the other loop
    except ImportError:  # pragma: no cover - without trio installed only asyncio runs
        return "asyncio"
    try:
        return sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        return "unknown"


def _require_asyncio() -> None:
    if _async_library() != "asyncio":
        raise ConfigurationError(_TRIO_HINT, field="store")


def _error_info(info: Any) -> tuple[str, str]:
    """(type, reason) of an OpenSearch error body or bulk item error."""
    error = info.get("error", info) if isinstance(info, dict) else info
    if isinstance(error, dict):
        causes = error.get("root_cause") or [error]
        cause = causes[0] if isinstance(causes[0], dict) else error
        return str(cause.get("type", "")), str(cause.get("reason", ""))
    return "", "" if error is None else str(error)


class _GroupCommit:
    """Sends queued bulk items together: at most ``max_in_flight`` requests at a
    time, the next batch gathering meanwhile; each submitter awaits the results of
    its own items. A few requests in flight keep a node's write threads busy while
    the next batch forms; one request (one translog fsync) per batch is what makes
    writes cheap."""

    def __init__(
        self,
        send: Callable[[str], Awaitable[list[_Item]]],
        max_items: int,
        max_in_flight: int = 4,
    ) -> None:
        self._send = send
        self._max_items = max_items
        self._max_in_flight = max(1, max_in_flight)
        self._queue: list[tuple[list[_Entry], asyncio.Future[list[_Item]]]] = []
        self._workers: set[asyncio.Task[None]] = set()

    async def submit(self, entries: list[_Entry]) -> list[_Item]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[_Item]] = loop.create_future()
        self._queue.append((entries, future))
        if len(self._workers) < self._max_in_flight:
            worker = loop.create_task(self._drain())
            self._workers.add(worker)
        return await future

    async def flush(self) -> None:
        """Wait until everything submitted so far has been sent."""
        while self._workers:
            await asyncio.wait(set(self._workers))

    def _take(self) -> list[tuple[list[_Entry], asyncio.Future[list[_Item]]]]:
        count = items = 0
        for entries, _ in self._queue:
            if count and items + len(entries) > self._max_items:
                break
            count += 1
            items += len(entries)
        batch = self._queue[:count]
        del self._queue[:count]
        return batch

    async def _drain(self) -> None:
        me = asyncio.current_task()
        try:
            while self._queue:
                batch = self._take()
                lines: list[str] = []  # NDJSON, encoded here: the client sends it as is
                for entries, _ in batch:
                    for action, doc in entries:
                        lines.append(encode_json(action))
                        if doc is not None:
                            lines.append(doc.text)
                lines.append("")
                try:
                    items = await self._send("\n".join(lines))
                except Exception as exc:  # noqa: BLE001 - handed to every waiting submitter
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                except BaseException:
                    for _, future in batch + self._queue:
                        future.cancel()
                    self._queue.clear()
                    raise
                start = 0
                for entries, future in batch:
                    if not future.done():
                        future.set_result(items[start : start + len(entries)])
                    start += len(entries)
        finally:
            # leave the set in the same step as the loop ends: a submit that comes
            # next must see the free slot and start a worker, or its items would wait
            self._workers.discard(me)


class OpenSearchStore:
    """Failed tasks in an OpenSearch index, shared safely by any number of processes."""

    backend = "opensearch"

    def __init__(
        self,
        hosts: str | Sequence[str],
        *,
        index: str = "mahavishnu-dlq-tasks",
        username: str | None = None,
        password: str | SecretStr | None = None,
        verify_certs: bool = True,
        ca_certs: str | None = None,
        timeout: float = 10.0,
        refresh: Refresh = "false",
        client: AsyncOpenSearch | None = None,
        conflict_retries: int = 20,
        batch_size: int = 1000,
        max_in_flight: int = 4,
    ) -> None:
        """``client``, when given, is used instead of one built from the connection
        arguments, and is left open by :meth:`close` (its owner closes it)."""
        if refresh not in ("false", "wait_for", "true"):
            raise ConfigurationError(
                f"refresh must be one of: false, wait_for, true; got {refresh!r}",
                field="opensearch.refresh",
            )
        self._hosts = [hosts] if isinstance(hosts, str) else list(hosts)
        self._timeout = timeout
        self._index = index
        self._template = f"mahavishnu-dlq-{index}"
        self._refresh = refresh
        self._conflict_retries = max(1, conflict_retries)
        self._batch_size = max(1, min(batch_size, _MAX_PAGE))
        secret = password.get_secret_value() if isinstance(password, SecretStr) else password
        self._secret = secret or ""
        self._owns_client = client is None
        if client is None:
            auth = None if username is None else (username, self._secret)
            client = AsyncOpenSearch(
                hosts=self._hosts,
                http_auth=auth,
                verify_certs=verify_certs,
                ca_certs=ca_certs,
                timeout=timeout,
                maxsize=64,  # concurrent attempts each read their record: do not queue on 10
            )
        self._client = client
        self._commit = _GroupCommit(
            self._send_bulk, max_items=self._batch_size, max_in_flight=max_in_flight
        )
        self._writes = 0  # acknowledged writes not yet known to be searchable …
        self._refreshed = 0  # … up to this count they are
        self._refresh_lock = asyncio.Lock()
        # doc id -> (document, (seq_no, primary_term)) of our own last write: a mutation
        # of a record this process just wrote (a claim, then its finish) starts from it
        # instead of a read; the write is conditional, so a stale entry costs a 409 and
        # a read, never a lost update.
        self._known: OrderedDict[str, tuple[_Doc, tuple[int, int]]] = OrderedDict()
        # write ids: unique per write (this store's random prefix and a counter)
        self._write_ids = map(f"{uuid.uuid4().hex[:16]}-{{}}".format, itertools.count())

    @classmethod
    def from_settings(cls, s: OpenSearchSettings) -> OpenSearchStore:
        """The store :class:`~mahavishnu_dlq.settings.OpenSearchSettings` describe."""
        return cls(
            hosts=s.hosts,
            index=s.index,
            username=s.username,
            password=s.password,
            verify_certs=s.verify_certs,
            ca_certs=s.ca_certs,
            timeout=s.timeout_seconds,
            refresh=s.refresh,
        )

    def __repr__(self) -> str:
        hosts = [_USERINFO.sub(_MASK + "@", host) for host in self._hosts]
        return f"OpenSearchStore(hosts={hosts!r}, index={self._index!r})"

    @property
    def location(self) -> str:
        """The hosts (credentials masked) and index, as error messages name them."""
        hosts = ", ".join(_USERINFO.sub(_MASK + "@", host) for host in self._hosts)
        return f"{hosts} (index {self._index!r})"

    # -- lifecycle -------------------------------------------------------------

    async def open(self) -> None:
        _require_asyncio()
        indices = self._client.indices
        with self._translated("open"):
            await indices.put_index_template(name=self._template, body=q.template_body(self._index))
            try:
                await indices.create(index=self._index, body=q.index_body())
            except RequestError as exc:
                if _error_info(exc.info)[0] != "resource_already_exists_exception":
                    raise
            found = await indices.get_mapping(index=self._index)
            for name, entry in found.items():
                conflicts, update = q.mapping_problems(entry.get("mappings") or {})
                if conflicts:
                    raise ConfigurationError(
                        f"OpenSearch index {name!r} has a mapping mahavishnu-dlq cannot use: "
                        + "; ".join(conflicts)
                        + ". Use another index (opensearch.index) or reindex this one.",
                        field="opensearch.index",
                    )
                if update:
                    await indices.put_mapping(index=name, body=q.update_body())

    async def close(self) -> None:
        _require_asyncio()
        await self._commit.flush()
        try:
            await self._ensure_visible()
        except StoreUnavailableError as exc:  # the writes are durable; only a refresh is late
            _log.debug("dlq.store.close: refresh skipped: %s", exc)
        if self._owns_client:
            with self._translated("close"):
                await self._client.close()

    async def drop(self) -> None:
        """Delete the index and its template (tests, decommissioning). Not undoable."""
        _require_asyncio()
        self._known.clear()
        with self._translated("drop"):
            with suppress(NotFoundError):
                await self._client.indices.delete(index=self._index)
            with suppress(NotFoundError):
                await self._client.indices.delete_index_template(name=self._template)

    # -- single records --------------------------------------------------------

    async def get(self, task_id: str) -> FailedTask | None:
        _require_asyncio()
        source, _ = await self._read(q.doc_id(task_id))
        return None if source is None else q.from_document(source)

    async def mutate(self, task_id: str, fn: Mutation) -> FailedTask:
        _require_asyncio()
        doc_id = q.doc_id(task_id)
        known = self._known.pop(doc_id, None)
        if known is None:
            created = await self._create_if_absent(task_id, doc_id, fn)
            if created is not None:
                return created
            source, version = await self._read(doc_id)
        else:
            source, version = json.loads(known[0].text), known[1]
        cached = known is not None
        for _ in range(self._conflict_retries):
            try:
                new = fn(None if source is None else q.from_document(source))
            except Exception:
                if not cached:
                    raise
                cached = False  # judged on our last write: ask the index before refusing
                source, version = await self._read(doc_id)
                new = fn(None if source is None else q.from_document(source))
            cached = False
            if new.task_id != task_id:
                raise ValueError(f"a mutation of {task_id!r} returned task {new.task_id!r}")
            doc = self._document(new)
            meta: dict[str, Any] = {"_id": doc_id}
            if version is None:
                action = {"create": meta}
            else:
                action = {"index": {**meta, "if_seq_no": version[0], "if_primary_term": version[1]}}
            [item] = await self._write([(action, doc)], "mutate")
            if item["status"] in _OK:
                self._remember(doc_id, doc, item)
                return new
            if item["status"] != 409:
                raise self._item_error(item, "mutate")
            source, version = await self._read(doc_id)
            if source is not None and source.get("write_id") == doc.write_id:
                return new  # our write was applied; the 409 answered the transport's retry
        raise TaskBusyError(
            task_id, reason=f"{self._conflict_retries} concurrent updates won the race; try again"
        )

    async def mutate_many(
        self, items: Sequence[tuple[str, Mutation]]
    ) -> list[FailedTask | Exception]:
        """Each item as :meth:`mutate`, concurrently per id: the group commit sends the
        writes of many ids together, in bulk requests."""
        _require_asyncio()
        return await mutate_each(self, items)

    async def _create_if_absent(self, task_id: str, doc_id: str, fn: Mutation) -> FailedTask | None:
        """Optimistic create: most enqueues are of new ids, so try ``fn(None)`` with
        ``op_type=create`` first and skip the read. None when the record exists (the
        caller then reads and compares-and-sets) or ``fn`` refuses a missing record
        (it is called again, for real, on the read path; mutations are pure)."""
        try:
            new = fn(None)
        except Exception:  # noqa: BLE001 - decided on the read path, with the real record
            return None
        if new.task_id != task_id:
            raise ValueError(f"a mutation of {task_id!r} returned task {new.task_id!r}")
        doc = self._document(new)
        [item] = await self._write([({"create": {"_id": doc_id}}, doc)], "mutate")
        if item["status"] in _OK:
            self._remember(doc_id, doc, item)
            return new
        if item["status"] == 409:
            source, _ = await self._read(doc_id)
            if source is not None and source.get("write_id") == doc.write_id:
                return new  # our create was applied; the 409 answered the transport's retry
            return None
        raise self._item_error(item, "mutate")

    def _document(self, task: FailedTask) -> _Doc:
        write_id = next(self._write_ids)
        return _Doc(q.document_json(task, write_id), write_id)

    def _remember(self, doc_id: str, doc: _Doc, item: _Item) -> None:
        if "_seq_no" not in item or "_primary_term" not in item:
            return
        self._known[doc_id] = (doc, (item["_seq_no"], item["_primary_term"]))
        self._known.move_to_end(doc_id)
        if len(self._known) > _KNOWN_LIMIT:
            self._known.popitem(last=False)

    async def delete(self, task_id: str) -> bool:
        _require_asyncio()
        self._known.pop(q.doc_id(task_id), None)
        [item] = await self._write([({"delete": {"_id": q.doc_id(task_id)}}, None)], "delete")
        if item["status"] == 404:
            return False
        if item["status"] not in _OK:
            raise self._item_error(item, "delete")
        return True

    # -- the processor's view ----------------------------------------------------

    async def claim_due(self, now: datetime, limit: int, fn: Mutation) -> list[FailedTask]:
        _require_asyncio()
        if limit <= 0:
            return []
        await self._ensure_visible()
        claimed: list[FailedTask] = []
        body: dict[str, Any] = {
            "query": q.due_query(to_micros(now)),
            "sort": q.DUE_SORT,
            "seq_no_primary_term": True,
            "track_total_hits": False,
        }
        while len(claimed) < limit:
            body["size"] = min(2 * (limit - len(claimed)), _MAX_PAGE)
            hits = await self._search(body, "claim_due")
            start = 0
            while start < len(hits) and len(claimed) < limit:
                chunk = hits[start : start + limit - len(claimed)]
                start += len(chunk)
                claimed.extend(await self._claim(chunk, fn))
            if len(hits) < body["size"]:
                break
            body["search_after"] = hits[-1]["sort"]
        return claimed

    async def _claim(self, hits: list[dict[str, Any]], fn: Mutation) -> list[FailedTask]:
        """Apply ``fn`` to each hit and write the results conditionally, in one bulk."""
        planned: list[tuple[FailedTask, _Doc]] = []
        entries: list[_Entry] = []
        for hit in hits:
            current = q.from_document(hit["_source"])
            try:
                new = fn(current)
            except DLQError:
                continue  # refused: the task stays due
            if new.task_id != current.task_id:
                raise ValueError(f"a mutation of {current.task_id!r} returned task {new.task_id!r}")
            doc = self._document(new)
            condition = {"if_seq_no": hit["_seq_no"], "if_primary_term": hit["_primary_term"]}
            entries.append(({"index": {"_id": hit["_id"], **condition}}, doc))
            planned.append((new, doc))
        if not entries:
            return []
        items = await self._write(entries, "claim_due")
        won: list[FailedTask | None] = [None] * len(planned)
        lost: list[int] = []
        failures: list[DLQError] = []
        for i, item in enumerate(items):
            if item["status"] in _OK:
                won[i] = planned[i][0]
                self._remember(next(iter(entries[i][0].values()))["_id"], planned[i][1], item)
            elif item["status"] == 409:
                lost.append(i)  # someone else changed it first … unless the write was ours
            else:
                failures.append(self._item_error(item, "claim_due"))
        if lost:
            ours = await self._written([entries[i] for i in lost])
            for i, mine in zip(lost, ours, strict=True):
                won[i] = planned[i][0] if mine else None
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
        return result

    async def next_due_at(self) -> datetime | None:
        _require_asyncio()
        await self._ensure_visible()
        body = {
            "query": {"exists": {"field": "due_us"}},
            "sort": q.DUE_SORT,
            "size": 1,
            "_source": False,
            "track_total_hits": False,
        }
        hits = await self._search(body, "next_due_at")
        return from_micros(hits[0]["sort"][0]) if hits else None

    # -- many records ------------------------------------------------------------

    async def query(
        self, flt: TaskFilter, *, limit: int, cursor: str | None = None
    ) -> TaskPage[FailedTask]:
        _require_asyncio()
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        body: dict[str, Any] = {
            "query": q.filter_query(flt),
            "sort": q.LISTING_SORT,
            "track_total_hits": False,
        }
        if cursor is not None:
            key, last_id = decode_cursor(cursor)
            body["search_after"] = [-key, last_id]
        await self._ensure_visible()
        hits: list[dict[str, Any]] = []
        while len(hits) <= limit:
            body["size"] = min(limit + 1 - len(hits), _MAX_PAGE)
            found = await self._search(body, "query")
            hits.extend(found)
            if len(found) < body["size"]:
                break
            body["search_after"] = found[-1]["sort"]
        more = len(hits) > limit
        hits = hits[:limit]
        next_cursor = encode_cursor(-hits[-1]["sort"][0], hits[-1]["sort"][1]) if more else None
        return TaskPage((q.from_document(hit["_source"]) for hit in hits), next_cursor)

    async def count(self, flt: TaskFilter | None = None) -> int:
        _require_asyncio()
        return await self._count(q.filter_query(flt), "count")

    async def open_count(self) -> int:
        _require_asyncio()
        return await self._count(q.OPEN_QUERY, "open_count")

    async def statistics(self, *, top_fingerprints: int = 5) -> StoreStatistics:
        _require_asyncio()
        await self._ensure_visible()
        with self._translated("statistics"):
            response = await self._client.search(
                index=self._index, body=q.statistics_body(top_fingerprints)
            )
        return q.read_statistics(response)

    async def purge(
        self, *, older_than: datetime | None, statuses: Collection[DeadLetterStatus]
    ) -> int:
        _require_asyncio()
        if not statuses:
            return 0
        # conditional deletes: a record changed since the search is re-judged, not purged
        query = q.purge_query(older_than, statuses)
        return await self._delete_matching(query, "purge", checked=True)

    async def clear(self) -> int:
        _require_asyncio()
        return await self._delete_matching({"match_all": {}}, "clear", checked=False)

    async def _delete_matching(self, query: dict[str, Any], action: str, *, checked: bool) -> int:
        """Delete what ``query`` matches, in bulk batches paged by ``task_id``."""
        self._known.clear()
        await self._ensure_visible()
        body: dict[str, Any] = {
            "query": query,
            "sort": [{"task_id": "asc"}],
            "size": self._batch_size,
            "_source": False,
            "seq_no_primary_term": checked,
            "track_total_hits": False,
        }
        deleted = 0
        while True:
            hits = await self._search(body, action)
            if not hits:
                return deleted
            entries: list[_Entry] = []
            for hit in hits:
                meta = {"_id": hit["_id"]}
                if checked:
                    meta.update(if_seq_no=hit["_seq_no"], if_primary_term=hit["_primary_term"])
                entries.append(({"delete": meta}, None))
            for item in await self._write(entries, action):
                if item["status"] in _OK:
                    deleted += 1
                elif item["status"] not in (404, 409):  # gone already / changed meanwhile
                    raise self._item_error(item, action)
            if len(hits) < self._batch_size:
                return deleted
            body["search_after"] = hits[-1]["sort"]

    # -- requests ------------------------------------------------------------------

    async def _read(self, doc_id: str) -> tuple[dict[str, Any] | None, tuple[int, int] | None]:
        """The document's source and (seq_no, primary_term), realtime; (None, None) if absent."""
        with self._translated("get"):
            try:
                found = await self._client.get(index=self._index, id=doc_id)
            except NotFoundError:
                return None, None
        return found["_source"], (found["_seq_no"], found["_primary_term"])

    async def _written(self, entries: list[_Entry]) -> list[bool]:
        """Whether each (conditional) write answered 409 was in fact applied: a
        transport retry of an applied write conflicts with itself."""
        doc_ids = [next(iter(action.values()))["_id"] for action, _ in entries]
        with self._translated("get"):
            found = await self._client.mget(index=self._index, body={"ids": doc_ids})
        return [
            bool(stored.get("found"))
            and doc is not None
            and stored["_source"].get("write_id") == doc.write_id
            for stored, (_, doc) in zip(found["docs"], entries, strict=True)
        ]

    async def _search(self, body: dict[str, Any], action: str) -> list[dict[str, Any]]:
        with self._translated(action):
            response = await self._client.search(index=self._index, body=body)
        hits: list[dict[str, Any]] = response["hits"]["hits"]
        return hits

    async def _count(self, query: dict[str, Any], action: str) -> int:
        await self._ensure_visible()
        with self._translated(action):
            response = await self._client.count(index=self._index, body={"query": query})
        return int(response["count"])

    async def _write(self, entries: list[_Entry], action: str) -> list[_Item]:
        """Send ``entries`` (in the next group commit); their bulk item results."""
        try:
            with self._translated(action):
                return await self._commit.submit(entries)
        finally:
            if self._refresh == "false":
                self._writes += 1  # even on error: the request may have been applied

    async def _send_bulk(self, body: str) -> list[_Item]:
        params = {"filter_path": _BULK_FILTER}
        if self._refresh != "false":
            params["refresh"] = self._refresh
        response = await self._client.bulk(body=body, index=self._index, params=params)
        return [next(iter(item.values())) for item in response["items"]]

    async def _ensure_visible(self) -> None:
        """Refresh the index if this store wrote since the last refresh."""
        wanted = self._writes
        if self._refreshed >= wanted:
            return
        async with self._refresh_lock:
            if self._refreshed >= wanted:
                return  # a refresh that started after our writes has finished meanwhile
            covered = self._writes
            with self._translated("refresh"):
                await self._client.indices.refresh(index=self._index)
            self._refreshed = max(self._refreshed, covered)

    # -- errors --------------------------------------------------------------------

    def _redact(self, text: str) -> str:
        if self._secret:
            text = text.replace(self._secret, _MASK)
        return _USERINFO.sub(_MASK + "@", text)

    def _failure(self, status: Any, kind: str, reason: str, action: str) -> DLQError:
        answer = ": ".join(part for part in (kind, reason) if part) or "no error details"
        detail = self._redact(f"{action} at {self.location}: HTTP {status} {answer}")
        if status == 400:
            return ConfigurationError(f"OpenSearch refused the request: {detail}")
        return StoreUnavailableError(_BACKEND, detail)

    def _item_error(self, item: _Item, action: str) -> DLQError:
        return self._failure(item.get("status"), *_error_info(item.get("error")), action)

    @contextmanager
    def _translated(self, action: str) -> Iterator[None]:
        """Turn opensearch-py's exceptions into the library's (the original as cause)."""
        try:
            yield
        except OpenSearchConnectionError as exc:  # includes timeouts and TLS failures
            reason = exc.error or (
                f"no answer within {self._timeout:g} s"
                if isinstance(exc, ConnectionTimeout)
                else ""
            )
            detail = f"{action} at {self.location}: {type(exc).__name__}: {reason or 'no details'}"
            if str(exc.info) not in detail:
                detail += f" ({exc.info})"
            detail = self._redact(detail)
            raise StoreUnavailableError(_BACKEND, detail) from exc
        except TransportError as exc:
            raise self._failure(exc.status_code, *_error_info(exc.info), action) from exc
