"""OpenSearchStore against a real node, beyond the shared Store contract: the index
mapping, group commit, optimistic concurrency across stores, error translation,
the asyncio-only rule, and the queue built from settings.

Each test gets a fresh index, dropped afterwards. The store runs on asyncio only, so
these tests do too (the trio refusal is tested with ``anyio.run`` in a sync test).
"""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import anyio
import pytest
from opensearchpy import AsyncOpenSearch, RequestError
from opensearchpy import ConnectionError as OpenSearchConnectionError

from mahavishnu_dlq import DeadLetterQueue, Failure, lifecycle
from mahavishnu_dlq.errors import (
    ConfigurationError,
    DLQError,
    InvalidPayloadError,
    StoreUnavailableError,
    TaskBusyError,
)
from mahavishnu_dlq.models import DeadLetterStatus, FailedTask, TaskFilter
from mahavishnu_dlq.settings import DLQSettings
from mahavishnu_dlq.storage import opensearch_query as q
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
    return f"dlq-os-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def client(opensearch_url: str) -> AsyncIterator[Any]:
    """A plain client for requests the store does not make (and to observe it)."""
    raw = AsyncOpenSearch(hosts=[opensearch_url])
    try:
        yield raw
    finally:
        await raw.close()


@pytest.fixture
async def store(opensearch_url: str, index_name: str) -> AsyncIterator[OpenSearchStore]:
    """An opened store on a fresh index; the index and its template are dropped after."""
    opened = OpenSearchStore(hosts=[opensearch_url], index=index_name)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.drop()
        await opened.close()


def put(task: FailedTask) -> Callable[[FailedTask | None], FailedTask]:
    """A mutation that stores ``task`` whatever is there."""
    return lambda _current: task


_ACTIONS = {"index", "create", "delete"}


def count_bulks(raw: Any) -> list[int]:
    """Wrap ``raw.bulk``: the returned list gets the item count of every bulk request."""
    sizes: list[int] = []
    original: Callable[..., Awaitable[Any]] = raw.bulk

    async def counting_bulk(*args: Any, **kwargs: Any) -> Any:
        body = kwargs.get("body", args[0] if args else "")
        assert isinstance(body, str), "the store sends its bulk body encoded (NDJSON)"
        lines = [json.loads(line) for line in body.splitlines()]
        sizes.append(sum(1 for line in lines if len(line) == 1 and line.keys() <= _ACTIONS))
        return await original(*args, **kwargs)

    raw.bulk = counting_bulk
    return sizes


def claimer(now: datetime, owner: str) -> Callable[[FailedTask | None], FailedTask]:
    def claim(current: FailedTask | None) -> FailedTask:
        assert current is not None
        return lifecycle.claim(
            current, now=now, owner=owner, lease_seconds=30, trigger="processor", attempts_kept=5
        )

    return claim


# -- the index ------------------------------------------------------------------------


async def test_open_is_idempotent_also_from_a_second_store(
    store: OpenSearchStore, client: Any, opensearch_url: str, index_name: str
) -> None:
    task = make_task(task_id="a", now=T0)
    await store.mutate("a", put(task))
    before = await client.indices.get_mapping(index=index_name)

    await store.open()  # again, on the same store
    second = OpenSearchStore(hosts=[opensearch_url], index=index_name)
    try:
        await second.open()  # and from another instance
        assert await second.get("a") == task
    finally:
        await second.close()

    after = await client.indices.get_mapping(index=index_name)
    assert after == before
    mappings = after[index_name]["mappings"]
    assert mappings["dynamic"] == "strict"
    assert mappings["_meta"] == {"mahavishnu_dlq_mapping_version": q.MAPPING_VERSION}
    assert await store.get("a") == task
    assert await store.count() == 1


async def test_the_mapping_is_strict(store: OpenSearchStore, client: Any, index_name: str) -> None:
    doc = q.to_document(make_task(task_id="x", now=T0), "w")
    doc["surprise"] = "field"
    with pytest.raises(RequestError) as caught:
        await client.index(index=index_name, id="x", body=doc)
    assert "strict_dynamic_mapping_exception" in str(caught.value)
    assert await store.get("x") is None


async def test_an_index_with_an_incompatible_mapping_is_refused(
    opensearch_url: str, client: Any, index_name: str
) -> None:
    await client.indices.create(
        index=index_name, body={"mappings": {"properties": {"status": {"type": "long"}}}}
    )
    store = OpenSearchStore(hosts=[opensearch_url], index=index_name)
    try:
        with pytest.raises(ConfigurationError) as caught:
            await store.open()
        message = str(caught.value)
        assert index_name in message
        assert "'status'" in message
        assert "'long'" in message
        assert caught.value.field == "opensearch.index"
    finally:
        await store.drop()
        await store.close()


