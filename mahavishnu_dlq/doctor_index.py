"""The doctor's checks of the index itself (:mod:`mahavishnu_dlq.doctor_opensearch`
runs them once a node answers), and the requests every OpenSearch check makes.

- ``index``: it exists — else the sentence a read-only open raises, with the
  near-miss name (:mod:`~.storage.opensearch_missing`); ``mapping``: compatible with
  this version's; ``template``: there; ``jobs index`` and ``controls index``: there
  and compatible (a missing one is only a warning: its first write makes it).
- Permissions, probed without writing: ``read`` (a count of the index) and ``write``
  (a ``_bulk`` update with an empty partial document and no upsert of
  :data:`PROBE_ID`, an id no task has: a user allowed to write gets 404
  ``document_missing_exception`` and nothing is written, one who may not gets 403).
  The update is not sent to a missing index: OpenSearch would create it.
- ``refresh interval``: how late a processor sees the tasks other processes enqueue;
  ``replicas``: against the data nodes (an index that cannot be green, or a single
  copy of the queue on a cluster of several nodes).

:class:`IndexChecks` asks through the store's own client
(:class:`~.storage.opensearch_client.Connection`): an HTTP answer of any status is
looked at, no answer at all is the store's error; every reason shown is redacted.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from opensearchpy import ConnectionError as OpenSearchConnectionError
from opensearchpy import TransportError

from mahavishnu_dlq.doctor import Check
from mahavishnu_dlq.storage import opensearch_query as q
from mahavishnu_dlq.storage.opensearch_client import Connection, error_info, refusal
from mahavishnu_dlq.storage.opensearch_controls import OpenSearchControlStore
from mahavishnu_dlq.storage.opensearch_jobs import OpenSearchJobStore
from mahavishnu_dlq.storage.opensearch_missing import (
    missing_index_detail,
    near_miss,
    visible_indexes,
)

__all__ = ["PROBE_ID", "Answer", "IndexChecks", "seconds_of"]

#: The document id the write probe updates: no task's (those are SHA-256 hex digests).
PROBE_ID = "__mahavishnu_dlq_doctor_probe__"
_SLOW_REFRESH = 30.0  # seconds of refresh interval past which the processor lags visibly
_UNITS = {"nanos": 1e-9, "micros": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

Answer = tuple[int, Any]  # HTTP status (0: none) and the decoded body


def seconds_of(value: str) -> float | None:
    """An OpenSearch time value (``500ms``, ``1s``, ``2m``) in seconds; None for ``-1``
    (never) or what is no time value."""
    found = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-z]+)\s*", value)
    if found is None or found.group(2) not in _UNITS:
        return None
    return float(found.group(1)) * _UNITS[found.group(2)]


class IndexChecks:
    """The index checks of one configuration, and the requests they make (see the
    module); the connection checks fill in ``conn``, ``cluster`` and ``data_nodes``."""

    def __init__(self, index: str) -> None:
        self.index = index
        self.conn: Connection | None = None
        self.cluster: str | None = None  # the cluster's name, from its health
        self.data_nodes: int | None = None
        self.mappings: dict[str, Any] = {}  # the index's, by concrete index name
        self.no_index = "the index was not looked at"  # empty once it was read
        self.settings: dict[str, Any] | None = None  # the index's (flat, defaults included)

    def redact(self, text: str) -> str:
        return text if self.conn is None else self.conn.redact(text)

    # -- requests --------------------------------------------------------------------------

    async def _get(self, action: str, path: str, *, params: Any = None) -> Answer:
        """A ``GET`` of ``path`` through the store's client (see :meth:`_ask`). A 400 or
        404 (no such index or template, no security plugin) is a finding, not a fault:
        asked for with ``ignore=``, so opensearch-py logs no WARNING for it, and read
        from the error body the client returns instead."""
        status, body = await self._ask(
            action,
            lambda client: client.transport.perform_request(
                "GET", path, params=params, ignore=(400, 404)
            ),
        )
        refused = refusal(body)
        return (status, body) if refused is None else (refused, body)

    async def _ask(self, action: str, call: Callable[[Any], Awaitable[Any]]) -> Answer:
        """``call(client)`` with the store's client: the status and body of any HTTP
        answer; no answer at all is the store's error (unavailable, TLS)."""
        assert self.conn is not None  # noqa: S101 - steps run only once it is made
        try:
            answer = await call(self.conn.client)
        except OpenSearchConnectionError as exc:
            with self.conn.translated(action):
                raise exc from None
        except TransportError as exc:
            status = exc.status_code if isinstance(exc.status_code, int) else 0
            return status, exc.info
        return 200, answer

    def _reason(self, body: Any) -> str:
        kind, reason = error_info(body)
        text = ": ".join(part for part in (kind, reason) if part) or "no details"
        return self.redact(text)[:300]

    # -- the index ----------------------------------------------------------------------

    async def _index(self) -> Check:
        status, body = await self._get("index", f"/{self.index}/_mapping")
        if status == 404:
            hosts = ", ".join(self.conn.shown_hosts()) if self.conn else ""
            guess = near_miss(self.index, await visible_indexes(self.conn)) if self.conn else None
            self.no_index = "the index does not exist"
            return Check(
                "index", "fail", missing_index_detail(self.index, self.cluster, hosts, guess)
            )
        if status != 200 or not isinstance(body, dict):
            self.no_index = "the index could not be read"
            return Check(
                "index",
                "fail",
                f"{self.index!r} could not be read: HTTP {status} {self._reason(body)}",
                "give the DLQ's role read access to the index (see docs/opensearch.md)",
            )
        self.mappings = body
        self.no_index = ""
        names = ", ".join(repr(name) for name in body)
        shown = names if names == repr(self.index) else f"{self.index!r} ({names})"
        return Check("index", "ok", f"{shown} exists")

    def _needs_index(self, name: str) -> Check | None:
        if self.no_index:
            return Check(name, "skip", f"not checked: {self.no_index}")
        return None

    async def _mapping(self) -> Check:
        if (skipped := self._needs_index("mapping")) is not None:
            return skipped
        problems: list[str] = []
        outdated = False
        for entry in self.mappings.values():
            mappings = entry.get("mappings") or {}
            conflicts, update = q.mapping_problems(mappings)
            problems += conflicts
            outdated = outdated or update
        if problems:
            return Check(
                "mapping",
                "fail",
                "conflicts with this version's: " + "; ".join(problems),
                "use another index (opensearch.index) or reindex this one",
            )
        if outdated:
            return Check(
                "mapping",
                "warn",
                f"lacks fields of this version's (mapping version {q.MAPPING_VERSION}): reading "
                "works, and the next writing command adds them",
                "run the processor (or any writing command) once",
            )
        return Check("mapping", "ok", f"compatible (mapping version {q.MAPPING_VERSION})")

    async def _template(self) -> Check:
        name = f"mahavishnu-dlq-{self.index}"
        status, body = await self._get("template", f"/_index_template/{name}")
        if status == 200:
            return Check("template", "ok", f"{name!r} is there")
        if status == 404:
            return Check(
                "template",
                "warn",
                f"{name!r} is missing: an index re-created by a write would not get the "
                "strict mapping",
                "run the processor (or any writing command) once: it puts the template",
            )
        return Check(
            "template",
            "fail",
            f"{name!r} could not be read: HTTP {status} {self._reason(body)}",
            "give the DLQ's role the index template permissions (see docs/opensearch.md)",
        )

    async def _side(self, suffix: str) -> Check:
        assert self.conn is not None  # noqa: S101 - steps run only once it is made
        made = (
            OpenSearchJobStore(self.conn, self.index)
            if suffix == "jobs"
            else OpenSearchControlStore(self.conn, self.index)
        )
        side, name = made.side, f"{suffix} index"
        status, body = await self._get(name, f"/{side.name}/_mapping")
        if status == 404:
            return Check(
                name,
                "warn",
                f"{side.name!r} does not exist yet: it is created on the first write of "
                f"{side.holds}",
            )
        if status != 200 or not isinstance(body, dict):
            return Check(
                name,
                "fail",
                f"{side.name!r} could not be read: HTTP {status} {self._reason(body)}",
                "give the DLQ's role the same permissions on it as on the tasks index",
            )
        conflicts = [
            problem
            for entry in body.values()
            for problem in side.conflicts(entry.get("mappings") or {})[0]
        ]
        if conflicts:
            return Check(
                name,
                "fail",
                f"{side.name!r} has a mapping mahavishnu-dlq cannot use: " + "; ".join(conflicts),
                f"delete it (it holds {side.holds} only) or use another opensearch.index",
            )
        return Check(name, "ok", f"{side.name!r} exists")

    async def _read(self) -> Check:
        if (skipped := self._needs_index("read")) is not None:
            return skipped
        status, body = await self._get("read", f"/{self.index}/_count")
        if status == 200 and isinstance(body, dict):
            return Check("read", "ok", f"allowed: {body.get('count')} task(s) stored")
        return Check(
            "read",
            "fail",
            f"a count of {self.index!r} was refused: HTTP {status} {self._reason(body)}",
            "give the DLQ's role read on the index (see docs/opensearch.md)",
        )

    async def _write(self) -> Check:
        if (skipped := self._needs_index("write")) is not None:
            return skipped  # an update of a missing index would create it
        action = {"update": {"_index": self.index, "_id": PROBE_ID}}
        lines = [action, {"doc": {}}]
        status, body = await self._ask("write", lambda client: client.bulk(body=lines))
        item: dict[str, Any] = {}
        if status == 200 and isinstance(body, dict) and body.get("items"):
            item = next(iter(body["items"][0].values()), {})
            status = int(item.get("status", 0))
            body = item
        kind, _ = error_info(body.get("error") if isinstance(body, dict) else body)
        if status == 404 and kind == "document_missing_exception":
            return Check(
                "write",
                "ok",
                "allowed (probed with an update of a document that cannot exist: nothing "
                "was written)",
            )
        if status in (401, 403):
            return Check(
                "write",
                "fail",
                f"writing to {self.index!r} was refused: HTTP {status} "
                f"{self._reason(body.get('error', body) if isinstance(body, dict) else body)}",
                "give the DLQ's role write on the index (see docs/opensearch.md)",
            )
        return Check(
            "write",
            "warn",
            f"the probe got an unexpected answer: HTTP {status} "
            f"{self._reason(body.get('error', body) if isinstance(body, dict) else body)}",
        )

    async def _index_settings(self) -> dict[str, Any] | Check:
        status, body = await self._get(
            "index settings",
            f"/{self.index}/_settings",
            params={"include_defaults": "true", "flat_settings": "true"},
        )
        if status != 200 or not isinstance(body, dict) or not body:
            return Check(
                "index settings",
                "warn",
                f"could not be read: HTTP {status} {self._reason(body)}",
            )
        entry = next(iter(body.values()))
        return {**(entry.get("defaults") or {}), **(entry.get("settings") or {})}

    async def _refresh(self) -> Check:
        if (skipped := self._needs_index("refresh interval")) is not None:
            return skipped
        found = await self._index_settings()
        if isinstance(found, Check):
            return Check("refresh interval", found.status, found.detail)
        self.settings = found
        value = str(found.get("index.refresh_interval", "1s"))
        fix = f'PUT {self.index}/_settings {{"index.refresh_interval": "1s"}}'
        if value.strip() == "-1":
            return Check(
                "refresh interval",
                "warn",
                "-1 (refresh disabled): a processor sees the tasks other processes enqueue "
                "only when something refreshes the index",
                fix,
            )
        seconds = seconds_of(value)
        if seconds is None:
            return Check("refresh interval", "warn", f"{value!r} is no time value OpenSearch takes")
        if seconds > _SLOW_REFRESH:
            return Check(
                "refresh interval",
                "warn",
                f"{value}: a processor sees the tasks other processes enqueue up to {value} "
                "late (its own at once)",
                fix,
            )
        return Check(
            "refresh interval",
            "ok",
            f"{value}: a processor sees the tasks other processes enqueue within {value}",
        )

    async def _replicas(self) -> Check:
        if (skipped := self._needs_index("replicas")) is not None:
            return skipped
        found = self.settings
        if found is None:
            return Check("replicas", "skip", "not checked: the index settings could not be read")
        replicas = int(found.get("index.number_of_replicas", 0))
        shards = found.get("index.number_of_shards", "?")
        auto = found.get("index.auto_expand_replicas", "false")
        nodes = self.data_nodes
        detail = f"{shards} shard(s), {replicas} replica(s)"
        if auto not in ("false", False, None):
            detail += f" (auto_expand_replicas {auto})"
        if not isinstance(nodes, int):
            return Check("replicas", "ok", f"{detail}; data nodes unknown")
        detail += f" on {nodes} data node(s)"
        if replicas >= nodes:
            fit = max(0, nodes - 1)
            return Check(
                "replicas",
                "warn",
                f"{detail}: a replica needs a data node its primary is not on, so the "
                "index stays yellow",
                f"set opensearch.number_of_replicas: {fit} (new indexes) and PUT "
                f'{self.index}/_settings {{"index.number_of_replicas": {fit}}}',
            )
        if replicas == 0 and nodes > 1:
            return Check(
                "replicas",
                "warn",
                f"{detail}: one copy only; the queue is unreadable while its node is down",
                "set opensearch.number_of_replicas: 1 (new indexes) and PUT "
                f'{self.index}/_settings {{"index.number_of_replicas": 1}}',
            )
        return Check("replicas", "ok", detail)
