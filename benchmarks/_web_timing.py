"""Timing for ``benchmarks.bench_web``: each call beside its baseline, request by
request (:func:`interleaved`), milliseconds per call (:class:`Samples`, p95 by
nearest rank) and how a time is printed (:func:`fmt_ms`).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from benchmarks._web_common import Touch

__all__ = ["Call", "Samples", "Timed", "fmt_ms", "interleaved", "percentile", "timed_ms"]

Call = Callable[[], Awaitable[Any]]


async def timed_ms(call: Call) -> float:
    started = time.perf_counter()
    await call()
    return (time.perf_counter() - started) * 1000


def percentile(samples: list[float], fraction: float) -> float:
    """Nearest rank: the smallest sample with at least ``fraction`` of them at or below it."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


@dataclass
class Samples:
    """Milliseconds per call, one per timed request."""

    ms: list[float] = field(default_factory=list)

    @property
    def p50(self) -> float:
        return statistics.median(self.ms)

    @property
    def p95(self) -> float:
        return percentile(self.ms, 0.95)

    @property
    def max(self) -> float:
        return max(self.ms)


@dataclass
class Timed:
    """One thing timed beside its baseline, in one condition of the index."""

    own: Samples = field(default_factory=Samples)
    bare: Samples = field(default_factory=Samples)

    @property
    def ratio(self) -> float:
        return self.own.p95 / self.bare.p95


async def interleaved(
    pairs: list[tuple[Call, Call | None]],
    requests: int,
    *,
    warm_up: int,
    touch: Touch | None = None,
) -> list[Timed]:
    """Each call and its baseline, ``requests`` times, request by request in turn (who
    goes first alternates), after ``warm_up`` untimed calls of each (the node's caches
    and JIT); with ``touch``, each timed call follows a change of the index (untimed)."""
    for call, bare in pairs:
        for _ in range(warm_up):
            await call()
            if bare is not None:
                await bare()
    timed = [Timed() for _ in pairs]
    for i in range(requests):
        for (call, bare), into in zip(pairs, timed, strict=True):
            runs: list[tuple[Samples, Call]] = [(into.own, call)]
            if bare is not None:
                runs.append((into.bare, bare))
            for samples, run in runs if i % 2 == 0 else reversed(runs):
                if touch is not None:
                    await touch()
                samples.ms.append(await timed_ms(run))
    return timed


def fmt_ms(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"
