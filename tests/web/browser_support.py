"""A real console for the browser tests: uvicorn on a free loopback port, in a thread
with its own event loop, and Debian's Chromium driven by Playwright.

The queue lives in the server's loop; the test thread reaches it with
:meth:`LiveConsole.call` (a coroutine run there, its result returned), so tests
seed tasks and compare the pages with ``get_statistics()`` on the very queue the
server shows. Chromium is ``$MAHAVISHNU_DLQ_TEST_CHROMIUM`` (``scripts/test``
installs Debian's package) or ``/usr/bin/chromium``; Playwright never downloads a
browser. Without one, the browser tests skip locally and fail with ``CI=true``.

The modules ``test_browser*`` share the fixture bodies here: :func:`chromium` (one
browser per module), :func:`served` (a console over the store the fixture's
parameter names, :data:`STORES`), :func:`signed_in` (a fresh context per test, its
page signed in through the form) and :class:`Watched` (what a page must never do:
open a dialog, break the Content-Security-Policy, throw).
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import uuid
from collections.abc import Awaitable, Callable, Generator, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
import uvicorn
from playwright.sync_api import Browser, ConsoleMessage, Dialog, Page, expect, sync_playwright

from mahavishnu_dlq import DeadLetterQueue
from mahavishnu_dlq.settings import DLQSettings
from mahavishnu_dlq.storage.memory import MemoryStore
from mahavishnu_dlq.web import create_app

from .conftest import web_settings

T = TypeVar("T")

CHROMIUM_VAR = "MAHAVISHNU_DLQ_TEST_CHROMIUM"
IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"
#: How long an expectation waits (ms): generous, as it returns as soon as it holds.
WAIT = 15_000
#: The stores a console fixture is parametrised with; OpenSearch needs the node.
STORES = [
    pytest.param("memory", id="memory"),
    pytest.param("opensearch", id="opensearch", marks=pytest.mark.opensearch),
]


def chromium_path() -> str:
    """The Chromium to drive, or a skip (a failure under CI) naming what is missing."""
    path = os.environ.get(CHROMIUM_VAR) or "/usr/bin/chromium"
    if not os.access(path, os.X_OK):
        reason = f"no Chromium at {path} (scripts/test installs Debian's package chromium)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}; CI needs it", pytrace=False)
        pytest.skip(reason)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class _Server(uvicorn.Server):
    """uvicorn's server, telling when it listens."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = asyncio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self.listening.set()


class LiveConsole:
    """``create_app(queue)`` served by uvicorn in a thread of its own."""

    def __init__(self, make_queue: Callable[[], DeadLetterQueue], settings: DLQSettings) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._make_queue = make_queue
        self._settings = settings
        self._loop = asyncio.new_event_loop()
        self._ready: Future[None] = Future()
        self._thread = threading.Thread(target=self._run, name="live-console", daemon=True)
        self.dlq: DeadLetterQueue | None = None
        self._server: uvicorn.Server | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve())
        finally:
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    async def _serve(self) -> None:
        try:
            self.dlq = self._make_queue()
            await self.dlq.connect()
            app = create_app(self.dlq, settings=self._settings)
            config = uvicorn.Config(
                app, host="127.0.0.1", port=self.port, lifespan="off", log_level="warning"
            )
            self._server = _Server(config)
            serving = asyncio.ensure_future(self._server.serve())
            started = asyncio.ensure_future(self._server.listening.wait())
            await asyncio.wait({serving, started}, return_when=asyncio.FIRST_COMPLETED)
            if serving.done():
                started.cancel()
                serving.result()  # it failed to start: raise why
            self._ready.set_result(None)
            await serving
        except BaseException as exc:
            if not self._ready.done():
                self._ready.set_exception(exc)
            raise
        finally:
            if self.dlq is not None:
                await self.dlq.stop()

    def start(self) -> LiveConsole:
        self._thread.start()
        self._ready.result(timeout=60)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        self._thread.join(timeout=30)

    def call(self, fn: Callable[[DeadLetterQueue], Awaitable[T]], timeout: float = 60) -> T:
        """``await fn(queue)`` in the server's loop; its result."""
        assert self.dlq is not None
        dlq = self.dlq

        async def run() -> T:
            return await fn(dlq)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout)


