"""The Celery app the Celery integration's tests run in a real worker.

The broker and result backend come from ``MAHAVISHNU_DLQ_TEST_CELERY_BROKER`` (the
test session's Redis); the queue's settings from ``MAHAVISHNU_DLQ_CONFIG`` (a YAML
file naming the SQLite file the test process shares). Tasks:

- :func:`double` succeeds;
- :func:`unreachable` raises a network error through Celery's own autoretry until
  Celery gives up;
- :func:`invalid` raises an error Celery does not retry;
- :func:`flaky` fails with a network error its first ``fail_times`` runs (a counter
  in Redis), so a re-send can succeed; :func:`patient` does the same under Celery's
  autoretry; both return where the run was delivered;
- :func:`dlq_counters` returns the integration's counters in the worker process.

The queue ``routed`` is bound to the exchange ``dlq-tests`` with the routing key
``routed.key``: a task sent there travels through a non-default exchange.
"""

from __future__ import annotations

import os
from typing import Any

import redis
from celery import Celery
from kombu.entity import Exchange, Queue

from mahavishnu_dlq.integrations.celery import install, installed

BROKER_VAR = "MAHAVISHNU_DLQ_TEST_CELERY_BROKER"
ROUTED_EXCHANGE = "dlq-tests"
ROUTED_KEY = "routed.key"

_broker = os.environ.get(BROKER_VAR, "memory://")
app = Celery("tests.engines.celery_app", broker=_broker, backend=os.environ.get(BROKER_VAR))
app.conf.update(
    task_queues=[
        Queue("celery"),  # type: ignore[no-untyped-call]
        Queue("routed", Exchange(ROUTED_EXCHANGE, type="direct"), routing_key=ROUTED_KEY),  # type: ignore[no-untyped-call]
    ],
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
    result_expires=600,
)
dlq = install(app, wait_seconds=60)


def _counter(key: str) -> int:
    """Runs of ``key`` so far, this one included (a counter in the broker's Redis)."""
    client = redis.Redis.from_url(app.conf.broker_url)
    try:
        return int(client.incr(f"celery-tests:{key}"))
    finally:
        client.close()


def _delivered(request: Any) -> dict[str, Any]:
    info = request.delivery_info or {}
    return {"exchange": info.get("exchange"), "routing_key": info.get("routing_key")}


@app.task  # type: ignore[untyped-decorator]
def double(x: int) -> int:
    return 2 * x


@app.task(autoretry_for=(ConnectionError,), max_retries=2, default_retry_delay=0)  # type: ignore[untyped-decorator]
def unreachable(host: str, *, port: int = 443) -> None:
    raise ConnectionError(f"connection refused by {host}:{port}")


@app.task  # type: ignore[untyped-decorator]
def invalid(order: dict[str, Any]) -> None:
    raise ValueError(f"invalid order {order.get('id')}: quantity must be positive")


@app.task(bind=True)  # type: ignore[untyped-decorator]
def flaky(self: Any, key: str, fail_times: int, since: Any = None) -> dict[str, Any]:
    run = _counter(key)
    if run <= fail_times:
        raise ConnectionError(f"upstream connection reset (run {run})")
    done = {"run": run, **_delivered(self.request)}
    return done if since is None else {**done, "since": type(since).__name__}


@app.task(bind=True, autoretry_for=(ConnectionError,), max_retries=3, default_retry_delay=0)  # type: ignore[untyped-decorator]
def patient(self: Any, key: str, fail_times: int) -> dict[str, Any]:
    run = _counter(key)
    if run <= fail_times:
        raise ConnectionError(f"upstream connection reset (run {run})")
    return {"run": run, **_delivered(self.request)}


@app.task  # type: ignore[untyped-decorator]
def dlq_counters() -> dict[str, int]:
    integration = installed(app)
    return dict(integration.counters) if integration is not None else {}
