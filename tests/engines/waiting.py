"""Waiting for what an engine's worker process does: poll with a deadline.

The worker is another process (a Celery or Dramatiq worker, a Prefect flow run), so
there is no event to wait on; its effects (a stored record, a log line, a result)
are polled briefly until they show or the deadline passes — never a fixed sleep.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

#: Seconds an engine test waits for a worker's effect before it fails.
DEADLINE_SECONDS = 30.0


def wait_until(what: str, probe: Callable[[], T | None], timeout: float = DEADLINE_SECONDS) -> T:
    """``probe()``'s first value that is neither None nor False, polled every 50 ms;
    an AssertionError naming ``what`` when ``timeout`` seconds pass first."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found is not None and found is not False:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout:g}s waiting for {what}")
        time.sleep(0.05)  # another process's work: poll, bounded by the deadline
