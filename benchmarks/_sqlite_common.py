"""The SQLite benchmarks' shared parts: configuration, report and tables, and the
rows the files are loaded with (see :mod:`benchmarks.bench_sqlite`)."""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import partial
from pathlib import Path
from typing import Any

from mahavishnu_dlq import (
    DeadLetterStatus,
    ErrorCategory,
    FailedTask,
    MemoryStore,
    RetryPolicy,
    SQLiteStore,
)
from mahavishnu_dlq.storage import opensearch_query as documents
from mahavishnu_dlq.storage import sqlite_schema as schema
from mahavishnu_dlq.testing import make_task

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
