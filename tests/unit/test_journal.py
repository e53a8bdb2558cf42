"""The failover journal on disk: slots, adoption, tombstones, and a restart mid-outage.

A process that dies during an outage is played by a failover store that is not
closed properly: its journal file stays, as a SIGKILL leaves it (the re-sync on
close is skipped while the circuit is open). The real thing — a producer SIGKILLed
mid-stream against a killed OpenSearch node — is ``tests/chaos/test_durable_failover.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from mahavishnu_dlq.errors import ConfigurationError, StoreUnavailableError
from mahavishnu_dlq.models import FailedTask, TaskFilter, encode_json
from mahavishnu_dlq.settings import DLQSettings, state_dir
from mahavishnu_dlq.storage import FailoverStore, MemoryStore
from mahavishnu_dlq.storage.build import store_from_settings
from mahavishnu_dlq.storage.journal import JournalStore
from mahavishnu_dlq.storage.sqlite import SQLiteStore
from mahavishnu_dlq.testing import make_task
from tests.unit.test_failover_store import Switchable

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def put(task: FailedTask) -> Callable[[FailedTask | None], FailedTask]:
    return lambda _current: task


def files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("*.sqlite3"))


async def test_two_live_journals_of_one_directory_take_two_slots(tmp_path: Path) -> None:
    first, second = JournalStore(tmp_path), JournalStore(tmp_path)
    await first.open()
    await second.open()
    try:
        assert (first.slot, second.slot) == (1, 2)
        await first.mutate("a", put(make_task(task_id="a")))
        await second.mutate("b", put(make_task(task_id="b")))
        assert [t.task_id for t in await first.query(TaskFilter(), limit=10)] == ["a"]
        assert [t.task_id for t in await second.query(TaskFilter(), limit=10)] == ["b"]
        assert first.location == str(tmp_path / "journal-1.sqlite3")
    finally:
        await first.close()
        await second.close()
    assert files(tmp_path) == ["journal-1.sqlite3", "journal-2.sqlite3"]


async def test_the_next_journal_adopts_what_dead_ones_left(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first, second = JournalStore(tmp_path), JournalStore(tmp_path)
    await first.open()
    await second.open()
    older = make_task(task_id="shared", retry_count=1).evolve(updated_at=T0)
    newer = make_task(task_id="shared", retry_count=2).evolve(updated_at=T0 + timedelta(1))
    await first.mutate("shared", put(older))
    await first.mutate("only-first", put(make_task(task_id="only-first")))
    await second.mutate("shared", put(newer))
    await second.delete_with_tombstone("gone", T0)
    await first.close()  # both processes are gone; their journals stay
    await second.close()

    with caplog.at_level(logging.WARNING, logger="mahavishnu_dlq.storage.failover"):
        heir = JournalStore(tmp_path)
        await heir.open()
    try:
        assert heir.slot == 1  # the first slot's file is its own journal now
        assert heir.adopted == 2  # journal-2: one record, one tombstone
        ids, tombstones = await heir.entries()
        assert sorted(ids) == ["only-first", "shared"]
        assert tombstones == {"gone": T0}
        shared = await heir.get("shared")
        assert shared is not None
        assert shared.retry_count == 2  # the newer version won
        assert files(tmp_path) == ["journal-1.sqlite3"]  # the adopted file is gone
        assert any("adopted 2 changes" in r.getMessage() for r in caplog.records)
    finally:
        await heir.close()


async def test_a_journal_held_by_a_live_process_is_not_adopted(tmp_path: Path) -> None:
    live = JournalStore(tmp_path)
    await live.open()
    await live.mutate("mine", put(make_task(task_id="mine")))
    other = JournalStore(tmp_path)
    await other.open()
    try:
        assert other.adopted == 0
        assert await other.get("mine") is None
        assert await live.get("mine") is not None
    finally:
        await other.close()
        await live.close()


async def test_tombstones_revive_discard_and_forget(tmp_path: Path) -> None:
    journal = JournalStore(tmp_path)
    await journal.open()
    try:
        task = make_task(task_id="t")
        await journal.mutate("t", put(task))
        assert await journal.delete_with_tombstone("t", T0) is True
        assert await journal.entries() == ([], {"t": T0})
        await journal.mutate("t", put(task))  # written again: no longer deleted
        assert await journal.entries() == (["t"], {})

        stored, version = (await journal.records(["t", "unknown"]))["t"]
        assert stored == task
        # read with the JSON text of its payload, so its re-sync does not encode it again
        assert stored.payload_json() == (encode_json(task.task), encode_json(task.metadata))
        changed = stored.evolve(retry_count=5)
        await journal.mutate("t", put(changed))
        await journal.discard([("t", version)])  # a stale version: the newer one stays
        assert await journal.get("t") == changed
        assert list(await journal.records(["t"])) == ["t"]
        await journal.discard([("t", (await journal.records(["t"]))["t"][1])])
        assert await journal.get("t") is None

        await journal.delete_with_tombstone("u", T0)
        await journal.forget_tombstones([("u", T0 + timedelta(seconds=1))])  # another time
        assert (await journal.entries())[1] == {"u": T0}
        await journal.forget_tombstones([("u", T0)])
        assert await journal.entries() == ([], {})

        await journal.mutate("v", put(make_task(task_id="v")))
        await journal.delete_with_tombstone("w", T0)
        assert await journal.clear() == 1
        assert await journal.entries() == ([], {})
    finally:
        await journal.close()


async def test_an_adopted_deletion_does_not_remove_a_newer_record(tmp_path: Path) -> None:
    dead, live = JournalStore(tmp_path), JournalStore(tmp_path)
    await dead.open()
    await live.open()
    await dead.delete_with_tombstone("x", T0)
    newer = make_task(task_id="x").evolve(updated_at=T0 + timedelta(hours=1))
    await live.mutate("x", put(newer))
    await dead.close()  # slot 1 is free: live (slot 2) is closed and reopened
    await live.close()
    heir = JournalStore(tmp_path)
    await heir.open()  # takes slot 1 (the deletion), adopts slot 2 (the newer record)
    try:
        assert heir.slot == 1
        assert await heir.get("x") == newer
    finally:
        await heir.close()


async def test_a_journal_with_unreadable_records_is_kept_aside(tmp_path: Path) -> None:
    dead = JournalStore(tmp_path)
    other = JournalStore(tmp_path)
    await other.open()  # slot 1, held while the dead one writes slot 2
    await dead.open()
    await dead.mutate("good", put(make_task(task_id="good")))
    await dead.mutate("bad", put(make_task(task_id="bad")))
    await dead.close()
    raw = SQLiteStore(tmp_path / "journal-2.sqlite3")
    await raw.open()
    await raw._write(
        lambda c: c.execute("UPDATE tasks SET doc = '{not json' WHERE task_id = 'bad'")
    )
    await raw.close()
    await other.close()
    heir = JournalStore(tmp_path)
    await heir.open()
    try:
        assert await heir.get("good") is not None
        kept = [name for name in files(tmp_path) if name != "journal-1.sqlite3"]
        assert len(kept) == 1
        assert kept[0].startswith("unreadable-journal-2-")  # out of the slots, kept whole
        raw = SQLiteStore(tmp_path / kept[0])
        try:
            assert await raw.count() == 2  # the readable record too: nothing lost
        finally:
            await raw.close()
    finally:
        await heir.close()


async def test_an_unusable_directory_names_the_setting(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    journal = JournalStore(blocker / "journal")
    with pytest.raises(StoreUnavailableError, match=r"failover\.path"):
        await journal.open()


async def outage_then_death(directory: Path, count: int) -> Switchable:
    """A process writes ``count`` records and deletes one during an outage, and dies:
    its store is never closed (as a SIGKILL leaves it). The primary it saw."""
    primary = Switchable()
    await primary.mutate("old", put(make_task(task_id="old")))
    primary.down = True
    store = FailoverStore(
        primary, JournalStore(directory), failure_threshold=1, probe_interval=3600, timeout=1
    )
    await store.open()
    for i in range(count):
        await store.mutate(f"t{i}", put(make_task(task_id=f"t{i}")))
    await store.delete("old")
    assert store.pending_resync == count + 1
    assert store.health["journal"] == str(directory / "journal-1.sqlite3")
    assert store.location == f"switchable; journal {directory / 'journal-1.sqlite3'}"
    die(store)
    return primary


def die(store: FailoverStore) -> None:
    """What the kernel does for a process that dies: its files are closed (so its slot
    lock is released); nothing is re-synced, nothing is closed properly."""
    journal = store.fallback
    assert isinstance(journal, JournalStore)
    assert journal._slot_lock is not None
    journal._slot_lock.close()
    for connection in journal._connections:
        connection.close()


async def test_a_process_that_died_mid_outage_loses_nothing(tmp_path: Path) -> None:
    primary = await outage_then_death(tmp_path, 500)
    primary.down = False
    successor = FailoverStore(
        primary, JournalStore(tmp_path), failure_threshold=1, probe_interval=3600, timeout=5
    )
    await successor.open()
    try:
        assert successor.pending_resync == 501
        assert successor.degraded
        assert await successor.probe() is True
        assert successor.pending_resync == 0
        assert await primary.count() == 500
        assert await primary.get("old") is None  # the deletion reached the primary
        assert await primary.get("t499") is not None
        assert successor.fallback is not None
        assert await successor.fallback.count() == 0
        assert isinstance(successor.fallback, JournalStore)
        assert await successor.fallback.entries() == ([], {})
    finally:
        await successor.close()


async def test_a_memory_fallback_loses_what_the_dead_process_held(tmp_path: Path) -> None:
    """What the journal prevents, shown: the same death with the memory fallback."""
    primary = Switchable()
    primary.down = True
    store = FailoverStore(primary, MemoryStore(), failure_threshold=1, probe_interval=3600)
    await store.open()
    for i in range(50):
        await store.mutate(f"t{i}", put(make_task(task_id=f"t{i}")))
    del store  # the process is gone, and its memory with it
    primary.down = False
    successor = FailoverStore(primary, MemoryStore(), probe_interval=3600)
    await successor.open()
    try:
        assert successor.pending_resync == 0
        assert await primary.count() == 0  # the 50 failures are lost
    finally:
        await successor.close()


@pytest.mark.parametrize(
    ("fallback", "kind"), [("sqlite", JournalStore), ("memory", MemoryStore), ("none", None)]
)
def test_settings_choose_the_fallback(fallback: str, kind: type | None) -> None:
    settings = DLQSettings.load(
        store="failover", opensearch={"index": "orders-dlq"}, failover={"fallback": fallback}
    )
    store = store_from_settings(settings)
    assert isinstance(store, FailoverStore)
    if kind is None:
        assert store.fallback is None
    else:
        assert isinstance(store.fallback, kind)
    if isinstance(store.fallback, JournalStore):  # the per-user state directory, per index
        assert store.fallback.directory == state_dir() / "failover" / "orders-dlq"
        assert store.health["journal"] == str(state_dir() / "failover" / "orders-dlq")


def test_the_journal_directory_is_a_setting(tmp_path: Path) -> None:
    settings = DLQSettings.load(store="failover", failover={"path": str(tmp_path / "j")})
    store = store_from_settings(settings)
    assert isinstance(store, FailoverStore)
    assert isinstance(store.fallback, JournalStore)
    assert store.fallback.directory == tmp_path / "j"
    with pytest.raises(ConfigurationError, match=r"failover\.path"):
        DLQSettings.load(store="failover", failover={"path": "bad\x00path"})


async def test_a_journal_record_that_cannot_be_read_is_set_aside_not_lost(tmp_path: Path) -> None:
    primary = Switchable()
    primary.down = True
    journal = JournalStore(tmp_path)
    store = FailoverStore(primary, journal, failure_threshold=1, probe_interval=3600)
    await store.open()
    try:
        for i in range(5):
            await store.mutate(f"t{i}", put(make_task(task_id=f"t{i}")))
        await journal._write(
            lambda c: c.execute("UPDATE tasks SET doc = '{not json' WHERE task_id = 't2'")
        )
        primary.down = False
        assert await store.probe() is True
        assert await primary.count() == 4
        assert await primary.get("t2") is None
        assert store.health["unsynced"] == 1  # reported, and still in the file
        assert "t2" in (await journal.entries())[0]
    finally:
        await store.close()


@pytest.mark.parametrize("durable", [True, False], ids=["journal", "memory"])
async def test_closing_mid_outage_says_where_the_changes_are(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, durable: bool
) -> None:
    primary = Switchable()
    primary.down = True
    fallback = JournalStore(tmp_path) if durable else MemoryStore()
    store = FailoverStore(primary, fallback, failure_threshold=1, probe_interval=3600)
    await store.open()
    await store.mutate("a", put(make_task(task_id="a")))
    with caplog.at_level(logging.WARNING, logger="mahavishnu_dlq.storage.failover"):
        await store.close()
    (message,) = [r.getMessage() for r in caplog.records if "closing with" in r.getMessage()]
    if durable:
        assert f"stay in the journal {tmp_path / 'journal-1.sqlite3'}" in message
    else:
        assert "lost with this process" in message
