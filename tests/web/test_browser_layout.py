"""The console's layout in a real browser, and the screenshots of the documentation.

One console over a memory store holds a week of a back office's failures (about 60
tasks of seven workflows and every category, spread over seven days by a fake
clock, so the charts have bars and every time on a page is fixed). At 1280 and 390
pixels wide, light and dark, the overview, task and group pages never scroll
sideways and the main navigation is reached with the keyboard, after a skip link.
The theme toggle cycles and is remembered. The screenshots of
``docs/images/`` are taken here, light and dark.
"""

from __future__ import annotations

import linecache
import random
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

import pytest
from playwright.sync_api import Browser, Page, expect

from mahavishnu_dlq import DeadLetterQueue, __version__
from mahavishnu_dlq.models import FailedTask
from mahavishnu_dlq.testing import FakeClock
from mahavishnu_dlq.web.ids import task_url

from .browser_support import IMAGES, LiveConsole, chromium, served, signed_in
from .conftest import OPERATOR_TOKEN, web_settings

NOW = datetime(2026, 3, 9, 9, 30, tzinfo=timezone.utc)
SCHEMES: list[Literal["light", "dark"]] = ["light", "dark"]
SHOWCASE = "inv-10482"
CONTEXT = {
    "host": "jobs-3.acme.internal",
    "pid": 2817,
    "python": "3.12.3",
    "mahavishnu_dlq": __version__,
    "uptime_seconds": 86_412.5,
}

#: The back office whose jobs fail: real frames in the tracebacks, a file of its own.
APP_FILE = "/srv/acme/jobs.py"
APP_SOURCE = '''\
"""acme's back-office jobs."""


class LedgerDown(ConnectionError):
    """The ledger refused or dropped the connection."""


class UpstreamUnavailable(Exception):
    """A partner's API asked us to come back later."""


def open_session(host, port):
    raise ConnectionRefusedError(111, f"connect to {host}:{port} refused")


def post_entries(invoice):
    try:
        open_session("ledger.internal", 5432)
    except ConnectionRefusedError as exc:
        raise LedgerDown("ledger.internal:5432 refused the connection") from exc


def sync_invoice(invoice):
    lines = [line for line in invoice.get("lines", [])]
    post_entries({"id": invoice["id"], "lines": lines})


def render_invoice(invoice):
    raise TimeoutError("PDF renderer did not answer within 30 s")


def send_welcome(user):
    raise ValueError("invalid email address: the domain has no MX record")


def index_catalog(batch):
    raise MemoryError("bulk indexer buffer exhausted (512 MiB)")


def export_report(report):
    raise PermissionError("AccessDenied: role export-writer may not write s3://acme-exports")


def reserve_stock(order):
    raise UpstreamUnavailable("inventory API answered 503: service unavailable, try again")


def capture_payment(payment):
    raise RuntimeError("card processor declined the capture: do not honor")


def failure_of(job, item):
    try:
        job(item)
    except Exception as exc:
        return exc
    raise AssertionError("the job did not fail")
'''

#: workflow -> (the job that fails, id prefix, weight in the background noise)
WORKFLOWS = {
    "billing-sync": ("sync_invoice", "inv", 4),
    "invoice-render": ("render_invoice", "pdf", 3),
    "signup-email": ("send_welcome", "signup", 3),
    "search-index": ("index_catalog", "idx", 2),
    "s3-export": ("export_report", "export", 2),
    "inventory": ("reserve_stock", "order", 3),
    "payments": ("capture_payment", "pay", 2),
}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    yield from chromium()


@pytest.fixture(scope="module", params=["memory"])
def console(request: pytest.FixtureRequest) -> Iterator[LiveConsole]:
    clock = FakeClock(NOW - timedelta(days=7))
    settings = web_settings(refresh_seconds=30)
    live = served(request, settings, clock=clock, max_size=250, worker_id="worker-3")
    started = next(live)
    try:
        started.call(lambda dlq: seed_week(dlq, clock))
        yield started
    finally:
        live.close()


def back_office() -> dict[str, Any]:
    """The back office's module: its functions, with their source for tracebacks."""
    lines = APP_SOURCE.splitlines(keepends=True)
    linecache.cache[APP_FILE] = (len(APP_SOURCE), None, lines, APP_FILE)
    namespace: dict[str, Any] = {"__name__": "acme.jobs"}
    exec(compile(APP_SOURCE, APP_FILE, "exec"), namespace)  # noqa: S102 - our own source
    return namespace


