"""The Store contract: every backend must pass every test here, unchanged (single records,
batches, claims; queries, statistics and purges are in ``test_store_queries``)."""

from __future__ import annotations

from typing import Any, cast

import anyio
import pytest

from mahavishnu_dlq.errors import TaskBusyError
from mahavishnu_dlq.models import (
    DeadLetterStatus,
    ErrorCategory,
    FailedTask,
    RetryPolicy,
)
from mahavishnu_dlq.storage import Store
from mahavishnu_dlq.testing import make_task
from tests.contract._records import (
    T0,
    at,
    claimer,
    put,
    seed,
)

pytestmark = pytest.mark.anyio


# -- single records -----------------------------------------------------------------


async def test_get_unknown_id_is_none(store: Store) -> None:
    assert await store.get("nope") is None


async def test_mutate_creates_and_get_reads_it_back_exactly(store: Store) -> None:
    task = make_task(
        task_id="a",
        now=T0,
        task={"nested": {"list": [1, 2.5, None, True], "text": "zażółć ✓"}},
        metadata={"user": "ops", "n": 3},
        repos=["r1", "r2"],
        traceback="Traceback ...",
        error_category=ErrorCategory.NETWORK,
        retry_policy=RetryPolicy.LINEAR,
        next_retry_at=at(61.000001),
    )
    stored = await store.mutate("a", put(task))
    assert stored == task
    read = await store.get("a")
    assert read == task
    assert read is not None
    assert read.next_retry_at == at(61.000001)  # microseconds survive the round trip
    assert read.failed_at.tzinfo is not None


async def test_records_handed_out_are_copies(store: Store) -> None:
    await seed(store, make_task(task_id="a", task={"k": [1]}, metadata={"m": 1}))
    first = await store.get("a")
    assert first is not None
    first.task["k"].append(2)
    first.metadata["m"] = 99
    again = await store.get("a")
    assert again is not None
    assert again.task == {"k": [1]}
    assert again.metadata == {"m": 1}


async def test_mutate_passes_current_record(store: Store) -> None:
    await seed(store, make_task(task_id="a", retry_count=1))
    seen: list[FailedTask | None] = []

    def bump(current: FailedTask | None) -> FailedTask:
        seen.append(current)
        assert current is not None
        return current.model_copy(update={"retry_count": current.retry_count + 1})

    result = await store.mutate("a", bump)
    assert seen[-1] is not None
    assert seen[-1].retry_count == 1
    assert result.retry_count == 2
    stored = await store.get("a")
    assert stored is not None
    assert stored.retry_count == 2


async def test_mutate_that_raises_writes_nothing(store: Store) -> None:
    await seed(store, make_task(task_id="a", retry_count=1))

    def refuse(current: FailedTask | None) -> FailedTask:
        raise TaskBusyError("a")

    with pytest.raises(TaskBusyError):
        await store.mutate("a", refuse)
    with pytest.raises(TaskBusyError):
        await store.mutate("new", refuse)
    stored = await store.get("a")
    assert stored is not None
    assert stored.retry_count == 1
    assert await store.get("new") is None


async def test_mutate_must_keep_the_id(store: Store) -> None:
    with pytest.raises(ValueError, match="returned task"):
        await store.mutate("a", put(make_task(task_id="b")))
    assert await store.get("a") is None
    assert await store.get("b") is None


# -- batches ------------------------------------------------------------------------


def bumper(current: FailedTask | None) -> FailedTask:
    """A mutation that counts its applications in ``retry_count``."""
    assert current is not None
    return current.model_copy(update={"retry_count": current.retry_count + 1})


def refusing(error: Exception) -> Any:
    """A mutation that refuses with ``error`` (the very object)."""

    def refuse(_current: FailedTask | None) -> FailedTask:
        raise error

    return refuse


async def test_mutate_many_returns_stored_records_in_input_order(store: Store) -> None:
    await seed(store, make_task(task_id="old", retry_count=1))
    fresh = [make_task(task_id=f"t{i:03d}", now=at(i), metadata={"i": i}) for i in range(100)]
    items = [(task.task_id, put(task)) for task in reversed(fresh)]
    items.insert(50, ("old", bumper))
    results = await store.mutate_many(items)
    assert [r.task_id for r in results if isinstance(r, FailedTask)] == [i[0] for i in items]
    for (task_id, _), result in zip(items, results, strict=True):
        assert result == await store.get(task_id)
    assert results[-1] == fresh[0]
    old = results[50]
    assert isinstance(old, FailedTask)
    assert old.retry_count == 2
    assert await store.count() == 101


