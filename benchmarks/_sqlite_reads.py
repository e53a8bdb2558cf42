"""Sections 2 and 3 of :mod:`benchmarks.bench_sqlite`: ``get_task`` latency by file
size, and the first page and statistics at the largest size."""

from __future__ import annotations

import json
import random
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from benchmarks._sqlite_common import (
    HOT_OPEN,
    LIST_TARGET_MS,
    STATS_TARGET_MS,
    TARGET_ROWS,
    Config,
    Report,
    _create,
    _load,
    _ms,
    _p95,
    _progress,
    _raw,
    _size,
    _table,
    _us,
    _x,
)
from mahavishnu_dlq import (
    DeadLetterQueue,
    MemoryStore,
    SQLiteStore,
)

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
