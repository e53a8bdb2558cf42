"""Opening for reading writes nothing, against a real node.

- Every CLI command that only reads, on an index that does not exist (a typo of one
  that does): exit status 1, one line naming the index, the cluster and its hosts,
  with the near-miss name; and afterwards no index and no template was made.
- The web console built from settings: a missing index is a 503 naming it, page and
  API, nothing made; the next request after the index exists is served.
- ``get_statistics`` on a store opened for reading makes nothing; the jobs and
  controls indexes are made by their first write, strict like those ``open()`` makes.
- A conflicting mapping is refused when reading too, and left alone.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from opensearchpy import AsyncOpenSearch, OpenSearch

from mahavishnu_dlq import DeadLetterQueue
from mahavishnu_dlq.errors import ConfigurationError, StoreNotFoundError
from mahavishnu_dlq.settings import DLQSettings, OpenSearchSettings
from mahavishnu_dlq.storage import opensearch_query as q
from mahavishnu_dlq.storage.opensearch import OpenSearchStore
from mahavishnu_dlq.web import create_app
from tests.integration.cli_acceptance.conftest import Cli, clean_env, refused
from tests.web.conftest import OPERATOR_TOKEN, TOKENS

pytestmark = pytest.mark.opensearch

State = tuple[frozenset[str], frozenset[str]]


def state(url: str) -> State:
    """Every index and every index template on the node."""
    raw = OpenSearch(hosts=[url])
    try:
        indexes = frozenset(row["index"] for row in raw.cat.indices(format="json", h="index"))
        templates = frozenset(
            t["name"] for t in raw.indices.get_index_template()["index_templates"]
        )
    finally:
        raw.close()
    return indexes, templates


def cluster_name(url: str) -> str:
    raw = OpenSearch(hosts=[url])
    try:
        return str(raw.cluster.health()["cluster_name"])
    finally:
        raw.close()


async def _open_writing(url: str, index: str) -> None:
    store = OpenSearchStore(hosts=[url], index=index)
    await store.open()
    await store.close()


async def _drop(url: str, index: str) -> None:
    store = OpenSearchStore(hosts=[url], index=index)
    try:
        await store.drop()
    finally:
        await store.close()


@pytest.fixture
def near(opensearch_url: str) -> Iterator[str]:
    """An index made by a writing open (with its side indexes and templates): the one a
    typo misses. Dropped after."""
    index = f"ro-{uuid.uuid4().hex[:8]}-tasks"
    anyio.run(_open_writing, opensearch_url, index, backend="asyncio")
    try:
        yield index
    finally:
        anyio.run(_drop, opensearch_url, index, backend="asyncio")


def typo_of(index: str) -> str:
    return index.replace("-tasks", "-taks")


def settings_for(url: str, index: str, **extra: Any) -> DLQSettings:
    return DLQSettings(
        store="opensearch", opensearch=OpenSearchSettings(hosts=[url], index=index), **extra
    )


# -- the CLI ---------------------------------------------------------------------------------------


def test_reading_commands_on_a_missing_index_are_one_line_and_make_nothing(
    opensearch_url: str, near: str, tmp_path: Path
) -> None:
    typo = typo_of(near)
    before = state(opensearch_url)
    env = clean_env(
        MAHAVISHNU_DLQ_STORE="opensearch",
        MAHAVISHNU_DLQ_OPENSEARCH__HOSTS=json.dumps([opensearch_url]),
        MAHAVISHNU_DLQ_OPENSEARCH__INDEX=typo,
    )
    runs = Cli(env).many(
        ["status"],
        ["status", "--json"],
        ["list"],
        ["show", "t-1"],
        ["jobs", "list"],
        ["jobs", "show", "job-1"],
        ["breaker", "list"],
        ["replay", "--dry-run"],
    )
    journal = tmp_path / "journal"
    failover = Cli(
        {**env, "MAHAVISHNU_DLQ_STORE": "failover", "MAHAVISHNU_DLQ_FAILOVER__PATH": str(journal)}
    )("status")
    needles = (
        f"opensearch store not found: index {typo!r} does not exist",
        f"on cluster {cluster_name(opensearch_url)!r} at {opensearch_url}",
        f"did you mean {near!r}?",
        "Reading never creates an index",
    )
    for run in [*runs, failover]:
        refused(run, 1, *needles)
        assert run.stdout == ""
    assert state(opensearch_url) == before  # no index, no template: not even the side ones
    assert not journal.exists()  # a missing index is no outage: no journal for it


# -- the web console -------------------------------------------------------------------------------


@pytest.fixture
def anyio_backend() -> str:
    """AsyncOpenSearch runs on asyncio only."""
    return "asyncio"


@pytest.mark.anyio
async def test_the_web_console_answers_a_missing_index_and_makes_nothing(
    opensearch_url: str, near: str
) -> None:
    typo = typo_of(near)
    before = state(opensearch_url)
    app = create_app(settings=settings_for(opensearch_url, typo, web={"tokens": TOKENS}))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://testserver",
            headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"},
        ) as client,
    ):
        stats = await client.get("/api/v1/stats")
        assert stats.status_code == 503
        error = stats.json()["error"]
        assert error["type"] == "store_not_found"
        assert f"index {typo!r} does not exist" in error["message"]
        assert f"did you mean {near!r}?" in error["message"]
        health = await client.get("/api/v1/health")
        assert health.status_code == 503
        assert health.json()["status"] == "not_found"
        assert health.json()["error"]["type"] == "store_not_found"
        page = await client.get("/")
        assert page.status_code == 503
        assert page.headers["content-type"].startswith("text/html")
        assert "The store was not found" in page.text
        assert typo in page.text
        assert state(opensearch_url) == before
        await _open_writing(opensearch_url, typo)  # a processor starts: the index is made
        try:
            served = await client.get("/api/v1/stats")
            assert served.status_code == 200, served.text
            assert served.json()["total_stored"] == 0
        finally:
            await _drop(opensearch_url, typo)


# -- the library: get_statistics and the side indexes ----------------------------------------------


@pytest.fixture
async def tasks_only(opensearch_url: str) -> AsyncIterator[str]:
    """A tasks index made by hand, without its template and side indexes; all dropped after."""
    index = f"ro-{uuid.uuid4().hex[:8]}-tasks"
    raw = AsyncOpenSearch(hosts=[opensearch_url])
    try:
        await raw.indices.create(index=index, body=q.index_body())
    finally:
        await raw.close()
    try:
        yield index
    finally:
        await _drop(opensearch_url, index)


async def _mapping(url: str, index: str) -> dict[str, Any]:
    raw = AsyncOpenSearch(hosts=[url])
    try:
        found = await raw.indices.get_mapping(index=index)
    finally:
        await raw.close()
    return dict(found[index]["mappings"])


@pytest.mark.anyio
async def test_statistics_make_nothing_and_the_first_writes_make_the_side_indexes(
    opensearch_url: str, tasks_only: str
) -> None:
    index = tasks_only
    before = state(opensearch_url)
    dlq = DeadLetterQueue.from_settings(settings_for(opensearch_url, index))
    await dlq.connect(create=False)
    try:
        stats = await dlq.get_statistics()
        assert stats["total_stored"] == 0
        assert stats["breakers"] == {}
        assert await dlq.list_jobs() == []
        assert await dlq.list_breakers() == []
        assert state(opensearch_url) == before  # nothing made by reading

        job = await dlq.start_job("replay", dry_run=True)  # the first job write
        indexes, templates = state(opensearch_url)
        assert f"{index}-jobs" in indexes
        assert f"mahavishnu-dlq-{index}-jobs" in templates
        assert f"{index}-controls" not in indexes
        assert f"mahavishnu-dlq-{index}" not in templates  # the tasks' template: not a write
        assert (await _mapping(opensearch_url, f"{index}-jobs"))["dynamic"] == "strict"
        assert [found.job_id for found in await dlq.list_jobs()] == [job.job_id]

        await dlq.open_breaker("billing", reason="read-only test")  # the first control write
        indexes, templates = state(opensearch_url)
        assert f"{index}-controls" in indexes
        assert f"mahavishnu-dlq-{index}-controls" in templates
        assert (await _mapping(opensearch_url, f"{index}-controls"))["dynamic"] == "strict"
        assert [b.workflow for b in await dlq.list_breakers()] == ["billing"]
    finally:
        await dlq.stop()


@pytest.mark.anyio
async def test_a_missing_index_is_not_found_and_a_lookup_error(opensearch_url: str) -> None:
    store = OpenSearchStore(hosts=[opensearch_url], index=f"ro-{uuid.uuid4().hex[:8]}-none")
    before = state(opensearch_url)
    try:
        with pytest.raises(StoreNotFoundError) as raised:
            await store.open(create=False)
    finally:
        await store.close()
    assert isinstance(raised.value, LookupError)
    assert raised.value.backend == "opensearch"
    assert state(opensearch_url) == before


@pytest.mark.anyio
async def test_a_conflicting_mapping_is_refused_when_reading_and_left_alone(
    opensearch_url: str,
) -> None:
    index = f"ro-{uuid.uuid4().hex[:8]}-conflict"
    raw = AsyncOpenSearch(hosts=[opensearch_url])
    try:
        await raw.indices.create(
            index=index, body={"mappings": {"properties": {"status": {"type": "long"}}}}
        )
        store = OpenSearchStore(hosts=[opensearch_url], index=index)
        try:
            with pytest.raises(ConfigurationError, match="field 'status'"):
                await store.open(create=False)
        finally:
            await store.close()
        found = await raw.indices.get_mapping(index=index)
        assert found[index]["mappings"] == {"properties": {"status": {"type": "long"}}}
        assert f"mahavishnu-dlq-{index}" not in state(opensearch_url)[1]
    finally:
        await raw.indices.delete(index=index)
        await raw.close()
