"""OpenSearchStore's control records against a real node, beyond the shared contract: the
``<index>-controls`` index (strict, created at open, re-created strict, dropped with the
store, a conflicting one refused), compare-and-set between two stores on one index (each
with its own per-key lock and its own remembered last writes, as two processes: real
409s), the request a change costs, a 409 that answers our own write, and a stored record
it cannot read."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from opensearchpy import AsyncOpenSearch, ConflictError, RequestError

from mahavishnu_dlq.errors import ConfigurationError, UnreadableRecordError
from mahavishnu_dlq.storage import opensearch_query as q
from mahavishnu_dlq.storage.opensearch import OpenSearchStore
from mahavishnu_dlq.storage.opensearch_client import refusal
from mahavishnu_dlq.storage.opensearch_controls import controls_index

pytestmark = [pytest.mark.anyio, pytest.mark.opensearch]

Record = dict[str, Any]


@pytest.fixture
def anyio_backend() -> str:
    """AsyncOpenSearch runs on asyncio only."""
    return "asyncio"


@pytest.fixture
def index_name() -> str:
    return f"dlq-controls-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def client(opensearch_url: str) -> AsyncIterator[Any]:
    raw = AsyncOpenSearch(hosts=[opensearch_url])
    try:
        yield raw
    finally:
        await raw.close()


class Counted:
    """Counts the document requests a client sends (``get``, ``index``, ``create``, 409s)."""

    def __init__(self, raw: Any) -> None:
        self.calls: list[str] = []
        for name in ("get", "index", "create", "delete"):
            self._wrap(raw, name)

    def _wrap(self, raw: Any, name: str) -> None:
        original = getattr(raw, name)

        async def counted(*args: Any, **kwargs: Any) -> Any:
            try:
                result = await original(*args, **kwargs)
            except ConflictError:
                self.calls.append(f"{name}:409")
                raise
            except Exception:
                self.calls.append(name)
                raise
            # a 409 asked for with ``ignore=`` comes back as its error body
            self.calls.append(f"{name}:409" if refusal(result) == 409 else name)
            return result

        setattr(raw, name, counted)

    def take(self) -> list[str]:
        calls, self.calls = self.calls, []
        return calls


@pytest.fixture
async def pair(opensearch_url: str, index_name: str) -> AsyncIterator[tuple[Any, ...]]:
    """Two stores on one index, each with a client of its own, counted."""
    raws = [AsyncOpenSearch(hosts=[opensearch_url]) for _ in range(2)]
    counts = [Counted(raw) for raw in raws]
    stores = [OpenSearchStore(hosts=[opensearch_url], index=index_name, client=raw) for raw in raws]
    for store in stores:
        await store.open()
    try:
        yield stores[0], stores[1], counts[0], counts[1]
    finally:
        await stores[0].drop()
        for store in stores:
            await store.close()
        for raw in raws:
            await raw.close()


def increment(current: Record | None) -> Record:
    return {"n": (current or {}).get("n", 0) + 1}


# -- the controls index ----------------------------------------------------------------------


async def test_the_controls_index_is_made_strict_at_open_and_dropped_with_the_store(
    opensearch_url: str, client: Any, index_name: str
) -> None:
    store = OpenSearchStore(hosts=[opensearch_url], index=index_name)
    controls = controls_index(index_name)
    assert controls == f"{index_name}-controls"
    try:
        await store.open()
        mappings = (await client.indices.get_mapping(index=controls))[controls]["mappings"]
        assert mappings["dynamic"] == "strict"
        assert mappings["properties"]["doc"] == {"type": "object", "enabled": False}
        assert mappings["properties"]["key"] == {"type": "keyword"}
        settings = await client.indices.get_settings(index=controls)
        assert settings[controls]["settings"]["index"]["number_of_shards"] == "1"
        with pytest.raises(RequestError, match="strict_dynamic_mapping_exception"):
            await client.index(index=controls, body={"surprise": 1})
        await store.open()  # again: idempotent
        await store.controls.mutate("breaker/a", increment)
        # deleted behind the store's back: a write re-creates it, strict (the template),
        # and the change remembered of the deleted index is not believed
        await client.indices.delete(index=controls)
        assert await store.controls.list("") == []
        assert await store.controls.mutate("breaker/a", increment) == {"n": 1}
        again = (await client.indices.get_mapping(index=controls))[controls]["mappings"]
        assert again["dynamic"] == "strict"
        await client.indices.delete(index=controls)
        assert await store.controls.get("breaker/a") is None
        assert await store.controls.delete("breaker/a") is False
    finally:
        await store.drop()
        await store.close()
    assert not await client.indices.exists(index=controls)
    assert not await client.indices.exists_index_template(name=f"mahavishnu-dlq-{controls}")


async def test_a_controls_index_with_a_conflicting_mapping_is_refused(
    opensearch_url: str, client: Any, index_name: str
) -> None:
    await client.indices.create(
        index=f"{index_name}-controls",
        body={"mappings": {"properties": {"key": {"type": "long"}}}},
    )
    store = OpenSearchStore(hosts=[opensearch_url], index=index_name)
    try:
        with pytest.raises(ConfigurationError) as caught:
            await store.open()
        message = str(caught.value)
        assert f"{index_name}-controls" in message
        assert "'key' is mapped as 'long'" in message
        assert caught.value.field == "opensearch.index"
    finally:
        await store.drop()
        await store.close()


# -- compare-and-set between stores ----------------------------------------------------------


async def test_increments_from_two_stores_at_once_all_land(pair: tuple[Any, ...]) -> None:
    first, second, first_calls, second_calls = pair

    async def bump(store: OpenSearchStore) -> None:
        await store.controls.mutate("rate/hot", increment)

    async with anyio.create_task_group() as group:
        for _ in range(25):
            group.start_soon(bump, first)
            group.start_soon(bump, second)
    for store in (first, second):
        assert await store.controls.get("rate/hot") == {"n": 50}
    conflicts = first_calls.take() + second_calls.take()
    assert any(call.endswith(":409") for call in conflicts)  # the stores did race


async def test_a_change_starts_from_the_stores_own_last_write_in_one_request(
    pair: tuple[Any, ...],
) -> None:
    first, _, calls, _ = pair
    await first.controls.mutate("breaker/w", increment)
    assert calls.take() == ["get", "create"]  # nothing remembered: read, then create
    for n in range(2, 6):
        assert await first.controls.mutate("breaker/w", increment) == {"n": n}
        assert calls.take() == ["index"]  # one conditional write
    assert await first.controls.get("breaker/w") == {"n": 5}


async def test_a_change_by_another_store_is_seen_through_the_conflict(
    pair: tuple[Any, ...],
) -> None:
    first, second, calls, _ = pair
    await first.controls.mutate("breaker/w", lambda _: {"state": "open", "n": 1})
    await second.controls.mutate("breaker/w", lambda _: {"state": "closed", "n": 7})
    calls.take()
    seen: list[Record | None] = []

    def only_when_closed(current: Record | None) -> Record:
        seen.append(current)
        assert current is not None
        if current["state"] != "closed":
            raise ValueError("the breaker is open")
        return {**current, "n": current["n"] + 1}

    # first remembers {"state": "open"}: refused on it, the index is asked before the
    # refusal stands, and the change lands on what second wrote
    assert await first.controls.mutate("breaker/w", only_when_closed) == {"state": "closed", "n": 8}
    assert seen == [{"state": "open", "n": 1}, {"state": "closed", "n": 7}]
    assert calls.take() == ["get", "index"]
    assert await second.controls.mutate("breaker/w", increment) == {"n": 9}  # first: stale
    assert await first.controls.mutate("breaker/w", increment) == {"n": 10}
    assert calls.take() == ["index:409", "get", "index"]


async def test_a_record_deleted_by_another_store_starts_again_from_none(
    pair: tuple[Any, ...],
) -> None:
    first, second, _, _ = pair
    await first.controls.mutate("rate/w", increment)
    await first.controls.mutate("rate/w", increment)
    assert await second.controls.delete("rate/w") is True
    seen: list[Record | None] = []

    def fresh(current: Record | None) -> Record:
        seen.append(current)
        return increment(current)

    assert await first.controls.mutate("rate/w", fresh) == {"n": 1}
    assert seen == [{"n": 2}, None]  # the remembered write, then what is stored: nothing
    assert await second.controls.get("rate/w") == {"n": 1}


async def test_a_conflict_answering_our_own_write_does_not_apply_the_change_twice(
    pair: tuple[Any, ...],
) -> None:
    """The transport's retry of a write that was applied gets a 409: it is ours."""
    first, _, _, _ = pair
    await first.controls.mutate("rate/w", increment)
    client = first._client
    applied_then_conflict = client.index

    async def flaky(*args: Any, **kwargs: Any) -> Any:
        await applied_then_conflict(*args, **kwargs)
        raise ConflictError(409, "version_conflict_engine_exception", {})

    client.index = flaky
    try:
        assert await first.controls.mutate("rate/w", increment) == {"n": 2}
    finally:
        client.index = applied_then_conflict
    assert await first.controls.get("rate/w") == {"n": 2}
    assert await first.controls.mutate("rate/w", increment) == {"n": 3}


