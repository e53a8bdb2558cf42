"""The chaos controller does what it says to a real node: kill, restart, freeze, thaw.

What the tests show, and what chaos tests of the store can rely on:

- an acknowledged write survives SIGKILL (``index.translog.durability: request``, the
  default): after the restart on the same URL and data it is there;
- while the node is killed, a request fails at once with a connection error (refused),
  not after its timeout; if another server takes the port meanwhile, `start` says so;
- while it is frozen (SIGSTOP), TCP connections still open (the kernel completes them)
  but nothing answers: a request with a short timeout times out instead of blocking;
  after SIGCONT requests succeed at once, and a write that timed out during the freeze
  is applied nonetheless (a timeout is "unknown", never "failed");
- a node that is down when a client starts and is started later is found by polling.

Durations (restart, recovery after thaw) are listed under "chaos timings" at the end of
the run, not asserted.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import anyio
import pytest
from opensearchpy import AsyncOpenSearch, ConnectionTimeout, NotFoundError, OpenSearch
from opensearchpy import ConnectionError as OpenSearchConnectionError

from tests.chaos.node import ChaosNode, PortTakenError

#: The ``chaos_timing`` fixture: ``record(what, seconds)``.
Record = Callable[[str, float], None]


@pytest.fixture
def client(chaos_node: ChaosNode) -> Iterator[OpenSearch]:
    """A sync client with a timeout far longer than any failure these tests expect."""
    with OpenSearch(hosts=[chaos_node.url], timeout=30) as search:
        yield search


def _poll_until_answers(search: OpenSearch, timeout: float) -> float:
    """Seconds until ``GET /`` answers (1 s request timeout); fail after ``timeout``."""
    started = time.monotonic()
    while True:
        try:
            search.info(request_timeout=1)
        except OpenSearchConnectionError:
            if time.monotonic() - started > timeout:
                pytest.fail(f"the node did not answer within {timeout:g}s")
            time.sleep(0.05)
        else:
            return time.monotonic() - started


def test_acknowledged_writes_survive_sigkill_and_restart(
    chaos_node: ChaosNode, client: OpenSearch, index_name: str, chaos_timing: Record
) -> None:
    url = chaos_node.url
    client.index(index=index_name, id="searchable", body={"n": 1}, refresh="wait_for")
    client.index(index=index_name, id="acknowledged-only", body={"n": 2})  # no refresh

    chaos_node.kill()

    assert chaos_node.pid is None
    assert not chaos_node.is_up()
    started = time.monotonic()
    with pytest.raises(OpenSearchConnectionError) as caught:
        client.get(index=index_name, id="searchable")
    failed_after = time.monotonic() - started
    assert not isinstance(caught.value, ConnectionTimeout)
    assert failed_after < 5, f"a refused request took {failed_after:.1f}s (timeout 30s)"
    chaos_timing("request to the killed node fails", failed_after)
    address = urlsplit(url)
    assert address.port is not None
    with socket.create_server(("127.0.0.1", address.port)):  # someone takes the port
        with pytest.raises(PortTakenError, match=f"{address.port}.*taken"):
            chaos_node.start()
        assert chaos_node.pid is None

    started = time.monotonic()
    chaos_node.restart()
    chaos_timing("restart after SIGKILL until yellow", time.monotonic() - started)

    assert chaos_node.url == url
    assert chaos_node.is_up()
    assert client.get(index=index_name, id="searchable")["_source"] == {"n": 1}
    assert client.get(index=index_name, id="acknowledged-only")["_source"] == {"n": 2}
    client.indices.refresh(index=index_name)
    assert client.count(index=index_name)["count"] == 2


def test_a_frozen_node_times_out_and_recovers_after_thaw(
    chaos_node: ChaosNode, client: OpenSearch, index_name: str, chaos_timing: Record
) -> None:
    client.index(index=index_name, id="before", body={"n": 1})
    pid = chaos_node.pid

    chaos_node.freeze()

    assert chaos_node.is_frozen()
    assert chaos_node.pid == pid
    assert not chaos_node.is_up()
    address = urlsplit(chaos_node.url)
    assert address.hostname is not None
    assert address.port is not None
    with socket.create_connection((address.hostname, address.port), timeout=1):
        pass  # the kernel accepts for the frozen process
    started = time.monotonic()
    with pytest.raises(ConnectionTimeout):
        client.index(index=index_name, id="during", body={"n": 2}, request_timeout=1)
    timed_out_after = time.monotonic() - started
    assert timed_out_after < 10, f"a 1s request blocked for {timed_out_after:.1f}s"

    chaos_node.thaw()

    assert not chaos_node.is_frozen()
    chaos_timing("first answer after thaw", _poll_until_answers(client, timeout=30))
    assert chaos_node.is_up()
    assert client.get(index=index_name, id="before")["_source"] == {"n": 1}
    client.index(index=index_name, id="after", body={"n": 3})
    # The write that timed out was in the node's socket buffer: it is applied after all.
    deadline = time.monotonic() + 10
    while True:
        try:
            assert client.get(index=index_name, id="during")["_source"] == {"n": 2}
            break
        except NotFoundError:
            if time.monotonic() > deadline:
                pytest.fail("the write that timed out during the freeze was never applied")
            time.sleep(0.05)


@pytest.mark.anyio
async def test_async_client_times_out_on_a_frozen_node(
    chaos_node: ChaosNode, index_name: str
) -> None:
    async with AsyncOpenSearch(hosts=[chaos_node.url], timeout=30) as search:
        await search.index(index=index_name, id="before", body={"n": 1})
        chaos_node.freeze()
        try:
            with anyio.fail_after(10):
                with pytest.raises(ConnectionTimeout):
                    await search.get(index=index_name, id="before", request_timeout=1)
        finally:
            chaos_node.thaw()
        got = await search.get(index=index_name, id="before", request_timeout=5)
        assert got["_source"] == {"n": 1}


@pytest.mark.anyio
async def test_async_client_finds_a_node_that_appears_later(
    chaos_node: ChaosNode, index_name: str, chaos_timing: Record
) -> None:
    chaos_node.kill()
    async with AsyncOpenSearch(hosts=[chaos_node.url], timeout=30) as search:
        with anyio.fail_after(5):  # refused at once, not after the 30 s timeout
            with pytest.raises(OpenSearchConnectionError) as caught:
                await search.info()
        assert not isinstance(caught.value, ConnectionTimeout)

        started = time.monotonic()
        chaos_node.start(wait=False)  # returns at once: the test keeps the event loop
        with anyio.fail_after(chaos_node.timeout):
            while True:
                try:
                    health = await search.cluster.health(request_timeout=2)
                except OpenSearchConnectionError:  # refused: not listening yet
                    health = {}
                if health.get("status") in {"yellow", "green"}:
                    break
                await anyio.sleep(0.1)
        chaos_timing("down, started later: first yellow answer", time.monotonic() - started)
        await anyio.to_thread.run_sync(chaos_node.wait_ready)
        assert chaos_node.is_up()
        await search.index(index=index_name, id="late", body={"n": 1}, refresh="wait_for")
        assert (await search.count(index=index_name))["count"] == 1