def schedule(rng: random.Random) -> list[tuple[float, str]]:
    """(hours before NOW, workflow) of each failure, oldest first: a week of noise,
    a busier last day, and the ledger's outage three to five hours ago."""
    names = list(WORKFLOWS)
    weights = [WORKFLOWS[name][2] for name in names]
    times = [(rng.uniform(24, 168), rng.choices(names, weights)[0]) for _ in range(32)]
    times += [(rng.uniform(0.5, 24), rng.choices(names, weights)[0]) for _ in range(18)]
    times += [(rng.uniform(3, 5), "billing-sync") for _ in range(5)]
    return sorted(times, reverse=True)


async def seed_week(dlq: DeadLetterQueue, clock: FakeClock) -> None:
    """About 60 failures over the week; some retried, some archived, some exhausted;
    the showcase invoice (a chained traceback) retried twice by hand, in vain."""
    app = back_office()
    counters = dict.fromkeys(WORKFLOWS, 100)
    made: dict[str, list[str]] = {name: [] for name in WORKFLOWS}
    for hours, workflow in schedule(random.Random(20260309)):
        if hours < 4 and SHOWCASE not in made["billing-sync"]:
            clock.set(max(clock.now(), NOW - timedelta(hours=4)))
            await showcase(dlq, app)
            made["billing-sync"].append(SHOWCASE)
        clock.set(max(clock.now(), NOW - timedelta(hours=hours)))
        job, prefix, _ = WORKFLOWS[workflow]
        counters[workflow] += 7
        task_id = f"{prefix}-{10000 + counters[workflow]}"
        item = {"id": task_id, "lines": [{"sku": "A-113", "qty": 2}], "tenant": "acme"}
        await dlq.enqueue(
            task_id,
            item,
            [f"acme/{workflow}"],
            app["failure_of"](app[job], item),
            workflow=workflow,
            max_retries=1 if workflow == "search-index" else None,
            metadata={"tenant": "acme", "trigger": "nightly" if hours > 24 else "event"},
        )
        made[workflow].append(task_id)
    clock.set(NOW - timedelta(minutes=20))
    await settle(dlq, clock, app, made)
    clock.set(NOW)
    await dlq.traced_store.mutate(SHOWCASE, same_context)


def same_context(task: FailedTask | None) -> FailedTask:
    """The showcase with a failure context that is the same on every run (no pid…)."""
    assert task is not None
    return task.evolve(metadata={**task.metadata, "failure_context": CONTEXT})


async def showcase(dlq: DeadLetterQueue, app: dict[str, Any]) -> None:
    invoice = {
        "id": SHOWCASE,
        "customer": {"id": "cus-2231", "name": "Northwind Traders"},
        "lines": [{"sku": "A-113", "qty": 2, "cents": 4_990}, {"sku": "B-7", "qty": 1}],
        "api_key": "sk-live-not-for-your-eyes",  # shown masked
    }
    await dlq.enqueue(
        SHOWCASE,
        invoice,
        ["acme/billing"],
        app["failure_of"](app["sync_invoice"], invoice),
        workflow="billing-sync",
        metadata={"tenant": "acme", "request_id": "req-7f3a9c", "trigger": "event"},
    )


async def settle(
    dlq: DeadLetterQueue, clock: FakeClock, app: dict[str, Any], made: dict[str, list[str]]
) -> None:
    """Two slow retries of the showcase by hand, sign-ups that now work, index batches
    out of retries, payments and the oldest invoice set aside."""

    async def slow_ledger(task: dict[str, Any], repos: list[str]) -> None:
        clock.advance(2.4)  # the handler's work: the attempt's duration
        app["post_entries"](task)

    async def works(task: dict[str, Any], repos: list[str]) -> str:
        return "ok"

    async def still_too_big(task: dict[str, Any], repos: list[str]) -> None:
        app["index_catalog"](task)

    dlq.register_handler("billing-sync", slow_ledger)
    dlq.register_handler("signup-email", works)
    dlq.register_handler("search-index", still_too_big)
    for _ in range(2):
        await dlq.retry_task(SHOWCASE)
        clock.advance(timedelta(minutes=6))
    for task_id in made["signup-email"][:3]:
        await dlq.retry_task(task_id)
    for task_id in made["search-index"][:2]:
        await dlq.retry_task(task_id)
    for task_id in made["payments"][:2] + made["billing-sync"][:1]:
        await dlq.archive_task(task_id)


def showcase_pages(console: LiveConsole) -> dict[str, str]:
    """The pages shown in the documentation: name -> path."""
    task = console.call(lambda dlq: dlq.get_task(SHOWCASE))
    assert task is not None
    assert task.error_fingerprint is not None
    return {
        "overview": "/",
        "task": task_url("/tasks/", SHOWCASE),
        "group": task_url("/groups/", task.error_fingerprint),
    }


def background_brightness(page: Page) -> int:
    """The sum of the body's background RGB channels (0 black … 765 white)."""
    colour: str = page.evaluate("getComputedStyle(document.body).backgroundColor")
    channels = colour[colour.index("(") + 1 : colour.index(")")].split(",")[:3]
    return sum(int(float(channel)) for channel in channels)


