"""Group commit for the SQLite store: changes queued, applied in shared transactions.

Every change of a :class:`~mahavishnu_dlq.storage.sqlite.SQLiteStore` is an
:class:`Op`: a function of the writer's connection, run inside a transaction.
:class:`Writer` queues them. The first caller to find it idle *leads*: it takes
every queued operation (up to :data:`MAX_BATCH`) and hands them to the store's
``run`` (one ``BEGIN IMMEDIATE`` … ``COMMIT`` in a worker thread), wakes their
callers, and goes on while the queue holds more; meanwhile new operations queue
for the next transaction. Before it takes a batch it yields once, so that the
callers the last commit woke queue their next operations into it (100 producers
then share transactions of about 100, instead of alternating one of 1 and one of
99). So many producers share one fsync, and one caller's operations are applied
in the order it queued them. A leader that is cancelled
hands the lead to the next caller in line (a batch it had not begun goes back in
line first, less the operations whose callers are gone); an operation whose caller
is cancelled before a transaction took it is never applied, and one whose
transaction failed reports that failure.

Only anyio primitives, created when used: a writer works on asyncio and trio.
"""

from __future__ import annotations

import sqlite3
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Literal

import anyio
import anyio.lowlevel

__all__ = ["MAX_BATCH", "Op", "Writer"]

#: Most operations in one transaction.
MAX_BATCH = 500


class Op:
    """One queued change: ``apply(connection)`` runs in the writer's transaction.

    ``undo`` says how a failure of ``apply`` is undone without undoing the others:

    ``"savepoint"`` (the default)
        ``apply`` runs in a savepoint of its own, rolled back when it raises.
    ``"statement"``
        ``apply`` changes the file with at most one statement, its last step:
        SQLite undoes a failed statement whole, so no savepoint is needed.
    ``"transaction"``
        ``apply`` writes last, after every check that may refuse it: a write
        that fails (an SQLite error, such as a full disk) fails the transaction.

    A savepoint costs: SQLite copies every page it changes into a journal of its
    own, three times the cost of the change itself for a claim of 1,000 tasks.
    """

    __slots__ = (
        "abandoned",
        "apply",
        "done",
        "error",
        "finished",
        "lead",
        "result",
        "taken",
        "undo",
    )

    def __init__(
        self,
        apply: Callable[[sqlite3.Connection], Any],
        *,
        undo: Literal["savepoint", "statement", "transaction"] = "savepoint",
    ) -> None:
        self.apply = apply
        self.undo = undo
        self.done = anyio.Event()
        self.result: Any = None
        self.error: BaseException | None = None
        self.finished = False  # its transaction ended (committed or not)
        self.taken = False  # a transaction took it
        self.lead = False  # the writer was handed to its caller
        self.abandoned = False  # its caller is gone (cancelled): nobody waits for it

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
        try:
            if not self._leading:
                self._leading = True
                await self._lead()
            for op in ops:
                await self._wait(op)
        except BaseException:
            self._abandon(ops)
            raise

    async def _wait(self, op: Op) -> None:
        while not op.finished:
            await op.done.wait()
            if op.lead and not op.finished:
                op.lead = False
                op.done = anyio.Event()
                await self._lead()

    def _abandon(self, ops: Sequence[Op]) -> None:
        """The caller of ``ops`` is gone (cancelled): those no transaction took are never
        applied, and a lead handed to one of them goes to the next in line."""
        handed = False
        for op in ops:
            op.abandoned = True
            if not op.taken and op in self._queue:
                self._queue.remove(op)
            handed = handed or op.lead
            op.lead = False
        if handed:
            self._hand_over()

    async def _lead(self) -> None:
        try:
            while self._queue:
                # let the callers already woken (by the last commit) queue their next
                # operations first, so that they share this transaction instead of each
                # wave being split into a transaction of one and one of the rest
                await anyio.lowlevel.cancel_shielded_checkpoint()
                batch: list[Op] = []
                while self._queue and len(batch) < MAX_BATCH:
                    op = self._queue.popleft()
                    op.taken = True
                    batch.append(op)
                started = False

                def run(batch: list[Op] = batch) -> None:
                    nonlocal started
                    started = True
                    try:
                        self._run(batch)
                    except Exception as exc:  # noqa: BLE001 - each caller gets it as its outcome
                        for op in batch:
                            if op.error is None:
                                op.result, op.error = None, exc

                try:
                    await anyio.to_thread.run_sync(run)
                finally:
                    if started:  # the thread ran it (a cancellation waits for the thread)
                        for op in batch:
                            op.finished = True
                            op.done.set()
                    else:  # cancelled before it began: back in line, for the next leader
                        for op in reversed(batch):
                            op.taken = False
                            if not op.abandoned:  # (one whose caller is gone: dropped,
                                self._queue.appendleft(op)  # or none would lead it)
        finally:
            self._hand_over()

    def _hand_over(self) -> None:
        """Wake the first caller in line to lead, or mark the writer idle."""
        if not self._queue:
            self._leading = False
            return
        head = self._queue[0]
        head.lead = True
        head.done.set()

    async def drain(self) -> None:
        """Wait until every operation queued so far has been applied."""
        if self._queue or self._leading:
            await self.submit(Op(lambda _connection: None))
