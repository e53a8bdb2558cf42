"""OpenSearchStore: the Store contract on one OpenSearch index, with core APIs only.

Mapping and ids
    :meth:`OpenSearchStore.open` puts a composable index template matching the
    index name exactly and creates the index, both with the strict mapping of
    :mod:`~mahavishnu_dlq.storage.opensearch_query` (which also describes the
    document layout). An index with a conflicting field is refused
    (``ConfigurationError``); one that lacks fields (an older mapping version,
    kept in ``_meta``) is upgraded in place. ``open(create=False)`` (read-only
    tools) writes nothing: a missing index is a
    :class:`~mahavishnu_dlq.errors.StoreNotFoundError`, never an empty queue. The
    document ``_id`` is the SHA-256 hex digest of the task id, so any id string is safe.

Compare-and-set
    :meth:`~OpenSearchStore.mutate` first tries an optimistic ``create`` of
    ``fn(None)`` (most enqueues are of new ids: this skips a read). When the
    record exists — or ``fn`` refuses a missing record — it reads the document in
    realtime (with its ``_seq_no``/``_primary_term``), computes the successor, and writes it only if
    nobody wrote in between (``if_seq_no``/``if_primary_term``, or ``create`` when
    there was no document). A 409 means another writer won: re-read, call the
    (pure) function again, up to ``conflict_retries`` times, then
    :class:`~mahavishnu_dlq.errors.TaskBusyError`. Every write carries a random
    ``write_id``, so a 409 that answers the transport's retry of a write that had
    in fact been applied is recognised as our own success. :meth:`~OpenSearchStore.mutate_many`
    does the same for many ids at once: one ``_mget`` and one conditional bulk write
    per chunk of ids (:mod:`~mahavishnu_dlq.storage.opensearch_batch`).

Writes
    Every write goes through ``_bulk`` in bounded, group-committed requests, and a
    node's HTTP 429 is back-pressure, retried with backoff (see
    :mod:`~mahavishnu_dlq.storage.opensearch_write`). The store remembers the
    version of its own last write per document (bounded), so a claim's finish
    needs no read. Mutations of one id inside this process are applied one after
    the other (a per-id lock), so 200 concurrent enqueues of one id are 200 merges
    and no conflict; the compare-and-set retry is left for other processes' writes.

Unreadable documents
    A document this version cannot decode (invalid Unicode, an unknown status or
    policy written by a newer version, a missing or wrong-typed field) never stops
    a read: listings and claims skip it, statistics count it as ``unreadable``
    (documents with unknown values, and those this process found undecodable),
    each id is logged once (``dlq.unreadable``), and a read of that very id
    (``get``, ``mutate``) raises :class:`~mahavishnu_dlq.errors.UnreadableRecordError`
    with the stored source.

Claims: see :mod:`~mahavishnu_dlq.storage.opensearch_claims`; listings, counts and
aggregations: :mod:`~mahavishnu_dlq.storage.opensearch_reads`. Bulk jobs and control
records: in indexes of their own, ``<index>-jobs`` and ``<index>-controls``
(:mod:`~mahavishnu_dlq.storage.opensearch_jobs`, :mod:`~.opensearch_controls`).

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

Errors and the client: :mod:`~mahavishnu_dlq.storage.opensearch_client`
(asyncio only; the password never appears in messages or reprs).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from opensearchpy import AsyncOpenSearch
from pydantic import SecretStr

from mahavishnu_dlq.errors import ConfigurationError, StoreUnavailableError, TaskBusyError
from mahavishnu_dlq.limits import require_str
from mahavishnu_dlq.models import (
    DeadLetterStatus,
    FailedTask,
)
from mahavishnu_dlq.printable import library_logger
from mahavishnu_dlq.storage import opensearch_query as q
from mahavishnu_dlq.storage.base import (
    KeyedLock,
    Mutation,
    UnreadableRecords,
)
from mahavishnu_dlq.storage.opensearch_batch import BatchMutations
from mahavishnu_dlq.storage.opensearch_claims import Claims
from mahavishnu_dlq.storage.opensearch_client import Connection, refusal, require_asyncio
from mahavishnu_dlq.storage.opensearch_controls import OpenSearchControlStore
from mahavishnu_dlq.storage.opensearch_jobs import OpenSearchJobStore
from mahavishnu_dlq.storage.opensearch_missing import missing_index
from mahavishnu_dlq.storage.opensearch_reads import MAX_PAGE, OpenSearchReads
from mahavishnu_dlq.storage.opensearch_write import BulkWriter, Entry, LastWrites

if TYPE_CHECKING:
    from mahavishnu_dlq.settings import OpenSearchSettings

__all__ = ["OpenSearchStore"]

_log = library_logger(__name__)

Refresh = Literal["false", "wait_for", "true"]

_OK = frozenset({200, 201})
_KNOWN_LIMIT = 4096  # documents whose last write (ours) we remember, for reads we can skip
_UNREADABLE_KEPT = 1000  # undecodable document ids remembered (claims skip them)


def _raw(source: Any) -> str:
    """A stored source as JSON text, for an operator to read."""
    try:
        return json.dumps(source, ensure_ascii=False, sort_keys=True)
    except (TypeError, ValueError):
        return repr(source)


class OpenSearchStore(OpenSearchReads):
    """Failed tasks in an OpenSearch index, shared safely by any number of processes.

    Its reads of many records — listings, counts, statistics, the console's
    aggregations — are :class:`~mahavishnu_dlq.storage.opensearch_reads.OpenSearchReads`'."""

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
        client_cert: str | None = None,
        client_key: str | None = None,
        timeout: float = 10.0,
        refresh: Refresh = "false",
        client: AsyncOpenSearch | None = None,
        conflict_retries: int = 20,
        batch_size: int = 1000,
        max_in_flight: int = 4,
        bulk_max_bytes: int = 8_388_608,
        backpressure_seconds: float = 30.0,
        number_of_shards: int = 1,
        number_of_replicas: int | None = None,
    ) -> None:
        """``client``, when given, is used instead of one built from the connection
        arguments, and is left open by :meth:`close` (its owner closes it).

        ``number_of_shards`` and ``number_of_replicas`` shape the index this store
        creates (and its template); None replicas: one once a second node is there."""
        if refresh not in ("false", "wait_for", "true"):
            raise ConfigurationError(
                f"refresh must be one of: false, wait_for, true; got {refresh!r}",
                field="opensearch.refresh",
            )
        self._conn = Connection(
            hosts,
            index=index,
            username=username,
            password=password,
            verify_certs=verify_certs,
            ca_certs=ca_certs,
            client_cert=client_cert,
            client_key=client_key,
            timeout=timeout,
            client=client,
        )
        self._shards, self._replicas = number_of_shards, number_of_replicas
        self._client = self._conn.client
        self._translated = self._conn.translated
        self._item_error = self._conn.item_error
        self._index = index
        self._template = f"mahavishnu-dlq-{index}"
        self._refresh = refresh
        self._conflict_retries = max(1, conflict_retries)
        self._batch_size = max(1, min(batch_size, MAX_PAGE))
        self._writer = BulkWriter(
            self._client,
            index,
            refresh=refresh,
            translated=self._translated,
            max_items=self._batch_size,
            max_bytes=bulk_max_bytes,
            max_in_flight=max_in_flight,
            backpressure_seconds=backpressure_seconds,
        )
        self._refreshed = 0  # bulk requests known to be searchable (see _ensure_visible)
        self._refresh_lock = asyncio.Lock()
        # our own last write per document: a mutation of a record this process just
        # wrote (a claim, then its finish) starts from it instead of a read
        self._known = LastWrites(_KNOWN_LIMIT)
        self._ids = KeyedLock()  # one mutation of an id at a time in this process
        # documents a read here found undecodable (claims skip them)
        self._unreadable = UnreadableRecords(
            f"opensearch index {index!r}",
            q.from_document,
            reason=q.unreadable_reason,
            raw=_raw,
            kept=_UNREADABLE_KEPT,
        )
        self._batch = BatchMutations(
            self._writer,
            self._conn.read_many,
            self._known,
            self._unreadable,
            self._ids,
            self._item_error,
            self._conflict_retries,
            chunk_ids=self._batch_size,
        )
        #: the bulk jobs, in the index ``<index>-jobs`` (:mod:`.opensearch_jobs`)
        self.jobs = OpenSearchJobStore(
            self._conn, index, conflict_retries=conflict_retries, replicas=number_of_replicas
        )
        #: breakers and rate limits, in ``<index>-controls`` (:mod:`.opensearch_controls`)
        self.controls = OpenSearchControlStore(
            self._conn, index, conflict_retries=conflict_retries, replicas=number_of_replicas
        )
        self._claims = Claims(
            self._writer,
            self._search,
            self._ensure_visible,
            self._known,
            self._unreadable,
            self._item_error,
        )

    @property
    def backpressure_at(self) -> float | None:
        """``time.monotonic()`` of the node's last HTTP 429, or None: a failover store
        does not count a slow answer as a failure while the node pushes back."""
        return self._writer.backpressure_at

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
            client_cert=s.client_cert,
            client_key=s.client_key,
            timeout=s.timeout_seconds,
            refresh=s.refresh,
            bulk_max_bytes=s.bulk_max_bytes,
            backpressure_seconds=s.backpressure_seconds,
            number_of_shards=s.number_of_shards,
            number_of_replicas=s.number_of_replicas,
        )

    def __repr__(self) -> str:
        return f"OpenSearchStore(hosts={self._conn.shown_hosts()!r}, index={self._index!r})"

    @property
    def location(self) -> str:
        """The hosts (credentials masked) and index, as error messages name them."""
        return self._conn.location

    # -- lifecycle -------------------------------------------------------------

    async def open(self, *, create: bool = True) -> None:
        """Put the template, create the index and its jobs and controls indexes, and
        check (or complete) their mappings.

        ``create=False`` opens for reading and writes nothing: the index must exist
        (else :class:`~mahavishnu_dlq.errors.StoreNotFoundError` naming it, the cluster
        and a near-miss name: :mod:`~.opensearch_missing`), a conflicting mapping is
        refused as always, and one lacking fields is only reported (a writing open
        completes it). Missing jobs and controls indexes read as empty and are made
        by their first write."""
        require_asyncio()
        if not create:
            await self._open_existing()
            return
        indices = self._client.indices
        with self._translated("open"):
            template = q.template_body(self._index, shards=self._shards, replicas=self._replicas)
            await indices.put_index_template(name=self._template, body=template)
            made = await indices.create(  # an index that exists (400) is no failure
                index=self._index,
                body=q.index_body(shards=self._shards, replicas=self._replicas),
                ignore=(400,),
            )
            self._conn.created(made, "open")
            found = await indices.get_mapping(index=self._index)
            for name, entry in found.items():
                conflicts, update = q.mapping_problems(entry.get("mappings") or {})
                if conflicts:
                    raise self._unusable_mapping(name, conflicts)
                if update:
                    await indices.put_mapping(index=name, body=q.update_body())
        await self.jobs.ensure()
        await self.controls.ensure()

    async def _open_existing(self) -> None:
        """:meth:`open` for reading: check the index and its mapping, change nothing."""
        with self._translated("open"):
            found = await self._client.indices.get_mapping(index=self._index, ignore=(404,))
        if refusal(found) is not None:
            raise await missing_index(self._conn, self._index)
        for name, entry in found.items():
            conflicts, update = q.mapping_problems(entry.get("mappings") or {})
            if conflicts:
                raise self._unusable_mapping(name, conflicts)
            if update:
                _log.warning(
                    "dlq.store.open: OpenSearch index %r lacks fields of this version's "
                    "mapping; reading goes on, and the next writing open (the processor, "
                    "an enqueue) adds them",
                    name,
                    extra={"action": "dlq.store.open", "index": name},
                )

    def _unusable_mapping(self, name: str, conflicts: list[str]) -> ConfigurationError:
        return ConfigurationError(
            f"OpenSearch index {name!r} has a mapping mahavishnu-dlq cannot use: "
            + "; ".join(conflicts)
            + ". Use another index (opensearch.index) or reindex this one.",
            field="opensearch.index",
        )

    async def close(self) -> None:
        require_asyncio()
        await self._writer.flush()
        try:
            await self._ensure_visible()
        except StoreUnavailableError as exc:  # the writes are durable; only a refresh is late
            _log.debug("dlq.store.close: refresh skipped: %s", exc)
        await self._conn.close()

    async def drop(self) -> None:
        """Delete the index, the jobs and controls indexes and their templates (tests,
        decommissioning). Not undoable."""
        require_asyncio()
        self._known.clear()
        self._unreadable.forget()
        with self._translated("drop"):
            await self._client.indices.delete(index=self._index, ignore=(404,))
            await self._client.indices.delete_index_template(name=self._template, ignore=(404,))
        await self.jobs.drop()
        await self.controls.drop()

    # -- single records --------------------------------------------------------

    async def get(self, task_id: str) -> FailedTask | None:
        require_asyncio()
        task_id = require_str(task_id, "task_id")
        doc_id = q.doc_id(task_id)
        source, _ = await self._conn.read(doc_id)
        return self._current(task_id, doc_id, source)

    async def mutate(self, task_id: str, fn: Mutation) -> FailedTask:
        require_asyncio()
        task_id = require_str(task_id, "task_id")
        doc_id = q.doc_id(task_id)
        async with self._ids.hold(doc_id):
            return await self._mutate(task_id, doc_id, fn)

    async def _mutate(self, task_id: str, doc_id: str, fn: Mutation) -> FailedTask:
        known = self._known.take(doc_id)
        record: FailedTask | None = None  # our last write, decoded: no parsing needed
        if known is None:
            created = await self._create_if_absent(task_id, doc_id, fn)
            if created is not None:
                return created
            source, version = await self._conn.read(doc_id)
        else:
            record, version = known[0].record, known[1]
            source = None if record is not None else json.loads(known[0].text)
        cached = known is not None
        for _ in range(self._conflict_retries):
            current = record if record is not None else self._current(task_id, doc_id, source)
            record = None
            try:
                new = fn(current)
            except Exception:
                if not cached:
                    raise
                cached = False  # judged on our last write: ask the index before refusing
                source, version = await self._conn.read(doc_id)
                new = fn(self._current(task_id, doc_id, source))
            cached = False
            if new.task_id != task_id:
                raise ValueError(f"a mutation of {task_id!r} returned task {new.task_id!r}")
            doc = self._writer.document(new)
            meta: dict[str, Any] = {"_id": doc_id}
            if version is None:
                action = {"create": meta}
            else:
                action = {"index": {**meta, "if_seq_no": version[0], "if_primary_term": version[1]}}
            [item] = await self._writer.write([(action, doc)], "mutate")
            if item["status"] in _OK:
                self._known.remember(doc_id, doc, item)
                return new
            if item["status"] != 409:
                raise self._item_error(item, "mutate")
            source, version = await self._conn.read(doc_id)
            if source is not None and source.get("write_id") == doc.write_id:
                return new  # our write was applied; the 409 answered the transport's retry
        raise TaskBusyError(
            task_id, reason=f"{self._conflict_retries} concurrent updates won the race; try again"
        )

    def _current(self, task_id: str, doc_id: str, source: Any) -> FailedTask | None:
        return None if source is None else self._unreadable.read_or_raise(task_id, doc_id, source)

    async def mutate_many(
        self, items: Sequence[tuple[str, Mutation]]
    ) -> list[FailedTask | Exception]:
        """Each item as :meth:`mutate`, in bulk: one realtime ``_mget`` and one
        conditional bulk write per chunk of ids, 409s read and written again (see
        :mod:`~mahavishnu_dlq.storage.opensearch_batch`)."""
        require_asyncio()
        return await self._batch(items)

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
        doc = self._writer.document(new)
        [item] = await self._writer.write([({"create": {"_id": doc_id}}, doc)], "mutate")
        if item["status"] in _OK:
            self._known.remember(doc_id, doc, item)
            return new
        if item["status"] == 409:
            source, _ = await self._conn.read(doc_id)
            if source is not None and source.get("write_id") == doc.write_id:
                return new  # our create was applied; the 409 answered the transport's retry
            return None
        raise self._item_error(item, "mutate")

    async def delete(self, task_id: str) -> bool:
        require_asyncio()
        doc_id = q.doc_id(require_str(task_id, "task_id"))
        self._known.take(doc_id)
        self._unreadable.forget(doc_id)
        [item] = await self._writer.write([({"delete": {"_id": doc_id}}, None)], "delete")
        if item["status"] == 404:
            return False
        if item["status"] not in _OK:
            raise self._item_error(item, "delete")
        return True

    # -- the processor's view ----------------------------------------------------

    async def claim_due(
        self, now: datetime, limit: int, fn: Mutation, *, skip_workflows: Collection[str] = ()
    ) -> list[FailedTask]:
        """Searched due tasks claimed by conditional bulk writes (see
        :mod:`~mahavishnu_dlq.storage.opensearch_claims`)."""
        require_asyncio()
        return await self._claims.claim_due(now, limit, fn, skip_workflows=skip_workflows)

    async def next_due_at(self) -> datetime | None:
        require_asyncio()
        return await self._claims.next_due_at()

    # -- many records (the reads are OpenSearchReads') ---------------------------------

    async def purge(
        self, *, older_than: datetime | None, statuses: Collection[DeadLetterStatus]
    ) -> int:
        require_asyncio()
        if not statuses:
            return 0
        # conditional deletes: a record changed since the search is re-judged, not purged
        query = q.purge_query(older_than, statuses)
        return await self._delete_matching(query, "purge", checked=True)

    async def clear(self) -> int:
        require_asyncio()
        self._unreadable.forget()
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
            entries: list[Entry] = []
            for hit in hits:
                meta = {"_id": hit["_id"]}
                if checked:
                    meta.update(if_seq_no=hit["_seq_no"], if_primary_term=hit["_primary_term"])
                entries.append(({"delete": meta}, None))
            for item in await self._writer.write(entries, action):
                if item["status"] in _OK:
                    deleted += 1
                elif item["status"] not in (404, 409):  # gone already / changed meanwhile
                    raise self._item_error(item, action)
            if len(hits) < self._batch_size:
                return deleted
            body["search_after"] = hits[-1]["sort"]

    # -- requests ------------------------------------------------------------------

    async def _search(self, body: dict[str, Any], action: str) -> list[dict[str, Any]]:
        with self._translated(action):
            response = await self._client.search(index=self._index, body=body)
        hits: list[dict[str, Any]] = response["hits"]["hits"]
        return hits

    def _written(self) -> int:
        """Bulk requests sent that may not be searchable yet (none when writes refresh)."""
        return self._writer.writes if self._refresh == "false" else 0

    async def _ensure_visible(self) -> None:
        """Refresh the index if this store wrote since the last refresh (a failed
        request counts too: it may have been applied)."""
        wanted = self._written()
        if self._refreshed >= wanted:
            return
        async with self._refresh_lock:
            if self._refreshed >= wanted:
                return  # a refresh that started after our writes has finished meanwhile
            covered = self._written()
            with self._translated("refresh"):
                await self._client.indices.refresh(index=self._index)
            self._refreshed = max(self._refreshed, covered)
