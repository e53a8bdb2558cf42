"""The web console's tests: an app over a memory-store queue, clients per role.

The app is called in-process through ``httpx.ASGITransport``; time is a FakeClock
and jobs run with ``run_job``, so nothing waits. Browser tests (``test_browser*``)
start a real server instead.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import datetime, timezone
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from mahavishnu_dlq import DeadLetterQueue
from mahavishnu_dlq.settings import DLQSettings
from mahavishnu_dlq.storage.memory import MemoryStore
from mahavishnu_dlq.testing import FakeClock
from mahavishnu_dlq.web import create_app

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
OPERATOR_TOKEN = "operator-token-0123456789"  # noqa: S105 - a test token
VIEWER_TOKEN = "viewer-token-0123456789ab"  # noqa: S105 - a test token
TOKENS = [
    {"name": "alice", "token": OPERATOR_TOKEN, "role": "operator"},
    {"name": "dashboards", "token": VIEWER_TOKEN, "role": "viewer"},
]


def web_settings(**overrides: Any) -> DLQSettings:
    """Memory-store settings with an operator and a viewer token."""
    return DLQSettings(store="memory", web={"tokens": TOKENS, **overrides})


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
async def dlq(clock: FakeClock) -> AsyncIterator[DeadLetterQueue]:
    """A connected memory-store queue with the web tokens in its settings."""
    queue = DeadLetterQueue(MemoryStore(), settings=web_settings(), clock=clock)
    await queue.connect()
    try:
        yield queue
    finally:
        await queue.stop()


@pytest.fixture
def app(dlq: DeadLetterQueue) -> FastAPI:
    return create_app(dlq)


ClientFor = Callable[[str | None], httpx.AsyncClient]


@pytest.fixture
async def client_for(app: FastAPI) -> AsyncIterator[ClientFor]:
    """``client_for(token)``: a client sending ``Bearer token`` (None: no header)."""
    opened: list[httpx.AsyncClient] = []

    def make(token: str | None) -> httpx.AsyncClient:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver", headers=headers
        )
        opened.append(client)
        return client

    try:
        yield make
    finally:
        for client in opened:
            await client.aclose()


@pytest.fixture
def operator(client_for: ClientFor) -> httpx.AsyncClient:
    return client_for(OPERATOR_TOKEN)


@pytest.fixture
def viewer(client_for: ClientFor) -> httpx.AsyncClient:
    return client_for(VIEWER_TOKEN)


@pytest.fixture
def anonymous(client_for: ClientFor) -> httpx.AsyncClient:
    return client_for(None)
