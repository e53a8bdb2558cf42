"""Errors of the web console and API: one JSON shape, one status per kind, no traces.

Every failure of an API request answers ``{"error": {"type", "message", "field"}}``
with the status of its kind: 400 (a bad argument; ``field`` names it), 401 (no or
an unknown token), 403 (a viewer acting, a cross-site or CSRF-less form), 404, 409
(the task is being retried elsewhere, or the job cannot do that now), 413 (a body
past ``web.max_body_bytes``, a payload past the queue's limit), 503 (the store
cannot be reached: ``store_unavailable``; or its index does not exist:
``store_not_found``, naming it). Anything unexpected is logged here with its traceback and
answered 500 with a request id, never the trace. Pages get the same status with a
short HTML page, and a 401 on a page redirects to the sign-in form.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, RedirectResponse, Response

from mahavishnu_dlq.errors import (
    ConfigurationError,
    InvalidPayloadError,
    JobNotFoundError,
    JobStateError,
    PayloadTooLargeError,
    QueueFullError,
    StoreNotFoundError,
    StoreOverloadedError,
    StoreUnavailableError,
    TaskBusyError,
    TaskNotFoundError,
    UnreadableRecordError,
)
from mahavishnu_dlq.printable import escape_line, library_logger

__all__ = ["WebError", "error_body", "install_error_handlers", "is_api", "unexpected"]

_log = library_logger("mahavishnu_dlq.web")
_MESSAGE_CHARS = 500


class WebError(Exception):
    """A request the console refuses: HTTP status, error type, message, the field at fault."""

    def __init__(self, status: int, type_: str, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.message = message
        self.field = field


def error_body(type_: str, message: str, field: str | None = None) -> dict[str, Any]:
    """The JSON body of every error answer."""
    return {
        "error": {"type": type_, "message": escape_line(message)[:_MESSAGE_CHARS], "field": field}
    }


def is_api(request: Request) -> bool:
    """Whether the request is for the JSON API (else a page)."""
    return request.url.path.startswith(f"{request.scope.get('root_path', '')}/api/")


def _classify(exc: Exception) -> WebError:
    """The status and type of a library error raised while serving a request."""
    message = str(exc)
    found: WebError
    if isinstance(exc, WebError):
        found = exc
    elif isinstance(exc, (TaskNotFoundError, JobNotFoundError)):
        found = WebError(404, "not_found", message)
    elif isinstance(exc, TaskBusyError):
        found = WebError(409, "task_busy", message)
    elif isinstance(exc, JobStateError):
        found = WebError(409, "conflict", message)
    elif isinstance(exc, UnreadableRecordError):
        found = WebError(409, "unreadable_record", message)
    elif isinstance(exc, QueueFullError):
        found = WebError(409, "queue_full", message)
    elif isinstance(exc, StoreOverloadedError):
        found = WebError(503, "store_overloaded", message)
    elif isinstance(exc, StoreUnavailableError):
        found = WebError(503, "store_unavailable", message)
    elif isinstance(exc, StoreNotFoundError):
        found = WebError(503, "store_not_found", message)
    elif isinstance(exc, PayloadTooLargeError):
        found = WebError(413, "too_large", message)
    elif isinstance(exc, (InvalidPayloadError, ConfigurationError, ValueError, TypeError)):
        found = WebError(400, "invalid", message, field=getattr(exc, "field", None))
    else:
        raise exc
    return found


def _answer(request: Request, error: WebError) -> Response:
    if error.status == 401 and not is_api(request):
        root = request.scope.get("root_path", "")
        target = request.url.path[len(root) :] or "/"
        if request.url.query:
            target += f"?{request.url.query}"
        from urllib.parse import quote  # noqa: PLC0415 - only on this path

        return RedirectResponse(f"{root}/login?next={quote(target, safe='')}", status_code=303)
    headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
    if error.status == 503:
        headers = {"Retry-After": "5"}
    if is_api(request):
        return JSONResponse(
            error_body(error.type, error.message, error.field),
            status_code=error.status,
            headers=headers,
        )
    from mahavishnu_dlq.web.render import error_page  # noqa: PLC0415 - a cycle otherwise

    return error_page(request, error.status, error.type, escape_line(error.message), headers)


def unexpected(method: str, path: str, exc: BaseException) -> WebError:
    """Log a failure that is a bug of ours, with its traceback; the 500 answer's error."""
    ref = uuid.uuid4().hex[:12]
    _log.log(
        logging.ERROR,
        "web request %s %s failed (ref %s)",
        method,
        escape_line(path)[:200],
        ref,
        exc_info=exc,
        extra={"action": "dlq.web.error", "ref": ref},
    )
    return WebError(500, "internal", f"internal error (ref {ref}); see the server log")


def install_error_handlers(app: FastAPI) -> None:
    """Route every error of ``app`` to one answer (see the module docstring)."""

    async def on_error(request: Request, exc: Exception) -> Response:
        try:
            error = _classify(exc)
        except Exception:  # noqa: BLE001 - anything else is a bug of ours: log it, answer 500
            error = unexpected(request.method, request.url.path, exc)
        return _answer(request, error)

    async def on_http(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 500)
        detail = getattr(exc, "detail", None)
        kinds = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}
        message = detail if isinstance(detail, str) else "request refused"
        return _answer(request, WebError(status, kinds.get(status, "http"), message))

    async def on_validation(request: Request, exc: Exception) -> Response:
        problems = exc.errors() if isinstance(exc, RequestValidationError) else []
        first = problems[0] if problems else {}
        where = [str(part) for part in first.get("loc", ())]
        if where[:1] in (["query"], ["path"], ["header"], ["cookie"]):
            where = where[1:2]  # a parameter: its name (not the index of a repeated one)
        elif where[:1] == ["body"]:
            where = where[1:]
        field = ".".join(where) or None
        message = str(first.get("msg", "invalid request"))
        return _answer(request, WebError(400, "invalid", f"{field}: {message}", field=field))

    app.add_exception_handler(WebError, on_error)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_validation)
    for kind in (
        TaskNotFoundError,
        JobNotFoundError,
        TaskBusyError,
        JobStateError,
        UnreadableRecordError,
        QueueFullError,
        StoreUnavailableError,
        StoreNotFoundError,
        PayloadTooLargeError,
        InvalidPayloadError,
        ConfigurationError,
        ValueError,
        TypeError,
    ):
        app.add_exception_handler(kind, on_error)
