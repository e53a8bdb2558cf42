"""The failure context and the traceback captured with every failure.

``format_traceback`` is compared with what Python itself prints
(``traceback.format_exception``) for exceptions raised through real functions of
this file, with only the caret lines (``^^^`` / ``~~~``, Python 3.11+) removed.
``failure_context_json`` is checked against the process it runs in and against
an OpenTelemetry SDK span.
"""

from __future__ import annotations

import builtins
import json
import os
import platform
import re
import socket
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

import mahavishnu_dlq
from mahavishnu_dlq.context import (
    _forget_process,
    failure_context,
    failure_context_json,
    format_traceback,
)

CARET_LINE = re.compile(r"\s*[~^]+\s*")


def python_format(error: BaseException) -> str:
    """What Python prints for ``error``, without the caret-only lines."""
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    return without_carets(text)


def without_carets(text: str) -> str:
    return "".join(
        line for line in text.splitlines(keepends=True) if not CARET_LINE.fullmatch(line)
    )


def formatted(error: BaseException) -> str:
    text = format_traceback(error)
    assert text is not None
    return text


def capture(fn: Callable[[], object]) -> BaseException:
    """The exception ``fn()`` raises, caught (it carries its traceback)."""
    try:
        fn()
    except BaseException as caught:
        return caught
    raise AssertionError(f"{fn!r} did not raise")


# -- functions that fail, in a real file ---------------------------------------------------


class OrderError(Exception):
    """Defined outside builtins: Python names it with its module."""


class Outer:
    class NestedError(Exception):
        """Named by its qualified name."""


class BrokenStrError(Exception):
    def __str__(self) -> str:
        raise RuntimeError("__str__ is broken")


def _level_three(n: int) -> None:
    raise OrderError(f"order {n} failed")


def _level_two(n: int) -> None:
    _level_three(n + 1)


def _level_one(n: int) -> None:
    _level_two(n + 1)


def _plain() -> None:
    _level_one(1)


def _with_cause() -> None:
    try:
        _level_one(1)
    except OrderError as exc:
        raise RuntimeError("could not charge the order") from exc


def _with_context() -> None:
    try:
        _level_one(1)
    except OrderError:
        _lookup({}, "missing")


def _lookup(mapping: dict[str, int], key: str) -> int:
    return mapping[key]


def _with_suppressed_context() -> None:
    try:
        _level_one(1)
    except OrderError:
        raise ValueError("replaced, context hidden") from None


def _cause_and_context() -> None:
    try:
        _lookup({}, "first")
    except KeyError:
        try:
            _level_one(2)
        except OrderError as exc:
            raise RuntimeError("explicit cause wins over the context") from exc


def _three_causes() -> None:
    try:
        _with_cause()
    except RuntimeError as exc:
        raise ConnectionError("the run failed") from exc


def _cause_never_raised() -> None:
    raise RuntimeError("outer") from ValueError("this one was never raised")


def _empty_message() -> None:
    raise OrderError


def _nested_class() -> None:
    raise Outer.NestedError("inner")


def _broken_str() -> None:
    _raise(BrokenStrError())


def _raise(error: BaseException) -> None:
    raise error


def _recurse(n: int) -> int:
    return _recurse(n + 1) + 1


def _countdown(n: int) -> None:
    if n == 0:
        raise OrderError("bottom reached")
    _countdown(n - 1)


def _ping(n: int) -> None:
    if n == 0:
        raise OrderError("ping-pong over")
    _pong(n - 1)


def _pong(n: int) -> None:
    _ping(n)


def _syntax_error() -> None:
    compile("x = (", "<t>", "exec")


def _from_exec() -> None:
    namespace: dict[str, Any] = {}
    exec("def f():\n    raise KeyError('no source file')\n", namespace)  # noqa: S102
    namespace["f"]()


# -- format_traceback is Python's format without the carets --------------------------------

CASES: dict[str, Callable[[], object]] = {
    "plain": _plain,
    "cause": _with_cause,
    "context": _with_context,
    "suppressed-context": _with_suppressed_context,
    "cause-and-context": _cause_and_context,
    "three-causes": _three_causes,
    "cause-never-raised": _cause_never_raised,
    "empty-message": _empty_message,
    "nested-class": _nested_class,
    "builtin-error": lambda: _lookup({}, "k"),
    "no-source-file": _from_exec,
    "countdown-3": lambda: _countdown(3),
    "countdown-4": lambda: _countdown(4),
    "countdown-5": lambda: _countdown(5),
    "countdown-40": lambda: _countdown(40),
    "ping-pong": lambda: _ping(10),
}


@pytest.mark.parametrize("make", CASES.values(), ids=CASES.keys())
def test_format_equals_pythons_without_carets(make: Callable[[], object]) -> None:
    error = capture(make)
    assert formatted(error) == python_format(error)