async def test_an_index_with_a_compatible_older_mapping_is_upgraded_in_place(
    opensearch_url: str, client: Any, index_name: str
) -> None:
    await client.indices.create(
        index=index_name, body={"mappings": {"properties": {"task_id": {"type": "keyword"}}}}
    )
    store = OpenSearchStore(hosts=[opensearch_url], index=index_name)
    try:
        await store.open()
        mappings = (await client.indices.get_mapping(index=index_name))[index_name]["mappings"]
        assert mappings["dynamic"] == "strict"
        assert mappings["_meta"]["mahavishnu_dlq_mapping_version"] == q.MAPPING_VERSION
        assert q.mapping_problems(mappings) == ([], False)
        task = make_task(task_id="a", now=T0)
        await store.mutate("a", put(task))
        assert await store.get("a") == task
    finally:
        await store.drop()
        await store.close()


async def test_the_document_id_is_the_sha256_of_the_task_id(
    store: OpenSearchStore, client: Any, index_name: str
) -> None:
    task_id = "../weird/id with spaces ✓"
    await store.mutate(task_id, put(make_task(task_id=task_id, now=T0)))
    found = await client.get(index=index_name, id=q.doc_id(task_id))
    assert len(found["_id"]) == 64
    assert found["_source"]["task_id"] == task_id
    assert found["_source"]["due_us"] == found["_source"]["failed_at_us"]  # due at once


# -- group commit ---------------------------------------------------------------------


async def test_concurrent_creates_are_group_committed(opensearch_url: str, index_name: str) -> None:
    raw = AsyncOpenSearch(hosts=[opensearch_url])
    store = OpenSearchStore(hosts=[opensearch_url], index=index_name, client=raw)
    await store.open()
    sizes = count_bulks(raw)
    try:
        tasks = [make_task(task_id=f"t{i:03d}", now=T0, metadata={"i": i}) for i in range(100)]
        results = await asyncio.gather(*(store.mutate(t.task_id, put(t)) for t in tasks))
        assert results == tasks  # each caller got its own record back
        assert sum(sizes) == 100
        assert len(sizes) <= 20, sizes  # far fewer requests than writes
        assert max(sizes) > 1
        assert await store.count() == 100
        for task in tasks[::17]:
            assert await store.get(task.task_id) == task
    finally:
        await store.drop()
        await store.close()
        await raw.close()


async def test_enqueue_many_goes_out_in_bulk_and_keeps_each_result(
    opensearch_url: str, index_name: str
) -> None:
    raw = AsyncOpenSearch(hosts=[opensearch_url])
    store = OpenSearchStore(hosts=[opensearch_url], index=index_name, client=raw)
    await store.open()
    sizes = count_bulks(raw)
    dlq = DeadLetterQueue(store, max_size=1000)
    try:
        failures = [
            Failure(f"b{i:03d}", {"i": i, "ü": "é"}, ["r"], "reset by peer", workflow="wf")
            for i in range(200)
        ]
        failures.insert(50, Failure("bad", {"i": {1, 2}}))  # not JSON: refused alone
        failures.append(Failure("b000", {"i": "again"}, None, "second failure"))
        results = await dlq.enqueue_many(failures)
        assert len(results) == 202
        assert isinstance(results[50], InvalidPayloadError)
        stored = [r for r in results if isinstance(r, FailedTask)]
        assert [r.task_id for r in stored] == [f"b{i:03d}" for i in range(200)] + ["b000"]
        # one write per id: the second failure of b000 is applied to the first before
        # its create goes out
        assert sum(sizes) == 200
        assert len(sizes) == 1, sizes  # one bulk request for the whole batch
        assert await store.count() == 200
        again = await dlq.get_task("b000")
        assert again is not None
        assert again.task == {"i": "again"}  # applied after the first failure of b000
        assert again.last_error == "second failure"
        assert await dlq.get_task("b150") == stored[150]
        assert await dlq.get_task("bad") is None
        assert dlq.lifetime["deduplicated"] == 1
    finally:
        await store.drop()
        await store.close()
        await raw.close()


