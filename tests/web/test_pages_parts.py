"""The pure parts of the pages: the chart's geometry, the filter form, the formats."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from mahavishnu_dlq.models import DeadLetterStatus, ErrorCategory
from mahavishnu_dlq.storage.base import HistogramBucket
from mahavishnu_dlq.web.chart import failure_chart
from mahavishnu_dlq.web.page_data import FilterForm, parse_age, parse_moment, parse_rate
from mahavishnu_dlq.web.render import ago, duration, iso, number

NOW = datetime(2026, 1, 31, 12, 0, tzinfo=timezone.utc)


def buckets(counts: list[dict[str, int]], hours: int = 24) -> list[HistogramBucket]:
    step = timedelta(hours=hours) / len(counts)
    start = NOW - timedelta(hours=hours)
    return [HistogramBucket(start + i * step, dict(c)) for i, c in enumerate(counts)]


def test_bars_stack_categories_bottom_up_in_proportion() -> None:
    data: list[dict[str, int]] = [{}] * 22 + [{"network": 3, "transient": 1}, {"permanent": 8}]
    chart = failure_chart("24h", "Last 24 hours", buckets(data), 24)
    assert len(chart.bars) == 24
    assert chart.total == 12
    assert [t.label for t in chart.y_ticks] == ["0", "2", "4", "6", "8"]
    busy = chart.bars[22]
    assert [s.category for s in busy.segments] == ["transient", "network"]  # enum order
    transient, network = busy.segments
    assert transient.y + transient.height == pytest.approx(chart.plot_bottom)
    assert network.y + network.height == pytest.approx(transient.y)
    assert network.height == pytest.approx(3 * transient.height)
    tallest = chart.bars[23].segments[0]
    assert tallest.y == pytest.approx(chart.plot_top)  # the peak fills the plot
    assert "4 failures" in busy.title
    assert "network 3" in busy.title
    assert chart.bars[0].segments == []
    assert "0 failures" in chart.bars[0].title
    assert "12 failures in total" in chart.aria_label
    assert {item.category for item in chart.legend} == {c.value for c in ErrorCategory}
    xs = [bar.x for bar in chart.bars]
    assert xs == sorted(xs)
    assert xs[0] >= chart.plot_left
    assert xs[-1] + chart.bars[-1].width <= chart.plot_right


def test_an_empty_week_still_draws_every_bucket() -> None:
    chart = failure_chart("7d", "Last 7 days", buckets([{}] * 28, hours=168), 168)
    assert len(chart.bars) == 28
    assert chart.total == 0
    assert [t.label for t in chart.y_ticks] == ["0", "1"]
    assert len(chart.x_ticks) == 7  # one a day
    assert "over the last 7 days" in chart.aria_label
    assert "6 hours each" in chart.aria_label


def test_a_big_peak_gets_round_ticks_and_an_unknown_category_shows() -> None:
    chart = failure_chart("24h", "x", buckets([{"cosmic": 1234}] + [{}] * 23), 24)
    labels = [t.label for t in chart.y_ticks]
    assert labels[0] == "0"
    assert int(labels[-1].replace(",", "")) >= 1234
    assert len(labels) <= 6
    assert chart.bars[0].segments[0].category == "cosmic"
    assert "cosmic" in [item.category for item in chart.legend]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("15m", 900), ("2h", 7200), ("7d", 604800), ("1h30m", 5400), ("2w", 1209600)],
)
def test_ages(text: str, seconds: int) -> None:
    assert parse_age(text) == timedelta(seconds=seconds)
    assert parse_moment(text, NOW) == NOW - timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "h", "2 hours", "-2h", "99999999w", "1e400s"])
def test_not_ages(text: str) -> None:
    assert parse_age(text) is None


def test_moments_are_iso_times_utc_unless_zoned() -> None:
    assert parse_moment("2026-01-02", NOW) == datetime(2026, 1, 2, tzinfo=timezone.utc)
    assert parse_moment("2026-01-02T03:04Z", NOW) == datetime(2026, 1, 2, 3, 4, tzinfo=timezone.utc)
    zoned = parse_moment("2026-01-02T03:04+02:00", NOW)
    assert zoned == datetime(2026, 1, 2, 1, 4, tzinfo=timezone.utc)
    with pytest.raises(ValueError, match="ISO time"):
        parse_moment("last tuesday", NOW)


@pytest.mark.parametrize(("text", "rate"), [("", None), (" 5 ", 5.0), ("0.5", 0.5)])
def test_rates(text: str, rate: float | None) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["0", "-1", "abc", "inf", "nan", "1e9", "0.0001"])
def test_bad_rates(text: str) -> None:
    with pytest.raises(ValueError, match="rate"):
        parse_rate(text)


def test_a_filter_form_round_trips_and_reports_each_bad_field() -> None:
    fields = {
        "status": ["pending", "pending", "exhausted"],
        "category": ["network"],
        "workflow": [" a, b ,a "],
        "since": ["2h"],
        "text": ["boom"],
        "ignored": ["x"],
    }
    form = FilterForm.of(fields)
    assert form.items() == [
        ("status", "pending"),
        ("status", "exhausted"),
        ("category", "network"),
        ("workflow", "a, b ,a"),
        ("since", "2h"),
        ("text", "boom"),
    ]
    flt = form.to_filter(NOW)
    assert flt is not None
    assert flt.status == (DeadLetterStatus.PENDING, DeadLetterStatus.EXHAUSTED)
    assert flt.error_category == (ErrorCategory.NETWORK,)
    assert flt.workflow == ("a", "b")
    assert flt.since == NOW - timedelta(hours=2)
    assert FilterForm.of_filter(flt).to_filter(NOW) == flt
    bad = FilterForm.of({"status": ["nope"], "until": ["soon"], "fingerprint": ["x" * 1001]})
    assert bad.to_filter(NOW) is None
    assert set(bad.errors) == {"status", "until", "fingerprint"}
    assert FilterForm().empty
    assert FilterForm().to_filter(NOW) is not None


def test_formats() -> None:
    assert number(1234567) == "1,234,567"
    assert number(None) == "—"
    assert number(2.5) == "2.50"
    assert iso(NOW) == "2026-01-31T12:00:00Z"
    assert duration(0.25) == "250 ms"
    assert duration(3725) == "1h 2m"
    assert duration(90061) == "1d 1h"
    assert ago(NOW - timedelta(minutes=5, seconds=10), NOW) == "5m ago"
    assert ago(NOW + timedelta(hours=2), NOW) == "in 2h"
    assert ago(NOW, NOW) == "just now"
