"""The SQLite store's group commit (:mod:`mahavishnu_dlq.storage.sqlite_writer`).

The writer is driven with a ``run`` of our own (:class:`Transactions`) that applies
each batch it is handed and records it, and that can hold a batch in its worker
thread until the test releases it: while the first transaction is held, the test
queues, cancels and inspects callers, then lets it go. Every wait is on an event
(``wait_all_tasks_blocked``, a thread's event) under a deadline, never a sleep.
The last tests count the real store's transactions through a subclass that wraps
its ``_run_batch``.

Each test runs on asyncio and on trio.
"""

from __future__ import annotations

import random
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from mahavishnu_dlq.models import FailedTask
from mahavishnu_dlq.storage.sqlite import SQLiteStore
from mahavishnu_dlq.storage.sqlite_writer import MAX_BATCH, Op, Writer
from mahavishnu_dlq.testing import make_task

pytestmark = pytest.mark.anyio

DEADLINE = 10.0  # seconds any test may take before it counts as hung


class Transactions:
    """A writer's ``run``: applies every operation of a batch in order, records the batch.

    ``hold()`` keeps the next batches in their worker thread (after ``entered`` is
    set) until ``release()``."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.applied: list[str] = []
        self.entered = threading.Event()
        self._open = threading.Event()
        self._open.set()
        self._connection = sqlite3.connect(":memory:", check_same_thread=False)

    def __call__(self, batch: list[Op]) -> None:
        self.entered.set()
        self._open.wait(timeout=DEADLINE)
        for op in batch:
            op.result = op.apply(self._connection)
        self.batches.append([str(op.result) for op in batch])

    def op(self, name: str) -> Op:
        """An operation that records ``name`` when applied and returns it."""

        def apply(_connection: sqlite3.Connection) -> str:
            self.applied.append(name)
            return name

        return Op(apply)

    def hold(self) -> None:
        self.entered.clear()
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    async def wait_entered(self) -> None:
        """Return once a batch is in ``run`` (held there if ``hold()`` was called)."""
        assert await anyio.to_thread.run_sync(self.entered.wait, DEADLINE), "no batch started"

    def close(self) -> None:
        self.release()
        self._connection.close()


@pytest.fixture
def run() -> Any:
    transactions = Transactions()
    yield transactions
    transactions.close()  # a failed test never leaves a worker thread waiting


async def _submit(writer: Writer, op: Op, results: dict[str, Any], name: str) -> None:
    results[name] = await writer.submit(op)


async def test_concurrent_callers_share_one_transaction(run: Transactions) -> None:
    writer = Writer(run)
    results: dict[str, Any] = {}
    names = [f"op-{i:03d}" for i in range(200)]
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tg:
            run.hold()
            tg.start_soon(_submit, writer, run.op(names[0]), results, names[0])
            await run.wait_entered()  # the first caller leads, its transaction held
            for name in names[1:]:
                tg.start_soon(_submit, writer, run.op(name), results, name)
            await anyio.wait_all_tasks_blocked()  # all 199 queued behind it
            run.release()
    assert [len(batch) for batch in run.batches] == [1, 199]  # two transactions, not 200
    assert sorted(run.applied) == names
    assert results == {name: name for name in names}  # each caller got its own result


async def test_a_transaction_takes_at_most_max_batch(run: Transactions) -> None:
    writer = Writer(run)
    ops = [run.op(f"op-{i:04d}") for i in range(2 * MAX_BATCH + 1)]
    with anyio.fail_after(DEADLINE):
        await writer.submit_all(ops)
    assert [len(batch) for batch in run.batches] == [MAX_BATCH, MAX_BATCH, 1]
    assert [op.outcome() for op in ops] == [f"op-{i:04d}" for i in range(2 * MAX_BATCH + 1)]


async def test_one_callers_operations_apply_in_its_order(run: Transactions) -> None:
    writer = Writer(run)
    callers = {f"c{n}": [run.op(f"c{n}-{i:04d}") for i in range(700)] for n in range(4)}
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tg:
            for ops in callers.values():
                tg.start_soon(writer.submit_all, ops)
    assert len(run.applied) == 4 * 700
    for caller in callers:
        mine = [name for name in run.applied if name.startswith(f"{caller}-")]
        assert mine == sorted(mine), f"{caller}'s operations were applied out of order"
    assert len(run.batches) < 4 * 700 / 100  # and they shared transactions


async def test_a_caller_cancelled_before_its_transaction_is_never_applied(
    run: Transactions,
) -> None:
    writer = Writer(run)
    results: dict[str, Any] = {}
    cancelled: list[bool] = []

    async def cancellable(scope: anyio.CancelScope, ops: list[Op]) -> None:
        with scope:
            await writer.submit_all(ops)
        cancelled.append(scope.cancelled_caught)

    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tg:
            run.hold()
            tg.start_soon(_submit, writer, run.op("leader"), results, "leader")
            await run.wait_entered()
            scope = anyio.CancelScope()
            tg.start_soon(cancellable, scope, [run.op("gone-1"), run.op("gone-2")])
            tg.start_soon(_submit, writer, run.op("after"), results, "after")
            await anyio.wait_all_tasks_blocked()
            scope.cancel()  # queued, no transaction took them yet
            await anyio.wait_all_tasks_blocked()
            run.release()
    assert cancelled == [True]
    assert run.applied == ["leader", "after"]
    assert run.batches == [["leader"], ["after"]]
    assert results == {"leader": "leader", "after": "after"}


async def test_a_cancelled_leader_hands_the_lead_on(run: Transactions) -> None:
    writer = Writer(run)
    results: dict[str, Any] = {}
    leader = anyio.CancelScope()

    async def lead() -> None:
        with leader:
            await writer.submit(run.op("leader"))

    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tg:
            run.hold()
            tg.start_soon(lead)
            await run.wait_entered()
            for name in ("next-1", "next-2"):
                tg.start_soon(_submit, writer, run.op(name), results, name)
            await anyio.wait_all_tasks_blocked()
            leader.cancel()  # mid-way: its transaction is running, two callers wait
            run.release()
        assert leader.cancelled_caught
        # the transaction that had started stands; the callers behind it were served
        assert results == {"next-1": "next-1", "next-2": "next-2"}
        assert await writer.submit(run.op("later")) == "later"  # nobody holds the lead
    # (trio starts the two callers in either order)
    assert [sorted(batch) for batch in run.batches] == [["leader"], ["next-1", "next-2"], ["later"]]


async def test_the_next_in_line_cancelled_as_it_is_handed_the_lead_passes_it_on(
    run: Transactions,
) -> None:
    writer = Writer(run)
    results: dict[str, Any] = {}
    leader, second = anyio.CancelScope(), anyio.CancelScope()

    async def lead() -> None:
        with leader:
            await writer.submit(run.op("leader"))
        # the lead was just handed to "second", which has not run since: cancel it now
        second.cancel()

    async def follow() -> None:
        with second:
            await writer.submit(run.op("second"))

    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tg:
            run.hold()
            tg.start_soon(lead)
            await run.wait_entered()
            tg.start_soon(follow)
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(_submit, writer, run.op("third"), results, "third")
            await anyio.wait_all_tasks_blocked()
            leader.cancel()
            run.release()
        assert (leader.cancelled_caught, second.cancelled_caught) == (True, True)
        assert run.applied == ["leader", "third"]  # "second" was never applied
        assert results == {"third": "third"}
        assert await writer.submit(run.op("later")) == "later"


async def test_a_leader_cancelled_before_its_transaction_applies_nothing(
    run: Transactions,
) -> None:
    writer = Writer(run)
    with anyio.fail_after(DEADLINE):
        with anyio.CancelScope() as scope:
            scope.cancel()
            await writer.submit(run.op("never"))
        assert scope.cancelled_caught
        assert await writer.submit(run.op("later")) == "later"
    assert run.applied == ["later"]


async def test_callers_cancelled_at_any_moment_never_leave_the_writer_without_a_leader() -> None:
    """Many callers cancelled together, at a different moment each round: the writer
    still takes the next operation. (A leader cancelled before its batch began put back
    the operations of callers cancelled just before it, and handed the lead to one of
    them: nobody led any more, and the store's ``close`` waited for ever. Found by
    the soak benchmark.)"""
    rounds, rng = 100, random.Random(3)  # seed 3 hung in round 3 to 11 before

    def run(batch: list[Op]) -> None:
        for op in batch:
            op.result = op.apply(None)  # type: ignore[arg-type]

    async def caller(writer: Writer, number: int) -> None:
        for _ in range(3):
            await writer.submit(Op(lambda _connection: number))

    for _ in range(rounds):
        writer = Writer(run)
        async with anyio.create_task_group() as tg:
            for number in range(20):
                tg.start_soon(caller, writer, number)
            for _ in range(rng.randrange(1, 30)):
                await anyio.lowlevel.checkpoint()
            tg.cancel_scope.cancel()
        with anyio.fail_after(DEADLINE):
            await writer.drain()
            assert await writer.submit(Op(lambda _connection: "after")) == "after"


async def test_an_operation_that_raises_fails_alone() -> None:
    def boom(_connection: sqlite3.Connection) -> None:
        raise ValueError("boom")

    def each(batch: list[Op]) -> None:  # as the store does: an error is the op's outcome
        for op in batch:
            try:
                op.result = op.apply(sqlite3.connect(":memory:"))
            except ValueError as exc:
                op.error = exc

    ops = [Op(lambda _connection: "before"), Op(boom), Op(lambda _connection: "after")]
    with anyio.fail_after(DEADLINE):
        await Writer(each).submit_all(ops)
    assert ops[0].outcome() == "before"
    with pytest.raises(ValueError, match="boom"):
        ops[1].outcome()
    assert ops[2].outcome() == "after"


async def test_a_run_that_raises_fails_its_operations_instead_of_reporting_them_done() -> None:
    def broken(_batch: list[Op]) -> None:
        raise sqlite3.OperationalError("the connection broke")

    writer = Writer(broken)
    with anyio.fail_after(DEADLINE):
        with pytest.raises(sqlite3.OperationalError, match="broke"):
            await writer.submit(Op(lambda _connection: "applied?"))
        ops = [Op(lambda _connection: "applied?") for _ in range(3)]
        await writer.submit_all(ops)
    for op in ops:
        with pytest.raises(sqlite3.OperationalError):
            op.outcome()


# -- the store's own transactions ----------------------------------------------------------


class CountingStore(SQLiteStore):
    """A SQLiteStore whose transactions are counted (their sizes), and can be held."""

    def __init__(self, path: Path) -> None:
        self.transactions: list[int] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        super().__init__(path)

    def _run_batch(self, batch: list[Op]) -> None:
        self.entered.set()
        self.gate.wait(timeout=DEADLINE)
        self.transactions.append(len(batch))
        super()._run_batch(batch)


def appending(n: int, task_id: str = "ordered") -> Callable[[FailedTask | None], FailedTask]:
    """A mutation that appends ``n`` to the record's ``metadata["seen"]``."""

    def fn(current: FailedTask | None) -> FailedTask:
        base = current or make_task(task_id=task_id, metadata={"seen": []})
        return base.evolve(metadata={"seen": [*base.metadata["seen"], n]})

    return fn


