"""SQLiteStore: the Store contract in one SQLite file, durable, shared by one host's processes.

The standard library's :mod:`sqlite3`, nothing else. The file is in WAL mode with
``synchronous=FULL``: an acknowledged write is in the write-ahead log on disk, so
it survives a crash of the process and of the machine.

Writes: group commit
    Every change — a mutation, a claim, a deletion, a purge — is an operation
    queued for the store's writer. The first caller to find the writer idle leads:
    it takes every queued operation and applies them in one transaction
    (``BEGIN IMMEDIATE`` … ``COMMIT``; an operation that fails is undone alone,
    by SQLite's statement rollback or a savepoint: see ``Op.undo``),
    in a worker thread, then wakes their callers; meanwhile new operations queue
    for the next transaction. So 100 producers share one fsync per transaction
    instead of paying one each, and one id's changes are applied in the order
    they were asked for (the store needs no per-id lock). A leader that is
    cancelled hands the lead to the next caller in line.

Processes
    Several processes (and stores) may share one file. ``BEGIN IMMEDIATE`` takes
    SQLite's write lock before reading, so a read-modify-write — a claim above all
    — is atomic across processes: a task is claimed once while its lease holds.
    A writer that finds the lock taken waits up to ``busy_timeout`` seconds.

Reads
    Reads run in worker threads too (at most ``readers`` at a time), each on a
    connection of its own thread; WAL lets them read while a transaction writes.
    They see every change acknowledged before they started.

    Listings, counts and aggregations: :mod:`.sqlite_reads`.

Jobs and controls
    The bulk jobs and the control records (:mod:`.sqlite_jobs`, :mod:`.sqlite_controls`)
    live in the same file, written by the same writer, read by the same readers.

Records the store cannot read (written by a newer version, or damaged) are
skipped by listings and claims, counted as ``unreadable``, logged once per id,
and a read of that very id raises
:class:`~mahavishnu_dlq.errors.UnreadableRecordError` with the stored form.

Nothing here blocks the event loop, on asyncio or trio. Errors name the file:
one that is not a database (or is damaged), of a newer schema, in a directory
that cannot be written, on a full disk — each a
:class:`~mahavishnu_dlq.errors.StoreUnavailableError` or
:class:`~mahavishnu_dlq.errors.ConfigurationError` saying what to do; nothing
already stored is touched.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import anyio

from mahavishnu_dlq.clock import from_micros, to_micros
from mahavishnu_dlq.errors import (
    ConfigurationError,
    DLQError,
    StoreUnavailableError,
)
from mahavishnu_dlq.limits import require_str
from mahavishnu_dlq.models import DeadLetterStatus, FailedTask
from mahavishnu_dlq.storage import opensearch_query as documents
from mahavishnu_dlq.storage import sqlite_errors as errors
from mahavishnu_dlq.storage import sqlite_schema as s
from mahavishnu_dlq.storage.base import Mutation, UnreadableRecords, event_loop_kind
from mahavishnu_dlq.storage.sqlite_controls import SQLiteControlStore
from mahavishnu_dlq.storage.sqlite_jobs import SQLiteJobStore
from mahavishnu_dlq.storage.sqlite_reads import PAGE as _PAGE
from mahavishnu_dlq.storage.sqlite_reads import SQLiteReads
from mahavishnu_dlq.storage.sqlite_writer import Op, Writer

__all__ = ["SQLiteStore"]

_BACKEND = "sqlite"


def _connect(path: Path, busy_timeout: float) -> sqlite3.Connection:
    connection = sqlite3.connect(
        str(path), timeout=busy_timeout, isolation_level=None, check_same_thread=False
    )
    for pragma in (f"busy_timeout = {int(busy_timeout * 1000)}", *s.PRAGMAS):
        connection.execute(f"PRAGMA {pragma}")
    connection.create_function(
        s.TEXT_FUNCTION, s.TEXT_ARGUMENTS, s.text_matches, deterministic=True
    )
    return connection


class SQLiteStore(SQLiteReads):
    """Failed tasks in one SQLite file, durable, shared safely by the processes of a host.

    Its reads of many records — listings, counts, statistics, the console's
    aggregations — are :class:`~mahavishnu_dlq.storage.sqlite_reads.SQLiteReads`'."""

    backend = "sqlite"
    _setting = "sqlite.path"  # the setting that names the file, as messages say it

    def __init__(
        self, path: str | os.PathLike[str], *, busy_timeout: float = 30.0, readers: int = 4
    ) -> None:
        self.path = Path(path).expanduser()
        self._busy_timeout = busy_timeout
        self._reader_count = max(1, readers)
        self._limiters: dict[str, anyio.CapacityLimiter] = {}  # one per event-loop kind
        self._writer_connection: sqlite3.Connection | None = None
        self._writer = Writer(self._run_batch)
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._unreadable = self._unreadable_records()
        #: the bulk jobs, in the ``jobs`` table of the same file (:mod:`.sqlite_jobs`)
        self.jobs = SQLiteJobStore(self)
        #: breakers and rate limits, in the ``controls`` table (:mod:`.sqlite_controls`)
        self.controls = SQLiteControlStore(self)

    def _unreadable_records(self) -> UnreadableRecords:
        return UnreadableRecords(
            f"sqlite file {str(self.path)!r}",
            _decoded,  # of a row: (task_id, doc)
            reason=documents.unreadable_reason,
            raw=lambda row: str(row[1]),  # the stored text itself
        )

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    @property
    def location(self) -> str:
        """The file, as messages name it."""
        return str(self.path)

    # -- lifecycle -------------------------------------------------------------

    async def open(self, *, create: bool = True) -> None:
        """Create or open the file (idempotent); every other method opens it on first use.

        ``create=False`` opens the same way: the file is this host's own, and its
        directory, the file and its schema are made where ``sqlite.path`` says (a
        first read shows the empty queue a first run has)."""
        if self._writer_connection is not None:
            return
        connection = await anyio.to_thread.run_sync(self._open_file)
        self._adopt(connection)

    def _adopt(self, connection: sqlite3.Connection) -> None:
        """Make ``connection`` the writer's, unless another task opened one meanwhile."""
        if self._writer_connection is None:
            self._writer_connection = connection
            return
        with self._lock:  # opening twice is harmless: the second is closed
            self._connections.remove(connection)
        connection.close()

    def _open_file(self) -> sqlite3.Connection:
        path = self.path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self._unusable(exc, "its directory cannot be created") from exc
        connection: sqlite3.Connection | None = None
        try:
            connection = _connect(path, self._busy_timeout)
            mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise sqlite3.OperationalError(f"journal mode {mode!r} instead of WAL")
            self._migrate(connection)
        except BaseException as exc:
            if connection is not None:  # a failed open keeps no file descriptor
                connection.close()
            if isinstance(exc, sqlite3.Error):
                raise self._unusable(exc, "it cannot be opened") from exc
            raise
        with self._lock:
            self._connections.append(connection)
        return connection

    def _migrate(self, connection: sqlite3.Connection) -> None:
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if version > s.SCHEMA_VERSION:
            connection.close()
            raise ConfigurationError(
                f"sqlite file {str(self.path)!r} has schema version {version}, written by a "
                f"newer mahavishnu-dlq (this one knows up to {s.SCHEMA_VERSION}): upgrade "
                f"mahavishnu-dlq, or use another {self._setting}",
                field=self._setting,
            )
        if version == s.SCHEMA_VERSION:
            return
        connection.execute("BEGIN IMMEDIATE")
        try:
            current = connection.execute("PRAGMA user_version").fetchone()[0]
            for step in range(current + 1, s.SCHEMA_VERSION + 1):
                for statement in s.MIGRATIONS[step]:
                    connection.execute(statement)
            connection.execute(f"PRAGMA user_version = {s.SCHEMA_VERSION}")
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise

    async def close(self) -> None:
        await self._writer.drain()
        with self._lock:
            connections, self._connections = self._connections, []
        self._writer_connection = None
        self._local = threading.local()
        for connection in connections:
            connection.close()

    # -- connections and errors --------------------------------------------------

    def _reader(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            try:
                connection = _connect(self.path, self._busy_timeout)
            except sqlite3.Error as exc:
                raise self._unusable(exc, "it cannot be opened") from exc
            self._local.connection = connection
            with self._lock:
                self._connections.append(connection)
        return connection

    async def _read(self, read: Callable[[sqlite3.Connection], Any]) -> Any:
        if self._writer_connection is None:
            await self.open()  # opened on first use, like the memory store needs no open()

        def run() -> Any:
            try:
                return read(self._reader())
            except sqlite3.Error as exc:
                raise self._failure(exc) from exc

        return await anyio.to_thread.run_sync(run, limiter=self._limiter())

    def _limiter(self) -> anyio.CapacityLimiter:
        """The readers' limiter of the running event loop's kind (a limiter is bound to
        the kind it was first used on, and a store may outlive one ``anyio.run``)."""
        kind = event_loop_kind()
        limiter = self._limiters.get(kind)
        if limiter is None:
            limiter = self._limiters[kind] = anyio.CapacityLimiter(self._reader_count)
        return limiter

    def _unusable(self, exc: BaseException, what: str) -> DLQError:
        return errors.unusable(
            self.path, exc, what, busy_timeout=self._busy_timeout, setting=self._setting
        )

    def _failure(self, exc: sqlite3.Error) -> DLQError:
        return errors.failure(
            self.path, exc, busy_timeout=self._busy_timeout, setting=self._setting
        )

    # -- the writer -----------------------------------------------------------------

    def _run_batch(self, batch: list[Op]) -> None:
        """Apply ``batch`` in one transaction (in a worker thread)."""
        connection = self._writer_connection
        if connection is None:
            error = StoreUnavailableError(_BACKEND, f"{self.location}: the store is closed")
            for op in batch:
                op.error = error
            return
        try:
            connection.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            failure = self._failure(exc)
            for op in batch:
                op.error = failure
            return
        try:
            for op in batch:
                self._apply(connection, op)
            connection.execute("COMMIT")
        except sqlite3.Error as exc:  # the transaction as a whole failed: none of it stands
            failure = self._failure(exc)
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            for op in batch:
                op.result, op.error = None, failure

    def _apply(self, connection: sqlite3.Connection, op: Op) -> None:
        """Apply one operation of the transaction: its failure is its own (undone, kept
        as its outcome), unless the transaction as a whole fails (re-raised): SQLite
        rolled it back, or an operation that writes last failed to write."""
        savepoint = op.undo == "savepoint"
        if savepoint:
            connection.execute("SAVEPOINT op")
        try:
            op.result = op.apply(connection)
        except Exception as exc:
            if isinstance(exc, sqlite3.Error) and (
                not connection.in_transaction or op.undo == "transaction"
            ):
                raise
            if savepoint:
                connection.execute("ROLLBACK TO op")
            op.error = self._failure(exc) if isinstance(exc, sqlite3.Error) else exc
        if savepoint:
            connection.execute("RELEASE op")

    async def _write(
        self,
        apply: Callable[[sqlite3.Connection], Any],
        *,
        undo: Literal["savepoint", "statement", "transaction"] = "statement",
    ) -> Any:
        if self._writer_connection is None:
            await self.open()
        return await self._writer.submit(Op(apply, undo=undo))

    # -- single records --------------------------------------------------------

    def _current(self, connection: sqlite3.Connection, task_id: str) -> FailedTask | None:
        row = connection.execute("SELECT doc FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
        return None if row is None else self._decode_or_raise(task_id, row[0])

    def _decode_or_raise(self, task_id: str, doc: str) -> FailedTask:
        return self._unreadable.read_or_raise(task_id, task_id, (task_id, doc))

    def _decode(self, task_id: str, doc: str) -> FailedTask | None:
        return self._unreadable.read(task_id, (task_id, doc))

    @staticmethod
    def _put(connection: sqlite3.Connection, task: FailedTask) -> None:
        doc = documents.document_json(task, "")
        connection.execute(s.UPSERT, s.row_values(task, doc))

    async def get(self, task_id: str) -> FailedTask | None:
        task_id = require_str(task_id, "task_id")
        result: FailedTask | None = await self._read(lambda c: self._current(c, task_id))
        return result

    def _mutation(self, task_id: str, fn: Mutation) -> Callable[[sqlite3.Connection], FailedTask]:
        def apply(connection: sqlite3.Connection) -> FailedTask:
            new = fn(self._current(connection, task_id))
            if new.task_id != task_id:
                raise ValueError(f"a mutation of {task_id!r} returned task {new.task_id!r}")
            self._put(connection, new)
            return new

        return apply

    async def mutate(self, task_id: str, fn: Mutation) -> FailedTask:
        task_id = require_str(task_id, "task_id")
        result: FailedTask = await self._write(self._mutation(task_id, fn))
        return result

    async def mutate_many(
        self, items: Sequence[tuple[str, Mutation]]
    ) -> list[FailedTask | Exception]:
        """Every item as :meth:`mutate` would, in the same transaction (or a few)."""
        ops = [
            Op(self._mutation(require_str(task_id, "task_id"), fn), undo="statement")
            for task_id, fn in items
        ]
        if ops and self._writer_connection is None:
            await self.open()

        await self._writer.submit_all(ops)
        results: list[FailedTask | Exception] = []
        for op in ops:
            error = op.error
            results.append(op.result if error is None else _as_exception(error))
        return results

    async def delete(self, task_id: str) -> bool:
        task_id = require_str(task_id, "task_id")
        self._unreadable.forget(task_id)

        def apply(connection: sqlite3.Connection) -> bool:
            cursor = connection.execute("DELETE FROM tasks WHERE task_id = ?", (task_id,))
            return cursor.rowcount > 0

        deleted: bool = await self._write(apply)
        return deleted

    # -- the processor's view ----------------------------------------------------

    async def claim_due(
        self, now: datetime, limit: int, fn: Mutation, *, skip_workflows: Collection[str] = ()
    ) -> list[FailedTask]:
        if limit <= 0:
            return []
        now_us = to_micros(now)
        skip = sorted(skip_workflows)  # tasks of workflows whose breakers are open
        skipped = f"AND workflow NOT IN ({', '.join('?' * len(skip))})" if skip else ""

        def apply(connection: sqlite3.Connection) -> list[FailedTask]:
            # every claim is decided first, then written: a refusal or an error
            # leaves nothing to undo, so the claim needs no savepoint (see Op)
            claimed: list[FailedTask] = []
            rows_out: list[tuple[Any, ...]] = []
            after: tuple[int, str] | None = None
            while len(claimed) < limit:
                if after is None:
                    rows = connection.execute(
                        "SELECT task_id, doc, due_us FROM tasks WHERE due_us <= ? "
                        f"{skipped} ORDER BY due_us, task_id LIMIT ?",
                        (now_us, *skip, _PAGE),
                    ).fetchall()
                else:
                    rows = connection.execute(
                        "SELECT task_id, doc, due_us FROM tasks WHERE due_us <= ? AND "
                        f"(due_us > ? OR (due_us = ? AND task_id > ?)) {skipped} "
                        "ORDER BY due_us, task_id LIMIT ?",
                        (now_us, after[0], after[0], after[1], *skip, _PAGE),
                    ).fetchall()
                for task_id, doc, due_us in rows:
                    after = (due_us, task_id)
                    current = self._decode(task_id, doc)
                    if current is None:
                        continue  # unreadable: skipped (and counted)
                    try:
                        new = fn(current)
                    except DLQError:
                        continue  # refused: the task stays due
                    if new.task_id != task_id:
                        raise ValueError(f"a mutation of {task_id!r} returned task {new.task_id!r}")
                    rows_out.append(s.row_values(new, documents.document_json(new, "")))
                    claimed.append(new)
                    if len(claimed) == limit:
                        break
                if len(rows) < _PAGE:
                    break
            connection.executemany(s.UPSERT, rows_out)
            return claimed

        result: list[FailedTask] = await self._write(apply, undo="transaction")
        return result

    async def next_due_at(self) -> datetime | None:
        def read(connection: sqlite3.Connection) -> datetime | None:
            row = connection.execute(
                "SELECT MIN(due_us) FROM tasks WHERE due_us IS NOT NULL"
            ).fetchone()
            return None if row[0] is None else from_micros(row[0])

        result: datetime | None = await self._read(read)
        return result

    # -- many records (the reads are SQLiteReads') ------------------------------------

    async def purge(
        self, *, older_than: datetime | None, statuses: Collection[DeadLetterStatus]
    ) -> int:
        values = [DeadLetterStatus(status).value for status in statuses]
        if not values:
            return 0
        sql = f"DELETE FROM tasks WHERE status IN ({', '.join('?' * len(values))})"
        params: list[Any] = list(values)
        if older_than is not None:
            sql += " AND updated_at_us < ?"
            params.append(to_micros(older_than))

        def apply(connection: sqlite3.Connection) -> int:
            return connection.execute(sql, params).rowcount

        deleted: int = await self._write(apply)
        return deleted

    async def clear(self) -> int:
        self._unreadable.forget()

        def apply(connection: sqlite3.Connection) -> int:
            return connection.execute("DELETE FROM tasks").rowcount

        deleted: int = await self._write(apply)
        return deleted


def _as_exception(error: BaseException) -> Exception:
    if isinstance(error, Exception):
        return error
    raise error  # a cancellation or an interrupt is not an item's failure


def _decoded(row: tuple[str, Any]) -> FailedTask:
    """The record of a row ``(task_id, doc)``; ``ValueError`` or ``TypeError`` when its
    text is not JSON, not a record this version reads, or the record of another id
    (a row written by hand: read as it stands, it would be claimed under a wrong id)."""
    task_id, doc = row
    try:
        source = json.loads(doc)
    except RecursionError as exc:
        raise ValueError("the stored text is not JSON: nested too deeply") from exc
    except ValueError as exc:  # JSONDecodeError, or bytes of no Unicode encoding
        raise ValueError(f"the stored text is not JSON: {exc}") from exc
    task = documents.from_document(source)
    if task.task_id != task_id:
        raise ValueError(f"the stored record is task {task.task_id!r}, in the row of {task_id!r}")
    return task
