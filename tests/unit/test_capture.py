"""Capturing failures: ``DeadLetterQueue.enqueue_many`` (and the record ``enqueue`` stores).

The memory store, a FakeClock and ``RetryProcessor.run_once``/``drain``: nothing
sleeps, every async test runs on asyncio and on trio. ``BlockingDLQ.enqueue_many``
is driven from plain sync code at the end.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any, Literal, cast

import pytest

from mahavishnu_dlq import BlockingDLQ, DeadLetterQueue, Failure, RetryProcessor
from mahavishnu_dlq.errors import (
    DLQError,
    InvalidPayloadError,
    PayloadTooLargeError,
    QueueFullError,
)
from mahavishnu_dlq.models import (
    DeadLetterStatus,
    ErrorCategory,
    FailedTask,
    RetryPolicy,
    encode_json,
)
from mahavishnu_dlq.testing import FakeClock, FlakyHandler

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
WORKER = "w-capture"

PENDING = DeadLetterStatus.PENDING
EXHAUSTED = DeadLetterStatus.EXHAUSTED
COMPLETED = DeadLetterStatus.COMPLETED


class ThrottledError(ConnectionError):
    """A retryable failure asking for a later retry through ``retry_after`` (the
    policy's hint path)."""

    retry_after = 120


class BrokenStrError(Exception):
    """An exception whose ``str()`` itself fails."""

    def __str__(self) -> str:
        raise RuntimeError("__str__ is broken")


def _connect(shard: int) -> None:
    raise ConnectionError(f"connection to shard {shard} refused")


def connection_error(shard: int = 1) -> BaseException:
    """A raised ConnectionError with a traceback through a real function."""
    try:
        _connect(shard)
    except ConnectionError as caught:
        return caught
    raise AssertionError("unreachable")  # pragma: no cover


def raised(exc: BaseException) -> BaseException:
    """``exc`` after being raised and caught, so it carries a traceback."""
    try:
        raise exc
    except BaseException as caught:
        return caught


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


def make_dlq(clock: FakeClock, **options: Any) -> DeadLetterQueue:
    return DeadLetterQueue(clock=clock, rng=random.Random(1234), worker_id=WORKER, **options)


@pytest.fixture
def dlq(clock: FakeClock) -> DeadLetterQueue:
    return make_dlq(clock)


async def fetch(dlq: DeadLetterQueue, task_id: str) -> FailedTask:
    task = await dlq.get_task(task_id)
    assert task is not None, f"{task_id} is not stored"
    return task


async def stored_ids(dlq: DeadLetterQueue) -> set[str]:
    return {task.task_id for task in await dlq.list_tasks(limit=1000)}


def record(result: FailedTask | DLQError) -> FailedTask:
    assert isinstance(result, FailedTask), f"expected a record, got {result!r}"
    return result


def without_uptime(task: FailedTask) -> dict[str, Any]:
    """Every field of ``task``, without the one value that differs between two
    captures of the same failure (the process uptime at the time)."""
    data = task.model_dump()
    context = data["metadata"]["failure_context"]
    assert isinstance(context.pop("uptime_seconds"), float)
    return data


def varied_failures() -> list[Failure]:
    """Failures covering every way a first record is scheduled and described."""
    return [
        Failure("net", {"order": 1}, ["repo-a", "repo-b"], connection_error(), workflow="billing"),
        Failure(
            "text",
            {"order": 2},
            ("repo-c",),
            "invalid email address",
            metadata={"tenant": "acme", "attempt": 1},
        ),
        Failure("never", {"order": 3}, None, connection_error(2), retry_policy="never"),
        Failure(
            "linear",
            {"order": 4},
            error=raised(ValueError("bad input")),
            retry_policy=RetryPolicy.LINEAR,
            max_retries=7,
            error_category=ErrorCategory.TRANSIENT,
        ),
        Failure("hint", {"order": 5}, error=raised(ThrottledError("slow down"))),
        Failure("zero", {"order": 6}, error="connection reset by peer", max_retries=0),
        Failure("immediate", {"order": 7}, error="timeout", retry_policy="immediate"),
        Failure("categorised", {"order": 8}, error="boom", error_category="resource"),
    ]


# -- results and records -------------------------------------------------------------------


async def test_results_come_back_in_input_order_as_the_stored_records(
    dlq: DeadLetterQueue,
) -> None:
    failures = [Failure(f"t-{n}", {"n": n}, error=f"failure {n}") for n in (5, 3, 9, 1, 7)]
    results = await dlq.enqueue_many(failures)
    assert [record(r).task_id for r in results] == ["t-5", "t-3", "t-9", "t-1", "t-7"]
    for failure, result in zip(failures, results, strict=True):
        stored = await fetch(dlq, failure.task_id)
        assert result == stored
        assert stored.task == failure.task
        assert stored.error == failure.error
    assert len(await dlq.list_tasks(limit=100)) == 5


async def test_batch_records_equal_what_enqueue_makes_for_the_same_arguments(
    dlq: DeadLetterQueue,
) -> None:
    single = make_dlq(FakeClock(T0))
    failures = varied_failures()
    batch = await dlq.enqueue_many(failures)
    for failure, result in zip(failures, batch, strict=True):
        one = await single.enqueue(
            failure.task_id,
            failure.task,
            failure.repos,
            failure.error,
            retry_policy=failure.retry_policy,
            max_retries=failure.max_retries,
            metadata=failure.metadata,
            error_category=failure.error_category,
            workflow=failure.workflow,
        )
        assert without_uptime(record(result)) == without_uptime(one), failure.task_id
        stored = await fetch(dlq, failure.task_id)
        assert without_uptime(stored) == without_uptime(await fetch(single, failure.task_id))
    # the batch really covered the different schedules
    by_id = {record(r).task_id: record(r) for r in batch}
    assert by_id["net"].next_retry_at == T0 + timedelta(seconds=60)
    assert by_id["net"].traceback is not None
    assert "_connect" in by_id["net"].traceback
    assert by_id["never"].next_retry_at is None
    assert by_id["never"].status is PENDING
    assert by_id["linear"].max_retries == 7
    assert by_id["linear"].error_category is ErrorCategory.TRANSIENT
    assert by_id["hint"].next_retry_at == T0 + timedelta(seconds=120)
    assert by_id["zero"].status is EXHAUSTED
    assert by_id["immediate"].next_retry_at == T0
    assert by_id["categorised"].error_category is ErrorCategory.RESOURCE
    assert by_id["text"].repos == ["repo-c"]
    assert by_id["text"].metadata["tenant"] == "acme"
    assert await dlq.get_statistics() == await single.get_statistics()


async def test_a_batch_shares_one_clock_reading(dlq: DeadLetterQueue, clock: FakeClock) -> None:
    clock.advance(30)
    results = await dlq.enqueue_many([Failure("a", {}, error="x"), Failure("b", {}, error="y")])
    for result in results:
        task = record(result)
        assert task.failed_at == task.created_at == task.updated_at == T0 + timedelta(seconds=30)


async def test_an_empty_batch_gives_an_empty_list(dlq: DeadLetterQueue) -> None:
    assert await dlq.enqueue_many([]) == []
    assert await dlq.enqueue_many(iter(())) == []
    stats = await dlq.get_statistics()
    assert stats["total_stored"] == 0
    assert stats["lifetime_stats"]["enqueued_total"] == 0


async def test_any_iterable_of_failures_is_taken(dlq: DeadLetterQueue) -> None:
    def generate() -> Iterator[Failure]:
        for n in range(3):
            yield Failure(f"g-{n}", {"n": n}, error="x")

    results = await dlq.enqueue_many(generate())
    assert [record(r).task_id for r in results] == ["g-0", "g-1", "g-2"]
    assert await stored_ids(dlq) == {"g-0", "g-1", "g-2"}


# -- bad items -----------------------------------------------------------------------------


async def test_bad_items_get_their_error_in_place_and_the_others_are_stored(
    clock: FakeClock,
) -> None:
    dlq = make_dlq(clock, max_payload_bytes=200)
    failures = [
        Failure("ok-1", {"n": 1}, error="x"),
        Failure("not-a-mapping", cast(Any, ["a", "list"]), error="x"),
        Failure("too-large", {"blob": "x" * 500}, error="x"),
        Failure("a-set", {"tags": {"a", "b"}}, error="x"),
        Failure("an-object", {"nested": {"thing": object()}}, error="x"),
        Failure("nan", {"value": float("nan")}, error="x"),
        Failure("bad-metadata", {"n": 2}, error="x", metadata={"when": datetime.now(timezone.utc)}),
        Failure("ok-2", {"n": 2}, error="x"),
        Failure("bogus-policy", {}, error="x", retry_policy="bogus"),
        Failure("bogus-category", {}, error="x", error_category="bogus"),
        Failure("too-many-retries", {}, error="x", max_retries=5000),
        Failure("negative-retries", {}, error="x", max_retries=-1),
        Failure("", {}, error="x"),
        Failure("i" * 513, {}, error="x"),
        Failure("ok-3", {"n": 3}, error="x"),
    ]
    results = await dlq.enqueue_many(failures)
    assert len(results) == len(failures)
    expected: dict[str, type[Exception]] = {
        "not-a-mapping": InvalidPayloadError,
        "too-large": PayloadTooLargeError,
        "a-set": InvalidPayloadError,
        "an-object": InvalidPayloadError,
        "nan": InvalidPayloadError,
        "bad-metadata": InvalidPayloadError,
        "bogus-policy": InvalidPayloadError,
        "bogus-category": InvalidPayloadError,
        "too-many-retries": InvalidPayloadError,
        "negative-retries": InvalidPayloadError,
        "": InvalidPayloadError,
        "i" * 513: InvalidPayloadError,
    }
    for failure, result in zip(failures, results, strict=True):
        if failure.task_id.startswith("ok-"):
            assert record(result) == await fetch(dlq, failure.task_id)
        else:
            wanted = expected[failure.task_id]
            assert type(result) is wanted, (failure.task_id, result)
            assert isinstance(result, (InvalidPayloadError, PayloadTooLargeError))
            assert result.task_id == failure.task_id
    too_large = results[2]
    assert isinstance(too_large, PayloadTooLargeError)
    assert too_large.limit == 200
    assert too_large.size == len(encode_json({"blob": "x" * 500}))
    assert "bogus" in str(results[8])
    assert "5000" in str(results[10])
    assert await stored_ids(dlq) == {"ok-1", "ok-2", "ok-3"}
    stats = await dlq.get_statistics()
    assert stats["total_stored"] == 3
    assert stats["lifetime_stats"]["enqueued_total"] == 3


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"metadata": [1, 2]}, "'metadata' must be a JSON object (a mapping), got list"),
        ({"metadata": "note"}, "'metadata' must be a JSON object (a mapping), got str"),
        ({"repos": "my-repo"}, "'repos' must be a list of names, got str"),
        ({"repos": b"my-repo"}, "'repos' must be a list of names, got bytes"),
        ({"repos": 5}, "'repos' must be a list of names, got int"),
    ],
)
async def test_metadata_and_repos_of_the_wrong_shape_are_named(
    dlq: DeadLetterQueue, options: dict[str, Any], message: str
) -> None:
    # a lone string used to become one repository per letter
    with pytest.raises(InvalidPayloadError, match=re.escape(message)):
        await dlq.enqueue("t", {}, error="x", **options)
    [result] = await dlq.enqueue_many([Failure("t", {}, error="x", **options)])
    assert isinstance(result, InvalidPayloadError)
    assert message in str(result)
    assert await stored_ids(dlq) == set()


