"""The example, end to end: the order service is down, the flow run fails and is
stored; the service comes back; a retry starts a new run of the flow that completes
the record. See the package docstring for how to run it."""

from __future__ import annotations

import socket
from contextlib import suppress

from mahavishnu_dlq.blocking import BlockingDLQ
from mahavishnu_dlq.integrations.prefect import dead_letter_queue

from .flows import fetch_orders


def say(*parts: object) -> None:
    print(*parts)  # noqa: T201 - the example shows what happens


def main() -> None:
    with socket.socket() as service:
        service.bind(("127.0.0.1", 0))  # bound, not listening yet: connections refused
        host, port = service.getsockname()
        with suppress(ConnectionRefusedError):  # Prefect's own handling: the run is Failed
            fetch_orders(host, port)
        with BlockingDLQ(dead_letter_queue()) as dlq:  # the queue, with Prefect's replay
            (record,) = dlq.list_tasks(workflow="fetch-orders")
            say("stored:", record.workflow, record.error_category.value, record.error_type)
            say("run:", record.metadata.get("run_url"))
            service.listen()  # the service is back
            reply = dlq.retry_task(record.task_id)  # what `mahavishnu-dlq retry` does
            say("new flow run:", reply.get("result", {}).get("flow_run_id"))
            after = dlq.get_task(record.task_id)
            say("retried:", after.status.value if after else "gone")


if __name__ == "__main__":
    main()
