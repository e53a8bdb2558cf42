"""The compat DeadLetterQueue on a real OpenSearch node, through the client the app
gives it: tasks outlive the queue object, and a store fault — here a malformed bulk
reply — is served by the in-memory fallback, or refused with ExternalServiceError when
``fail_on_opensearch_unavailable`` is set."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from mahavishnu_dlq.compat import OPENSEARCH_AVAILABLE, DeadLetterQueue, ExternalServiceError

pytestmark = [pytest.mark.anyio, pytest.mark.opensearch]

opensearchpy = pytest.importorskip("opensearchpy")
INDEX = "mahavishnu-dlq-tasks"  # the compat queue's index: the native default
TASK = {"type": "code_sweep"}


@pytest.fixture
def anyio_backend() -> str:
    """AsyncOpenSearch runs on asyncio only."""
    return "asyncio"


@pytest.fixture
async def client(opensearch_url: str) -> AsyncIterator[Any]:
    raw = opensearchpy.AsyncOpenSearch(hosts=[opensearch_url])
    indexes = f"{INDEX},{INDEX}-jobs,{INDEX}-controls"
    await raw.indices.delete(index=indexes, ignore_unavailable=True)
    try:
        yield raw
    finally:
        await raw.indices.delete(index=indexes, ignore_unavailable=True)
        await raw.close()


async def test_tasks_are_stored_on_the_clients_node(client: Any) -> None:
    assert OPENSEARCH_AVAILABLE
    first = DeadLetterQueue(opensearch_client=client, fail_on_opensearch_unavailable=True)
    await first.enqueue("wf_1", TASK, ["/r"], "Connection timeout")
    stats = await first.get_statistics()
    assert stats["queue_size"] == 1
    assert stats["degraded"] is False
    await first.shutdown()
    second = DeadLetterQueue(opensearch_client=client)
    found = await second.get_task("wf_1")
    assert found is not None
    assert found.error == "Connection timeout"
    assert await client.indices.exists(index=INDEX)
    await second.shutdown()


async def malformed_bulk(**_: Any) -> dict[str, Any]:
    return {"took": 1}  # no "items"


async def test_a_malformed_bulk_reply_fails_over(
    client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    dlq = DeadLetterQueue(opensearch_client=client)
    await dlq.get_statistics()  # opens the store (creates the index) first
    monkeypatch.setattr(client, "bulk", malformed_bulk)
    await dlq.enqueue("wf_1", TASK, ["/r"], "boom")
    assert await dlq.get_task("wf_1") is not None
    assert (await dlq.get_statistics())["degraded"] is True
    monkeypatch.undo()  # the node answers properly again: closing re-syncs the journal
    await dlq.shutdown()
    again = DeadLetterQueue(opensearch_client=client)
    assert await again.get_task("wf_1") is not None
    await again.shutdown()


async def test_a_malformed_bulk_reply_fails_closed(
    client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    dlq = DeadLetterQueue(opensearch_client=client, fail_on_opensearch_unavailable=True)
    await dlq.get_statistics()
    monkeypatch.setattr(client, "bulk", malformed_bulk)
    with pytest.raises(ExternalServiceError, match="malformed bulk reply"):
        await dlq.enqueue("wf_1", TASK, ["/r"], "boom")
    await dlq.shutdown()