async def test_repos_may_be_any_iterable_of_names(dlq: DeadLetterQueue) -> None:
    stored = await dlq.enqueue("t", {}, (name for name in ("a", "b")), "x")
    assert stored.repos == ["a", "b"]
    assert (await fetch(dlq, "t")).repos == ["a", "b"]


async def test_a_non_failure_item_raises_type_error_naming_it_and_nothing_is_stored(
    dlq: DeadLetterQueue,
) -> None:
    items = cast(Any, [Failure("a", {}, error="x"), Failure("b", {}, error="y"), ("c", {})])
    with pytest.raises(TypeError, match=r"item 2 is tuple"):
        await dlq.enqueue_many(items)
    assert await dlq.get_task("a") is None
    assert await dlq.get_task("b") is None
    stats = await dlq.get_statistics()
    assert stats["total_stored"] == 0
    assert stats["lifetime_stats"]["enqueued_total"] == 0


async def test_an_error_whose_str_fails_does_not_break_the_batch(dlq: DeadLetterQueue) -> None:
    """Nothing is raised for one bad item (the documented contract): an exception that
    cannot even be turned into a message is still taken (or refused in its place), and
    the rest is stored."""
    failures = [
        Failure("ok", {"n": 1}, error="x"),
        Failure("broken", {"n": 2}, error=raised(BrokenStrError())),
    ]
    results = await dlq.enqueue_many(failures)
    assert record(results[0]) == await fetch(dlq, "ok")
    broken = results[1]
    if isinstance(broken, FailedTask):
        assert broken.traceback is not None
        assert "<exception str() failed>" in broken.traceback.splitlines()[-1]
        assert broken == await fetch(dlq, "broken")
    else:
        assert isinstance(broken, DLQError)
        assert await dlq.get_task("broken") is None


