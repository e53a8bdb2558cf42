"""A real downstream: handlers call a small HTTP server on a loopback port, which the
test stops (the outage) and starts again (the recovery).

The same run twice — four simulated days of outage with the processor draining
every day, then the recovery: with the breaker on, the outage costs one window of
attempts plus a probe a day and exhausts no task, and every task completes after
the recovery; with it off, every task is exhausted by the outage. Time is a
FakeClock (due times, the breaker's window); the HTTP calls are real.
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from mahavishnu_dlq import DeadLetterQueue, RetryProcessor
from mahavishnu_dlq.downstream import BreakerBook, BreakerPolicy
from mahavishnu_dlq.models import DeadLetterStatus, TaskFilter
from mahavishnu_dlq.testing import FakeClock

pytestmark = pytest.mark.anyio

TASKS = 40


class Service:
    """An HTTP service on a fixed loopback port that can be stopped and started."""

    def __init__(self) -> None:
        self.served = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    def start(self) -> None:
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                service.served += 1
                body = b'{"ok": true}'
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def call(self, task: dict[str, Any], repos: list[str]) -> int:
        """The workflow's handler: one GET; refused while the service is down."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            connection.request("GET", f"/work/{task['n']}")
            response = connection.getresponse()
            response.read()
            return response.status
        finally:
            connection.close()


@pytest.fixture
def service() -> Iterator[Service]:
    running = Service()
    running.start()
    try:
        yield running
    finally:
        running.stop()


async def run_outage_and_recovery(service: Service, *, breaker: bool) -> dict[str, int]:
    clock = FakeClock(datetime(2026, 6, 1, tzinfo=timezone.utc))
    dlq = DeadLetterQueue(
        clock=clock,
        worker_id="w",
        batch_size=1,
        breakers=BreakerBook(default=BreakerPolicy(enabled=breaker)),
    )
    dlq.register_handler("api", service.call)
    for n in range(TASKS):
        await dlq.enqueue(
            f"api-{n:03d}", {"n": n}, error=ConnectionError("x"), workflow="api", max_retries=3
        )
    processor = RetryProcessor(dlq)
    service.stop()  # the outage
    attempts_in_outage = 0
    for _ in range(4):
        clock.advance(timedelta(days=1))
        attempts_in_outage += await processor.drain()
    exhausted_in_outage = await dlq.count_tasks(TaskFilter(status=DeadLetterStatus.EXHAUSTED))
    service.start()  # the recovery, on the same port
    served_before = service.served
    for _ in range(4):
        clock.advance(timedelta(days=1))
        await processor.drain()
    return {
        "attempts_in_outage": attempts_in_outage,
        "exhausted_in_outage": exhausted_in_outage,
        "completed": await dlq.count_tasks(TaskFilter(status=DeadLetterStatus.COMPLETED)),
        "exhausted": await dlq.count_tasks(TaskFilter(status=DeadLetterStatus.EXHAUSTED)),
        "served_after": service.served - served_before,
    }


async def test_with_the_breaker_an_outage_exhausts_nothing_and_every_task_completes(
    service: Service,
) -> None:
    outcome = await run_outage_and_recovery(service, breaker=True)
    # one window (min_attempts 10) on the first day, then one failed probe a day
    assert outcome["attempts_in_outage"] == 10 + 3
    assert outcome["exhausted_in_outage"] == 0
    assert outcome["completed"] == TASKS
    assert outcome["exhausted"] == 0
    assert outcome["served_after"] == TASKS


async def test_without_the_breaker_the_same_outage_exhausts_every_task(
    service: Service,
) -> None:
    outcome = await run_outage_and_recovery(service, breaker=False)
    assert outcome["attempts_in_outage"] == TASKS * 3  # every retry of every task spent
    assert outcome["exhausted_in_outage"] == TASKS
    assert outcome["completed"] == 0
    assert outcome["served_after"] == 0
