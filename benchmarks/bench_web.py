"""The web console at 1,000,000 tasks on OpenSearch (issue 14, point 6), with
same-run baselines.

    python -m benchmarks.bench_web [--quick] [--tasks 1000000] [--requests 50] [--reseed]

Uses ``MAHAVISHNU_DLQ_TEST_OPENSEARCH_URL`` when set, else starts a node with
``scripts/opensearch_node.py`` (512 MiB heap) and stops it at the end.

N tasks (default 1,000,000; ``--quick`` 100,000) are seeded by plain ``_bulk`` into
``bench-web-<N>`` (the corpus: :mod:`benchmarks._web_common`); an index a previous
run seeded with the same corpus is reused (``--reseed`` to seed again). The console
is ``create_app(DeadLetterQueue(OpenSearchStore(...)))`` called in this process
through ``httpx.ASGITransport``: the server-side time of a request (routing, the
token check, the queue's reads, rendering), no network and no browser.

1. Routes: the overview, two filtered task pages, the API list with the same
   filters, fingerprints and stats; ``--requests`` timed requests each after a
   warm-up, beside the bare opensearch-py client making the reads the route needs
   (the store's own request bodies, issued as the route issues them: the
   overview's four reads at once, a task page's two in turn), request by request.
   Twice: on the idle index, where the node's request cache answers a repeated
   size-0 search, and with each request after a change (a few tasks rewritten and
   a refresh, untimed), as a viewer of a queue taking failures sees it. The
   templates' share: the pages' ``page()`` calls, timed in a pass of their own.
2. Where the time goes: each queue call of the overview and of the task pages
   timed alone beside its bare read, both ways; the overview's calls at once (as
   the page awaits them: the statistics without the top fingerprints, which it
   does not show), in turn, and at once with the top fingerprints (the page before).
3. The overview's searches by the bare client: without the request cache (as after
   a change) against with it, and against variants (no top fingerprints, no
   unreadable count, ``breadth_first`` collection, no readable filter).

Times are printed, never asserted; the verdicts say how a run compares to the
issue's targets (the overview and a filtered task page ≤ 300 ms p95, the API list
≤ 100 ms p95, with 1,000,000 tasks) on this machine (2 shared cores, the node and
the client on them).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import partial
from typing import Any

import httpx
from fastapi import Request
from starlette.responses import HTMLResponse

from benchmarks._web_common import (
    DAYS,
    FINGERPRINTS,
    WORKFLOWS,
    Bare,
    CorpusClock,
    Seeded,
    Touch,
    seed,
)
from benchmarks._web_console import Console, Filters
from benchmarks._web_parts import (
    Part,
    overview_parts,
    part_rows,
    section_parts,
    task_page_parts,
)
from benchmarks._web_timing import Call, Samples, Timed, fmt_ms, interleaved
from benchmarks._web_variants import Variant, search_variants, time_variants
from benchmarks.bench_opensearch import _node_module, _table
from mahavishnu_dlq import DeadLetterQueue
from mahavishnu_dlq.insights import OPEN
from mahavishnu_dlq.models import DeadLetterStatus
from mahavishnu_dlq.operations import make_filter
from mahavishnu_dlq.settings import DLQSettings
from mahavishnu_dlq.storage.opensearch import OpenSearchStore
from mahavishnu_dlq.web import create_app, pages, render, task_pages
from mahavishnu_dlq.web.auth import Principal

_TOKEN = "bench-web-viewer-0123456789abcdef"  # noqa: S105 - this run's own app, in-process
_WORKFLOW = "wf-03"  # the fourth biggest of twenty: ~7% of the tasks
_TEXT = "no space left"  # part of one error text in ten (OSError, resource)
_WARM_UP = 5
_PAGE_MS, _API_MS = 300.0, 100.0
_AT_SCALE = 1_000_000


def _say(message: str) -> None:
    print(f"  … {message}", file=sys.stderr)


# -- the console, in this process -------------------------------------------------------


@asynccontextmanager
async def _console(url: str, seeded: Seeded) -> AsyncIterator[Console]:
    clock = CorpusClock(datetime.now(timezone.utc) - seeded.seeded_at)
    store = OpenSearchStore(hosts=[url], index=seeded.index)
    dlq = DeadLetterQueue(store, max_size=10 * seeded.tasks, clock=clock)
    await dlq.connect()
    settings = DLQSettings(
        store="opensearch",
        web={"tokens": [{"name": "bench", "token": _TOKEN, "role": "viewer"}]},
    )
    app = create_app(dlq, settings=settings)
    transport = httpx.ASGITransport(app=app)
    headers = {"Authorization": f"Bearer {_TOKEN}"}
    bare = Bare(url, seeded.index)
    try:
        async with httpx.AsyncClient(
            transport=transport, base_url="http://bench", headers=headers
        ) as http:
            yield Console(dlq, http, bare, clock, Touch(bare.client, seeded.index))
    finally:
        await bare.close()
        await dlq.stop()


_PAGE_MODULES = (pages, task_pages)  # the modules whose routes render pages
_PAGE = "page"  # the name they call render.page by


@contextmanager
def _render_timer() -> Iterator[list[float]]:
    """The milliseconds of each ``page()`` call the page routes make (the template
    rendered and the response built), while the block runs."""
    original = render.page
    samples: list[float] = []

    def timed_page(
        request: Request,
        template: str,
        principal: Principal | None,
        *,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        **context: Any,
    ) -> HTMLResponse:
        started = time.perf_counter()
        answer = original(request, template, principal, status=status, headers=headers, **context)
        samples.append((time.perf_counter() - started) * 1000)
        return answer

    for module in _PAGE_MODULES:
        setattr(module, _PAGE, timed_page)
    try:
        yield samples
    finally:
        for module in _PAGE_MODULES:
            setattr(module, _PAGE, original)


# -- 1. routes ------------------------------------------------------------------------------


@dataclass
class Route:
    name: str
    path: str
    params: dict[str, Any]
    reads: str  # what the bare baseline does
    bare: Call
    target_ms: float | None
    idle: Timed = field(default_factory=Timed)
    changed: Timed = field(default_factory=Timed)
    render: Samples = field(default_factory=Samples)
    size: int = 0  # bytes of the answer

    @property
    def page(self) -> bool:
        return not self.path.startswith("/api/")

    async def call(self, console: Console) -> None:
        self.size = len((await console.get(self.path, self.params)).content)


def _filters(console: Console) -> Filters:
    since = console.clock.now() - timedelta(days=7)
    exhausted = (DeadLetterStatus.EXHAUSTED,)
    return Filters(
        since=since,
        listed=make_filter(status=exhausted, workflow=(_WORKFLOW,), since=since),
        text=make_filter(status=exhausted, text=_TEXT),
        open=make_filter(status=OPEN),
    )


def _routes(console: Console, flt: Filters) -> list[Route]:
    bare, clock = console.bare, console.clock
    since = flt.since.isoformat()
    page_reads = "first-page search (size 51, sorted) + `_count`, in turn"
    return [
        Route(
            "overview `/`",
            "/",
            {},
            "statistics search without top fingerprints then breakers (refresh and search "
            "of `-controls`), two histogram searches, groups search: the four at once, as "
            "the page awaits them",
            lambda: bare.overview(clock.now(), flt.open, together=True, top_fingerprints=0),
            _PAGE_MS,
        ),
        Route(
            f"page `/tasks?status=exhausted&workflow={_WORKFLOW}&since=7d`",
            "/tasks",
            {"status": "exhausted", "workflow": _WORKFLOW, "since": "7d"},
            page_reads,
            lambda: bare.task_page(flt.listed, 50),
            _PAGE_MS,
        ),
        Route(
            f"page `/tasks?status=exhausted&text={_TEXT}`",
            "/tasks",
            {"status": "exhausted", "text": _TEXT},
            page_reads,
            lambda: bare.task_page(flt.text, 50),
            _PAGE_MS,
        ),
        Route(
            f"API `/api/v1/tasks?status=exhausted&workflow={_WORKFLOW}&since=…&limit=50`",
            "/api/v1/tasks",
            {"status": "exhausted", "workflow": _WORKFLOW, "since": since, "limit": 50},
            "one search (size 51, sorted)",
            lambda: bare.listing(flt.listed, 50),
            _API_MS,
        ),
        Route(
            f"API `/api/v1/tasks?status=exhausted&text={_TEXT}&limit=50`",
            "/api/v1/tasks",
            {"status": "exhausted", "text": _TEXT, "limit": 50},
            "one search (size 51, sorted)",
            lambda: bare.listing(flt.text, 50),
            _API_MS,
        ),
        Route(
            "API `/api/v1/fingerprints` (50 groups of open tasks)",
            "/api/v1/fingerprints",
            {},
            "groups search (limit 50)",
            lambda: bare.groups(flt.open, 50),
            None,
        ),
        Route(
            "API `/api/v1/stats`",
            "/api/v1/stats",
            {},
            "statistics search + breakers (refresh and search of `-controls`)",
            bare.statistics,
            None,
        ),
    ]


async def section_routes(console: Console, routes: list[Route], requests: int) -> None:
    pairs: list[tuple[Call, Call | None]] = [
        (partial(route.call, console), route.bare) for route in routes
    ]
    idle = await interleaved(pairs, requests, warm_up=_WARM_UP)
    for route, timed in zip(routes, idle, strict=True):
        route.idle = timed
    with _render_timer() as rendered:  # one more pass: the templates' share of the pages
        for _ in range(requests):
            for route in routes:
                if route.page:
                    await route.call(console)
                    route.render.ms.append(rendered.pop())
    changed = await interleaved(pairs, requests, warm_up=_WARM_UP, touch=console.touch)
    for route, timed in zip(routes, changed, strict=True):
        route.changed = timed


def _verdict(route: Route, timed: Timed, n: int) -> str:
    if route.target_ms is None:
        return "—"
    verdict = "PASS" if timed.own.p95 <= route.target_ms else "FAIL"
    return verdict if n >= _AT_SCALE else f"({verdict} at {n:,})"


def route_rows(routes: list[Route], n: int, *, changed: bool) -> list[list[str]]:
    rows = []
    for route in routes:
        timed = route.changed if changed else route.idle
        target = "—" if route.target_ms is None else f"≤ {route.target_ms:.0f} ms p95"
        rendering = "—"
        if route.render.ms:
            rendering = f"{fmt_ms(route.render.p50)} ({route.render.p50 / timed.own.p50:.0%})"
        rows.append(
            [
                route.name,
                fmt_ms(timed.own.p50),
                fmt_ms(timed.own.p95),
                fmt_ms(timed.own.max),
                rendering,
                fmt_ms(timed.bare.p50),
                fmt_ms(timed.bare.p95),
                f"{timed.ratio:.2f}x",
                target,
                _verdict(route, timed, n),
            ]
        )
    return rows


# -- 3. the request cache, and variants of the searches ---------------------------------------


def variant_rows(found: list[Variant]) -> list[list[str]]:
    rows = []
    for variant in found:
        timed = variant.timed
        same = "—" if variant.same is None else ("yes" if variant.same else "no")
        rows.append(
            [
                variant.name,
                fmt_ms(timed.own.p50),
                fmt_ms(timed.own.p95),
                variant.variant,
                fmt_ms(timed.bare.p50),
                fmt_ms(timed.bare.p95),
                f"{timed.own.p50 / timed.bare.p50:.2f}x",
                same,
            ]
        )
    return rows


# -- the run --------------------------------------------------------------------------------


def _header(info: dict[str, Any], url: str, seeded: Seeded, facts: str, requests: int) -> str:
    if seeded.seconds is not None and seeded.rate is not None:
        origin = (
            f"seeded in this run: {seeded.seconds:.0f} s, {seeded.rate:,.0f} tasks/s "
            "(plain `_bulk`, 5,000 a request, 2 in flight, refresh off until the end)"
        )
    else:
        origin = (
            f"reused (seeded {seeded.seeded_at:%Y-%m-%d %H:%M} UTC; the queue's clock is "
            "moved back by its age)"
        )
    return (
        f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; node: OpenSearch "
        f"{info['version']['number']} at {url}; heap {os.environ.get('BENCH_HEAP', '512 MiB')};"
        f" Python {sys.version.split()[0]}; {os.cpu_count()} CPUs; load average "
        f"{os.getloadavg()[0]:.2f}\n"
        f"- index `{seeded.index}`: {facts}; {origin}\n"
        f"- {seeded.tasks:,} tasks: {WORKFLOWS} workflows, every status and category, "
        f"{FINGERPRINTS} fingerprints (skewed), failures over the {DAYS} days before seeding;"
        f" {requests} timed requests per row after {_WARM_UP} untimed, interleaved with "
        "the row's baseline\n"
    )


_CHANGED = (
    "each timed request follows a change: {batch} tasks rewritten and the index refreshed, "
    "untimed ({changes:,} changes in all) — what a viewer of a queue taking failures sees "
    "(it refreshes every second; the overview reloads every 10 s): the node's request "
    "cache, which answers a repeated size-0 search until the next refresh that changed "
    "something, cannot answer"
)


async def run_all(url: str, n: int, requests: int, reseed: bool) -> None:
    bare = Bare(url, "unused")
    info = await bare.client.info()
    await bare.close()
    print("# mahavishnu_dlq web console benchmarks (OpenSearch)\n")
    seeded = await seed(url, n, reseed=reseed, say=_say)
    if seeded.seconds is not None:
        _say(f"seeded {n:,} tasks in {seeded.seconds:.0f} s ({seeded.rate:,.0f} tasks/s)")
    async with _console(url, seeded) as console:
        print(_header(info, url, seeded, await console.bare.facts(), requests))
        flt = _filters(console)
        routes = _routes(console, flt)
        _say(f"routes: {requests} requests each, on the idle index then after changes")
        await section_routes(console, routes, requests)
        _say("the overview's and the task pages' queue calls, each alone")
        overview = overview_parts(console, flt)
        await section_parts(console, overview, requests, _WARM_UP)
        listing = task_page_parts(console, flt)
        await section_parts(console, listing, requests, _WARM_UP)
        _say("the request cache and variants of the searches (bare)")
        found = search_variants(console.clock.now(), flt.open)
        await time_variants(console.bare, found, requests, _WARM_UP)
        changed = _CHANGED.format(batch=console.touch.batch, changes=console.touch.changes)
    _report(routes, overview, listing, found, n, changed)


def _report(
    routes: list[Route],
    overview: list[Part],
    listing: list[Part],
    found: list[Variant],
    n: int,
    changed: str,
) -> None:
    print("## 1. Routes, server-side (ms; in-process ASGI, no network)\n")
    print(
        "rendering: the page's `page()` call (Jinja2 + the response), p50 and its share of "
        "the route's p50 (timed in a pass of its own, idle index). bare: the opensearch-py "
        "client making the same reads with the store's request bodies, as the route makes "
        "them. ratio: route p95 ÷ bare p95.\n"
    )
    headers = ["route", "p50", "p95", "max", "rendering", "bare p50", "bare p95", "ratio"]
    headers += ["target", "result"]
    print("### 1a. Idle index (the node's request cache answers repeated size-0 searches)\n")
    print(_table(headers, route_rows(routes, n, changed=False)), "\n")
    print("### 1b. After a change\n")
    print(f"{changed[0].upper()}{changed[1:]}.\n")
    print(_table(headers, route_rows(routes, n, changed=True)), "\n")
    print("The bare reads of each route, and the size of its answer:\n")
    for route in routes:
        print(f"- {route.name}: {route.reads}; {route.size / 1024:,.0f} KiB")
    print()
    print("## 2. Where the time goes: each queue call alone (ms)\n")
    print(
        "idle: the index as seeded; changed: after a change, as in 1b. bare: the bare "
        "client's read of the row, timed in turn with it.\n"
    )
    headers = ["call", "idle p50", "p95", "bare p95", "changed p50", "p95", "bare p95", "bare"]
    print("### 2a. The overview\n")
    print(_table(headers, part_rows(overview)), "\n")
    print("### 2b. The task pages (the first page, then the count)\n")
    print(_table(headers, part_rows(listing)), "\n")
    print("## 3. The request cache, and variants of the store's searches (bare, idle index)\n")
    print(
        "As sent: the store's body with `request_cache=false` — what it costs after a change, "
        "and always for the histograms (their window moves with the clock, so no two are "
        "alike). The variants run the same way, but for the request cache rows. speed-up: "
        "as sent p50 ÷ variant p50. same: the variant's aggregations equal the store's "
        "(when they should).\n"
    )
    headers = ["search", "as sent p50", "p95", "variant", "p50", "p95", "speed-up", "same"]
    print(_table(headers, variant_rows(found)), "\n")
    print("## Targets\n")
    for route in routes:
        if route.target_ms is not None:
            print(
                f"- {route.name}: p95 {fmt_ms(route.idle.own.p95)} ms idle, "
                f"{fmt_ms(route.changed.own.p95)} ms after a change (target ≤ "
                f"{route.target_ms:.0f} ms): {_verdict(route, route.idle, n)} / "
                f"{_verdict(route, route.changed, n)}"
            )


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_web")
    parser.add_argument("--quick", action="store_true", help="100,000 tasks")
    parser.add_argument("--tasks", type=int, default=None, help="tasks (default 1,000,000)")
    parser.add_argument("--requests", type=int, default=50, help="timed requests per route")
    parser.add_argument("--reseed", action="store_true", help="seed again even if reusable")
    return parser.parse_args()


def cli() -> None:
    args = _parse()
    n = args.tasks or (100_000 if args.quick else 1_000_000)
    if n < 1000:
        raise SystemExit("--tasks must be at least 1,000")
    url = os.environ.get("MAHAVISHNU_DLQ_TEST_OPENSEARCH_URL")
    node = None
    if not url:
        node = _node_module().start_node()
        url = node.url
    try:
        asyncio.run(run_all(url, n, max(2, args.requests), args.reseed))
    finally:
        if node is not None:
            node.stop()


if __name__ == "__main__":
    cli()
