"""The pages' templates: one Jinja2 environment, autoescaped, and what every page gets.

Each page is a template under ``templates/`` extending ``base.html``; :func:`page`
renders one with the globals of its request: ``url('/tasks')`` and
``static('app.css')`` (with a ``?v=`` that changes with the file) relative to the
mount point (``root_path``), ``task_href(id)``, ``group_href(fingerprint)`` and
``job_href(id)`` with the ids percent-encoded, the principal and its CSRF token,
and the flash message. Stored text (ids, errors, tracebacks, payloads) is data:
it reaches a page only through autoescaping — no template marks data ``|safe``,
and the scripts set text with ``textContent``.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import Request
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.responses import HTMLResponse, Response

from mahavishnu_dlq import __version__
from mahavishnu_dlq.printable import library_logger

from .auth import SESSION_COOKIE, Principal
from .ids import task_url

__all__ = ["error_page", "page", "root_of"]

_HERE = Path(__file__).parent
_STATIC = _HERE / "static"
_log = library_logger("mahavishnu_dlq.web")

_ENV = Environment(
    loader=FileSystemLoader(_HERE / "templates"),
    autoescape=select_autoescape(["html"], default_for_string=True, default=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    auto_reload=False,
)


def root_of(request: Request) -> str:
    """The mount point of the app serving ``request`` ("" at the top, "/dlq" mounted)."""
    root: str = request.scope.get("root_path", "")
    return root.rstrip("/")


@cache
def _fingerprint(name: str) -> str:
    """A short hash of a static file: its URL changes when it does."""
    try:
        data = (_STATIC / name).read_bytes()
    except OSError:
        return "missing"
    return hashlib.sha256(data).hexdigest()[:10]


# -- filters --------------------------------------------------------------------------


def number(value: float | None) -> str:
    """``1234`` as ``1,234``; a float with at most two decimals; None as an em dash."""
    if value is None:
        return "—"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.2f}"
    return f"{int(value):,}"


def iso(value: datetime | None) -> str:
    """A time as ISO 8601 in UTC (``2026-01-31T12:00:05Z``)."""
    if value is None:
        return ""
    utc = value.astimezone(timezone.utc)
    text = utc.isoformat(timespec="milliseconds" if utc.microsecond else "seconds")
    return text.replace("+00:00", "Z")


def clock(value: datetime | None) -> str:
    """A time as people read it: ``2026-01-31 12:00:05 UTC``."""
    if value is None:
        return "—"
    return f"{value.astimezone(timezone.utc):%Y-%m-%d %H:%M:%S} UTC"


def duration(seconds: float | None) -> str:
    """``3725`` as ``1h 2m``; ``0.4`` as ``400 ms``; None as an em dash."""
    if seconds is None or not math.isfinite(seconds):
        return "—"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")]
    shown = [f"{amount}{unit}" for amount, unit in parts if amount][:2]
    return " ".join(shown)


def ago(value: datetime | None, now: datetime) -> str:
    """``value`` relative to ``now``, in its largest unit: ``5m ago``, ``in 2h``, ``just now``."""
    if value is None:
        return ""
    seconds = (now - value).total_seconds()
    if abs(seconds) < 5:
        return "just now"
    size, unit = next((s, u) for s, u in _UNITS if abs(seconds) >= s)
    text = f"{int(abs(seconds) // size)}{unit}"
    return f"{text} ago" if seconds > 0 else f"in {text}"


_UNITS = ((86400, "d"), (3600, "h"), (60, "m"), (1, "s"))


def pretty_json(value: Any) -> str:
    """Indented JSON text (escaped where it is rendered, like any data)."""
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def percent(value: float | None) -> str:
    """``0.4567`` as ``45.7%``."""
    if value is None:
        return "—"
    return f"{value * 100:.1f}%"


def cut(value: str | None, chars: int = 120) -> str:
    """``value`` on one line, at most ``chars`` characters (… when cut)."""
    if not value:
        return ""
    line = " ".join(value.split())
    return line if len(line) <= chars else line[: chars - 1] + "…"


_ENV.filters.update(
    number=number,
    iso=iso,
    clock=clock,
    duration=duration,
    ago=ago,
    pretty_json=pretty_json,
    percent=percent,
    cut=cut,
)


# -- per request ----------------------------------------------------------------------


def _globals(request: Request, principal: Principal | None) -> dict[str, Any]:
    root = root_of(request)

    def url(path: str, query: Mapping[str, Any] | list[tuple[str, str]] | None = None) -> str:
        """``path`` under the mount point, with ``query`` (pairs or a mapping) encoded."""
        href = f"{root}{path}"
        if query:
            items = list(query.items()) if isinstance(query, Mapping) else list(query)
            encoded = urlencode([(k, v) for k, v in items if v not in (None, "")], doseq=True)
            if encoded:
                href += f"?{encoded}"
        return href

    def static(name: str) -> str:
        return f"{root}/static/{name}?v={__version__}.{_fingerprint(name)}"

    return {
        "url": url,
        "static": static,
        "task_href": lambda task_id, suffix="": task_url(f"{root}/tasks/", task_id, suffix),
        "group_href": lambda fingerprint: task_url(f"{root}/groups/", fingerprint),
        "job_href": lambda job_id: f"{root}/jobs/{quote(job_id, safe='')}",
        "principal": principal,
        "csrf": (principal.csrf or "") if principal is not None else "",
        "can_act": principal is not None and principal.can_act,
        "version": __version__,
        "now": datetime.now(timezone.utc),
    }


def render(
    request: Request, template: str, principal: Principal | None, context: Mapping[str, Any]
) -> str:
    """The text of ``template`` with the request's globals and ``context``."""
    values = _globals(request, principal)
    values.update(context)
    return _ENV.get_template(template).render(values)


