"""Hostile input, generated, against a real OpenSearch node: the properties of
tests/unit/test_hostile_properties.py hold on the real store too (tests/hostile/ holds
their strategies, oracles and checks), and its listings select what the memory store
selects.

- only documented exceptions; accepted records read back exactly through the node
  (``get_task``, listings), refused calls leave no document behind (an integer the
  node's parser refuses is refused before it is sent, as on memory); a payload no bulk
  request can carry is a :class:`PayloadTooLargeError`;
- ``execute_with_dlq`` re-raises the very exception and the node keeps it;
- no handler leaves a task running on the node, and delays and deadlines up to the end
  of the calendar (the year 9999) are stored and claimed as on memory;
- ``list_tasks`` with hostile filters (regular-expression and Lucene metacharacters,
  repetitive needles and needles of hundreds of characters, Unicode case folding, bad
  arguments) returns the same pages from the node as from memory. Needles and stored
  texts avoid characters whose case mapping is several characters (``ß`` → ``ss``):
  the node's regular expression does not fold those (documented in ``text_pattern``).

One fresh index per test (each example starts from an emptied one), dropped afterwards;
asyncio only (``AsyncOpenSearch``). The store keeps its default ``refresh="false"``: it
refreshes before its own searches, so every read sees this process's writes without
``wait_for`` making each write wait for the index's next refresh (up to 1 s). Examples
are few (the node is real) and derandomized.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any, Final

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mahavishnu_dlq import DeadLetterQueue, FailedTask, Limits, PayloadTooLargeError
from mahavishnu_dlq.storage.opensearch import OpenSearchStore
from mahavishnu_dlq.storage.opensearch_query import MAX_NEEDLE_CHARS
from tests.hostile.calls import Call, apply_call, enqueue_calls, id_pools, regression_calls
from tests.hostile.checks import (
    PROPERTY,
    assert_exact,
    assert_healthy,
    assert_store_holds,
    new_dlq,
    one_line,
    outcome,
)
from tests.hostile.exceptions import ExcSpec, exc_specs
from tests.hostile.handlers import (
    Behaviour,
    Timeline,
    check_handler_plan,
    check_timeline,
    plans,
    timeline_examples,
    timelines,
)
from tests.hostile.listings import Listing, Seed, check_listing, listings, seeds, store_seeds
from tests.hostile.payloads import HUGE, payload_size, payloads
from tests.hostile.text import SPECIALS, good_ids, long_text, texts_of, valid_chars, valid_text
from tests.hostile.workflows import check_wrapped_failure, how_called, workflow_tasks

pytestmark = [pytest.mark.anyio, pytest.mark.opensearch]

#: The node is real: fewer examples than the memory suite.
ON_NODE: Final = settings(PROPERTY, max_examples=30)


@pytest.fixture
def anyio_backend() -> str:
    """AsyncOpenSearch runs on asyncio only."""
    return "asyncio"


async def _opened(url: str, **options: Any) -> OpenSearchStore:
    store = OpenSearchStore(hosts=[url], index=f"dlq-hostile-{uuid.uuid4().hex[:12]}", **options)
    await store.open()
    return store


@pytest.fixture
async def node(opensearch_url: str) -> AsyncIterator[OpenSearchStore]:
    """An opened store on a fresh index; the index and its template are dropped after."""
    store = await _opened(opensearch_url)
    try:
        yield store
    finally:
        await store.drop()
        await store.close()


async def fresh(store: OpenSearchStore, **options: Any) -> DeadLetterQueue:
    """A queue over ``store`` emptied for the next example: tasks, and the breakers
    and rate limits an earlier example's handlers left (an open breaker would keep
    this example's tasks from being claimed)."""
    await store.clear()
    for key, _record in await store.controls.list(""):
        await store.controls.delete(key)
    return new_dlq(store, **options)


# -- enqueue ------------------------------------------------------------------------------


@ON_NODE
@given(calls=st.lists(enqueue_calls(), min_size=1, max_size=3))
@regression_calls
@example(calls=[Call("long-number", {"n": HUGE}), Call("number", {"n": HUGE - 1})]).via(
    "1001 digits, which the node's parser refuses, are refused before they are sent"
)
async def test_enqueue_on_the_node_refuses_only_as_documented_and_keeps_exactly(
    anyio_backend: str, node: OpenSearchStore, calls: list[Call]
) -> None:
    dlq = await fresh(node)
    accepted: dict[str, FailedTask] = {}
    for call in calls:
        await apply_call(dlq, call, accepted)
    await assert_store_holds(dlq, accepted)
    await assert_healthy(dlq)


@settings(ON_NODE, max_examples=15)
@given(calls=id_pools())
@regression_calls
async def test_a_refused_call_leaves_the_document_as_it_was(
    anyio_backend: str, node: OpenSearchStore, calls: list[Call]
) -> None:
    dlq = await fresh(node)
    accepted: dict[str, FailedTask] = {}
    for call in calls:
        await apply_call(dlq, call, accepted)
    await assert_store_holds(dlq, accepted)
    await assert_healthy(dlq)


@pytest.fixture
async def small_bulk(opensearch_url: str) -> AsyncIterator[OpenSearchStore]:
    """A store whose bulk requests carry at most 16 KiB."""
    store = await _opened(opensearch_url, bulk_max_bytes=16_384)
    try:
        yield store
    finally:
        await store.drop()
        await store.close()


