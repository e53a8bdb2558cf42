"""Waiting for what an engine's worker process does, and for it to end.

The worker is another process (a Celery or Dramatiq worker, a Prefect runner, a
Redis server), so there is no event to wait on; its effects (a stored record, a log
line, a result) are polled briefly until they show or the deadline passes — never
a fixed sleep. :func:`stop` ends a process the test started, by its pid.
"""

from __future__ import annotations

import signal
import subprocess
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


def stop(
    process: subprocess.Popen[bytes] | subprocess.Popen[str],
    *,
    timeout: float = 20.0,
    first: int = signal.SIGTERM,
) -> None:
    """End ``process`` (one this test session started): ``first`` (SIGTERM: a warm
    shutdown), then SIGKILL if it has not exited within ``timeout`` seconds."""
    if process.poll() is None:
        process.send_signal(first)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
