"""The control records of an OpenSearch store: an index of their own, ``<index>-controls``.

Control records (a circuit breaker, a token bucket per workflow) are few and small, but
a processor changes one at every attempt outcome, so a change must cost as little as
possible: in the common case one request.

Layout
    ``dynamic: strict``, one shard: ``key`` (a keyword: listings go by prefix, in key
    order), ``doc``, the record itself (an object stored but never indexed, so any JSON
    object fits), and ``write_id``, unique per write (neither indexed nor searchable).
    The document ``_id`` is the SHA-256 of the key, as for tasks, so any key string is
    safe. :meth:`OpenSearchControlStore.ensure` puts a template for the index (so one
    re-created by a write is strict too) and creates it — at the store's ``open()``, or
    at the first write when the store was opened for reading (until then a read finds
    no records); :meth:`~OpenSearchControlStore.drop` deletes both.

Compare-and-set
    :meth:`~OpenSearchControlStore.mutate` computes the successor of the record and
    writes it only if nobody wrote in between (``if_seq_no``/``if_primary_term``, or
    ``create`` when there was no record). The record it starts from is the store's own
    last write of that key when it remembers one (a bounded cache), otherwise a realtime
    read: so the usual change — this process changed the record last — is one
    conditional write. A 409 means another process wrote meanwhile (or the record is
    gone): the record is read and ``fn`` applied again, up to ``conflict_retries`` times,
    then :class:`~mahavishnu_dlq.storage.stored_controls.ControlBusyError`. When ``fn``
    refuses the remembered record, the index is asked before the refusal stands. Every
    write carries a random ``write_id``, so a 409 answering the transport's retry of a
    write that had in fact been applied is recognised as our own success, and ``fn`` is
    not applied twice. Mutations of one key inside a process wait for each other (a
    per-key lock), so they do not conflict at all.

Visibility
    Writes do not refresh the index (a refresh per change would double its cost);
    :meth:`~OpenSearchControlStore.get` is realtime, and
    :meth:`~OpenSearchControlStore.list` refreshes this small index first, so every
    read sees every acknowledged write, of any process. A listing is a prefix query
    sorted by key; a prefix too long for one (see :data:`_PREFIX_QUERY_BYTES`) lists
    from the keys after the prefix less its last character instead, skipping those
    before the prefix.

Errors are the store's (:class:`~mahavishnu_dlq.storage.opensearch_client.Connection`):
an unreachable node is a :class:`~mahavishnu_dlq.errors.StoreUnavailableError`.
"""

from __future__ import annotations

import builtins
import copy
import uuid
from collections import OrderedDict
from typing import Any

from opensearchpy import ConflictError

from mahavishnu_dlq.storage.base import ControlMutation, KeyedLock
from mahavishnu_dlq.storage.memory_jobs import check_control
from mahavishnu_dlq.storage.opensearch_client import Connection, refusal, require_asyncio
from mahavishnu_dlq.storage.opensearch_query import doc_id
from mahavishnu_dlq.storage.opensearch_side import Ensured, SideIndex
from mahavishnu_dlq.storage.stored_controls import ControlBusyError, control_key, read_control

__all__ = ["CONTROLS_MAPPING_VERSION", "OpenSearchControlStore", "controls_index"]

#: Kept in the controls index's ``_meta``; versions only ever add fields.
CONTROLS_MAPPING_VERSION = 1

_PAGE = 1000  # hits a listing reads at a time
_HOLDS = "circuit breakers and rate limits"
#: Longest prefix (UTF-8 bytes) a listing sends as a prefix query: Lucene refuses the
#: automaton of one of 1,000 bytes or more ("input automaton is too large"), as it
#: does a range query's.
_PREFIX_QUERY_BYTES = 256
_KEPT = 4096  # keys whose last write (ours) is remembered
_PROPERTIES: dict[str, dict[str, Any]] = {
    "key": {"type": "keyword"},
    "write_id": {"type": "keyword", "index": False, "doc_values": False},
    "doc": {"type": "object", "enabled": False},  # stored in _source, never indexed
}

#: A record and its ``(seq_no, primary_term)``; ``(None, None)`` when there is none.
_Versioned = tuple[dict[str, Any] | None, tuple[int, int] | None]


