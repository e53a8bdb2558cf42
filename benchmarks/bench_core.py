"""Core benchmarks of mahavishnu_dlq, each measured next to its baseline in the same run.

Run ``python -m benchmarks.bench_core [--quick] [--sizes 10000,100000,1000000] [--json FILE]``.

1. Success-path overhead of ``execute_with_dlq``, ``@dlq.workflow`` and ``dlq.guard``
   against a bare ``await fn(task, repos)`` and tenacity (``AsyncRetrying`` and ``@retry``).
2. ``enqueue`` throughput and ``get_task`` latency while one in-memory queue grows
   to each size, next to the floor of storing/reading a JSON string in a dict.
3. ``RetryProcessor.drain()`` throughput on due no-op tasks, next to a plain loop
   awaiting the same handler (and the anyio scheduling it needs, without the store).
4. Memory per stored task beyond its payload (RSS delta, and tracemalloc on a sample).

Method: ``time.perf_counter_ns`` around blocks of operations; each block is one
repetition and a row shows the median and the minimum time per operation over its
blocks. Baselines run interleaved with what they are compared with, so the
*ratios* hold up on a noisy shared machine better than the absolute numbers.
This is a measurement, not a test: nothing here fails a build. Tables are
Markdown, ready to paste into ``docs/performance.md``.

``--profile`` prints a cProfile of enqueue and of drain instead of the tables.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import hashlib
import io
import json
import os
import platform
import pstats
import random
import statistics
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from typing import Any

import anyio
from tenacity import AsyncRetrying, retry, stop_after_attempt

import mahavishnu_dlq
from benchmarks._report import (
    MemoryRow,
    Report,
    Row,
    Timing,
    fmt_ops,
    fmt_size,
    fmt_us,
    memory_table,
    timing_table,
    verdict,
)
from mahavishnu_dlq import DeadLetterQueue, FailedTask, Failure, RetryPolicy, RetryProcessor

__all__ = ["main"]

TASK: dict[str, Any] = {"order": 1}
REPOS: list[str] = ["repo"]
ERROR = "connection reset by peer"
HANDLER = "bench.noop"
_SEP = (",", ":")

# Targets from the performance issue.
OVERHEAD_TARGET_US = 5.0
ENQUEUE_TARGET_OPS = 100_000.0
FLAT_TARGET_RATIO = 1.5
DRAIN_TARGET_OPS = 20_000.0
MEMORY_TARGET_BYTES = 1536.0
ENQUEUE_WINDOW = 100_000  # enqueue throughput: the last this many enqueues before a size

Loop = Callable[[int], Awaitable[None]]


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class Config:
    """How much work each section does."""

    quick: bool
    sizes: tuple[int, ...]
    calls: int  # section 1: calls per variant, split into call_reps blocks
    call_reps: int
    chunk: int  # section 2: operations per timed block
    lookups: int  # section 2: get_task lookups per size
    exc_ops: int  # section 2: exception-error enqueues per size (and as many paired strings)
    proc_tasks: int  # section 3: due tasks per drain
    proc_reps: int
    batch_size: int
    memory_sample: int  # section 4: tasks enqueued under tracemalloc
    seed: int

    @classmethod
    def build(cls, *, quick: bool, sizes: tuple[int, ...] | None, seed: int) -> Config:
        if quick:
            return cls(
                quick=True,
                sizes=sizes or (10_000, 50_000),
                calls=20_000,
                call_reps=5,
                chunk=1_000,
                lookups=10_000,
                exc_ops=2_000,
                proc_tasks=2_000,
                proc_reps=3,
                batch_size=1_000,
                memory_sample=5_000,
                seed=seed,
            )
        return cls(
            quick=False,
            sizes=sizes or (10_000, 100_000, 1_000_000),
            calls=200_000,
            call_reps=10,
            chunk=1_000,
            lookups=100_000,
            exc_ops=10_000,
            proc_tasks=20_000,
            proc_reps=3,
            batch_size=1_000,
            memory_sample=20_000,
            seed=seed,
        )


def _parse_size(text: str) -> int:
    text = text.strip().lower().replace("_", "")
    scale = 1
    if text.endswith("k"):
        text, scale = text[:-1], 1_000
    elif text.endswith("m"):
        text, scale = text[:-1], 1_000_000
    value = int(float(text) * scale)
    if value < 1:
        raise argparse.ArgumentTypeError(f"sizes must be >= 1, got {text!r}")
    return value


def _parse_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(sorted({_parse_size(part) for part in text.split(",") if part.strip()}))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"bad --sizes {text!r}: {exc}") from exc
    if not sizes:
        raise argparse.ArgumentTypeError("--sizes needs at least one size")
    return sizes


# --------------------------------------------------------------------------- helpers


def _now_ns() -> int:
    return time.perf_counter_ns()


def _tid(k: int) -> str:
    return f"task-{k:08d}"


def _rss_bytes() -> int | None:
    """Resident set size from /proc/self/statm (Linux); None elsewhere."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            resident_pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def _dumps(value: dict[str, Any]) -> str:
    return json.dumps(value, separators=_SEP, ensure_ascii=False)


