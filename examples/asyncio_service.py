"""A plain asyncio service with the dead-letter queue embedded: no web framework, no engine.

The service charges a batch of orders through a payment API that drops some
connections. ``@dlq.workflow("charge")`` wraps the call: a failure is classified
(a dropped connection is ``network``), stored in the queue and re-raised to the
service, which carries on with the next order. The queue's retry processor runs
in the same event loop (``async with dlq``) and retries each stored failure
through the same function; before the service exits it waits until nothing is
left to retry (or a deadline passes), then prints what happened.

Run it (the default SQLite store, under ``$XDG_STATE_HOME``, or any settings the
environment or ``MAHAVISHNU_DLQ_CONFIG`` gives)::

    python examples/asyncio_service.py            # 12 orders
    python examples/asyncio_service.py 40         # 40 orders

then look at what it left behind with ``mahavishnu-dlq list --status completed``.
Ctrl-C (or SIGTERM) stops it gracefully: in-flight retries go back to pending,
nothing is lost.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections import Counter
from typing import Any

from mahavishnu_dlq import DeadLetterQueue, DLQSettings, TaskFilter

#: The service's own settings: an immediate first retry (the processor wakes when a
#: failure is stored), a little later for the next ones.
SETTINGS: dict[str, Any] = {
    "policies": {
        "by_workflow": {"charge": {"policy": "immediate", "max_retries": 3}},
        "immediate_min_delay_seconds": 0.2,
    },
}


class PaymentAPI:
    """A stand-in for a remote API: every third order's first call drops the connection."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    async def charge(self, order_id: str, cents: int) -> dict[str, Any]:
        self.calls[order_id] += 1
        await asyncio.sleep(0)  # the network round trip
        if int(order_id.rsplit("-", 1)[1]) % 3 == 0 and self.calls[order_id] == 1:
            raise ConnectionResetError(f"payment API dropped the connection for {order_id}")
        return {"order": order_id, "charged": cents}


class Service:
    """The service: its queue, the workflow it wraps, and a run over a batch of orders."""

    def __init__(self, dlq: DeadLetterQueue) -> None:
        self.dlq = dlq
        self.api = PaymentAPI()
        # registered before the queue starts: `async with dlq` starts the processor
        # only when it has handlers to retry with
        self.charge = dlq.workflow("charge")(self._charge)

    async def _charge(self, task: dict[str, Any], repos: list[str]) -> dict[str, Any]:
        return await self.api.charge(task["order"], task["cents"])

    async def run(self, orders: int, *, settle_seconds: float = 30) -> dict[str, Any]:
        """Charge ``orders`` orders; wait until the queue has retried every failure."""
        charged, queued = 0, 0
        for number in range(1, orders + 1):
            order_id = f"order-{number}"
            try:
                await self.charge({"order": order_id, "cents": 100 * number}, task_id=order_id)
            except ConnectionError:
                queued += 1  # stored in the queue; its processor retries it
            else:
                charged += 1
        settled = await wait_until_settled(self.dlq, settle_seconds)
        completed = await self.dlq.count_tasks(TaskFilter(status=["completed"]))
        return {
            "charged": charged,
            "queued": queued,
            "retried_ok": completed,
            "settled": settled,
            "api_calls": sum(self.api.calls.values()),
        }


async def wait_until_settled(dlq: DeadLetterQueue, seconds: float) -> bool:
    """True once no task is pending or retrying; False when ``seconds`` pass first."""
    open_tasks = TaskFilter(status=["pending", "retrying"])
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while await dlq.count_tasks(open_tasks):
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def main(orders: int) -> dict[str, Any]:
    service = Service(DeadLetterQueue.from_settings(DLQSettings.load(**SETTINGS)))
    async with service.dlq:  # the store, and the retry processor in this loop
        running = asyncio.ensure_future(service.run(orders))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, running.cancel)
        try:
            return await running
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 12
    try:
        report = asyncio.run(main(count))
    except asyncio.CancelledError:
        sys.exit("stopped: in-flight retries went back to pending")
    print(  # noqa: T201 - the example's output
        f"{report['charged']} charged at once, {report['queued']} queued, "
        f"{report['retried_ok']} charged on retry"
        + ("" if report["settled"] else " (gave up waiting for the rest)")
    )