# -- records it cannot read ------------------------------------------------------------------


async def test_an_unreadable_stored_record_is_skipped_by_listings_and_refused_by_reads(
    pair: tuple[Any, ...], client: Any, index_name: str
) -> None:
    store = pair[0]
    await store.controls.mutate("breaker/good", increment)
    index = f"{index_name}-controls"
    for key, body in (
        ("breaker/no-doc", {"key": "breaker/no-doc"}),
        ("breaker/moved", {"key": "breaker/elsewhere", "doc": {"n": 1}}),
    ):
        await client.index(index=index, id=q.doc_id(key), body=body, refresh="true")
    assert await store.controls.list("breaker/") == [("breaker/good", {"n": 1})]
    with pytest.raises(UnreadableRecordError, match="'breaker/no-doc' is stored but cannot be"):
        await store.controls.get("breaker/no-doc")
    with pytest.raises(UnreadableRecordError, match="kept as 'breaker/elsewhere'") as caught:
        await store.controls.mutate("breaker/moved", increment)
    assert caught.value.source is not None
    assert '"key": "breaker/elsewhere"' in caught.value.source
    assert await store.controls.get("breaker/elsewhere") is None
    assert await store.controls.delete("breaker/moved") is True
    assert await store.controls.mutate("breaker/moved", increment) == {"n": 1}
