"""SQLite store benchmarks, each next to its baseline or ceiling in the same run.

    python -m benchmarks.bench_sqlite [--quick] [--rows 100000,1000000] [--dir DIR]

Files go to a fresh directory under ``DIR`` (default: the system's temporary
directory) and are removed at the end.

1. Durable enqueues/s through ``DeadLetterQueue(SQLiteStore(file)).enqueue`` with 1
   and with 100 concurrent producers (asyncio), next to the memory store and next to
   the ceiling: a bare ``INSERT`` + ``COMMIT`` loop on a file with the store's pragmas
   (WAL, ``synchronous=FULL``, ``temp_store=MEMORY``), one commit per row for 1
   producer and transactions of 100 rows for 100 producers — on the store's own table
   (its indexes and count triggers) and on a bare ``(task_id, doc)`` table.
2. ``get_task`` latency (median, p95) at each size, next to a bare ``SELECT doc`` by
   id on the same file (in the event loop's thread, and through a worker thread as
   the store reads) and to the memory store holding the same tasks.
3. At the largest size: the first page of ``list_tasks`` (limit 20: no filter, a
   status filter, and status + category + workflow) and ``get_statistics``, p50 and
   p95, next to the bare SQL that reads the same rows and to the memory store.
4. Claim-and-complete: ``RetryProcessor.drain()`` over due no-op tasks, SQLite
   against the memory store.
The re-sync rate of a failover store whose journal is a SQLite file needs an
OpenSearch node: it is section 4 of :mod:`benchmarks.bench_opensearch`.

Rows of sections 2 and 3 are bulk-loaded (untimed) with plain :mod:`sqlite3` in big
transactions, in the store's own row format (:func:`sqlite_schema.row_values` of
:func:`opensearch_query.document_json`), into a file whose schema the store created.
One file grows through the sizes. This is a measurement, not a test: nothing here
fails a build. Tables are Markdown, ready for ``docs/performance.md``.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

import mahavishnu_dlq
from benchmarks._sqlite_common import (
    _INSERT,
    ENQUEUE_TARGET,
    ERROR,
    HANDLER,
    MANY,
    REPOS,
    Config,
    Report,
    _create,
    _filesystem,
    _loadavg,
    _n,
    _parse_rows,
    _progress,
    _raw,
    _row,
    _size,
    _table,
    _x,
)
from benchmarks._sqlite_reads import (
    bench_reads,
)
from mahavishnu_dlq import (
    DeadLetterQueue,
    FailedTask,
    Failure,
    RetryPolicy,
    RetryProcessor,
    SQLiteStore,
)
from mahavishnu_dlq.storage import sqlite_schema as schema
from mahavishnu_dlq.storage.sqlite_writer import Op
from mahavishnu_dlq.testing import make_task

__all__ = ["main"]


# --------------------------------------------------------------------------- 1. enqueues


class CountingStore(SQLiteStore):
    """A SQLiteStore that counts its transactions (to show the group size reached)."""

    transactions = 0
    operations = 0

    def _run_batch(self, batch: list[Op]) -> None:
        self.transactions += 1
        self.operations += len(batch)
        super()._run_batch(batch)


async def _produce(dlq: DeadLetterQueue, producers: int, total: int) -> float:
    """``total`` enqueues by ``producers`` concurrent producers; seconds taken."""
    per = total // producers

    async def producer(p: int) -> None:
        for i in range(per):
            await dlq.enqueue(f"p{p}-{i}", {"order": i}, REPOS, ERROR)

    began = time.perf_counter()
    async with anyio.create_task_group() as group:
        for p in range(producers):
            group.start_soon(producer, p)
    return time.perf_counter() - began


def _ceiling_rows(producers: int, total: int) -> list[tuple[Any, ...]]:
    """The rows the store writes for the same enqueues, in the order producers send them."""
    per = total // producers
    start = datetime.now(timezone.utc)
    rows: list[tuple[Any, ...]] = []
    for i in range(per):
        for p in range(producers):
            now = start + timedelta(microseconds=20 * len(rows))  # each failed a bit later
            task = make_task(
                task_id=f"p{p}-{i}", task={"order": i}, repos=REPOS, error=ERROR, now=now
            )
            rows.append(_row(task))
    return rows


def _ceiling(path: Path, rows: Sequence[tuple[Any, ...]], group: int, *, bare: bool) -> float:
    """INSERT + COMMIT of ``rows``, ``group`` rows per transaction; seconds taken."""
    connection = _raw(path)
    if bare:
        connection.execute("CREATE TABLE tasks (task_id TEXT NOT NULL UNIQUE, doc TEXT)")
        sql, width = "INSERT INTO tasks VALUES (?, ?)", 2
    else:
        sql, width = _INSERT, len(schema.COLUMNS)
    try:
        began = time.perf_counter()
        for low in range(0, len(rows), group):
            connection.execute("BEGIN IMMEDIATE")
            for row in rows[low : low + group]:
                connection.execute(sql, row[:width])
            connection.execute("COMMIT")
        return time.perf_counter() - began
    finally:
        connection.close()


@dataclass
class Rates:
    """Operations per second of one variant, one value per repetition."""

    values: list[float] = field(default_factory=list)
    group: list[float] = field(default_factory=list)  # mean transaction size, per repetition

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def spread(self) -> str:
        return f"{_n(min(self.values))}-{_n(max(self.values))}"


async def _sqlite_rate(path: Path, producers: int, total: int, rates: Rates) -> float:
    store = CountingStore(path)
    dlq = DeadLetterQueue(store, max_size=10**9)
    await store.open()
    seconds = await _produce(dlq, producers, total)
    assert await store.count() == total
    await store.close()
    rates.group.append(store.operations / max(1, store.transactions))
    return total / seconds


async def _memory_rate(producers: int, total: int) -> float:
    return total / await _produce(DeadLetterQueue(max_size=10**9), producers, total)


async def _ceiling_rate(
    path: Path, rows: Sequence[tuple[Any, ...]], group: int, *, bare: bool
) -> float:
    if not bare:
        await _create(path)
    return len(rows) / _ceiling(path, rows, group, bare=bare)


async def bench_enqueue(cfg: Config, work: Path, report: Report) -> None:
    rows_out: list[list[str]] = []
    for producers, total in ((1, cfg.single), (MANY, cfg.many)):
        _progress(f"section 1: {producers} producer(s), {total:,} enqueues x {cfg.reps}")
        rows = _ceiling_rows(producers, total)
        group = 1 if producers == 1 else MANY
        sqlite, memory, ceiling, bare = Rates(), Rates(), Rates(), Rates()
        for rep in range(cfg.reps):
            runs: list[tuple[Rates, Callable[[], Awaitable[float]]]] = [
                (
                    sqlite,
                    partial(
                        _sqlite_rate, work / f"enq-{producers}-{rep}.db", producers, total, sqlite
                    ),
                ),
                (
                    ceiling,
                    partial(
                        _ceiling_rate, work / f"ceil-{producers}-{rep}.db", rows, group, bare=False
                    ),
                ),
                (
                    bare,
                    partial(
                        _ceiling_rate, work / f"bare-{producers}-{rep}.db", rows, group, bare=True
                    ),
                ),
                (memory, partial(_memory_rate, producers, total)),
            ]
            shift = rep % len(runs)
            for rates, run in runs[shift:] + runs[:shift]:  # rotate who runs first
                gc.collect()
                rates.values.append(await run())
        what = "one commit per row" if group == 1 else f"{group} rows per transaction"
        target = f"≥ {_n(ENQUEUE_TARGET)}/s" if producers == MANY else "—"
        result = (
            report.judge(
                f"[1] durable enqueues/s, {producers} producers", sqlite.median >= ENQUEUE_TARGET
            )
            if producers == MANY
            else "—"
        )
        rows_out += [
            [
                "`enqueue`, SQLiteStore",
                f"{producers}",
                f"{total:,}",
                _n(sqlite.median),
                sqlite.spread(),
                f"{statistics.mean(sqlite.group):.1f}",
                f"ceiling, store table {_n(ceiling.median)}/s",
                _x(sqlite.median / ceiling.median),
                target,
                result,
            ],
            [
                f"ceiling: INSERT + COMMIT, store table, {what}",
                f"{producers}",
                f"{total:,}",
                _n(ceiling.median),
                ceiling.spread(),
                f"{group}",
                f"bare table {_n(bare.median)}/s",
                _x(ceiling.median / bare.median),
                "(ceiling)",
                "—",
            ],
            [
                f"ceiling: INSERT + COMMIT, bare (task_id, doc) table, {what}",
                f"{producers}",
                f"{total:,}",
                _n(bare.median),
                bare.spread(),
                f"{group}",
                "—",
                "—",
                "(ceiling)",
                "—",
            ],
            [
                "`enqueue`, MemoryStore (not durable)",
                f"{producers}",
                f"{total:,}",
                _n(memory.median),
                memory.spread(),
                "—",
                f"SQLiteStore {_n(sqlite.median)}/s",
                _x(memory.median / sqlite.median),
                "(reference)",
                "—",
            ],
        ]
    print(
        "\n## 1. Durable enqueues/s (`DeadLetterQueue.enqueue`, acknowledged = committed)\n\n"
        f"Each repetition ({cfg.reps}, variants interleaved, order rotated) uses a fresh file. "
        "SQLiteStore: WAL, `synchronous=FULL`, group commit. Ceilings: the same rows "
        "(built untimed) inserted by a bare loop with the same pragmas, into the store's "
        "own table (its six indexes and count triggers) and into a bare two-column table. "
        "txn size: mean operations per transaction. Figures are medians; the range is "
        "min-max over repetitions.\n"
    )
    headers = [
        "benchmark",
        "producers",
        "tasks",
        "enqueues/s",
        "range/s",
        "txn size",
        "baseline",
        "ratio",
        "target",
        "result",
    ]
    print(_table(headers, rows_out))


# --------------------------------------------------------------------------- 4. claim and complete


async def noop(task: dict[str, Any], repos: list[str]) -> None:
    """The retry handler of section 4."""


async def _drain_rate(dlq: DeadLetterQueue, n: int) -> float:
    dlq.register_handler(HANDLER, noop)
    failures = [
        Failure(
            f"due-{k}",
            {"order": k},
            REPOS,
            ERROR,
            retry_policy=RetryPolicy.IMMEDIATE,
            workflow=HANDLER,
        )
        for k in range(n)
    ]
    for low in range(0, n, 1_000):
        results = await dlq.enqueue_many(failures[low : low + 1_000])
        assert all(isinstance(result, FailedTask) for result in results)
    processor = RetryProcessor(dlq, concurrency=100, batch_size=1_000)
    gc.collect()
    began = time.perf_counter()
    done = await processor.drain()
    seconds = time.perf_counter() - began
    assert done == n, f"drained {done} of {n}"
    return n / seconds


async def bench_drain(cfg: Config, work: Path, report: Report) -> None:
    _progress(f"section 4: drain of {cfg.drain:,} due tasks x {cfg.drain_reps}")
    sqlite, memory = Rates(), Rates()
    for rep in range(cfg.drain_reps):
        store = SQLiteStore(work / f"drain-{rep}.db")
        await store.open()
        try:
            sqlite.values.append(
                await _drain_rate(DeadLetterQueue(store, max_size=10**9), cfg.drain)
            )
        finally:
            await store.close()
        memory.values.append(await _drain_rate(DeadLetterQueue(max_size=10**9), cfg.drain))
    rows = [
        [
            "`RetryProcessor.drain()`, SQLiteStore",
            f"{cfg.drain:,}",
            _n(sqlite.median),
            sqlite.spread(),
            f"MemoryStore {_n(memory.median)}/s",
            _x(sqlite.median / memory.median),
        ],
        [
            "`RetryProcessor.drain()`, MemoryStore",
            f"{cfg.drain:,}",
            _n(memory.median),
            memory.spread(),
            "—",
            "—",
        ],
    ]
    print(
        "\n## 4. Claim and complete (`RetryProcessor.drain()`, due no-op tasks)\n\n"
        f"{cfg.drain:,} IMMEDIATE tasks enqueued untimed (`enqueue_many`, 1,000 a call), then "
        "`RetryProcessor(dlq, concurrency=100, batch_size=1000).drain()` timed: per retry a "
        f"claim (one transaction per batch) and a finish (group-committed); "
        f"{cfg.drain_reps} repetition(s), fresh file each.\n"
    )
    print(_table(["benchmark", "tasks", "retries/s", "range/s", "baseline", "ratio"], rows))


# --------------------------------------------------------------------------- 5. re-sync


# --------------------------------------------------------------------------- main


def _header(cfg: Config, work: Path, sections: set[str]) -> None:
    print("# mahavishnu_dlq SQLite store benchmarks\n")
    print(
        f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}; mode: "
        f"{'quick' if cfg.quick else 'full'}; rows: {', '.join(_size(s) for s in cfg.rows)}; "
        f"sections: {', '.join(sorted(sections))}"
    )
    print(
        f"- mahavishnu_dlq {mahavishnu_dlq.__version__}; SQLite {sqlite3.sqlite_version}; "
        f"Python {platform.python_version()} ({platform.python_implementation()}), "
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average {_loadavg()}"
    )
    print(f"- files in {work} ({_filesystem(work)})")
    print(
        "- one sample per run on a shared machine: compare ratios (baseline measured in "
        "the same run) rather than absolute numbers across runs"
    )


async def _run(cfg: Config, work: Path, sections: set[str], report: Report) -> None:
    if "1" in sections:
        await bench_enqueue(cfg, work, report)
    if "2" in sections or "3" in sections:
        await bench_reads(cfg, work, sections, report)
    if "4" in sections:
        await bench_drain(cfg, work, report)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_sqlite",
        description="SQLite store benchmarks with same-run baselines and ceilings.",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes (about 30 s)")
    parser.add_argument(
        "--rows",
        type=_parse_rows,
        default=None,
        help="file sizes of sections 2-3, e.g. 100000,1000000 or 100k,1M (default)",
    )
    parser.add_argument(
        "--sections", default="1,2,3,4", help="comma-separated sections (default all)"
    )
    parser.add_argument("--dir", default=None, help="where the files go (default: temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the files")
    parser.add_argument("--seed", type=int, default=1234, help="seed of the random lookups")
    args = parser.parse_args(argv)
    cfg = Config.build(quick=args.quick, rows=args.rows, seed=args.seed)
    sections = {part.strip() for part in args.sections.split(",") if part.strip()}
    unknown = sections - {"1", "2", "3", "4"}
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from 1-4")
    work = Path(tempfile.mkdtemp(prefix="bench-sqlite-", dir=args.dir))
    report = Report()
    _header(cfg, work, sections)
    started = time.perf_counter()
    try:
        anyio.run(_run, cfg, work, sections, report)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    elapsed = time.perf_counter() - started
    passed = sum(1 for _, result in report.verdicts if result == "PASS")
    print(
        f"\nTargets: {passed} PASS, {len(report.verdicts) - passed} FAIL. "
        f"Total time {elapsed:.1f} s; load average at the end {_loadavg()}."
    )
    for what, result in report.verdicts:
        if result == "FAIL":
            print(f"- FAIL {what}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