# -- max_size ------------------------------------------------------------------------------


async def test_a_batch_fills_the_queue_up_to_max_size_in_order(clock: FakeClock) -> None:
    dlq = make_dlq(clock, max_size=3)
    await dlq.enqueue("open", {}, error="x")
    failures = [Failure(f"new-{n}", {"n": n}, error="x") for n in range(4)]
    results = await dlq.enqueue_many(failures)
    assert [record(r).task_id for r in results[:2]] == ["new-0", "new-1"]
    for refused in results[2:]:
        assert isinstance(refused, QueueFullError)
        assert refused.limit == 3
    assert await stored_ids(dlq) == {"open", "new-0", "new-1"}
    stats = await dlq.get_statistics()
    assert stats["queue_size"] == 3
    assert stats["lifetime_stats"]["enqueued_total"] == 3


async def test_a_duplicate_of_an_open_id_is_accepted_when_the_queue_is_full(
    clock: FakeClock,
) -> None:
    dlq = make_dlq(clock, max_size=3)
    await dlq.enqueue("open", {"v": 1}, error="first failure")
    failures = [
        Failure("new-0", {}, error="x"),
        Failure("new-1", {}, error="x"),
        Failure("new-2", {}, error="x"),  # the queue is full from here on
        Failure("open", {"v": 2}, error="second failure"),
        Failure("new-3", {}, error="x"),
    ]
    results = await dlq.enqueue_many(failures)
    assert isinstance(results[2], QueueFullError)
    assert isinstance(results[4], QueueFullError)
    duplicate = record(results[3])
    assert duplicate.task == {"v": 2}
    assert duplicate.error == "first failure"
    assert duplicate.last_error == "second failure"
    assert duplicate == await fetch(dlq, "open")
    # and in a batch of its own, once the queue is full
    again = await dlq.enqueue_many([Failure("open", {"v": 3}, error="third failure")])
    assert record(again[0]).last_error == "third failure"
    refused = await dlq.enqueue_many([Failure("new-4", {}, error="x")])
    assert isinstance(refused[0], QueueFullError)
    lifetime = (await dlq.get_statistics())["lifetime_stats"]
    assert lifetime["enqueued_total"] == 3
    assert lifetime["deduplicated"] == 2