@settings(ON_NODE, max_examples=15)
@given(pieces=st.lists(long_text(valid_chars, 6000), min_size=1, max_size=4))
async def test_a_record_no_bulk_request_can_carry_is_refused_and_not_stored(
    anyio_backend: str, small_bulk: OpenSearchStore, pieces: list[str]
) -> None:
    dlq = await fresh(small_bulk, limits=Limits(max_payload_bytes=1 << 20))
    task = {f"piece-{number}": piece for number, piece in enumerate(pieces)}
    record = await outcome(dlq.enqueue("big", task, error="boom"))
    if isinstance(record, Exception):
        assert isinstance(record, PayloadTooLargeError), f"{type(record).__name__}: {record!s:.300}"
        assert record.setting == "opensearch.bulk_max_bytes"
        one_line(record)
        assert await dlq.get_task("big") is None
        assert await dlq.count_tasks() == 0
    else:
        assert payload_size(task, None, []) < 16_384
        assert_exact(record, await dlq.get_task("big"))
    await assert_healthy(dlq)


# -- wrapped workflows ----------------------------------------------------------------------


@ON_NODE
@given(spec=exc_specs, task=workflow_tasks, task_id=st.none() | good_ids, how=how_called)
@example(spec=ExcSpec("surrogate_name", "boom"), task={}, task_id="surrogate", how="async").via(
    "an exception class name holding a lone surrogate is stored written out (\\udcff)"
)
@example(spec=ExcSpec("any_attribute", "boom"), task={}, task_id=None, how="nested").via(
    "a failure is stored once through nested wrappers, whatever __getattr__ answers"
)
async def test_execute_with_dlq_on_the_node_reraises_the_very_exception_and_keeps_it(
    anyio_backend: str,
    node: OpenSearchStore,
    spec: ExcSpec,
    task: object,
    task_id: str | None,
    how: str,
) -> None:
    dlq = await fresh(node)
    await check_wrapped_failure(dlq, spec, task, task_id, how)
    await assert_healthy(dlq)


# -- retry handlers -------------------------------------------------------------------------


@ON_NODE
@given(plan=plans, task=payloads, repos=st.lists(valid_text, max_size=3))
@example(plan=[(Behaviour("retry_after", float("inf")), False)], task={}, repos=[]).via(
    "RetryAfter(inf) waits a century on the node too: the lease is given back"
)
async def test_no_handler_leaves_a_task_running_on_the_node(
    anyio_backend: str,
    node: OpenSearchStore,
    plan: list[tuple[Behaviour, bool]],
    task: dict[str, Any],
    repos: list[str],
) -> None:
    dlq = await fresh(node)
    await check_handler_plan(dlq, anyio_backend, plan, task, repos)
    await assert_healthy(dlq)


@settings(ON_NODE, max_examples=15)
@given(timeline=timelines)
@timeline_examples
async def test_a_delay_of_any_length_is_recorded_on_the_node(
    anyio_backend: str, node: OpenSearchStore, timeline: Timeline
) -> None:
    """Retries and deadlines up to the end of the calendar: the node stores, selects and
    claims them as memory does."""
    dlq = await fresh(node, policies=timeline.policies())
    await check_timeline(dlq, anyio_backend, timeline)
    await assert_healthy(dlq)


# -- listing filters --------------------------------------------------------------------------


def _simple_case(char: str) -> bool:
    """Whether every case mapping of ``char`` is one character (the node's regular
    expression folds those exactly as ``str.casefold`` does)."""
    return all(len(mapped) == 1 for mapped in (char.casefold(), char.upper(), char.lower()))


#: Valid text whose characters all have one-character case mappings.
fold_safe_chars = valid_chars.filter(_simple_case)
FOLD_SAFE: Final = tuple(piece for piece in SPECIALS if all(map(_simple_case, piece)))
fold_safe_text = texts_of(fold_safe_chars, FOLD_SAFE)
fold_safe_ids = st.builds(lambda first, rest: first + rest, fold_safe_chars, fold_safe_text)


@ON_NODE
@given(
    planted=seeds(fold_safe_text, fold_safe_ids, long_text(fold_safe_chars, 1200, FOLD_SAFE)),
    listing=listings(fold_safe_text, long_text(fold_safe_chars, 900, FOLD_SAFE)),
)
@example(
    planted=[Seed("a", "wf", "=" * 400, None, 0, 0), Seed("b", "wf", "=" * 314, None, 0, 0)],
    listing=Listing({"text": "=" * 315}),
).via("a repetitive needle is searched by its first 32 characters, each hit checked")
@example(
    planted=[
        Seed("hit", "wf", "p" * MAX_NEEDLE_CHARS + "-hit", None, 0, 0),
        Seed("miss", "wf", "p" * MAX_NEEDLE_CHARS + "-miss", None, 0, 0),
    ],
    listing=Listing({"text": "P" * MAX_NEEDLE_CHARS + "-HIT"}),
).via("a needle past 32 characters: the hits of its prefix are checked whole")
@example(
    planted=[Seed("a", "wf", "ab" * 64, None, 0, 0), Seed("b", "wf", "ab" * 63 + "a", None, 0, 0)],
    listing=Listing({"text": "ab" * 64}),
).via("a needle whose automaton is costly gives memory's results")
@example(
    planted=[Seed("a", "wf", "boom", None, 0, 0)],
    listing=Listing({"status": 5}, frozenset({"status"})),
).via("status=5 is a TypeError naming status, on the node as on memory")
async def test_the_node_lists_what_memory_lists(
    anyio_backend: str, node: OpenSearchStore, planted: list[Seed], listing: Listing
) -> None:
    memory = new_dlq()
    on_node = await fresh(node)
    in_memory = await check_listing(memory, await store_seeds(memory, planted), listing)
    from_node = await check_listing(on_node, await store_seeds(on_node, planted), listing)
    assert from_node == in_memory
    await assert_healthy(on_node)
