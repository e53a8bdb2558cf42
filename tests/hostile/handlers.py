"""Hostile retry handlers: a :class:`Behaviour` says what a handler does on one attempt
(return anything, change its input, raise a hostile exception, cancel, interrupt, ask
for a delay of any length); :func:`check_handler_plan` runs attempts of one task by such
handlers, from a first failure at any time up to the end of the calendar (a
:class:`Timeline`), and checks that each is recorded as the state machine and the retry
policy (:mod:`tests.hostile.schedule`) say, never leaving the lease held.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Final, TypeVar, cast

import anyio
from hypothesis import example
from hypothesis import strategies as st

from mahavishnu_dlq import (
    AttemptOutcome,
    DeadLetterQueue,
    DeadLetterStatus,
    FailedTask,
    Limits,
    RetryAfter,
    RetryProcessor,
)
from mahavishnu_dlq.policy import MAX_SECONDS, PolicyBook, PolicyOverride
from tests.hostile.checks import (
    COMPLETED,
    PENDING,
    T0,
    assert_bounded,
    assert_exact,
    canonical,
)
from tests.hostile.exceptions import ExcSpec, exc_specs, exception_text, retry_hints, type_name
from tests.hostile.payloads import json_values
from tests.hostile.schedule import check_deferred, deadline_of, expected_schedule
from tests.hostile.text import hostile_text

HOSTILE_ID: Final = "hostile"
HOSTILE_WORKFLOW: Final = "hostile-workflow"
FIRST_FAILURE: Final = ExcSpec("plain", "first failure")
#: First failures a century and a decade before the end of the calendar (the year 9999).
IN_9899: Final = datetime(9899, 12, 31, tzinfo=timezone.utc)
IN_9990: Final = datetime(9990, 1, 1, tzinfo=timezone.utc)
#: When a task first fails: now, or late in the calendar.
STARTS: Final = (T0, IN_9899, IN_9990)


def refused_signal(seconds: object) -> Exception | None:
    """What ``RetryAfter(seconds)`` raises (NaN and negative seconds: ValueError), or None."""
    try:
        RetryAfter(cast(float, seconds))
    except Exception as exc:
        return exc
    return None


@dataclass(frozen=True)
class Behaviour:
    """What a handler does on one attempt.

    ``kind``: ``return`` / ``return_sync`` / ``awaitable`` (a sync handler returning a
    coroutine) / ``mutate`` (changes its input, then succeeds) — a success; ``raise`` /
    ``raise_sync`` (an :class:`ExcSpec`) — a failed attempt; ``cancel``
    (``asyncio.CancelledError`` raised by the handler itself) — a failed attempt on
    asyncio, a foreign ``BaseException`` on trio; ``interrupt`` (KeyboardInterrupt or
    SystemExit) — given back, then propagated; ``retry_after`` (seconds) — deferred,
    or a failed attempt when ``RetryAfter`` refuses those seconds.
    """

    kind: str
    value: Any = None

    def handler(self, calls: list[tuple[dict[str, Any], list[str]]]) -> Callable[..., Any]:
        kind, value = self.kind, self.value
        if kind in ("return_sync", "raise_sync", "awaitable"):

            def sync_handler(task: dict[str, Any], repos: list[str]) -> Any:
                calls.append((json.loads(canonical(task)), list(repos)))
                if kind == "raise_sync":
                    raise value.build()
                if kind == "awaitable":
                    return _checkpoint_then(value)
                return value

            return sync_handler

        async def async_handler(task: dict[str, Any], repos: list[str]) -> Any:
            calls.append((json.loads(canonical(task)), list(repos)))
            if kind == "raise":
                raise value.build()
            if kind == "cancel":
                raise asyncio.CancelledError(value)
            if kind == "interrupt":
                raise value
            if kind == "retry_after":
                raise RetryAfter(value)
            if kind == "mutate":
                _vandalise(task)
                repos.append("added by the handler")
            return value

        return async_handler

    def outcome(self, backend: str) -> str:
        """``success``, ``failure``, ``given_back`` or ``deferred``."""
        if self.kind in ("return", "return_sync", "awaitable", "mutate"):
            return "success"
        if self.kind in ("raise", "raise_sync") or (self.kind == "cancel" and backend == "asyncio"):
            return "failure"
        if self.kind in ("interrupt", "cancel"):
            return "given_back"
        return "deferred" if refused_signal(self.value) is None else "failure"

    def failure(self) -> tuple[str, str]:
        """The error text (before bounding) and type a failed attempt records."""
        if self.kind == "cancel":
            exc: BaseException = asyncio.CancelledError(self.value)
            return exception_text(exc), type_name(type(exc))
        if self.kind == "retry_after":
            refused = refused_signal(self.value)
            assert refused is not None
            if isinstance(self.value, float) and math.isnan(self.value):
                assert isinstance(refused, ValueError)  # documented: it cannot be built
            return exception_text(refused), type_name(type(refused))
        spec: ExcSpec = self.value
        exc = spec.build()
        return spec.expected_text(exc), type_name(type(exc))

    def hint(self) -> float | None:
        """The delay a failed attempt asks for (not yet clamped), or None."""
        return self.value.hint if self.kind in ("raise", "raise_sync") else None


async def _checkpoint_then(value: object) -> object:
    await anyio.lowlevel.checkpoint()
    return value


def _vandalise(value: object) -> None:
    """Change every container reachable from ``value`` in place."""
    if isinstance(value, dict):
        for item in list(value.values()):
            _vandalise(item)
        value["vandalised"] = True
    elif isinstance(value, list):
        for item in value:
            _vandalise(item)
        value.append("vandalised")


results = st.one_of(st.none(), st.integers(), hostile_text, st.builds(object), json_values)
#: Deferrals a handler may ask for: ordinary ones, ones no calendar holds (clamped to
#: a century), and ones ``RetryAfter`` refuses (NaN, negative, past a float).
deferrals = st.one_of(
    st.floats(0, 1e9),
    st.sampled_from([math.inf, math.nan, 1e20, 1e12, MAX_SECONDS, 2 * MAX_SECONDS, -1.0]),
    st.just(10**400),
)
interrupts = st.builds(
    lambda signal, text: signal(text),
    st.sampled_from([KeyboardInterrupt, SystemExit]),
    hostile_text,
)
behaviours = st.one_of(
    st.builds(Behaviour, st.sampled_from(["return", "return_sync", "awaitable"]), results),
    st.builds(Behaviour, st.just("mutate")),
    st.builds(Behaviour, st.sampled_from(["raise", "raise_sync"]), exc_specs),
    st.builds(Behaviour, st.just("cancel"), hostile_text),
    st.builds(Behaviour, st.just("interrupt"), interrupts),
    st.builds(Behaviour, st.just("retry_after"), deferrals),
)
#: Attempts of one task: how its handler behaves each time, and whether the attempt is
#: the processor's (``run_once``) or an operator's (``retry_task``).
plans = st.lists(st.tuples(behaviours, st.booleans()), min_size=1, max_size=4)

#: Failures that ask for a delay (any, and many of up to two centuries) by a
#: ``retry_after`` attribute or a ``Retry-After`` header.
hinted_failures = st.builds(
    ExcSpec,
    st.sampled_from(["retry_hint", "retry_header"]),
    st.just("slow down"),
    st.floats(0, 2 * MAX_SECONDS) | retry_hints,
)
#: Handlers that ask for a delay: by ``RetryAfter``, or by failing with a hint.
delays = st.one_of(
    st.builds(Behaviour, st.just("retry_after"), deferrals),
    st.builds(Behaviour, st.sampled_from(["raise", "raise_sync"]), hinted_failures),
)


@dataclass(frozen=True)
class Timeline:
    """A task's first failure (when, under which deadline of its workflow, asking for
    which delay), and the attempts that follow."""

    start: datetime
    deadline: float | None
    first: ExcSpec
    plan: list[tuple[Behaviour, bool]]

    def policies(self) -> PolicyBook:
        """The policy book giving the task's workflow this deadline."""
        return PolicyBook(by_workflow={HOSTILE_WORKFLOW: PolicyOverride(deadline=self.deadline)})


