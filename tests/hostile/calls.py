"""Hostile ``enqueue`` calls: a :class:`Call` holds the arguments of one, each valid or
hostile; :func:`refusals` is the oracle for which documented errors it may raise, and
:func:`apply_call` makes it and checks the record (or that a refusal changed nothing).
:data:`REGRESSION_CALLS` are the calls that once went wrong, pinned as examples.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, Final, TypeVar

from hypothesis import example
from hypothesis import strategies as st

from mahavishnu_dlq import (
    DeadLetterQueue,
    ErrorCategory,
    FailedTask,
    InvalidPayloadError,
    Limits,
    PayloadTooLargeError,
    RetryPolicy,
)
from tests.hostile.checks import (
    assert_bounded,
    assert_exact,
    assert_own_copy,
    canonical,
    one_line,
    outcome,
)
from tests.hostile.exceptions import (
    ExcSpec,
    assert_exception_kept,
    assert_traceback_kept,
    exc_specs,
)
from tests.hostile.payloads import (
    HUGE,
    as_dict,
    expected_repos,
    hostile_metadata,
    hostile_repos,
    hostile_tasks,
    mapping_shapes,
    payload_size,
    payloads,
    tree_refused,
)
from tests.hostile.text import (
    HostileStr,
    PrintsHostileStr,
    Unprintable,
    any_chars,
    good_ids,
    hostile_ids,
    hostile_text,
    id_refusal,
    is_valid,
    long_text,
    nonempty_text,
    sized_text,
    text_of,
    valid_text,
)


@dataclass
class Call:
    """The arguments of one ``enqueue`` call; ``error`` may be an :class:`ExcSpec`, built
    fresh for each call."""

    task_id: Any
    task: Any
    repos: Any = None
    error: Any = ""
    retry_policy: Any = None
    max_retries: Any = None
    metadata: Any = None
    error_category: Any = None
    workflow: Any = None

    def arguments(self, error: object) -> dict[str, Any]:
        values = {field.name: getattr(self, field.name) for field in fields(self)}
        values["error"] = error
        return values

    def make_error(self) -> object:
        return self.error.build() if isinstance(self.error, ExcSpec) else self.error


policies = st.one_of(
    st.none(),
    st.just(""),
    st.sampled_from(list(RetryPolicy)),
    st.sampled_from([policy.value for policy in RetryPolicy]),
)
categories = st.one_of(
    st.none(),
    st.just(""),
    st.sampled_from(list(ErrorCategory)),
    st.sampled_from([category.value for category in ErrorCategory]),
)
#: ``error=`` other than an exception: text (a ``str`` subclass whose ``str()`` raises
#: too), None, or any object (read by its ``str``).
error_texts = st.one_of(
    hostile_text,
    long_text(any_chars, 1500),
    valid_text.map(HostileStr),
    st.none(),
    st.integers(),
    st.builds(Unprintable),
    st.builds(PrintsHostileStr),
)
#: Each argument of a call, valid or hostile.
_ARGUMENTS: Final[dict[str, tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]]] = {
    "task": (mapping_shapes(payloads), hostile_tasks),
    "repos": (st.lists(valid_text, max_size=3) | st.none(), hostile_repos),
    "retry_policy": (policies, st.one_of(hostile_text, st.integers(), st.floats())),
    "max_retries": (
        st.none() | st.integers(0, 1000),
        st.one_of(st.integers(), st.booleans(), st.floats(), st.just("3")),
    ),
    "metadata": (st.none() | payloads, hostile_metadata),
    "error_category": (categories, st.one_of(hostile_text, st.integers())),
    "workflow": (
        st.none() | valid_text,
        st.one_of(
            hostile_text,
            sized_text(512),
            sized_text(513),
            nonempty_text.map(HostileStr),
            st.integers(),
            st.sampled_from([[1], [], False]),
        ),
    ),
}
#: One argument in four is hostile.
_hostile_turn = st.sampled_from([False, False, False, True])

#: Ids for calls: valid half of the time, anything at all otherwise.
call_ids = st.one_of(good_ids, hostile_ids)


@st.composite
def enqueue_calls(draw: st.DrawFn, ids: st.SearchStrategy[Any] = call_ids) -> Call:
    """One ``enqueue`` call, each argument valid or (one time in four) hostile."""
    arguments = {
        name: draw(hostile if draw(_hostile_turn) else valid)
        for name, (valid, hostile) in _ARGUMENTS.items()
    }
    return Call(task_id=draw(ids), error=draw(error_texts | exc_specs), **arguments)


@st.composite
def id_pools(draw: st.DrawFn) -> list[Call]:
    """Calls whose ids come from a small pool (so ids repeat, refused and accepted)."""
    pool = draw(st.lists(hostile_ids, min_size=1, max_size=3))
    count = draw(st.integers(1, 6))
    return [draw(enqueue_calls(ids=st.sampled_from(pool))) for _ in range(count)]


def _enum_refused(value: object, enum: type[RetryPolicy] | type[ErrorCategory]) -> bool:
    if not value:
        return False
    try:
        enum(value)
    except ValueError:
        return True
    return False


def refusals(call: Call, limits: Limits) -> set[type[Exception]]:
    """The documented errors ``call`` may raise (empty: it must be accepted)."""
    found: set[type[Exception]] = set()
    refused_id = id_refusal(call.task_id)
    if refused_id is not None:
        found.add(refused_id)
    retries = call.max_retries
    if retries is not None:
        if isinstance(retries, bool) or not isinstance(retries, int):
            found.add(TypeError)
        elif not 0 <= retries <= 1000:
            found.add(ValueError)
    workflow = call.workflow  # only None means "no workflow": 0 and [] are refused
    if workflow is not None and (
        not isinstance(workflow, str) or len(workflow) > 512 or not is_valid(workflow)
    ):
        found.add(InvalidPayloadError)
    if _enum_refused(call.retry_policy, RetryPolicy) or _enum_refused(
        call.error_category, ErrorCategory
    ):
        found.add(ValueError)
    names = expected_repos(call.repos)
    task = as_dict(call.task)
    metadata = {} if call.metadata is None else as_dict(call.metadata)
    if (
        names is None
        or task is None
        or metadata is None
        or tree_refused(task, limits.max_payload_depth)
        or (metadata and tree_refused(metadata, limits.max_payload_depth))
    ):
        found.add(InvalidPayloadError)
    elif payload_size(task, metadata, names) > limits.max_payload_bytes:
        found.add(PayloadTooLargeError)
    return found


def _without_context(metadata: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in metadata.items() if key != "failure_context"}


def check_accepted(
    call: Call, error: object, record: FailedTask, limits: Limits, previous: FailedTask | None
) -> None:
    """The record of an accepted ``call`` holds what was given, as documented: a new
    record, or ``previous`` (still open) with the new input, repos, error and metadata;
    either way its own copy of them, and plain strings only."""
    assert type(record.task_id) is str
    assert record.task_id == str.__str__(call.task_id)
    assert canonical(record.task) == canonical(dict(call.task))
    assert_own_copy(record.task, call.task)
    assert record.repos == expected_repos(call.repos)
    assert all(type(name) is str for name in record.repos)
    given = _without_context(dict(call.metadata) if call.metadata else {})
    assert isinstance(record.metadata["failure_context"], dict)
    assert_own_copy(_without_context(record.metadata), call.metadata)
    workflow = "" if call.workflow is None else text_of(call.workflow)
    assert type(record.workflow) is str
    limit = limits.max_error_bytes
    if previous is not None and previous.is_open:  # merged into the open record
        assert record.workflow == (workflow or previous.workflow)
        merged = {**_without_context(previous.metadata), **given}
        assert canonical(_without_context(record.metadata)) == canonical(merged)
        kept = (
            *("error", "error_type", "error_category", "retry_policy", "max_retries"),
            *("status", "retry_count", "next_retry_at", "failed_at", "created_at", "traceback"),
        )
        assert [getattr(record, name) for name in kept] == [
            getattr(previous, name) for name in kept
        ]
    else:
        assert record.workflow == workflow
        assert canonical(_without_context(record.metadata)) == canonical(given)
        assert (record.error, record.error_type) == (record.last_error, record.last_error_type)
        if call.retry_policy:
            assert record.retry_policy is RetryPolicy(call.retry_policy)
        if call.max_retries is not None:
            assert record.max_retries == call.max_retries
        if call.error_category:
            assert record.error_category is ErrorCategory(call.error_category)
        if isinstance(call.error, ExcSpec):
            assert_traceback_kept(call.error, record.traceback, limit)
        else:
            assert record.traceback is None
    if isinstance(error, BaseException):
        assert isinstance(call.error, ExcSpec)
        assert_exception_kept(call.error, error, record.last_error, record.last_error_type, limit)
    else:  # error=None is kept as an empty text
        assert_bounded(record.last_error, "" if error is None else text_of(error), limit)
        assert record.last_error_type == ""


async def apply_call(
    dlq: DeadLetterQueue, call: Call, accepted: dict[str, FailedTask]
) -> FailedTask | None:
    """Make ``call``; assert it raised only what :func:`refusals` allows and changed
    nothing when refused, or that the record holds what was given."""
    error = call.make_error()
    expected = refusals(call, dlq.limits)
    record = await outcome(dlq.enqueue(**call.arguments(error)))
    if isinstance(record, Exception):
        assert expected, f"refused a valid call: {type(record).__name__}: {record!s:.300}"
        assert type(record) in expected, (type(record), expected, str(record)[:300])
        one_line(record)
        if isinstance(call.task_id, str):
            plain = str.__str__(call.task_id)
            before = accepted.get(plain)
            after = await dlq.get_task(plain)
            if before is None:
                assert after is None
            else:
                assert_exact(before, after)
        return None
    assert not expected, f"accepted a call that must raise one of {expected}"
    check_accepted(call, error, record, dlq.limits, accepted.get(record.task_id))
    assert_exact(record, await dlq.get_task(record.task_id))
    accepted[record.task_id] = record
    return record


#: Calls that once raised what the documentation says they cannot, or kept what they
#: must not: explicit examples, each saying what it guards, so that these run first.
REGRESSION_CALLS: Final = (
    (
        "an error= str subclass whose __str__ raises is kept by its own characters",
        [Call("str-subclass", {}, error=HostileStr("boom"))],
    ),
    (
        "error=None is kept as an empty text, an object by its str() or a stand-in",
        [
            Call("none", {}, error=None),
            Call("unprintable", {}, error=Unprintable()),
            Call("prints-subclass", {}, error=PrintsHostileStr()),
        ],
    ),
    (
        "an exception class name holding a lone surrogate is kept written out (\\udcff)",
        [Call("surrogate-name", {}, error=ExcSpec("surrogate_name", "boom"))],
    ),
    (
        "an exception class whose __module__ cannot be formatted is named by its __name__",
        [Call("hostile-module", {}, error=ExcSpec("hostile_module", "boom"))],
    ),
    (
        "an exception whose response.headers.get raises keeps its message and traceback",
        [Call("hostile-headers", {}, error=ExcSpec("hostile_headers", "boom"))],
    ),
    (
        "repo names that are not strings are read by their own characters or str() ('None')",
        [Call("repos", {}, [HostileStr("r"), None, Unprintable(), PrintsHostileStr(), 5])],
    ),
    (
        "an integer of 1001 digits is refused on every store; one of 1000 digits is kept",
        [Call("huge", {"n": HUGE}), Call("largest", {"n": [-(HUGE - 1)]}, metadata={"m": HUGE})],
    ),
    (
        "a falsy workflow that is not a string is refused: only None means no workflow",
        [Call("zero", {}, workflow=0), Call("empty", {}, workflow=[]), Call("none", {})],
    ),
    (
        "a nested input is the record's own copy: tuples become lists, nothing shared",
        [Call("nested", {"a": ([1], {"b": (2,)})}, metadata={"m": ({"k": []},)})],
    ),
)

F = TypeVar("F", bound=Callable[..., Any])


def regression_calls(test: F) -> F:
    """``test`` with an explicit example for each of :data:`REGRESSION_CALLS`."""
    for guards, calls in reversed(REGRESSION_CALLS):
        test = example(calls=calls).via(guards)(test)
    return test
