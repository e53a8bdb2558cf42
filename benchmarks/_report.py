"""Results of the benchmarks and their Markdown tables.

A :class:`Timing` holds nanoseconds per operation, one value per repetition; a
:class:`Row` puts a timing next to its baseline, ratio and target; a
:class:`MemoryRow` does the same for bytes per stored task. The tables are
Markdown so that they can be pasted into ``docs/performance.md``.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "MemoryRow",
    "Report",
    "Row",
    "Timing",
    "fmt_ops",
    "fmt_size",
    "fmt_us",
    "memory_table",
    "timing_table",
    "verdict",
]


@dataclass(frozen=True)
class Timing:
    """Nanoseconds per operation, one value per repetition (timed block)."""

    per_op_ns: tuple[float, ...]

    @property
    def median_us(self) -> float:
        return statistics.median(self.per_op_ns) / 1000.0

    @property
    def min_us(self) -> float:
        return min(self.per_op_ns) / 1000.0

    @property
    def ops_per_s(self) -> float:
        return 1e6 / self.median_us if self.median_us > 0 else float("inf")


@dataclass
class Row:
    """One line of a timing table."""

    section: str
    benchmark: str
    size: int
    timing: Timing
    baseline: str = "—"
    ratio: float | None = None
    target: str = "—"
    result: str = "—"
    overhead_us: float | None = None  # median of paired (variant - bare) differences
    overhead_min_us: float | None = None  # min(variant) - min(bare): the quiet-machine cost

    def to_json(self) -> dict[str, Any]:
        return {
            "section": self.section,
            "benchmark": self.benchmark,
            "size": self.size,
            "ops_per_s": self.timing.ops_per_s,
            "us_per_op_median": self.timing.median_us,
            "us_per_op_min": self.timing.min_us,
            "repetitions": len(self.timing.per_op_ns),
            "overhead_us": self.overhead_us,
            "overhead_min_us": self.overhead_min_us,
            "baseline": self.baseline,
            "ratio": self.ratio,
            "target": self.target,
            "result": self.result,
        }


@dataclass
class MemoryRow:
    """One line of the memory table (bytes per stored task)."""

    benchmark: str
    size: int
    method: str
    payload: float
    measured: float
    baseline: str = "—"
    ratio: float | None = None
    target: str = "—"
    result: str = "—"

    @property
    def beyond(self) -> float:
        return self.measured - self.payload

    def to_json(self) -> dict[str, Any]:
        return {
            "section": "4",
            "benchmark": self.benchmark,
            "size": self.size,
            "method": self.method,
            "payload_bytes_per_task": self.payload,
            "measured_bytes_per_task": self.measured,
            "beyond_payload_bytes_per_task": self.beyond,
            "baseline": self.baseline,
            "ratio": self.ratio,
            "target": self.target,
            "result": self.result,
        }


@dataclass
class Report:
    """Everything one run measured, in the order it was printed."""

    rows: list[Row] = field(default_factory=list)
    memory: list[MemoryRow] = field(default_factory=list)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def fmt_us(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def fmt_ops(value: float) -> str:
    return f"{value:,.0f}"


def fmt_size(value: int) -> str:
    if value >= 1_000_000 and value % 1_000_000 == 0:
        return f"{value // 1_000_000}M"
    if value >= 1_000 and value % 1_000 == 0:
        return f"{value // 1_000}k"
    return str(value)


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}x"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], numeric: set[int]) -> str:
    widths = [max([len(h), *(len(row[i]) for row in rows)]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        padded = (
            cell.rjust(width) if i in numeric else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        )
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join(
        ("-" * (w + 1) + ":") if i in numeric else ("-" * (w + 2)) for i, w in enumerate(widths)
    )
    return "\n".join([line(headers), rule + "|", *(line(row) for row in rows)])


def timing_table(rows: Sequence[Row], *, overhead: bool) -> str:
    headers = ["benchmark", "size", "ops/s", "µs/op (median)", "µs/op (min)"]
    if overhead:
        headers += ["overhead µs/call (median)", "overhead (min)"]
    headers += ["baseline", "ratio", "target", "result"]
    cells = []
    for row in rows:
        line = [
            row.benchmark,
            fmt_size(row.size),
            fmt_ops(row.timing.ops_per_s),
            fmt_us(row.timing.median_us),
            fmt_us(row.timing.min_us),
        ]
        if overhead:
            line += [
                "—" if v is None else fmt_us(v) for v in (row.overhead_us, row.overhead_min_us)
            ]
        line += [row.baseline, _ratio(row.ratio), row.target, row.result]
        cells.append(line)
    numeric = {1, 2, 3, 4, 5, 6} if overhead else {1, 2, 3, 4}
    return _table(headers, cells, numeric)


def memory_table(rows: Sequence[MemoryRow]) -> str:
    headers = [
        "benchmark",
        "size",
        "method",
        "payload B/task",
        "measured B/task",
        "beyond payload B/task",
        "baseline",
        "ratio",
        "target",
        "result",
    ]
    cells = [
        [
            row.benchmark,
            fmt_size(row.size),
            row.method,
            f"{row.payload:,.0f}",
            f"{row.measured:,.0f}",
            f"{row.beyond:,.0f}",
            row.baseline,
            _ratio(row.ratio),
            row.target,
            row.result,
        ]
        for row in rows
    ]
    return _table(headers, cells, {1, 3, 4, 5})
