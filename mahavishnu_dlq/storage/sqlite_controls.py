"""The control records of a SQLite store: the ``controls`` table of its file (schema version 3).

Like :mod:`~mahavishnu_dlq.storage.sqlite_jobs`, a :class:`SQLiteControlStore` uses its
store's machinery, nothing of its own: reads run in the store's reader threads, writes
are operations of the store's writer (:mod:`~mahavishnu_dlq.storage.sqlite_writer`),
each applied inside the writer's ``BEGIN IMMEDIATE`` transaction. A mutation is a
compare-and-set without a retry: the record is read, ``fn`` computes its successor and
the row is written in one transaction that holds SQLite's write lock from the read on,
so no other writer — another task of this process, another process or store on the
file — can change the record in between. ``fn`` runs once, in the writer's thread; a
mutation shares the transaction (and its fsync) with whatever else is queued.

A row holds the record's JSON (``doc``) under its ``key``, and ``version``, the number
of writes it had. A listing walks the primary key from ``prefix`` on and stops at the
first key without it: SQLite compares text as UTF-8 bytes, which orders as Python
orders strings (by code point). A row whose ``doc`` is not a JSON object is skipped by
:meth:`~SQLiteControlStore.list` and refused by the reads of its key, see
:mod:`~mahavishnu_dlq.storage.stored_controls`.
"""

from __future__ import annotations

import builtins
import sqlite3
from typing import TYPE_CHECKING, Any

from mahavishnu_dlq.storage.base import ControlMutation
from mahavishnu_dlq.storage.memory_jobs import check_control
from mahavishnu_dlq.storage.stored_controls import control_json, control_key, read_control

if TYPE_CHECKING:
    from mahavishnu_dlq.storage.sqlite import SQLiteStore

__all__ = ["SQLiteControlStore"]

_UPSERT = (
    "INSERT INTO controls (key, version, doc) VALUES (?, 1, ?) "
    "ON CONFLICT(key) DO UPDATE SET version = version + 1, doc = excluded.doc"
)
_PAGE = 500  # rows read at a time by a listing


class SQLiteControlStore:
    """The :class:`~mahavishnu_dlq.storage.base.ControlStore` of a SQLite store (see the
    module)."""

    def __init__(self, store: SQLiteStore) -> None:
        self._store = store

    def __repr__(self) -> str:
        return f"SQLiteControlStore({self._store.location!r})"

    def _where(self) -> str:
        return f"sqlite file {self._store.location!r}"

    def _stored(self, connection: sqlite3.Connection, key: str) -> dict[str, Any] | None:
        row = connection.execute("SELECT doc FROM controls WHERE key = ?", (key,)).fetchone()
        return None if row is None else read_control(self._where(), key, row[0], strict=True)

    async def get(self, key: str) -> dict[str, Any] | None:
        key = control_key(key)
        found: dict[str, Any] | None = await self._store._read(lambda c: self._stored(c, key))
        return found

    async def mutate(self, key: str, fn: ControlMutation) -> dict[str, Any]:
        """Read, ``fn`` and write in one of the writer's transactions (see the module):
        ``fn`` runs once, in the writer's thread; when it raises, nothing is written."""
        key = control_key(key)

        def apply(connection: sqlite3.Connection) -> dict[str, Any]:
            new = check_control(key, fn(self._stored(connection, key)))
            # the one write, last: a failure leaves nothing to undo
            connection.execute(_UPSERT, (key, control_json(new)))
            return new

        stored: dict[str, Any] = await self._store._write(apply)
        return stored

    async def list(self, prefix: str) -> builtins.list[tuple[str, dict[str, Any]]]:
        prefix = control_key(prefix, "prefix")
        where = self._where()

        def read(connection: sqlite3.Connection) -> builtins.list[tuple[str, dict[str, Any]]]:
            found: builtins.list[tuple[str, dict[str, Any]]] = []
            sql = "SELECT key, doc FROM controls WHERE key >= ? ORDER BY key LIMIT ?"
            after = prefix
            while True:
                rows = connection.execute(sql, (after, _PAGE)).fetchall()
                for key, doc in rows:
                    if not key.startswith(prefix):
                        return found  # past the keys with the prefix
                    record = read_control(where, key, doc, strict=False)
                    if record is not None:  # unreadable: skipped
                        found.append((key, record))
                if len(rows) < _PAGE:
                    return found
                sql = "SELECT key, doc FROM controls WHERE key > ? ORDER BY key LIMIT ?"
                after = rows[-1][0]

        listed: builtins.list[tuple[str, dict[str, Any]]] = await self._store._read(read)
        return listed

    async def delete(self, key: str) -> bool:
        key = control_key(key)

        def apply(connection: sqlite3.Connection) -> bool:
            return connection.execute("DELETE FROM controls WHERE key = ?", (key,)).rowcount > 0

        deleted: bool = await self._store._write(apply)
        return deleted
