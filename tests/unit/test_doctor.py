"""The doctor's checks of local stores (memory, SQLite, the failover journal), and the
pieces of a read-only open that need no node: the near-miss name, the sentence of a
missing index, opening a store written before ``create``, and a failover store whose
primary is missing. The OpenSearch checks run against a real node:
``tests/integration/test_doctor.py``."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import anyio
import pytest

from mahavishnu_dlq import DeadLetterQueue
from mahavishnu_dlq.doctor import Check, diagnose, failed, local_directory, size_text
from mahavishnu_dlq.doctor_index import seconds_of
from mahavishnu_dlq.errors import StoreNotFoundError, StoreUnavailableError
from mahavishnu_dlq.settings import DLQSettings
from mahavishnu_dlq.storage.base import open_store
from mahavishnu_dlq.storage.failover import FailoverStore
from mahavishnu_dlq.storage.journal import JournalStore
from mahavishnu_dlq.storage.memory import MemoryStore
from mahavishnu_dlq.storage.opensearch_missing import missing_index_detail, near_miss
from mahavishnu_dlq.storage.sqlite import SQLiteStore
from mahavishnu_dlq.storage.sqlite_schema import SCHEMA_VERSION

ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {check.name: check for check in checks}


def sqlite_settings(path: Path) -> DLQSettings:
    return DLQSettings(store="sqlite", sqlite={"path": str(path)})


# -- memory and SQLite -----------------------------------------------------------------------------


def test_memory_is_one_line_saying_nothing_persists() -> None:
    checks = anyio.run(diagnose, DLQSettings(store="memory"))
    assert len(checks) == 1
    assert checks[0].status == "warn"
    assert "memory store: nothing persists" in checks[0].detail
    assert not failed(checks)


def test_sqlite_file_not_there_yet_is_fine_and_is_not_created(tmp_path: Path) -> None:
    path = tmp_path / "new" / "dir" / "dlq.sqlite3"
    checks = by_name(anyio.run(diagnose, sqlite_settings(path)))
    assert list(checks) == ["settings", "file", "schema", "journal mode", "disk"]
    assert checks["file"].status == "ok"
    assert "does not exist yet" in checks["file"].detail
    assert checks["schema"].status == "skip"
    assert checks["disk"].status in ("ok", "warn")
    assert not path.exists()
    assert not (tmp_path / "new").exists()  # nothing made, not even the directory


def test_sqlite_file_made_by_the_store_is_all_ok(tmp_path: Path) -> None:
    path = tmp_path / "dlq.sqlite3"

    async def make() -> None:
        store = SQLiteStore(path)
        await store.open()
        await store.close()

    anyio.run(make)
    before = sorted(p.name for p in tmp_path.iterdir())
    stamp = path.stat().st_mtime_ns
    checks = by_name(anyio.run(diagnose, sqlite_settings(path)))
    assert checks["file"].status == "ok"
    assert checks["writable"].status == "ok"
    assert checks["schema"] == Check("schema", "ok", f"version {SCHEMA_VERSION} (this version's)")
    assert checks["journal mode"].status == "ok"
    assert "WAL" in checks["journal mode"].detail
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no -wal, no -shm
    assert path.stat().st_mtime_ns == stamp


def _sqlite_file(path: Path, version: int, *, wal: bool) -> None:
    connection = sqlite3.connect(path)
    try:
        if wal:
            connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("CREATE TABLE t (x)")
        connection.execute(f"PRAGMA user_version = {version}")
        connection.commit()
    finally:
        connection.close()


def test_sqlite_schema_of_a_newer_version_fails_and_an_older_one_warns(tmp_path: Path) -> None:
    newer, older = tmp_path / "newer.sqlite3", tmp_path / "older.sqlite3"
    _sqlite_file(newer, SCHEMA_VERSION + 1, wal=True)
    _sqlite_file(older, 1, wal=False)
    checks = by_name(anyio.run(diagnose, sqlite_settings(newer)))
    assert checks["schema"].status == "fail"
    assert "newer mahavishnu-dlq" in checks["schema"].detail
    assert failed(list(checks.values()))
    checks = by_name(anyio.run(diagnose, sqlite_settings(older)))
    assert checks["schema"].status == "warn"
    assert checks["journal mode"].status == "warn"
    assert not failed(list(checks.values()))


def test_a_file_that_is_no_database_fails(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not a database at all, but long enough to have a header? " * 4)
    checks = by_name(anyio.run(diagnose, sqlite_settings(path)))
    assert checks["schema"].status == "fail"
    assert "not an SQLite database" in checks["schema"].detail


def test_an_empty_file_is_made_at_first_use(tmp_path: Path) -> None:
    path = tmp_path / "empty.sqlite3"
    path.touch()
    checks = by_name(anyio.run(diagnose, sqlite_settings(path)))
    assert checks["schema"].status == "ok"
    assert checks["journal mode"].status == "skip"


def test_a_directory_in_place_of_the_file_fails(tmp_path: Path) -> None:
    checks = anyio.run(diagnose, sqlite_settings(tmp_path))
    assert [(c.name, c.status) for c in checks] == [("settings", "ok"), ("file", "fail")]


@pytest.mark.skipif(ROOT, reason="root may write anywhere")
def test_a_directory_this_user_cannot_write_fails(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        checks = by_name(anyio.run(diagnose, sqlite_settings(locked / "sub" / "dlq.sqlite3")))
    finally:
        locked.chmod(0o700)
    assert checks["file"].status == "fail"
    assert "sqlite.path" in (checks["file"].fix or "")


def test_a_local_directory_that_is_a_file_fails(tmp_path: Path) -> None:
    file = tmp_path / "file"
    file.touch()
    assert local_directory(file, "failover.path", what="journal").status == "fail"
    assert local_directory(tmp_path, "failover.path", what="journal").status == "ok"


def test_sizes_for_people() -> None:
    assert size_text(812) == "812 B"
    assert size_text(3.5 * 1024 * 1024) == "3.5 MiB"
    assert size_text(5 * 1024**4) == "5120.0 GiB"


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("1s", 1.0), ("500ms", 0.5), ("2m", 120.0), ("1.5h", 5400.0), ("-1", None), ("x", None)],
)
def test_opensearch_time_values(value: str, seconds: float | None) -> None:
    assert seconds_of(value) == seconds


# -- the near-miss name and the sentence -----------------------------------------------------------


def test_near_miss_finds_the_intended_tasks_index() -> None:
    names = [
        "mahavishnu-dlq-tasks",
        "mahavishnu-dlq-tasks-jobs",
        "mahavishnu-dlq-tasks-controls",
        ".kibana",
        "orders",
    ]
    assert near_miss("mahavishnu-dlq-taks", names) == "mahavishnu-dlq-tasks"
    assert near_miss("mahavishnu-dlq-tasks-job", names) == "mahavishnu-dlq-tasks"
    assert near_miss("zzz", names) is None
    assert near_miss(".kibanna", names) is None  # hidden indexes are not suggested
    assert near_miss("x", []) is None


def test_the_missing_index_sentence_names_index_cluster_hosts_and_the_way_out() -> None:
    line = missing_index_detail("dlq-taks", "prod", "https://a:9200", "dlq-tasks")
    assert "index 'dlq-taks' does not exist on cluster 'prod' at https://a:9200" in line
    assert "did you mean 'dlq-tasks'?" in line
    assert "Reading never creates an index" in line
    assert "processor run" in line
    bare = missing_index_detail("dlq-taks", None, "http://b:9200", None)
    assert "on the cluster at http://b:9200." in bare
    assert "did you mean" not in bare


# -- opening for reading, without a node -----------------------------------------------------------


class _OldStore(MemoryStore):
    """A store written before ``create``: its open takes no argument."""

    opened = 0

    async def open(self) -> None:  # type: ignore[override]  # the earlier protocol
        self.opened += 1


class _MissingStore(MemoryStore):
    """A primary whose data is not there (as an OpenSearch index with a typo)."""

    backend = "opensearch"
    asked: list[bool]

    async def open(self, *, create: bool = True) -> None:
        self.asked = [*getattr(self, "asked", []), create]
        if not create:
            raise StoreNotFoundError("opensearch", "index 'typo' does not exist")


def test_a_store_without_create_is_opened_as_before() -> None:
    store = _OldStore()
    anyio.run(lambda: open_store(store, create=False))  # type: ignore[arg-type]
    dlq = DeadLetterQueue(store)  # type: ignore[arg-type]
    anyio.run(lambda: dlq.connect(create=False))
    assert store.opened == 2
    anyio.run(dlq.stop)


def test_connect_passes_create_to_the_store() -> None:
    store = _MissingStore()
    dlq = DeadLetterQueue(store)
    with pytest.raises(StoreNotFoundError, match="index 'typo' does not exist"):
        anyio.run(lambda: dlq.connect(create=False))
    anyio.run(dlq.connect)
    assert store.asked == [False, True]
    anyio.run(dlq.stop)


def test_failover_does_not_fall_back_for_a_missing_primary(tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    store = FailoverStore(_MissingStore(), JournalStore(journal))

    async def main() -> None:
        try:
            with pytest.raises(StoreNotFoundError):
                await store.open(create=False)
        finally:
            await store.close()

    anyio.run(main)
    assert not store.degraded
    assert store.health["circuit_open"] is False
    assert not journal.exists()  # the primary is asked first: no journal for a typo


def test_failover_probes_the_way_it_was_opened(tmp_path: Path) -> None:
    class _DownThenMissing(_MissingStore):
        down = True

        async def open(self, *, create: bool = True) -> None:
            if self.down:
                raise StoreUnavailableError("opensearch", "connection refused")
            await super().open(create=create)

    primary = _DownThenMissing()
    store = FailoverStore(primary, MemoryStore(), probe_interval=60)

    async def main() -> None:
        try:
            await store.open(create=False)  # down: opens degraded
            assert store.health["circuit_open"]
            primary.down = False
            with pytest.raises(StoreNotFoundError):  # the probe reads too: no index made
                await store.probe()
        finally:
            await store.close()

    anyio.run(main)
    assert primary.asked == [False]