async def test_a_closed_id_counts_as_new_against_max_size(clock: FakeClock) -> None:
    dlq = make_dlq(clock, max_size=1)
    dlq.register_handler("wf", FlakyHandler())
    await dlq.enqueue("done", {}, error="x", workflow="wf", retry_policy="immediate")
    assert await RetryProcessor(dlq).drain() == 1
    assert (await fetch(dlq, "done")).status is COMPLETED
    await dlq.enqueue("open", {}, error="x")  # a completed task leaves room for it
    results = await dlq.enqueue_many([Failure("done", {}, error="again")])
    assert isinstance(results[0], QueueFullError)
    assert (await fetch(dlq, "done")).status is COMPLETED
    await dlq.archive_task("open")
    reopened = await dlq.enqueue_many([Failure("done", {}, error="again")])
    assert record(reopened[0]).status is PENDING
    assert record(reopened[0]).total_attempts == 3  # the first run, its retry, this one


# -- the same id twice ---------------------------------------------------------------------


async def test_the_same_id_twice_in_a_batch_makes_one_record(dlq: DeadLetterQueue) -> None:
    failures = [
        Failure("dup", {"v": 1}, ["r1"], "first failure", metadata={"a": 1, "b": 1}),
        Failure("other", {}, error="x"),
        Failure("dup", {"v": 2}, ["r2"], "second failure", metadata={"b": 2}),
    ]
    results = await dlq.enqueue_many(failures)
    first, second = record(results[0]), record(results[2])
    assert first.last_error == "first failure"
    stored = await fetch(dlq, "dup")
    assert second == stored
    assert stored.error == "first failure"
    assert stored.last_error == "second failure"
    assert stored.task == {"v": 2}
    assert stored.repos == ["r2"]
    assert stored.metadata["a"] == 1
    assert stored.metadata["b"] == 2
    assert stored.retry_count == 0
    assert stored.created_at == first.created_at
    assert len(await dlq.list_tasks(limit=100)) == 2
    lifetime = (await dlq.get_statistics())["lifetime_stats"]
    assert lifetime["deduplicated"] == 1
    assert lifetime["enqueued_total"] == 2
    assert dlq.lifetime["deduplicated"] == 1


