"""The ControlStore contract (``store.controls``): every backend must pass every test here,
unchanged. The memory store is the reference: a record is a JSON object under a key (any
string: slashes, spaces, Unicode, 512 characters), changed by compare-and-set; what a
store hands out is never what it keeps; a refused change writes nothing; a listing goes
by prefix, in key order (Python's order of strings)."""

from __future__ import annotations

import math
import re
from typing import Any

import anyio
import pytest

from mahavishnu_dlq.errors import DLQError
from mahavishnu_dlq.storage import Store
from mahavishnu_dlq.testing import make_task
from tests.contract._records import T0, seed

pytestmark = pytest.mark.anyio

Record = dict[str, Any]


def put(record: Any) -> Any:
    """A mutation that stores ``record`` whatever is there."""
    return lambda _current: record


def increment(current: Record | None) -> Record:
    return {"n": (current or {}).get("n", 0) + 1}


RICH: Record = {
    "state": "open",
    "failures": 3,
    "opened_at": 1767225600.123456,
    "ratio": 0.1,
    "tokens": -2.5e-7,
    "big": 2**53 + 1,
    "flags": [True, False, None],
    "nested": {"deeper": {"list": [1, "two", {"3": [4.5]}]}, "empty": {}},
    "text": "zażółć gęślą jaźń ✓ 😀",
    "key with spaces/and.dots": "",
}

KEYS = [
    "breaker/ingest",
    "breaker/billing ✓",
    "breaker/reports/daily",
    "breaker/z z",
    "breaker/Ünïcode",
    "breaker/\ue000",
    "breaker/😀",
    "breaker",
    "breakers/x",
    "rate/ingest",
    "rate/",
    "b",
    "é",
    " leading space",
]


# -- single records -----------------------------------------------------------------


async def test_get_of_an_unknown_key_is_none(store: Store) -> None:
    assert await store.controls.get("breaker/nope") is None


async def test_mutate_creates_from_none_and_returns_the_stored_record(store: Store) -> None:
    seen: list[Record | None] = []

    def create(current: Record | None) -> Record:
        seen.append(current)
        return dict(RICH)

    stored = await store.controls.mutate("breaker/ingest", create)
    assert seen == [None]
    assert stored == RICH
    assert await store.controls.get("breaker/ingest") == RICH

    def reopen(current: Record | None) -> Record:
        seen.append(current)
        assert current is not None
        return {**current, "failures": current["failures"] + 1}

    again = await store.controls.mutate("breaker/ingest", reopen)
    assert seen[-1] == RICH  # each mutation starts from the stored record
    assert again == {**RICH, "failures": 4}
    assert await store.controls.get("breaker/ingest") == again


async def test_records_handed_out_are_copies(store: Store) -> None:
    mine: Record = {"state": "closed", "list": [1], "nested": {"n": 1}}
    returned = await store.controls.mutate("k", put(mine))
    mine["state"] = "changed by the caller"
    mine["list"].append(2)
    returned["nested"]["n"] = 99
    returned["extra"] = True
    read = await store.controls.get("k")
    assert read == {"state": "closed", "list": [1], "nested": {"n": 1}}
    assert read is not None
    read["list"].clear()
    [(_, listed)] = await store.controls.list("k")
    listed["state"] = "changed"
    assert await store.controls.get("k") == {"state": "closed", "list": [1], "nested": {"n": 1}}


async def test_a_mutation_may_change_its_argument_in_place(store: Store) -> None:
    def bump(current: Record | None) -> Record:
        record = current if current is not None else {"n": 0}
        record["n"] += 1
        return record

    first = await store.controls.mutate("rate/w", bump)
    second = await store.controls.mutate("rate/w", bump)
    assert first == {"n": 1}  # not changed by the second mutation's argument
    assert second == {"n": 2}
    assert await store.controls.get("rate/w") == {"n": 2}