async def test_a_failing_item_reaches_only_its_caller(opensearch_url: str, index_name: str) -> None:
    raw = AsyncOpenSearch(hosts=[opensearch_url])
    store = OpenSearchStore(hosts=[opensearch_url], index=index_name, client=raw)
    await store.open()
    sizes = count_bulks(raw)
    huge = "h" * 40_000  # a keyword term over Lucene's 32766-byte limit: the item gets a 400

    def busy(_current: FailedTask | None) -> FailedTask:
        raise TaskBusyError("busy", reason="refused by the mutation")

    try:
        tasks = [make_task(task_id=f"ok{i:02d}", now=T0) for i in range(40)]
        calls: list[Awaitable[FailedTask]] = [store.mutate(t.task_id, put(t)) for t in tasks]
        calls.insert(10, store.mutate("busy", busy))
        calls.insert(
            25, store.mutate(huge, put(make_task(task_id="x", now=T0).evolve(task_id=huge)))
        )
        results = await asyncio.gather(*calls, return_exceptions=True)

        assert isinstance(results[10], TaskBusyError)
        assert isinstance(results[25], ConfigurationError)
        assert "HTTP 400" in str(results[25])
        others = [r for i, r in enumerate(results) if i not in (10, 25)]
        assert others == tasks
        assert len(sizes) < 41, sizes
        assert await store.count() == 40
        assert await store.get("busy") is None
    finally:
        await store.drop()
        await store.close()
        await raw.close()


async def test_a_lost_conflict_reaches_only_its_caller(
    opensearch_url: str, client: Any, index_name: str
) -> None:
    """Someone else writes the document between the store's read and its write."""
    raw = AsyncOpenSearch(hosts=[opensearch_url])
    store = OpenSearchStore(
        hosts=[opensearch_url], index=index_name, client=raw, conflict_retries=1
    )
    await store.open()
    hot = make_task(task_id="hot", now=T0)
    await store.mutate("hot", put(hot))
    # another process writes it once: what the store remembers of its own write is stale
    seeded = await client.get(index=index_name, id=q.doc_id("hot"))
    stale = {**seeded["_source"], "write_id": "other-0"}
    await client.index(index=index_name, id=q.doc_id("hot"), body=stale)
    original_get = raw.get
    interfered: list[int] = []

    async def get_then_interfere(*args: Any, **kwargs: Any) -> Any:
        found = await original_get(*args, **kwargs)
        if kwargs.get("id") == q.doc_id("hot") and len(interfered) < 10:
            # another process writes the document right after each of our reads
            interfered.append(found["_seq_no"])
            source = {**found["_source"], "write_id": f"other-{len(interfered)}"}
            await client.index(index=index_name, id=q.doc_id("hot"), body=source)
        return found

    raw.get = get_then_interfere
    try:
        tasks = [make_task(task_id=f"ok{i:02d}", now=T0) for i in range(20)]
        calls: list[Awaitable[FailedTask]] = [store.mutate(t.task_id, put(t)) for t in tasks]
        changed = hot.evolve(metadata={"changed": True})
        calls.insert(7, store.mutate("hot", put(changed)))
        results = await asyncio.gather(*calls, return_exceptions=True)

        assert isinstance(results[7], TaskBusyError)
        assert results[:7] + results[8:] == tasks
        assert interfered  # the conflict did happen
        assert await store.get("hot") == hot  # unchanged by the loser
    finally:
        await store.drop()
        await store.close()
        await raw.close()


# -- concurrency ------------------------------------------------------------------------


async def test_concurrent_mutations_of_one_id_all_apply(store: OpenSearchStore) -> None:
    await store.mutate("n", put(make_task(task_id="n", now=T0, metadata={"seen": []})))

    def append(label: str) -> Callable[[FailedTask | None], FailedTask]:
        def fn(current: FailedTask | None) -> FailedTask:
            assert current is not None
            return current.evolve(metadata={"seen": [*current.metadata["seen"], label]})

        return fn

    await asyncio.gather(store.mutate("n", append("a")), store.mutate("n", append("b")))
    stored = await store.get("n")
    assert stored is not None
    assert sorted(stored.metadata["seen"]) == ["a", "b"]  # no lost update

    labels = [f"x{i}" for i in range(10)]
    await asyncio.gather(*(store.mutate("n", append(label)) for label in labels))
    stored = await store.get("n")
    assert stored is not None
    assert sorted(stored.metadata["seen"]) == sorted(["a", "b", *labels])