#: First failures at any time up to a decade before the year 9999, with and without
#: deadlines, asking for delays or not; then handlers asking for delays.
timelines = st.builds(
    Timeline,
    st.sampled_from(STARTS),
    st.none() | st.floats(1, MAX_SECONDS),
    st.just(FIRST_FAILURE) | hinted_failures,
    st.lists(st.tuples(delays, st.booleans()), min_size=1, max_size=2),
)


def _deferral(seconds: float, manual: bool = False) -> list[tuple[Behaviour, bool]]:
    """One attempt whose handler raises ``RetryAfter(seconds)``."""
    return [(Behaviour("retry_after", seconds), manual)]


def _slow_down(hint: object, kind: str = "retry_hint") -> ExcSpec:
    """A failure asking for ``hint`` seconds (``retry_after``, or a ``Retry-After`` header)."""
    return ExcSpec(kind, "slow down", hint)


#: The edges of the calendar and of deadlines, pinned as examples.
TIMELINE_EXAMPLES: Final = (
    (
        "RetryAfter(inf) in 9990 exhausts the task: the retry would fall after the year 9999",
        Timeline(IN_9990, None, FIRST_FAILURE, _deferral(math.inf, manual=True)),
    ),
    (
        "a deferral past the deadline exhausts the task, saying so",
        Timeline(T0, 60.0, FIRST_FAILURE, _deferral(1e6)),
    ),
    (
        "a deferral ending on the deadline, days before the end of the calendar, is deferred",
        Timeline(IN_9899, MAX_SECONDS, FIRST_FAILURE, _deferral(MAX_SECONDS, manual=True)),
    ),
    (
        "a first retry due on the deadline is scheduled; failing then, the task exhausts",
        Timeline(
            IN_9899,
            MAX_SECONDS,
            _slow_down(MAX_SECONDS),
            [(Behaviour("raise", _slow_down(0)), False)],
        ),
    ),
    (
        "a deadline falling after the year 9999 is none: a deferral is deferred",
        Timeline(IN_9990, MAX_SECONDS, FIRST_FAILURE, _deferral(5.0)),
    ),
    (
        "a first failure whose Retry-After falls after the year 9999 is exhausted at once",
        Timeline(IN_9990, None, _slow_down("1e12", "retry_header"), _deferral(0.0)),
    ),
    (
        "a failed attempt whose hint falls after the year 9999 exhausts the task",
        Timeline(
            IN_9990,
            None,
            _slow_down(1e8),
            [(Behaviour("raise_sync", _slow_down(str(MAX_SECONDS), "retry_header")), False)],
        ),
    ),
)

