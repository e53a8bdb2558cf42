"""RetryProcessor tests: a FakeClock, a WatchedStore and a queue over them.

Time is a :class:`FakeClock` and the processor is driven by ``run_once()`` /
``drain()`` wherever possible; background runs synchronise on anyio Events (a
store that signals each write), with ``fail_after`` only as a safety net.
"""

from __future__ import annotations

import random

import pytest

from mahavishnu_dlq.queue import DeadLetterQueue
from mahavishnu_dlq.testing import FakeClock

from .support import WatchedStore


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store() -> WatchedStore:
    return WatchedStore()


@pytest.fixture
def dlq(store: WatchedStore, clock: FakeClock) -> DeadLetterQueue:
    return DeadLetterQueue(store, clock=clock, worker_id="main", rng=random.Random(7))