async def test_two_stores_never_claim_one_task_twice(
    store: OpenSearchStore, opensearch_url: str, index_name: str
) -> None:
    tasks = [
        make_task(task_id=f"t{i:02d}", now=T0, next_retry_at=T0 + timedelta(milliseconds=i))
        for i in range(60)
    ]
    await asyncio.gather(*(store.mutate(t.task_id, put(t)) for t in tasks))
    assert await store.count() == 60  # refreshes: the other store's searches see them
    other = OpenSearchStore(hosts=[opensearch_url], index=index_name)
    await other.open()
    now = T0 + timedelta(seconds=10)
    claims: dict[str, list[str]] = {"w1": [], "w2": []}
    try:
        for _ in range(50):
            mine, theirs = await asyncio.gather(
                store.claim_due(now, 7, claimer(now, "w1")),
                other.claim_due(now, 7, claimer(now, "w2")),
            )
            claims["w1"] += [t.task_id for t in mine]
            claims["w2"] += [t.task_id for t in theirs]
            if len(claims["w1"]) + len(claims["w2"]) >= 60:
                break
            if not mine and not theirs:
                await asyncio.sleep(0.3)  # the other store's claims become visible
        claimed = claims["w1"] + claims["w2"]
        assert sorted(claimed) == sorted(t.task_id for t in tasks)  # each exactly once
        assert claims["w1"]
        assert claims["w2"]
        for owner, ids in claims.items():
            for task_id in ids:
                stored = await store.get(task_id)
                assert stored is not None
                assert stored.status is DeadLetterStatus.RETRYING
                assert stored.lease_owner == owner
        assert await store.claim_due(now, 100, claimer(now, "w1")) == []
    finally:
        await other.close()


# -- errors ---------------------------------------------------------------------------


@pytest.mark.parametrize("credentials", ["url", "arguments", "hostile-url", "scheme-less"])
async def test_an_unreachable_node_is_store_unavailable_without_the_password(
    credentials: str,
) -> None:
    secret = "s3cr3t-Pa55"  # noqa: S105 - a made-up password, to look for in messages
    if credentials == "url":
        store = OpenSearchStore(hosts=[f"http://user:{secret}@127.0.0.1:1"], index="unreachable")
    elif credentials == "hostile-url":  # '@', ':', '/' and a space in the password
        secret = "p@ss: w/rd@x"  # noqa: S105 - a made-up password
        store = OpenSearchStore(hosts=[f"http://user:{secret}@127.0.0.1:1"], index="unreachable")
    elif credentials == "scheme-less":
        store = OpenSearchStore(hosts=[f"user:{secret}@127.0.0.1:1"], index="unreachable")
    else:
        store = OpenSearchStore(
            hosts=["http://127.0.0.1:1"], index="unreachable", username="user", password=secret
        )
    calls: list[Callable[[], Awaitable[object]]] = [store.open, lambda: store.get("a")]
    try:
        for call in calls:
            with pytest.raises(StoreUnavailableError) as caught:
                await call()
            error = caught.value
            assert error.backend == "opensearch"
            assert "127.0.0.1:1 (index 'unreachable')" in str(error)  # where it tried
            assert isinstance(error.__cause__, OpenSearchConnectionError)
            for text in (str(error), repr(error), repr(store), store.location):
                assert secret not in text
                assert "user:" not in text
                for part in secret.split("@"):
                    assert len(part) < 4 or part not in text  # no tail of it either
        assert "127.0.0.1:1" in repr(store)
    finally:
        await store.close()


def test_under_trio_the_store_refuses_with_a_configuration_error() -> None:
    seen: list[DLQError] = []

    async def main() -> None:
        store = OpenSearchStore(hosts=["http://127.0.0.1:1"], index="never-used")
        calls: list[Callable[[], Awaitable[object]]] = [
            store.open,
            lambda: store.get("a"),
            store.close,
        ]
        for call in calls:
            with pytest.raises(ConfigurationError) as caught:
                await call()
            seen.append(caught.value)

    anyio.run(main, backend="trio")
    assert len(seen) == 3
    for error in seen:
        assert "asyncio" in str(error)
        assert isinstance(error, ConfigurationError)


# -- the queue on OpenSearch ----------------------------------------------------------