F = TypeVar("F", bound=Callable[..., Any])


def timeline_examples(test: F) -> F:
    """``test`` with an explicit example for each of :data:`TIMELINE_EXAMPLES`."""
    for guards, timeline in reversed(TIMELINE_EXAMPLES):
        test = example(timeline=timeline).via(guards)(test)
    return test


def check_failed_attempt(
    behaviour: Behaviour,
    before: FailedTask,
    after: FailedTask,
    deadline: float | None,
    limits: Limits,
) -> str:
    """A failed attempt spends a retry, keeps its error (bounded, valid Unicode) and the
    very type raised — on asyncio as on trio — and is scheduled as the policy says.
    Returns the error text kept."""
    last = after.attempts[-1]
    assert after.retry_count == before.retry_count + 1
    assert last.outcome is AttemptOutcome.FAILURE
    text, kept_type = behaviour.failure()
    assert_bounded(after.last_error, text, limits.max_error_bytes)
    assert after.last_error_type == kept_type
    assert after.last_error is not None
    assert (last.error, last.error_type) == (after.last_error[:2000], kept_type)
    assert (after.status, after.next_retry_at) == expected_schedule(
        after, deadline, behaviour.hint()
    )
    return after.last_error


async def attempt(
    dlq: DeadLetterQueue, task_id: str, manual: bool
) -> tuple[BaseException | None, dict[str, Any] | None]:
    """One attempt of ``task_id``, by ``run_once()`` (made due now) or ``retry_task``:
    what it raised, and what ``retry_task`` answered."""
    try:
        if manual:
            return None, await dlq.retry_task(task_id)
        current = await dlq.get_task(task_id)
        assert current is not None
        if current.next_retry_at is not None and current.next_retry_at > dlq.clock.now():
            dlq.clock.set(current.next_retry_at)  # type: ignore[attr-defined]
        assert await RetryProcessor(dlq).run_once() == 1
        return None, None
    except AssertionError:
        raise
    except BaseException as exc:
        return exc, None