def test_the_plain_case_looks_as_expected() -> None:
    error = capture(_plain)
    text = formatted(error)
    lines = text.splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert lines[-1] == "tests.unit.test_context.OrderError: order 3 failed"
    assert [line.strip() for line in lines if line.startswith("    ")] == [
        "fn()",
        "_level_one(1)",
        "_level_two(n + 1)",
        "_level_three(n + 1)",
        'raise OrderError(f"order {n} failed")',
    ]
    assert not any(CARET_LINE.fullmatch(line) for line in lines)


def test_cause_context_and_suppression_are_told_apart() -> None:
    cause = formatted(capture(_with_cause))
    assert "The above exception was the direct cause of the following exception:" in cause
    assert cause.index("OrderError: order 3 failed") < cause.index("RuntimeError: could not")
    context = formatted(capture(_with_context))
    assert "During handling of the above exception, another exception occurred:" in context
    assert context.rstrip().endswith("KeyError: 'missing'")
    suppressed = formatted(capture(_with_suppressed_context))
    assert "OrderError" not in suppressed
    assert suppressed.count("Traceback (most recent call last):") == 1


def test_a_recursion_error_is_folded_like_python() -> None:
    error = capture(lambda: _recurse(0))
    assert isinstance(error, RecursionError)
    text = formatted(error)
    assert text == python_format(error)
    folded = re.findall(r"\[Previous line repeated (\d+) more times\]", text)
    assert len(folded) == 1
    assert int(folded[0]) > 100
    assert len(text.splitlines()) < 50


def test_four_repeats_fold_one_more_time_singular() -> None:
    text = formatted(capture(lambda: _countdown(4)))
    assert "  [Previous line repeated 1 more time]\n" in text


@pytest.mark.skipif(sys.version_info < (3, 11), reason="add_note is Python 3.11+")
def test_notes_are_printed_like_python() -> None:
    if sys.version_info >= (3, 11):
        error = capture(_with_cause)
        error.add_note("first note")
        error.add_note("a note\nover two lines")
        assert error.__cause__ is not None
        error.__cause__.add_note("a note on the cause")
        text = formatted(error)
        assert text == python_format(error)
        assert text.endswith(
            "RuntimeError: could not charge the order\nfirst note\na note\nover two lines\n"
        )
        assert "a note on the cause\n" in text


def test_notes_that_are_not_strings_are_printed_like_python() -> None:
    """``traceback`` prints a note that is not a string with ``str()`` (3.11+)."""

    class Ticket:
        def __str__(self) -> str:
            return "ticket OPS-7"

        def __repr__(self) -> str:
            return "Ticket()"

    error = capture(_plain)
    error.__notes__ = ["a string note", Ticket(), 42]  # type: ignore[attr-defined]
    text = formatted(error)
    if sys.version_info >= (3, 11):
        assert text == python_format(error)
    assert text.endswith("a string note\nticket OPS-7\n42\n")


def test_a_never_raised_exception_has_no_traceback() -> None:
    assert format_traceback(ValueError("never raised")) is None
    unraised = RuntimeError("outer, never raised")
    unraised.__cause__ = capture(_plain)
    assert format_traceback(unraised) is None


def test_an_exception_whose_str_fails_is_still_formatted() -> None:
    error = capture(_broken_str)
    text = formatted(error)
    last = text.splitlines()[-1]
    assert last == "tests.unit.test_context.BrokenStrError: <exception str() failed>"
    assert text == python_format(error)
    assert "_raise(BrokenStrError())" in text


def test_a_syntax_error_is_formatted_like_python() -> None:
    error = capture(_syntax_error)
    assert isinstance(error, SyntaxError)
    text = formatted(error)
    assert without_carets(text) == python_format(error)
    # the SyntaxError's own layout, its caret under the offending code included
    only = "".join(traceback.format_exception_only(type(error), error))
    assert text.endswith(only)
    assert '  File "<t>", line 1\n' in only
    assert "x = (" in only
    assert text.splitlines()[-1] == python_format(error).splitlines()[-1]


@pytest.mark.skipif(sys.version_info < (3, 11), reason="ExceptionGroup is Python 3.11+")
def test_an_exception_group_falls_back_to_python_exactly() -> None:
    if sys.version_info >= (3, 11):

        def _group() -> None:
            errors = [capture(_plain), capture(lambda: _lookup({}, "k"))]
            raise builtins.BaseExceptionGroup("two failures", errors)

        error = capture(_group)
        assert isinstance(error, builtins.ExceptionGroup)
        expected = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        assert format_traceback(error) == expected
        assert "| tests.unit.test_context.OrderError: order 3 failed" in expected

        # a group anywhere in the chain: the whole chain is left to Python
        def _caused_by_group() -> None:
            try:
                _group()
            except builtins.ExceptionGroup as group:
                raise RuntimeError("batch failed") from group

        chained = capture(_caused_by_group)
        assert format_traceback(chained) == "".join(
            traceback.format_exception(type(chained), chained, chained.__traceback__)
        )


