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
import json
import os
import platform
import random
import shutil
import sqlite3
import statistics
import sys
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
from mahavishnu_dlq import (
    DeadLetterQueue,
    DeadLetterStatus,
    ErrorCategory,
    FailedTask,
    Failure,
    MemoryStore,
    RetryPolicy,
    RetryProcessor,
    SQLiteStore,
)
from mahavishnu_dlq.storage import opensearch_query as documents
from mahavishnu_dlq.storage import sqlite_schema as schema
from mahavishnu_dlq.storage.sqlite_writer import Op
from mahavishnu_dlq.testing import make_task

__all__ = ["main"]

REPOS = ["repo"]
ERROR = "connection reset by peer"
HANDLER = "bench.noop"
MANY = 100  # producers of the grouped rows, and rows per transaction of the grouped ceiling

# Targets of the SQLite issue (point 6).
ENQUEUE_TARGET = 5_000.0  # durable enqueues/s with 100 producers
LIST_TARGET_MS = 20.0  # p95 of a first page at 1M rows
STATS_TARGET_MS = 50.0  # p95 of get_statistics at 1M rows
TARGET_ROWS = 1_000_000

_COLUMNS = ", ".join(schema.COLUMNS)
_MARKS = ", ".join("?" * len(schema.COLUMNS))
_INSERT = f"INSERT INTO tasks ({_COLUMNS}) VALUES ({_MARKS})"  # noqa: S608 - fixed names


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class Config:
    """How much work each section does."""

    quick: bool
    rows: tuple[int, ...]
    single: int  # section 1: enqueues by the lone producer, per repetition
    many: int  # section 1: enqueues by the 100 producers, per repetition
    reps: int  # section 1 repetitions (variants interleaved)
    lookups: int  # section 2: get_task calls per variant and size
    reads: int  # section 3: repetitions of each read
    memory_reads: int  # section 3: repetitions on the memory store (a full scan each)
    drain: int  # section 4: due tasks per drain
    drain_reps: int
    seed: int

    @classmethod
    def build(cls, *, quick: bool, rows: tuple[int, ...] | None, seed: int) -> Config:
        if quick:
            return cls(
                quick=True,
                rows=rows or (20_000, 50_000),
                single=200,
                many=3_000,
                reps=2,
                lookups=1_000,
                reads=30,
                memory_reads=3,
                drain=2_000,
                drain_reps=1,
                seed=seed,
            )
        return cls(
            quick=False,
            rows=rows or (100_000, 1_000_000),
            single=1_000,
            many=20_000,
            reps=3,
            lookups=5_000,
            reads=100,
            memory_reads=5,
            drain=10_000,
            drain_reps=2,
            seed=seed,
        )


def _parse_rows(text: str) -> tuple[int, ...]:
    sizes: set[int] = set()
    for part in text.split(","):
        item = part.strip().lower().replace("_", "")
        if not item:
            continue
        scale = 1
        if item.endswith("k"):
            item, scale = item[:-1], 1_000
        elif item.endswith("m"):
            item, scale = item[:-1], 1_000_000
        try:
            value = int(float(item) * scale)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"bad --rows {text!r}") from exc
        if value < 1_000:
            raise argparse.ArgumentTypeError(f"--rows sizes must be >= 1000, got {value}")
        sizes.add(value)
    if not sizes:
        raise argparse.ArgumentTypeError("--rows needs at least one size")
    return tuple(sorted(sizes))


# --------------------------------------------------------------------------- report


@dataclass
class Report:
    """The targets met and missed, for the summary."""

    verdicts: list[tuple[str, str]] = field(default_factory=list)  # (what, PASS/FAIL)

    def judge(self, what: str, ok: bool) -> str:
        result = "PASS" if ok else "FAIL"
        self.verdicts.append((what, result))
        return result


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    right = [h.endswith(("/s", "ms", "µs", "tasks", "rows", "producers", "size")) for h in headers]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right, strict=True)
        ]
        return "| " + " | ".join(parts) + " |"

    rule = (
        "|"
        + "|".join(
            ("-" * (w + 1) + ":") if r else "-" * (w + 2)
            for w, r in zip(widths, right, strict=True)
        )
        + "|"
    )
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def _n(value: float) -> str:
    return f"{value:,.0f}"


