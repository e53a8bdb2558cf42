"""The aggregations beside records a store cannot read, on a real file and a real node.

The bad records are those the fault tests write by hand (SQLite rows, OpenSearch
documents). An aggregation reads no document: it leaves out what the stored values
show to be unreadable — a status, category or policy this version does not know, a
required field missing (OpenSearch) — and counts the rest, as ``count`` does; an
example error is never taken from a document that is not JSON.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from mahavishnu_dlq import DeadLetterQueue
from mahavishnu_dlq.storage.sqlite import SQLiteStore
from tests.integration.test_sqlite_faults import write_bad_rows

pytestmark = pytest.mark.anyio

HOUR = timedelta(hours=1)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_sqlite_leaves_out_rows_of_unknown_values(tmp_path: Path) -> None:
    path = tmp_path / "dlq.sqlite3"
    dlq = DeadLetterQueue(SQLiteStore(path))
    healthy = await dlq.enqueue("healthy", {"n": 1}, error="boom", workflow="wf")
    write_bad_rows(path, "healthy")  # bad-status ("frozen"), bad-json, bad-type, bad-id
    assert await dlq.count_tasks() == 5

    groups = {g.fingerprint: g for g in await dlq.fingerprint_groups(status=None)}
    assert {fp: g.count for fp, g in groups.items()} == {
        healthy.error_fingerprint: 2,  # healthy and bad-id; not bad-status
        "fp-json": 1,
        "fp-type": 1,
    }
    assert groups[healthy.error_fingerprint].by_status == {"pending": 2}
    assert groups[healthy.error_fingerprint].example_error == "boom"  # the newest
    assert (groups["fp-json"].error_type, groups["fp-json"].example_error) == ("", "")
    assert groups["fp-type"].example_error == ""  # a number, not a message
    assert groups["fp-type"].error_type == healthy.error_type

    now = healthy.failed_at + HOUR / 2  # the bad rows failed a second before it
    histogram = await dlq.failure_histogram(hours=1, buckets=1, now=now)
    assert [b.by_category for b in histogram] == [{healthy.error_category.value: 4}]
    await dlq.store.close()


@pytest.mark.opensearch
async def test_opensearch_leaves_out_documents_a_query_can_tell_are_unreadable(
    opensearch_url: str,
) -> None:
    from opensearchpy import AsyncOpenSearch  # noqa: PLC0415 - the extra

    from mahavishnu_dlq.storage.opensearch import OpenSearchStore  # noqa: PLC0415
    from tests.integration.test_opensearch_hostile import write_poison  # noqa: PLC0415

    index = f"dlq-insights-{uuid.uuid4().hex[:12]}"
    store = OpenSearchStore(hosts=[opensearch_url], index=index)
    client: Any = AsyncOpenSearch(hosts=[opensearch_url])
    dlq = DeadLetterQueue(store)
    try:
        await store.open()
        healthy = await dlq.enqueue("healthy", {"n": 1}, error="boom", workflow="wf")
        ids = await write_poison(client, index, healthy)
        assert await dlq.count_tasks() == 1 + len(ids)
        # unknown status or policy, a missing failed_at: left out; a bad Unicode id, bad
        # attempts or a bad task object: only a read of the document tells
        [group] = await dlq.fingerprint_groups(status=None)
        assert (group.fingerprint, group.count) == (healthy.error_fingerprint, 4)
        assert group.by_status == {"pending": 4}
        assert group.example_error == "boom"
        now = healthy.failed_at + HOUR / 2
        histogram = await dlq.failure_histogram(hours=1, buckets=1, now=now)
        assert [b.by_category for b in histogram] == [{healthy.error_category.value: 4}]
    finally:
        await store.drop()
        await store.close()
        await client.close()
