"""``OpenSearchStore.mutate_many`` against a real node, beyond the Store contract.

How a batch talks to the node (one ``_mget`` and one conditional bulk write per chunk
of ids, no read of what the store wrote itself), and that it stays compare-and-set
however it is raced: by another store (another process, as far as the node can tell)
batching the same ids, by a writer between its read and its write, by the transport
retrying a write that was applied, by a node that cannot be reached. Unreadable
documents in a batch are in ``test_opensearch_hostile.py``.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime, timezone
from typing import Any

import anyio
import pytest
from opensearchpy import AsyncOpenSearch

from mahavishnu_dlq.errors import (
    ConfigurationError,
    StoreUnavailableError,
    TaskBusyError,
    TaskNotFoundError,
)
from mahavishnu_dlq.models import FailedTask
from mahavishnu_dlq.storage import opensearch_query as q
from mahavishnu_dlq.storage.base import Mutation
from mahavishnu_dlq.storage.opensearch import OpenSearchStore
from mahavishnu_dlq.testing import make_task

pytestmark = [pytest.mark.anyio, pytest.mark.opensearch]

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)


@pytest.fixture
def anyio_backend() -> str:
    """AsyncOpenSearch runs on asyncio only."""
    return "asyncio"


@pytest.fixture
def index_name() -> str:
    return f"dlq-batch-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def client(opensearch_url: str) -> AsyncIterator[Any]:
    """A plain client: another writer, and a pair of eyes on the node."""
    raw = AsyncOpenSearch(hosts=[opensearch_url])
    try:
        yield raw
    finally:
        await raw.close()


@pytest.fixture
async def watched(opensearch_url: str, index_name: str) -> AsyncIterator[Watched]:
    """A store with chunks of 100 ids, whose client's requests are counted."""
    raw = AsyncOpenSearch(hosts=[opensearch_url])
    store = OpenSearchStore(hosts=[opensearch_url], index=index_name, client=raw, batch_size=100)
    await store.open()
    try:
        yield Watched(store, raw)
    finally:
        await store.drop()
        await store.close()
        await raw.close()


