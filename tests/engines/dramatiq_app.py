"""The Dramatiq app of the engine tests: a Redis broker with the dead-letter middleware
added the way a user adds it, and actors that succeed, fail for good, fail in ways
Dramatiq is told not to retry, or fail only their first runs.

The worker (``python -m dramatiq tests.engines.dramatiq_app``) and the test process
both import it; the environment names the Redis server (:data:`URL_VAR`), a key
namespace of the test session's own (:data:`NAMESPACE_VAR`) and the dead-letter
store (``MAHAVISHNU_DLQ_*``). The actors leave marks in Redis (:func:`key`) that the
tests wait on: how often each ran, and when it succeeded.
"""

from __future__ import annotations

import json
import os
from typing import Any

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import CurrentMessage

from mahavishnu_dlq.integrations.dramatiq import DeadLetterMiddleware

#: The Redis URL of the broker.
URL_VAR = "MAHAVISHNU_DLQ_TEST_DRAMATIQ_URL"
#: The broker's key namespace: one per test session, so nothing is left from another.
NAMESPACE_VAR = "MAHAVISHNU_DLQ_TEST_DRAMATIQ_NAMESPACE"
#: The queue of :func:`elsewhere`, an actor off the default queue.
OTHER_QUEUE = "dlq-other"

NAMESPACE = os.environ[NAMESPACE_VAR]
broker = RedisBroker(url=os.environ[URL_VAR], namespace=NAMESPACE)  # type: ignore[no-untyped-call]
broker.add_middleware(CurrentMessage())  # the actors note which queue ran them
dead_letters = DeadLetterMiddleware()
broker.add_middleware(dead_letters)
dlq = dead_letters.dlq

marks = redis.Redis.from_url(os.environ[URL_VAR], decode_responses=True)

#: Dramatiq's own retries, fast: 10 ms, at most 50 ms.
FAST: dict[str, Any] = {"min_backoff": 10, "max_backoff": 50}


def key(mark: str, suffix: str = "runs") -> str:
    """The Redis key of one test's mark (its runs, or ``done`` once it succeeded)."""
    return f"{NAMESPACE}:test:{mark}:{suffix}"


@dramatiq.actor(broker=broker)
def succeeds(mark: str) -> None:
    """Always succeeds."""
    marks.set(key(mark, "done"), 1)


@dramatiq.actor(broker=broker, max_retries=1, **FAST)
def always_fails(mark: str, *, host: str = "db.internal") -> None:
    """A network error every time: Dramatiq retries it once, then gives up."""
    marks.incr(key(mark))
    raise ConnectionError(f"connection refused by {host}")


@dramatiq.actor(broker=broker, throws=(ValueError,), **FAST)
def rejects(mark: str) -> None:
    """An error the actor ``throws``: Dramatiq does not retry it."""
    marks.incr(key(mark))
    raise ValueError(f"order {mark} is invalid")


def _retry_unless_forbidden(retries: int, exception: BaseException) -> bool:
    return not isinstance(exception, PermissionError)


@dramatiq.actor(broker=broker, retry_when=_retry_unless_forbidden, **FAST)
def forbidden(mark: str) -> None:
    """An error ``retry_when`` refuses to retry."""
    marks.incr(key(mark))
    raise PermissionError(f"access to {mark} denied")


def _run(mark: str, failures: int) -> None:
    current = CurrentMessage.get_current_message()
    if current is not None:  # what each run was sent as: its queue, id and options
        seen = {
            "queue": current.queue_name,
            "message_id": current.message_id,
            "max_retries": current.options.get("max_retries"),
            "dlq": current.options.get("mahavishnu_dlq"),
        }
        marks.rpush(key(mark, "seen"), json.dumps(seen))
    runs = marks.incr(key(mark))
    if runs <= failures:
        raise ConnectionError(f"connection reset by peer (run {runs})")
    marks.set(key(mark, "done"), runs)


@dramatiq.actor(broker=broker, max_retries=0, **FAST)
def flaky(mark: str, failures: int) -> None:
    """Fails its first ``failures`` runs (counted in Redis), then succeeds; no
    Dramatiq retries unless the message asks for some (``max_retries``)."""
    _run(mark, failures)


@dramatiq.actor(broker=broker, queue_name=OTHER_QUEUE, max_retries=0)
def elsewhere(mark: str, failures: int) -> None:
    """:func:`flaky` on a queue of its own."""
    _run(mark, failures)


@dramatiq.actor(broker=broker)
def counters(mark: str) -> None:
    """Write this worker process's capture counters to Redis."""
    marks.set(key(mark, "done"), json.dumps(dead_letters.counters))