async def test_a_queue_from_settings_runs_on_opensearch(
    opensearch_url: str, index_name: str
) -> None:
    settings = DLQSettings(
        store="opensearch", opensearch={"hosts": [opensearch_url], "index": index_name}
    )
    dlq = DeadLetterQueue.from_settings(settings)
    assert isinstance(dlq.store, OpenSearchStore)
    try:
        async with dlq:
            stored = await dlq.enqueue(
                "job-1", {"step": 3}, ["repo-a"], ConnectionError("reset"), workflow="build"
            )
            assert stored.status is DeadLetterStatus.PENDING
            assert await dlq.get_task("job-1") == stored
            page = await dlq.list_tasks()
            assert [t.task_id for t in page] == ["job-1"]
            assert [t.task_id for t in await dlq.list_tasks(workflow="build")] == ["job-1"]
            stats = await dlq.get_statistics()
            assert stats["backend"] == "opensearch"
            assert stats["total_stored"] == 1
            assert stats["queue_size"] == 1
            assert stats["status_breakdown"]["pending"] == 1
    finally:
        cleanup = OpenSearchStore(hosts=[opensearch_url], index=index_name)
        await cleanup.drop()
        await cleanup.close()


async def test_a_long_attempt_keeps_its_lease_by_renewal(
    opensearch_url: str, index_name: str
) -> None:
    """The processor renews the lease of an attempt that outlives it: another
    worker's claim gets nothing while the attempt runs, and the attempt's
    finishing write (conditional on the lease) still lands."""
    started = anyio.Event()
    release = anyio.Event()

    async def slow(task: dict[str, Any], repos: list[str]) -> str:
        started.set()
        await release.wait()
        return "done"

    owner_store = OpenSearchStore(hosts=[opensearch_url], index=index_name)
    rival_store = OpenSearchStore(hosts=[opensearch_url], index=index_name)
    await owner_store.open()
    await rival_store.open()
    try:
        dlq = DeadLetterQueue(owner_store, worker_id="owner", lease_seconds=1.0)
        dlq.default_callback = slow
        await dlq.enqueue("long", {}, error="connection reset", retry_policy="immediate")
        with anyio.fail_after(30):
            await dlq.start_retry_processor(check_interval_seconds=3600)
            await started.wait()
            first = await owner_store.get("long")
            assert first is not None
            assert first.lease_expires_at is not None
            # well past the first lease: without renewal the rival would take it
            deadline = first.lease_expires_at + timedelta(seconds=1.5)
            while datetime.now(timezone.utc) < deadline:
                rival_now = datetime.now(timezone.utc)
                stolen = await rival_store.claim_due(rival_now, 10, claimer(rival_now, "rival"))
                assert stolen == []
                await anyio.sleep(0.25)
            renewed = await owner_store.get("long")
            assert renewed is not None
            assert renewed.lease_owner == "owner"
            assert renewed.lease_expires_at is not None
            assert renewed.lease_expires_at > first.lease_expires_at
            release.set()
            for _ in range(600):  # the finishing write lands right after the handler returns
                current = await owner_store.get("long")
                if current is not None and current.status is DeadLetterStatus.COMPLETED:
                    break
                await anyio.sleep(0.05)
            await dlq.stop_retry_processor()
        done = await owner_store.get("long")
        assert done is not None
        assert [a.outcome.value for a in done.attempts] == ["success"]
        assert [a.worker for a in done.attempts] == ["owner"]
    finally:
        await owner_store.drop()
        await owner_store.close()
        await rival_store.close()


async def test_what_a_closed_store_wrote_is_searchable_at_once(
    opensearch_url: str, index_name: str, client: Any
) -> None:
    """A short-lived process (a CLI command) exits with its writes searchable."""
    writer = OpenSearchStore(hosts=[opensearch_url], index=index_name)
    await writer.open()
    try:  # no periodic refresh: only an explicit one makes writes searchable
        await client.indices.put_settings(
            index=index_name, body={"index": {"refresh_interval": "-1"}}
        )
        await writer.mutate("a", put(make_task(task_id="a")))
        await writer.close()
        reader = OpenSearchStore(hosts=[opensearch_url], index=index_name)
        await reader.open()
        try:
            assert await reader.count() == 1
            assert [t.task_id for t in await reader.query(TaskFilter(), limit=10)] == ["a"]
        finally:
            await reader.close()
    finally:
        await client.indices.delete(index=index_name)


async def test_a_node_that_never_answers_is_a_timeout_naming_the_limit() -> None:
    with socket.socket() as silent:  # accepts connections (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        store = OpenSearchStore(hosts=[f"http://127.0.0.1:{port}"], index="silent", timeout=0.3)
        try:
            with pytest.raises(StoreUnavailableError) as caught:
                await store.get("a")
        finally:
            await store.close()
    message = str(caught.value)
    assert f"127.0.0.1:{port}" in message
    assert "ConnectionTimeout: no answer within 0.3 s" in message
