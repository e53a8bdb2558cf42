"""The server-rendered pages: sign-in, the overview, and the routers of the others.

Every page is a GET that reads (a viewer's session is enough; without one the
browser is sent to ``/login?next=…``); every change is a POST form carrying the
session's CSRF token, checked by :func:`~mahavishnu_dlq.web.auth.operator`, and
answered with a redirect (303) to a page saying what happened, or with a page
of outcomes. Viewers get no action form at all. The task pages live in
:mod:`.task_pages`, the groups and jobs in :mod:`.job_pages`, the API reference
in :mod:`.docs`; the templates are rendered by :mod:`.render`.
"""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlsplit

import anyio
from fastapi import APIRouter, Depends, Request
from starlette.responses import RedirectResponse, Response

from mahavishnu_dlq.printable import library_logger
from mahavishnu_dlq.queue import DeadLetterQueue
from mahavishnu_dlq.settings.web import WebToken

from . import docs, job_pages, task_pages
from .app import Console, queue
from .auth import (
    SESSION_COOKIE,
    Principal,
    audit,
    check_same_origin,
    csrf_checked,
    optional_principal,
    read_form,
    viewer,
)
from .chart import failure_chart
from .page_data import flash_message
from .render import page, root_of

__all__ = ["router"]

_log = library_logger("mahavishnu_dlq.web")
router = APIRouter(include_in_schema=False)
Queue = Annotated[DeadLetterQueue, Depends(queue)]
Viewer = Annotated[Principal, Depends(viewer)]
_TOKEN_CHARS = 512


def _console(request: Request) -> Console:
    console: Console = request.app.state.dlq_web
    return console


def local_target(target: str | None) -> str:
    """``target`` when it is a path of this app (``/tasks?x=1``), else ``/``: never
    another site (``//evil``, ``http://…``, ``/\\evil``) nor a control character."""
    if not target or not target.startswith("/") or target.startswith("//"):
        return "/"
    if "\\" in target or any(ord(c) < 0x20 or ord(c) == 0x7F for c in target):
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or len(target) > 2048:
        return "/"
    return target


# -- sign in and out --------------------------------------------------------------------


def _signed_in(request: Request, token: WebToken, target: str) -> Response:
    book = _console(request).tokens
    response = RedirectResponse(f"{root_of(request)}{target}", status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        book.session_for(token),
        max_age=book.session_seconds,
        path=root_of(request) or "/",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    audit(Principal(token.name, token.role, "session"), "sign-in", "ok")
    return response


def _refused(request: Request, next_: str) -> Response:
    _log.warning(
        "web sign-in refused: unknown token",
        extra={"action": "dlq.web.action", "web_action": "sign-in", "outcome": "refused"},
    )
    return page(
        request,
        "login.html",
        None,
        status=401,
        next=next_,
        error="That token is not known here. Check it and try again.",
    )


def _sign_in(request: Request, secret: str, next_: str) -> Response:
    token = _console(request).tokens.find(secret) if 0 < len(secret) <= _TOKEN_CHARS else None
    if token is None:
        return _refused(request, next_)
    return _signed_in(request, token, local_target(next_))


@router.get("/login")
async def login_form(
    request: Request,
    principal: Annotated[Principal | None, Depends(optional_principal)],
    next: str = "/",
    token: str | None = None,
    done: str | None = None,
) -> Response:
    """The sign-in form; with ``?token=`` (the URL ``serve`` prints) it signs in at once
    and redirects, so the token leaves the address bar."""
    if token is not None:
        check_same_origin(request)  # a link on another site cannot sign a browser in
        return _sign_in(request, token, next)
    if principal is not None and done is None:
        return RedirectResponse(f"{root_of(request)}{local_target(next)}", status_code=303)
    flash = "Signed out." if done == "signed-out" else None
    return page(request, "login.html", None, next=local_target(next), error=None, flash=flash)


@router.post("/login")
async def login(request: Request) -> Response:
    """Check the token of the form; a session cookie and a redirect to ``next``."""
    check_same_origin(request)
    form = await read_form(request)
    secret = (form.get("token") or [""])[0].strip()
    next_ = (form.get("next") or ["/"])[0]
    return _sign_in(request, secret, next_)


@router.post("/logout")
async def logout(request: Request, who: Viewer) -> Response:
    """End the browser's session (CSRF-checked) and show the sign-in form."""
    await csrf_checked(request, who)
    root = root_of(request)
    response = RedirectResponse(f"{root}/login?done=signed-out", status_code=303)
    response.delete_cookie(
        SESSION_COOKIE,
        path=root or "/",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    audit(who, "sign-out", "ok")
    return response


# -- overview ----------------------------------------------------------------------------


def breaker_rows(
    breakers: dict[str, dict[str, Any]] | None, now: datetime
) -> list[dict[str, Any]] | None:
    """The breakers of ``get_statistics()`` worth a look (not closed, or paused now), by
    workflow name, times parsed; None when they are unknown."""
    if breakers is None:
        return None
    rows = []
    for workflow, info in sorted(breakers.items()):
        row = dict(info, workflow=workflow)
        for name in ("open_until", "paused_until", "since"):
            value = info.get(name)
            row[name] = datetime.fromisoformat(value) if isinstance(value, str) else None
        paused = row["paused_until"] is not None and row["paused_until"] > now
        if row.get("state") != "closed" or paused:
            rows.append(row)
    return rows


@router.get("/")
async def overview(request: Request, who: Viewer, dlq: Queue, done: str | None = None) -> Response:
    """Counts, capacity, the failure charts, the top groups, processors and breakers."""
    found: dict[str, Any] = {}
    failed: list[Exception] = []

    async def read(name: str, call: Awaitable[Any]) -> None:
        try:
            found[name] = await call
        except Exception as exc:  # noqa: BLE001 - raised below, as itself (not in a group)
            failed.append(exc)

    async with anyio.create_task_group() as group:  # the store answers them side by side
        # the groups below are the top fingerprints with more to say: not asked twice
        group.start_soon(read, "stats", dlq.get_statistics(top_fingerprints=0))
        group.start_soon(read, "day", dlq.failure_histogram(hours=24, buckets=24))
        group.start_soon(read, "week", dlq.failure_histogram(hours=168, buckets=28))
        group.start_soon(read, "groups", dlq.fingerprint_groups(limit=5))  # open tasks
    if failed:
        raise failed[0]
    stats, day, week, groups = found["stats"], found["day"], found["week"], found["groups"]
    return page(
        request,
        "overview.html",
        who,
        active="overview",
        flash=flash_message(done),
        now=dlq.clock.now(),
        stats=stats,
        breakers=breaker_rows(stats.get("breakers"), dlq.clock.now()),
        breakers_known=len(stats.get("breakers") or {}),
        day_chart=failure_chart("24h", "Last 24 hours (hourly)", day, 24),
        week_chart=failure_chart("7d", "Last 7 days (every 6 hours)", week, 168),
        groups=groups,
        refresh_seconds=_console(request).settings.web.refresh_seconds,
    )


router.include_router(task_pages.router)
router.include_router(job_pages.router)
router.include_router(docs.router)
