"""FailoverStore with a primary that can be taken down or frozen on demand.

The primary here is a :class:`MemoryStore` behind a switch, so the breaker, the
journal, seeding, re-sync and fail-closed mode are tested deterministically:
recovery is driven by calling :meth:`FailoverStore.probe` (the background probe
only sleeps and calls it). The same store against a real node that is killed and
frozen is tested in ``tests/chaos/``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import anyio
import pytest
from rich.console import Console

from mahavishnu_dlq import DeadLetterQueue, lifecycle
from mahavishnu_dlq.cli.render import render_statistics
from mahavishnu_dlq.errors import StoreUnavailableError, UnreadableRecordError
from mahavishnu_dlq.models import Attempt, AttemptOutcome, DeadLetterStatus, FailedTask, TaskFilter
from mahavishnu_dlq.storage import FailoverStore, MemoryStore
from mahavishnu_dlq.storage.base import Mutation
from mahavishnu_dlq.storage.failover import merge_versions
from mahavishnu_dlq.storage.journal import JournalStore
from mahavishnu_dlq.testing import FakeClock, make_task

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


class Switchable(MemoryStore):
    """A memory store that can be down (refuses at once) or frozen (never answers).

    ``mutate_many`` also notes the ids of each call (``batches``), awaits
    ``during_batch`` first when set, and hands back ``refuse[task_id]`` for those ids
    instead of applying them (a record it cannot read, a connection lost mid-batch)."""

    backend = "switchable"

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.frozen = False
        self.calls = 0
        self.batches: list[list[str]] = []
        self.during_batch: Callable[[], Awaitable[None]] | None = None
        self.refuse: dict[str, Exception] = {}

    async def mutate_many(
        self, items: Sequence[tuple[str, Mutation]]
    ) -> list[FailedTask | Exception]:
        self.batches.append([task_id for task_id, _ in items])
        if self.during_batch is not None:
            await self.during_batch()
        results: list[FailedTask | Exception] = []
        for task_id, fn in items:
            refused = self.refuse.get(task_id)
            if refused is not None:
                results.append(refused)
            else:
                results += await super().mutate_many([(task_id, fn)])
        return results

    async def _gate(self) -> None:
        self.calls += 1
        if self.down:
            raise StoreUnavailableError(self.backend, "connection refused")
        if self.frozen:
            await anyio.sleep_forever()

    def __getattribute__(self, name: str) -> Any:
        attribute = super().__getattribute__(name)
        if name in _GATED:

            async def gated(*args: Any, **kwargs: Any) -> Any:
                await self._gate()
                return await attribute(*args, **kwargs)

            return gated
        return attribute


_GATED = {
    "open",
    "get",
    "mutate",
    "mutate_many",
    "claim_due",
    "next_due_at",
    "delete",
    "query",
    "count",
    "open_count",
    "statistics",
    "purge",
    "clear",
}


def put(task: FailedTask) -> Callable[[FailedTask | None], FailedTask]:
    return lambda _current: task


@pytest.fixture
def primary() -> Switchable:
    return Switchable()


@pytest.fixture(params=["memory", "journal"])
async def store(
    request: pytest.FixtureRequest, primary: Switchable, tmp_path: Path
) -> AsyncIterator[FailoverStore]:
    """A failover store over ``primary``, its fallback in memory or a journal file."""
    fallback = JournalStore(tmp_path / "journal") if request.param == "journal" else None
    failover = FailoverStore(
        primary, fallback, failure_threshold=2, probe_interval=3600, timeout=0.2
    )
    await failover.open()
    yield failover
    primary.down = primary.frozen = False
    await failover.close()


async def test_a_healthy_primary_serves_everything(
    store: FailoverStore, primary: Switchable
) -> None:
    await store.mutate("a", put(make_task(task_id="a")))
    assert await primary.get("a") is not None
    assert (await store.get("a")) == (await primary.get("a"))
    assert store.health["serving"] == "primary"
    assert not store.degraded
    assert store.pending_resync == 0


async def test_writes_fail_over_and_the_circuit_opens_after_the_threshold(
    store: FailoverStore, primary: Switchable, caplog: pytest.LogCaptureFixture
) -> None:
    primary.down = True
    with caplog.at_level(logging.WARNING, logger="mahavishnu_dlq.storage.failover"):
        await store.mutate("a", put(make_task(task_id="a")))  # failure 1: served by fallback
        assert store.degraded
        assert not store.health["circuit_open"]
        await store.mutate("b", put(make_task(task_id="b")))  # failure 2: the circuit opens
        assert store.health["circuit_open"]
        calls = primary.calls
        for i in range(5):  # open: straight to the fallback, the primary is not asked
            await store.mutate(f"c{i}", put(make_task(task_id=f"c{i}")))
        assert primary.calls == calls
    assert store.health["serving"] == "fallback"
    assert store.pending_resync == 7
    assert {t.task_id for t in await store.query(TaskFilter(), limit=100)} == {
        "a",
        "b",
        *(f"c{i}" for i in range(5)),
    }
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # once per transition, not per call
    assert "serving from the fallback" in warnings[0].getMessage()


async def test_recovery_resyncs_then_closes_the_circuit(
    store: FailoverStore, primary: Switchable, caplog: pytest.LogCaptureFixture
) -> None:
    primary.down = True
    for i in range(30):
        await store.mutate(f"t{i}", put(make_task(task_id=f"t{i}")))
    assert await store.probe() is False  # still down
    assert store.health["circuit_open"]
    assert store.degraded_since is not None
    primary.down = False
    with caplog.at_level(logging.INFO, logger="mahavishnu_dlq.storage.failover"):
        assert await store.probe() is True
    assert not store.degraded
    assert store.health["serving"] == "primary"
    assert store.recovered_at is not None
    assert store.resynced_total == 30
    assert store.health["last_resync_changes"] == 30
    assert store.health["last_resync_seconds"] >= 0
    assert store.health["degraded_since"] is None  # the outage is over
    assert await primary.count() == 30
    assert store.fallback is not None
    assert await store.fallback.count() == 0  # handed over, not kept twice
    (back,) = [r for r in caplog.records if "re-synced" in r.getMessage()]
    assert back.levelno == logging.INFO  # the outage's end is no warning


async def outage(store: FailoverStore, primary: Switchable, count: int) -> None:
    """``count`` records ``t0``… written while the primary is down; then it is back."""
    primary.down = True
    for i in range(count):
        await store.mutate(f"t{i}", put(make_task(task_id=f"t{i}")))
    assert store.pending_resync == count
    primary.down = False


async def test_the_resync_merges_in_batches_that_grow_while_they_are_fast(
    primary: Switchable,
) -> None:
    store = FailoverStore(primary, failure_threshold=1, probe_interval=3600, timeout=5)
    await store.open()
    try:
        await outage(store, primary, 3000)
        calls = primary.calls
        assert await store.probe()
        asked = primary.calls - calls
        assert await primary.count() == 3000
        sizes = [len(ids) for ids in primary.batches]
        assert sum(sizes) == 3000
        assert sizes[0] == 256  # the first batch is small …
        assert max(sizes) > 256  # … later ones grow (a memory primary answers at once)
        assert max(sizes) <= 8192
        assert asked == 1 + len(sizes)  # open, then one call per batch
    finally:
        await store.close()


async def test_a_change_made_again_during_the_resync_follows_in_the_next_pass(
    store: FailoverStore, primary: Switchable
) -> None:
    await outage(store, primary, 10)

    async def change_t3() -> None:
        primary.during_batch = None
        # t3 is journaled: the change is made in the fallback, while its merge is on its way
        await store.mutate("t3", lambda t: _present(t).evolve(metadata={"again": True}))

    primary.during_batch = change_t3
    assert await store.probe()
    assert primary.batches == [[f"t{i}" for i in range(10)], ["t3"]]
    stored = await primary.get("t3")
    assert stored is not None
    assert stored.metadata == {"again": True}
    assert store.pending_resync == 0
    assert store.fallback is not None
    assert await store.fallback.count() == 0


async def test_a_primary_that_fails_during_the_resync_keeps_what_it_did_not_take(
    store: FailoverStore, primary: Switchable
) -> None:
    await outage(store, primary, 10)
    lost = StoreUnavailableError("switchable", "connection reset during the batch")
    primary.refuse = {"t7": lost, "t8": lost}
    assert await store.probe() is False
    assert store.pending_resync == 2  # the rest was taken and left the journal
    assert store.health["circuit_open"]
    assert "connection reset" in (store.last_error or "")
    assert {t.task_id for t in await primary.query(TaskFilter(), limit=100)} == {
        f"t{i}" for i in range(10) if i not in (7, 8)
    }
    primary.refuse = {}
    assert await store.probe() is True
    assert await primary.count() == 10


async def test_a_change_the_primary_refuses_is_set_aside_and_the_rest_goes_on(
    store: FailoverStore, primary: Switchable
) -> None:
    await outage(store, primary, 10)
    primary.refuse = {"t2": UnreadableRecordError("t2", "written by a newer version")}
    assert await store.probe() is True
    health = store.health
    assert (health["circuit_open"], health["pending_resync"], health["unsynced"]) == (False, 0, 1)
    assert await primary.count() == 9
    kept = await store.get("t2")  # served from the fallback of this process
    assert kept is not None


async def test_a_resync_batch_that_outlasts_the_timeout_keeps_the_journal(
    store: FailoverStore, primary: Switchable
) -> None:
    await outage(store, primary, 10)
    primary.during_batch = anyio.sleep_forever
    with anyio.fail_after(5):  # 0.2 s timeout per batch, generous bound for a busy machine
        assert await store.probe() is False
    assert store.pending_resync == 10
    assert store.last_error == "no answer within 0.2 s"
    primary.during_batch = None
    assert await store.probe() is True
    assert await primary.count() == 10


async def test_the_newer_version_wins_and_both_attempt_histories_are_kept(
    store: FailoverStore, primary: Switchable
) -> None:
    first = Attempt(number=1, started_at=at(10), finished_at=at(11), outcome=AttemptOutcome.FAILURE)
    second = Attempt(
        number=2, started_at=at(20), finished_at=at(21), outcome=AttemptOutcome.FAILURE
    )
    ours = make_task(task_id="x", attempts=[first], updated_at=at(30), error="ours")
    theirs = make_task(task_id="x", attempts=[second], updated_at=at(40), error="theirs")
    merged = merge_versions(theirs, ours)  # theirs is newer: it wins, our attempt joins
    assert merged.error == "theirs"
    assert [a.number for a in merged.attempts] == [1, 2]
    assert merge_versions(None, ours) is ours

    # the same through a re-sync: another process wrote a newer version meanwhile
    primary.down = True
    await store.mutate("x", put(ours))
    await store.mutate("y", put(make_task(task_id="y", updated_at=at(50))))
    primary.down = False
    await primary.mutate("x", put(theirs))
    assert await store.probe()
    stored = await primary.get("x")
    assert stored is not None
    assert stored.error == "theirs"
    assert [a.number for a in stored.attempts] == [1, 2]


async def test_an_attempt_claimed_before_the_outage_finishes_in_the_fallback(
    store: FailoverStore, primary: Switchable
) -> None:
    await store.mutate("job", put(make_task(task_id="job", next_retry_at=at(0))))
    claimed = await store.claim_due(
        at(1),
        10,
        lambda t: lifecycle.claim(
            _present(t),
            now=at(1),
            owner="w",
            lease_seconds=60,
            trigger="processor",
            attempts_kept=5,
        ),
    )
    assert [t.task_id for t in claimed] == ["job"]
    primary.down = True  # the node dies mid-attempt
    finished = await store.mutate(
        "job",
        lambda t: lifecycle.finish(
            _present(t), now=at(2), owner="w", outcome=AttemptOutcome.SUCCESS
        ),
    )
    assert finished.status is DeadLetterStatus.COMPLETED
    primary.down = False
    assert await store.probe()
    stored = await primary.get("job")
    assert stored is not None
    assert stored.status is DeadLetterStatus.COMPLETED
    assert stored.attempts[-1].outcome is AttemptOutcome.SUCCESS


def _present(task: FailedTask | None) -> FailedTask:
    assert task is not None
    return task


async def test_a_frozen_primary_costs_a_caller_at_most_the_timeout(
    store: FailoverStore, primary: Switchable
) -> None:
    primary.frozen = True
    with anyio.fail_after(2):  # 0.2 s timeout per call, generous bound for a busy machine
        await store.mutate("a", put(make_task(task_id="a")))
        await store.mutate("b", put(make_task(task_id="b")))
    assert store.health["circuit_open"]
    assert store.last_error == "no answer within 0.2 s"
    assert await store.get("a") is not None


async def test_a_delete_during_the_outage_reaches_the_primary_unless_it_is_newer(
    store: FailoverStore, primary: Switchable, clock_now: Callable[[], datetime]
) -> None:
    await store.mutate("old", put(make_task(task_id="old", updated_at=at(0))))
    await store.mutate("new", put(make_task(task_id="new", updated_at=at(0))))
    primary.down = True
    assert await store.delete("old")
    assert await store.delete("new")
    assert await store.get("old") is None
    primary.down = False
    await primary.mutate(
        "new", put(make_task(task_id="new", updated_at=clock_now() + timedelta(hours=1)))
    )
    assert await store.probe()
    assert await primary.get("old") is None
    assert await primary.get("new") is not None  # changed after the delete: kept


@pytest.fixture
def clock_now() -> Callable[[], datetime]:
    return lambda: datetime.now(timezone.utc)


async def test_fail_closed_refuses_instead_of_keeping_changes_in_memory(
    primary: Switchable,
) -> None:
    store = FailoverStore(primary, fail_closed=True, failure_threshold=1, probe_interval=3600)
    await store.open()
    try:
        primary.down = True
        with pytest.raises(StoreUnavailableError):
            await store.mutate("a", put(make_task(task_id="a")))
        assert store.health["serving"] == "none"
        primary.frozen = True  # the open circuit answers at once, the primary is not asked
        calls = primary.calls
        with anyio.fail_after(0.1), pytest.raises(StoreUnavailableError, match="circuit open"):
            await store.get("a")
        assert primary.calls == calls
        primary.frozen = False
        assert store.pending_resync == 0  # nothing was kept in memory
        primary.down = False
        assert await store.probe() is True
        assert store.health["serving"] == "primary"
        await store.mutate("a", put(make_task(task_id="a")))
        assert await primary.get("a") is not None
    finally:
        await store.close()


async def test_a_primary_down_at_start_opens_degraded_and_syncs_when_it_appears(
    primary: Switchable,
) -> None:
    primary.down = True
    store = FailoverStore(primary, probe_interval=3600)
    await store.open()  # no error: degraded
    try:
        assert store.health["circuit_open"]
        await store.mutate("early", put(make_task(task_id="early")))
        primary.down = False
        assert await store.probe()
        assert await primary.get("early") is not None
    finally:
        await store.close()


async def test_queue_statistics_show_the_failover_state(primary: Switchable) -> None:
    clock = FakeClock(T0)
    store = FailoverStore(primary, failure_threshold=1, probe_interval=3600, clock=clock)
    dlq = DeadLetterQueue(store, clock=clock)
    await dlq.connect()
    try:
        primary.down = True
        await dlq.enqueue("t1", {"a": 1}, error=ConnectionError("refused"))
        stats = await dlq.get_statistics()
        assert stats["backend"] == "failover"
        assert stats["degraded"] is True
        health = stats["failover"]
        assert health["serving"] == "fallback"
        assert health["pending_resync"] == 1
        assert health["failed_over_at"] == T0
        assert stats["queue_size"] == 1  # counted from the fallback while it serves
        console = Console(width=120, record=True)
        console.print(render_statistics(stats))  # what `mahavishnu-dlq status` shows
        shown = console.export_text()
        assert "failover (serving: fallback; primary switchable)" in shown
        assert re.search(r"awaiting re-sync\s+1", shown)
        assert re.search(r"last failover\s+2026-01-01 00:00:00.000 UTC", shown)
        primary.down = False
        assert await store.probe()
        stats = await dlq.get_statistics()
        assert stats["degraded"] is False
        assert stats["failover"]["recovered_at"] == T0
    finally:
        await dlq.stop()


async def test_fail_closed_queue_gives_the_caller_its_own_exception(primary: Switchable) -> None:
    store = FailoverStore(primary, fail_closed=True, failure_threshold=1, probe_interval=3600)
    dlq = DeadLetterQueue(store)
    await dlq.connect()
    try:
        primary.down = True

        async def workflow(task: dict[str, Any], repos: list[str]) -> None:
            raise ConnectionError("payment gateway down")

        with pytest.raises(ConnectionError, match="payment gateway down") as caught:
            await dlq.execute_with_dlq(workflow, {"order": 1}, task_id="o-1")
        assert isinstance(caught.value.dlq_error, StoreUnavailableError)  # type: ignore[attr-defined]
    finally:
        primary.down = False
        await dlq.stop()
