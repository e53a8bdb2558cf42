"""Hostile input, generated: nothing a caller, a handler or an exception does stops the
queue, loses a record or lets one out that cannot be encoded again.

Point 11 of the hostile-input issue, on the memory store. Hypothesis generates task
ids, payloads, repository names, error texts, exceptions, retry handlers, delays and
listing filters (tests/hostile/ holds the strategies, the hostile objects, the oracles
and the checks; tests/integration/test_hostile_properties_opensearch.py runs the same
properties against a real node), and the properties assert:

- only the documented exceptions come out: ``TypeError`` / ``ValueError`` for bad
  arguments, :class:`InvalidPayloadError` / :class:`PayloadTooLargeError` /
  :class:`QueueFullError` for what cannot be stored, each in one line of valid Unicode;
- what was accepted reads back exactly (``get_task`` equals the returned record with
  every JSON type kept, ``to_dict()`` encodes as UTF-8 JSON and validates again), and
  the record holds its own copy of the input (no container shared with the caller);
- each part of a hostile exception that can be read is kept: its text, its type's
  name (valid Unicode), its traceback;
- what was refused leaves nothing behind (the store holds the accepted ids, no more);
- an attempt is always recorded as the state machine and the retry policy say, delays
  of any length and deadlines up to the end of the calendar (the year 9999) included:
  a task is never left retrying with its lease held;
- every log line of the library is one line with no raw control, bidi or surrogate;
- a healthy task enqueued afterwards is claimed and completed by ``run_once()``.

The properties that run user code (workflows, handlers, their log lines) run on
asyncio and on trio; those about data alone (calls, bounds, listings) on asyncio, since
the backend only schedules them. The bugs these properties found are pinned as
explicit examples, each saying what it guards. Examples are derandomized: CI runs the
same ones every time.
"""

from __future__ import annotations

import asyncio
import logging
import math
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mahavishnu_dlq import (
    FailedTask,
    InvalidPayloadError,
    Limits,
    PayloadTooLargeError,
    QueueFullError,
    RetryProcessor,
)
from mahavishnu_dlq.printable import escape_line
from tests.hostile.calls import Call, apply_call, enqueue_calls, id_pools, regression_calls
from tests.hostile.checks import (
    EXHAUSTED,
    PENDING,
    PROPERTY,
    T0,
    assert_exact,
    assert_healthy,
    assert_printable_line,
    assert_store_holds,
    canonical,
    new_dlq,
    one_line,
    outcome,
)
from tests.hostile.exceptions import ExcSpec, exc_specs, exc_specs_of
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
from tests.hostile.payloads import json_leaves, nested, payload_size, payloads
from tests.hostile.schedule import later
from tests.hostile.text import (
    BREAKERS,
    SURROGATES,
    good_ids,
    holding,
    hostile_text,
    id_refusal,
    long_text,
    valid_chars,
    valid_text,
)
from tests.hostile.workflows import (
    check_wrapped_failure,
    how_called,
    raising,
    run_wrapped,
    workflow_tasks,
    wrapped_workflow,
)

pytestmark = pytest.mark.anyio

#: For the properties about data alone: the backend only schedules them.
asyncio_only = pytest.mark.parametrize("anyio_backend", ["asyncio"])

# -- enqueue ------------------------------------------------------------------------------


@asyncio_only
@PROPERTY
@given(calls=st.lists(enqueue_calls(), min_size=1, max_size=4))
@regression_calls
async def test_enqueue_raises_only_documented_errors_and_keeps_exactly_what_it_took(
    anyio_backend: str, calls: list[Call]
) -> None:
    dlq = new_dlq()
    accepted: dict[str, FailedTask] = {}
    for call in calls:
        await apply_call(dlq, call, accepted)
    await assert_store_holds(dlq, accepted)
    await assert_healthy(dlq)


@asyncio_only
@settings(PROPERTY, max_examples=80)
@given(calls=id_pools())
@regression_calls
async def test_a_refused_call_leaves_the_stored_record_as_it_was(
    anyio_backend: str, calls: list[Call]
) -> None:
    """Repeated ids: a refused call changes nothing, an accepted one merges (idempotent),
    and the store counts the distinct accepted ids."""
    dlq = new_dlq()
    accepted: dict[str, FailedTask] = {}
    for call in calls:
        await apply_call(dlq, call, accepted)
    await assert_store_holds(dlq, accepted)
    await assert_healthy(dlq)


