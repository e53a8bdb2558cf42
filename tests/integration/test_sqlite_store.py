"""The SQLite store against what a host does to its file: kills, faults, rows it cannot read
(the faults and unreadable rows are tested in ``test_sqlite_faults``).

- Durability: a child process enqueues through ``SQLiteStore`` (eight producers
  sharing transactions), prints each id once its write is acknowledged, and is
  SIGKILLed mid-stream; every printed id is in the file afterwards, and the file
  passes ``PRAGMA integrity_check``.
- Another writer's lock (a plain connection in ``BEGIN IMMEDIATE``, as another
  process holds it): a write waits for it in its thread while the event loop
  serves reads; held past ``busy_timeout``, the error names the setting.
- Faults: a file that is not a database, a database cut in half, a "directory"
  that is a regular file, a read-only directory, a full disk (at a commit, and in
  the middle of a transaction too big for SQLite's page cache), a file of a newer
  schema. Each goes through the library (``SQLiteStore`` and
  ``DeadLetterQueue.from_settings``) and through the CLI (``python -m
  mahavishnu_dlq`` with ``MAHAVISHNU_DLQ_STORE=sqlite``): one error naming the
  file and what to do (the CLI: one line on stderr, exit status 1, or 2 for the
  newer schema — a configuration problem —, no traceback), and afterwards
  whatever was stored before is intact (re-opened and read) and the file
  untouched.
  The tests run as root, whom permission bits do not stop. The read-only
  directory is therefore read-only to a child process that dropped
  ``CAP_DAC_OVERRIDE`` from its bounding set before ``exec``
  (:mod:`tests.integration._confined`): then even root is bound by the mode bits,
  as any user is. The full disk is ``RLIMIT_FSIZE`` in a child with ``SIGXFSZ``
  ignored: a write past the limit fails with ``EFBIG``, which SQLite reports as a
  disk I/O error — what a full disk (``ENOSPC``: "database or disk is full") looks
  like to the store, without mounting anything.
- Unreadable rows, written with plain ``sqlite3`` next to a healthy task: invalid
  JSON, an unknown status, a wrong-typed field, the record of another id. Every
  read path and the processor pass over them (the healthy task completes), a
  read of one raises :class:`UnreadableRecordError` with the stored text,
  statistics count them, each id is logged once; ``show`` prints the stored text
  and one line, exit status 1.
"""

from __future__ import annotations

import os
import select
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from mahavishnu_dlq.errors import (
    StoreUnavailableError,
)
from mahavishnu_dlq.models import TaskFilter
from mahavishnu_dlq.storage.sqlite import SQLiteStore
from mahavishnu_dlq.storage.sqlite_writer import Op
from mahavishnu_dlq.testing import make_task
from tests.integration._sqlite_files import (
    KEPT,
    ROOT,
    fill,
    integrity,
    read_all,
)

# -- 1. an acknowledged write survives a crash -------------------------------------------------

PRODUCER = """
import sys, anyio
from mahavishnu_dlq import DeadLetterQueue
from mahavishnu_dlq.storage.sqlite import SQLiteStore

async def produce(dlq, n):
    for i in range(1_000_000):
        task = await dlq.enqueue(f"p{n}-{i:06d}", {"n": n, "i": i}, error="boom")
        print(task.task_id, flush=True)  # only once the write is acknowledged

async def main():
    dlq = DeadLetterQueue(SQLiteStore(sys.argv[1]), max_size=100_000_000)
    await dlq.connect()
    async with anyio.create_task_group() as tg:
        for n in range(8):
            tg.start_soon(produce, dlq, n)

anyio.run(main, backend=sys.argv[2])
"""


