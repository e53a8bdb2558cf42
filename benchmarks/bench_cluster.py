"""The OpenSearch store on a three-node cluster: what a replica costs, in one run.

    python -m benchmarks.bench_cluster [--quick] [--tasks 10000] [--rounds 3]

Starts three nodes on loopback with ``scripts/opensearch_node.py`` (320 MiB heap each)
and stops them at the end. Every client is given the three URLs. Per round, for 0 and
for 1 replica (the order alternates between rounds: the machine's state drifts), on a
fresh index with one shard, green before anything is timed:

1. durable enqueues/s: 100 producers (``DeadLetterQueue.enqueue`` acknowledged by the
   cluster, due at once);
2. the ceiling: plain ``_bulk`` creates of the same documents into another fresh index of
   the same shape (1,000 per request, 4 in flight, as the store's group commit sends at
   most): encoding included, no read, no check;
3. claim-and-complete/s: 3 processor processes (:mod:`benchmarks._cluster_worker`,
   ``RetryProcessor.run_once`` with a no-op handler) drain the tasks of step 1, from a
   start barrier to the end of the last cycle that had work.

Two tables: tasks/s, and the CPU each 1,000 tasks cost the three nodes together
(``utime + stime`` of the JVMs, from ``/proc``) and the client side. Each gives the median
of the rounds (and their range) and the ratio 1 replica / 0 replicas, taken per round (the
two runs of a round are minutes apart at most) and then its median. The three nodes, the
producers and the processors share the machine's cores, and other work on the machine
moves the rates: the ratios, and the CPU per task, are the figures to read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any, NamedTuple

from benchmarks.bench_opensearch import _node_module, _table
from mahavishnu_dlq import DeadLetterQueue
from mahavishnu_dlq.models import FailedTask, TaskFilter, encode_json
from mahavishnu_dlq.storage import opensearch_query as q
from mahavishnu_dlq.storage.opensearch import OpenSearchStore

_ROOT = Path(__file__).resolve().parent.parent
HEAP_MB = 320
PRODUCERS = 100
PROCESSORS = 3
MEASURES = ("enqueue", "bulk", "drain")
_TICK = os.sysconf("SC_CLK_TCK")


class Sample(NamedTuple):
    """One measure of one round: tasks/s, and CPU ms per 1,000 tasks of the three nodes
    together and of the client side (this process, or the processor processes)."""

    rate: float
    node_ms: float
    client_ms: float


class _NodeCPU:
    """CPU seconds the nodes spent (``utime + stime`` of each JVM; the pid is the JVM)."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids

    def seconds(self) -> float:
        total = 0
        for pid in self.pids:
            raw = Path(f"/proc/{pid}/stat").read_text()
            fields = raw[raw.rindex(")") + 2 :].split()
            total += int(fields[11]) + int(fields[12])
        return total / _TICK


async def _fresh(urls: list[str], replicas: int) -> OpenSearchStore:
    """A new index of one shard and ``replicas`` replicas, opened once it is green."""
    store = OpenSearchStore(
        hosts=urls, index=f"bench-{uuid.uuid4().hex[:10]}", number_of_replicas=replicas
    )
    try:
        await store.open()
        health = await store._client.cluster.health(
            index=store._index, wait_for_status="green", timeout="120s", request_timeout=130
        )
        assert health["status"] == "green", health
    except BaseException:
        await store.close()
        raise
    return store