async def test_mutate_many_hands_back_each_refusal_in_its_place(store: Store) -> None:
    await seed(store, make_task(task_id="a", retry_count=1), make_task(task_id="c", retry_count=1))
    busy = TaskBusyError("a")
    bad = ValueError("not this one")
    results = await store.mutate_many(
        [
            ("a", refusing(busy)),
            ("b", put(make_task(task_id="b"))),
            ("new", refusing(bad)),
            ("c", bumper),
        ]
    )
    assert results[0] is busy
    assert results[2] is bad
    assert results[1] == make_task(task_id="b")
    assert isinstance(results[3], FailedTask)
    assert results[3].retry_count == 2
    stored_a = await store.get("a")
    assert stored_a is not None
    assert stored_a.retry_count == 1  # nothing written for the refused item
    assert await store.get("new") is None
    assert await store.get("b") == make_task(task_id="b")
    stored_c = await store.get("c")
    assert stored_c is not None
    assert stored_c.retry_count == 2
    assert await store.count() == 3


async def test_mutate_many_applies_items_of_one_id_in_order(store: Store) -> None:
    await seed(store, make_task(task_id="a", retry_count=1))
    seen: list[int] = []

    def noting(current: FailedTask | None) -> FailedTask:
        assert current is not None
        seen.append(current.metadata.get("n", 0))
        return current.evolve(metadata={"n": current.metadata.get("n", 0) + 1})

    results = await store.mutate_many(
        [
            ("a", bumper),
            ("n", put(make_task(task_id="n"))),  # created, then changed in the same call
            ("a", refusing(TaskBusyError("a"))),  # a refusal between two does not break the chain
            ("n", noting),
            ("a", bumper),
            ("n", noting),
        ]
    )
    assert isinstance(results[2], TaskBusyError)
    a1, a2 = results[0], results[4]
    assert isinstance(a1, FailedTask)
    assert isinstance(a2, FailedTask)
    assert (a1.retry_count, a2.retry_count) == (2, 3)
    n1, n2 = results[3], results[5]
    assert isinstance(n1, FailedTask)
    assert isinstance(n2, FailedTask)
    assert (n1.metadata, n2.metadata) == ({"n": 1}, {"n": 2})
    assert seen[-2:] == [0, 1]  # the second saw the first's result
    assert await store.get("a") == a2
    assert await store.get("n") == n2


async def test_mutate_many_of_nothing_is_nothing(store: Store) -> None:
    assert await store.mutate_many([]) == []
    assert await store.count() == 0


async def test_mutate_many_must_keep_the_id(store: Store) -> None:
    await seed(store, make_task(task_id="a", retry_count=1))
    results = await store.mutate_many(
        [
            ("a", put(make_task(task_id="b"))),
            ("x", put(make_task(task_id="y"))),
            ("ok", put(make_task(task_id="ok"))),
        ]
    )
    assert isinstance(results[0], ValueError)
    assert "returned task" in str(results[0])
    assert isinstance(results[1], ValueError)
    assert results[2] == make_task(task_id="ok")
    stored = await store.get("a")
    assert stored is not None
    assert stored.retry_count == 1
    for task_id in ("b", "x", "y"):
        assert await store.get(task_id) is None


async def test_mutate_many_of_many_ids_some_stored_some_new_some_refused(store: Store) -> None:
    """2,500 distinct ids (more than one round of reads and writes on OpenSearch)."""
    stored = [make_task(task_id=f"m{i:04d}", retry_count=1) for i in range(0, 2500, 2)]
    assert await store.mutate_many([(t.task_id, put(t)) for t in stored]) == stored
    refusal = TaskBusyError("m")
    items: list[tuple[str, Any]] = []
    for i in range(2500):
        task_id = f"m{i:04d}"
        if i % 7 == 0:
            items.append((task_id, refusing(refusal)))  # stored or not: nothing written
        elif i % 2 == 0:
            items.append((task_id, bumper))  # stored: bumped
        else:
            items.append((task_id, put(make_task(task_id=task_id))))  # new
    results = await store.mutate_many(items)
    for i, result in enumerate(results):
        if i % 7 == 0:
            assert result is refusal
        else:
            assert isinstance(result, FailedTask)
            assert result.task_id == f"m{i:04d}"
            assert result.retry_count == (2 if i % 2 == 0 else 0)
    assert await store.count() == 1250 + len([i for i in range(1, 2500, 2) if i % 7])

    def stored_count(i: int) -> int | None:
        """retry_count of m<i> as stored now; None when absent."""
        if i % 2 == 0:
            return 1 if i % 7 == 0 else 2
        return None if i % 7 == 0 else 0

    for i in (0, 1, 2, 3, 7, 14, 2499):
        found = await store.get(f"m{i:04d}")
        assert (None if found is None else found.retry_count) == stored_count(i), i


