"""The failure context captured with every failure.

When a workflow fails, the record keeps where and when it failed — host, pid,
process uptime, Python and package versions, and the trace id of the failing
run when OpenTelemetry is in use (trace and span id, which retry spans link
to) — under ``metadata["failure_context"]``. The
static part is computed once per process; only the uptime and trace id change.
"""

from __future__ import annotations

import os
import platform
import socket
import time
from functools import cache
from typing import Any

__all__ = ["current_span_ids", "current_trace_id", "failure_context"]

_STARTED = time.monotonic()


@cache
def _static() -> dict[str, Any]:
    from mahavishnu_dlq import __version__  # noqa: PLC0415 - avoid an import cycle

    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "python": platform.python_version(),
        "mahavishnu_dlq": __version__,
    }


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
    ctx = dict(_static())
    if ctx["pid"] != os.getpid():  # forked: the cached pid belongs to the parent
        _static.cache_clear()
        ctx = dict(_static())
    ctx["uptime_seconds"] = round(time.monotonic() - _STARTED, 3)
    ids = current_span_ids()
    if ids is not None:  # retries link their spans to this one
        ctx["trace_id"], ctx["span_id"] = ids
    return ctx