async def test_the_stores_writes_share_transactions(tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "dlq.sqlite3")
    await store.open()
    try:
        with anyio.fail_after(DEADLINE):
            async with anyio.create_task_group() as tg:
                store.gate.clear()
                tg.start_soon(store.mutate, "t-000", lambda _: make_task(task_id="t-000"))
                assert await anyio.to_thread.run_sync(store.entered.wait, DEADLINE)
                for i in range(1, 300):
                    task = make_task(task_id=f"t-{i:03d}")
                    tg.start_soon(store.mutate, task.task_id, lambda _, t=task: t)
                await anyio.wait_all_tasks_blocked()
                store.gate.set()
        assert store.transactions == [1, 299]
        assert await store.count() == 300
    finally:
        store.gate.set()
        await store.close()


async def test_the_stores_mutations_of_one_caller_apply_in_order(tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "dlq.sqlite3")
    try:
        with anyio.fail_after(DEADLINE):
            results = await store.mutate_many([("ordered", appending(n)) for n in range(1200)])
            assert not [r for r in results if isinstance(r, Exception)]
            assert store.transactions == [MAX_BATCH, MAX_BATCH, 200]
            async with anyio.create_task_group() as tg:  # four callers on one id at once
                for caller in range(4):
                    items = [("shared", appending(caller * 1000 + n, "shared")) for n in range(300)]
                    tg.start_soon(store.mutate_many, items)
        ordered = await store.get("ordered")
        assert ordered is not None
        assert ordered.metadata["seen"] == list(range(1200))
        shared = await store.get("shared")
        assert shared is not None
        seen = shared.metadata["seen"]
        assert sorted(seen) == sorted(c * 1000 + n for c in range(4) for n in range(300))
        for caller in range(4):
            mine = [n for n in seen if n // 1000 == caller]
            assert mine == sorted(mine), f"caller {caller}'s mutations were applied out of order"
        assert len(store.transactions) <= 3 + 4 * 3  # 1,200 in three; the others shared
    finally:
        await store.close()