async def test_an_id_only_duplicated_within_the_batch_counts_once(dlq: DeadLetterQueue) -> None:
    results = await dlq.enqueue_many(
        [Failure("same", {}, error="one"), Failure("same", {}, error="two")]
    )
    assert record(results[1]).last_error == "two"
    assert dlq.lifetime["enqueued_total"] == 1
    assert dlq.lifetime["deduplicated"] == 1
    assert (await dlq.get_statistics())["queue_size"] == 1


# -- exhausted at once, hooks --------------------------------------------------------------


async def test_max_retries_zero_in_a_batch_exhausts_and_calls_the_hook_once(
    dlq: DeadLetterQueue,
) -> None:
    seen: list[FailedTask] = []

    @dlq.on_exhausted
    async def remember(task: FailedTask) -> None:
        seen.append(task)

    results = await dlq.enqueue_many(
        [
            Failure("keeps-trying", {}, error=connection_error()),
            Failure("gives-up", {"n": 1}, error=connection_error(), max_retries=0),
        ]
    )
    gave_up = record(results[1])
    assert gave_up.status is EXHAUSTED
    assert gave_up.next_retry_at is None
    assert record(results[0]).status is PENDING
    assert seen == [gave_up]
    assert seen[0] == await fetch(dlq, "gives-up")
    assert dlq.lifetime["exhausted"] == 1
    # a duplicate of the exhausted task is not a second exhaustion
    await dlq.enqueue_many([Failure("gives-up", {"n": 2}, error="again", max_retries=0)])
    assert len(seen) == 1
    assert dlq.lifetime["exhausted"] == 1


# -- the processor retries what a batch stored ---------------------------------------------


async def test_tasks_of_a_batch_are_retried_by_the_processor(
    dlq: DeadLetterQueue, clock: FakeClock
) -> None:
    handler = FlakyHandler(result={"ok": True})
    dlq.register_handler("wf", handler)
    failures = [
        Failure(
            f"i-{n}", {"n": n}, [f"repo-{n}"], "timeout", workflow="wf", retry_policy="immediate"
        )
        for n in range(3)
    ]
    failures.append(Failure("later", {"n": 9}, None, "timeout", workflow="wf"))  # 60 s away
    assert all(isinstance(r, FailedTask) for r in await dlq.enqueue_many(failures))
    processor = RetryProcessor(dlq)
    assert await processor.drain() == 3
    assert sorted(call[0]["n"] for call in handler.calls) == [0, 1, 2]
    assert sorted(call[1][0] for call in handler.calls) == ["repo-0", "repo-1", "repo-2"]
    for n in range(3):
        assert (await fetch(dlq, f"i-{n}")).status is COMPLETED
    assert (await fetch(dlq, "later")).status is PENDING
    clock.advance(59)
    assert await processor.run_once() == 0
    clock.advance(1)
    assert await processor.run_once() == 1
    assert (await fetch(dlq, "later")).status is COMPLETED
    assert len(handler.calls) == 4


