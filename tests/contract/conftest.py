"""The store under test: one parameter per backend, each resolving only its own backend."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from mahavishnu_dlq.storage import MemoryStore, Store


@pytest.fixture(params=["memory"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    """A fresh, empty, opened store of each backend."""
    backend: Store
    if request.param == "memory":
        backend = MemoryStore()
    else:  # pragma: no cover - other backends arrive with their issues
        raise pytest.UsageError(f"unknown backend {request.param}")
    await backend.open()
    try:
        yield backend
    finally:
        await backend.clear()
        await backend.close()