def controls_index(index: str) -> str:
    """The index holding the control records of the tasks index ``index``."""
    return f"{index}-controls"


class OpenSearchControlStore:
    """The :class:`~mahavishnu_dlq.storage.base.ControlStore` of an OpenSearch store (see
    the module); ``conn`` is the store's connection, ``index`` its tasks index."""

    def __init__(
        self,
        conn: Connection,
        index: str,
        *,
        conflict_retries: int = 20,
        kept: int = _KEPT,
        replicas: int | None = None,
    ) -> None:
        self._conn = conn
        self._client = conn.client
        self._translated = conn.translated
        self._side = SideIndex(
            index,
            "controls",
            _PROPERTIES,
            CONTROLS_MAPPING_VERSION,
            "circuit breakers and rate limits",
            replicas,
        )
        self.index = self._side.name
        #: how the index is made: its mapping, template and the check of an existing one
        self.side = self._side
        self._made = Ensured(self._side, conn)
        self._conflict_retries = max(1, conflict_retries)
        self._keys = KeyedLock()
        self._kept = max(0, kept)
        # our own last write per key: the next change of that key starts from it
        self._last: OrderedDict[str, tuple[dict[str, Any], tuple[int, int]]] = OrderedDict()

    def __repr__(self) -> str:
        return f"OpenSearchControlStore(index={self.index!r})"

    def _where(self) -> str:
        return f"opensearch index {self.index!r}"

    # -- the index ---------------------------------------------------------------------

    async def ensure(self) -> None:
        """Put the template and create the index (idempotent); an existing index that
        maps a field otherwise is refused (``ConfigurationError``), one that lacks a
        field is completed in place (:class:`~.opensearch_side.SideIndex`)."""
        await self._made.ensure()

    async def drop(self) -> None:
        """Delete the index and its template (with the store's :meth:`drop`)."""
        self._last.clear()
        await self._made.drop()

    # -- reads and writes ----------------------------------------------------------------

    async def _read(self, key: str) -> tuple[dict[str, Any] | None, tuple[int, int] | None, Any]:
        """The record (realtime), its ``(seq_no, primary_term)`` and its ``write_id``."""
        with self._translated("get control"):
            # 404: no such record, or no controls index yet (an answer: not logged)
            found = await self._client.get(index=self.index, id=doc_id(key), ignore=(404,))
        if refusal(found) is not None or not found.get("found"):
            return None, None, None
        source = found.get("_source")
        if not isinstance(source, dict):
            source = {"doc": source}
        stored, misplaced = source.get("doc"), None
        if source.get("key") != key:  # written by hand: a change would move it
            stored = source  # shown whole
            misplaced = f"the stored record is kept as {source.get('key')!r}, not {key!r}"
        record = read_control(self._where(), key, stored, strict=True, misplaced=misplaced)
        return record, (found["_seq_no"], found["_primary_term"]), source.get("write_id")

    async def _write(
        self, key: str, new: dict[str, Any], version: tuple[int, int] | None, write_id: str
    ) -> tuple[int, int] | None:
        """Write ``new`` if the stored version is still ``version`` (absent: None); its
        new version, or None when another write came first (a 409)."""
        body = {"key": key, "write_id": write_id, "doc": new}
        await self._made.before_write()  # a store opened for reading makes it now
        with self._translated("mutate control"):
            try:  # a 409 (another write came first) is an answer: not logged
                if version is None:
                    done = await self._client.create(
                        index=self.index, id=doc_id(key), body=body, ignore=(409,)
                    )
                else:
                    done = await self._client.index(
                        index=self.index,
                        id=doc_id(key),
                        body=body,
                        if_seq_no=version[0],
                        if_primary_term=version[1],
                        ignore=(409,),
                    )
            except ConflictError:  # a client wrapped to raise it all the same
                return None
        if refusal(done) is not None:
            return None
        return done["_seq_no"], done["_primary_term"]

    def _remember(self, key: str, record: dict[str, Any], version: tuple[int, int]) -> None:
        if self._kept == 0:
            return
        self._last[key] = (record, version)
        self._last.move_to_end(key)
        if len(self._last) > self._kept:
            self._last.popitem(last=False)

    # -- the ControlStore protocol -------------------------------------------------------

    async def get(self, key: str) -> dict[str, Any] | None:
        require_asyncio()
        record, _, _ = await self._read(control_key(key))
        return record

    async def mutate(self, key: str, fn: ControlMutation) -> dict[str, Any]:
        require_asyncio()
        key = control_key(key)
        async with self._keys.hold(key):
            # taken, not peeked: whatever happens now, the next change reads anew
            # unless this one writes (a failure may or may not have been applied)
            last = self._last.pop(key, None)
            remembered = last is not None
            if last is None:
                current, version, _ = await self._read(key)
            else:
                current, version = last
            for _ in range(self._conflict_retries):
                try:
                    new = check_control(key, fn(current))
                except Exception:
                    if not remembered:
                        raise
                    # judged on our last write: ask the index before the refusal stands
                    remembered = False
                    current, version, _ = await self._read(key)
                    new = check_control(key, fn(current))
                remembered = False
                write_id = uuid.uuid4().hex
                written = await self._write(key, new, version, write_id)
                if written is None:  # another process wrote meanwhile, or deleted it
                    current, version, stored_id = await self._read(key)
                    if stored_id != write_id:
                        continue  # ``fn`` again, on what is stored now
                    assert version is not None  # noqa: S101 - a stored record has a version
                    written = version  # ours: the 409 answered the transport's retry
                self._remember(key, new, written)
                return copy.deepcopy(new)  # the remembered one is not the caller's
        raise ControlBusyError(key, self._conflict_retries)

    async def _refreshed(self) -> bool:
        """Make every acknowledged write searchable (writes do not refresh); False when
        there is no controls index yet (no records). A read-only user may not refresh:
        it reads what is searchable already (at most the refresh interval old)."""
        with self._translated("list controls"):
            # no index (404) and no right to refresh (403) are answers: not logged
            refreshed = await self._client.indices.refresh(index=self.index, ignore=(403, 404))
        return refusal(refreshed) != 404

    async def list(self, prefix: str) -> builtins.list[tuple[str, dict[str, Any]]]:
        require_asyncio()
        prefix = control_key(prefix, "prefix")
        body: dict[str, Any] = {
            "query": {"match_all": {}},
            "sort": [{"key": "asc"}],  # UTF-8 byte order: Python's order of strings
            "size": _PAGE,
            "_source": ["key", "doc"],
            "track_total_hits": False,
        }
        if len(prefix.encode("utf-8")) <= _PREFIX_QUERY_BYTES:
            if prefix:
                body["query"] = {"prefix": {"key": prefix}}
        else:  # too long for a prefix query: from the keys after all but its last character
            body["search_after"] = [prefix[:-1]]
        found: builtins.list[tuple[str, dict[str, Any]]] = []
        if not await self._refreshed():
            return found
        while True:
            with self._translated("list controls"):
                # no controls index (404): no records
                response = await self._client.search(index=self.index, body=body, ignore=(404,))
            if refusal(response) is not None:
                return found
            hits = response["hits"]["hits"]
            for hit in hits:
                source = hit.get("_source") or {}
                key = source.get("key")
                if not isinstance(key, str) or not key.startswith(prefix):
                    if isinstance(key, str) and key > prefix:
                        return found  # past the keys with the prefix
                    continue  # before them, or not a document of ours
                misplaced = None
                if hit["_id"] != doc_id(key):  # written by hand: its key would not find it
                    misplaced = "the stored record is not under the document id of its key"
                record = read_control(
                    self._where(), key, source.get("doc"), strict=False, misplaced=misplaced
                )
                if record is not None:  # unreadable: skipped
                    found.append((key, record))
            if len(hits) < _PAGE:
                return found
            body["search_after"] = hits[-1]["sort"]

    async def delete(self, key: str) -> bool:
        require_asyncio()
        key = control_key(key)
        async with self._keys.hold(key):
            self._last.pop(key, None)
            with self._translated("delete control"):
                # 404: no such record, or no controls index (an answer: not logged)
                deleted = await self._client.delete(index=self.index, id=doc_id(key), ignore=(404,))
        return refusal(deleted) is None and deleted.get("result") != "not_found"