# -- the stored JSON is the record's -------------------------------------------------------

PAYLOADS: list[tuple[str, dict[str, Any], dict[str, Any] | None]] = [
    ("plain", {"order": 42}, None),
    ("unicode", {"name": "Zoë 🚀", "city": "Zürich", "ключ": "значение"}, {"note": "naïve ☃"}),
    (
        "nested",
        {"items": [{"sku": "a", "qty": [1, 2, {"deep": None}]}], "flags": {"x": True, "y": 1.5}},
        {"trail": [{"step": 1}, {"step": [2, 3]}], "empty": {}},
    ),
    (
        "caller-context",
        {"n": 1},
        {"before": 1, "failure_context": {"host": "spoofed", "extra": [1]}, "after": "é"},
    ),
    ("only-caller-context", {"n": 2}, {"failure_context": "mine"}),
    ("empty", {}, {}),
]


def check_payload(
    returned: FailedTask, stored: FailedTask, task: dict[str, Any], meta: dict[str, Any] | None
) -> None:
    assert stored.task == returned.task == task
    assert stored.metadata == returned.metadata
    context = returned.metadata["failure_context"]
    assert set(context) >= {"host", "pid", "python", "mahavishnu_dlq", "uptime_seconds"}
    assert "extra" not in context  # ours replaces the caller's, it is not merged
    expected_keys = [key for key in (meta or {}) if key != "failure_context"]
    assert list(returned.metadata) == [*expected_keys, "failure_context"]
    for key in expected_keys:
        assert returned.metadata[key] == (meta or {})[key]
    # the encoding kept with the record (what stores write) decodes to the record
    known = returned.payload_json()
    if known is not None:
        assert json.loads(known[0]) == returned.task
        assert json.loads(known[1]) == returned.metadata


@pytest.mark.parametrize(("name", "task", "meta"), PAYLOADS, ids=[p[0] for p in PAYLOADS])
async def test_enqueue_stores_the_json_of_the_record(
    dlq: DeadLetterQueue, name: str, task: dict[str, Any], meta: dict[str, Any] | None
) -> None:
    returned = await dlq.enqueue(name, task, error="x", metadata=meta)
    check_payload(returned, await fetch(dlq, name), task, meta)


@pytest.mark.parametrize(("name", "task", "meta"), PAYLOADS, ids=[p[0] for p in PAYLOADS])
async def test_enqueue_many_stores_the_json_of_the_record(
    dlq: DeadLetterQueue, name: str, task: dict[str, Any], meta: dict[str, Any] | None
) -> None:
    results = await dlq.enqueue_many(
        [Failure("first", {"k": 0}, error="x"), Failure(name, task, error="x", metadata=meta)]
    )
    check_payload(record(results[1]), await fetch(dlq, name), task, meta)


async def test_a_duplicate_stores_the_json_of_the_merged_record(dlq: DeadLetterQueue) -> None:
    await dlq.enqueue("d", {"v": 1}, error="x", metadata={"a": "ä"})
    returned = await dlq.enqueue(
        "d", {"v": ["ü", {"w": 2}]}, error="y", metadata={"b": "ß", "failure_context": 1}
    )
    stored = await fetch(dlq, "d")
    assert stored.task == returned.task == {"v": ["ü", {"w": 2}]}
    assert stored.metadata == returned.metadata
    assert returned.metadata["a"] == "ä"
    assert returned.metadata["b"] == "ß"
    assert isinstance(returned.metadata["failure_context"], dict)