async def test_batches_and_single_mutations_of_overlapping_ids_all_apply(store: Store) -> None:
    """Concurrent mutate_many calls (ids in any order, some twice) and mutate calls on
    the same ids: every change applied once, each seeing the one before it."""
    ids = [f"o{i:03d}" for i in range(300)]
    await store.mutate_many([(task_id, put(make_task(task_id=task_id))) for task_id in ids])
    failures: list[BaseException] = []

    async def batch(order: list[int]) -> None:
        results = await store.mutate_many([(ids[k], bumper) for k in order])
        failures.extend(r for r in results if isinstance(r, BaseException))

    async def single(task_id: str) -> None:
        try:
            await store.mutate(task_id, bumper)
        except Exception as exc:
            failures.append(exc)

    with anyio.fail_after(120):  # a deadlock between batches fails here, not forever
        async with anyio.create_task_group() as group:
            group.start_soon(batch, list(range(300)))
            group.start_soon(batch, list(reversed(range(300))))
            group.start_soon(batch, list(range(0, 300, 3)))
            group.start_soon(batch, [k for k in range(100) for _ in range(2)])
            for k in range(0, 300, 10):
                group.start_soon(single, ids[k])
    assert failures == []
    for k, task_id in enumerate(ids):
        found = await store.get(task_id)
        assert found is not None
        expected = 2 + (k % 3 == 0) + (2 if k < 100 else 0) + (k % 10 == 0)
        assert found.retry_count == expected, task_id


@pytest.mark.parametrize(
    "task_id",
    ["with/slash", "with space", "ünïcødé-✓", "_underscore", "..", "a" * 512, "q?x=1&y#frag"],
)
async def test_any_task_id_string_is_stored_safely(store: Store, task_id: str) -> None:
    await seed(store, make_task(task_id=task_id))
    read = await store.get(task_id)
    assert read is not None
    assert read.task_id == task_id
    assert await store.delete(task_id)
    assert await store.get(task_id) is None


@pytest.mark.parametrize("task_id", [None, 17, b"a", ("a",)])
async def test_ids_that_are_not_strings_are_a_type_error(store: Store, task_id: object) -> None:
    bad = cast(Any, task_id)
    with pytest.raises(TypeError, match="task_id must be a string"):
        await store.get(bad)
    with pytest.raises(TypeError, match="task_id must be a string"):
        await store.mutate(bad, put(make_task(task_id="x")))
    with pytest.raises(TypeError, match="task_id must be a string"):
        await store.delete(bad)
    assert await store.count() == 0


async def test_concurrent_mutations_of_one_id_apply_one_after_the_other(store: Store) -> None:
    """200 writers of one id in one process: every change applied, none refused."""

    def add_key(n: int) -> Any:
        def apply(current: FailedTask | None) -> FailedTask:
            base = current if current is not None else make_task(task_id="same", metadata={})
            return base.evolve(
                metadata={**base.metadata, f"n{n}": n}, retry_count=base.retry_count + 1
            )

        return apply

    outcomes: list[FailedTask | BaseException] = []

    async def writer(n: int) -> None:
        try:
            outcomes.append(await store.mutate("same", add_key(n)))
        except Exception as exc:
            outcomes.append(exc)

    async with anyio.create_task_group() as group:
        for n in range(200):
            group.start_soon(writer, n)
    assert [o for o in outcomes if isinstance(o, BaseException)] == []
    stored = await store.get("same")
    assert stored is not None
    assert stored.metadata == {f"n{n}": n for n in range(200)}
    assert stored.retry_count == 200  # each writer saw its predecessor's result
    assert sorted(o.retry_count for o in outcomes if isinstance(o, FailedTask)) == list(
        range(1, 201)
    )


