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
import json
import os
import re
import sqlite3
import time
from collections.abc import Sequence
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import IO

import anyio
import anyio.lowlevel

from mahavishnu_dlq.clock import from_micros, to_micros
from mahavishnu_dlq.errors import StoreUnavailableError
from mahavishnu_dlq.models import FailedTask, TaskFilter
from mahavishnu_dlq.printable import library_logger
from mahavishnu_dlq.storage.base import Mutation
from mahavishnu_dlq.storage.opensearch_query import DERIVED_FIELDS
from mahavishnu_dlq.storage.resync import merge_versions
from mahavishnu_dlq.storage.sqlite import SQLiteStore

__all__ = ["MAX_SLOTS", "JournalStore"]

_log = library_logger("mahavishnu_dlq.storage.failover")  # the failover store's log

#: Most journals (live processes) one index may have on a host.
MAX_SLOTS = 64
_SLOT = re.compile(r"journal-(\d+)\.sqlite3")
_ADOPTED_AT_ONCE = 1000  # records merged per transaction when adopting a journal
_READ_AT_ONCE = 500  # ids per SELECT … IN (…)
_DECODED_AT_ONCE = 200  # records decoded between two checkpoints (about 3 ms)
# Records removed per DELETE statement. One statement each, not one per record: a
# worker thread that steps many small statements waits for the GIL after each one
# while the event loop is busy (the loop merges the next batch meanwhile).
_PAIRS_AT_ONCE = 400

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

    _setting = "failover.path"  # the setting that names the journals' directory

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

    async def open(self, *, create: bool = True) -> None:
        """Take a free slot, open its file, adopt the journals of dead processes
        (``create=False`` too: the journal is this host's own)."""
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
            self._opening = None  # a store opened again may be on another event loop
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
        refused = 0  # records this journal could not take (its own copy is unreadable, …)
        for start in range(0, len(records), _ADOPTED_AT_ONCE):
            chunk = records[start : start + _ADOPTED_AT_ONCE]
            merges: list[tuple[str, Mutation]] = [
                (record.task_id, partial(merge_versions, incoming=record)) for record in chunk
            ]
            results = await self.mutate_many(merges)
            refused += sum(1 for result in results if isinstance(result, Exception))
        await self._adopt_tombstones(tombstones)
        left = rows - len(records) + refused
        if left:  # kept whole, out of the slots, for an operator
            kept = path.with_name(f"unreadable-{path.stem}-{time.time_ns()}.sqlite3")
            await anyio.to_thread.run_sync(_move, path, kept)
            _log.error(
                "dlq.failover: %d records of the journal %s cannot be read or taken over; "
                "the others were adopted, and the file is kept as %s for an operator",
                left,
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

    async def _adopt_tombstones(self, tombstones: dict[str, datetime]) -> None:
        """A dead process's deletions, in one transaction: each removes this journal's
        record of that id unless it was changed after the deletion."""
        rows = [(task_id, to_micros(when)) for task_id, when in tombstones.items()]

        def apply(connection: sqlite3.Connection) -> None:
            connection.executemany(
                "DELETE FROM tasks WHERE task_id = ? AND updated_at_us <= ?", rows
            )
            connection.executemany(
                "INSERT INTO tombstones(task_id, deleted_us) SELECT ?1, ?2 WHERE NOT EXISTS "
                "(SELECT 1 FROM tasks WHERE task_id = ?1) "
                "ON CONFLICT(task_id) DO UPDATE SET "
                "deleted_us = max(deleted_us, excluded.deleted_us)",
                rows,
            )

        if rows:
            await self._write(apply, undo="transaction")

    # -- what the failover store asks of its journal --------------------------------------

    async def entries(self) -> tuple[list[str], dict[str, datetime]]:
        """The ids of the records the journal holds, and its tombstones (id -> when)."""
        ids: list[str] = await self._read(
            lambda c: [row[0] for row in c.execute("SELECT task_id FROM tasks ORDER BY rowid")]
        )
        return ids, await self._read(_read_tombstones)

    async def records(self, task_ids: Sequence[str]) -> dict[str, tuple[FailedTask, str]]:
        """The records of those ids the journal holds (readable ones), each with its
        version (the stored text, for :meth:`discard`).

        The rows are read in a worker thread (one step of SQLite per 500 ids) and
        decoded here, ``_DECODED_AT_ONCE`` at a time between checkpoints: decoding is
        Python work, which a worker thread would do no faster (the GIL) and slower
        (it and the event loop, busy merging, would keep taking the GIL from each other).
        """

        def read(connection: sqlite3.Connection) -> list[_Row]:
            rows: list[_Row] = []
            for start in range(0, len(task_ids), _READ_AT_ONCE):
                rows += _rows_of(connection, task_ids[start : start + _READ_AT_ONCE])
            return rows

        rows: list[_Row] = await self._read(read)
        found: dict[str, tuple[FailedTask, str]] = {}
        for start in range(0, len(rows), _DECODED_AT_ONCE):
            await anyio.lowlevel.checkpoint()
            for task_id, doc, record_json, payload in rows[start : start + _DECODED_AT_ONCE]:
                record = _validated(task_id, record_json) or self._decode(task_id, doc)
                if record is not None:
                    if payload is not None:  # its re-sync need not encode them again
                        record.keep_payload_json(payload)
                    found[task_id] = (record, doc)
        return found

    async def delete_with_tombstone(self, task_id: str, when: datetime) -> bool:
        """Delete ``task_id`` and keep its tombstone (``when``), in one transaction;
        True when a record was deleted."""

        def apply(connection: sqlite3.Connection) -> bool:
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

    async def discard(self, versions: Sequence[tuple[str, object]]) -> None:
        """Remove these re-synced records, in one transaction: each only while its
        stored text is still ``version`` (from :meth:`records`; a newer version stays,
        for the next pass).

        Only deletions, so no savepoint (which would make them 20x slower: SQLite
        journals every page a statement changes inside one): a failure fails the
        transaction, and what it held stays, to be removed again by the next pass."""
        pairs = [(task_id, str(version)) for task_id, version in versions]

        def apply(connection: sqlite3.Connection) -> None:
            for start in range(0, len(pairs), _PAIRS_AT_ONCE):
                chunk = pairs[start : start + _PAIRS_AT_ONCE]
                values = ", ".join("(?, ?)" for _ in chunk)
                connection.execute(
                    "DELETE FROM tasks WHERE rowid IN (SELECT t.rowid FROM (VALUES "
                    f"{values}) AS v JOIN tasks AS t ON t.task_id = v.column1 "
                    "AND t.doc = v.column2)",
                    [value for pair in chunk for value in pair],
                )

        if pairs:
            await self._write(apply, undo="transaction")

    async def forget_tombstones(self, items: Sequence[tuple[str, datetime]]) -> None:
        """Remove the tombstones of deletions that reached the primary (each only if
        it is still the one of that time)."""
        rows = [(task_id, to_micros(when)) for task_id, when in items]
        if rows:
            await self._write(
                lambda c: c.executemany(
                    "DELETE FROM tombstones WHERE task_id = ? AND deleted_us = ?", rows
                ),
                undo="transaction",
            )

    async def clear(self) -> int:
        """Remove every record and every tombstone."""
        self._unreadable.forget()

        def apply(connection: sqlite3.Connection) -> int:
            connection.execute("DELETE FROM tombstones")
            return connection.execute("DELETE FROM tasks").rowcount

        cleared: int = await self._write(apply, undo="transaction")
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


#: A journal row as re-sync reads it: ``task_id``, ``doc``, the record's own fields of
#: ``doc`` as JSON (or None), and the JSON text of its ``task`` and ``metadata`` (or None).
_Row = tuple[str, str, "str | None", "tuple[str, str] | None"]

#: The record's own fields of a document: without the fields derived for queries.
_RECORD_JSON = "json_remove(doc, " + ", ".join(f"'$.{f}'" for f in DERIVED_FIELDS) + ")"
_PAYLOAD_JSON = "json_extract(doc, '$.task') || '', json_extract(doc, '$.metadata') || ''"


def _rows_of(connection: sqlite3.Connection, task_ids: Sequence[str]) -> list[_Row]:
    """The rows of ``task_ids``, with each record's own fields and the JSON text of its
    ``task`` and ``metadata`` cut out of its document by SQLite: one step of SQLite (an
    aggregate row), not one per row (see ``_PAIRS_AT_ONCE``). Row by row, with the
    document alone, if the aggregate cannot be made or read (a document not JSON)."""
    marks = ", ".join("?" * len(task_ids))
    where = f"WHERE task_id IN ({marks})"
    columns = f"task_id, doc, {_RECORD_JSON} || '', {_PAYLOAD_JSON}"
    try:
        aggregate = connection.execute(
            f"SELECT json_group_array(json_array({columns})) FROM tasks {where}",
            list(task_ids),
        ).fetchone()[0]
        return [
            (str(task_id), str(doc), own or None, (task, meta) if task and meta else None)
            for task_id, doc, own, task, meta in json.loads(aggregate)
        ]
    except (sqlite3.OperationalError, ValueError, TypeError):  # "malformed JSON", …
        rows = connection.execute(f"SELECT task_id, doc FROM tasks {where}", list(task_ids))
        return [(str(task_id), str(doc), None, None) for task_id, doc in rows]


def _validated(task_id: str, record_json: str | None) -> FailedTask | None:
    """The record of ``task_id`` from its own fields' JSON, validated in one pass
    (pydantic's JSON parser: half the time of ``json.loads`` and a validation); None
    when that cannot be done (the store's own decoding then says why)."""
    if record_json is None:
        return None
    try:
        record = FailedTask.model_validate_json(record_json)
    except ValueError:
        return None
    return record if record.task_id == task_id else None