def _payload_bytes(task: FailedTask) -> int:
    """The task's input and metadata as the memory store keeps them: compact JSON."""
    return len(_dumps(task.task).encode()) + len(_dumps(task.metadata).encode())


def _progress(text: str) -> None:
    print(f"  … {text}", file=sys.stderr, flush=True)


@cache
def _source_digest() -> str:
    """A short hash of the measured package's sources, to tell which code a table is from.

    Computed once, when the run starts (the package is imported by then).
    """
    root = Path(mahavishnu_dlq.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def _loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


async def work(task: dict[str, Any], repos: list[str]) -> int:
    """The trivial workflow of section 1."""
    return len(repos)


async def noop(task: dict[str, Any], repos: list[str]) -> None:
    """The trivial retry handler of section 3."""


# --------------------------------------------------------------------------- 1. call overhead


BARE = "bare `await fn(task, repos)`"
DLQ_WRAPPERS = (
    "`dlq.execute_with_dlq(fn, task, repos)`",
    "`@dlq.workflow` wrapper",
    "`async with dlq.guard(...)`",
)
TENACITY = ("tenacity `AsyncRetrying` loop", "tenacity `@retry` decorator")
TRACED = "`dlq.execute_with_dlq`, OTel SDK tracer + span processor"


def _sdk_traced_queue() -> DeadLetterQueue:
    """A queue whose spans go to an SDK tracer provider with a (do-nothing) span processor:
    what tracing costs once a host installs the SDK (exporting is the exporter's cost)."""
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider  # noqa: PLC0415

    provider = TracerProvider()
    provider.add_span_processor(SpanProcessor())
    return DeadLetterQueue(tracer_provider=provider)


def _call_loops(dlq: DeadLetterQueue) -> dict[str, Loop]:
    """Each loop awaits the trivial workflow ``n`` times, wrapped one way."""
    traced = _sdk_traced_queue()
    wrapped = dlq.workflow("bench.work")(work)
    retried = retry(stop=stop_after_attempt(3))(work)

    async def bare(n: int) -> None:
        for _ in range(n):
            await work(TASK, REPOS)

    async def execute(n: int) -> None:
        for _ in range(n):
            await dlq.execute_with_dlq(work, TASK, REPOS)

    async def workflow(n: int) -> None:
        for _ in range(n):
            await wrapped(TASK, REPOS)

    async def guarded(n: int) -> None:
        for _ in range(n):
            async with dlq.guard("bench-guard", TASK, REPOS):
                await work(TASK, REPOS)

    async def traced_execute(n: int) -> None:
        for _ in range(n):
            await traced.execute_with_dlq(work, TASK, REPOS)

    async def tenacity_loop(n: int) -> None:
        for _ in range(n):
            async for attempt in AsyncRetrying(stop=stop_after_attempt(3)):
                with attempt:
                    await work(TASK, REPOS)

    async def tenacity_decorator(n: int) -> None:
        for _ in range(n):
            await retried(TASK, REPOS)

    loops = (bare, execute, workflow, guarded, tenacity_loop, tenacity_decorator, traced_execute)
    return dict(zip((BARE, *DLQ_WRAPPERS, *TENACITY, TRACED), loops, strict=True))


async def bench_calls(cfg: Config, report: Report) -> None:
    dlq = DeadLetterQueue()
    loops = _call_loops(dlq)
    names = list(loops)
    per_block = max(1, cfg.calls // cfg.call_reps)
    for name in names:  # warm-up: caches, lazy imports, code objects
        await loops[name](min(2_000, per_block))
    samples: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(cfg.call_reps):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:  # rotate who runs first
            gc.collect()
            start = _now_ns()
            await loops[name](per_block)
            samples[name].append((_now_ns() - start) / per_block)
    assert await dlq.store.count() == 0, "the success path stored something"

    bare = samples[BARE]

    def overhead(name: str) -> float:
        # Median of the per-repetition differences (each block paired with the bare
        # block of the same round), in µs.
        diffs = [w - b for w, b in zip(samples[name], bare, strict=True)]
        return statistics.median(diffs) / 1000.0

    def overhead_min(name: str) -> float:
        return (min(samples[name]) - min(bare)) / 1000.0

    tenacity = {name: overhead(name) for name in TENACITY}
    cheapest_name = min(tenacity, key=lambda name: tenacity[name])
    cheapest = tenacity[cheapest_name]
    rows = [Row("1", BARE, cfg.calls, Timing(tuple(bare)), target="(floor)")]
    for name in DLQ_WRAPPERS:
        over = overhead(name)
        rows.append(
            Row(
                "1",
                name,
                cfg.calls,
                Timing(tuple(samples[name])),
                overhead_us=over,
                overhead_min_us=overhead_min(name),
                baseline=f"tenacity overhead {fmt_us(cheapest)} µs",
                ratio=over / cheapest if cheapest > 0 else None,
                target=f"≤ {OVERHEAD_TARGET_US:g} µs and < tenacity",
                result=verdict(over <= OVERHEAD_TARGET_US and over < cheapest),
            )
        )
    bare_us = statistics.median(bare) / 1000.0
    for name in TENACITY:
        over = tenacity[name]
        rows.append(
            Row(
                "1",
                name,
                cfg.calls,
                Timing(tuple(samples[name])),
                overhead_us=over,
                overhead_min_us=overhead_min(name),
                baseline=f"bare {fmt_us(bare_us)} µs",
                ratio=(statistics.median(samples[name]) / 1000.0) / bare_us,
                target="(reference)",
            )
        )
    api_only = overhead(DLQ_WRAPPERS[0])
    traced = overhead(TRACED)
    rows.append(
        Row(
            "1",
            TRACED,
            cfg.calls,
            Timing(tuple(samples[TRACED])),
            overhead_us=traced,
            overhead_min_us=overhead_min(TRACED),
            baseline=f"API only {fmt_us(api_only)} µs",
            ratio=traced / api_only if api_only > 0 else None,
            target="(tracing on: cost of one span)",
        )
    )
    report.rows.extend(rows)
    print(
        "\n## 1. Success-path overhead per call (asyncio, one `anyio.run`)\n\n"
        f"{cfg.calls:,} calls per variant in {cfg.call_reps} blocks of {per_block:,}, "
        "variants interleaved round-robin (the order rotates every round). "
        "overhead = median over rounds of (variant block - bare block of the same round) "
        "per call (the verdict uses it); overhead (min) = fastest variant block - fastest "
        "bare block, what a quiet machine gives. dlq rows: ratio = their overhead ÷ the "
        "cheaper tenacity overhead "
        f"({cheapest_name}). tenacity rows: ratio = their time ÷ bare.\n"
    )
    print(timing_table(rows, overhead=True))


# --------------------------------------------------------------------------- 2. enqueue / get_task


async def _fill(
    dlq: DeadLetterQueue, start: int, stop: int, chunk: int, timed: int = ENQUEUE_WINDOW
) -> Timing:
    """Enqueue string-error tasks ``start``..``stop``; the last ``timed`` are timed in blocks."""
    per_op: list[float] = []
    timed_from = max(start, stop - timed)
    report_every = 100_000 if stop - start >= 200_000 else 0
    k = start
    while k < stop:
        end = min(k + chunk, stop)
        began = _now_ns()
        for i in range(k, end):
            await dlq.enqueue(_tid(i), {"order": i}, REPOS, ERROR)
        if k >= timed_from:
            per_op.append((_now_ns() - began) / (end - k))
        k = end
        if report_every and k % report_every == 0:
            _progress(f"filled {k:,} / {stop:,}")
    return Timing(tuple(per_op))


def _raised(k: int) -> ConnectionResetError:
    try:
        raise ConnectionResetError(104, f"connection reset by peer (order {k})")
    except ConnectionResetError as exc:
        return exc


@dataclass(frozen=True)
class Paired:
    """Section 2's interleaved enqueue variants at one size."""

    exc: Timing  # enqueue with a raised exception
    str_paired: Timing  # enqueue with a string error, the baseline
    many: Timing  # enqueue_many of string-error failures, one batch per block


async def _paired_enqueues(dlq: DeadLetterQueue, size: int, n: int, chunk: int) -> Paired:
    """Exception-error enqueues and enqueue_many batches, alternating block by block
    with string-error enqueues.

    Each kind gets ids of its own, and they are deleted afterwards, so the store is
    back at ``size`` tasks.
    """
    exc_ns: list[float] = []
    str_ns: list[float] = []
    many_ns: list[float] = []
    ids: list[str] = []
    for block, k in enumerate(range(0, n, chunk)):
        m = min(chunk, n - k)
        errors = [_raised(k + i) for i in range(m)]  # raised and caught: with a traceback
        exc_ids = [f"exc-{size}-{k + i}" for i in range(m)]
        str_ids = [f"str-{size}-{k + i}" for i in range(m)]
        many_ids = [f"many-{size}-{k + i}" for i in range(m)]
        ids += exc_ids + str_ids + many_ids

        async def exc_block(exc_ids: list[str] = exc_ids, errors: list[Any] = errors) -> float:
            began = _now_ns()
            for tid, error in zip(exc_ids, errors, strict=True):
                await dlq.enqueue(tid, TASK, REPOS, error)
            return (_now_ns() - began) / len(exc_ids)

        async def str_block(str_ids: list[str] = str_ids) -> float:
            began = _now_ns()
            for tid in str_ids:
                await dlq.enqueue(tid, TASK, REPOS, ERROR)
            return (_now_ns() - began) / len(str_ids)

        async def many_block(many_ids: list[str] = many_ids) -> float:
            began = _now_ns()
            batch = [Failure(tid, TASK, REPOS, ERROR) for tid in many_ids]
            results = await dlq.enqueue_many(batch)
            elapsed = _now_ns() - began
            assert all(isinstance(r, FailedTask) for r in results), "a batch item was refused"
            return elapsed / len(many_ids)

        blocks: list[tuple[list[float], Callable[[], Awaitable[float]]]] = [
            (exc_ns, exc_block),
            (str_ns, str_block),
            (many_ns, many_block),
        ]
        for offset in range(len(blocks)):  # the order rotates every block
            timings, run = blocks[(block + offset) % len(blocks)]
            timings.append(await run())
    for tid in ids:
        await dlq.store.delete(tid)
    return Paired(Timing(tuple(exc_ns)), Timing(tuple(str_ns)), Timing(tuple(many_ns)))


async def _lookups(
    queues: Sequence[tuple[DeadLetterQueue, int]], n: int, chunk: int, rng: random.Random
) -> list[Timing]:
    """``n`` get_task on random ids of each (queue, size), block by block in turn."""
    per_op: list[list[float]] = [[] for _ in queues]
    missing = 0
    for block, k in enumerate(range(0, n, chunk)):
        m = min(chunk, n - k)
        order = list(enumerate(queues))
        if block % 2:
            order.reverse()
        for index, (dlq, size) in order:
            ids = [_tid(rng.randrange(size)) for _ in range(m)]
            began = _now_ns()
            for tid in ids:
                if await dlq.get_task(tid) is None:
                    missing += 1
            per_op[index].append((_now_ns() - began) / m)
    assert missing == 0, f"{missing} lookups missed"
    return [Timing(tuple(values)) for values in per_op]


def _floor_store(size: int, lookups: int, chunk: int, rng: random.Random) -> tuple[Timing, Timing]:
    """The least a JSON-keeping in-memory store does, at the same size as the queue.

    Put: ``d[id] = json.dumps(task)`` while ``d`` grows to ``size`` (the last
    ``chunk * 100`` puts are timed, so the floor costs little even at 1M); get:
    ``json.loads(d[id])`` on random ids.
    """
    rows: dict[str, str] = {}
    put: list[float] = []
    timed_from = max(0, size - 100 * chunk)
    for k in range(0, size, chunk):
        end = min(k + chunk, size)
        began = _now_ns()
        for i in range(k, end):
            rows[_tid(i)] = json.dumps({"order": i}, separators=_SEP)
        if k >= timed_from:
            put.append((_now_ns() - began) / (end - k))
    get: list[float] = []
    for k in range(0, lookups, chunk):
        ids = [_tid(rng.randrange(size)) for _ in range(min(chunk, lookups - k))]
        began = _now_ns()
        for tid in ids:
            json.loads(rows[tid])
        get.append((_now_ns() - began) / len(ids))
    return Timing(tuple(put)), Timing(tuple(get))


@dataclass
class RssWindow:
    """RSS growth while the queue grew from ``start`` to ``stop`` tasks, string errors only."""

    start: int
    stop: int
    rss_before: int | None
    rss_after: int | None = None
    payload: float = 0.0


@dataclass(frozen=True)
class SizeResult:
    """What section 2 measured with the queue at ``size`` tasks."""

    size: int
    grown: int  # string-error enqueues timed on the way to ``size``
    fill: Timing
    paired: Paired
    get: Timing
    get_ref: Timing  # get_task on the small reference queue, interleaved with ``get``
    ref_size: int
    put_floor: Timing
    get_floor: Timing

    def rows(self) -> list[Row]:
        """Its table rows."""
        size = self.size
        enqueue_target = f"≥ {fmt_ops(ENQUEUE_TARGET_OPS)}/s"
        label = "enqueue, str error"
        timed = min(self.grown, ENQUEUE_WINDOW)
        if timed != size:
            label += f" (last {fmt_size(timed)})"
        flat = self.get.median_us / self.get_ref.median_us
        ref = fmt_size(self.ref_size)
        return [
            Row(
                "2",
                label,
                size,
                self.fill,
                baseline=f"floor put {fmt_us(self.put_floor.median_us)} µs",
                ratio=self.fill.median_us / self.put_floor.median_us,
                target=enqueue_target,
                result=verdict(self.fill.ops_per_s >= ENQUEUE_TARGET_OPS),
            ),
            Row(
                "2",
                "enqueue, raised exception",
                size,
                self.paired.exc,
                baseline=f"paired str enqueue {fmt_us(self.paired.str_paired.median_us)} µs",
                ratio=self.paired.exc.median_us / self.paired.str_paired.median_us,
                target=enqueue_target,
                result=verdict(self.paired.exc.ops_per_s >= ENQUEUE_TARGET_OPS),
            ),
            Row(
                "2",
                "enqueue_many, str error (one batch per block)",
                size,
                self.paired.many,
                baseline=f"paired str enqueue {fmt_us(self.paired.str_paired.median_us)} µs",
                ratio=self.paired.many.median_us / self.paired.str_paired.median_us,
                target=enqueue_target,
                result=verdict(self.paired.many.ops_per_s >= ENQUEUE_TARGET_OPS),
            ),
            Row(
                "2",
                "get_task, random id",
                size,
                self.get,
                baseline=f"get_task @{ref} {fmt_us(self.get_ref.median_us)} µs",
                ratio=flat,
                target=f"flat: ≤ {FLAT_TARGET_RATIO:g}x @{ref}",
                result=verdict(flat <= FLAT_TARGET_RATIO),
            ),
            Row("2", "floor: `d[id] = json.dumps(task)`", size, self.put_floor, target="(floor)"),
            Row("2", "floor: `json.loads(d[id])`", size, self.get_floor, target="(floor)"),
        ]


async def _warm_up(dlq: DeadLetterQueue, n: int) -> None:
    """First-use caches (classifier, linecache for tracebacks, interned strings), then gone."""
    for k in range(n):
        await dlq.enqueue(f"warm-up-{k}", TASK, REPOS, ERROR)
        await dlq.enqueue(f"warm-up-exc-{k}", TASK, REPOS, _raised(k))
    for k in range(n):
        await dlq.store.delete(f"warm-up-{k}")
        await dlq.store.delete(f"warm-up-exc-{k}")


async def bench_store(cfg: Config, report: Report) -> RssWindow:
    sizes = sorted(cfg.sizes)
    top = sizes[-1]
    rng = random.Random(cfg.seed)
    dlq = DeadLetterQueue(max_size=top + 3 * cfg.exc_ops + 1)
    results: list[SizeResult] = []
    filled = 0
    await _warm_up(dlq, cfg.chunk)
    # The reference for flatness: a queue of the smallest size, read in turn with the big one.
    ref_size = sizes[0]
    ref = DeadLetterQueue(max_size=ref_size + 1)
    await _fill(ref, 0, ref_size, cfg.chunk, timed=0)
    gc.collect()
    window = RssWindow(0, top, _rss_bytes())
    for size in sizes:
        _progress(f"section 2: filling to {size:,}")
        fill = await _fill(dlq, filled, size, cfg.chunk)
        grown, filled = size - filled, size
        if size == top:
            gc.collect()
            window.rss_after = _rss_bytes()
            sample = [_tid(rng.randrange(window.start, top)) for _ in range(2_000)]
            payloads = [_payload_bytes(t) for t in [await dlq.get_task(i) for i in sample] if t]
            window.payload = statistics.fmean(payloads)
        put_floor, get_floor = _floor_store(size, cfg.lookups, cfg.chunk, rng)
        paired = await _paired_enqueues(dlq, size, cfg.exc_ops, cfg.chunk)
        get, get_ref = await _lookups([(dlq, size), (ref, ref_size)], cfg.lookups, cfg.chunk, rng)
        assert await dlq.store.count() == size
        results.append(
            SizeResult(size, grown, fill, paired, get, get_ref, ref_size, put_floor, get_floor)
        )
        if size != top:
            gc.collect()
            window = RssWindow(size, top, _rss_bytes())
    rows = [row for result in results for row in result.rows()]
    report.rows.extend(rows)
    del dlq, ref
    gc.collect()

    print(
        "\n## 2. enqueue throughput and get_task latency by queue size (MemoryStore)\n\n"
        "One queue grows through the sizes. `enqueue, str error` is timed while it "
        f"grows to that size (at most its last {ENQUEUE_WINDOW:,} enqueues), in blocks of "
        f"{cfg.chunk:,}. At each size: "
        f"{cfg.exc_ops:,} enqueues with a raised ConnectionResetError (traceback stored) "
        f"and as many string-error failures through `enqueue_many` (one batch of "
        f"{cfg.chunk:,} per block) alternate block by block with as many string-error "
        "enqueues (paired baseline), then are deleted; "
        f"then {cfg.lookups:,} `get_task` on random stored ids, block "
        f"by block in turn with as many on a separate {fmt_size(sizes[0])}-task queue (the "
        "flatness baseline, so both see the same machine load). "
        "Floors: a plain dict of JSON strings grown to the same size "
        "(put: its last puts are timed; get: as many random lookups), measured at that point."
    )
    if len(results) > 1:
        first, last = results[0], results[-1]
        in_turn = last.get.median_us / last.get_ref.median_us
        floor = last.get_floor.median_us / first.get_floor.median_us
        big, small = fmt_size(last.size), fmt_size(ref_size)
        print(
            f"\nget_task latency ratio {big}/{small} = {in_turn:.2f} (read in turn with the "
            f"{small} queue; target ≤ {FLAT_TARGET_RATIO:g}); the dict floor's own ratio "
            f"{big}/{fmt_size(first.size)} = {floor:.2f}."
        )
    print()
    print(timing_table(rows, overhead=False))
    return window


# --------------------------------------------------------------------------- 3. processor


async def _due_queue(n: int) -> DeadLetterQueue:
    dlq = DeadLetterQueue(max_size=n + 1)
    dlq.register_handler(HANDLER, noop)
    for k in range(n):
        await dlq.enqueue(
            _tid(k),
            {"order": k},
            REPOS,
            ERROR,
            retry_policy=RetryPolicy.IMMEDIATE,
            workflow=HANDLER,
        )
    return dlq


async def _drain(n: int, concurrency: int, batch_size: int) -> float:
    dlq = await _due_queue(n)
    processor = RetryProcessor(dlq, concurrency=concurrency, batch_size=batch_size)
    gc.collect()
    began = _now_ns()
    done = await processor.drain()
    elapsed = _now_ns() - began
    assert done == n, f"drained {done} of {n}"
    assert dlq.lifetime["retry_success"] == n
    return elapsed / n


async def _plain_loop(n: int) -> float:
    gc.collect()
    began = _now_ns()
    for _ in range(n):
        await noop(TASK, REPOS)
    return (_now_ns() - began) / n


async def _pool_floor(n: int, concurrency: int, batch_size: int) -> float:
    """Scheduling without the store: per batch, ``concurrency`` anyio workers share the
    attempts (how ``run_once`` runs a claimed batch)."""
    gc.collect()
    began = _now_ns()
    for k in range(0, n, batch_size):
        pending = iter(range(min(batch_size, n - k)))

        async def worker(pending: Iterator[int] = pending) -> None:
            for _ in pending:
                await noop(TASK, REPOS)
                await anyio.lowlevel.checkpoint()  # an attempt yields at least once

        async with anyio.create_task_group() as group:
            for _ in range(min(concurrency, batch_size)):
                group.start_soon(worker)
    return (_now_ns() - began) / n


async def _task_per_attempt_floor(n: int, concurrency: int, batch_size: int) -> float:
    """The naive alternative, for reference: one anyio task per attempt behind a limiter."""
    limiter = anyio.CapacityLimiter(concurrency)

    async def one() -> None:
        async with limiter:
            await noop(TASK, REPOS)

    gc.collect()
    began = _now_ns()
    for k in range(0, n, batch_size):
        async with anyio.create_task_group() as group:
            for _ in range(min(batch_size, n - k)):
                group.start_soon(one)
    return (_now_ns() - began) / n


async def bench_processor(cfg: Config, report: Report) -> None:
    n = cfg.proc_tasks
    concurrencies = (100, 10)
    drains: dict[int, list[float]] = {c: [] for c in concurrencies}
    pools: dict[int, list[float]] = {c: [] for c in concurrencies}
    spawns: list[float] = []
    loops: list[float] = []
    await _drain(min(n, 500), 10, cfg.batch_size)  # warm-up
    for rep in range(cfg.proc_reps):
        _progress(f"section 3: repetition {rep + 1}/{cfg.proc_reps}")
        loops.append(await _plain_loop(n))
        for c in concurrencies if rep % 2 == 0 else concurrencies[::-1]:
            drains[c].append(await _drain(n, c, cfg.batch_size))
            pools[c].append(await _pool_floor(n, c, cfg.batch_size))
        spawns.append(await _task_per_attempt_floor(n, concurrencies[0], cfg.batch_size))
    floor = Timing(tuple(loops))
    vs_floor = f"plain loop {fmt_us(floor.median_us)} µs"
    rows = [Row("3", "floor: plain loop `await handler(task, repos)`", n, floor, target="(floor)")]
    for c in concurrencies:
        timing = Timing(tuple(drains[c]))
        rows.append(
            Row(
                "3",
                f"`drain()` concurrency={c} batch={cfg.batch_size}",
                n,
                timing,
                baseline=vs_floor,
                ratio=timing.median_us / floor.median_us,
                target=f"≥ {fmt_ops(DRAIN_TARGET_OPS)}/s",
                result=verdict(timing.ops_per_s >= DRAIN_TARGET_OPS),
            )
        )
    references = [(f"anyio floor: {c} workers per batch", pools[c]) for c in concurrencies]
    references.append((f"anyio: a task per attempt + CapacityLimiter({concurrencies[0]})", spawns))
    for name, values in references:
        timing = Timing(tuple(values))
        rows.append(
            Row(
                "3",
                name,
                n,
                timing,
                baseline=vs_floor,
                ratio=timing.median_us / floor.median_us,
                target="(reference)",
            )
        )
    report.rows.extend(rows)
    print(
        "\n## 3. RetryProcessor throughput (due no-op tasks, asyncio)\n\n"
        f"Each repetition enqueues {n:,} IMMEDIATE tasks into a fresh queue (untimed), "
        f"then times `RetryProcessor(dlq, concurrency=c, batch_size={cfg.batch_size}).drain()`; "
        f"{cfg.proc_reps} repetitions, interleaved with the floors. The anyio floor schedules "
        "the same handler the way `run_once` runs a batch (c workers sharing it), without "
        "the store; the last row is the one-task-per-attempt alternative, for reference.\n"
    )
    print(timing_table(rows, overhead=False))


# --------------------------------------------------------------------------- 4. memory


async def _traced_queue(n: int) -> tuple[float, float, dict[str, Any]]:
    """Bytes allocated per enqueued task (tracemalloc), payload per task, a sample metadata."""
    dlq = DeadLetterQueue(max_size=n + 2)
    await dlq.enqueue("warm-up", TASK, REPOS, ERROR)  # first-use caches and interned strings
    await dlq.store.delete("warm-up")
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for k in range(n):
            await dlq.enqueue(_tid(k), {"order": k}, REPOS, ERROR)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    stored = [await dlq.get_task(_tid(k)) for k in range(n)]
    tasks = [t for t in stored if t is not None]
    assert len(tasks) == n
    payload = statistics.fmean(_payload_bytes(t) for t in tasks)
    return (after - before) / n, payload, dict(tasks[-1].metadata)


def _traced_floor(n: int, metadata: dict[str, Any]) -> tuple[float, float]:
    """The least a store keeping id -> (task JSON, metadata JSON) in a dict allocates."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        rows = {_tid(k): (_dumps({"order": k}), _dumps(metadata)) for k in range(n)}
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    payload = statistics.fmean(len(a.encode()) + len(b.encode()) for a, b in rows.values())
    return (after - before) / n, payload


async def bench_memory(cfg: Config, report: Report, window: RssWindow | None) -> None:
    _progress("section 4: tracemalloc sample")
    n = cfg.memory_sample
    traced, payload, metadata = await _traced_queue(n)
    floor_total, floor_payload = _traced_floor(n, metadata)
    floor_beyond = floor_total - floor_payload
    target = f"≤ {MEMORY_TARGET_BYTES:,.0f} B"
    rows: list[MemoryRow] = []
    if window is not None and window.rss_before is not None and window.rss_after is not None:
        measured = (window.rss_after - window.rss_before) / (window.stop - window.start)
        row = MemoryRow(
            f"stored task, grown {fmt_size(window.start)} → {fmt_size(window.stop)}",
            window.stop - window.start,
            "RSS Δ (/proc/self/statm)",
            window.payload,
            measured,
        )
        rows.append(row)
    traced_row = MemoryRow("stored task (enqueue, str error)", n, "tracemalloc", payload, traced)
    rows.append(traced_row)
    for row in rows:
        row.baseline = f"dict floor {floor_beyond:,.0f} B"
        row.ratio = row.beyond / floor_beyond if floor_beyond > 0 else None
        row.target = target
        row.result = verdict(row.beyond <= MEMORY_TARGET_BYTES)
    rows.append(
        MemoryRow(
            "floor: `d[id] = (task_json, meta_json)`",
            n,
            "tracemalloc",
            floor_payload,
            floor_total,
            target="(floor)",
        )
    )
    report.memory.extend(rows)
    print(
        "\n## 4. Memory per stored task, beyond its payload\n\n"
        "payload = len of the compact JSON of `task` + `metadata` as the memory store keeps "
        "them (metadata includes the captured `failure_context`), averaged over stored "
        "records. RSS Δ: resident memory after `gc.collect()` at the start and the end of "
        "a window of string-error enqueues (no other work in between), divided by the "
        "tasks added — it includes allocator overhead and the amortised dict/heap growth "
        "(touched pages only); memory freed by earlier work and reused inside the window "
        "can make it read slightly low. tracemalloc: bytes still allocated after "
        f"`gc.collect()`, over {n:,} enqueues into a fresh queue (exact Python "
        "allocations; tracemalloc slows enqueue several-fold, so only a sample). "
        "Floor: the same ids and JSON strings in a plain dict of tuples.\n"
    )
    if not rows or rows[0].method.startswith("tracemalloc"):
        print("(no RSS window: /proc/self/statm unavailable or section 2 skipped)\n")
    print(memory_table(rows))


# --------------------------------------------------------------------------- profiles


async def _profile_enqueue(n: int) -> str:
    dlq = DeadLetterQueue(max_size=n + 1)
    await dlq.enqueue("warm-up", TASK, REPOS, ERROR)
    profile = cProfile.Profile()
    profile.enable()
    for k in range(n):
        await dlq.enqueue(_tid(k), {"order": k}, REPOS, ERROR)
    profile.disable()
    return _top(profile, f"enqueue x {n:,} (str error)")


async def _profile_drain(n: int, batch_size: int) -> str:
    dlq = await _due_queue(n)
    processor = RetryProcessor(dlq, concurrency=100, batch_size=batch_size)
    profile = cProfile.Profile()
    profile.enable()
    done = await processor.drain()
    profile.disable()
    assert done == n
    return _top(profile, f"drain() x {n:,} (concurrency=100, batch={batch_size})")


def _top(profile: cProfile.Profile, title: str, count: int = 15) -> str:
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    stats.strip_dirs().sort_stats(pstats.SortKey.TIME).print_stats(count)
    lines = [line for line in out.getvalue().splitlines() if line.strip()]
    return f"### cProfile: {title}, top {count} by tottime\n\n```\n" + "\n".join(lines) + "\n```"


# --------------------------------------------------------------------------- main


def _header(cfg: Config, sections: set[str]) -> None:
    print("# mahavishnu_dlq core benchmarks\n")
    print(
        f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}; mode: "
        f"{'quick' if cfg.quick else 'full'}; sizes: {', '.join(fmt_size(s) for s in cfg.sizes)}; "
        f"sections: {', '.join(sorted(sections))}"
    )
    print(
        f"- mahavishnu_dlq {mahavishnu_dlq.__version__}, sources sha256 {_source_digest()}; "
        f"Python {platform.python_version()} ({platform.python_implementation()}), "
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average {_loadavg()}"
    )
    print(
        "- one sample per run on a shared machine: compare ratios (baseline measured in "
        "the same run) rather than absolute numbers across runs"
    )


async def _run(cfg: Config, sections: set[str], report: Report) -> None:
    window: RssWindow | None = None
    if "1" in sections:
        _progress("section 1: call overhead")
        await bench_calls(cfg, report)
    if "2" in sections:
        window = await bench_store(cfg, report)
    if "3" in sections:
        await bench_processor(cfg, report)
    if "4" in sections:
        await bench_memory(cfg, report, window)


async def _run_profiles(cfg: Config) -> None:
    n = 5_000 if cfg.quick else 20_000
    print(f"mahavishnu_dlq sources sha256 {_source_digest()}\n")
    print(await _profile_enqueue(n))
    print()
    print(await _profile_drain(n // 2, cfg.batch_size))


def _summary(report: Report, elapsed: float) -> None:
    results = [r.result for r in report.rows] + [m.result for m in report.memory]
    passed = results.count("PASS")
    failed = results.count("FAIL")
    print(
        f"\nTargets: {passed} PASS, {failed} FAIL. Total time {elapsed:.1f} s; "
        f"load average at the end {_loadavg()}."
    )
    for row in report.rows:
        if row.result == "FAIL":
            print(f"- FAIL [{row.section}] {row.benchmark} @{fmt_size(row.size)}: {row.target}")
    for mem in report.memory:
        if mem.result == "FAIL":
            print(f"- FAIL [4] {mem.benchmark}: {mem.target}")


def _write_json(path: str, cfg: Config, report: Report, elapsed: float) -> None:
    doc = {
        "date": datetime.now(timezone.utc).isoformat(),
        "mahavishnu_dlq": mahavishnu_dlq.__version__,
        "source_sha256": _source_digest(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_end": _loadavg(),
        "config": dict(vars(cfg)),
        "elapsed_seconds": elapsed,
        "rows": [row.to_json() for row in report.rows],
        "memory": [row.to_json() for row in report.memory],
    }
    with open(path, "w", encoding="utf-8") as out:
        json.dump(doc, out, indent=2)
        out.write("\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_core",
        description="Core benchmarks of mahavishnu_dlq with same-run baselines.",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes (about 30 s)")
    parser.add_argument(
        "--sizes",
        type=_parse_sizes,
        default=None,
        help="queue sizes for sections 2 and 4, e.g. 10000,100000,1000000 or 10k,100k,1M",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument(
        "--sections", default="1,2,3,4", help="comma-separated sections to run (default all)"
    )
    parser.add_argument("--seed", type=int, default=1234, help="seed of the random lookups")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="print cProfile top-15 of enqueue and of drain instead of the tables",
    )
    args = parser.parse_args(argv)
    cfg = Config.build(quick=args.quick, sizes=args.sizes, seed=args.seed)
    if args.profile:
        anyio.run(_run_profiles, cfg)
        return 0
    sections = {part.strip() for part in args.sections.split(",") if part.strip()}
    unknown = sections - {"1", "2", "3", "4"}
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from 1, 2, 3, 4")
    report = Report()
    _header(cfg, sections)
    started = time.perf_counter()
    anyio.run(_run, cfg, sections, report)
    elapsed = time.perf_counter() - started
    _summary(report, elapsed)
    if args.json:
        _write_json(args.json, cfg, report, elapsed)
        print(f"\nJSON written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
