"""The ``max_size`` check against a full queue: refused enqueues do not ask the store
each time (one shared ask, a "full" verdict reused for a short window), a completion
in this process lets the next failure in at once, and ``on_full`` is checked."""

from __future__ import annotations

import logging

import anyio
import anyio.lowlevel
import pytest

from mahavishnu_dlq import DeadLetterQueue, Failure, QueueFullError
from mahavishnu_dlq.errors import ConfigurationError
from mahavishnu_dlq.models import FailedTask
from mahavishnu_dlq.processor import RetryProcessor
from mahavishnu_dlq.room import REUSE_SECONDS, make_room_batch
from mahavishnu_dlq.settings import DLQSettings
from mahavishnu_dlq.storage import MemoryStore
from mahavishnu_dlq.storage.base import Mutation
from mahavishnu_dlq.testing import FakeClock, make_task
from tests.unit.queue.conftest import succeed

pytestmark = pytest.mark.anyio


class CountingStore(MemoryStore):
    """A memory store whose ``open_count`` takes a few turns of the event loop (like a
    round trip) and is counted."""

    def __init__(self) -> None:
        super().__init__()
        self.open_counts = 0

    async def open_count(self) -> int:
        self.open_counts += 1
        for _ in range(3):
            await anyio.lowlevel.checkpoint()  # other producers run meanwhile
        return await super().open_count()


def _put(task: FailedTask) -> Mutation:
    return lambda _current: task


class Ticking:
    """The room's reuse-window clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _refuse_all(dlq: DeadLetterQueue, producers: int) -> int:
    refused = 0

    async def produce(n: int) -> None:
        nonlocal refused
        try:
            await dlq.enqueue(f"more-{n}", {"n": n}, error="boom")
        except QueueFullError:
            refused += 1

    async with anyio.create_task_group() as group:
        for n in range(producers):
            group.start_soon(produce, n)
    return refused


async def test_refused_enqueues_share_one_ask_and_reuse_the_full_verdict(
    clock: FakeClock,
) -> None:
    store = CountingStore()
    for n in range(5):  # full before this queue ever asked
        await store.mutate(f"old-{n}", _put(make_task(task_id=f"old-{n}")))
    dlq = DeadLetterQueue(store, max_size=5, clock=clock)
    ticking = Ticking()
    dlq._room.monotonic = ticking
    assert await _refuse_all(dlq, 50) == 50
    assert store.open_counts == 1  # one ask in flight, shared by the 50
    assert await _refuse_all(dlq, 50) == 50
    assert store.open_counts == 1  # the "full" verdict reused
    ticking.now += REUSE_SECONDS  # the window ends: another process may have freed room
    assert await _refuse_all(dlq, 50) == 50
    assert store.open_counts == 2
    results = await dlq.enqueue_many([Failure("batch-1", {"n": 1}, error="boom")])
    assert isinstance(results[0], QueueFullError)
    assert store.open_counts == 2  # the batch path reuses it too


async def test_a_completion_in_this_process_lets_the_next_failure_in_at_once(
    clock: FakeClock,
) -> None:
    store = CountingStore()
    dlq = DeadLetterQueue(store, max_size=3, clock=clock)
    dlq._room.monotonic = Ticking()  # the window never ends by itself here
    dlq.register_handler("wf", succeed)
    for n in range(3):
        await dlq.enqueue(f"t-{n}", {"n": n}, error="timeout", workflow="wf")
    assert await _refuse_all(dlq, 20) == 20
    asked = store.open_counts
    clock.advance(3600)  # the retries fall due
    processor = RetryProcessor(dlq)
    assert await processor.run_once() == 3
    assert dlq.lifetime["retry_success"] == 3
    for n in range(3):  # the room the processor freed, without asking the store
        await dlq.enqueue(f"new-{n}", {"n": n}, error="timeout", workflow="wf")
    assert store.open_counts == asked
    with pytest.raises(QueueFullError):  # and no more than that
        await dlq.enqueue("one-too-many", {"n": 9}, error="timeout", workflow="wf")
    assert await store.open_count() == 3


async def test_a_purge_forgets_the_verdict(clock: FakeClock) -> None:
    store = CountingStore()
    dlq = DeadLetterQueue(store, max_size=2, clock=clock)
    dlq._room.monotonic = Ticking()
    for n in range(2):
        await dlq.enqueue(f"t-{n}", {"n": n}, error="boom", retry_policy="never")
    assert await _refuse_all(dlq, 5) == 5
    await dlq.purge(status="pending")
    await dlq.enqueue("after-purge", {"n": 1}, error="boom")
    assert await store.open_count() == 1


def test_on_full_is_checked() -> None:
    assert DeadLetterQueue().on_full == "reject"
    with pytest.raises(ConfigurationError, match=r"on_full must be one of 'reject', 'arch") as e:
        DeadLetterQueue(on_full="drop")  # type: ignore[arg-type]
    assert e.value.field == "on_full"
    with pytest.raises(ConfigurationError, match="on_full: must be one of: reject, archive_o"):
        DLQSettings.load(on_full="drop")


def test_on_full_from_settings_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAHAVISHNU_DLQ_ON_FULL", "archive_oldest")
    settings = DLQSettings.load()
    assert settings.on_full == "archive_oldest"
    assert DeadLetterQueue.from_settings(settings, store=MemoryStore()).on_full == "archive_oldest"


def test_make_room_batches() -> None:
    assert make_room_batch(10_000, 1) == 100  # 1% of max_size
    assert make_room_batch(10_000, 250) == 250  # what a batch enqueue needs
    assert make_room_batch(50, 1) == 1
    assert make_room_batch(100_000, 50_000) == 10_000


async def test_make_room_archives_in_batches_and_logs_one_info_line_each(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    store = CountingStore()
    for n in range(200):
        task = make_task(task_id=f"old-{n:03}", status="exhausted", next_retry_at=None)
        await store.mutate(task.task_id, _put(task))
    dlq = DeadLetterQueue(store, max_size=200, on_full="archive_oldest", clock=clock)
    caplog.set_level(logging.DEBUG, logger="mahavishnu_dlq")  # the CLI tests raise it in-process
    for n in range(4):
        await dlq.enqueue(f"new-{n}", {"n": n}, error="boom")
    batches = [r for r in caplog.records if getattr(r, "action", None) == "dlq.make_room"]
    line = "dlq.make_room archived 2 oldest tasks (on_full=archive_oldest, max_size 200)"
    # 1% of max_size a batch: two batches for four failures
    assert [(r.levelno, r.getMessage()) for r in batches] == [(logging.INFO, line)] * 2
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert dlq.lifetime["archived_to_make_room"] == 4
    assert await store.open_count() == 200