def live_console(
    make_queue: Callable[[], DeadLetterQueue], settings: DLQSettings
) -> Iterator[LiveConsole]:
    """A started console, stopped after the test (a fixture body)."""
    console = LiveConsole(make_queue, settings).start()
    try:
        yield console
    finally:
        console.stop()


def launch_options() -> dict[str, Any]:
    """How Playwright starts Debian's Chromium: headless, no sandbox (root in CI)."""
    return {
        "executable_path": chromium_path(),
        "headless": True,
        "args": ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
    }


def chromium() -> Iterator[Browser]:
    """Debian's Chromium, headless, for a module (a fixture body); every ``expect``
    waits up to :data:`WAIT` (actions too, through :func:`signed_in`)."""
    options = launch_options()  # skips (or fails) before Playwright starts
    expect.set_options(timeout=WAIT)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(**options)
        try:
            yield browser
        finally:
            browser.close()


def served(
    request: pytest.FixtureRequest, settings: DLQSettings | None = None, **queue_options: Any
) -> Generator[LiveConsole, None, None]:
    """A console over the store ``request.param`` names (a fixture body): a memory
    store, or a fresh index of the session's OpenSearch node, dropped after.
    ``queue_options`` go to the queue (a clock, ``max_size``, ``worker_id``…)."""
    settings = settings or web_settings()
    if request.param == "memory":
        yield from live_console(
            lambda: DeadLetterQueue(MemoryStore(), settings=settings, **queue_options), settings
        )
        return
    from mahavishnu_dlq.storage.opensearch import OpenSearchStore  # noqa: PLC0415 - extra

    url = request.getfixturevalue("opensearch_url")
    index = f"dlq-browser-{uuid.uuid4().hex[:12]}"
    # built in the server's loop; the store refreshes before it searches what it wrote
    stores: list[OpenSearchStore] = []

    def make_queue() -> DeadLetterQueue:
        stores.append(OpenSearchStore(hosts=[url], index=index))
        return DeadLetterQueue(stores[0], settings=settings, **queue_options)

    console = LiveConsole(make_queue, settings).start()
    try:
        yield console
    finally:
        try:
            console.call(lambda _: stores[0].drop())
        finally:
            console.stop()


class Watched:
    """What a page must never do, recorded as it happens: open a dialog (dismissed),
    break the Content-Security-Policy, throw an uncaught script error."""

    def __init__(self, page: Page) -> None:
        self.dialogs: list[str] = []
        self.violations: list[str] = []
        self.errors: list[str] = []
        page.on("dialog", self._dialog)
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.errors.append(str(error)))

    def _dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def _console(self, message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            self.violations.append(message.text)

    def assert_clean(self) -> None:
        assert self.dialogs == [], self.dialogs
        assert self.violations == [], self.violations
        assert self.errors == [], self.errors


def sign_in(page: Page, token: str, path: str = "/") -> None:
    """Open ``path``, be sent to the sign-in form, sign in with ``token``, land there."""
    page.goto(path)
    expect(page.locator("main[data-page=login]")).to_be_visible()
    page.locator("#token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("[data-principal]")).to_be_visible()


@contextmanager
def signed_in(
    browser: Browser, console: LiveConsole, token: str | None, **options: Any
) -> Iterator[tuple[Page, Watched]]:
    """A page of a fresh context (``options``: viewport, colour scheme…), watched and
    signed in with ``token`` (None: not signed in); the context is closed after."""
    context = browser.new_context(base_url=console.url, **options)
    context.set_default_timeout(WAIT)
    try:
        page = context.new_page()
        watched = Watched(page)
        if token is not None:
            sign_in(page, token)
        yield page, watched
    finally:
        context.close()
