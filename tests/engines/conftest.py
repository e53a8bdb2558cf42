"""The engine integrations' tests: a real Redis broker for Celery and Dramatiq, started
once per session (or the one ``MAHAVISHNU_DLQ_TEST_REDIS_URL`` names)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from .redis_server import REDIS_URL_VAR, RedisUnavailableError, redis_server


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a real Redis server for this session."""
    given = os.environ.get(REDIS_URL_VAR)
    if given:
        yield given
        return
    try:
        with redis_server(tmp_path_factory.mktemp("redis")) as url:
            yield url
    except RedisUnavailableError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(exc))
