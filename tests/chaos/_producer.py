"""A process of the durable-failover chaos test (run with ``python -m``).

``python -m tests.chaos._producer SETTINGS produce ACKED PRODUCERS EACH``
    opens a queue with the settings file ``SETTINGS`` and runs ``PRODUCERS``
    producers, each enqueueing ``EACH`` ids ``p<P>-<I>``; every acknowledged id is
    appended to the file ``ACKED`` at once (a line each). Then it waits, to be killed.

``python -m tests.chaos._producer SETTINGS sync``
    opens a queue with the same settings, waits until its failover store has
    nothing left to re-sync (at most two minutes), and prints one JSON line: the
    changes it found pending at start, what it re-synced and how fast, and what is
    left pending.
"""

from __future__ import annotations

import json
import sys
import time

import anyio

from mahavishnu_dlq import DeadLetterQueue
from mahavishnu_dlq.settings import DLQSettings
from mahavishnu_dlq.storage import FailoverStore


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


async def produce(dlq: DeadLetterQueue, acked_path: str, producers: int, each: int) -> None:
    with open(acked_path, "a", encoding="utf-8") as acked:  # noqa: ASYNC230 - a line at a time

        async def producer(p: int) -> None:
            for i in range(each):
                task_id = f"p{p:02d}-{i:04d}"
                await dlq.enqueue(task_id, {"p": p, "i": i}, ["repo"], ConnectionError(task_id))
                acked.write(task_id + "\n")  # acknowledged: written down at once
                acked.flush()

        _say("producing")
        async with anyio.create_task_group() as group:
            for p in range(producers):
                group.start_soon(producer, p)
    _say("produced")
    await anyio.sleep_forever()  # until killed


async def sync(dlq: DeadLetterQueue, store: FailoverStore) -> None:
    pending_at_start = store.pending_resync
    deadline = time.monotonic() + 120
    # done: nothing pending, and the re-sync that took it over has ended (the journal
    # empties batch by batch before the pass ends and reports)
    while (store.degraded or (pending_at_start and store.last_resync is None)) and (  # noqa: ASYNC110 - the monitor re-syncs, in real time
        time.monotonic() < deadline
    ):
        await anyio.sleep(0.05)
    health = store.health
    _say(
        json.dumps(
            {
                "pending_at_start": pending_at_start,
                "pending_resync": store.pending_resync,
                "degraded": store.degraded,
                "resynced": store.resynced_total,
                "last_resync_changes": health["last_resync_changes"],
                "last_resync_seconds": health["last_resync_seconds"],
                "journal": health["journal"],
            }
        )
    )


async def main(*argv: str) -> None:
    settings_path, mode, *args = argv
    settings = DLQSettings.load(settings_path)
    dlq = DeadLetterQueue.from_settings(settings)
    store = dlq.store
    assert isinstance(store, FailoverStore)
    await dlq.connect()
    try:
        if mode == "produce":
            await produce(dlq, args[0], int(args[1]), int(args[2]))
        else:
            await sync(dlq, store)
    finally:
        await dlq.stop()


if __name__ == "__main__":
    anyio.run(main, *sys.argv[1:])
