"""The failure chart of the overview: stacked bars per time bucket, one colour per category.

:func:`failure_chart` turns the buckets of ``failure_histogram`` into geometry —
one bar group per bucket, one segment per category stacked bottom-up in the
order of :class:`~mahavishnu_dlq.models.ErrorCategory`, a y axis with round
ticks, an x axis with a label every few buckets, a legend with totals — and
``_chart.html`` draws it as an SVG (``role="img"``, an ``aria-label`` saying what
it shows, a ``<title>`` tooltip per bucket and per segment). Colours come from
CSS classes (``cat-<category>``) so the light and dark themes pick their own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from mahavishnu_dlq.models import ErrorCategory
from mahavishnu_dlq.storage.base import HistogramBucket

__all__ = ["Bar", "Chart", "Segment", "Tick", "failure_chart"]

WIDTH, HEIGHT = 640, 220
_LEFT, _RIGHT, _TOP, _BOTTOM = 44, 8, 12, 30
_CATEGORIES = [c.value for c in ErrorCategory]


@dataclass(frozen=True)
class Segment:
    """One category's part of a bar."""

    category: str
    count: int
    y: float
    height: float
    title: str


@dataclass(frozen=True)
class Bar:
    """One bucket: its column, its segments and its tooltip."""

    index: int
    start: datetime
    x: float
    width: float
    total: int
    title: str
    segments: list[Segment]

    def count_of(self, category: str) -> int:
        """This bucket's failures of ``category`` (0 when it has none)."""
        return next((s.count for s in self.segments if s.category == category), 0)


@dataclass(frozen=True)
class Tick:
    """An axis label and where it goes (y for the value axis, x for the time axis)."""

    at: float
    label: str


@dataclass(frozen=True)
class LegendItem:
    """A category of the legend and its total over the chart."""

    category: str
    total: int


@dataclass(frozen=True)
class Chart:
    """What ``_chart.html`` draws."""

    key: str
    caption: str
    aria_label: str
    width: int
    height: int
    plot_left: float
    plot_top: float
    plot_right: float
    plot_bottom: float
    bars: list[Bar]
    y_ticks: list[Tick]
    x_ticks: list[Tick]
    legend: list[LegendItem]
    total: int


def _scale_top(peak: int) -> tuple[int, int]:
    """A round top for the y axis at or above ``peak`` and its tick step."""
    if peak <= 4:
        return max(peak, 1), 1
    magnitude = 10 ** math.floor(math.log10(peak / 4))
    for factor in (1, 2, 5, 10):
        step = factor * magnitude
        if step * 4 >= peak:
            return step * math.ceil(peak / step), step
    return peak, peak  # pragma: no cover - factor 10 always fits


#: Spans between time labels, shortest first (seconds): a few hours to a week.
_LABEL_SPANS = (3600, 7200, 10800, 14400, 21600, 43200, 86400, 172800, 604800)
_MAX_LABELS = 7


def _label_every(count: int, step: timedelta) -> int:
    """Label every n-th bucket: the shortest round span (4 hours, a day …) that is a
    whole number of buckets and leaves at most seven labels."""
    seconds = step.total_seconds()
    for span in _LABEL_SPANS:
        ratio = span / seconds if seconds else 0.0
        if ratio >= 1 and ratio.is_integer() and math.ceil(count / ratio) <= _MAX_LABELS:
            return int(ratio)
    return max(1, math.ceil(count / (_MAX_LABELS - 1)))


def _span_label(start: datetime, end: datetime) -> str:
    same_day = start.date() == end.date() or end - start <= timedelta(hours=1)
    if same_day:
        return f"{start:%Y-%m-%d %H:%M} to {end:%H:%M} UTC"
    return f"{start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC"


def _step_words(step: timedelta) -> str:
    minutes = round(step.total_seconds() / 60)
    if minutes >= 60 and minutes % 60 == 0:
        return _plural(minutes // 60, "hour")
    return _plural(max(minutes, 1), "minute")


def _plural(count: int, word: str) -> str:
    return f"{count:,} {word}{'' if count == 1 else 's'}"


def failure_chart(key: str, caption: str, buckets: Sequence[HistogramBucket], hours: int) -> Chart:
    """The chart of ``buckets`` (the last ``hours`` hours); ``key`` names it in the page."""
    count = len(buckets)
    step = timedelta(hours=hours) / max(count, 1)
    starts = [b.start.astimezone(timezone.utc) for b in buckets]
    categories = list(_CATEGORIES)
    for bucket in buckets:  # a category this version does not know still shows
        categories += sorted(c for c in bucket.by_category if c not in categories)
    totals = [sum(b.by_category.values()) for b in buckets]
    top, tick_step = _scale_top(max(totals, default=0))
    left, right = float(_LEFT), float(WIDTH - _RIGHT)
    upper, lower = float(_TOP), float(HEIGHT - _BOTTOM)
    slot = (right - left) / max(count, 1)
    gap = min(4.0, slot * 0.2)
    bars = []
    for index, bucket in enumerate(buckets):
        start = starts[index]
        end = starts[index + 1] if index + 1 < count else start + step
        span = _span_label(start, end)
        y = lower
        segments = []
        for category in categories:
            amount = bucket.by_category.get(category, 0)
            if amount <= 0:
                continue
            height = (lower - upper) * amount / top
            y -= height
            segments.append(
                Segment(
                    category,
                    amount,
                    round(y, 2),
                    round(height, 2),
                    f"{span}: {category} {amount:,}",
                )
            )
        parts = ", ".join(f"{s.category} {s.count:,}" for s in segments)
        title = f"{span}: {_plural(totals[index], 'failure')}" + (f" ({parts})" if parts else "")
        bars.append(
            Bar(
                index=index,
                start=start,
                x=round(left + index * slot + gap / 2, 2),
                width=round(max(slot - gap, 1.0), 2),
                total=totals[index],
                title=title,
                segments=segments,
            )
        )
    y_ticks = [
        Tick(round(lower - (lower - upper) * value / top, 2), f"{value:,}")
        for value in range(0, top + 1, tick_step)
    ]
    every = _label_every(count, step)
    time_format = "%H:%M" if hours <= 48 else "%m-%d"
    x_ticks = [
        Tick(round(left + index * slot + slot / 2, 2), f"{starts[index]:{time_format}}")
        for index in range(0, count, every)
    ]
    by_category = {c: sum(b.by_category.get(c, 0) for b in buckets) for c in categories}
    total = sum(totals)
    busiest = max(totals, default=0)
    window = f"{hours} hours" if hours < 48 else f"{hours // 24} days"
    summary = ", ".join(f"{c} {n:,}" for c, n in by_category.items() if n) or "none"
    aria = (
        f"Failures over the last {window} by error category, {count} bars of "
        f"{_step_words(step)} each: "
        f"{_plural(total, 'failure')} in total ({summary}); at most {busiest:,} in one bar."
    )
    return Chart(
        key=key,
        caption=caption,
        aria_label=aria,
        width=WIDTH,
        height=HEIGHT,
        plot_left=left,
        plot_top=upper,
        plot_right=right,
        plot_bottom=lower,
        bars=bars,
        y_ticks=y_ticks,
        x_ticks=x_ticks,
        legend=[LegendItem(c, n) for c, n in by_category.items() if n or c in _CATEGORIES],
        total=total,
    )