async def test_delete(store: Store) -> None:
    await seed(store, make_task(task_id="a"))
    assert await store.delete("a") is True
    assert await store.delete("a") is False
    assert await store.get("a") is None
    assert await store.count() == 0


# -- claiming -----------------------------------------------------------------------


async def test_claim_due_takes_due_pending_tasks_oldest_first(store: Store) -> None:
    await seed(
        store,
        make_task(task_id="late", next_retry_at=at(30)),
        make_task(task_id="early", next_retry_at=at(10)),
        make_task(task_id="future", next_retry_at=at(70)),
        make_task(task_id="manual", next_retry_at=None),
        make_task(task_id="done", status=DeadLetterStatus.COMPLETED, next_retry_at=None),
    )
    claimed = await store.claim_due(at(50), 10, claimer(at(50)))
    assert [t.task_id for t in claimed] == ["early", "late"]
    for task in claimed:
        assert task.status is DeadLetterStatus.RETRYING
        assert task.lease_owner == "w1"
        stored = await store.get(task.task_id)
        assert stored == task
    assert await store.claim_due(at(50), 10, claimer(at(50))) == []
    # at 70 s the others' 30 s leases (until 80 s) still hold
    later = await store.claim_due(at(70), 10, claimer(at(70)))
    assert [t.task_id for t in later] == ["future"]


async def test_claim_due_respects_limit(store: Store) -> None:
    await seed(store, *(make_task(task_id=f"t{i}", next_retry_at=at(i)) for i in range(5)))
    first = await store.claim_due(at(10), 2, claimer(at(10)))
    assert [t.task_id for t in first] == ["t0", "t1"]
    rest = await store.claim_due(at(10), 10, claimer(at(10)))
    assert [t.task_id for t in rest] == ["t2", "t3", "t4"]


async def test_a_claimed_task_is_not_claimed_again_until_its_lease_expires(store: Store) -> None:
    await seed(store, make_task(task_id="a", next_retry_at=at(0)))
    assert len(await store.claim_due(at(1), 10, claimer(at(1), "w1"))) == 1
    assert await store.claim_due(at(2), 10, claimer(at(2), "w2")) == []
    # lease was 30 s: at 31 s the worker is presumed dead
    again = await store.claim_due(at(31), 10, claimer(at(31), "w2"))
    assert [t.lease_owner for t in again] == ["w2"]
    assert again[0].retry_count == 2
    assert again[0].attempts[0].outcome.value == "lost"


async def test_claim_due_skips_tasks_whose_mutation_refuses(store: Store) -> None:
    await seed(
        store,
        make_task(task_id="a", next_retry_at=at(0)),
        make_task(task_id="b", next_retry_at=at(1)),
    )

    def only_b(current: FailedTask | None) -> FailedTask:
        assert current is not None
        if current.task_id == "a":
            raise TaskBusyError("a")
        return claimer(at(5))(current)  # type: ignore[no-any-return]

    claimed = await store.claim_due(at(5), 10, only_b)
    assert [t.task_id for t in claimed] == ["b"]
    # the refused task stays due and is offered again
    again = await store.claim_due(at(5), 10, claimer(at(5)))
    assert [t.task_id for t in again] == ["a"]


async def test_a_claim_that_breaks_leaves_the_task_due(store: Store) -> None:
    """A mutation that raises anything but a refusal ends the claim; the task stays due."""
    await seed(store, make_task(task_id="t", next_retry_at=at(0)))

    def broken(current: FailedTask | None) -> FailedTask:
        raise RuntimeError("a bug in the claimer")

    with pytest.raises(RuntimeError, match="a bug in the claimer"):
        await store.claim_due(at(10), 10, broken)
    assert [t.task_id for t in await store.claim_due(at(10), 10, claimer(at(10)))] == ["t"]


async def test_next_due_at(store: Store) -> None:
    assert await store.next_due_at() is None
    await seed(
        store,
        make_task(task_id="a", next_retry_at=at(20)),
        make_task(task_id="b", next_retry_at=at(10)),
        make_task(task_id="c", next_retry_at=None),
    )
    assert await store.next_due_at() == at(10)
    await store.delete("b")
    assert await store.next_due_at() == at(20)
