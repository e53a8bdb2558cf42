"""The failure context captured with every failure.

When a workflow fails, the record keeps where and when it failed — host, pid,
process uptime, Python and package versions, and the trace id of the failing
run when OpenTelemetry is in use (trace and span id, which retry spans link
to) — under ``metadata["failure_context"]``. The
static part is computed once per process; only the uptime and trace id change.
:func:`failure_context_json` gives the same context with its compact JSON, the
static part encoded once per process too.

:func:`format_traceback` formats an exception's traceback the way Python 3.10
did (the chain of causes, one source line per frame, repeated frames folded),
without the caret lines Python 3.11 adds: those re-parse every frame's source and
made formatting most of the cost of capturing a failure.
"""

from __future__ import annotations

import builtins
import linecache
import os
import platform
import socket
import time
import traceback
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

from mahavishnu_dlq.models import encode_json

__all__ = [
    "current_span_ids",
    "current_trace_id",
    "exception_message",
    "failure_context",
    "failure_context_json",
    "format_traceback",
]

_STARTED = time.monotonic()


def _describe_process() -> tuple[dict[str, Any], str]:
    """The static part of the context and its compact JSON without the closing brace."""
    from mahavishnu_dlq import __version__  # noqa: PLC0415 - avoid an import cycle

    static = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "python": platform.python_version(),
        "mahavishnu_dlq": __version__,
    }
    return static, encode_json(static)[:-1]


_process: tuple[dict[str, Any], str] | None = None


def _forget_process() -> None:
    global _process  # noqa: PLW0603 - a per-process cache, reset in a forked child
    _process = None


if hasattr(os, "register_at_fork"):  # a forked child describes itself, not its parent
    os.register_at_fork(after_in_child=_forget_process)


def _current_process() -> tuple[dict[str, Any], str]:
    global _process  # noqa: PLW0603 - a per-process cache, reset in a forked child
    if _process is None:
        _process = _describe_process()
    return _process


_trace: Any
try:
    from opentelemetry import trace as _trace
except ImportError:  # pragma: no cover - the otel extra is not installed
    _trace = None


def current_span_ids() -> tuple[str, str] | None:
    """(trace id, span id) of the current OpenTelemetry span, hex, if there is one."""
    if _trace is None:  # pragma: no cover - the otel extra is not installed
        return None
    context = _trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def current_trace_id() -> str | None:
    """The trace id of the current OpenTelemetry span, if there is a valid one."""
    ids = current_span_ids()
    return None if ids is None else ids[0]


def failure_context() -> dict[str, Any]:
    """Where this failure happened (a new dict each call)."""
    return failure_context_json()[0]


def failure_context_json() -> tuple[dict[str, Any], str]:
    """Where this failure happened: a new dict, and its compact JSON."""
    static, head = _process or _current_process()
    ctx = static.copy()
    uptime = round(time.monotonic() - _STARTED, 3)
    ctx["uptime_seconds"] = uptime
    ids = current_span_ids()
    if ids is None:
        return ctx, f'{head},"uptime_seconds":{uptime!r}}}'
    # retries link their spans to this one; the ids are hex digits
    ctx["trace_id"], ctx["span_id"] = ids
    trace = f'"trace_id":"{ids[0]}","span_id":"{ids[1]}"'
    return ctx, f'{head},"uptime_seconds":{uptime!r},{trace}}}'


_CAUSE = "\nThe above exception was the direct cause of the following exception:\n\n"
_CONTEXT = "\nDuring handling of the above exception, another exception occurred:\n\n"
_GROUPS: tuple[type[BaseException], ...] = tuple(
    group for group in (getattr(builtins, "BaseExceptionGroup", None),) if group is not None
)  # Python 3.11+
_REPEATS_SHOWN = 3  # identical consecutive frames shown before they are folded


def format_traceback(error: BaseException) -> str | None:
    """The traceback of ``error`` and its causes as Python prints it, without carets.

    None when ``error`` was never raised. Exception groups are left to
    :func:`traceback.format_exception` (their nested layout is its own).
    """
    if error.__traceback__ is None:
        return None
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None:
        if isinstance(current, _GROUPS):
            return "".join(traceback.format_exception(type(error), error, error.__traceback__))
        seen.add(id(current))
        block = _exception_only(current)
        if current.__traceback__ is not None:
            block = [
                "Traceback (most recent call last):\n",
                *_frames(current.__traceback__),
                *block,
            ]
        parts.append("".join(block))
        if current.__cause__ is not None:
            separator, current = _CAUSE, current.__cause__
        elif current.__context__ is not None and not current.__suppress_context__:
            separator, current = _CONTEXT, current.__context__
        else:
            break
        if id(current) in seen:  # a cycle: Python stops here too
            break
        parts.append(separator)
    return "".join(reversed(parts))


def _exception_only(error: BaseException) -> list[str]:
    """``Type: message`` and any notes, as :func:`traceback.format_exception_only` (which
    would also walk the whole chain of causes, to throw that work away)."""
    if isinstance(error, SyntaxError):  # its own layout (the offending line and a caret)
        return traceback.format_exception_only(type(error), error)
    cls = type(error)
    name = cls.__qualname__
    if cls.__module__ not in ("__main__", "builtins"):
        name = f"{cls.__module__}.{name}"
    message = exception_message(error)
    lines = [f"{name}: {message}\n" if message else f"{name}\n"]
    notes = getattr(error, "__notes__", None)
    if isinstance(notes, Sequence) and not isinstance(notes, (str, bytes)):
        lines.extend(f"{_safe(str, note, 'note')}\n" for note in notes)
    elif notes is not None:
        lines.append(f"{_safe(repr, notes, '__notes__')}\n")
    return lines


def exception_message(error: BaseException) -> str:
    """``str(error)``, or ``<exception str() failed>`` when its ``__str__`` raises."""
    return _safe(str, error, "exception")


def _safe(render: Callable[[Any], str], value: Any, what: str) -> str:
    try:
        return render(value)
    except Exception:  # noqa: BLE001 - a broken __str__ must not lose the failure
        return f"<{what} {render.__name__}() failed>"


def _frames(tb: TracebackType | None) -> list[str]:
    lines: list[str] = []
    last: tuple[str, int, str] | None = None
    repeats = 0
    while tb is not None:
        code = tb.tb_frame.f_code
        lineno = tb.tb_lineno
        key = (code.co_filename, lineno, code.co_name)
        if key == last:
            repeats += 1
        else:
            lines.extend(_folded(repeats))
            last, repeats = key, 1
        if repeats <= _REPEATS_SHOWN:
            line = linecache.getline(code.co_filename, lineno, tb.tb_frame.f_globals).strip()
            lines.append(f'  File "{code.co_filename}", line {lineno}, in {code.co_name}\n')
            if line:
                lines.append(f"    {line}\n")
        tb = tb.tb_next
    lines.extend(_folded(repeats))
    return lines


def _folded(repeats: int) -> list[str]:
    hidden = repeats - _REPEATS_SHOWN
    if hidden <= 0:
        return []
    return [f"  [Previous line repeated {hidden} more time{'s' if hidden > 1 else ''}]\n"]