def page(
    request: Request,
    template: str,
    principal: Principal | None,
    *,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    **context: Any,
) -> HTMLResponse:
    """A page: ``template`` rendered for ``principal`` (None on the sign-in page)."""
    context.setdefault("active", "")
    context.setdefault("flash", None)
    return HTMLResponse(
        render(request, template, principal, context),
        status_code=status,
        headers=dict(headers or {}),
    )


_TITLES = {
    400: "That request cannot be done",
    403: "Not allowed",
    404: "Not found",
    405: "Not allowed here",
    409: "Conflict",
    413: "Too large",
    500: "Something went wrong",
    503: "The store cannot be reached",
}
#: titles of error types whose status says too little
_TYPE_TITLES = {"store_not_found": "The store was not found"}


def _session_principal(request: Request) -> Principal | None:
    """The signed-in browser's principal, for the header of an error page (no errors)."""
    cookie = request.cookies.get(SESSION_COOKIE)
    console = getattr(request.app.state, "dlq_web", None)
    if not cookie or console is None:
        return None
    found: Principal | None = console.tokens.from_session(cookie)
    return found


def error_page(
    request: Request, status: int, type_: str, message: str, headers: Mapping[str, str] | None
) -> Response:
    """A short HTML page for a refused page request (the layout without the data)."""
    context = {
        "code": status,
        "error_type": type_,
        "message": message,
        "title": _TYPE_TITLES.get(type_) or _TITLES.get(status, "Request refused"),
    }
    try:
        who = _session_principal(request)
        return page(request, "error.html", who, status=status, headers=headers, **context)
    except Exception as exc:  # noqa: BLE001 - the error page must answer whatever happens
        _log.warning("the error page could not be rendered: %s", type(exc).__name__)
        from html import escape  # noqa: PLC0415 - only on this path

        body = (
            f"<!doctype html><title>{status}</title><h1>{status} {escape(type_)}</h1>"
            f"<p>{escape(message)}</p>"
        )
        return HTMLResponse(body, status_code=status, headers=dict(headers or {}))