async def test_the_size_check_counts_utf8_bytes(clock: FakeClock) -> None:
    limit = 40
    dlq = make_dlq(clock, max_payload_bytes=limit)
    wide = {"t": "é" * 20}  # 28 characters of JSON, 48 bytes
    assert len(encode_json(wide)) <= limit < len(encode_json(wide).encode())
    with pytest.raises(PayloadTooLargeError) as caught:
        await dlq.enqueue("wide", wide, error="x")
    assert caught.value.size == len(encode_json(wide).encode())
    batch = await dlq.enqueue_many([Failure("wide", wide, error="x")])
    assert isinstance(batch[0], PayloadTooLargeError)
    assert batch[0].size == 48
    assert await dlq.get_task("wide") is None
    # exactly at the limit in bytes is taken, one byte more is not
    fits = {"t": "é" * 16}  # 8 + 32 = 40 bytes
    assert len(encode_json(fits).encode()) == limit
    assert (await dlq.enqueue("fits", fits, error="x")).task == fits
    over = {"t": "é" * 16 + "a"}
    refused = await dlq.enqueue_many([Failure("over", over, error="x")])
    assert isinstance(refused[0], PayloadTooLargeError)
    # metadata counts too
    small = {"t": "a"}
    with pytest.raises(PayloadTooLargeError):
        await dlq.enqueue("meta", small, error="x", metadata={"m": "ö" * 20})
    assert await stored_ids(dlq) == {"fits"}


# -- a returned record cannot change the store ---------------------------------------------


async def test_changing_a_returned_record_does_not_change_the_store(dlq: DeadLetterQueue) -> None:
    task = {"order": 1, "lines": [{"sku": "a"}], "customer": {"name": "Zoë"}}
    returned = await dlq.enqueue("r", task, error="x", metadata={"tenant": {"id": 7}})
    original = (await fetch(dlq, "r")).model_dump()

    returned.task["order"] = 999
    returned.task["lines"].append({"sku": "b"})
    returned.task["customer"]["name"] = "Mallory"
    returned.metadata["tenant"]["id"] = 8
    returned.metadata["failure_context"]["host"] = "elsewhere"
    returned.metadata["added"] = True
    returned.repos.append("sneaky")

    again = await fetch(dlq, "r")
    assert again.model_dump() == original
    assert again.task["order"] == 1
    assert again.metadata["tenant"] == {"id": 7}
    assert "added" not in again.metadata
    # a record read from the store is no handle on it either
    again.task["order"] = 1000
    assert (await fetch(dlq, "r")).model_dump() == original


async def test_changing_records_returned_by_a_batch_does_not_change_the_store(
    dlq: DeadLetterQueue,
) -> None:
    results = await dlq.enqueue_many(
        [
            Failure("a", {"lines": [1, 2]}, error="x", metadata={"m": [1]}),
            Failure("a", {"lines": [3]}, error="y", metadata={"n": {"k": 1}}),
        ]
    )
    originals = (await fetch(dlq, "a")).model_dump()
    for result in results:
        mutable = record(result)
        mutable.task["lines"].append(99)
        mutable.metadata.clear()
    assert (await fetch(dlq, "a")).model_dump() == originals


async def test_the_processor_retries_the_stored_task_not_a_changed_returned_one(
    dlq: DeadLetterQueue,
) -> None:
    handler = FlakyHandler()
    dlq.register_handler("wf", handler)
    returned = await dlq.enqueue("p", {"n": 1}, error="x", workflow="wf", retry_policy="immediate")
    returned.task["n"] = 2
    assert await RetryProcessor(dlq).drain() == 1
    assert handler.calls == [({"n": 1}, [])]


# -- from sync code ------------------------------------------------------------------------

Backend = Literal["asyncio", "trio"]


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_blocking_enqueue_many_from_sync_code(backend: Backend) -> None:
    with BlockingDLQ(DeadLetterQueue(worker_id="sync-host", max_size=2), backend=backend) as dlq:
        failures = (
            Failure(f"s-{n}", {"n": n}, ["r"], "connection refused", workflow="sync")
            for n in range(3)
        )
        results = dlq.enqueue_many(failures)
        assert [type(r) for r in results] == [FailedTask, FailedTask, QueueFullError]
        first = record(results[0])
        assert first.task == {"n": 0}
        assert first.workflow == "sync"
        assert dlq.get_task("s-0") == first
        assert dlq.get_task("s-2") is None
        bad = dlq.enqueue_many([Failure("s-0", {"n": 5}, error="again"), Failure("", {})])
        assert record(bad[0]).last_error == "again"
        assert isinstance(bad[1], InvalidPayloadError)
        assert dlq.enqueue_many([]) == []
        stats = dlq.get_statistics()
        assert stats["queue_size"] == 2
        assert stats["lifetime_stats"]["deduplicated"] == 1
