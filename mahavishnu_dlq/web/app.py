"""``create_app``: the console and API as one ASGI app, embedded or standalone.

Given a queue (``create_app(dlq)``), the app uses it as it is: the host starts and
stops it (a mounted app's lifespan does not run, so the host's does it). Without
one, the app builds a queue from the settings and connects it in its own
lifespan; a store that cannot be reached then does not stop the app from
starting: requests answer 503 and the next one tries again. That queue is opened
for reading (``connect(create=False)``): the console creates no index, and a
missing one (a misspelt ``opensearch.index``) is a 503 ``store_not_found`` naming
it, on every request until it exists; its actions still write (a bulk job makes the
jobs index on its first write). ``mahavishnu-dlq serve`` opens its queue the same way.

Every answer carries the security headers (a Content-Security-Policy with no
inline script, ``nosniff``, no framing, no referrer to other sites, ``no-store``
for everything but the static assets); a request body past
``web.max_body_bytes`` is refused with 413 before it is read; a failure that is a
bug of ours is logged and answered 500 with a reference, never a trace.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mahavishnu_dlq import __version__
from mahavishnu_dlq.errors import DLQError, StoreNotFoundError, StoreUnavailableError
from mahavishnu_dlq.printable import library_logger
from mahavishnu_dlq.settings import DLQSettings

from .auth import TokenBook
from .errors import WebError, error_body, install_error_handlers, unexpected
from .redact import Redactor

if TYPE_CHECKING:
    from mahavishnu_dlq.queue import DeadLetterQueue

__all__ = ["CONTENT_SECURITY_POLICY", "Console", "create_app", "queue"]

#: Scripts, styles, images and fonts from this server only; no inline script.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
_STATIC = Path(__file__).parent / "static"
_log = library_logger("mahavishnu_dlq.web")


@dataclass
class Console:
    """What the routes of one app share: the queue, settings, tokens, redaction."""

    settings: DLQSettings
    tokens: TokenBook
    redact: Redactor
    dlq: DeadLetterQueue | None = None
    #: the app built the queue and connects it (standalone); else the host does
    owns_queue: bool = False
    connected: bool = False
    _lock: anyio.Lock = field(default_factory=anyio.Lock)

    async def queue(self) -> DeadLetterQueue:
        """The connected queue; 503 while its store cannot be reached or is missing."""
        if self.dlq is None:
            raise WebError(503, "store_unavailable", "the console has no queue yet")
        if self.owns_queue and not self.connected:
            async with self._lock:
                if not self.connected:
                    # opened for reading: StoreUnavailableError, StoreNotFoundError: 503
                    await self.dlq.connect(create=False)
                    self.connected = True
        return self.dlq

    async def release(self) -> None:
        """Stop the queue the app built; its store too when it never connected."""
        if self.dlq is None or not self.owns_queue:
            return
        await self.dlq.stop()
        if not self.connected:  # stop() closes only a connected store; free its client
            with anyio.CancelScope(shield=True), contextlib.suppress(DLQError):
                await self.dlq.store.close()


async def queue(request: Request) -> DeadLetterQueue:
    """The queue of the app serving ``request`` (a FastAPI dependency)."""
    console: Console = request.app.state.dlq_web
    return await console.queue()


def create_app(
    dlq: DeadLetterQueue | None = None, *, settings: DLQSettings | None = None
) -> FastAPI:
    """The web console and JSON API (``/api/v1``) of ``dlq``, or of a queue built from
    ``settings`` (default: :meth:`DLQSettings.load`, as the CLI reads them).

    Mount it in a host (``app.mount("/dlq", create_app(dlq))``; the host starts and
    stops ``dlq``) or run it with ``mahavishnu-dlq serve``. Tokens and roles come
    from ``settings.web`` (see :mod:`mahavishnu_dlq.web.auth`).
    """
    if settings is None:
        settings = dlq.settings if dlq is not None and dlq.settings is not None else None
    if settings is None:
        settings = DLQSettings.load()
    console = Console(
        settings=settings,
        tokens=TokenBook(settings.web),
        redact=Redactor(settings.web.redact_keys),
        dlq=dlq,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from mahavishnu_dlq.queue import DeadLetterQueue  # noqa: PLC0415 - a cycle otherwise

        console.dlq = DeadLetterQueue.from_settings(settings)
        console.owns_queue = True
        try:
            await console.queue()
        except StoreUnavailableError:
            pass  # answered 503 until it answers
        except StoreNotFoundError as exc:  # answered 503 naming it until it exists
            _log.warning("dlq.web: %s", exc, extra={"action": "dlq.web.store_not_found"})
        try:
            yield
        finally:
            await console.release()  # stop() shields its own cleanup

    app = FastAPI(
        title="mahavishnu-dlq",
        version=__version__,
        description="The dead-letter queue's operator API. Authenticate with "
        "`Authorization: Bearer <token>` (a token of `web.tokens`).",
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/v1/openapi.json",
        lifespan=lifespan if dlq is None else None,
    )
    app.state.dlq_web = console
    install_error_handlers(app)
    app.mount("/static", StaticFiles(directory=_STATIC), name="static")

    from . import api, pages  # noqa: PLC0415 - the routers import this module

    app.include_router(api.router)
    app.include_router(pages.router)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = api.document(
                get_openapi(
                    title=app.title,
                    version=app.version,
                    description=app.description,
                    routes=app.routes,
                )
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_middleware(_Guard, max_body=settings.web.max_body_bytes)
    return app


class _Guard:
    """Security headers, the body limit and the last-resort 500 (pure ASGI)."""

    def __init__(self, app: ASGIApp, *, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False
        static = scope["path"].startswith(f"{scope.get('root_path', '')}/static/")
        length = _content_length(scope)
        if length is not None and length > self.max_body:
            await _refuse(send, scope, 413, "too_large", self._too_large())
            return
        received = 0
        too_large = False

        async def bounded_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    too_large = True  # whatever the app answers, the client gets a 413
                    raise WebError(413, "too_large", self._too_large())
            return message

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if too_large:
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await _refuse(send, scope, 413, "too_large", self._too_large())
                return
            if message["type"] == "http.response.start":
                started = True
                headers = list(message.get("headers", []))
                headers += _SECURITY_HEADERS
                if not static:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, bounded_receive, send_with_headers)
        except WebError as exc:
            if not started:
                await _refuse(send, scope, exc.status, exc.type, exc.message)
        except Exception as exc:  # noqa: BLE001 - a bug of ours: logged, answered 500
            error = unexpected(scope.get("method", ""), scope.get("path", ""), exc)
            if not started:
                await _refuse(send, scope, 500, error.type, error.message)

    def _too_large(self) -> str:
        return f"the request body is larger than web.max_body_bytes ({self.max_body} bytes)"


_SECURITY_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode("ascii")),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _refuse(send: Send, scope: Scope, status: int, type_: str, message: str) -> None:
    body = json.dumps(error_body(type_, message)).encode("utf-8")
    headers: list[tuple[bytes, bytes]] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode("ascii")),
        *_SECURITY_HEADERS,
        (b"cache-control", b"no-store"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
