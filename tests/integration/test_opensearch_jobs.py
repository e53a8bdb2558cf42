"""OpenSearchStore's jobs and summaries against a real node, beyond the shared contract:
the ``<index>-jobs`` index (strict, created at open, re-created strict, dropped with
the store, a conflicting one refused), compare-and-set between two stores (each with
its own per-id lock, as two processes: real 409s), a stored job it cannot read,
``summarize`` in one search, and the tasks index of mapping version 1 upgraded in place
(``last_job_id``)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timezone
from typing import Any

import anyio
import pytest
from opensearchpy import AsyncOpenSearch, RequestError

from mahavishnu_dlq.errors import ConfigurationError, UnreadableRecordError
from mahavishnu_dlq.jobs.model import Job, JobKind
from mahavishnu_dlq.models import DeadLetterStatus, FailedTask, TaskFilter
from mahavishnu_dlq.storage import opensearch_query as q
from mahavishnu_dlq.storage.opensearch import OpenSearchStore
from mahavishnu_dlq.storage.opensearch_jobs import jobs_index
from mahavishnu_dlq.testing import make_task

pytestmark = [pytest.mark.anyio, pytest.mark.opensearch]

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)


@pytest.fixture
def anyio_backend() -> str:
    """AsyncOpenSearch runs on asyncio only."""
    return "asyncio"


@pytest.fixture
def index_name() -> str:
    return f"dlq-jobs-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def client(opensearch_url: str) -> AsyncIterator[Any]:
    raw = AsyncOpenSearch(hosts=[opensearch_url])
    try:
        yield raw
    finally:
        await raw.close()


@pytest.fixture
async def store(opensearch_url: str, index_name: str) -> AsyncIterator[OpenSearchStore]:
    opened = OpenSearchStore(hosts=[opensearch_url], index=index_name)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.drop()
        await opened.close()


def put(task: FailedTask) -> Callable[[FailedTask | None], FailedTask]:
    return lambda _current: task


def make_job(job_id: str, **overrides: Any) -> Job:
    fields: dict[str, Any] = {
        "job_id": job_id,
        "kind": JobKind.ARCHIVE,
        "created_at": T0,
        "updated_at": T0,
        "snapshot_at": T0,
    }
    fields.update(overrides)
    return Job.model_validate(fields)


# -- the jobs index -----------------------------------------------------------------------


async def test_the_jobs_index_is_made_strict_at_open_and_dropped_with_the_store(
    opensearch_url: str, client: Any, index_name: str
) -> None:
    store = OpenSearchStore(hosts=[opensearch_url], index=index_name)
    try:
        await store.open()
        jobs = jobs_index(index_name)
        assert jobs == f"{index_name}-jobs"
        mappings = (await client.indices.get_mapping(index=jobs))[jobs]["mappings"]
        assert mappings["dynamic"] == "strict"
        assert mappings["properties"]["doc"] == {"type": "object", "enabled": False}
        assert mappings["properties"]["state"] == {"type": "keyword"}
        with pytest.raises(RequestError, match="strict_dynamic_mapping_exception"):
            await client.index(index=jobs, body={"surprise": 1})
        await store.open()  # again: idempotent
        await store.jobs.create(make_job("j"))
        # deleted behind the store's back: a write re-creates it, strict (the template)
        await client.indices.delete(index=jobs)
        assert await store.jobs.get("j") is None
        assert await store.jobs.list() == []
        await store.jobs.create(make_job("k"))
        again = (await client.indices.get_mapping(index=jobs))[jobs]["mappings"]
        assert again["dynamic"] == "strict"
    finally:
        await store.drop()
        await store.close()
    assert not await client.indices.exists(index=f"{index_name}-jobs")
    assert not await client.indices.exists(index=index_name)
    for template in (f"mahavishnu-dlq-{index_name}", f"mahavishnu-dlq-{index_name}-jobs"):
        assert not await client.indices.exists_index_template(name=template)


async def test_a_jobs_index_with_a_conflicting_mapping_is_refused(
    opensearch_url: str, client: Any, index_name: str
) -> None:
    await client.indices.create(
        index=f"{index_name}-jobs", body={"mappings": {"properties": {"state": {"type": "long"}}}}
    )
    store = OpenSearchStore(hosts=[opensearch_url], index=index_name)
    try:
        with pytest.raises(ConfigurationError) as caught:
            await store.open()
        message = str(caught.value)
        assert f"{index_name}-jobs" in message
        assert "'state' is mapped as 'long'" in message
        assert caught.value.field == "opensearch.index"
    finally:
        await store.drop()
        await store.close()


async def test_increments_from_two_stores_at_once_all_land(
    store: OpenSearchStore, opensearch_url: str, index_name: str
) -> None:
    other = OpenSearchStore(hosts=[opensearch_url], index=index_name)
    await other.open()
    try:
        await store.jobs.create(make_job("n"))

        async def bump(target: OpenSearchStore) -> None:
            await target.jobs.mutate("n", lambda job: job.evolve(done=job.done + 1))

        async with anyio.create_task_group() as group:
            for _ in range(15):
                group.start_soon(bump, store)
                group.start_soon(bump, other)
        for reader in (store, other):
            found = await reader.jobs.get("n")
            assert found is not None
            assert found.done == 30
    finally:
        await other.close()


async def test_an_unreadable_stored_job_is_skipped_by_listings_and_refused_by_reads(
    store: OpenSearchStore, client: Any, index_name: str
) -> None:
    good = await store.jobs.create(make_job("good"))
    bad = {**make_job("bad").to_dict(), "kind": "teleport"}
    await client.index(
        index=f"{index_name}-jobs",
        id=q.doc_id("bad"),
        body={"job_id": "bad", "state": "queued", "created_at_us": 1, "doc": bad},
        refresh="true",
    )
    assert await store.jobs.list() == [good]
    with pytest.raises(UnreadableRecordError, match="job 'bad' is stored but cannot be read: kind"):
        await store.jobs.get("bad")
    with pytest.raises(UnreadableRecordError):
        await store.jobs.mutate("bad", lambda job: job)
    assert await store.jobs.delete("bad") is True


# -- summaries ------------------------------------------------------------------------------


def count_searches(raw: Any) -> list[dict[str, Any]]:
    """Wrap ``raw.search``: the returned list gets the body of every search."""
    bodies: list[dict[str, Any]] = []
    original: Callable[..., Awaitable[Any]] = raw.search

    async def counting(*args: Any, **kwargs: Any) -> Any:
        bodies.append(kwargs.get("body", {}))
        return await original(*args, **kwargs)

    raw.search = counting
    return bodies


async def test_summarize_is_one_search(opensearch_url: str, index_name: str) -> None:
    raw = AsyncOpenSearch(hosts=[opensearch_url])
    store = OpenSearchStore(hosts=[opensearch_url], index=index_name, client=raw)
    await store.open()
    try:
        tasks = [make_task(task_id=f"t{i}", now=T0, workflow=f"w{i % 3}") for i in range(30)]
        await store.mutate_many([(task.task_id, put(task)) for task in tasks])
        await store.summarize(TaskFilter())  # the refresh after the writes happens here
        searches = count_searches(raw)
        summary = await store.summarize(
            TaskFilter(status=(DeadLetterStatus.PENDING,), text="t1"), sample=3
        )
        assert len(searches) == 1
        assert searches[0]["_source"] == ["task_id"]
        assert searches[0]["track_total_hits"] is True
        assert summary.total == 11  # t1, t10 … t19
        assert summary.by_workflow == {"w0": 3, "w1": 5, "w2": 3}
        assert summary.sample == ["t1", "t10", "t11"]
    finally:
        await store.drop()
        await store.close()
        await raw.close()


# -- mapping version 1 -----------------------------------------------------------------------


async def test_a_tasks_index_of_mapping_version_1_is_upgraded_in_place(
    opensearch_url: str, client: Any, index_name: str
) -> None:
    v1 = q.update_body()
    v1["properties"] = {k: v for k, v in v1["properties"].items() if k != "last_job_id"}
    v1["_meta"] = {"mahavishnu_dlq_mapping_version": 1}
    await client.indices.create(index=index_name, body={"mappings": v1})
    old = make_task(task_id="old", now=T0)
    doc = q.to_document(old, "w1")
    del doc["last_job_id"]  # as version 1 wrote it
    await client.index(index=index_name, id=q.doc_id("old"), body=doc, refresh="true")
    conflicts, update = q.mapping_problems(
        (await client.indices.get_mapping(index=index_name))[index_name]["mappings"]
    )
    assert (conflicts, update) == ([], True)
    store = OpenSearchStore(hosts=[opensearch_url], index=index_name)
    try:
        await store.open()
        mappings = (await client.indices.get_mapping(index=index_name))[index_name]["mappings"]
        assert mappings["properties"]["last_job_id"] == {"type": "keyword"}
        assert mappings["_meta"]["mahavishnu_dlq_mapping_version"] == q.MAPPING_VERSION == 2
        assert q.mapping_problems(mappings) == ([], False)
        assert await store.get("old") == old
        tagged = old.model_copy(update={"last_job_id": "job-1"})
        await store.mutate("old", lambda _current: tagged)
        assert await store.get("old") == tagged
        assert [task.last_job_id for task in await store.query(TaskFilter(), limit=5)] == ["job-1"]
    finally:
        await store.drop()
        await store.close()
