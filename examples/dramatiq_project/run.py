"""The story end to end (a worker running ``dramatiq examples.dramatiq_project.tasks``):
the warehouse API goes down, a reservation fails for good and is stored; the API
comes back, one retry from the queue enqueues the message again, and the worker's
report completes the record."""

from __future__ import annotations

import time
from collections.abc import Callable

from mahavishnu_dlq.blocking import BlockingDLQ
from mahavishnu_dlq.models import DeadLetterStatus, FailedTask

from .tasks import RESERVED, WAREHOUSE_DOWN, dlq, flags, reserve_stock

DEADLINE_SECONDS = 30.0


def say(line: str) -> None:
    print(line)  # noqa: T201 - the example's output


def wait_for(what: str, found: Callable[[], FailedTask | None]) -> FailedTask:
    """Poll the store until the worker's effect shows (the worker is another process)."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while (task := found()) is None:
        if time.monotonic() > deadline:
            raise SystemExit(f"no {what} after {DEADLINE_SECONDS:g}s: is the worker running?")
        time.sleep(0.1)
    return task


def main() -> None:
    with BlockingDLQ(dlq) as queue:
        flags.set(WAREHOUSE_DOWN, 1)
        message = reserve_stock.send("order-1042", "sku-7")
        task_id = message.message_id
        stored = wait_for("stored failure", lambda: queue.get_task(task_id))
        say(
            f"stored: {stored.workflow} {stored.task['args']} -> {stored.error_category.value}"
            f" {stored.error_type}: {stored.error}"
            f" (Dramatiq tried {stored.metadata['retries']} times)"
        )
        flags.delete(WAREHOUSE_DOWN)
        reply = queue.retry_task(task_id)
        sent = "sent; the worker reports how it ends" if "dispatched" in reply else reply["message"]
        say(f"replayed to queue {stored.metadata['queue']!r}: {sent}")

        def completed() -> FailedTask | None:
            task = queue.get_task(task_id)
            done = task is not None and task.status is DeadLetterStatus.COMPLETED
            return task if done else None

        done = wait_for("completed record", completed)
        say(f"{done.status.value} after {len(done.attempts)} attempt from the queue")
        say(f"reserved: {flags.sismember(RESERVED, 'order-1042') == 1}")


if __name__ == "__main__":
    main()
