"""MemoryStore specifics beyond the store contract: copies, the due heap, exact counters.

The contract suite (``tests/contract``) pins what every backend does; this file
checks how the in-memory one keeps its promises: the due heap with lazy deletion
stays bounded and never offers a task that is not due, and the incremental
counters always equal a recount. The stateful test drives the store without an
event loop: every MemoryStore method completes without suspending (which is what
makes each one atomic), and :func:`done` asserts exactly that.
"""

from __future__ import annotations

import gc
import random
from collections import Counter
from collections.abc import Callable, Coroutine
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar, cast

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from mahavishnu_dlq import lifecycle
from mahavishnu_dlq.errors import DLQError, TaskBusyError
from mahavishnu_dlq.models import (
    Attempt,
    DeadLetterStatus,
    ErrorCategory,
    FailedTask,
    RetryPolicy,
    TaskFilter,
)
from mahavishnu_dlq.storage import MemoryStore
from mahavishnu_dlq.testing import make_task

T = TypeVar("T")
T0 = datetime(2026, 3, 1, 12, tzinfo=timezone.utc)
PENDING = DeadLetterStatus.PENDING
RETRYING = DeadLetterStatus.RETRYING
COMPLETED = DeadLetterStatus.COMPLETED
anyio_test = pytest.mark.anyio


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def done(coro: Coroutine[Any, Any, T]) -> T:
    """The result of a MemoryStore coroutine, which must finish without suspending."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return cast(T, stop.value)
    coro.close()
    raise AssertionError("a MemoryStore method suspended: it would not be atomic")


def put(task: FailedTask) -> Callable[[FailedTask | None], FailedTask]:
    return lambda _current: task


def claimer(
    now: datetime, refuse: frozenset[str] = frozenset()
) -> Callable[[FailedTask | None], FailedTask]:
    def claim(current: FailedTask | None) -> FailedTask:
        assert current is not None
        if current.task_id in refuse:
            raise TaskBusyError(current.task_id, reason="refused by the test")
        return lifecycle.claim(
            current, now=now, owner="w1", lease_seconds=30, trigger="processor", attempts_kept=5
        )

    return claim


def due_at(task: FailedTask) -> datetime | None:
    """When ``task`` becomes claimable, by the Store contract."""
    if task.status is PENDING:
        return task.next_retry_at
    if task.status is RETRYING:
        return task.lease_expires_at
    return None


def heap_bound(store: MemoryStore) -> int:
    """The most entries the due heap may hold: compaction keeps it under this."""
    return 2 * len(store._rows) + 1024 + 1


# -- copies -------------------------------------------------------------------------


@anyio_test
async def test_every_read_is_a_fresh_copy() -> None:
    store = MemoryStore()
    task = make_task(task_id="a", task={"k": [1]}, metadata={"m": {"n": 1}}, repos=["r"])
    await store.mutate("a", put(task))
    first, second = await store.get("a"), await store.get("a")
    assert first is not None
    assert second is not None
    assert first == second == task
    assert first is not second
    assert first.task is not second.task
    first.task["k"].append(2)
    first.metadata["m"]["n"] = 99
    first.repos.append("evil")
    first.attempts.append(Attempt(number=1, started_at=T0))
    # neither the record handed to mutate nor one read back can change the store
    task.task["k"].append(3)
    again = await store.get("a")
    assert again is not None
    assert (again.task, again.metadata, again.repos, again.attempts) == (
        {"k": [1]},
        {"m": {"n": 1}},
        ["r"],
        [],
    )
    [listed] = await store.query(TaskFilter(), limit=10)
    listed.task["k"].clear()
    assert (await store.get("a")) == again


# -- the due heap ----------------------------------------------------------------------


def _reschedule(when: datetime | None) -> Callable[[FailedTask | None], FailedTask]:
    def change(current: FailedTask | None) -> FailedTask:
        assert current is not None
        return current.model_copy(update={"next_retry_at": when})

    return change


def _complete(current: FailedTask | None) -> FailedTask:
    assert current is not None
    return current.model_copy(update={"status": COMPLETED, "next_retry_at": None})


async def read(store: MemoryStore, task_id: str) -> FailedTask:
    task = await store.get(task_id)
    assert task is not None
    return task


@anyio_test
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # no I/O: one loop is enough
async def test_due_heap_stays_bounded_under_many_updates_of_few_tasks() -> None:
    store = MemoryStore()
    rng = random.Random(5)
    ids = [f"t{i}" for i in range(10)]
    for task_id in ids:
        await store.mutate(task_id, put(make_task(task_id=task_id, next_retry_at=at(0))))
    largest = 0
    for _ in range(10_000):
        task_id = rng.choice(ids)
        when = at(rng.randrange(1, 10_000))
        await store.mutate(task_id, _reschedule(when))
        largest = max(largest, len(store._due))
    assert largest <= heap_bound(store)
    assert len(store._pending_age) <= heap_bound(store)
    # and the heap still answers correctly after all those compactions
    current = {task_id: due_at(await read(store, task_id)) for task_id in ids}
    dues = sorted((d, task_id) for task_id, d in current.items() if d is not None)
    assert await store.next_due_at() == dues[0][0]
    cutoff = dues[4][0]
    claimed = await store.claim_due(cutoff, 100, claimer(cutoff))
    assert [t.task_id for t in claimed] == [task_id for d, task_id in dues if d <= cutoff]


async def _later(store: MemoryStore) -> None:
    await store.mutate("a", _reschedule(at(100)))


async def _completed(store: MemoryStore) -> None:
    await store.mutate("a", _complete)


async def _manual(store: MemoryStore) -> None:
    await store.mutate("a", _reschedule(None))


async def _recreated_later(store: MemoryStore) -> None:
    await store.delete("a")
    await store.mutate("a", put(make_task(task_id="a", next_retry_at=at(100))))


async def _cleared_and_recreated_later(store: MemoryStore) -> None:
    await store.clear()
    await store.mutate("a", put(make_task(task_id="a", next_retry_at=at(100))))


async def _leased(store: MemoryStore) -> None:
    await store.claim_due(at(10), 1, claimer(at(10)))  # lease until 40 s

    def renew(current: FailedTask | None) -> FailedTask:
        assert current is not None
        return lifecycle.renew(current, now=at(35), owner="w1", lease_seconds=30)

    await store.mutate("a", renew)  # lease until 65 s


@anyio_test
@pytest.mark.parametrize(
    "change",
    [_later, _completed, _manual, _recreated_later, _cleared_and_recreated_later, _leased],
)
async def test_stale_heap_entries_never_offer_a_task_that_is_not_due(
    change: Callable[[MemoryStore], Coroutine[Any, Any, None]],
) -> None:
    store = MemoryStore()
    await store.mutate("a", put(make_task(task_id="a", next_retry_at=at(10))))
    await change(store)  # the heap still holds an entry for "a" due at 10 s
    offered: list[str] = []

    def spy(current: FailedTask | None) -> FailedTask:
        assert current is not None
        offered.append(current.task_id)
        return claimer(at(50))(current)

    assert await store.claim_due(at(50), 10, spy) == []
    assert offered == []
    assert await store.next_due_at() == due_at(await read(store, "a"))


@anyio_test
async def test_a_task_moved_away_and_back_is_claimed_once() -> None:
    store = MemoryStore()
    await store.mutate("a", put(make_task(task_id="a", next_retry_at=at(10))))
    await store.mutate("a", _reschedule(at(100)))
    await store.mutate("a", _reschedule(at(10)))  # two live-looking entries (10, "a")
    claimed = await store.claim_due(at(50), 10, claimer(at(50)))
    assert [t.task_id for t in claimed] == ["a"]
    assert await store.claim_due(at(50), 10, claimer(at(50))) == []


@anyio_test
async def test_compaction_during_a_claim_loses_no_task() -> None:
    store = MemoryStore()
    n = 100
    for i in range(n):
        await store.mutate(f"t{i:03d}", put(make_task(task_id=f"t{i:03d}", next_retry_at=at(i))))
    # fill the heap to just under its compaction threshold with stale entries
    rng = random.Random(1)
    while len(store._due) < heap_bound(store) - 1:
        i = rng.randrange(n)
        await store.mutate(f"t{i:03d}", _reschedule(at(rng.randrange(n))))
    assert len(store._due) == heap_bound(store) - 1
    refused = frozenset(f"t{i:03d}" for i in range(0, n, 2))
    first = await store.claim_due(at(n), 1000, claimer(at(n), refused))  # compacts midway
    assert len(store._due) < heap_bound(store) - 1
    assert sorted(t.task_id for t in first) == sorted(f"t{i:03d}" for i in range(1, n, 2))
    second = await store.claim_due(at(n), 1000, claimer(at(n)))
    assert sorted(t.task_id for t in second) == sorted(refused)  # refused ones stay due
    assert await store.claim_due(at(n), 1000, claimer(at(n))) == []
    assert await store.next_due_at() == at(n + 30)  # the earliest lease expiry


# -- exact counters, whatever happens ---------------------------------------------------

IDS = [f"t{i}" for i in range(6)]
FINGERPRINTS = ["", "fp-a", "fp-b", "fp-c"]


@st.composite
def tasks(draw: st.DrawFn) -> FailedTask:
    status = draw(st.sampled_from(DeadLetterStatus))
    fields: dict[str, Any] = {
        "task_id": draw(st.sampled_from(IDS)),
        "status": status,
        "error_category": draw(st.sampled_from(ErrorCategory)),
        "retry_policy": draw(st.sampled_from(RetryPolicy)),
        "error_fingerprint": draw(st.sampled_from(FINGERPRINTS)),
        "error": draw(st.sampled_from(["connection reset", "quota", "bad input"])),
        "failed_at": at(draw(st.integers(0, 100))),
        "updated_at": at(draw(st.integers(0, 100))),
        "next_retry_at": None,
    }
    if status is PENDING:
        fields["next_retry_at"] = draw(st.none() | st.integers(0, 300).map(at))
    elif status is RETRYING:
        fields.update(
            lease_owner="w0",
            lease_expires_at=at(draw(st.integers(0, 300))),
            retry_count=1,
            attempts=[Attempt(number=1, started_at=T0, worker="w0")],
        )
    return make_task(**fields)


class MemoryStoreMachine(RuleBasedStateMachine):
    """Random writes, claims, deletes and purges against a plain dict as the model."""

    def __init__(self) -> None:
        super().__init__()
        self.store = MemoryStore()
        self.model: dict[str, FailedTask] = {}
        self.now = T0

    @rule(task=tasks())
    def write(self, task: FailedTask) -> None:
        self.model[task.task_id] = done(self.store.mutate(task.task_id, put(task)))

    @rule(task_id=st.sampled_from(IDS), seconds=st.none() | st.integers(0, 300))
    def reschedule(self, task_id: str, seconds: int | None) -> None:
        current = self.model.get(task_id)
        if current is None or current.status is not PENDING:
            return
        when = None if seconds is None else at(seconds)
        self.model[task_id] = done(self.store.mutate(task_id, _reschedule(when)))

    @rule(task_id=st.sampled_from(IDS))
    def refused_mutation(self, task_id: str) -> None:
        def refuse(current: FailedTask | None) -> FailedTask:
            raise TaskBusyError(task_id)

        with pytest.raises(DLQError):
            done(self.store.mutate(task_id, refuse))

    @rule(task_id=st.sampled_from(IDS))
    def delete(self, task_id: str) -> None:
        assert done(self.store.delete(task_id)) is (task_id in self.model)
        self.model.pop(task_id, None)

    @rule(
        advance=st.integers(0, 90),
        limit=st.integers(1, 4),
        refuse=st.frozensets(st.sampled_from(IDS), max_size=2),
    )
    def claim(self, advance: int, limit: int, refuse: frozenset[str]) -> None:
        self.now += timedelta(seconds=advance)
        eligible = sorted(
            (due, task_id)
            for task_id, task in self.model.items()
            if (due := due_at(task)) is not None and due <= self.now and task_id not in refuse
        )
        claimed = done(self.store.claim_due(self.now, limit, claimer(self.now, refuse)))
        # exactly the oldest due tasks, each once, none that was not due
        assert [t.task_id for t in claimed] == [task_id for _, task_id in eligible[:limit]]
        for task in claimed:
            assert task.status is RETRYING
            self.model[task.task_id] = task

    @rule(
        statuses=st.frozensets(st.sampled_from(DeadLetterStatus), min_size=1),
        older_than=st.none() | st.integers(0, 100).map(at),
    )
    def purge(self, statuses: frozenset[DeadLetterStatus], older_than: datetime | None) -> None:
        doomed = [
            task_id
            for task_id, task in self.model.items()
            if task.status in statuses and (older_than is None or task.updated_at < older_than)
        ]
        assert done(self.store.purge(older_than=older_than, statuses=statuses)) == len(doomed)
        for task_id in doomed:
            del self.model[task_id]

    @rule()
    def clear(self) -> None:
        assert done(self.store.clear()) == len(self.model)
        self.model.clear()

    @invariant()
    def records_match_the_model(self) -> None:
        listed = done(self.store.query(TaskFilter(), limit=100))
        assert {task.task_id: task for task in listed} == self.model
        for task_id in IDS:
            assert done(self.store.get(task_id)) == self.model.get(task_id)

    @invariant()
    def statistics_equal_a_recount(self) -> None:
        tasks = list(self.model.values())
        stats = done(self.store.statistics(top_fingerprints=len(FINGERPRINTS)))
        assert stats.total == len(tasks) == done(self.store.count())
        assert stats.by_status == {s: sum(t.status is s for t in tasks) for s in DeadLetterStatus}
        for status in DeadLetterStatus:
            assert done(self.store.count(TaskFilter(status=status))) == stats.by_status[status]
        assert stats.by_category == dict(Counter(t.error_category.value for t in tasks))
        assert stats.by_policy == dict(Counter(t.retry_policy.value for t in tasks))
        open_tasks = [t for t in tasks if t.is_open]
        assert stats.open_count == len(open_tasks) == done(self.store.open_count())
        fingerprints = Counter(t.error_fingerprint for t in open_tasks if t.error_fingerprint)
        assert {fp.fingerprint: fp.count for fp in stats.top_fingerprints} == dict(fingerprints)
        pending = [t.failed_at for t in tasks if t.status is PENDING]
        assert stats.oldest_pending_failed_at == (min(pending) if pending else None)

    @invariant()
    def heap_answers_and_stays_bounded(self) -> None:
        dues = [due for task in self.model.values() if (due := due_at(task)) is not None]
        assert done(self.store.next_due_at()) == (min(dues) if dues else None)
        assert len(self.store._due) <= heap_bound(self.store)
        assert len(self.store._pending_age) <= heap_bound(self.store)


MemoryStoreMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=30, deadline=None
)
TestMemoryStoreMachine = MemoryStoreMachine.TestCase


# -- the cyclic garbage collector ---------------------------------------------------------


def test_rows_without_attempts_are_not_tracked_by_the_cyclic_collector() -> None:
    # A full collection walks every tracked object: a million stored tasks used to
    # add a million rows to each one. Rows of atoms only (no Attempt objects) are
    # untracked by the collector itself, once it has seen them.
    store = MemoryStore()
    for i in range(50):
        done(store.mutate(f"t{i}", put(make_task(task_id=f"t{i}", metadata={"n": [i]}))))
    claimed = done(store.claim_due(T0 + timedelta(days=1), 1, claimer(T0 + timedelta(days=1))))
    assert [task.task_id for task in claimed] == ["t0"]
    gc.collect()  # untracks the inner tuples (repos) …
    gc.collect()  # … then the rows holding them
    rows = store._rows
    assert not any(gc.is_tracked(rows[f"t{i}"]) for i in range(1, 50))
    assert gc.is_tracked(rows["t0"])  # it holds its Attempt
    assert done(store.get("t7")) == make_task(task_id="t7", metadata={"n": [7]})