FOCUS = """() => {
  const el = document.activeElement;
  const box = el.getBoundingClientRect();
  const style = getComputedStyle(el);
  return {
    nav: el.dataset.nav || null, skip: el.classList.contains("skip-link"),
    inside: box.width > 0 && box.height > 0 && box.left >= 0 && box.top >= 0
      && box.right <= window.innerWidth && box.bottom <= window.innerHeight,
    outline: style.outlineStyle !== "none" && parseFloat(style.outlineWidth) > 0,
  };
}"""


def tab(page: Page) -> dict[str, Any]:
    page.keyboard.press("Tab")
    focus: dict[str, Any] = page.evaluate(FOCUS)
    return focus


@pytest.mark.parametrize("width", [1280, 390])
def test_pages_fit_the_width_and_the_nav_is_reached_by_keyboard(
    browser: Browser, console: LiveConsole, width: int
) -> None:
    viewport = {"width": width, "height": 800}
    with signed_in(browser, console, OPERATOR_TOKEN, viewport=viewport) as (page, watched):
        for name, path in showcase_pages(console).items():
            for scheme in SCHEMES:
                where = (name, width, scheme)
                page.emulate_media(color_scheme=scheme)
                page.goto(path)
                expect(page.locator(f"main[data-page={name}]")).to_be_visible()
                brightness = background_brightness(page)
                assert brightness < 120 if scheme == "dark" else brightness > 600, where
                scroll, inner = page.evaluate(
                    "[document.documentElement.scrollWidth, window.innerWidth]"
                )
                assert scroll <= inner + 1, (where, scroll)

                focus = tab(page)  # the skip link, shown when focused
                assert focus["skip"], (where, focus)
                assert focus["inside"], (where, focus)
                for _ in range(4):  # the brand, then the first link of the main nav
                    focus = tab(page)
                    if focus["nav"]:
                        break
                assert focus["nav"] == "overview", (where, focus)
                assert focus["inside"], (where, focus)
                assert focus["outline"], (where, focus)

                page.keyboard.press("Shift+Tab")
                page.keyboard.press("Shift+Tab")
                expect(page.locator("a.skip-link")).to_be_focused()
                page.keyboard.press("Enter")
                expect(page.locator("main#main")).to_be_focused()
        watched.assert_clean()


def test_the_theme_toggle_cycles_and_is_remembered(browser: Browser, console: LiveConsole) -> None:
    with signed_in(browser, console, OPERATOR_TOKEN, color_scheme="light") as (page, watched):
        html, toggle = page.locator("html"), page.locator("button[data-theme-toggle]")
        expect(html).to_have_attribute("data-theme", "auto")
        light = background_brightness(page)
        toggle.click()
        expect(html).to_have_attribute("data-theme", "light")
        toggle.click()
        expect(html).to_have_attribute("data-theme", "dark")
        expect(toggle).to_contain_text("Theme: dark")
        dark = background_brightness(page)
        assert dark < 120, dark
        assert light > 600, light
        page.reload()
        expect(html).to_have_attribute("data-theme", "dark")
        stored = page.evaluate("localStorage.getItem('mahavishnu-dlq.theme')")
        assert stored == "dark"
        assert background_brightness(page) == dark
        toggle.click()
        expect(html).to_have_attribute("data-theme", "auto")
        assert background_brightness(page) == light
        watched.assert_clean()


Check = Callable[[Page], None]
#: What each page must show before its picture is taken.
READY: dict[str, Check] = {
    "overview": lambda page: expect(page.locator("g.bar[data-total]").first).to_be_attached(),
    "task": lambda page: expect(page.locator("tr[data-attempt='2']")).to_be_visible(),
    "group": lambda page: expect(page.locator("tr[data-task-row]").first).to_be_visible(),
}


def test_screenshots_of_the_documentation(browser: Browser, console: LiveConsole) -> None:
    viewport = {"width": 1280, "height": 800}
    IMAGES.mkdir(parents=True, exist_ok=True)
    with signed_in(browser, console, OPERATOR_TOKEN, viewport=viewport) as (page, watched):
        for name, path in showcase_pages(console).items():
            for scheme in SCHEMES:
                page.emulate_media(color_scheme=scheme)
                page.goto(path)
                READY[name](page)
                expect(page.locator("button[data-theme-toggle]")).to_be_visible()  # scripts ran
                target = IMAGES / f"{name}-{scheme}.png"
                page.screenshot(path=target, full_page=True, animations="disabled", caret="hide")
                assert 0 < target.stat().st_size < 300_000, (target, target.stat().st_size)
        watched.assert_clean()
