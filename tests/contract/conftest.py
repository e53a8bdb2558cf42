"""The store under test: one parameter per backend, each resolving only its own backend.

The OpenSearch parameter asks for the session's node (``opensearch_url``), so a run
that selects only memory cases never starts one. Each OpenSearch test gets a fresh
index, dropped afterwards. ``AsyncOpenSearch`` runs on asyncio only: under trio the
OpenSearch cases skip (the store itself refuses trio with a clear error).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mahavishnu_dlq.storage import FailoverStore, MemoryStore, Store
from mahavishnu_dlq.storage.sqlite import SQLiteStore
from tests.secured_node import PASSWORDS, SECURED_INDEX, SecuredNode


@pytest.fixture(
    params=[
        "memory",
        "sqlite",
        "failover",
        pytest.param("opensearch", marks=pytest.mark.opensearch),
        pytest.param("secured", marks=pytest.mark.opensearch),
    ]
)
async def store(
    request: pytest.FixtureRequest, anyio_backend: str, tmp_path: Path
) -> AsyncIterator[Store]:
    """A fresh, empty, opened store of each backend."""
    if request.param == "sqlite":  # a file of its own in the test's directory
        sqlite = SQLiteStore(tmp_path / "contract.sqlite3")
        await sqlite.open()
        yield sqlite
        await sqlite.clear()
        await sqlite.close()
        return
    if request.param == "failover":  # healthy: the primary serves, through the wrapper
        failover = FailoverStore(MemoryStore())
        await failover.open()
        yield failover
        await failover.clear()
        await failover.close()
        return
    if request.param == "memory":
        memory = MemoryStore()
        await memory.open()
        yield memory
        await memory.clear()
        await memory.close()
        return
    if anyio_backend != "asyncio":
        pytest.skip("OpenSearchStore runs on asyncio only (opensearch-py's AsyncOpenSearch)")
    from mahavishnu_dlq.storage.opensearch import OpenSearchStore  # noqa: PLC0415 - extra

    if request.param == "secured":  # HTTPS, as a user holding only the documented role
        node: SecuredNode = request.getfixturevalue("secured_opensearch")
        index = f"{SECURED_INDEX}-contract-{uuid.uuid4().hex[:12]}"
        secured = OpenSearchStore(
            hosts=[node.url],
            index=index,
            username="dlq",
            password=PASSWORDS["dlq"],
            ca_certs=node.ca_file,
        )
        await secured.open()
        try:
            yield secured
        finally:
            await secured.close()
            # dropping an index is an administrator's job, not the role's
            node.admin("DELETE", f"/{index}*")
            node.admin("DELETE", f"/_index_template/mahavishnu-dlq-{index}*")
        return
    url = request.getfixturevalue("opensearch_url")
    search = OpenSearchStore(hosts=[url], index=f"dlq-contract-{uuid.uuid4().hex[:12]}")
    await search.open()
    try:
        yield search
    finally:
        await search.drop()
        await search.close()