async def test_a_mutation_that_raises_writes_nothing(store: Store) -> None:
    await store.controls.mutate("breaker/w", put({"state": "closed"}))

    def refuse(current: Record | None) -> Record:
        raise DLQError(f"refused {current}")

    with pytest.raises(DLQError, match=re.escape("refused {'state': 'closed'}")):
        await store.controls.mutate("breaker/w", refuse)
    assert await store.controls.get("breaker/w") == {"state": "closed"}
    with pytest.raises(DLQError, match="refused None"):
        await store.controls.mutate("breaker/absent", refuse)
    assert await store.controls.get("breaker/absent") is None
    assert [key for key, _ in await store.controls.list("")] == ["breaker/w"]
    # the store goes on: the next change of that key lands
    assert await store.controls.mutate("breaker/w", increment) == {"n": 1}


NOT_JSON_OBJECTS = {
    "a list": [1, 2],
    "None": None,
    "a string": "open",
    "a number": 3,
    "NaN": {"tokens": math.nan},
    "infinity": {"nested": {"rate": math.inf}},
    "a set": {"members": {1, 2}},
    "an object": {"when": object()},
}


@pytest.mark.parametrize("name", list(NOT_JSON_OBJECTS))
async def test_a_record_that_is_not_a_json_object_is_refused_and_nothing_written(
    store: Store, name: str
) -> None:
    bad = NOT_JSON_OBJECTS[name]
    await store.controls.mutate("kept", put({"n": 1}))
    with pytest.raises((TypeError, ValueError)):
        await store.controls.mutate("kept", put(bad))
    with pytest.raises((TypeError, ValueError)):
        await store.controls.mutate("new", put(bad))
    assert await store.controls.get("kept") == {"n": 1}
    assert await store.controls.get("new") is None
    assert await store.controls.list("") == [("kept", {"n": 1})]


async def test_a_key_that_is_not_a_string_is_refused(store: Store) -> None:
    with pytest.raises(TypeError, match="key"):
        await store.controls.get(b"breaker/w")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="key"):
        await store.controls.mutate(7, increment)  # type: ignore[arg-type]
    assert await store.controls.list("") == []


async def test_delete_removes_one_record(store: Store) -> None:
    await store.controls.mutate("breaker/a", increment)
    await store.controls.mutate("breaker/b", increment)
    assert await store.controls.delete("breaker/a") is True
    assert await store.controls.delete("breaker/a") is False
    assert await store.controls.delete("never") is False
    assert await store.controls.get("breaker/a") is None
    assert [key for key, _ in await store.controls.list("breaker/")] == ["breaker/b"]
    seen: list[Record | None] = []

    def fresh(current: Record | None) -> Record:
        seen.append(current)
        return {"n": 10}

    assert await store.controls.mutate("breaker/a", fresh) == {"n": 10}
    assert seen == [None]  # deleted: the next change starts from nothing


# -- listings -----------------------------------------------------------------------


async def test_list_goes_by_prefix_in_key_order(store: Store) -> None:
    for number, key in enumerate(KEYS):
        await store.controls.mutate(key, put({"i": number}))
    expected = sorted((key, {"i": number}) for number, key in enumerate(KEYS))
    assert await store.controls.list("") == expected
    breakers = await store.controls.list("breaker/")
    assert breakers == [entry for entry in expected if entry[0].startswith("breaker/")]
    assert [key for key, _ in breakers] == [
        "breaker/billing ✓",
        "breaker/ingest",
        "breaker/reports/daily",
        "breaker/z z",
        "breaker/Ünïcode",
        "breaker/\ue000",
        "breaker/😀",
    ]
    assert [key for key, _ in await store.controls.list("breaker")] == [
        key for key, _ in expected if key.startswith("breaker")
    ]
    assert await store.controls.list("rate/ingest") == [
        ("rate/ingest", {"i": KEYS.index("rate/ingest")})
    ]
    assert [key for key, _ in await store.controls.list("rate/")] == ["rate/", "rate/ingest"]
    assert [key for key, _ in await store.controls.list("é")] == ["é"]
    assert await store.controls.list("nope/") == []
    assert await store.controls.list("breaker/ingest/") == []


