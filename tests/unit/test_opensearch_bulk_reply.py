"""A malformed bulk reply is a store fault: StoreUnavailableError naming the action.

A real node never sends one (a broken proxy might), so the client here is a fake
whose ``bulk`` answers a chosen body. StoreUnavailableError is what a failover store
serves from its fallback, like any other outage.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

from mahavishnu_dlq.errors import StoreUnavailableError
from mahavishnu_dlq.storage.opensearch_write import BulkWriter, Entry

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    """The bulk writer runs on asyncio, as AsyncOpenSearch does."""
    return "asyncio"


class FakeClient:
    """Answers every bulk request with ``reply``."""

    def __init__(self, reply: object) -> None:
        self.reply = reply
        self.calls = 0

    async def bulk(self, **_: Any) -> object:
        self.calls += 1
        return self.reply


@contextlib.contextmanager
def untranslated(action: str) -> Iterator[None]:
    yield


def writer(reply: object) -> BulkWriter:
    return BulkWriter(FakeClient(reply), "dlq-test", refresh="false", translated=untranslated)  # type: ignore[arg-type]


ENTRIES: list[Entry] = [({"delete": {"_id": "a"}}, None), ({"delete": {"_id": "b"}}, None)]
GOOD = {"status": 200}


@pytest.mark.parametrize(
    ("reply", "detail"),
    [
        ({"took": 3, "errors": False}, "no 'items'"),
        ({"items": "nope"}, "no 'items'"),
        ([], "no 'items'"),
        ({"items": [{"delete": GOOD}]}, "1 items in the reply for 2 sent"),
        ({"items": [{"delete": GOOD}, "x"]}, "item 1"),
        ({"items": [{"delete": GOOD}, {"delete": GOOD, "index": GOOD}]}, "item 1"),
        ({"items": [{"delete": GOOD}, {"delete": {"status": "200"}}]}, "item 1"),
        ({"items": [{"delete": GOOD}, {"delete": None}]}, "item 1"),
    ],
)
async def test_a_malformed_reply_is_store_unavailable(reply: object, detail: str) -> None:
    with pytest.raises(StoreUnavailableError) as caught:
        await writer(reply).write(ENTRIES, "purge")
    message = str(caught.value)
    assert message.startswith("opensearch store is unavailable: purge: malformed bulk reply")
    assert detail in message
    assert caught.value.backend == "opensearch"


async def test_a_well_formed_reply_gives_each_item() -> None:
    reply = {"items": [{"delete": GOOD}, {"delete": {"status": 404}}]}
    assert await writer(reply).write(ENTRIES, "purge") == [GOOD, {"status": 404}]
