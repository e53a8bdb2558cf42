"""The failover journal: what a failover store served while OpenSearch was down, on disk.

A :class:`~mahavishnu_dlq.storage.failover.FailoverStore` whose fallback is a
:class:`JournalStore` (``failover.fallback: sqlite``, the default) serves an outage
from a SQLite file: the records changed during the outage (each kept until it is
re-synced, then removed) and the records deleted (*tombstones*, kept until the
deletion reached OpenSearch). Both are committed with ``synchronous=FULL`` before
the caller is acknowledged. So a process that dies during an outage loses nothing:
the next one to open the journals of that index finds what is left and re-syncs it
when OpenSearch answers.

Slots
    The journals of one index live in one directory (``failover.path``, by default
    ``$XDG_STATE_HOME/mahavishnu-dlq/failover/<index>``), one file per live process:
    ``journal-1.sqlite3``, ``journal-2.sqlite3`` …, each beside a lock file
    (``journal-1.lock``) that its process holds with ``flock`` while it has the
    journal open; the kernel releases the lock when the process ends, however it
    ends. A process takes the lowest free slot, so two live processes never write
    one journal (the second simply gets its own), and it *adopts* every other slot
    whose lock is free — its process is gone: the records of that journal are
    merged into its own (the newer ``updated_at`` wins, attempt histories are kept),
    its tombstones too, and the adopted file is removed. A slot file left by a dead
    process is also adopted by simply taking the slot: its content is the journal.

Everything a journal holds is pending re-sync: a record is in the file only while its
newest version has not reached OpenSearch. A journal file is an ordinary SQLite store
file (the schema of ``store: sqlite``), so ``mahavishnu-dlq --config`` with
``store: sqlite`` and ``sqlite.path`` pointing at it lists what it holds.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import sqlite3
from collections.abc import Sequence
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import IO

import anyio

from mahavishnu_dlq.clock import from_micros, to_micros
from mahavishnu_dlq.errors import StoreUnavailableError
from mahavishnu_dlq.models import FailedTask, TaskFilter
from mahavishnu_dlq.printable import library_logger
from mahavishnu_dlq.storage import opensearch_query as documents
from mahavishnu_dlq.storage.base import Mutation
from mahavishnu_dlq.storage.resync import merge_versions
from mahavishnu_dlq.storage.sqlite import SQLiteStore

__all__ = ["MAX_SLOTS", "JournalStore"]

_log = library_logger("mahavishnu_dlq.storage.failover")  # the failover store's log

#: Most journals (live processes) one index may have on a host.
MAX_SLOTS = 64
_SLOT = re.compile(r"journal-(\d+)\.sqlite3")
_ADOPTED_AT_ONCE = 1000  # records merged per transaction when adopting a journal
_READ_AT_ONCE = 500  # ids per SELECT … IN (…)

# A record written again after its deletion is no longer deleted: its tombstone goes in
# the same statement (a TEMP trigger: on the journal's writer connection only).
_REVIVED = (
    "CREATE TEMP TRIGGER IF NOT EXISTS journal_revived AFTER INSERT ON main.tasks "
    "BEGIN DELETE FROM tombstones WHERE task_id = NEW.task_id; END"
)


def _lock(path: Path) -> IO[bytes] | None:
    """The lock file ``path``, held exclusively by this process; None when a live
    process holds it."""
    handle = path.open("ab")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    except BaseException:
        handle.close()
        raise
    return handle


class JournalStore(SQLiteStore):
    """The journal of one process for one index: a slot of its own, orphans adopted.

    A :class:`SQLiteStore` whose file is chosen when it opens (see the module's
    *Slots*), with the tombstones and the conditional removals a failover store's
    re-sync needs.
    """

    def __init__(self, directory: str | os.PathLike[str], *, busy_timeout: float = 30.0) -> None:
        self.directory = Path(directory).expanduser()
        super().__init__(self.directory / "journal-N.sqlite3", busy_timeout=busy_timeout)
        self.slot: int | None = None
        self._slot_lock: IO[bytes] | None = None
        self._opening: anyio.Lock | None = None
        #: changes adopted from journals of processes that died (when this one opened)
        self.adopted = 0

    def __repr__(self) -> str:
        return f"JournalStore({self.location!r})"

    @property
    def location(self) -> str:
        """The journal file once open, else its directory."""
        return str(self.path if self.slot is not None else self.directory)

    # -- opening and closing -------------------------------------------------------------

    async def open(self) -> None:
        """Take a free slot, open its file, adopt the journals of dead processes."""
        if self._is_open():
            return
        if self._opening is None:
            self._opening = anyio.Lock()
        async with self._opening:
            if self._is_open():  # another task opened it meanwhile
                return
            slot, lock = await anyio.to_thread.run_sync(self._take_slot)
            self.slot, self._slot_lock = slot, lock
            self.path = self._file(slot)
            self._unreadable = self._unreadable_records()
            try:
                await super().open()
                self.adopted = await self._adopt_orphans(slot)
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await self.close()
                raise

    def _is_open(self) -> bool:
        return self._writer_connection is not None

    def _open_file(self) -> sqlite3.Connection:
        connection = super()._open_file()
        connection.execute(_REVIVED)
        return connection

    async def close(self) -> None:
        """Close the file and give the slot back (what it holds stays for the next
        process to open the journals of this index)."""
        try:
            await super().close()
        finally:
            lock, self._slot_lock = self._slot_lock, None
            self.slot = None
            if lock is not None:
                lock.close()

    def _file(self, slot: int) -> Path:
        return self.directory / f"journal-{slot}.sqlite3"

    def _take_slot(self) -> tuple[int, IO[bytes]]:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            for slot in range(1, MAX_SLOTS + 1):
                lock = _lock(self.directory / f"journal-{slot}.lock")
                if lock is not None:
                    return slot, lock
        except OSError as exc:
            raise StoreUnavailableError(
                "sqlite",
                f"failover journal directory {str(self.directory)!r} cannot be used ({exc}); "
                "check failover.path and its permissions",
            ) from exc
        raise StoreUnavailableError(
            "sqlite",
            f"failover journal directory {str(self.directory)!r}: all {MAX_SLOTS} journals "
            "are held by live processes",
        )

    # -- adopting the journals of dead processes ----------------------------------------

    async def _adopt_orphans(self, mine: int) -> int:
        """Merge every journal whose process is gone into this one; how many changes."""
        paths = await anyio.to_thread.run_sync(
            lambda: sorted(self.directory.glob("journal-*.sqlite3"))
        )
        adopted = 0
        for path in paths:
            found = _SLOT.fullmatch(path.name)
            if found is None or int(found.group(1)) == mine:
                continue
            lock = await anyio.to_thread.run_sync(
                _lock, self.directory / f"journal-{found.group(1)}.lock"
            )
            if lock is None:
                continue  # its process is alive: the journal is its own
            try:
                adopted += await self._adopt_journal(path)
            finally:
                lock.close()
        return adopted

    async def _adopt_journal(self, path: Path) -> int:
        orphan = SQLiteStore(path, busy_timeout=self._busy_timeout)
        try:
            records = await _every_record(orphan)
            tombstones = await _tombstones(orphan)
            rows = await orphan.count()
        except StoreUnavailableError as exc:  # damaged: left for an operator
            _log.error(
                "dlq.failover: the journal %s left by a process that died cannot be read "
                "(%s); it is left where it is",
                path,
                exc,
                extra={"action": "dlq.failover", "outcome": "journal_unreadable"},
            )
            return 0
        finally:
            await orphan.close()
        for start in range(0, len(records), _ADOPTED_AT_ONCE):
            chunk = records[start : start + _ADOPTED_AT_ONCE]
            merges: list[tuple[str, Mutation]] = [
                (record.task_id, partial(merge_versions, incoming=record)) for record in chunk
            ]
            for result in await self.mutate_many(merges):
                if isinstance(result, Exception):
                    raise result  # the orphan stays: nothing of it was removed
        for task_id, when in tombstones.items():
            await self.delete_with_tombstone(task_id, when, unless_newer=True)
        if rows > len(records):  # some cannot be read: the file is kept, out of the slots
            kept = path.with_name(f"unreadable-{path.name}")
            await anyio.to_thread.run_sync(_remove, kept)
            await anyio.to_thread.run_sync(_move, path, kept)
            _log.error(
                "dlq.failover: %d records of the journal %s cannot be read; the others were "
                "adopted, and the file is kept as %s for an operator",
                rows - len(records),
                path,
                kept,
                extra={"action": "dlq.failover", "outcome": "journal_unreadable"},
            )
        else:
            await anyio.to_thread.run_sync(_remove, path)
        changes = len(records) + len(tombstones)
        if changes:
            _log.warning(
                "dlq.failover: adopted %d changes from %s, left by a process that died; "
                "they are re-synced when the primary answers",
                changes,
                path,
                extra={"action": "dlq.failover", "outcome": "journal_adopted", "count": changes},
            )
        return changes

    # -- what the failover store asks of its journal --------------------------------------

    async def entries(self) -> tuple[list[str], dict[str, datetime]]:
        """The ids of the records the journal holds, and its tombstones (id -> when)."""
        ids: list[str] = await self._read(
            lambda c: [row[0] for row in c.execute("SELECT task_id FROM tasks ORDER BY rowid")]
        )
        return ids, await self._read(_read_tombstones)

    async def records(self, task_ids: Sequence[str]) -> dict[str, FailedTask]:
        """The records of those ids the journal holds (readable ones), in one read."""

        def read(connection: sqlite3.Connection) -> dict[str, FailedTask]:
            found: dict[str, FailedTask] = {}
            for start in range(0, len(task_ids), _READ_AT_ONCE):
                chunk = list(task_ids[start : start + _READ_AT_ONCE])
                marks = ", ".join("?" * len(chunk))
                rows = connection.execute(
                    f"SELECT task_id, doc FROM tasks WHERE task_id IN ({marks})", chunk
                )
                for task_id, doc in rows:
                    record = self._decode(task_id, doc)
                    if record is not None:
                        found[task_id] = record
            return found

        result: dict[str, FailedTask] = await self._read(read)
        return result

    async def delete_with_tombstone(
        self, task_id: str, when: datetime, *, unless_newer: bool = False
    ) -> bool:
        """Delete ``task_id`` and keep its tombstone (``when``), in one transaction;
        True when a record was deleted. ``unless_newer``: not when the journal holds a
        version changed after ``when`` (adopting a dead process's deletion)."""

        def apply(connection: sqlite3.Connection) -> bool:
            if unless_newer:
                row = connection.execute(
                    "SELECT updated_at_us FROM tasks WHERE task_id = ?", (task_id,)
                ).fetchone()
                if row is not None and row[0] > to_micros(when):
                    return False
            deleted = connection.execute("DELETE FROM tasks WHERE task_id = ?", (task_id,))
            connection.execute(
                "INSERT INTO tombstones(task_id, deleted_us) VALUES (?, ?) "
                "ON CONFLICT(task_id) DO UPDATE SET deleted_us = excluded.deleted_us",
                (task_id, to_micros(when)),
            )
            return deleted.rowcount > 0

        self._unreadable.forget(task_id)
        deleted: bool = await self._write(apply, undo="savepoint")
        return deleted

    async def discard(self, records: Sequence[FailedTask]) -> None:
        """Remove these re-synced versions, in one transaction: each only while it is
        still the version the journal holds (a newer one stays, for the next pass)."""
        rows = [(r.task_id, documents.document_json(r, "")) for r in records]
        if rows:
            await self._write(
                lambda c: c.executemany("DELETE FROM tasks WHERE task_id = ? AND doc = ?", rows),
                undo="savepoint",
            )

    async def forget_tombstones(self, items: Sequence[tuple[str, datetime]]) -> None:
        """Remove the tombstones of deletions that reached the primary (each only if
        it is still the one of that time)."""
        rows = [(task_id, to_micros(when)) for task_id, when in items]
        if rows:
            await self._write(
                lambda c: c.executemany(
                    "DELETE FROM tombstones WHERE task_id = ? AND deleted_us = ?", rows
                ),
                undo="savepoint",
            )

    async def clear(self) -> int:
        """Remove every record and every tombstone."""
        self._unreadable.forget()

        def apply(connection: sqlite3.Connection) -> int:
            connection.execute("DELETE FROM tombstones")
            return connection.execute("DELETE FROM tasks").rowcount

        cleared: int = await self._write(apply, undo="savepoint")
        return cleared


def _read_tombstones(connection: sqlite3.Connection) -> dict[str, datetime]:
    rows = connection.execute("SELECT task_id, deleted_us FROM tombstones ORDER BY rowid")
    return {task_id: from_micros(deleted_us) for task_id, deleted_us in rows}


async def _tombstones(store: SQLiteStore) -> dict[str, datetime]:
    found: dict[str, datetime] = await store._read(_read_tombstones)
    return found


async def _every_record(store: SQLiteStore) -> list[FailedTask]:
    records: list[FailedTask] = []
    cursor: str | None = None
    while True:
        page = await store.query(TaskFilter(), limit=1000, cursor=cursor)
        records.extend(page)
        if page.cursor is None:
            return records
        cursor = page.cursor


def _remove(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            Path(f"{path}{suffix}").unlink()


def _move(path: Path, target: Path) -> None:
    """Move a database file with its -wal and -shm files."""
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            Path(f"{path}{suffix}").rename(f"{target}{suffix}")