def _cyclic(link: str) -> BaseException:
    """Two raised exceptions chained to each other in a cycle through ``link``."""
    try:
        try:
            _level_one(1)
        except OrderError as first:
            raise RuntimeError("second") from (first if link == "__cause__" else None)
    except RuntimeError as second:
        first_error = second.__cause__ if link == "__cause__" else second.__context__
        if link == "__context__":
            second.__suppress_context__ = False
        assert first_error is not None
        setattr(first_error, link, second)
        return second
    raise AssertionError("unreachable")  # pragma: no cover


@pytest.mark.parametrize("link", ["__context__", "__cause__"])
def test_a_cyclic_chain_terminates(link: str) -> None:
    error = _cyclic(link)
    text = formatted(error)
    assert text.count("RuntimeError: second") == 1
    assert text.count("OrderError: order 3 failed") == 1
    assert text.rstrip().endswith("RuntimeError: second")


@pytest.mark.parametrize("link", ["__context__", "__cause__"])
def test_a_cyclic_chain_is_formatted_like_python(link: str) -> None:
    error = _cyclic(link)
    text = formatted(error)
    assert text.startswith("Traceback (most recent call last):\n")
    assert text == python_format(error)


# -- failure_context_json ------------------------------------------------------------------


@pytest.fixture
def fresh_process() -> Iterator[None]:
    """The static part described anew before and after the test."""
    _forget_process()
    yield
    _forget_process()


def test_the_context_describes_this_process(fresh_process: None) -> None:
    before = time.monotonic()
    ctx, text = failure_context_json()
    assert json.loads(text) == ctx
    assert list(ctx) == ["host", "pid", "python", "mahavishnu_dlq", "uptime_seconds"]
    assert ctx["host"] == socket.gethostname()
    assert ctx["pid"] == os.getpid()
    assert ctx["python"] == platform.python_version()
    assert ctx["mahavishnu_dlq"] == mahavishnu_dlq.__version__
    assert isinstance(ctx["uptime_seconds"], float)
    assert 0 <= ctx["uptime_seconds"] <= before + 1  # seconds since the import, rounded
    assert " " not in text.replace(ctx["host"], "")  # compact JSON
    assert failure_context() == {**ctx, "uptime_seconds": failure_context()["uptime_seconds"]}


def test_each_call_gives_a_new_dict(fresh_process: None) -> None:
    first, first_text = failure_context_json()
    second, _ = failure_context_json()
    assert first is not second
    first["host"] = "changed by a caller"
    first["added"] = True
    third, third_text = failure_context_json()
    assert third["host"] == socket.gethostname()
    assert "added" not in third
    assert json.loads(third_text) == third
    assert json.loads(first_text)["host"] == socket.gethostname()
    assert third["uptime_seconds"] >= second["uptime_seconds"]
    assert failure_context() is not failure_context()


def test_the_static_part_is_kept_until_forgotten(
    fresh_process: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_host = socket.gethostname()
    failure_context_json()  # described now
    monkeypatch.setattr(socket, "gethostname", lambda: "renamed-host")
    ctx, text = failure_context_json()
    assert ctx["host"] == real_host
    assert json.loads(text)["host"] == real_host
    _forget_process()
    ctx, text = failure_context_json()
    assert ctx["host"] == "renamed-host"
    assert json.loads(text) == ctx
    assert ctx["pid"] == os.getpid()
    assert ctx["python"] == platform.python_version()


def test_an_opentelemetry_span_adds_its_ids(fresh_process: None) -> None:
    provider = TracerProvider()
    tracer = provider.get_tracer(__name__)
    try:
        with tracer.start_as_current_span("failing-run") as span:
            ctx, text = failure_context_json()
            span_context = span.get_span_context()
            with tracer.start_as_current_span("inner") as inner:
                inner_ctx, inner_text = failure_context_json()
                inner_context = inner.get_span_context()
    finally:
        provider.shutdown()
    assert ctx["trace_id"] == format(span_context.trace_id, "032x")
    assert ctx["span_id"] == format(span_context.span_id, "016x")
    assert json.loads(text) == ctx
    assert list(ctx)[-2:] == ["trace_id", "span_id"]
    assert inner_ctx["trace_id"] == ctx["trace_id"]
    assert inner_ctx["span_id"] == format(inner_context.span_id, "016x")
    assert inner_ctx["span_id"] != ctx["span_id"]
    assert json.loads(inner_text) == inner_ctx
    # no span any more: no ids
    after, after_text = failure_context_json()
    assert "trace_id" not in after
    assert "span_id" not in after
    assert json.loads(after_text) == after