class Watched:
    """A store and the ``_mget`` and ``_bulk`` requests its client sends."""

    def __init__(self, store: OpenSearchStore, raw: Any) -> None:
        self.store = store
        self.mgets: list[int] = []  # ids asked for, per request
        self.bulks: list[int] = []  # items, per request
        mget, bulk = raw.mget, raw.bulk

        async def counting_mget(*args: Any, **kwargs: Any) -> Any:
            self.mgets.append(len(kwargs["body"]["ids"]))
            return await mget(*args, **kwargs)

        async def counting_bulk(*args: Any, **kwargs: Any) -> Any:
            self.bulks.append(kwargs["body"].count("\n") // 2)  # an action and a document each
            return await bulk(*args, **kwargs)

        raw.mget, raw.bulk = counting_mget, counting_bulk

    def reset(self) -> None:
        self.mgets.clear()
        self.bulks.clear()


def put(task: FailedTask) -> Mutation:
    return lambda _current: task


def counted(current: FailedTask | None) -> FailedTask:
    """Counts its applications in ``metadata["n"]``; refuses a missing record."""
    if current is None:
        raise TaskNotFoundError("?")
    return current.evolve(metadata={**current.metadata, "n": current.metadata.get("n", 0) + 1})


def task(task_id: str) -> FailedTask:
    return make_task(task_id=task_id, now=T0, metadata={"n": 0})


async def test_a_batch_reads_once_and_writes_once_per_chunk(
    watched: Watched, opensearch_url: str, index_name: str
) -> None:
    store = watched.store
    other = [task(f"old{i:03d}") for i in range(150)]  # written by "another process" …
    stranger = OpenSearchStore(hosts=[opensearch_url], index=index_name)
    try:
        written = await stranger.mutate_many([(t.task_id, put(t)) for t in other])
        assert written == other
    finally:
        await stranger.close()
    items: list[tuple[str, Mutation]] = []  # … 150 to change, 140 new, 10 refused
    for i in range(150):
        items.append((f"old{i:03d}", counted))
        if i < 140:
            items.append((f"new{i:03d}", put(task(f"new{i:03d}"))))
        else:
            items.append((f"nil{i:03d}", counted))  # absent: refuses
    random.Random(7).shuffle(items)

    results = await store.mutate_many(items)

    for (task_id, _), result in zip(items, results, strict=True):
        if task_id.startswith("nil"):
            assert isinstance(result, TaskNotFoundError)
        else:
            assert isinstance(result, FailedTask)
            assert result.task_id == task_id
            assert result.metadata["n"] == (1 if task_id.startswith("old") else 0)
    assert watched.mgets == [100, 100, 100]  # 300 ids: one realtime read per chunk of 100
    assert sum(watched.bulks) == 290  # one conditional write per id, none for refusals
    assert max(watched.bulks) <= 100
    assert await store.count() == 290

    watched.reset()  # the store wrote all of them: it starts from its own last writes
    again = await store.mutate_many([(f"old{i:03d}", counted) for i in range(150)])
    assert [r.metadata["n"] for r in again if isinstance(r, FailedTask)] == [2] * 150
    assert watched.mgets == []
    assert sum(watched.bulks) == 150


async def test_a_stale_last_write_costs_a_read_never_an_update(
    watched: Watched, client: Any, index_name: str
) -> None:
    store = watched.store
    await store.mutate_many([(f"k{i}", put(task(f"k{i}"))) for i in range(3)])
    # another process changes k0 (counted up) and deletes k1 behind the store's back
    stored = await client.get(index=index_name, id=q.doc_id("k0"))
    changed = {**stored["_source"], "metadata": {"n": 10}, "write_id": "other"}
    await client.index(index=index_name, id=q.doc_id("k0"), body=changed, refresh="true")
    await client.delete(index=index_name, id=q.doc_id("k1"), refresh="true")
    watched.reset()

    results = await store.mutate_many([(f"k{i}", counted) for i in range(3)])

    k0, k1, k2 = results
    assert isinstance(k0, FailedTask)
    assert k0.metadata == {"n": 11}  # applied to the other process's version
    assert isinstance(k1, TaskNotFoundError)  # judged on the index, not on the memory of it
    assert isinstance(k2, FailedTask)
    assert k2.metadata == {"n": 1}
    assert await store.get("k0") == k0
    assert await store.get("k1") is None
    assert watched.mgets == [2]  # the 409 (k0) and the refusal (k1) read once, together


async def test_a_transport_retry_of_a_batch_write_counts_as_ours(watched: Watched) -> None:
    """The node applied the bulk request, the answer was lost, the transport sent it again:
    every conditional write of the retry answers 409 against our own write."""
    store = watched.store
    await store.mutate_many([(f"r{i}", put(task(f"r{i}"))) for i in range(5)])
    raw = store._client
    bulk = raw.bulk

    async def applied_then_retried(*args: Any, **kwargs: Any) -> Any:
        await bulk(*args, **kwargs)
        return await bulk(*args, **kwargs)

    raw.bulk = applied_then_retried
    try:
        created = await store.mutate_many([("fresh", put(task("fresh")))])
        changed = await store.mutate_many([(f"r{i}", counted) for i in range(5)])
    finally:
        raw.bulk = bulk
    assert created == [task("fresh")]
    assert [r.metadata["n"] for r in changed if isinstance(r, FailedTask)] == [1] * 5
    for i in range(5):  # applied once each
        stored = await store.get(f"r{i}")
        assert stored is not None
        assert stored.metadata == {"n": 1}


MARK = "refuse-me"


def marked(current: FailedTask | None) -> FailedTask:
    """A change whose document the node below refuses (HTTP 400)."""
    assert current is not None
    return current.evolve(metadata={**current.metadata, MARK: True})


async def test_a_document_the_node_refuses_fails_only_the_item_that_made_it(
    watched: Watched,
) -> None:
    """Several items of one id are one write; when the node refuses it, they are written
    again one at a time, as if each had been sent alone (x: the third item carries the
    second's change, so their one write is refused)."""
    raw = watched.store._client
    bulk = raw.bulk
    refusal = {"index": {"status": 400, "error": {"type": "mapper_parsing_exception"}}}

    async def refusing_marked(*args: Any, **kwargs: Any) -> Any:
        lines = kwargs["body"].split("\n")[:-1]
        pairs = [lines[at : at + 2] for at in range(0, len(lines), 2)]  # no deletes here
        sent = [pair for pair in pairs if MARK not in pair[1]]
        answer: dict[str, Any] = {"items": []}
        if sent:
            kwargs["body"] = "\n".join(line for pair in sent for line in pair) + "\n"
            answer = await bulk(*args, **kwargs)
        written = iter(answer["items"])
        return {"items": [refusal if MARK in pair[1] else next(written) for pair in pairs]}

    raw.bulk = refusing_marked
    items = [
        ("x", put(task("x"))),
        ("x", marked),
        ("x", counted),
        ("y", put(task("y"))),
        ("z", put(task("z"))),
        ("z", marked),
    ]
    x1, x2, x3, y, z1, z2 = await watched.store.mutate_many(items)
    assert x1 == task("x")
    assert isinstance(x2, ConfigurationError)
    assert "HTTP 400" in str(x2)
    assert isinstance(x3, FailedTask)
    assert x3.metadata == {"n": 1}  # applied to x1: the refused change never was
    assert y == task("y")
    assert z1 == task("z")
    assert isinstance(z2, ConfigurationError)
    assert await watched.store.get("x") == x3
    assert await watched.store.get("z") == z1


async def test_losing_every_race_makes_only_that_id_busy(
    opensearch_url: str, index_name: str, client: Any
) -> None:
    raw = AsyncOpenSearch(hosts=[opensearch_url])
    store = OpenSearchStore(
        hosts=[opensearch_url], index=index_name, client=raw, conflict_retries=3
    )
    await store.open()
    mget = raw.mget
    interfered: list[int] = []

    async def mget_then_interfere(*args: Any, **kwargs: Any) -> Any:
        found = await mget(*args, **kwargs)
        for doc in found["docs"]:
            if doc["_id"] == q.doc_id("hot") and doc.get("found"):
                # another process writes the document right after each of our reads
                interfered.append(doc["_seq_no"])
                source = {**doc["_source"], "write_id": f"other-{len(interfered)}"}
                await client.index(index=index_name, id=doc["_id"], body=source)
        return found

    try:
        await client.index(
            index=index_name,
            id=q.doc_id("hot"),
            body=q.to_document(task("hot"), "other-0"),
            refresh="true",
        )
        raw.mget = mget_then_interfere
        items = [(f"c{i}", put(task(f"c{i}"))) for i in range(10)]
        items.insert(4, ("hot", counted))
        items.insert(8, ("hot", counted))  # two items of the hot id: both busy
        results = await store.mutate_many(items)
        assert isinstance(results[4], TaskBusyError)
        assert isinstance(results[8], TaskBusyError)
        assert "3 concurrent updates" in str(results[4])
        assert results[:4] + results[5:8] + results[9:] == [task(f"c{i}") for i in range(10)]
        assert len(interfered) == 4  # a read before each of the 3 writes, and after the last
        stored = await store.get("hot")
        assert stored is not None
        assert stored.metadata == {"n": 0}  # unchanged by the loser
    finally:
        await store.drop()
        await store.close()
        await raw.close()


async def test_two_stores_batching_overlapping_ids_apply_every_change_once(
    opensearch_url: str, index_name: str
) -> None:
    """Two stores with clients of their own (two processes, as far as the node can tell)
    and single mutations beside them, all on overlapping ids: no update lost, none twice."""
    ids = [f"x{i:03d}" for i in range(400)]
    stores = [
        OpenSearchStore(hosts=[opensearch_url], index=index_name, batch_size=150) for _ in range(2)
    ]
    for store in stores:
        await store.open()
    applied: dict[str, int] = dict.fromkeys(ids, 0)  # successful results, per id

    def record(items: Sequence[tuple[str, Mutation]], results: list[Any]) -> None:
        for (task_id, _), result in zip(items, results, strict=True):
            assert isinstance(result, FailedTask), result  # nothing refused, nothing busy
            applied[task_id] += 1

    async def batches(store: OpenSearchStore, seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(4):
            chosen = rng.sample(ids, 300)
            items = [(task_id, counted) for task_id in chosen + chosen[:20]]  # 20 ids twice
            record(items, await store.mutate_many(items))

    async def singles(store: OpenSearchStore) -> None:
        for task_id in ids[::20]:
            record([(task_id, counted)], [await store.mutate(task_id, counted)])

    try:
        await stores[0].mutate_many([(task_id, put(task(task_id))) for task_id in ids])
        with anyio.fail_after(120):
            async with anyio.create_task_group() as group:
                for n, store in enumerate(stores):
                    group.start_soon(batches, store, n)
                    group.start_soon(batches, store, n + 10)
                    group.start_soon(singles, store)
        for task_id in ids:
            stored = await stores[1].get(task_id)
            assert stored is not None
            assert stored.metadata["n"] == applied[task_id], task_id
        assert sum(applied.values()) == 4 * 4 * 320 + 2 * len(ids[::20])
    finally:
        await stores[0].drop()
        for store in stores:
            await store.close()


async def test_an_unreachable_node_fails_every_item_of_a_batch_once() -> None:
    store = OpenSearchStore(hosts=["http://127.0.0.1:1"], index="unreachable", batch_size=10)
    reads: list[int] = []
    mget: Callable[..., Awaitable[Any]] = store._client.mget

    async def counting_mget(*args: Any, **kwargs: Any) -> Any:
        reads.append(len(kwargs["body"]["ids"]))
        return await mget(*args, **kwargs)

    store._client.mget = counting_mget
    try:
        items = [(f"u{i:02d}", put(task(f"u{i:02d}"))) for i in range(50)]
        results = await store.mutate_many(items)
        assert all(isinstance(r, StoreUnavailableError) for r in results)
        # 5 chunks, 2 at a time: the first two ask, the other three are not sent
        assert len(reads) <= 2
    finally:
        await store.close()
