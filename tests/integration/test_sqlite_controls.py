"""The SQLite store's control records beyond the shared contract: one file shared by several
stores and processes, rows it cannot read, keys it cannot store.

- Two ``SQLiteStore`` objects on one file (two writers, as two processes have): a record
  one writes the other reads, changes and deletes; increments from both at once all
  land (each mutation reads and writes inside its ``BEGIN IMMEDIATE`` transaction), and
  the row's ``version`` counts one write per mutation. A child process incrementing at
  the same time as this one loses nothing either.
- A row whose ``doc`` is not a JSON object (written by hand): listings skip it, a read
  or a mutation of its key raises :class:`UnreadableControlError` with the stored text,
  and it is left as it is until deleted.
- A key with a lone surrogate is refused (``ValueError``) before anything is written.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from mahavishnu_dlq.errors import UnreadableRecordError
from mahavishnu_dlq.storage.sqlite import SQLiteStore
from mahavishnu_dlq.storage.stored_controls import UnreadableControlError
from tests.integration._sqlite_files import ROOT, integrity

pytestmark = pytest.mark.anyio


def increment(current: dict[str, Any] | None) -> dict[str, Any]:
    return {"n": (current or {}).get("n", 0) + 1}


def rows(path: Path) -> list[tuple[str, int, str]]:
    connection = sqlite3.connect(path)
    try:
        found = connection.execute("SELECT key, version, doc FROM controls ORDER BY key")
        return [(str(key), int(version), str(doc)) for key, version, doc in found]
    finally:
        connection.close()


async def test_a_record_written_by_one_store_is_read_and_changed_by_another(
    tmp_path: Path,
) -> None:
    path = tmp_path / "shared.sqlite3"
    first, second = SQLiteStore(path), SQLiteStore(path)
    try:
        await first.controls.mutate("breaker/w ✓", lambda _: {"state": "open", "at": 1.5})
        assert await second.controls.get("breaker/w ✓") == {"state": "open", "at": 1.5}
        changed = await second.controls.mutate(
            "breaker/w ✓", lambda current: {**(current or {}), "state": "half-open"}
        )
        assert await first.controls.get("breaker/w ✓") == changed
        assert await first.controls.list("breaker/") == [("breaker/w ✓", changed)]
        assert await second.controls.delete("breaker/w ✓") is True
        assert await first.controls.get("breaker/w ✓") is None
    finally:
        await first.close()
        await second.close()


async def test_increments_from_two_stores_at_once_all_land(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite3"
    first, second = SQLiteStore(path), SQLiteStore(path)
    try:
        await first.open()
        await second.open()
        async with anyio.create_task_group() as group:
            for _ in range(25):
                group.start_soon(first.controls.mutate, "rate/hot", increment)
                group.start_soon(second.controls.mutate, "rate/hot", increment)
        for store in (first, second):
            assert await store.controls.get("rate/hot") == {"n": 50}
    finally:
        await first.close()
        await second.close()
    assert rows(path) == [("rate/hot", 50, '{"n":50}')]  # one write per mutation
    assert integrity(path) == "ok"


CHILD = """
import sys, anyio
from mahavishnu_dlq.storage.sqlite import SQLiteStore

def increment(current):
    return {"n": (current or {}).get("n", 0) + 1}

async def main():
    store = SQLiteStore(sys.argv[1])
    try:
        for _ in range(int(sys.argv[2])):
            await store.controls.mutate("rate/hot", increment)
    finally:
        await store.close()

anyio.run(main)
"""


async def test_increments_from_another_process_at_the_same_time_all_land(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite3"
    store = SQLiteStore(path)
    runs: list[subprocess.CompletedProcess[bytes]] = []

    async def child() -> None:
        argv = [sys.executable, "-c", CHILD, str(path), "60"]
        runs.append(await anyio.run_process(argv, cwd=ROOT, check=False))

    try:
        await store.open()
        mine = 0
        with anyio.fail_after(60):
            async with anyio.create_task_group() as group:
                group.start_soon(child)
                while not runs:  # increment as long as the child runs
                    await store.controls.mutate("rate/hot", increment)
                    mine += 1
        [run] = runs
        assert run.returncode == 0, run.stderr.decode()
        assert await store.controls.get("rate/hot") == {"n": 60 + mine}
    finally:
        await store.close()


async def test_an_unreadable_row_is_skipped_by_listings_and_refused_by_reads(
    tmp_path: Path,
) -> None:
    path = tmp_path / "controls.sqlite3"
    store = SQLiteStore(path)
    try:
        await store.controls.mutate("breaker/good", increment)
        connection = sqlite3.connect(path)
        try:
            connection.executemany(
                "INSERT INTO controls (key, version, doc) VALUES (?, 1, ?)",
                [("breaker/list", "[1, 2]"), ("breaker/junk", "{not json")],
            )
            connection.commit()
        finally:
            connection.close()
        assert await store.controls.list("breaker/") == [("breaker/good", {"n": 1})]
        with pytest.raises(UnreadableControlError) as caught:
            await store.controls.get("breaker/list")
        assert isinstance(caught.value, UnreadableRecordError)
        assert caught.value.key == "breaker/list"
        assert caught.value.source == "[1, 2]"
        assert str(caught.value) == (
            "control record 'breaker/list' is stored but cannot be read: "
            "TypeError: the stored record is a list, not an object"
        )
        with pytest.raises(UnreadableControlError, match=r"'breaker/junk'.*not JSON"):
            await store.controls.mutate("breaker/junk", increment)
        assert rows(path)[1] == ("breaker/junk", 1, "{not json")  # left as it is
        assert await store.controls.delete("breaker/junk") is True  # an operator can remove it
        assert await store.controls.mutate("breaker/junk", increment) == {"n": 1}
    finally:
        await store.close()


async def test_a_key_with_a_lone_surrogate_is_refused(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "controls.sqlite3")
    bad = b"breaker/\xff".decode("utf-8", "surrogateescape")
    try:
        with pytest.raises(ValueError, match="not valid Unicode"):
            await store.controls.mutate(bad, increment)
        with pytest.raises(ValueError, match="not valid Unicode"):
            await store.controls.get(bad)
        with pytest.raises(ValueError, match="prefix"):
            await store.controls.list(bad)
        assert await store.controls.list("") == []
    finally:
        await store.close()