async def test_list_sees_every_change_at_once(store: Store) -> None:
    await store.controls.mutate("rate/a", increment)
    assert await store.controls.list("rate/") == [("rate/a", {"n": 1})]
    await store.controls.mutate("rate/a", increment)
    await store.controls.mutate("rate/b", increment)
    assert await store.controls.list("rate/") == [("rate/a", {"n": 2}), ("rate/b", {"n": 1})]
    await store.controls.delete("rate/a")
    assert await store.controls.list("rate/") == [("rate/b", {"n": 1})]


async def test_list_by_a_long_prefix(store: Store) -> None:
    stem = "breaker/" + "ü" * 300  # 608 bytes of UTF-8
    before = [stem[:-1], stem[:-1] + "a", stem[:-1] + "ta/x", stem[:-1] + "t" + "ü" * 100]
    within = [stem, stem + "/", stem + "/a", stem + "a", stem + "ü😀"]
    after = [stem[:-1] + "ý", stem[:-1] + "😀", stem[:-1] + "ýa"]
    for key in before + within + after:
        await store.controls.mutate(key, put({"k": key[-3:]}))
    assert await store.controls.list(stem) == [(key, {"k": key[-3:]}) for key in sorted(within)]
    assert [key for key, _ in await store.controls.list(stem + "/")] == [stem + "/", stem + "/a"]
    assert await store.controls.list(stem + "/b") == []
    assert await store.controls.list(stem + "üü") == []
    assert len(await store.controls.list(stem[:-1])) == 12


async def test_keys_of_512_characters(store: Store) -> None:
    keys = ["breaker/" + "w" * 504, "ü" * 512, "breaker/" + "😀" * 504]
    for key in keys:
        assert len(key) == 512
        assert await store.controls.mutate(key, increment) == {"n": 1}
        assert await store.controls.mutate(key, increment) == {"n": 2}
        assert await store.controls.get(key) == {"n": 2}
    assert await store.controls.list("breaker/") == [(keys[0], {"n": 2}), (keys[2], {"n": 2})]
    assert await store.controls.list(keys[1]) == [(keys[1], {"n": 2})]
    assert await store.controls.get(keys[0][:-1]) is None
    for key in keys:
        assert await store.controls.delete(key) is True
    assert await store.controls.list("") == []


# -- concurrency and neighbours ----------------------------------------------------------


async def test_concurrent_increments_of_one_record_all_land(store: Store) -> None:
    async def bump() -> None:
        await store.controls.mutate("rate/hot", increment)

    async with anyio.create_task_group() as group:
        for _ in range(50):
            group.start_soon(bump)
    assert await store.controls.get("rate/hot") == {"n": 50}


async def test_concurrent_increments_of_many_records_all_land(store: Store) -> None:
    async def bump(key: str) -> None:
        await store.controls.mutate(key, increment)

    async with anyio.create_task_group() as group:
        for round_ in range(10):
            for key in ("breaker/a", "breaker/b", "rate/a"):
                group.start_soon(bump, key)
            group.start_soon(bump, f"one/{round_}")
    listed = dict(await store.controls.list(""))
    assert listed == {
        "breaker/a": {"n": 10},
        "breaker/b": {"n": 10},
        "rate/a": {"n": 10},
        **{f"one/{round_}": {"n": 1} for round_ in range(10)},
    }


async def test_controls_tasks_and_jobs_do_not_see_each_other(store: Store) -> None:
    await store.controls.mutate("same-id", increment)
    assert await store.get("same-id") is None
    assert await store.jobs.get("same-id") is None
    assert await store.count() == 0
    await seed(store, make_task(task_id="same-id", now=T0))
    assert await store.controls.get("same-id") == {"n": 1}
    assert await store.controls.list("") == [("same-id", {"n": 1})]