@asyncio_only
@PROPERTY
@given(
    task=payloads,
    metadata=st.none() | payloads,
    repos=st.lists(valid_text, max_size=3),
    delta=st.integers(-3, 3),
)
async def test_the_payload_bound_is_exact(
    anyio_backend: str,
    task: dict[str, Any],
    metadata: dict[str, Any] | None,
    repos: list[str],
    delta: int,
) -> None:
    size = payload_size(task, metadata, repos)
    limit = max(1, size + delta)
    dlq = new_dlq(limits=Limits(max_payload_bytes=limit))
    if size <= limit:
        record = await dlq.enqueue("t", task, repos, "boom", metadata=metadata)
        assert_exact(record, await dlq.get_task("t"))
    else:
        with pytest.raises(PayloadTooLargeError) as caught:
            await dlq.enqueue("t", task, repos, "boom", metadata=metadata)
        assert (caught.value.size, caught.value.limit) == (size, limit)
        one_line(caught.value)
        assert await dlq.count_tasks() == 0


@asyncio_only
@settings(PROPERTY, max_examples=60)
@given(
    depth=st.integers(1, 200),
    bound=st.integers(1, 200),
    leaf=json_leaves,
    shape=st.integers(0, 2**30),
)
async def test_the_depth_bound_is_exact(
    anyio_backend: str, depth: int, bound: int, leaf: object, shape: int
) -> None:
    dlq = new_dlq(limits=Limits(max_payload_depth=bound, max_payload_bytes=1 << 20))
    task = nested(depth, leaf, shape)
    if depth <= bound:
        record = await dlq.enqueue("t", task, error="boom")
        assert_exact(record, await dlq.get_task("t"))
        assert canonical(record.task) == canonical(task)
    else:
        with pytest.raises(InvalidPayloadError, match=f"nested deeper than {bound} levels"):
            await dlq.enqueue("t", task, error="boom")
        assert await dlq.count_tasks() == 0


@asyncio_only
@settings(PROPERTY, max_examples=60)
@given(
    max_size=st.integers(1, 4),
    operations=st.lists(st.tuples(st.booleans(), st.integers(0, 5)), min_size=1, max_size=12),
)
async def test_max_size_refuses_new_open_tasks_only(
    anyio_backend: str, max_size: int, operations: list[tuple[bool, int]]
) -> None:
    """Open tasks never exceed ``max_size``; a duplicate of an open id is always taken;
    archiving makes room."""
    dlq = new_dlq(max_size=max_size)
    open_ids: set[str] = set()
    stored: set[str] = set()
    for archive, number in operations:
        task_id = f"task-{number}"
        if archive:
            assert await dlq.archive_task(task_id) is (task_id in stored)
            open_ids.discard(task_id)
            continue
        if task_id not in open_ids and len(open_ids) >= max_size:
            with pytest.raises(QueueFullError) as caught:
                await dlq.enqueue(task_id, {"n": number}, error="boom", retry_policy="never")
            assert caught.value.limit == max_size
            one_line(caught.value)
        else:
            record = await dlq.enqueue(task_id, {"n": number}, error="boom", retry_policy="never")
            assert record.is_open
            open_ids.add(task_id)
            stored.add(task_id)
        assert (await dlq.get_statistics())["queue_size"] == len(open_ids)
    assert await dlq.count_tasks() == len(stored)
    for task_id in list(open_ids)[: max(0, len(open_ids) - max_size + 1)]:
        assert await dlq.archive_task(task_id)  # room for the healthy task
    await assert_healthy(dlq)


# -- wrapped workflows -----------------------------------------------------------------------


@PROPERTY
@given(spec=exc_specs, task=workflow_tasks, task_id=st.none() | good_ids, how=how_called)
@example(spec=ExcSpec("surrogate_name", "boom"), task={}, task_id="surrogate", how="async").via(
    "an exception class name holding a lone surrogate is stored written out (\\udcff)"
)
@example(spec=ExcSpec("hostile_module", "boom"), task={}, task_id="module", how="async").via(
    "an exception class whose __module__ cannot be formatted is stored, named by __name__"
)
@example(spec=ExcSpec("setattr_raises", "boom"), task={}, task_id="setattr", how="sync").via(
    "a sync workflow's exception that refuses attributes comes back as itself, on trio too"
)
@example(spec=ExcSpec("any_attribute", "boom"), task={}, task_id="any", how="async").via(
    "a __getattr__ answering every name does not pass for an inner wrapper's mark"
)
@example(spec=ExcSpec("plain", "boom"), task={}, task_id=None, how="nested").via(
    "a failure an inner execute_with_dlq stored is not stored again by the outer one"
)
async def test_execute_with_dlq_reraises_the_very_exception_and_keeps_it(
    anyio_backend: str, spec: ExcSpec, task: object, task_id: str | None, how: str
) -> None:
    dlq = new_dlq()
    await check_wrapped_failure(dlq, spec, task, task_id, how)
    await assert_healthy(dlq)


