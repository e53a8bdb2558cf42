"""One process of the two-process failover test (run with ``python -m``).

``python -m tests.chaos._failover_worker URL INDEX NAME`` opens a queue on a
FailoverStore over the index and then follows commands, one per stdin line,
answering each with one stdout line:

- ``see`` — read the record ``shared`` (so this process has seen it) → ``seen``;
- ``write`` — enqueue ``<NAME>-0`` … ``<NAME>-49`` and a new failure of ``shared``
  whose error names this process (the node is dead by then: all of it lands in
  the fallback) → ``written <pending_resync>``;
- ``sync`` — wait until the re-sync is done (the node is back) → ``synced <changes>``;
- ``stop`` — stop the queue and exit.
"""

from __future__ import annotations

import sys
import time

import anyio

from mahavishnu_dlq import DeadLetterQueue
from mahavishnu_dlq.storage import FailoverStore
from mahavishnu_dlq.storage.opensearch import OpenSearchStore


async def _line() -> str:
    line: str = await anyio.to_thread.run_sync(sys.stdin.readline)
    return line.strip()


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


async def main(url: str, index: str, name: str) -> None:
    search = OpenSearchStore(hosts=[url], index=index, timeout=5.0)
    store = FailoverStore(search, failure_threshold=3, probe_interval=0.2, timeout=2.0)
    dlq = DeadLetterQueue(store)
    await dlq.connect()
    try:
        while (command := await _line()) != "stop":
            if command == "see":
                _say("seen" if await dlq.get_task("shared") is not None else "missing")
            elif command == "write":
                for n in range(50):
                    await dlq.enqueue(f"{name}-{n}", {"n": n}, error=ConnectionError(name))
                await dlq.enqueue("shared", {"by": name}, error=ConnectionError(f"from {name}"))
                _say(f"written {store.pending_resync}")
            elif command == "sync":
                deadline = time.monotonic() + 120
                while store.degraded and time.monotonic() < deadline:  # noqa: ASYNC110 - the probe runs elsewhere
                    await anyio.sleep(0.05)
                _say(f"synced {store.resynced_total}" if not store.degraded else "still degraded")
            else:
                _say(f"unknown command {command!r}")
    finally:
        await dlq.stop()


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2], sys.argv[3])