class _Processors:
    """The processor processes of one drain, connected and waiting at the barrier."""

    def __init__(self, urls: list[str], index: str, tmp: Path) -> None:
        tmp.mkdir(parents=True)
        self.go = tmp / "go"
        self.ready = [tmp / f"ready-{n}" for n in range(PROCESSORS)]
        self.procs = [
            subprocess.Popen(  # noqa: S603 - our own interpreter and module
                [
                    *(sys.executable, "-m", "benchmarks._cluster_worker", ",".join(urls)),
                    *(index, f"w{n}", str(self.ready[n]), str(self.go)),
                ],
                cwd=_ROOT,
                stdout=subprocess.PIPE,
                text=True,
            )
            for n in range(PROCESSORS)
        ]

    async def wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        while not all(path.exists() for path in self.ready):
            assert all(p.poll() is None for p in self.procs), "a processor exited early"
            assert time.monotonic() < deadline, "the processors did not connect in 60 s"
            await asyncio.sleep(0.02)

    async def drain(self, total: int, nodes: _NodeCPU) -> Sample:
        """Retries/s from the barrier to the end of the last cycle with work."""
        node_cpu = -nodes.seconds()
        started = time.time()
        self.go.touch()
        reports: list[dict[str, Any]] = []
        for proc in self.procs:
            out, _ = await asyncio.to_thread(proc.communicate, timeout=600)
            assert proc.returncode == 0, f"a processor exited {proc.returncode}"
            reports.append(json.loads(out.strip().splitlines()[-1]))
        node_cpu += nodes.seconds()
        assert sum(r["done"] for r in reports) == total, reports
        elapsed = max(float(r["last"]) for r in reports) - started
        client_cpu = sum(float(r["cpu"]) for r in reports)
        return Sample(total / elapsed, 1e6 * node_cpu / total, 1e6 * client_cpu / total)

    def kill(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()


async def _timed(total: int, nodes: _NodeCPU, work: Awaitable[None]) -> Sample:
    """``work`` (``total`` tasks) as a sample: wall time, the nodes' and this process's CPU."""
    node_cpu, client_cpu = -nodes.seconds(), -time.process_time()
    started = time.perf_counter()
    await work
    elapsed = time.perf_counter() - started
    node_cpu += nodes.seconds()
    client_cpu += time.process_time()
    return Sample(total / elapsed, 1e6 * node_cpu / total, 1e6 * client_cpu / total)


async def _enqueue(store: OpenSearchStore, total: int, nodes: _NodeCPU) -> Sample:
    """Durable enqueues of ``total`` due tasks by ``PRODUCERS`` producers."""
    dlq = DeadLetterQueue(store, max_size=10**9)
    per = total // PRODUCERS

    async def producer(p: int) -> None:
        for i in range(per):
            await dlq.enqueue(
                f"p{p}-{i}", {"i": i}, ["repo"], "connection reset", retry_policy="immediate"
            )

    async def produce() -> None:
        await asyncio.gather(*(producer(p) for p in range(PRODUCERS)))

    sample = await _timed(per * PRODUCERS, nodes, produce())
    assert await store.count() == per * PRODUCERS  # refreshes: the processors see them all
    return sample


async def _bulk(
    urls: list[str], replicas: int, source: OpenSearchStore, total: int, nodes: _NodeCPU
) -> Sample:
    """The documents of ``source`` created again by plain ``_bulk`` requests."""
    records = [task async for task in _records(source, total)]
    target = await _fresh(urls, replicas)
    slots = asyncio.Semaphore(4)

    async def send(at: int) -> None:
        async with slots:
            lines = []
            for task in records[at : at + 1000]:
                lines.append(encode_json({"create": {"_id": q.doc_id(task.task_id)}}))
                lines.append(q.document_json(task, "bench"))
            lines.append("")
            answer = await target._client.bulk(
                body="\n".join(lines), index=target._index, params={"filter_path": "errors"}
            )
            assert not answer["errors"]

    async def load() -> None:
        await asyncio.gather(*(send(at) for at in range(0, len(records), 1000)))

    try:
        return await _timed(len(records), nodes, load())
    finally:
        await target.drop()
        await target.close()


async def _records(store: OpenSearchStore, total: int) -> AsyncIterator[FailedTask]:
    cursor: str | None = None
    seen = 0
    while seen < total:
        page = await store.query(TaskFilter(), limit=1000, cursor=cursor)
        for task in page:
            yield task
        seen += len(page)
        if page.cursor is None:
            break
        cursor = page.cursor


async def _round(
    urls: list[str], replicas: int, total: int, tmp: Path, nodes: _NodeCPU
) -> dict[str, Sample]:
    store = await _fresh(urls, replicas)
    processors = _Processors(urls, store._index, tmp)
    try:
        await processors.wait_ready()  # connected before anything is timed
        samples = {"enqueue": await _enqueue(store, total, nodes)}
        samples["bulk"] = await _bulk(urls, replicas, store, total, nodes)
        samples["drain"] = await processors.drain(total, nodes)
    finally:
        processors.kill()
        await store.drop()
        await store.close()
    return samples


def _median_range(values: list[float]) -> str:
    return f"{statistics.median(values):,.0f} ({min(values):,.0f}-{max(values):,.0f})"


async def run_all(urls: list[str], pids: list[int], total: int, rounds: int) -> None:
    info_store = OpenSearchStore(hosts=urls, index="unused")
    info = await info_store._client.info()
    await info_store.close()
    print("# mahavishnu_dlq on a three-node OpenSearch cluster\n")
    print(
        f"- cluster: 3 nodes of OpenSearch {info['version']['number']} on loopback, heap "
        f"{HEAP_MB} MiB each; Python {sys.version.split()[0]}; {os.cpu_count()} CPUs; "
        f"load average {os.getloadavg()[0]:.2f}; {rounds} rounds of {total:,} tasks\n"
    )
    nodes = _NodeCPU(pids)
    # samples[measure][replicas]: one per round; rounds pair a 0- and a 1-replica run
    samples: dict[str, dict[int, list[Sample]]] = {m: {0: [], 1: []} for m in MEASURES}
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        print("  … warming the nodes up (JIT): one small round of each, untimed", file=sys.stderr)
        for replicas in (0, 1):
            await _round(urls, replicas, 2000, Path(tmp) / f"warm-{replicas}", nodes)
        for n in range(rounds):
            for replicas in (0, 1) if n % 2 == 0 else (1, 0):
                here = Path(tmp) / f"round-{n}-{replicas}"
                got = await _round(urls, replicas, total, here, nodes)
                shown = {m: f"{s.rate:,.0f}/s node {s.node_ms:,.0f} ms" for m, s in got.items()}
                print(f"  … round {n + 1}, {replicas} replica(s): {shown}", file=sys.stderr)
                for measure, sample in got.items():
                    samples[measure][replicas].append(sample)

    def ratio(measure: str, field: str) -> str:
        """The median over rounds of (1 replica / 0 replicas), each round's pair together."""
        pairs = zip(samples[measure][1], samples[measure][0], strict=True)
        ratios = [getattr(one, field) / getattr(zero, field) for one, zero in pairs]
        return f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"

    def column(measure: str, replicas: int, field: str) -> str:
        return _median_range([getattr(s, field) for s in samples[measure][replicas]])

    names = {
        "enqueue": f"durable enqueues, {PRODUCERS} producers",
        "bulk": "raw _bulk creates of the same documents (ceiling)",
        "drain": f"claim-and-complete, {PROCESSORS} processor processes",
    }
    print("## Tasks per second (median of the rounds, and their range)\n")
    headers = ["measure", "0 replicas", "1 replica", "1 / 0 (per round)"]
    rows = [
        [names[m], column(m, 0, "rate"), column(m, 1, "rate"), ratio(m, "rate")] for m in MEASURES
    ]
    print(_table(headers, rows), "\n")
    print("## CPU ms per 1,000 tasks: the three nodes together / the client side\n")
    rows = [
        [
            names[m],
            f"{column(m, 0, 'node_ms')} / {column(m, 0, 'client_ms')}",
            f"{column(m, 1, 'node_ms')} / {column(m, 1, 'client_ms')}",
            ratio(m, "node_ms"),
        ]
        for m in MEASURES
    ]
    print(_table(["measure", "0 replicas", "1 replica", "nodes: 1 / 0 (per round)"], rows), "\n")
    for replicas in (0, 1):
        enqueue, bulk = (
            statistics.median(s.rate for s in samples[m][replicas]) for m in ("enqueue", "bulk")
        )
        print(f"- {replicas} replica(s): enqueues at {enqueue / bulk:.0%} of the raw _bulk ceiling")


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_cluster")
    parser.add_argument("--quick", action="store_true", help="1 round of 3,000 tasks")
    parser.add_argument("--tasks", type=int, default=10_000, help="tasks per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (each: 0 and 1 replica)")
    return parser.parse_args()


def cli() -> None:
    args = _parse()
    total, rounds = (3000, 1) if args.quick else (args.tasks, args.rounds)
    cluster = _node_module().start_cluster(3, HEAP_MB)
    try:
        pids = [node.pid for node in cluster.nodes]
        asyncio.run(run_all(cluster.urls, pids, total - total % PRODUCERS, rounds))
    finally:
        cluster.stop()


if __name__ == "__main__":
    cli()
