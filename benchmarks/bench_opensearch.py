"""OpenSearch store benchmarks, with same-run baselines.

    python -m benchmarks.bench_opensearch [--quick] [--docs 100000,1000000]

Uses ``MAHAVISHNU_DLQ_TEST_OPENSEARCH_URL`` when set, else starts a node with
``scripts/opensearch_node.py`` (512 MiB heap) and stops it at the end.

1. Durable enqueues/s (``DeadLetterQueue.enqueue`` acknowledged by the node) with
   1, 10 and 100 concurrent producers: group commit (the store's default) against
   one bulk request per task (``batch_size=1``), in the same run.
2. Claim-and-complete throughput: ``RetryProcessor.drain()`` over due no-op tasks
   with 1 processor and with 3 processors (separate stores and clients).
3. Latency (p50/p95) of the first page of a filtered ``list_tasks`` and of
   ``get_statistics`` over indexes holding N documents (bulk-loaded).
4. Re-sync of 20,000 journaled changes (``FailoverStore.probe`` after an outage,
   enqueues kept in a SQLite journal file, ``failover.fallback: sqlite``, and in a
   memory fallback): batched through ``OpenSearchStore.mutate_many``,
   against the per-record path (each merge its own ``mutate``, 64 at a time: what the
   re-sync did before) and against plain ``_bulk`` creates of the same documents (the
   ceiling). Median of three runs each.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

from mahavishnu_dlq import DeadLetterQueue, RetryProcessor
from mahavishnu_dlq.clock import utcnow
from mahavishnu_dlq.errors import StoreUnavailableError
from mahavishnu_dlq.models import (
    DeadLetterStatus,
    ErrorCategory,
    FailedTask,
    RetryPolicy,
    TaskFilter,
    encode_json,
)
from mahavishnu_dlq.storage import FailoverStore, MemoryStore
from mahavishnu_dlq.storage import opensearch_query as q
from mahavishnu_dlq.storage.base import Mutation, mutate_each
from mahavishnu_dlq.storage.journal import JournalStore
from mahavishnu_dlq.storage.opensearch import OpenSearchStore
from mahavishnu_dlq.testing import make_task

_ROOT = Path(__file__).resolve().parent.parent


def _node_module() -> ModuleType:
    path = _ROOT / "scripts" / "opensearch_node.py"
    spec = importlib.util.spec_from_file_location("opensearch_node", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows
    ]
    return "\n".join([line, rule, *body])


def _store(url: str, index: str, **options: Any) -> OpenSearchStore:
    return OpenSearchStore(hosts=[url], index=index, **options)


async def _fresh(url: str, **options: Any) -> OpenSearchStore:
    store = _store(url, f"bench-{uuid.uuid4().hex[:10]}", **options)
    await store.open()
    return store


# -- 1. durable enqueues ----------------------------------------------------------------


async def _enqueue_rate(url: str, producers: int, total: int, batch_size: int) -> float:
    # the baseline (batch_size=1) is one request per task, as concurrent as the
    # connection pool allows: what a store without group commit does
    in_flight = 64 if batch_size == 1 else 4
    store = await _fresh(url, batch_size=batch_size, max_in_flight=in_flight)
    dlq = DeadLetterQueue(store, max_size=10**9)
    per = total // producers

    async def producer(p: int) -> None:
        for i in range(per):
            await dlq.enqueue(f"p{p}-{i}", {"order": i}, ["repo"], "connection reset by peer")

    started = time.perf_counter()
    await asyncio.gather(*(producer(p) for p in range(producers)))
    elapsed = time.perf_counter() - started
    assert await store.count() == per * producers
    await store.drop()
    await store.close()
    return per * producers / elapsed


async def section_enqueue(url: str, quick: bool) -> list[list[str]]:
    rows = []
    for producers in (1, 10, 100):
        total = {1: 300, 10: 2000, 100: 5000}[producers] // (3 if quick else 1)
        grouped = await _enqueue_rate(url, producers, total, batch_size=1000)
        single = await _enqueue_rate(url, producers, total, batch_size=1)
        target = "≥ 5,000/s and ≥ 10x" if producers == 100 else "—"
        ok = grouped >= 5000 and grouped >= 10 * single
        rows.append(
            [
                f"{producers}",
                f"{total:,}",
                f"{grouped:,.0f}",
                f"{single:,.0f}",
                f"{grouped / single:.1f}x",
                target,
                ("PASS" if ok else "FAIL") if producers == 100 else "—",
            ]
        )
    return rows


# -- 2. claim and complete ---------------------------------------------------------------


async def _drain_rate(url: str, processors: int, total: int) -> float:
    index = f"bench-{uuid.uuid4().hex[:10]}"
    loader = _store(url, index)
    await loader.open()
    dlq = DeadLetterQueue(loader, max_size=10**9)
    for i in range(total):
        await dlq.enqueue(f"t{i}", {"i": i}, [], "connection reset", retry_policy="immediate")

    async def handler(task: dict[str, Any], repos: list[str]) -> None:
        return None

    workers = []
    for w in range(processors):
        store = _store(url, index)
        await store.open()
        worker_dlq = DeadLetterQueue(store, max_size=10**9, worker_id=f"w{w}")
        worker_dlq.default_callback = handler
        workers.append((store, RetryProcessor(worker_dlq, concurrency=50, batch_size=200)))

    async def run(processor: RetryProcessor) -> int:
        done = 0
        idle = 0
        while idle < 3:
            n = await processor.run_once()
            done += n
            idle = idle + 1 if n == 0 else 0
            if n == 0:
                await asyncio.sleep(0.2)  # other processors' claims become visible on refresh
        return done

    started = time.perf_counter()
    counts = await asyncio.gather(*(run(p) for _, p in workers))
    elapsed = time.perf_counter() - started - 0.6  # the final idle polls
    assert sum(counts) == total, counts
    assert await loader.count() == total
    for store, _ in workers:
        await store.close()
    await loader.drop()
    await loader.close()
    return total / elapsed


async def section_drain(url: str, quick: bool) -> list[list[str]]:
    total = 1000 if quick else 4000
    one = await _drain_rate(url, 1, total)
    three = await _drain_rate(url, 3, total)
    return [
        ["1", f"{total:,}", f"{one:,.0f}", "—", "—"],
        ["3", f"{total:,}", f"{three:,.0f}", "≥ 1,000/s", "PASS" if three >= 1000 else "FAIL"],
    ]


# -- 3. read latency by index size -------------------------------------------------------


async def _bulk_load(store: OpenSearchStore, count: int) -> None:
    client = store._client
    index = store._index
    now = utcnow()
    categories = list(ErrorCategory)
    statuses = [DeadLetterStatus.PENDING] * 6 + [
        DeadLetterStatus.COMPLETED,
        DeadLetterStatus.EXHAUSTED,
        DeadLetterStatus.ARCHIVED,
    ]
    chunk = 5000
    for start in range(0, count, chunk):
        body: list[dict[str, Any]] = []
        for i in range(start, min(count, start + chunk)):
            failed = now - timedelta(seconds=i)
            task = make_task(
                task_id=f"doc-{i}",
                workflow=f"wf-{i % 20}",
                now=failed,
                error=f"connection reset by peer {i}",
                error_category=categories[i % len(categories)],
                error_fingerprint=f"fp-{i % 50}",
                status=statuses[i % len(statuses)],
                retry_policy=RetryPolicy.EXPONENTIAL,
                next_retry_at=failed + timedelta(hours=1),
            )
            body.append({"index": {"_id": q.doc_id(task.task_id)}})
            body.append(q.to_document(task, "bench"))
        response = await client.bulk(body=body, index=index)
        assert not response["errors"], "bulk load failed"
    await client.indices.refresh(index=index)


async def _latency(call: Callable[[], Awaitable[Any]], repetitions: int) -> tuple[float, float]:
    samples = []
    for _ in range(repetitions):
        started = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(0.95 * (len(samples) - 1))]


async def section_reads(url: str, sizes: list[int]) -> list[list[str]]:
    rows = []
    for size in sizes:
        store = await _fresh(url)
        loaded = time.perf_counter()
        await _bulk_load(store, size)
        load_s = time.perf_counter() - loaded
        dlq = DeadLetterQueue(store, max_size=10**9)

        async def first_page(dlq: DeadLetterQueue = dlq) -> Any:
            return await dlq.list_tasks(
                status="pending", error_category="network", workflow="wf-3", limit=50
            )

        page = await first_page()
        assert len(page) > 0
        list_p50, list_p95 = await _latency(first_page, 40)
        stats_p50, stats_p95 = await _latency(dlq.get_statistics, 40)
        rows.append(
            [
                "filtered list_tasks, first page",
                f"{size:,}",
                f"{list_p50:.1f}",
                f"{list_p95:.1f}",
                "≤ 50 ms p95" if size >= 1_000_000 else "—",
                ("PASS" if list_p95 <= 50 else "FAIL") if size >= 1_000_000 else "—",
            ]
        )
        rows.append(
            [
                "get_statistics",
                f"{size:,}",
                f"{stats_p50:.1f}",
                f"{stats_p95:.1f}",
                "≤ 100 ms p95" if size >= 1_000_000 else "—",
                ("PASS" if stats_p95 <= 100 else "FAIL") if size >= 1_000_000 else "—",
            ]
        )
        print(f"  … loaded {size:,} documents in {load_s:.0f} s", file=sys.stderr)
        await store.drop()
        await store.close()
    return rows


# -- 4. re-sync of journaled changes --------------------------------------------------------


class _PerRecord(OpenSearchStore):
    """The re-sync path before batches: each merge its own ``mutate``, 64 at a time."""

    async def mutate_many(
        self, items: Sequence[tuple[str, Mutation]]
    ) -> list[FailedTask | Exception]:
        return await mutate_each(self, items)


async def _outage(store: FailoverStore, count: int) -> None:
    """``count`` enqueues served by the fallback while the primary is "down" (100
    producers, so a journal file commits them in shared transactions)."""
    store._trip(StoreUnavailableError("opensearch", "benchmark outage"), at_start=True)
    dlq = DeadLetterQueue(store, max_size=10**9)

    async def produce(first: int) -> None:
        for n in range(first, count, 100):
            await dlq.enqueue(f"early-{n}", {"n": n}, ["repo"], TimeoutError("no answer"))

    await asyncio.gather(*(produce(p) for p in range(100)))
    assert store.pending_resync == count


async def _resync_rate(
    url: str, count: int, *, per_record: bool, journal: Path | None = None
) -> float:
    """Changes/s of one re-sync of ``count`` changes; kept in memory, or in a SQLite
    journal file under ``journal``."""
    kind = _PerRecord if per_record else OpenSearchStore
    search = kind(hosts=[url], index=f"bench-{uuid.uuid4().hex[:10]}")
    fallback = MemoryStore() if journal is None else JournalStore(journal / uuid.uuid4().hex)
    store = FailoverStore(search, fallback)  # timeout 5 s, as by default
    await store.open()
    await _outage(store, count)
    assert await store.probe()
    assert store.last_resync is not None
    changes, seconds = store.last_resync
    assert changes == count
    assert await search.count() == count
    assert await fallback.count() == 0  # taken over, and removed from the journal
    await search.drop()
    await store.close()
    return count / seconds


async def _bulk_rate(url: str, count: int) -> float:
    """The same documents as plain ``_bulk`` creates, 1000 per request, 4 in flight (as
    the store's group commit sends at most): encoding included, no read, no check."""
    journal = FailoverStore(MemoryStore(), MemoryStore())
    await _outage(journal, count)
    assert journal.fallback is not None
    records: list[FailedTask] = list(await journal.fallback.query(TaskFilter(), limit=count))
    store = await _fresh(url)
    slots = asyncio.Semaphore(4)

    async def send(chunk: list[FailedTask]) -> None:
        async with slots:
            lines = []
            for task in chunk:
                lines.append(encode_json({"create": {"_id": q.doc_id(task.task_id)}}))
                lines.append(q.document_json(task, "bench"))
            lines.append("")
            body = "\n".join(lines)
            answer = await store._client.bulk(
                body=body, index=store._index, params={"filter_path": "errors"}
            )
            assert not answer["errors"]

    started = time.perf_counter()
    await asyncio.gather(*(send(records[at : at + 1000]) for at in range(0, count, 1000)))
    elapsed = time.perf_counter() - started
    await store._client.indices.refresh(index=store._index)  # the store did not write
    assert await store.count() == count
    await store.drop()
    await store.close()
    return count / elapsed


async def section_resync(url: str, quick: bool) -> list[list[str]]:
    count = 5000 if quick else 20_000
    await _resync_rate(url, 2000, per_record=False)  # warm the read and merge paths up
    rates: dict[str, list[float]] = {"journal": [], "batched": [], "per-record": [], "bulk": []}
    with tempfile.TemporaryDirectory(prefix="bench-journal-") as journals:
        for _ in range(3):  # interleaved: the node's state drifts along the run
            rates["journal"].append(
                await _resync_rate(url, count, per_record=False, journal=Path(journals))
            )
            rates["batched"].append(await _resync_rate(url, count, per_record=False))
            rates["per-record"].append(await _resync_rate(url, count, per_record=True))
            rates["bulk"].append(await _bulk_rate(url, count))
    journal, batched, per_record, bulk = (statistics.median(rates[k]) for k in rates)

    def spread(kind: str) -> str:
        return f"{min(rates[kind]):,.0f}-{max(rates[kind]):,.0f}"

    ok = batched >= 10_000
    return [
        [
            "SQLite journal (failover.fallback: sqlite): batched, read and removed per batch",
            f"{count:,}",
            f"{journal:,.0f}",
            spread("journal"),
            f"{journal / per_record:.1f}x",
            f"{journal / bulk:.0%}",
            "≥ 10,000/s",
            "PASS" if journal >= 10_000 else "FAIL",
        ],
        [
            "memory fallback: batched, mutate_many (one _mget + one conditional _bulk per 1,000)",
            f"{count:,}",
            f"{batched:,.0f}",
            spread("batched"),
            f"{batched / per_record:.1f}x",
            f"{batched / bulk:.0%}",
            "≥ 10,000/s",
            "PASS" if ok else "FAIL",
        ],
        [
            "per record: mutate, 64 in flight (before)",
            f"{count:,}",
            f"{per_record:,.0f}",
            spread("per-record"),
            "1.0x",
            f"{per_record / bulk:.0%}",
            "—",
            "—",
        ],
        [
            "raw _bulk creates of the same documents (ceiling)",
            f"{count:,}",
            f"{bulk:,.0f}",
            spread("bulk"),
            f"{bulk / per_record:.1f}x",
            "100%",
            "—",
            "—",
        ],
    ]


async def run_all(url: str, quick: bool, sizes: list[int], sections: set[int]) -> None:
    info_store = _store(url, "unused")
    info = await info_store._client.info()
    await info_store.close()
    print("# mahavishnu_dlq OpenSearch benchmarks\n")
    print(
        f"- node: OpenSearch {info['version']['number']} at {url}; "
        f"heap {os.environ.get('BENCH_HEAP', '512 MiB')}; Python {sys.version.split()[0]}; "
        f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}\n"
    )
    print("  … warming the node up (JIT): enqueues and a drain, untimed", file=sys.stderr)
    for _ in range(2):
        await _enqueue_rate(url, 100, 3000, batch_size=1000)
        await _drain_rate(url, 3, 1500)
    if 1 in sections:
        print("## 1. Durable enqueues/s (DeadLetterQueue.enqueue, acknowledged by the node)\n")
        headers = ["producers", "tasks", "group commit/s", "one request per task/s", "ratio"]
        print(_table([*headers, "target", "result"], await section_enqueue(url, quick)), "\n")
    if 2 in sections:
        print("## 2. Claim-and-complete (RetryProcessor.run_once until idle)\n")
        rows = await section_drain(url, quick)
        print(_table(["processors", "tasks", "retries/s", "target", "result"], rows), "\n")
    if 3 in sections:
        print("## 3. Read latency by index size (ms)\n")
        rows = await section_reads(url, sizes)
        print(_table(["read", "documents", "p50", "p95", "target", "result"], rows), "\n")
    if 4 in sections:
        print("## 4. Re-sync of journaled changes (FailoverStore.probe after an outage)\n")
        rows = await section_resync(url, quick)
        headers = ["path", "changes", "changes/s", "runs", "vs per record", "of ceiling"]
        print(_table([*headers, "target", "result"], rows))


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_opensearch")
    parser.add_argument("--quick", action="store_true", help="small sizes")
    parser.add_argument("--docs", default="", help="index sizes, e.g. 100000,1000000")
    parser.add_argument("--sections", default="1,2,3,4", help="sections to run, e.g. 1,2")
    return parser.parse_args()


def cli() -> None:
    args = _parse()
    if args.docs:
        sizes = [int(x) for x in args.docs.split(",")]
    else:
        sizes = [10_000] if args.quick else [100_000, 1_000_000]
    url = os.environ.get("MAHAVISHNU_DLQ_TEST_OPENSEARCH_URL")
    node = None
    if not url:
        node = _node_module().start_node()
        url = node.url
    try:
        sections = {int(x) for x in args.sections.split(",")}
        asyncio.run(run_all(url, args.quick, sizes, sections))
    finally:
        if node is not None:
            node.stop()


if __name__ == "__main__":
    cli()
