"""Soak: a processor and N producers for minutes on one store, watching memory and rates.

    python -m benchmarks.bench_soak --store memory|sqlite|opensearch \\
        [--minutes 10] [--interval 30] [--producers 50] [--rate 10] [--max-size 10000]

What runs, in one process, in real time (a benchmark, not a test: real timing is the
point):

- ``--producers`` tasks, each enqueueing a new failure every ``1 / --rate`` s (a
  steady rate, whatever an enqueue took); an enqueue refused with
  :class:`~mahavishnu_dlq.errors.QueueFullError` is counted and the producer goes on;
- one :class:`~mahavishnu_dlq.RetryProcessor` (``RetryProcessor.run()`` in the
  background) with a handler that fails half the time (``--fail-ratio``, seeded), on
  a linear policy of ``--step`` s and ``--max-retries`` retries, so tasks are retried,
  completed and exhausted while the run goes on;
- ``max_size`` (``--max-size``, default 10,000) open tasks at most: the queue reaches
  its limit and keeps running against it;
- retention (:mod:`mahavishnu_dlq.retention`, run by the processor as jobs, checked
  every ``--interval`` s), with ages in seconds instead of days: exhausted tasks are
  archived once ``--keep-exhausted`` s old (default 300), completed and archived ones
  purged once ``--keep`` s old (default 60): the stored set stays bounded (in memory,
  on disk, in the index), exhausted tasks pile up to ``max_size`` and the queue runs
  against its limit, each retention run making some room that the producers fill again.

Every ``--interval`` s one row: elapsed time, RSS (``VmRSS`` of ``/proc/self/status``),
open tasks, handler calls/s over the interval, and the totals so far of tasks
exhausted, completed, enqueued and refused. At the end: the RSS growth over the
second half (RSS at the end minus RSS at half time, in MiB and %), target 0 within
noise: flat when within ±5 % or ±4 MiB, whichever is larger (a measurement, not a
test: nothing here fails a build).

Stores: ``memory``; ``sqlite`` (a file in a temporary directory, removed at the end);
``opensearch`` (``MAHAVISHNU_DLQ_TEST_OPENSEARCH_URL``, else a node started with
``scripts/opensearch_node.py`` and stopped at the end; a fresh index, deleted at the
end). :func:`soak` is the function API (the smoke test runs it for two seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio

from benchmarks.bench_opensearch import _node_module
from mahavishnu_dlq import DeadLetterQueue, RetryProcessor
from mahavishnu_dlq.downstream import BreakerBook, BreakerPolicy
from mahavishnu_dlq.errors import QueueFullError
from mahavishnu_dlq.models import OPEN_STATUSES, DeadLetterStatus, TaskFilter
from mahavishnu_dlq.policy import PolicyBook, PolicyParams
from mahavishnu_dlq.retention import Retention
from mahavishnu_dlq.states import RetryPolicy
from mahavishnu_dlq.storage import MemoryStore, Store
from mahavishnu_dlq.storage.sqlite import SQLiteStore

__all__ = ["SoakConfig", "SoakResult", "SoakRow", "main", "soak"]

_MIB = 1024 * 1024
WORKFLOW = "soak"
#: RSS growth over the second half still called flat: this share of the RSS at half
#: time, or this many MiB, whichever is larger (allocator and GC noise)
FLAT_SHARE, FLAT_MIB = 0.05, 4.0
_FINISHED = (DeadLetterStatus.COMPLETED, DeadLetterStatus.ARCHIVED)
_OPEN = TaskFilter(status=sorted(OPEN_STATUSES, key=lambda status: status.value))


@dataclass(frozen=True)
class SoakConfig:
    """What one soak run does (see the module docstring; the CLI's options)."""

    seconds: float = 600.0
    interval: float = 30.0
    producers: int = 50
    rate: float = 10.0  #: enqueues per second of each producer
    max_size: int = 10_000
    fail_ratio: float = 0.5
    max_retries: int = 3
    step: float = 0.5  #: the linear policy's step: retries after 0.5, 1, 1.5 s …
    keep: float = 60.0  #: completed and archived tasks are purged once this old (0: kept)
    keep_exhausted: float = 300.0  #: exhausted tasks are archived once this old (0: kept)
    concurrency: int = 50
    seed: int = 1234

    def __post_init__(self) -> None:
        if self.seconds <= 0 or self.interval <= 0 or self.rate <= 0 or self.step <= 0:
            raise ValueError("seconds, interval, rate and step must be > 0")
        if self.producers < 1 or self.max_size < 1 or self.concurrency < 1:
            raise ValueError("producers, max_size and concurrency must be >= 1")
        if not 0.0 <= self.fail_ratio <= 1.0:
            raise ValueError(f"fail_ratio must be between 0 and 1, got {self.fail_ratio}")


@dataclass(frozen=True)
class SoakRow:
    """One interval: the state at its end and the handler's rate during it."""

    elapsed: float
    rss_mib: float | None
    open: int
    calls_per_s: float
    calls: int  #: handler calls during the interval
    exhausted: int  #: totals since the start …
    completed: int
    enqueued: int
    refused: int
    purged: int

    def cells(self) -> list[str]:
        rss = "—" if self.rss_mib is None else f"{self.rss_mib:,.1f}"
        return [
            f"{self.elapsed:,.0f}",
            rss,
            f"{self.open:,}",
            f"{self.calls_per_s:,.0f}",
            f"{self.exhausted:,}",
            f"{self.completed:,}",
            f"{self.enqueued:,}",
            f"{self.refused:,}",
            f"{self.purged:,}",
        ]


HEADERS = [
    "elapsed s",
    "RSS MiB",
    "open",
    "handler calls/s",
    "exhausted",
    "completed",
    "enqueued",
    "refused (queue full)",
    "purged",
]


@dataclass
class SoakResult:
    """Everything a run measured; the totals are over the whole run."""

    rows: list[SoakRow] = field(default_factory=list)
    rss_half_mib: float | None = None
    rss_end_mib: float | None = None
    offered: int = 0  #: enqueues the producers tried
    enqueued: int = 0  #: … that were stored
    refused: int = 0  #: … refused with QueueFullError
    failed: int = 0  #: … that failed otherwise (the store: should stay 0)
    calls: int = 0  #: handler calls
    succeeded: int = 0  #: … that returned
    raised: int = 0  #: … that raised (the attempt failed)
    exhausted: int = 0  #: tasks exhausted (the queue's lifetime counter)
    completed: int = 0  #: tasks completed by a retry (the queue's lifetime counter)
    purged: int = 0
    archived: int = 0

    @property
    def growth_mib(self) -> float | None:
        """RSS at the end minus RSS at half time."""
        if self.rss_half_mib is None or self.rss_end_mib is None:
            return None
        return self.rss_end_mib - self.rss_half_mib

    @property
    def growth_share(self) -> float | None:
        growth = self.growth_mib
        if growth is None or not self.rss_half_mib:
            return None
        return growth / self.rss_half_mib

    @property
    def flat(self) -> bool | None:
        """Whether the second half's growth is within the noise (see :data:`FLAT_SHARE`)."""
        growth, half = self.growth_mib, self.rss_half_mib
        if growth is None or half is None:
            return None
        return abs(growth) <= max(FLAT_MIB, FLAT_SHARE * half)


def rss_mib() -> float | None:
    """This process's resident set size (``VmRSS``), in MiB; None off Linux."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024 / _MIB
    except (OSError, ValueError, IndexError):
        return None
    return None


def table(rows: Sequence[Sequence[str]], headers: Sequence[str] = HEADERS) -> str:
    """A Markdown table, numbers right-aligned (every column but none is a number)."""
    widths = [max([len(h), *(len(row[i]) for row in rows)]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|"
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])


def growth_line(result: SoakResult) -> str:
    """The second half's RSS growth, and whether it is flat within the noise."""
    growth, share = result.growth_mib, result.growth_share
    if growth is None or share is None:
        return "RSS growth over the second half: not measured (no /proc/self/status)"
    verdict = "flat" if result.flat else "GROWING"
    return (
        f"RSS growth over the second half: {growth:+,.1f} MiB ({share:+.1%}): "
        f"{result.rss_half_mib:,.1f} MiB at half time, {result.rss_end_mib:,.1f} MiB at the "
        f"end; target 0, flat within ±{FLAT_SHARE:.0%} or ±{FLAT_MIB:g} MiB: {verdict}"
    )


def policies(config: SoakConfig) -> PolicyBook:
    """Linear retries every ``step`` s (capped at 4 steps): retries happen during the run."""
    cap = max(config.step * 4, config.step)
    return PolicyBook(
        PolicyParams(
            policy=RetryPolicy.LINEAR,
            max_retries=config.max_retries,
            linear_step=config.step,
            exponential_base=config.step,
            exponential_cap=cap,
            immediate_min_delay=config.step,
        )
    )


def queue_for(store: Store, config: SoakConfig) -> DeadLetterQueue:
    """The queue a soak runs on ``store``: its limit, policies and processor settings."""
    return DeadLetterQueue(
        store,
        max_size=config.max_size,
        policies=policies(config),
        concurrency=config.concurrency,
        batch_size=max(100, config.concurrency),
        retry_interval_seconds=min(1.0, config.step),
        retention=Retention(
            archive_exhausted_after=_seconds(config.keep_exhausted),
            purge_completed_after=_seconds(config.keep),
            purge_archived_after=_seconds(config.keep),
            interval_seconds=config.interval,
        ),
        job_poll_seconds=min(2.0, config.interval),
        # the handler fails half the time by design: a circuit breaker would (rightly)
        # pause the workflow and the processor would sit idle
        breakers=BreakerBook(default=BreakerPolicy(enabled=False)),
    )


def _seconds(age: float) -> timedelta | None:
    return timedelta(seconds=age) if age > 0 else None


class _Soak:
    """One run: the handler, the producers and the rows (see :func:`soak`)."""

    def __init__(
        self, dlq: DeadLetterQueue, config: SoakConfig, out: Callable[[str], None] | None
    ) -> None:
        self.dlq, self.config, self.out = dlq, config, out
        self.result = SoakResult()
        self.rng = random.Random(config.seed)
        self.started = time.monotonic()

    async def handler(self, task: dict[str, Any], repos: list[str]) -> None:
        self.result.calls += 1
        if self.rng.random() < self.config.fail_ratio:
            self.result.raised += 1
            raise ConnectionError("soak: the downstream failed this time")
        self.result.succeeded += 1

    async def producer(self, number: int) -> None:
        """A new failure every ``1 / rate`` s, whatever an enqueue took."""
        result, period = self.result, 1.0 / self.config.rate
        due = self.started + self.rng.random() * period  # spread over one period
        serial = 0
        while True:
            await anyio.sleep(max(0.0, due - time.monotonic()))
            due += period
            serial += 1
            result.offered += 1
            try:
                await self.dlq.enqueue(
                    f"p{number}-{serial}",
                    {"producer": number, "serial": serial},
                    ["repo"],
                    ConnectionError("connection reset by peer"),
                    retry_policy=RetryPolicy.LINEAR,
                    workflow=WORKFLOW,
                )
            except QueueFullError:
                result.refused += 1
            except Exception:  # noqa: BLE001 - counted; the producer goes on like a host would
                result.failed += 1
            else:
                result.enqueued += 1

    async def row(self, since: float, calls_before: int) -> tuple[float, int]:
        """Add the row of the interval from ``since``; its end time and calls so far."""
        result = self.result
        now, calls_now = time.monotonic(), result.calls
        made = SoakRow(
            elapsed=now - self.started,
            rss_mib=rss_mib(),
            open=await self.dlq.count_tasks(_OPEN),
            calls_per_s=(calls_now - calls_before) / max(now - since, 1e-9),
            calls=calls_now - calls_before,
            exhausted=self.dlq.lifetime["exhausted"],
            completed=self.dlq.lifetime["retry_success"],
            enqueued=result.enqueued,
            refused=result.refused,
            purged=self.dlq.lifetime["retention_purged"],
        )
        result.rows.append(made)
        if self.out is not None:
            self.out(table([made.cells()]).splitlines()[-1])
        return now, calls_now

    async def half_time(self) -> None:
        await anyio.sleep(max(0.0, self.started + self.config.seconds / 2 - time.monotonic()))
        self.result.rss_half_mib = rss_mib()

    async def run(self) -> SoakResult:
        dlq, config = self.dlq, self.config
        dlq.register_handler(WORKFLOW, self.handler)
        await dlq.connect()
        if self.out is not None:
            self.out("\n".join(table([["—"] * len(HEADERS)]).splitlines()[:2]))
        processor = RetryProcessor(dlq, check_interval=min(1.0, config.step))
        self.started = time.monotonic()
        try:
            async with anyio.create_task_group() as group:
                await group.start(processor.run)
                group.start_soon(self.half_time)
                for number in range(config.producers):
                    group.start_soon(self.producer, number)
                since, calls_before = self.started, 0
                end, tick = self.started + config.seconds, self.started
                while tick < end:  # rows on a fixed schedule, whatever a row took
                    tick = min(tick + config.interval, end)
                    await anyio.sleep(max(0.0, tick - time.monotonic()))
                    since, calls_before = await self.row(since, calls_before)
                self.result.rss_end_mib = rss_mib()
                group.cancel_scope.cancel()
        finally:
            processor.stop()
            await dlq.stop()
        self.result.exhausted = dlq.lifetime["exhausted"]
        self.result.completed = dlq.lifetime["retry_success"]
        self.result.purged = dlq.lifetime["retention_purged"]
        self.result.archived = dlq.lifetime["retention_archived"]
        return self.result


async def soak(
    dlq: DeadLetterQueue, config: SoakConfig, *, out: Callable[[str], None] | None = print
) -> SoakResult:
    """Run the soak on ``dlq`` (its handler registered and the queue connected here,
    stopped at the end: build it with :func:`queue_for`); each row is handed to ``out``
    as it comes (a Markdown table row, after the header's two lines)."""
    return await _Soak(dlq, config, out).run()


# -- the stores -------------------------------------------------------------------------


class _Counted(logging.Handler):
    """Counts the library's and opensearch-py's records at WARNING and above by action."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.counts: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        action = getattr(record, "action", None) or record.getMessage().split(" ", 1)[0]
        outcome = getattr(record, "outcome", None)
        self.counts[f"{record.levelname} {record.name} {action} {outcome or ''}".strip()] += 1


async def _run(store_name: str, config: SoakConfig, workdir: Path, url: str | None) -> SoakResult:
    if store_name != "opensearch":
        store: Store = MemoryStore() if store_name == "memory" else SQLiteStore(workdir / "soak.db")
        return await soak(queue_for(store, config), config)
    from mahavishnu_dlq.storage.opensearch import OpenSearchStore  # noqa: PLC0415 - extra

    assert url is not None
    index = f"soak-{uuid.uuid4().hex[:10]}"
    try:
        return await soak(queue_for(OpenSearchStore(hosts=[url], index=index), config), config)
    finally:  # the index (and its side indexes) go with the run
        cleanup = OpenSearchStore(hosts=[url], index=index)
        await cleanup.drop()
        await cleanup.close()


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_soak", description=__doc__)
    add = parser.add_argument
    add("--store", choices=["memory", "sqlite", "opensearch"], default="memory")
    add("--minutes", type=float, default=10.0, help="how long (default 10)")
    add("--interval", type=float, default=30.0, help="seconds between rows (default 30)")
    add("--producers", type=int, default=50, help="producer tasks (default 50)")
    add("--rate", type=float, default=10.0, help="enqueues/s of each producer (default 10)")
    add("--max-size", type=int, default=10_000, help="the queue's max_size (default 10,000)")
    add("--fail-ratio", type=float, default=0.5, help="share of handler calls that fail")
    add("--max-retries", type=int, default=3, help="retries before a task is exhausted")
    add("--step", type=float, default=0.5, help="linear retry step in seconds (default 0.5)")
    add(
        "--keep", type=float, default=60.0, help="purge completed/archived ones this old (0: never)"
    )
    add("--keep-exhausted", type=float, default=300.0, help="archive exhausted ones this old")
    add("--concurrency", type=int, default=50, help="the processor's concurrency")
    add("--seed", type=int, default=1234, help="seed of the handler's failures")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    config = SoakConfig(
        seconds=args.minutes * 60,
        interval=args.interval,
        producers=args.producers,
        rate=args.rate,
        max_size=args.max_size,
        fail_ratio=args.fail_ratio,
        max_retries=args.max_retries,
        step=args.step,
        keep=args.keep,
        keep_exhausted=args.keep_exhausted,
        concurrency=args.concurrency,
        seed=args.seed,
    )
    # each exhausted task is a WARNING line (dlq.retry): counted and summed up at the end
    # instead of printed, like any other WARNING of the library or of opensearch-py
    counted = _Counted()
    for name in ("mahavishnu_dlq", "opensearch"):
        logger = logging.getLogger(name)
        logger.addHandler(counted)
        logger.propagate = False
    url = os.environ.get("MAHAVISHNU_DLQ_TEST_OPENSEARCH_URL")
    node = None
    if args.store == "opensearch" and not url:
        node = _node_module().start_node()
        url = node.url
    print(f"# Soak: {args.store} store, {args.minutes:g} min\n")
    print(
        f"- {config.producers} producers x {config.rate:g} enqueues/s, max_size "
        f"{config.max_size:,}, handler failing {config.fail_ratio:.0%} of calls, linear "
        f"retries every {config.step:g} s, {config.max_retries} retries, concurrency "
        f"{config.concurrency}; retention every {config.interval:g} s: exhausted tasks archived "
        f"after {config.keep_exhausted:g} s, completed and archived ones purged after "
        f"{config.keep:g} s; Python "
        f"{sys.version.split()[0]}, {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.2f}\n"
    )
    try:
        with tempfile.TemporaryDirectory(prefix="dlq-soak-") as workdir:
            result = asyncio.run(_run(args.store, config, Path(workdir), url))
    finally:
        if node is not None:
            node.stop()
    print()
    print(growth_line(result))
    print(
        f"Totals: {result.offered:,} enqueues offered, {result.enqueued:,} stored, "
        f"{result.refused:,} refused (queue full), {result.failed:,} failed; "
        f"{result.calls:,} handler calls ({result.raised:,} raised); "
        f"{result.completed:,} completed, {result.exhausted:,} exhausted; retention archived "
        f"{result.archived:,} and purged {result.purged:,}"
    )
    if counted.counts:
        print("Log records at WARNING and above:")
        for key, count in counted.counts.most_common():
            print(f"  {count:>8,}  {key}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
