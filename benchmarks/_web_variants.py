"""Variants of the store's searches for ``benchmarks.bench_web`` (section 3): the
overview's searches as the store sends them, by the bare client, against the
request cache and against changed bodies (:func:`search_variants`,
:func:`time_variants`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from benchmarks._web_common import Bare
from benchmarks._web_timing import Call, Timed, interleaved
from mahavishnu_dlq.models import TaskFilter
from mahavishnu_dlq.storage import opensearch_query as q
from mahavishnu_dlq.storage.aggregations import histogram_buckets
from mahavishnu_dlq.storage.opensearch_reads import groups_body, histogram_body

__all__ = ["Variant", "search_variants", "time_variants"]


@dataclass
class Variant:
    """A search as the store sends it beside a variant of it, both by the bare client."""

    name: str
    body: dict[str, Any]
    variant: str
    changed: dict[str, Any] | None  # None: the same search with the request cache on
    comparable: bool = False  # the variant should give the same aggregations
    timed: Timed = field(default_factory=Timed)  # own: as the store sends it; bare: variant
    same: bool | None = None  # whether it did


def _changed(body: dict[str, Any], change: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    changed = copy.deepcopy(body)
    change(changed)
    return changed


def _breadth_first(body: dict[str, Any]) -> None:
    body["aggs"]["fp"]["terms"]["collect_mode"] = "breadth_first"


def _without_readable(body: dict[str, Any]) -> None:
    clauses = body["query"]["bool"]["filter"]
    body["query"]["bool"]["filter"] = clauses[:-1]  # readable_query() comes last


def search_variants(now: datetime, open_filter: TaskFilter) -> list[Variant]:
    """The overview's searches against what the request cache, or a change, makes of them."""
    week = histogram_body(histogram_buckets(now - timedelta(days=7), now, timedelta(hours=6)))
    stats = q.statistics_body(5)
    groups_5, groups_50 = groups_body(open_filter, 5), groups_body(open_filter, 50)
    return [
        Variant("statistics search", stats, "request cache on (default)", None),
        Variant("groups search (limit 5)", groups_5, "request cache on (default)", None),
        Variant(
            "statistics search",
            stats,
            "`top_fingerprints=0` (no `open` aggregation: the overview does not show it)",
            q.statistics_body(0),
        ),
        Variant(
            "statistics search",
            stats,
            "without the `unreadable` count (what it costs)",
            _changed(stats, lambda body: body["aggs"].pop("unreadable")),
        ),
        Variant(
            "groups search (limit 50)",
            groups_50,
            "`fp` terms `collect_mode: breadth_first`",
            _changed(groups_50, _breadth_first),
            comparable=True,
        ),
        Variant(
            "histogram search (7 days)",
            week,
            "without `readable_query()` (what it costs)",
            _changed(week, _without_readable),
            comparable=True,
        ),
    ]


async def time_variants(bare: Bare, found: list[Variant], requests: int, warm_up: int) -> None:
    """Each search as the store sends it, the request cache off (as after a change),
    against its variant (the same way, or with the cache on for the cache rows)."""
    pairs: list[tuple[Call, Call | None]] = []
    for variant in found:
        as_sent = partial(bare.search, variant.body, request_cache="false")
        if variant.changed is None:
            pairs.append((as_sent, partial(bare.search, variant.body)))
        else:
            pairs.append((as_sent, partial(bare.search, variant.changed, request_cache="false")))
    timings = await interleaved(pairs, requests, warm_up=warm_up)
    for variant, timed in zip(found, timings, strict=True):
        variant.timed = timed
        if variant.comparable and variant.changed is not None:
            one = await bare.search(variant.body)
            other = await bare.search(variant.changed)
            variant.same = one["aggregations"] == other["aggregations"]