def check_attempt(
    dlq: DeadLetterQueue,
    backend: str,
    behaviour: Behaviour,
    before: FailedTask,
    after: FailedTask,
    raised: BaseException | None,
    answer: dict[str, Any] | None,
) -> None:
    """The task after one attempt is what the documented state machine says; it is
    never left retrying with the lease held. ``retry_task`` answers with the error."""
    last = after.attempts[-1]
    assert after.lease_owner is None, (
        f"the attempt was not recorded (the lease is still held); raised: {raised!r:.300}"
    )
    assert after.status is not DeadLetterStatus.RETRYING
    outcome = behaviour.outcome(backend)
    if outcome == "given_back":  # propagated as itself, not wrapped in a group
        if behaviour.kind == "cancel":
            assert type(raised) is asyncio.CancelledError
        else:
            assert raised is behaviour.value
        assert (after.status, after.retry_count) == (PENDING, before.retry_count)
        assert last.outcome is AttemptOutcome.CANCELLED
        return
    assert raised is None, f"{type(raised).__name__}: {raised!s:.300}"
    if outcome == "success":
        assert after.status is COMPLETED, (last.error_type, last.error)
        assert last.outcome is AttemptOutcome.SUCCESS
        if answer is not None:
            assert answer["success"] is True
            assert answer["result"] is behaviour.value
        return
    deadline = deadline_of(dlq, after)
    error = (
        check_failed_attempt(behaviour, before, after, deadline, dlq.limits)
        if outcome == "failure"
        else check_deferred(behaviour.value, before, after, deadline)
    )
    if answer is not None:
        assert (answer["success"], answer["error"]) == (False, error)


async def check_handler_plan(
    dlq: DeadLetterQueue,
    backend: str,
    plan: list[tuple[Behaviour, bool]],
    task: dict[str, Any],
    repos: list[str],
    *,
    start: datetime = T0,
    first: ExcSpec = FIRST_FAILURE,
) -> None:
    """A task first fails at ``start`` with ``first`` (scheduled as the policy says),
    then is attempted by a handler behaving as ``plan`` says each time, until it
    completes or is exhausted (it has a retry more than the plan); its stored input never
    changes."""
    if start > dlq.clock.now():
        dlq.clock.set(start)  # type: ignore[attr-defined]
    record = await dlq.enqueue(
        HOSTILE_ID,
        task,
        repos,
        error=first.build(),
        workflow=HOSTILE_WORKFLOW,
        retry_policy="immediate",
        max_retries=len(plan) + 1,
    )
    assert (record.status, record.next_retry_at) == expected_schedule(
        record, deadline_of(dlq, record), first.hint
    )
    calls: list[tuple[dict[str, Any], list[str]]] = []
    for behaviour, manual in plan:
        if record.status is not PENDING:
            break
        dlq.register_handler(HOSTILE_WORKFLOW, behaviour.handler(calls))
        raised, answer = await attempt(dlq, HOSTILE_ID, manual)
        after = await dlq.get_task(HOSTILE_ID)
        assert after is not None
        check_attempt(dlq, backend, behaviour, record, after, raised, answer)
        assert canonical(after.task) == canonical(task)  # whatever the handler did to its copy
        assert after.repos == repos
        record = after
    for seen_task, seen_repos in calls:  # every handler got a copy of the stored input
        assert canonical(seen_task) == canonical(task)
        assert seen_repos == repos
    dlq.handlers.pop(HOSTILE_WORKFLOW, None)  # the healthy task must not meet this handler
    assert_exact(record, await dlq.get_task(HOSTILE_ID))


async def check_timeline(dlq: DeadLetterQueue, backend: str, timeline: Timeline) -> None:
    """:func:`check_handler_plan` for ``timeline`` (``dlq`` has its policies)."""
    await check_handler_plan(
        dlq, backend, timeline.plan, {}, [], start=timeline.start, first=timeline.first
    )