@settings(PROPERTY, max_examples=40)
@given(
    signal=st.sampled_from([KeyboardInterrupt, SystemExit, asyncio.CancelledError]),
    argument=hostile_text,
    how=how_called,
)
async def test_base_exceptions_pass_through_untouched(
    anyio_backend: str, signal: type[BaseException], argument: str, how: str
) -> None:
    dlq = new_dlq()
    exc = signal(argument)
    caught = await run_wrapped(dlq, wrapped_workflow(dlq, exc, how, "t"), {"n": 1}, "t")
    assert caught is exc
    assert "dlq_task_id" not in vars(caught)
    assert getattr(caught, "__notes__", None) is None
    assert await dlq.count_tasks() == 0
    await assert_healthy(dlq)


# -- retry handlers ----------------------------------------------------------------------------


@PROPERTY
@given(plan=plans, task=payloads, repos=st.lists(valid_text, max_size=3))
@example(
    plan=[(Behaviour("retry_after", math.inf), False), (Behaviour("retry_after", math.nan), True)],
    task={},
    repos=[],
).via("RetryAfter(inf) waits a century, RetryAfter(nan) fails: neither keeps the lease")
@example(
    plan=[(Behaviour("raise", ExcSpec("hostile_headers", "boom")), True)], task={}, repos=[]
).via("an exception whose response.headers.get raises fails the attempt with its text")
@example(
    plan=[(Behaviour("raise", ExcSpec("hostile_module", "boom")), False)], task={}, repos=[]
).via("an exception class whose __module__ cannot be formatted is named by __name__")
@example(
    plan=[(Behaviour("raise_sync", ExcSpec("setattr_raises", "boom")), False)], task={}, repos=[]
).via("a sync handler's exception that refuses attributes is recorded as itself, on trio too")
@example(plan=[(Behaviour("awaitable", "result"), True)], task={}, repos=[]).via(
    "a sync handler returning a coroutine succeeds, on trio too"
)
async def test_no_handler_can_poison_the_processor(
    anyio_backend: str, plan: list[tuple[Behaviour, bool]], task: dict[str, Any], repos: list[str]
) -> None:
    dlq = new_dlq()
    await check_handler_plan(dlq, anyio_backend, plan, task, repos)
    await assert_healthy(dlq)


@settings(PROPERTY, max_examples=60)
@given(timeline=timelines)
@timeline_examples
async def test_a_delay_of_any_length_is_recorded_up_to_the_end_of_the_calendar(
    anyio_backend: str, timeline: Timeline
) -> None:
    """A first failure now, a century or a decade before the year 9999, under a deadline
    or none, asking for a delay or not; then handlers asking for delays of any length
    (``RetryAfter``, a ``retry_after`` attribute, a ``Retry-After`` header): each is
    scheduled as the policy says, or the task exhausts; never left retrying."""
    dlq = new_dlq(policies=timeline.policies())
    await check_timeline(dlq, anyio_backend, timeline)
    await assert_healthy(dlq)


#: The last moment of the calendar.
END = datetime.max.replace(tzinfo=timezone.utc)
#: The first retry of each policy, by default (immediate: at once).
FIRST_DELAYS = {"immediate": 0.0, "linear": 300.0, "exponential": 60.0}


@asyncio_only
@settings(PROPERTY, max_examples=30)
@given(before_end=st.floats(0, 600), policy=st.sampled_from(sorted(FIRST_DELAYS)))
@example(before_end=59.0, policy="exponential").via(
    "a first retry a second after the year 9999 exhausts the task at once"
)
async def test_a_first_retry_after_the_year_9999_exhausts_the_task(
    anyio_backend: str, before_end: float, policy: str
) -> None:
    """A failure without a delay hint, in the last minutes of the calendar: its first
    retry is scheduled, or the task exhausts when that would fall after the year 9999.
    (No attempt follows: within ``lease_seconds`` of the year 10000 a claim raises
    OverflowError, its lease past the calendar — a library bug, reported.)"""
    dlq = new_dlq()
    now = END - timedelta(seconds=before_end)
    dlq.clock.set(now)  # type: ignore[attr-defined]
    record = await dlq.enqueue("t", {}, error="boom", retry_policy=policy)
    due = later(now, FIRST_DELAYS[policy])
    assert (record.status, record.next_retry_at) == (
        (EXHAUSTED, None) if due is None else (PENDING, due)
    )
    assert record.lease_owner is None
    assert_exact(record, await dlq.get_task("t"))


