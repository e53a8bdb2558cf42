"""One process of ``benchmarks.bench_processor`` (run with ``python -m``).

``python -m benchmarks._processor_worker ROLE URL INDEX NAME READY GO SECONDS [OPTIONS]``

Opens a queue on ``INDEX``, touches the file ``READY``, waits for the file ``GO``
(the start barrier), then for ``SECONDS``:

- ``processor`` (options ``CONCURRENCY BATCH PREFETCH``): runs ``RetryProcessor.run()``
  with a no-op handler;
- ``producers`` (options ``PRODUCERS MAX_SIZE``): that many concurrent producers
  enqueue new failures (policy ``immediate``) as fast as they can, into a queue of
  ``MAX_SIZE`` open tasks; a refused one (``QueueFullError``) is counted and the
  producer goes on;
- ``bare`` (options ``BATCH SLOT``): the ceiling — the requests a processor makes for
  a batch, with opensearch-py alone: a refresh, a search of ``BATCH`` due documents
  (skipping ``SLOT`` batches, so that bare processes take different documents), one
  bulk of conditional claim writes and one of conditional finish writes (each
  document changed in place as little as possible), in a loop; "calls" are finished
  documents.

Prints one JSON line: the handler calls (or stored and refused enqueues) and the CPU
seconds this process spent from the barrier on.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import anyio

from mahavishnu_dlq import DeadLetterQueue, RetryProcessor
from mahavishnu_dlq.errors import QueueFullError
from mahavishnu_dlq.storage import opensearch_query as q
from mahavishnu_dlq.storage.opensearch import OpenSearchStore


async def _barrier(ready: str, go: str) -> None:
    await anyio.Path(ready).touch()
    while not await anyio.Path(go).exists():  # noqa: ASYNC110 - a barrier across processes
        await asyncio.sleep(0.005)


async def processor(dlq: DeadLetterQueue, seconds: float, options: list[str]) -> dict[str, Any]:
    concurrency, batch, prefetch = (int(value) for value in options)
    calls = 0

    async def handler(task: dict[str, Any], repos: list[str]) -> None:
        nonlocal calls
        calls += 1

    dlq.default_callback = handler
    worker = RetryProcessor(dlq, concurrency=concurrency, batch_size=batch, prefetch=prefetch)
    with anyio.move_on_after(seconds):
        await worker.run()
    return {"calls": calls, "cycles": worker.cycles}


async def producers(dlq: DeadLetterQueue, seconds: float, options: list[str]) -> dict[str, Any]:
    count = int(options[0])
    stored = refused = 0
    deadline = time.monotonic() + seconds

    async def produce(p: int) -> None:
        nonlocal stored, refused
        n = 0
        while time.monotonic() < deadline:
            n += 1
            try:
                await dlq.enqueue(
                    f"load-{p}-{n}", {"n": n}, [], "connection reset", retry_policy="immediate"
                )
                stored += 1
            except QueueFullError:
                refused += 1

    async with anyio.create_task_group() as group:
        for p in range(count):
            group.start_soon(produce, p)
    return {"stored": stored, "refused": refused}


async def bare(store: OpenSearchStore, seconds: float, options: list[str]) -> dict[str, Any]:
    batch, slot = int(options[0]), int(options[1])
    client, index = store._client, store._index
    done = 0
    deadline = time.monotonic() + seconds

    def writes(hits: list[dict[str, Any]], status: str) -> str:
        lines = []
        for hit in hits:
            source = hit["_source"]
            source["status"] = status
            source["due_us"] = source["due_us"] + 60_000_000 if status == "retrying" else None
            action = {"index": {"_id": hit["_id"], "if_seq_no": hit["_seq_no"]}}
            action["index"]["if_primary_term"] = hit["_primary_term"]
            lines.append(f"{json.dumps(action)}\n{json.dumps(source)}\n")
        return "".join(lines)

    while time.monotonic() < deadline:
        await client.indices.refresh(index=index)
        now_us = int(time.time() * 1_000_000)
        body = {
            "query": q.due_query(now_us),
            "sort": q.DUE_SORT,
            "size": batch,
            "from": slot * batch,
            "seq_no_primary_term": True,
            "track_total_hits": False,
        }
        hits = (await client.search(index=index, body=body))["hits"]["hits"]
        if not hits:
            break
        answer = await client.bulk(body=writes(hits, "retrying"), index=index)
        won = []
        for hit, item in zip(hits, answer["items"], strict=True):
            result = item["index"]
            if result["status"] in (200, 201):
                won.append({**hit, "_seq_no": result["_seq_no"]})
        if not won:
            continue
        answer = await client.bulk(body=writes(won, "completed"), index=index)
        done += sum(1 for item in answer["items"] if item["index"]["status"] in (200, 201))
    return {"calls": done}


async def main(role: str, url: str, index: str, name: str, ready: str, go: str, *rest: str) -> None:
    seconds, options = float(rest[0]), list(rest[1:])
    max_size = int(options[1]) if role == "producers" else 10**9
    store = OpenSearchStore(hosts=[url], index=index)
    dlq = DeadLetterQueue(store, max_size=max_size, worker_id=name)
    await dlq.connect()
    try:
        await _barrier(ready, go)
        cpu = -time.process_time()
        if role == "bare":
            result = await bare(store, seconds, options)
        else:
            run = processor if role == "processor" else producers
            result = await run(dlq, seconds, options)
        cpu += time.process_time()
    finally:
        await dlq.stop()
    sys.stdout.write(json.dumps({**result, "cpu": cpu}) + "\n")


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