def read_lines_until(proc: subprocess.Popen[bytes], count: int, timeout: float) -> bytes:
    """What ``proc`` printed once it printed ``count`` lines (fails after ``timeout`` s)."""
    assert proc.stdout is not None
    received = b""
    deadline = time.monotonic() + timeout
    while received.count(b"\n") < count:
        left = deadline - time.monotonic()
        assert left > 0, f"only {len(received.splitlines())} lines in {timeout:g}s"
        ready, _, _ = select.select([proc.stdout], [], [], left)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 65536)
            assert chunk, f"the producer exited early ({proc.wait()})"
            received += chunk
    return received


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
def test_every_acknowledged_write_survives_a_kill(tmp_path: Path, loop: str) -> None:
    path = tmp_path / "dlq.sqlite3"
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter
        [sys.executable, "-c", PRODUCER, str(path), loop],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        printed = read_lines_until(proc, 1500, timeout=30)
        os.kill(proc.pid, signal.SIGKILL)  # mid-stream: writes are in flight
        rest, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, err.decode(errors="replace")
    lines = (printed + rest).decode().split("\n")
    acknowledged = set(lines[:-1])  # the last piece is a line cut short, or empty
    assert len(acknowledged) >= 1500

    assert integrity(path) == "ok"  # the file opens cleanly (its log recovered)
    connection = sqlite3.connect(path)
    try:
        stored = {row[0] for row in connection.execute("SELECT task_id FROM tasks")}
    finally:
        connection.close()
    lost = acknowledged - stored
    assert not lost, f"{len(lost)} acknowledged writes were lost, e.g. {sorted(lost)[:5]}"

    async def reopen() -> None:  # and the store reads it, every record readable
        store = SQLiteStore(path)
        try:
            assert await store.count() == len(stored)
            page = await store.query(TaskFilter(), limit=len(stored) + 1)
            assert {task.task_id for task in page} == stored
            assert (await store.statistics()).unreadable == 0
        finally:
            await store.close()

    anyio.run(reopen, backend=loop)


# -- 2. another process's write lock ----------------------------------------------------------


class WatchedStore(SQLiteStore):
    """A SQLiteStore that says when a transaction starts (``entered``, set in its thread)."""

    def __init__(self, path: Path, **options: Any) -> None:
        self.entered = threading.Event()
        super().__init__(path, **options)

    def _run_batch(self, batch: list[Op]) -> None:
        self.entered.set()
        super()._run_batch(batch)


def hold_write_lock(path: Path) -> sqlite3.Connection:
    """A plain connection holding the file's write lock, as another process's would."""
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    return other


@pytest.mark.anyio
async def test_a_write_waiting_for_another_writers_lock_blocks_nothing(tmp_path: Path) -> None:
    path = tmp_path / "dlq.sqlite3"
    store = WatchedStore(path)
    await store.mutate("read-me", lambda _: make_task(task_id="read-me"))
    other = hold_write_lock(path)
    try:
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                tg.start_soon(store.mutate, "waits", lambda _: make_task(task_id="waits"))
                store.entered.clear()
                assert await anyio.to_thread.run_sync(store.entered.wait, 10)
                # the write waits for the lock in its thread; the loop serves everyone else
                for _ in range(20):
                    assert await store.get("read-me") is not None
                    assert await store.count() == 1  # and "waits" is not written yet
                other.execute("COMMIT")  # the other writer is done: ours goes through
        assert await store.get("waits") is not None
    finally:
        other.close()
        await store.close()


@pytest.mark.anyio
async def test_a_lock_held_past_busy_timeout_is_named_and_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "dlq.sqlite3"
    await fill(path, KEPT[:3])
    store = SQLiteStore(path, busy_timeout=0.2)
    await store.open()
    other = hold_write_lock(path)
    try:
        with pytest.raises(StoreUnavailableError) as caught:
            await store.mutate("late", lambda _: make_task(task_id="late"))
        message = str(caught.value)
        assert f"sqlite file {str(path)!r}" in message
        assert "held its write lock longer than 0.2 s (sqlite.busy_timeout_seconds)" in message
        other.execute("ROLLBACK")
        await store.mutate("late", lambda _: make_task(task_id="late"))  # free again
    finally:
        other.close()
        await store.close()
    assert sorted(await read_all(path)) == sorted([*KEPT[:3], "late"])