# -- listing filters --------------------------------------------------------------------------


@asyncio_only
@PROPERTY
@given(
    planted=seeds(valid_text, good_ids, long_text(valid_chars, 1200)),
    listing=listings(valid_text, long_text(valid_chars, 900)),
)
@example(
    planted=[Seed("a", "wf", "boom", None, 0, 0)],
    listing=Listing({"status": 5}, frozenset({"status"})),
).via("status=5 is a TypeError naming status")
@example(
    planted=[Seed("a", "wf", "boom", None, 0, 0)],
    listing=Listing(
        {"error_category": 5, "workflow": {"a": 1}}, frozenset({"error_category", "workflow"})
    ),
).via("error_category=5, workflow={...}: a one-line ValueError naming the field")
@example(
    planted=[Seed("a", "wf", "b'boom'", None, 0, 0)],
    listing=Listing({"text": b"boom"}, frozenset({"text"})),
).via("text=b'boom' is a ValueError naming text, not a search for its repr")
@example(
    planted=[Seed("a", "wf", "boom", None, 0, 0)],
    listing=Listing({"since": T0.isoformat(), "until": 0}, frozenset({"since", "until"})),
).via("since/until as ISO text or a timestamp: a ValueError naming the field")
async def test_list_tasks_selects_what_the_filter_matches_and_refuses_in_one_line(
    anyio_backend: str, planted: list[Seed], listing: Listing
) -> None:
    dlq = new_dlq()
    stored = await store_seeds(dlq, planted)
    await check_listing(dlq, stored, listing)
    await assert_healthy(dlq)


# -- log lines ---------------------------------------------------------------------------


@settings(PROPERTY, max_examples=40)
@given(
    task_id=holding(BREAKERS + SURROGATES),
    wrapped_id=holding(BREAKERS + SURROGATES),
    workflow=holding(BREAKERS),
    error=holding(BREAKERS + SURROGATES, hostile_text),
    spec=exc_specs_of(holding(BREAKERS + SURROGATES, hostile_text)),
    how=st.sampled_from(["async", "sync"]),
)
async def test_every_log_line_is_one_printable_line(
    anyio_backend: str,
    caplog: pytest.LogCaptureFixture,
    task_id: str,
    wrapped_id: str,
    workflow: str,
    error: str,
    spec: ExcSpec,
    how: str,
) -> None:
    """Ids, workflows, error texts and exceptions that hold line breaks, escape
    sequences, bidi controls or lone surrogates: enqueued, wrapped (stored or refused)
    and retried, by an operator and by the processor. Every message of the library's
    loggers is one line with all of that written out; it still names the task (the
    ``extra`` fields keep the values as they are)."""
    dlq = new_dlq()
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="mahavishnu_dlq"):
        options: dict[str, Any] = {"workflow": workflow, "retry_policy": "immediate"}
        await outcome(dlq.enqueue(task_id, {"n": 1}, error=error, **options))
        await run_wrapped(dlq, raising(spec.build(), how), {"n": 2}, wrapped_id, **options)
        dlq.register_handler(workflow, Behaviour("raise", spec).handler([]))
        for task in await dlq.list_tasks():
            await dlq.retry_task(task.task_id)  # fails again: the policy retries in 1 s
        dlq.clock.advance(1)  # type: ignore[attr-defined]
        await RetryProcessor(dlq).run_once()
    records = [record for record in caplog.records if record.name.startswith("mahavishnu_dlq")]
    logged: set[str] = set()
    for record in records:
        message = record.getMessage()
        assert_printable_line(message)
        raw_id = record.__dict__.get("task_id")
        if isinstance(raw_id, str):
            assert escape_line(raw_id) in message, (raw_id, message)
            logged.add(raw_id)
    stored = {task.task_id for task in await dlq.list_tasks()}
    assert stored <= logged  # each enqueue and retry is logged, the raw id in ``extra``
    if id_refusal(wrapped_id) is not None:
        assert wrapped_id in logged  # the failure that could not be stored is logged
    await assert_healthy(dlq)
