"""Section 2 of ``benchmarks.bench_web``, where the time goes: each queue call of the
overview and of the task pages (:class:`Part`) timed alone beside its bare read, on
the idle index and after a change; the overview's calls at once, in turn, and at
once without the statistics' top fingerprints.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from functools import partial

from benchmarks._web_console import Console, Filters
from benchmarks._web_timing import Call, Timed, fmt_ms, interleaved
from mahavishnu_dlq.insights import OPEN
from mahavishnu_dlq.models import TaskFilter
from mahavishnu_dlq.storage import opensearch_query as q
from mahavishnu_dlq.storage.opensearch import OpenSearchStore

__all__ = ["Part", "overview_parts", "part_rows", "section_parts", "task_page_parts"]


@dataclass
class Part:
    name: str
    call: Call
    bare_name: str
    bare: Call
    idle: Timed = field(default_factory=Timed)
    changed: Timed = field(default_factory=Timed)


def overview_parts(console: Console, flt: Filters) -> list[Part]:
    dlq, bare, clock = console.dlq, console.bare, console.clock
    store = dlq.store
    assert isinstance(store, OpenSearchStore)

    charts_and_groups: list[Call] = [  # what the page awaits beside get_statistics()
        partial(dlq.failure_histogram, hours=24, buckets=24),
        partial(dlq.failure_histogram, hours=168, buckets=28),
        partial(dlq.fingerprint_groups, status=list(OPEN), limit=5),
    ]
    page_stats: Call = partial(dlq.get_statistics, top_fingerprints=0)  # as the page asks

    async def in_turn() -> None:
        for read in (page_stats, *charts_and_groups):
            await read()

    async def at_once() -> None:
        await asyncio.gather(*(read() for read in [page_stats, *charts_and_groups]))

    async def with_top_fingerprints() -> None:
        """What the page awaited before it asked for the statistics without the top
        fingerprints (which it does not show)."""
        await asyncio.gather(*(read() for read in [dlq.get_statistics, *charts_and_groups]))

    return [
        Part(
            "`get_statistics()`",
            dlq.get_statistics,
            "statistics search + breakers",
            bare.statistics,
        ),
        Part(
            "  of which `store.statistics()` (one search)",
            store.statistics,
            "statistics search",
            partial(bare.search, q.statistics_body(5)),
        ),
        Part(
            "  of which the breakers (`downstream.breakers()`)",
            dlq.downstream.breakers,
            "refresh + search of `-controls`",
            bare.breakers,
        ),
        Part(
            "`failure_histogram(hours=24, buckets=24)`",
            partial(dlq.failure_histogram, hours=24, buckets=24),
            "histogram search",
            lambda: bare.histogram(clock.now(), 24, 24),
        ),
        Part(
            "`failure_histogram(hours=168, buckets=28)`",
            partial(dlq.failure_histogram, hours=168, buckets=28),
            "histogram search",
            lambda: bare.histogram(clock.now(), 168, 28),
        ),
        Part(
            "`fingerprint_groups(status=open, limit=5)`",
            partial(dlq.fingerprint_groups, status=list(OPEN), limit=5),
            "groups search",
            partial(bare.groups, flt.open, 5),
        ),
        Part(
            "the four at once, statistics without top fingerprints (the page)",
            at_once,
            "the reads at once, `statistics_body(0)`",
            lambda: bare.overview(clock.now(), flt.open, together=True, top_fingerprints=0),
        ),
        Part(
            "the four in turn (for comparison)",
            in_turn,
            "the reads in turn, `statistics_body(0)`",
            lambda: bare.overview(clock.now(), flt.open, together=False, top_fingerprints=0),
        ),
        Part(
            "the four at once with top fingerprints (the page before)",
            with_top_fingerprints,
            "the reads at once, `statistics_body(5)`",
            lambda: bare.overview(clock.now(), flt.open, together=True),
        ),
    ]


def task_page_parts(console: Console, flt: Filters) -> list[Part]:
    dlq, bare = console.dlq, console.bare
    parts = []
    for label, chosen in (("status+workflow+since", flt.listed), ("status+text", flt.text)):

        async def listing(chosen: TaskFilter = chosen) -> None:
            await dlq.list_tasks(
                chosen.status, 50, workflow=chosen.workflow, since=chosen.since, text=chosen.text
            )

        parts += [
            Part(
                f"`list_tasks(…, limit=50)`, {label}",
                listing,
                "search (size 51, sorted)",
                partial(bare.listing, chosen, 50),
            ),
            Part(
                f"`count_tasks(…)`, {label}",
                partial(dlq.count_tasks, chosen),
                "`_count`",
                partial(bare.count, chosen),
            ),
        ]
    return parts


async def section_parts(console: Console, parts: list[Part], requests: int, warm_up: int) -> None:
    """Each part beside its bare read, ``requests`` times after ``warm_up`` untimed
    calls: on the idle index, then with each request after a change."""
    pairs: list[tuple[Call, Call | None]] = [(part.call, part.bare) for part in parts]
    idle = await interleaved(pairs, requests, warm_up=warm_up)
    for part, timed in zip(parts, idle, strict=True):
        part.idle = timed
    changed = await interleaved(pairs, requests, warm_up=warm_up, touch=console.touch)
    for part, timed in zip(parts, changed, strict=True):
        part.changed = timed


def part_rows(parts: list[Part]) -> list[list[str]]:
    return [
        [
            part.name,
            fmt_ms(part.idle.own.p50),
            fmt_ms(part.idle.own.p95),
            fmt_ms(part.idle.bare.p95),
            fmt_ms(part.changed.own.p50),
            fmt_ms(part.changed.own.p95),
            fmt_ms(part.changed.bare.p95),
            part.bare_name,
        ]
        for part in parts
    ]