def _ms(value: float) -> str:
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def _us(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def _x(value: float) -> str:
    return f"{value:.2f}x"


def _size(value: int) -> str:
    if value % 1_000_000 == 0:
        return f"{value // 1_000_000}M"
    if value % 1_000 == 0:
        return f"{value // 1_000}k"
    return f"{value:,}"


def _p95(samples: Sequence[float]) -> float:
    ordered = sorted(samples)
    return ordered[round(0.95 * (len(ordered) - 1))]


def _progress(text: str) -> None:
    print(f"  … {text}", file=sys.stderr, flush=True)


def _loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def _filesystem(path: Path) -> str:
    """The mount holding ``path``, as ``fstype on device`` (Linux), else ``?``."""
    try:
        mounts = Path("/proc/mounts").read_text(encoding="utf-8").splitlines()
    except OSError:
        return "?"
    best = ("", "?")
    resolved = str(path.resolve())
    for line in mounts:
        parts = line.split()
        if len(parts) >= 3 and resolved.startswith(parts[1]) and len(parts[1]) > len(best[0]):
            best = (parts[1], f"{parts[2]} on {parts[0]}")
    return best[1]


# --------------------------------------------------------------------------- rows


_STATUSES = [DeadLetterStatus.PENDING] * 6 + [
    DeadLetterStatus.COMPLETED,
    DeadLetterStatus.EXHAUSTED,
    DeadLetterStatus.ARCHIVED,
]
_CATEGORIES = list(ErrorCategory)
_NOW = datetime.now(timezone.utc).replace(microsecond=0)


HOT_OPEN = 300_000  # fp-hot tasks newer than this many seconds are open, older ones closed


def _task(k: int) -> FailedTask:
    """Task ``k`` of the loaded files: one failure a second back from now, 20 workflows,
    every category, 2/3 pending (not due for a day), the rest closed. One task in ten
    has the fingerprint ``fp-hot``, a recurring error whose occurrences older than
    ``HOT_OPEN`` seconds were retried away (completed): its oldest open task comes
    after every closed one. The others have 50 fingerprints."""
    failed = _NOW - timedelta(seconds=k)
    hot = k % 10 == 0
    status = _STATUSES[k % len(_STATUSES)]
    if hot:
        status = DeadLetterStatus.PENDING if k < HOT_OPEN else DeadLetterStatus.COMPLETED
    return make_task(
        task_id=f"task-{k:08d}",
        workflow=f"wf-{k % 20}",
        task={"order": k},
        now=failed,
        error=f"connection reset by peer ({k})",
        error_category=_CATEGORIES[k % len(_CATEGORIES)],
        error_fingerprint="fp-hot" if hot else f"fp-{k % 50:02d}",
        status=status,
        retry_policy=RetryPolicy.EXPONENTIAL,
        next_retry_at=_NOW + timedelta(days=1),
    )


def _same(task: FailedTask, _current: FailedTask | None) -> FailedTask:
    return task


def _row(task: FailedTask) -> tuple[Any, ...]:
    """The store's own row of ``task``."""
    return schema.row_values(task, documents.document_json(task, ""))


async def _create(path: Path) -> None:
    """An empty file with the store's schema (the store's migration creates it)."""
    store = SQLiteStore(path)
    await store.open()
    await store.close()


def _raw(path: Path, *, durable: bool = True) -> sqlite3.Connection:
    connection = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA journal_mode = WAL")
    for pragma in schema.PRAGMAS:  # the store's: synchronous = FULL, temp_store = MEMORY
        connection.execute(f"PRAGMA {pragma}")
    if not durable:
        connection.execute("PRAGMA synchronous = OFF")
    return connection


async def _load(path: Path, start: int, stop: int, memory: MemoryStore | None) -> float:
    """Tasks ``start``..``stop`` into the file (and ``memory``), untimed; seconds taken."""
    began = time.perf_counter()
    connection = _raw(path, durable=False)  # a bench file: no fsync while loading
    connection.execute("PRAGMA cache_size = -262144")  # 256 MiB
    chunk = 20_000
    try:
        for low in range(start, stop, chunk):
            tasks = [_task(k) for k in range(low, min(stop, low + chunk))]
            connection.execute("BEGIN IMMEDIATE")
            connection.executemany(_INSERT, [_row(task) for task in tasks])
            connection.execute("COMMIT")
            if memory is not None:
                for task in tasks:
                    await memory.mutate(task.task_id, partial(_same, task))
            if (low + chunk) % 200_000 == 0:
                _progress(f"loaded {low + chunk:,} / {stop:,}")
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        connection.close()
    return time.perf_counter() - began


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


# --------------------------------------------------------------------------- 2. get_task


@dataclass
class Latencies:
    """Microseconds per call."""

    samples: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def p95(self) -> float:
        return _p95(self.samples)


async def _get_latencies(
    path: Path, dlq: DeadLetterQueue, memory: DeadLetterQueue, size: int, cfg: Config
) -> dict[str, Latencies]:
    rng = random.Random(cfg.seed + size)
    raw = _raw(path)
    select = "SELECT doc FROM tasks WHERE task_id = ?"

    async def store_get(task_id: str) -> Any:
        return await dlq.get_task(task_id)

    async def memory_get(task_id: str) -> Any:
        return await memory.get_task(task_id)

    async def bare_get(task_id: str) -> Any:
        return raw.execute(select, (task_id,)).fetchone()

    async def threaded_get(task_id: str) -> Any:
        return await anyio.to_thread.run_sync(lambda: raw.execute(select, (task_id,)).fetchone())

    calls: dict[str, Callable[[str], Awaitable[Any]]] = {
        "sqlite": store_get,
        "bare": bare_get,
        "threaded": threaded_get,
        "memory": memory_get,
    }
    found: dict[str, Latencies] = {name: Latencies() for name in calls}
    block = 250
    try:
        for name, call in calls.items():  # warm-up: connections, caches
            for _ in range(100):
                assert await call(f"task-{rng.randrange(size):08d}") is not None, name
        names = list(calls)
        for rep, _ in enumerate(range(0, cfg.lookups, block)):
            shift = rep % len(names)
            for name in names[shift:] + names[:shift]:
                call, samples = calls[name], found[name].samples
                ids = [f"task-{rng.randrange(size):08d}" for _ in range(block)]
                for task_id in ids:
                    began = time.perf_counter_ns()
                    await call(task_id)
                    samples.append((time.perf_counter_ns() - began) / 1000)
    finally:
        raw.close()
    return found


async def bench_reads(cfg: Config, work: Path, sections: set[str], report: Report) -> None:
    path = work / "rows.db"
    await _create(path)
    memory_store = MemoryStore()
    memory = DeadLetterQueue(memory_store, max_size=10**9)
    rows_get: list[list[str]] = []
    lists = ""
    loaded = 0
    first: float | None = None
    for size in cfg.rows:
        _progress(f"section 2: loading {size - loaded:,} rows (untimed)")
        seconds = await _load(path, loaded, size, memory_store)
        _progress(f"loaded {size:,} rows in {seconds:.0f} s ({(size - loaded) / seconds:,.0f}/s)")
        loaded = size
        store = SQLiteStore(path)
        dlq = DeadLetterQueue(store, max_size=10**9)
        await store.open()
        try:
            if size == cfg.rows[-1] and "3" in sections:
                lists = await bench_lists(cfg, dlq, memory, path, size, report)
            if "2" not in sections:
                continue
            found = await _get_latencies(path, dlq, memory, size, cfg)
        finally:
            await store.close()
        sqlite = found["sqlite"]
        first = first or sqlite.median
        threaded = found["threaded"]
        rows_get += [
            [
                "`get_task`, SQLiteStore",
                _size(size),
                _us(sqlite.median),
                _us(sqlite.p95),
                f"SELECT in a worker thread {_us(threaded.median)} µs",
                _x(sqlite.median / threaded.median),
                f"{_x(sqlite.median / first)} of @{_size(cfg.rows[0])}",
            ],
            [
                "bare `SELECT doc … WHERE task_id = ?` via `anyio.to_thread`",
                _size(size),
                _us(threaded.median),
                _us(threaded.p95),
                "—",
                "—",
                "(floor of a store that reads in threads)",
            ],
            [
                "bare `SELECT doc … WHERE task_id = ?` in the loop's thread",
                _size(size),
                _us(found["bare"].median),
                _us(found["bare"].p95),
                "—",
                "—",
                "(floor)",
            ],
            [
                "`get_task`, MemoryStore (same tasks)",
                _size(size),
                _us(found["memory"].median),
                _us(found["memory"].p95),
                f"SQLiteStore {_us(sqlite.median)} µs",
                _x(found["memory"].median / sqlite.median),
                "(reference)",
            ],
        ]
    print(
        "\n## 2. `get_task` latency by file size (µs per call)\n\n"
        f"{cfg.lookups:,} random stored ids per variant and size, in blocks of 250 with the "
        "variants interleaved. The SQLite store reads on a connection of a worker thread "
        "(`anyio.to_thread`), decodes the JSON document and validates the record; the bare "
        "rows read the document's text only. The memory store holds the same tasks.\n"
    )
    if rows_get:
        print(
            _table(["read", "rows", "median µs", "p95 µs", "baseline", "ratio", "note"], rows_get)
        )
    if lists:
        print(lists)


def _merged_pages(page: str, statuses: Sequence[str]) -> str:
    """The first page over several statuses as the merge of each one's first page (an
    ``IN`` list would sort every matching row first)."""
    arms = " UNION ALL ".join(
        "SELECT * FROM ("  # noqa: S608 - fixed statuses
        + page.replace("SELECT doc", "SELECT doc, failed_at_us, task_id").format(
            f"WHERE status = '{status}'"
        )
        + ")"
        for status in statuses
    )
    return page.replace("FROM tasks", f"FROM ({arms})").format("")


async def _timed(call: Callable[[], Awaitable[Any]], repetitions: int) -> Latencies:
    await call()  # warm-up
    found = Latencies()
    for _ in range(repetitions):
        began = time.perf_counter_ns()
        await call()
        found.samples.append((time.perf_counter_ns() - began) / 1e6)
    return found


async def bench_lists(
    cfg: Config,
    dlq: DeadLetterQueue,
    memory: DeadLetterQueue,
    path: Path,
    size: int,
    report: Report,
) -> str:
    """Section 3's table (with its heading), printed after section 2's."""
    _progress(f"section 3: list_tasks and get_statistics at {size:,} rows")
    raw = _raw(path)

    def bare(sql: str, params: Sequence[Any] = ()) -> Callable[[], Awaitable[Any]]:
        async def call() -> Any:
            return [json.loads(doc) for (doc,) in raw.execute(sql, params)]

        return call

    def bare_stats() -> Callable[[], Awaitable[Any]]:
        async def call() -> Any:
            return raw.execute("SELECT kind, key, n FROM counts").fetchall()

        return call

    filtered: dict[str, Any] = {
        "status": "pending",
        "error_category": "network",
        "workflow": "wf-3",
    }
    page = "SELECT doc FROM tasks {} ORDER BY failed_at_us DESC, task_id LIMIT 20"
    reads: list[
        tuple[str, Callable[[], Awaitable[Any]], Callable[[], Awaitable[Any]], str, float]
    ] = [
        (
            "`list_tasks(limit=20)`, first page",
            lambda: dlq.list_tasks(limit=20),
            bare(page.format("")),
            "list",
            LIST_TARGET_MS,
        ),
        (
            "`list_tasks(status='pending', limit=20)`",
            lambda: dlq.list_tasks(status="pending", limit=20),
            bare(page.format("WHERE status = 'pending'")),
            "list",
            LIST_TARGET_MS,
        ),
        (
            "`list_tasks(status=['pending', 'exhausted'], limit=20)`",
            lambda: dlq.list_tasks(status=["pending", "exhausted"], limit=20),
            bare(_merged_pages(page, ("pending", "exhausted"))),
            "list",
            LIST_TARGET_MS,
        ),
        (
            "`list_tasks(status, category, workflow, limit=20)`",
            lambda: dlq.list_tasks(limit=20, **filtered),
            bare(
                page.format(
                    "WHERE status = 'pending' AND error_category = 'network' AND workflow = 'wf-3'"
                )
            ),
            "list",
            0.0,
        ),
        ("`get_statistics()`", dlq.get_statistics, bare_stats(), "stats", STATS_TARGET_MS),
    ]
    rows: list[list[str]] = []
    try:
        for name, call, floor, kind, target in reads:
            mine = await _timed(call, cfg.reads)
            base = await _timed(floor, cfg.reads)
            floor_name = (
                "bare SQL + json.loads" if kind == "list" else "bare `SELECT … FROM counts`"
            )
            result = "—"
            target_text = "—"
            if target:
                target_text = f"≤ {target:g} ms p95 at {_size(TARGET_ROWS)}"
                result = report.judge(f"[3] {name} @{_size(size)}", mine.p95 <= target)
            rows.append(
                [
                    name,
                    _size(size),
                    _ms(mine.median),
                    _ms(mine.p95),
                    f"{floor_name} {_ms(base.median)} ms",
                    _x(mine.median / base.median) if base.median > 0 else "—",
                    target_text,
                    result,
                ]
            )
        for name, memory_call in (
            ("`list_tasks(limit=20)`, MemoryStore", lambda: memory.list_tasks(limit=20)),
            ("`get_statistics()`, MemoryStore", memory.get_statistics),
        ):
            found = await _timed(memory_call, cfg.memory_reads)
            rows.append(
                [name, _size(size), _ms(found.median), _ms(found.p95), "—", "—", "(reference)", "—"]
            )
    finally:
        raw.close()
    intro = (
        f"\n## 3. First page and statistics at {size:,} rows (ms per call)\n\n"
        f"{cfg.reads} calls each after one warm-up (memory store: {cfg.memory_reads}, it scans "
        "every row). The bare rows run the same SQL in the loop's thread and decode the 20 "
        "documents with `json.loads` (no record validation, no worker thread); the statistics "
        "floor reads the counts table only. 2/3 of the rows are pending; the filtered "
        "page matches about 1 row in 120. The statistics include the oldest open task of "
        "each of the top 5 fingerprints; the top one, `fp-hot` (a tenth of the rows), has "
        f"its tasks older than {HOT_OPEN:,} s closed (at 1M: 70,000 closed before its "
        "oldest open one).\n"
    )
    headers = ["read", "rows", "p50 ms", "p95 ms", "baseline", "ratio", "target", "result"]
    return intro + "\n" + _table(headers, rows)


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
