"""Hostile input at the door: invalid text, odd keys, deep nesting, huge error texts,
hostile exceptions, bounded classifier rules, and bad arguments to the reading and
operator methods. One test (or a few) per point of the hostile-input issue; the
property-based suite (tests/unit/test_hostile_properties.py) generates the rest.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any, cast

import pytest

from mahavishnu_dlq import (
    ClassifierRule,
    DeadLetterQueue,
    ErrorCategory,
    ErrorClassifier,
    Failure,
    InvalidPayloadError,
    Limits,
    PayloadTooLargeError,
    RetryAfter,
    RetryProcessor,
)
from mahavishnu_dlq.limits import bound_text, check_tree, clean_text, cut_text
from mahavishnu_dlq.models import DeadLetterStatus, encode_cursor
from mahavishnu_dlq.policy import PolicyBook, PolicyOverride
from mahavishnu_dlq.printable import UNSAFE
from mahavishnu_dlq.testing import FakeClock

pytestmark = pytest.mark.anyio

SURROGATE = b"job-\xff".decode("utf-8", "surrogateescape")  # as file names and argv give


@pytest.fixture
def dlq() -> DeadLetterQueue:
    return DeadLetterQueue(clock=FakeClock())


async def nothing_stored(dlq: DeadLetterQueue) -> None:
    assert await dlq.count_tasks() == 0


# -- 2. invalid text is refused at the door ----------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"task_id": SURROGATE}, "task_id is not valid Unicode"),
        ({"workflow": SURROGATE}, "workflow"),
        ({"repos": ["ok", SURROGATE]}, "repos[1]"),
        ({"task": {"name": SURROGATE}}, "task['name']"),
        ({"task": {"deep": [1, {SURROGATE: 1}]}}, "task['deep'][1]"),
        ({"metadata": {"who": ["a", SURROGATE]}}, "metadata['who']"),
    ],
)
async def test_lone_surrogates_are_refused_naming_the_field(
    dlq: DeadLetterQueue, arguments: dict[str, Any], named: str
) -> None:
    call: dict[str, Any] = {"task_id": "t", "task": {}, "error": "boom"} | arguments
    with pytest.raises(InvalidPayloadError) as caught:
        await dlq.enqueue(**call)
    assert named in str(caught.value)
    assert "lone surrogate" in str(caught.value)
    await nothing_stored(dlq)


@pytest.mark.parametrize(
    "payload",
    [{1: "a", "1": "b"}, {"a": {None: 1}}, {"a": [{(1, 2): "tuple key"}]}, {"a": {1.5: 0}}],
)
async def test_keys_must_be_strings(dlq: DeadLetterQueue, payload: dict[Any, Any]) -> None:
    with pytest.raises(InvalidPayloadError, match="key that is not a string"):
        await dlq.enqueue("t", payload, error="boom")
    with pytest.raises(InvalidPayloadError, match="key that is not a string"):
        await dlq.enqueue("t", {}, error="boom", metadata=payload)
    await nothing_stored(dlq)


async def test_a_surrogate_in_the_error_text_is_kept_written_out(dlq: DeadLetterQueue) -> None:
    """Error texts describe a failure: never refused, their bad bytes written visibly."""
    stored = await dlq.enqueue("t", {}, error=OSError(2, "No such file", SURROGATE))
    assert "job-\\udcff" in stored.error
    assert stored.error.encode("utf-8")  # valid Unicode now
    assert stored == await dlq.get_task("t")


# -- 3. size bounds ------------------------------------------------------------------------


async def test_nesting_is_bounded_and_everything_stored_encodes_again(
    dlq: DeadLetterQueue,
) -> None:
    def nested(depth: int) -> dict[str, Any]:
        value: dict[str, Any] = {}
        for _ in range(depth - 1):
            value = {"n": value}
        return value

    stored = await dlq.enqueue("deep", nested(100), error="boom")  # the top level is level 1
    assert json.loads(json.dumps(stored.to_dict()))["task"] == nested(100)
    with pytest.raises(InvalidPayloadError, match="nested deeper than 100 levels"):
        await dlq.enqueue("deeper", nested(101), error="boom")
    lists: list[Any] = []
    for _ in range(300):
        lists = [lists]
    with pytest.raises(InvalidPayloadError, match="nested deeper than 100 levels"):
        await dlq.enqueue("lists", {"l": lists}, error="boom")
    looped: dict[str, Any] = {}
    looped["self"] = looped
    with pytest.raises(InvalidPayloadError, match="or holds itself"):
        await dlq.enqueue("loop", looped, error="boom")
    shallow = DeadLetterQueue(limits=Limits(max_payload_depth=3))
    with pytest.raises(InvalidPayloadError, match="deeper than 3 levels"):
        await shallow.enqueue("t", nested(4), error="boom")
    assert [t.task_id for t in await dlq.list_tasks()] == ["deep"]


async def test_error_texts_are_cut_keeping_start_and_end(dlq: DeadLetterQueue) -> None:
    message = "START " + "x" * 12_000_000 + " END"
    try:
        raise RuntimeError(message)
    except RuntimeError as raised:
        error = raised
    stored = await dlq.enqueue("t", {}, error=error)
    for text in (stored.error, stored.last_error or "", stored.traceback or ""):
        assert len(text.encode()) <= 65_536
        assert "bytes cut by mahavishnu-dlq (max_error_bytes 65536)" in text
    assert stored.error.startswith("START ")
    assert stored.error.endswith(" END")
    assert (stored.traceback or "").startswith("Traceback (most recent call last)")
    marker = re.search(r"\n\[\.\.\. (\d+) bytes cut [^\n]*\]\n", stored.error)
    assert marker is not None
    kept = len(stored.error) - len(marker.group(0))
    assert int(marker.group(1)) + kept == len(message)  # says exactly how much went
    small = DeadLetterQueue(limits=Limits(max_error_bytes=2048))
    assert len((await small.enqueue("t", {}, error="e" * 5000)).error.encode()) <= 2048


async def test_a_failing_retry_keeps_its_error_bounded(dlq: DeadLetterQueue) -> None:
    dlq.default_callback = lambda task, repos: (_ for _ in ()).throw(ValueError("v" * 500_000))
    await dlq.enqueue("t", {}, error="first", retry_policy="immediate")
    result = await dlq.retry_task("t")
    assert result["success"] is False
    task = await dlq.get_task("t")
    assert task is not None
    assert task.last_error is not None
    assert len(task.last_error.encode()) <= 65_536
    assert task.last_error.endswith("v" * 100)


async def test_repos_count_toward_the_payload_bound(dlq: DeadLetterQueue) -> None:
    small = DeadLetterQueue(limits=Limits(max_payload_bytes=1024))
    with pytest.raises(PayloadTooLargeError, match="input, metadata and repos"):
        await small.enqueue("t", {}, ["r" * 600, "s" * 600], error="boom")


def test_cut_text_keeps_multibyte_characters_whole() -> None:
    text = "é" * 10_000 + "✓" * 10_000
    cut = cut_text(text, 4096)
    assert len(cut.encode()) <= 4096
    assert cut.startswith("é")
    assert cut.endswith("✓")
    assert cut_text("short", 4096) == "short"
    assert bound_text("a\udcffb", 4096) == "a\\udcffb"
    assert clean_text("plain ✓") == "plain ✓"


def test_check_tree_names_where() -> None:
    with pytest.raises(InvalidPayloadError, match=r"task\['a'\]\[2\]: 5 \(int\)"):
        check_tree("t", "task", {"a": [0, 1, {5: "x"}]}, 10)


# -- ids and arguments ---------------------------------------------------------------------


async def test_enqueue_many_hands_a_bad_id_back_in_its_place(dlq: DeadLetterQueue) -> None:
    results = await dlq.enqueue_many(
        [
            Failure(cast(Any, 17), {}),
            Failure(SURROGATE, {}),
            Failure("ok", {"k": {1: 2}}),
            Failure("fine", {}),
        ]
    )
    assert [type(r).__name__ for r in results] == [
        "InvalidPayloadError",
        "InvalidPayloadError",
        "InvalidPayloadError",
        "FailedTask",
    ]
    assert "task_id must be a string, got int" in str(results[0])
    assert [t.task_id for t in await dlq.list_tasks()] == ["fine"]


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"error_category": "bogus"}, ValueError, "error_category"),
        ({"status": "bogus"}, ValueError, "unknown status 'bogus'"),
        ({"limit": "10"}, TypeError, "limit must be an int"),
        ({"limit": 0}, ValueError, "limit must be between 1 and 10000"),
        ({"workflow": [SURROGATE]}, ValueError, "not valid Unicode"),
        ({"text": SURROGATE}, ValueError, "not valid Unicode"),
        ({"cursor": "W" * 5000}, ValueError, "cursor"),
        ({"cursor": 12}, TypeError, "cursor must be a string"),
    ],
)
async def test_bad_listing_arguments_name_the_field(
    dlq: DeadLetterQueue, arguments: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as caught:
        await dlq.list_tasks(**arguments)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)  # one line, not pydantic's report


async def test_a_deeply_nested_cursor_is_a_value_error(dlq: DeadLetterQueue) -> None:
    import base64  # noqa: PLC0415

    cursor = base64.urlsafe_b64encode(b"[" * 100_000).decode()
    with pytest.raises(ValueError, match="cursor"):
        await dlq.list_tasks(cursor=cursor)
    assert encode_cursor(1, "a")  # a good one still works
    assert await dlq.list_tasks(cursor=encode_cursor(1, "a")) == []


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({"rate_per_second": float("nan")}, ValueError),
        ({"rate_per_second": float("inf")}, ValueError),
        ({"rate_per_second": 0}, ValueError),
        ({"rate_per_second": "fast"}, TypeError),
        ({"limit": -1}, ValueError),
        ({"limit": 1.5}, TypeError),
    ],
)
async def test_bad_replay_arguments(
    dlq: DeadLetterQueue, arguments: dict[str, Any], error: type[Exception]
) -> None:
    await dlq.enqueue("t", {}, error="boom")
    with pytest.raises(error):
        await dlq.replay(**arguments)


async def test_a_tiny_replay_rate_paces_without_overflow(dlq: DeadLetterQueue) -> None:
    for n in range(2):
        await dlq.enqueue(f"t{n}", {}, error="boom")
    report = await dlq.replay(rate_per_second=0.000001)
    assert report.replayed == 2
    assert isinstance(dlq.clock, FakeClock)
    assert dlq.clock.slept == [pytest.approx(1_000_000.0)]


async def test_an_overflowing_purge_age_is_a_value_error(dlq: DeadLetterQueue) -> None:
    with pytest.raises(ValueError, match="older_than is too long"):
        await dlq.purge(older_than=timedelta(days=999_999_999))
    with pytest.raises(TypeError, match="older_than must be a timedelta or a datetime"):
        await dlq.purge(older_than=cast(Any, "30d"))


# -- 6. the caller's exception is always the one re-raised ---------------------------------


class NotesNotAListError(Exception):
    def __init__(self) -> None:
        super().__init__("notes are a tuple")
        self.__notes__ = ("frozen",)  # add_note refuses: __notes__ is not a list


class RefusesAttributesError(Exception):
    def __setattr__(self, name: str, value: Any) -> None:
        raise RuntimeError(f"no attribute {name} for you")


class HostileGetattrError(Exception):
    def __getattribute__(self, name: str) -> Any:
        if name in ("dlq_task_id", "dlq_error", "__notes__", "add_note", "retry_after"):
            raise RuntimeError(f"cannot read {name}")
        return super().__getattribute__(name)


class EverythingRaisesError(Exception):
    def __getattribute__(self, name: str) -> Any:
        if name.startswith("__") and name not in ("__class__", "__traceback__"):
            raise RuntimeError(f"no {name}")
        return object.__getattribute__(self, name)

    def __str__(self) -> str:
        raise RuntimeError("no str either")


@pytest.mark.parametrize(
    "error_type",
    [NotesNotAListError, RefusesAttributesError, HostileGetattrError, EverythingRaisesError],
)
async def test_the_callers_exception_comes_back_unchanged(
    dlq: DeadLetterQueue, error_type: type[Exception]
) -> None:
    raised = error_type()

    async def workflow(task: dict[str, Any], repos: list[str]) -> None:
        raise raised

    with pytest.raises(error_type) as caught:
        await dlq.execute_with_dlq(workflow, {"n": 1}, task_id="hostile")
    assert caught.value is raised
    assert type(caught.value) is error_type
    stored = await dlq.get_task("hostile")
    assert stored is not None  # captured all the same, with what could be read
    assert stored.error_type.endswith(error_type.__name__)


# -- 7. classifier rules are bounded -------------------------------------------------------


def test_regex_rules_read_the_same_bounded_prefix_as_keywords() -> None:
    rule = ClassifierRule(category=ErrorCategory.TRANSIENT, pattern=r"timeout.*retry")
    classifier = ErrorClassifier([rule], use_keywords=False)
    assert classifier.classify("timeout, please retry") is ErrorCategory.TRANSIENT
    far = "timeout " + "x" * 5000 + " retry"  # 'retry' past the first 4096 characters
    assert classifier.classify(far) is ErrorCategory.PERMANENT
    huge = "timeout " + "x" * 256_000  # backtracking over it would take seconds
    assert classifier.classify(huge) is ErrorCategory.PERMANENT


# -- found by the property suite, pinned here too -------------------------------------------


@pytest.mark.parametrize("seconds", [float("inf"), 1e12])
async def test_a_deferral_no_calendar_holds_never_leaves_the_lease_held(
    dlq: DeadLetterQueue, seconds: float
) -> None:
    async def defers(task: dict[str, Any], repos: list[str]) -> None:
        raise RetryAfter(seconds)

    dlq.default_callback = defers
    await dlq.enqueue("t", {}, error="boom", retry_policy="immediate")
    await dlq.retry_task("t")
    task = await dlq.get_task("t")
    assert task is not None
    assert task.lease_owner is None
    assert task.status in (DeadLetterStatus.PENDING, DeadLetterStatus.EXHAUSTED)
    with pytest.raises(ValueError, match="must be >= 0"):
        RetryAfter(float("nan"))


class _Headers(Mapping[str, str]):
    def __getitem__(self, key: str) -> str:
        raise RuntimeError("headers cannot be read")

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 1


class UnreadableHeadersError(Exception):
    def __init__(self) -> None:
        super().__init__("throttled by the API")
        self.response = type("Response", (), {"headers": _Headers()})()


class _Module:
    def __str__(self) -> str:
        raise RuntimeError("no module")

    __format__ = __str__  # type: ignore[assignment]


async def test_unreadable_parts_of_an_exception_keep_the_rest(dlq: DeadLetterQueue) -> None:
    stored = await dlq.enqueue("headers", {}, error=UnreadableHeadersError())
    assert stored.error == "throttled by the API"  # the unreadable hint cost nothing else
    odd = type("OddModuleError", (Exception,), {"__module__": _Module()})
    stored = await dlq.enqueue("module", {}, error=odd("boom"))
    assert stored.error_type == "OddModuleError"
    named = type("BadName", (Exception,), {"__qualname__": "Bad\udcffName"})
    stored = await dlq.enqueue("surrogate", {}, error=named("boom"))
    assert stored.error_type.endswith("Bad\\udcffName")
    assert json.dumps(stored.to_dict(), ensure_ascii=False).encode()


class _LoudStr(str):
    def __str__(self) -> str:
        raise RuntimeError("never asked")


async def test_a_str_subclass_is_read_by_its_characters(dlq: DeadLetterQueue) -> None:
    stored = await dlq.enqueue("t", {}, [_LoudStr("repo")], error=_LoudStr("the error"))
    assert (stored.error, stored.repos) == ("the error", ["repo"])
    assert (await dlq.enqueue("none", {}, error=cast(Any, None))).error == ""
    with pytest.raises(InvalidPayloadError, match="workflow must be a string"):
        await dlq.enqueue("zero", {}, error="boom", workflow=cast(Any, 0))


class AnswersEverythingError(Exception):
    def __getattr__(self, name: str) -> str:
        return f"<{name}>"


async def test_an_exception_answering_every_attribute_is_still_stored(
    dlq: DeadLetterQueue,
) -> None:
    async def workflow(task: dict[str, Any], repos: list[str]) -> None:
        raise AnswersEverythingError("boom")

    with pytest.raises(AnswersEverythingError):
        await dlq.execute_with_dlq(workflow, {}, task_id="any")
    assert await dlq.get_task("any") is not None


async def test_integers_past_1000_digits_are_refused_on_every_store(
    dlq: DeadLetterQueue,
) -> None:
    stored = await dlq.enqueue("ok", {"n": 10**999, "digits": "9" * 5000}, error="boom")
    assert stored.task["n"] == 10**999
    with pytest.raises(InvalidPayloadError, match=r"more than 1000 digits at task\['n'\]\[0\]"):
        await dlq.enqueue("big", {"n": [-(10**1000)]}, error="boom")


async def test_the_returned_record_shares_nothing_with_the_caller(dlq: DeadLetterQueue) -> None:
    items = [1, 2]
    stored = await dlq.enqueue("t", {"items": items, "pair": (1, 2)}, error="boom")
    items.append(3)
    assert stored.task == {"items": [1, 2], "pair": [1, 2]}  # as stored, tuples as lists
    assert stored == await dlq.get_task("t")


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"status": 5}, TypeError, "status must be a status or a list"),
        ({"status": b"pending"}, TypeError, "got bytes"),
        ({"error_category": 5}, ValueError, "error_category: must be one value or a list"),
        ({"workflow": {"a": 1}}, ValueError, "workflow: must be one value or a list"),
    ],
)
async def test_filter_arguments_of_the_wrong_kind_name_the_argument(
    dlq: DeadLetterQueue, arguments: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        await dlq.list_tasks(**arguments)


async def test_log_lines_stay_one_line_whatever_the_id(
    dlq: DeadLetterQueue, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="mahavishnu_dlq")
    forged = "t\r\n2026-01-01 INFO dlq.enqueue admin (forged)\x1b[2J\u202e"

    async def workflow(task: dict[str, Any], repos: list[str]) -> None:
        raise ConnectionError("down \x1b]52;c;cGF5bG9hZA==\x07 again")

    await dlq.enqueue(forged, {}, error="boom")
    with pytest.raises(ConnectionError):
        await dlq.execute_with_dlq(workflow, {}, task_id=forged + "-2", metadata=cast(Any, [1]))
    messages = [record.getMessage() for record in caplog.records]
    assert any("forged" in message for message in messages)
    for message in messages:
        assert "\n" not in message
        assert "\r" not in message
        assert not any(ord(char) in UNSAFE for char in message)


class SlowDownError(Exception):
    retry_after = 1e12  # a hint far beyond the calendar's end from a late clock


async def test_late_in_the_calendar_nothing_overflows() -> None:
    late = datetime(9990, 1, 1, tzinfo=timezone.utc)
    century = PolicyOverride(deadline=100 * 365 * 86400.0)  # past the year 9999: no deadline
    dlq = DeadLetterQueue(clock=FakeClock(late), policies=PolicyBook(by_workflow={"wf": century}))
    hinted = await dlq.enqueue("a", {}, error=SlowDownError("429"), retry_policy="immediate")
    assert hinted.status is DeadLetterStatus.EXHAUSTED  # its retry would fall after 9999
    scheduled = await dlq.enqueue("b", {}, error="x", workflow="wf", retry_policy="exponential")
    assert scheduled.next_retry_at == late + timedelta(minutes=1)

    async def slows(task: dict[str, Any], repos: list[str]) -> None:
        raise SlowDownError("still 429")

    dlq.register_handler("wf", slows)
    result = await dlq.retry_task("b")
    assert result["success"] is False
    task = await dlq.get_task("b")
    assert task is not None
    assert (task.status, task.lease_owner) == (DeadLetterStatus.EXHAUSTED, None)
    assert task.last_error == "still 429"  # exhausted: its next retry would pass the year 9999


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"text": b"x"}, "text: must be a string, got bytes"),
        ({"fingerprint": 3}, "fingerprint: must be a string, got int"),
        ({"since": "0"}, "since: must be a timezone-aware datetime, got str"),
    ],
)
async def test_filter_values_must_be_of_their_own_type(
    dlq: DeadLetterQueue, arguments: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        await dlq.list_tasks(**arguments)


async def test_a_lease_taken_at_the_end_of_the_calendar_ends_with_it() -> None:
    end = datetime(9999, 12, 31, 23, 55, tzinfo=timezone.utc)  # a 600 s lease would overflow
    dlq = DeadLetterQueue(clock=FakeClock(end))
    dlq.register_handler("wf", lambda task, repos: "ok")
    await dlq.enqueue("a", {}, error="x", workflow="wf", retry_policy="immediate")
    assert (await dlq.retry_task("a"))["success"] is True
    await dlq.enqueue("b", {}, error="x", workflow="wf", retry_policy="immediate")
    assert await RetryProcessor(dlq).run_once() == 1
    assert (await dlq.get_task("b")).status is DeadLetterStatus.COMPLETED  # type: ignore[union-attr]
