"""Group commit for the SQLite store: changes queued, applied in shared transactions.

Every change of a :class:`~mahavishnu_dlq.storage.sqlite.SQLiteStore` is an
:class:`Op`: a function of the writer's connection, run inside a transaction.
:class:`Writer` queues them. The first caller to find it idle *leads*: it takes
every queued operation (up to :data:`MAX_BATCH`) and hands them to the store's
``run`` (one ``BEGIN IMMEDIATE`` … ``COMMIT`` in a worker thread), wakes their
callers, and goes on while the queue holds more; meanwhile new operations queue
for the next transaction. So many producers share one fsync, and one caller's
operations are applied in the order it queued them. A leader that is cancelled
hands the lead to the next caller in line; an operation whose caller is
cancelled before a transaction took it is never applied.

Only anyio primitives, created when used: a writer works on asyncio and trio.
"""

from __future__ import annotations

import sqlite3
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import anyio

__all__ = ["MAX_BATCH", "Op", "Writer"]

#: Most operations in one transaction.
MAX_BATCH = 500


class Op:
    """One queued change: ``apply(connection)`` runs in the writer's transaction."""

    __slots__ = ("apply", "done", "error", "finished", "lead", "result", "taken")

    def __init__(self, apply: Callable[[sqlite3.Connection], Any]) -> None:
        self.apply = apply
        self.done = anyio.Event()
        self.result: Any = None
        self.error: BaseException | None = None
        self.finished = False  # its transaction ended (committed or not)
        self.taken = False  # a transaction took it
        self.lead = False  # the writer was handed to its caller

    def outcome(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.result


class Writer:
    """Applies queued operations in shared transactions, one transaction at a time."""

    def __init__(self, run: Callable[[list[Op]], None]) -> None:
        self._run = run
        self._queue: deque[Op] = deque()
        self._leading = False

    async def submit(self, op: Op) -> Any:
        await self.submit_all([op])
        return op.outcome()

    async def submit_all(self, ops: Sequence[Op]) -> None:
        """Queue ``ops`` in their order (one transaction takes them all when they fit)
        and return once each was applied or refused: see each op's ``outcome()``."""
        self._queue.extend(ops)
        if not self._leading:
            self._leading = True
            await self._lead()
        for op in ops:
            await self._wait(op)

    async def _wait(self, op: Op) -> None:
        while not op.finished:
            try:
                await op.done.wait()
            except BaseException:
                if op.lead:  # handed the writer as we were cancelled: pass it on
                    self._hand_over()
                elif not op.taken and op in self._queue:
                    self._queue.remove(op)  # never applied
                raise
            if op.lead and not op.finished:
                op.lead = False
                op.done = anyio.Event()
                await self._lead()

    async def _lead(self) -> None:
        try:
            while self._queue:
                batch: list[Op] = []
                while self._queue and len(batch) < MAX_BATCH:
                    op = self._queue.popleft()
                    op.taken = True
                    batch.append(op)
                try:
                    await anyio.to_thread.run_sync(self._run, batch)
                finally:
                    for op in batch:
                        op.finished = True
                        op.done.set()
        finally:
            if self._queue:
                self._hand_over()
            else:
                self._leading = False

    def _hand_over(self) -> None:
        head = self._queue[0]
        head.lead = True
        head.done.set()

    async def drain(self) -> None:
        """Wait until every operation queued so far has been applied."""
        if self._queue or self._leading:
            await self.submit(Op(lambda _connection: None))
