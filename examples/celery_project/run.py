"""The Celery example end to end (a worker of :mod:`examples.celery_project.tasks`
must be running, see :mod:`examples.celery_project`)::

    python -m examples.celery_project.run

The billing API goes down; ``sync_invoice`` fails three times (its run and
Celery's two retries) and the worker stores it. The API comes back; a retry from
the queue (what an operator's ``mahavishnu-dlq retry <id>`` does, and what the
processor does when the policy says it is time) re-sends the task to its queue
under the same task id; the worker runs it and reports: the record completes.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TypeVar

import redis
from celery.result import AsyncResult

from mahavishnu_dlq.blocking import BlockingDLQ
from mahavishnu_dlq.models import DeadLetterStatus, FailedTask

from .tasks import BILLING_DOWN, BROKER, app, dlq, sync_invoice

T = TypeVar("T")
TIMEOUT = 30.0


def wait_for(what: str, check: Callable[[], T | None]) -> T:
    """Poll ``check()`` until it returns something (the worker is another process)."""
    deadline = time.monotonic() + TIMEOUT
    while (value := check()) is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} after {TIMEOUT:g}s: is the worker running?")
        time.sleep(0.1)
    return value


def say(line: str) -> None:
    print(line)  # noqa: T201 - the example's output


def main() -> int:
    flags = redis.Redis.from_url(BROKER)
    flags.set(BILLING_DOWN, 1)
    result = sync_invoice.delay("inv-42", 12_500)
    try:
        result.get(timeout=TIMEOUT)
    except ConnectionError as exc:
        say(f"celery: {result.id} failed for good: {exc}")
    with BlockingDLQ(dlq) as queue:

        def stored(status: DeadLetterStatus | None = None) -> FailedTask | None:
            task = queue.get_task(result.id)
            return task if task is not None and status in (None, task.status) else None

        task = wait_for("stored failure", stored)
        say(f"stored: {task.workflow} {task.task} from queue {task.metadata['queue']!r}")
        say(f"        {task.error_category.value}, retry {task.retry_policy.value}")
        flags.delete(BILLING_DOWN)  # the billing API is back
        reply = queue.retry_task(result.id)
        say(f"retry:  {reply['message']}")
        done = wait_for("completed record", lambda: stored(DeadLetterStatus.COMPLETED))
        rerun = AsyncResult(result.id, app=app).get(timeout=TIMEOUT)
        say(f"done:   {done.status.value} after {done.retry_count} retry: {rerun}")
    flags.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
