"""Poison records, oversized writes and back-pressure on a real OpenSearch node.

- Documents the store cannot decode — invalid Unicode, values of a newer version,
  missing and wrong-typed fields — are written with the plain client, then every
  read path and the processor run next to a healthy task that must still complete.
- Bulk requests are bounded by bytes: 110 failures of 0.95 MB all land, a 10 MB
  record is refused alone before anything is sent.
- A node answering HTTP 429 (injected by a small HTTP proxy in front of the real
  node, for whole requests and for items) is retried with backoff, never opens a
  failover store's circuit, and only after ``backpressure_seconds`` becomes
  ``StoreOverloadedError``.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import pytest
from opensearchpy import AsyncOpenSearch

from mahavishnu_dlq import DeadLetterQueue, Failure, Limits, RetryProcessor
from mahavishnu_dlq.errors import (
    PayloadTooLargeError,
    StoreOverloadedError,
    UnreadableRecordError,
)
from mahavishnu_dlq.models import DeadLetterStatus, FailedTask
from mahavishnu_dlq.storage import FailoverStore, MemoryStore
from mahavishnu_dlq.storage import opensearch_query as q
from mahavishnu_dlq.storage.base import Mutation
from mahavishnu_dlq.storage.opensearch import OpenSearchStore

pytestmark = [pytest.mark.anyio, pytest.mark.opensearch]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def anyio_backend() -> str:
    """AsyncOpenSearch runs on asyncio only."""
    return "asyncio"


@pytest.fixture
def index_name() -> str:
    return f"dlq-hostile-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def client(opensearch_url: str) -> AsyncIterator[Any]:
    raw = AsyncOpenSearch(hosts=[opensearch_url])
    try:
        yield raw
    finally:
        await raw.close()


class WatchedStore(OpenSearchStore):
    """An OpenSearchStore a test can wait on: every successful write wakes the waiters."""

    _changed: anyio.Event | None = None

    async def mutate(self, task_id: str, fn: Mutation) -> FailedTask:
        stored = await super().mutate(task_id, fn)
        if self._changed is not None:
            self._changed.set()
        return stored

    async def wait_for(self, task_id: str, status: DeadLetterStatus) -> None:
        """Return once ``task_id`` has ``status`` (no polling: each write wakes it)."""
        while True:
            self._changed = anyio.Event()
            current = await self.get(task_id)
            if current is not None and current.status is status:
                return
            await self._changed.wait()


def replacing(record: FailedTask) -> Mutation:
    """A mutation that stores ``record`` whatever is there."""
    return lambda _current: record


@pytest.fixture
async def store(opensearch_url: str, index_name: str) -> AsyncIterator[WatchedStore]:
    opened = WatchedStore(hosts=[opensearch_url], index=index_name)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.drop()
        await opened.close()


# -- poison records ----------------------------------------------------------------------

#: Each bad document: a healthy document with these changes (None deletes the field).
POISON: dict[str, dict[str, Any]] = {
    "bad-unicode": {"task_id": "bad-\udcff-unicode"},
    "bad-status": {"status": "frozen"},  # written by a newer version
    "bad-policy": {"retry_policy": "fibonacci"},
    "bad-missing": {"failed_at": None},
    "bad-attempts": {"attempts": [{"number": "first"}]},
    "bad-task": {"task": ["not", "an", "object"]},
}


async def write_poison(client: Any, index: str, healthy: FailedTask) -> dict[str, str]:
    """The poison documents written beside ``healthy`` with the plain client; their
    task ids by name."""
    template = json.loads(q.document_json(healthy, "raw"))
    ids: dict[str, str] = {}
    for name, changes in POISON.items():
        doc = {**template, "task_id": name, **changes}
        if changes.get("failed_at", "") is None:
            del doc["failed_at"]
        ids[name] = doc["task_id"]
        await client.index(index=index, id=q.doc_id(doc["task_id"]), body=doc, refresh="true")
    return ids


async def test_poison_records_never_stop_a_read_or_the_processor(
    store: WatchedStore, client: Any, index_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="mahavishnu_dlq")
    dlq = DeadLetterQueue(store)
    done: list[str] = []
    dlq.register_handler("wf", lambda task, repos: done.append(task["n"]))
    healthy = await dlq.enqueue(
        "healthy", {"n": "h"}, error="boom", workflow="wf", retry_policy="immediate"
    )
    ids = await write_poison(client, index_name, healthy)  # due too: claims pass over them

    listed = await dlq.list_tasks()
    assert [t.task_id for t in listed] == ["healthy"]
    stats = await dlq.get_statistics()
    assert stats["total_stored"] == 1 + len(POISON)
    assert stats["unreadable"] == len(POISON)
    assert await dlq.count_tasks() == 1 + len(POISON)  # counting reads no document
    for name, task_id in ids.items():
        with pytest.raises(UnreadableRecordError) as caught:
            await dlq.get_task(task_id)
        assert caught.value.task_id == task_id
        assert caught.value.source is not None
        assert json.loads(caught.value.source)["task_id"] == task_id, name
        with pytest.raises(UnreadableRecordError):
            await dlq.retry_task(task_id)
        with pytest.raises(UnreadableRecordError):
            await dlq.archive_task(task_id)
        with pytest.raises(UnreadableRecordError):  # nothing overwrites it either
            await store.mutate(task_id, replacing(healthy.evolve(task_id=task_id)))
        if name != "bad-unicode":  # (an id the queue refuses at the door anyway)
            with pytest.raises(UnreadableRecordError):
                await dlq.enqueue(task_id, {}, error="again")
    dry = await dlq.replay(dry_run=True)
    assert [item.task_id for item in dry.items] == ["healthy"]
    assert await RetryProcessor(dlq).run_once() == 1
    assert done == ["h"]
    assert (await dlq.get_task("healthy")).status is DeadLetterStatus.COMPLETED  # type: ignore[union-attr]

    again = await dlq.enqueue(
        "healthy-2", {"n": "h2"}, error="boom", workflow="wf", retry_policy="immediate"
    )
    with anyio.fail_after(20):  # the background processor, through every poison record
        await dlq.start_retry_processor(check_interval_seconds=0.05)
        try:
            await store.wait_for(again.task_id, DeadLetterStatus.COMPLETED)
        finally:
            await dlq.stop_retry_processor()
    assert await dlq.purge(status="completed") == 2
    assert (await dlq.get_statistics())["unreadable"] == len(POISON)

    reported = [r for r in caplog.records if getattr(r, "action", "") == "dlq.unreadable"]
    assert sorted(r.task_id for r in reported) == sorted(  # type: ignore[attr-defined]
        task_id.encode("utf-8", "backslashreplace").decode() for task_id in ids.values()
    )  # each id once, however often it was met


def cli(opensearch_url: str, index: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("MAHAVISHNU_DLQ_")}
    env.update(
        MAHAVISHNU_DLQ_STORE="opensearch",
        MAHAVISHNU_DLQ_OPENSEARCH__HOSTS=json.dumps([opensearch_url]),
        MAHAVISHNU_DLQ_OPENSEARCH__INDEX=index,
        COLUMNS="160",
    )
    return subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "mahavishnu_dlq", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
        check=False,
    )


async def test_every_cli_command_survives_poison_records(
    store: OpenSearchStore, client: Any, index_name: str, opensearch_url: str
) -> None:
    dlq = DeadLetterQueue(store)
    healthy = await dlq.enqueue("healthy", {"n": 1}, error="boom \x1b[2J clear")
    await write_poison(client, index_name, healthy)
    await store.close()  # searchable for the CLI processes

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return cli(opensearch_url, index_name, *args)

    listed = run("list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [t["task_id"] for t in json.loads(listed.stdout)["tasks"]] == ["healthy"]
    table = run("list")
    assert table.returncode == 0, table.stderr
    assert "\x1b" not in table.stdout
    assert "\\x1b[2J" in table.stdout
    status = run("status", "--json")
    assert status.returncode == 0, status.stderr
    # a process that read nothing counts what a query can tell: unknown values and
    # missing fields (bad text inside a document shows when a read meets it)
    assert json.loads(status.stdout)["unreadable"] == 3
    assert run("replay", "--dry-run").returncode == 0
    shown = run("show", "bad-status")
    assert shown.returncode == 1
    assert '"frozen"' in shown.stdout  # the raw stored source
    assert len(shown.stderr.strip().splitlines()) == 1
    assert "cannot be read" in shown.stderr
    assert "Traceback" not in shown.stderr + shown.stdout


async def test_a_failover_resync_sets_aside_a_change_its_primary_cannot_read(
    store: OpenSearchStore, client: Any, index_name: str
) -> None:
    failover = FailoverStore(store, MemoryStore(), failure_threshold=1)
    await failover.open()
    dlq = DeadLetterQueue(failover)
    healthy = await dlq.enqueue("healthy", {}, error="boom")
    await write_poison(client, index_name, healthy)
    failover._trip(RuntimeError("simulated outage"))  # the circuit opens: fallback serves
    assert failover.health["circuit_open"]
    await dlq.enqueue("bad-status", {"during": "outage"}, error="boom")  # unknown to the fallback
    await dlq.enqueue("during-outage", {}, error="boom")
    assert await failover.probe() is True  # re-synced what it could, circuit closed
    health = failover.health
    assert (health["circuit_open"], health["pending_resync"], health["unsynced"]) == (False, 0, 1)
    assert await store.get("during-outage") is not None
    kept = await dlq.get_task("bad-status")  # still served, from the fallback
    assert kept is not None
    assert kept.task == {"during": "outage"}


async def test_a_batch_gives_each_unreadable_record_its_error_and_writes_the_rest(
    store: OpenSearchStore, client: Any, index_name: str
) -> None:
    healthy = await store.mutate("healthy", replacing(_record("healthy")))
    ids = await write_poison(client, index_name, healthy)
    raw_before = {
        task_id: (await client.get(index=index_name, id=q.doc_id(task_id)))["_source"]
        for task_id in ids.values()
    }
    items: list[tuple[str, Mutation]] = [
        (task_id, replacing(healthy.evolve(task_id=task_id))) for task_id in ids.values()
    ]
    items.insert(2, ("healthy", lambda current: _present(current).evolve(metadata={"n": 1})))
    items.append(("new", replacing(_record("new"))))
    items.append((ids["bad-status"], replacing(_record("x").evolve(task_id=ids["bad-status"]))))

    results = await store.mutate_many(items)

    for (task_id, _), result in zip(items, results, strict=True):
        if task_id in ("healthy", "new"):
            assert isinstance(result, FailedTask)
            assert await store.get(task_id) == result
        else:  # each item of an unreadable record: its error, the stored source shown
            assert isinstance(result, UnreadableRecordError), task_id
            assert result.task_id == task_id
            assert result.source is not None
            assert json.loads(result.source)["task_id"] == task_id
    for task_id, source in raw_before.items():  # nothing overwrote them
        stored = await client.get(index=index_name, id=q.doc_id(task_id))
        assert stored["_source"] == source


def _present(task: FailedTask | None) -> FailedTask:
    assert task is not None
    return task


# -- bounded writes ----------------------------------------------------------------------


@dataclass
class BulkSizes:
    """Sizes of the bulk bodies a store sends (wrapping its client's ``bulk``)."""

    sizes: list[int] = field(default_factory=list)

    def watch(self, store: OpenSearchStore) -> None:
        raw = store._client
        send = raw.bulk

        async def bulk(*args: Any, **kwargs: Any) -> Any:
            self.sizes.append(len(str(kwargs.get("body", "")).encode()))
            return await send(*args, **kwargs)

        raw.bulk = bulk


async def test_large_batches_land_in_bulk_requests_bounded_by_bytes(
    store: OpenSearchStore,
) -> None:
    watched = BulkSizes()
    watched.watch(store)
    dlq = DeadLetterQueue(store)
    blob = "x" * 950_000
    results = await dlq.enqueue_many(
        [Failure(f"big-{n}", {"blob": blob}, error="boom") for n in range(110)]
    )
    assert [type(r).__name__ for r in results] == ["FailedTask"] * 110, [
        repr(r.__cause__) for r in results if isinstance(r, Exception)
    ][:2]
    assert await dlq.count_tasks() == 110
    assert len(watched.sizes) >= 110 * 950_000 // 8_388_608
    assert max(watched.sizes) <= 8_388_608
    stored = await dlq.get_task("big-109")
    assert stored is not None
    assert stored.task == {"blob": blob}


async def test_a_record_larger_than_a_bulk_request_is_refused_alone(
    store: OpenSearchStore,
) -> None:
    watched = BulkSizes()
    watched.watch(store)
    dlq = DeadLetterQueue(store, limits=Limits(max_payload_bytes=16 * 1024 * 1024))
    outcomes: list[FailedTask | Exception] = []

    async def enqueue(n: int, size: int) -> None:
        try:
            outcomes.append(await dlq.enqueue(f"t-{size}-{n}", {"blob": "y" * size}, error="e"))
        except Exception as exc:  # collected and checked below
            outcomes.append(exc)

    async with anyio.create_task_group() as group:
        for n in range(11):
            group.start_soon(enqueue, n, 10_000_000)
        for n in range(3):
            group.start_soon(enqueue, n, 3_000_000)
    refused = [o for o in outcomes if isinstance(o, Exception)]
    assert len(refused) == 11
    assert all(isinstance(o, PayloadTooLargeError) for o in refused)
    assert "opensearch.bulk_max_bytes" in str(refused[0])
    assert max(watched.sizes) <= 8_388_608  # the refused ones were never sent
    assert await dlq.count_tasks() == 3


async def test_two_hundred_enqueues_of_one_id_at_once(store: OpenSearchStore) -> None:
    dlq = DeadLetterQueue(store)
    errors: list[Exception] = []

    async def enqueue(n: int) -> None:
        try:
            await dlq.enqueue("same", {"n": n}, error="boom", metadata={f"k{n}": n})
        except Exception as exc:  # there must be none
            errors.append(exc)

    async with anyio.create_task_group() as group:
        for n in range(200):
            group.start_soon(enqueue, n)
    assert errors == []
    record = await dlq.get_task("same")
    assert record is not None
    assert {k for k in record.metadata if k.startswith("k")} == {f"k{n}" for n in range(200)}
    assert await dlq.count_tasks() == 1
    assert dlq.lifetime["enqueued_total"] + dlq.lifetime["deduplicated"] == 200


# -- back-pressure ---------------------------------------------------------------------------


class Pushback:
    """An HTTP proxy in front of a real node that answers some ``_bulk`` requests with
    429, as a node under indexing pressure or with a full write queue does."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 9200)
        self.reject_requests = 0  # whole requests answered 429 (indexing pressure)
        self.reject_items = 0  # requests whose every item is answered 429 (write queue)
        self.rejected = 0
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return None

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                answer = proxy._decide(self.path, body)
                if answer is None:
                    status, headers, data = proxy._upstream(
                        self.command, self.path, self.headers, body
                    )
                else:
                    status, data = answer
                    headers = [("Content-Type", "application/json")]
                self.send_response(status)
                for name, value in headers:
                    if name.lower() not in ("transfer-encoding", "content-length", "connection"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _forward  # noqa: N815

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> Pushback:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def _decide(self, path: str, body: bytes) -> tuple[int, bytes] | None:
        if "_bulk" not in path:
            return None
        with self._lock:
            if self.reject_requests > 0:
                self.reject_requests -= 1
                self.rejected += 1
                error = {
                    "error": {
                        "root_cause": [{"type": "rejected_execution_exception", "reason": "busy"}],
                        "type": "rejected_execution_exception",
                        "reason": "busy",
                    },
                    "status": 429,
                }
                return 429, json.dumps(error).encode()
            if self.reject_items > 0:
                self.reject_items -= 1
                self.rejected += 1
                items = []
                for line in body.decode().splitlines():
                    action = json.loads(line) if line.startswith('{"') else None
                    if action and set(action) <= {"index", "create", "delete", "update"}:
                        kind = next(iter(action))
                        error = {"type": "rejected_execution_exception", "reason": "queue full"}
                        items.append({kind: {"status": 429, "error": error}})
                return 200, json.dumps({"errors": True, "items": items}).encode()
        return None

    def _upstream(
        self, method: str, path: str, headers: Any, body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        connection = http.client.HTTPConnection(*self.upstream, timeout=60)
        try:
            sent = {k: v for k, v in headers.items() if k.lower() not in ("host", "connection")}
            connection.request(method, path, body=body or None, headers=sent)
            response = connection.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            connection.close()


@pytest.fixture
def pushback(opensearch_url: str) -> Iterator[Pushback]:
    with Pushback(opensearch_url) as proxy:
        yield proxy


@pytest.fixture
async def pushed_store(pushback: Pushback, index_name: str) -> AsyncIterator[OpenSearchStore]:
    opened = OpenSearchStore(hosts=[pushback.url], index=index_name, backpressure_seconds=20)
    await opened.open()
    try:
        yield opened
    finally:
        pushback.reject_requests = pushback.reject_items = 0
        await opened.drop()
        await opened.close()


async def test_a_429_for_a_whole_request_is_retried_with_backoff(
    pushback: Pushback, pushed_store: OpenSearchStore
) -> None:
    dlq = DeadLetterQueue(pushed_store)
    pushback.reject_requests = 3
    stored = await dlq.enqueue("t", {"n": 1}, error="boom")
    assert pushback.rejected == 3
    assert await dlq.get_task("t") == stored
    assert pushed_store.backpressure_at is not None


async def test_items_refused_with_429_are_sent_again(
    pushback: Pushback, pushed_store: OpenSearchStore
) -> None:
    dlq = DeadLetterQueue(pushed_store)
    pushback.reject_items = 2
    results = await dlq.enqueue_many([Failure(f"t{n}", {"n": n}, error="boom") for n in range(20)])
    assert [type(r).__name__ for r in results] == ["FailedTask"] * 20
    assert pushback.rejected == 2
    assert await dlq.count_tasks() == 20


async def test_lasting_back_pressure_is_store_overloaded_and_keeps_the_circuit_closed(
    pushback: Pushback, index_name: str
) -> None:
    search = OpenSearchStore(hosts=[pushback.url], index=index_name, backpressure_seconds=0.3)
    await search.open()
    try:
        pushback.reject_requests = 10_000
        with pytest.raises(StoreOverloadedError, match="429"):
            await search.mutate("t", lambda current: _record("t"))
        failover = FailoverStore(search, MemoryStore(), failure_threshold=1, timeout=5)
        await failover.open()
        dlq = DeadLetterQueue(failover)
        for n in range(3):  # each served by the fallback; the node is alive
            await dlq.enqueue(f"t{n}", {}, error="boom")
        health = failover.health
        assert health["circuit_open"] is False
        assert health["pending_resync"] == 3
        assert "back-pressure" in health["last_error"]
        pushback.reject_requests = 0
        assert await failover.probe() is True
        assert await search.count() == 3
    finally:
        pushback.reject_requests = 0
        await search.drop()
        await search.close()


def _record(task_id: str) -> FailedTask:
    from mahavishnu_dlq.testing import make_task  # noqa: PLC0415

    return make_task(task_id=task_id)
