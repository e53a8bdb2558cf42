"""Processor throughput on OpenSearch: handler calls per second, in the same run.

    python -m benchmarks.bench_processor [--seconds 8] [--concurrency 50] [--batch 200]

Uses ``MAHAVISHNU_DLQ_TEST_OPENSEARCH_URL`` when set, else starts a node with
``scripts/opensearch_node.py`` (512 MiB heap) and stops it at the end.

Each scenario gets a fresh index holding enough due tasks (policy ``immediate``) for
the whole window, then 1 or 3 processor processes (``benchmarks/_processor_worker.py``,
``RetryProcessor.run()``, no-op handler) start together and run for ``--seconds``.
"Under load", a fourth process runs 50 producers that enqueue new failures as fast as
they can into a queue whose ``max_size`` the preloaded tasks already fill: most of
their enqueues are refused, and every task a processor finishes makes room for one.

Baselines in the same run:

- ``prefetch 1``: the processor claims only what its free slots can run at once, as
  it did before issue 19 (a claim of one or two tasks each time an attempt ends);
- the ceiling: the same requests a processor makes for each batch — a refresh, a
  search of the due documents, one bulk of conditional claims, one bulk of
  conditional finishes — sent by opensearch-py alone in a loop, in as many processes
  (each searching past the others' batches, so that they do not collide).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import uuid
from pathlib import Path

from benchmarks.bench_opensearch import _node_module, _table
from mahavishnu_dlq import DeadLetterQueue
from mahavishnu_dlq.storage.opensearch import OpenSearchStore

_ROOT = Path(__file__).resolve().parent.parent
_PRODUCERS = 50


async def _preload(url: str, index: str, total: int) -> None:
    store = OpenSearchStore(hosts=[url], index=index)
    dlq = DeadLetterQueue(store, max_size=10**9)
    await dlq.connect()
    try:
        for first in range(0, total, 500):
            await asyncio.gather(
                *(
                    dlq.enqueue(f"t{i}", {"i": i}, [], "connection reset", retry_policy="immediate")
                    for i in range(first, min(total, first + 500))
                )
            )
    finally:
        await dlq.stop()


async def _drop(url: str, index: str) -> None:
    store = OpenSearchStore(hosts=[url], index=index)
    await store.open()
    await store.drop()
    await store.close()


async def _spawn(args: list[str], tmp: Path, name: str) -> tuple[asyncio.subprocess.Process, Path]:
    ready = tmp / f"{name}.ready"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "benchmarks._processor_worker",
        args[0],
        args[1],
        args[2],
        name,
        str(ready),
        str(tmp / "go"),
        *args[3:],
        cwd=_ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    return process, ready


async def scenario(
    url: str,
    *,
    processes: int,
    prefetch: int,
    load: bool,
    opts: argparse.Namespace,
    bare: bool = False,
) -> dict[str, float]:
    """Handler calls/s of ``processes`` processor processes over the window."""
    index = f"bench-proc-{uuid.uuid4().hex[:8]}"
    # enough due work for the whole window at 5,000/s per process
    preload = min(opts.max_tasks, int(opts.seconds * 5000 * processes))
    await _preload(url, index, preload)
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        spawned = []
        for n in range(processes):
            if bare:
                args = ["bare", url, index, str(opts.seconds), str(opts.batch), str(n)]
            else:
                args = ["processor", url, index, str(opts.seconds)]
                args += [str(opts.concurrency), str(opts.batch), str(prefetch)]
            spawned.append(await _spawn(args, tmp, f"p{n}"))
        if load:
            spawned.append(
                await _spawn(
                    ["producers", url, index, str(opts.seconds), str(_PRODUCERS), str(preload)],
                    tmp,
                    "load",
                )
            )
        for _, ready in spawned:
            while not ready.exists():  # noqa: ASYNC110 - other processes' files
                await asyncio.sleep(0.02)
        (tmp / "go").touch()
        outputs = [json.loads((await p.communicate())[0]) for p, _ in spawned]
    await _drop(url, index)
    workers = outputs[:processes]
    calls = sum(w["calls"] for w in workers)
    result = {
        "calls_per_s": calls / opts.seconds,
        "cpu_us_per_call": 1e6 * sum(w["cpu"] for w in workers) / max(calls, 1),
    }
    if load:
        result["refused_per_s"] = outputs[-1]["refused"] / opts.seconds
        result["stored_per_s"] = outputs[-1]["stored"] / opts.seconds
    return result


async def run_all(url: str, opts: argparse.Namespace) -> None:
    print("  … warming the node up (JIT): one short scenario, untimed", file=sys.stderr)
    warm = argparse.Namespace(**{**vars(opts), "seconds": 3.0})
    await scenario(url, processes=1, prefetch=opts.prefetch, load=False, opts=warm)
    rows = []
    measured: dict[tuple[int, bool, int], dict[str, float]] = {}
    bare: dict[int, float] = {}
    for processes in (1, 3):
        print(f"  … {processes} x bare opensearch-py", file=sys.stderr)
        m = await scenario(url, processes=processes, prefetch=0, load=False, opts=opts, bare=True)
        print(f"      {m}", file=sys.stderr)
        bare[processes] = m["calls_per_s"]
        for load in (False, True):
            for prefetch in (1, opts.prefetch):
                print(f"  … {processes} x prefetch {prefetch}, load {load}", file=sys.stderr)
                m = await scenario(
                    url, processes=processes, prefetch=prefetch, load=load, opts=opts
                )
                print(f"      {m}", file=sys.stderr)
                measured[(processes, load, prefetch)] = m
    targets = {1: 1500, 3: 3000}
    for processes in (1, 3):
        rows.append(
            [
                str(processes),
                "—",
                "bare opensearch-py (ceiling)",
                f"{bare[processes]:,.0f}",
                "—",
                "1.00",
                "—",
                "—",
                "—",
            ]
        )
        for (count, load, prefetch), m in measured.items():
            if count != processes:
                continue
            unloaded = measured[(processes, False, prefetch)]["calls_per_s"]
            if load:
                wanted = f"≥ {unloaded / 2:,.0f} (half)"
                result = m["calls_per_s"] >= unloaded / 2
            else:
                wanted, result = f"≥ {targets[processes]:,}", m["calls_per_s"] >= targets[processes]
            rows.append(
                [
                    str(processes),
                    "50 producers, queue full" if load else "—",
                    f"prefetch {prefetch}" + (" (before)" if prefetch == 1 else ""),
                    f"{m['calls_per_s']:,.0f}",
                    f"{m['cpu_us_per_call']:,.0f}",
                    f"{m['calls_per_s'] / bare[processes]:.2f}",
                    f"{m.get('refused_per_s', 0):,.0f}" if load else "—",
                    wanted if prefetch == opts.prefetch else "—",
                    ("PASS" if result else "FAIL") if prefetch == opts.prefetch else "—",
                ]
            )
    headers = [
        "processes",
        "load",
        "processor",
        "calls/s",
        "CPU µs/call",
        "of ceiling",
        "refused/s",
        "target",
        "result",
    ]
    print(_table(headers, rows))
    print(
        f"\nWindow {opts.seconds:g} s per scenario; concurrency {opts.concurrency}, claims of "
        f"{opts.batch} at most; the ceiling runs the same requests per batch of {opts.batch} "
        "(refresh, search, claim bulk, finish bulk) with opensearch-py alone."
    )


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="window per scenario")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--prefetch", type=int, default=4)
    parser.add_argument("--max-tasks", type=int, default=60_000, help="preloaded at most")
    return parser.parse_args()


def cli() -> None:
    opts = _parse()
    url = os.environ.get("MAHAVISHNU_DLQ_TEST_OPENSEARCH_URL")
    node = None
    if not url:
        node = _node_module().start_node()
        url = node.url
    try:
        asyncio.run(run_all(url, opts))
    finally:
        if node is not None:
            node.stop()


if __name__ == "__main__":
    cli()
