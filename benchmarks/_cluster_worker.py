"""A processor process of ``benchmarks.bench_cluster`` (run with ``python -m``).

``python -m benchmarks._cluster_worker HOSTS INDEX WORKER_ID READY GO``

Opens a queue on ``INDEX`` with the client given every URL of ``HOSTS`` (comma-separated),
touches the file ``READY``, waits for the file ``GO`` (the start barrier), then runs
``RetryProcessor.run_once`` cycles (no-op handler, concurrency 50, claims of 200) until no
open task is left. Prints one JSON line: the attempts it made, ``time.time()`` when its
last cycle with work ended, and the CPU seconds it spent from the barrier on.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import anyio

from mahavishnu_dlq import DeadLetterQueue, RetryProcessor
from mahavishnu_dlq.storage.opensearch import OpenSearchStore


async def _handler(task: dict[str, Any], repos: list[str]) -> None:
    return None


async def main(hosts: str, index: str, worker_id: str, ready: str, go: str) -> None:
    store = OpenSearchStore(hosts=hosts.split(","), index=index)
    dlq = DeadLetterQueue(store, max_size=10**9, worker_id=worker_id)
    dlq.default_callback = _handler
    processor = RetryProcessor(dlq, concurrency=50, batch_size=200)
    await dlq.connect()
    done, last, cpu = 0, time.time(), 0.0
    try:
        await anyio.Path(ready).touch()
        while not await anyio.Path(go).exists():  # noqa: ASYNC110 - a barrier across processes
            await asyncio.sleep(0.005)
        cpu = -time.process_time()
        while True:
            made = await processor.run_once()
            if made:
                done, last = done + made, time.time()
                continue
            if await store.open_count() == 0:
                break
            await asyncio.sleep(0.05)  # the others' claims show after a refresh
        cpu += time.process_time()
    finally:
        await dlq.stop()
    sys.stdout.write(json.dumps({"done": done, "last": last, "cpu": cpu}) + "\n")


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
