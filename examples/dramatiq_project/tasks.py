"""The example's Dramatiq broker: three lines give it the dead-letter queue.

The middleware runs in every process that imports this module: in the workers it
stores the messages Dramatiq rejects for good and reports how replays end; in the
process that runs ``dlq`` (the CLI's processor, or :mod:`examples.dramatiq_project.run`)
it enqueues the replays through ``broker``.
"""

from __future__ import annotations

import os

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

from mahavishnu_dlq.integrations.dramatiq import DeadLetterMiddleware

BROKER = os.environ.get("DRAMATIQ_REDIS_URL", "redis://localhost:6379/0")
#: The Redis key that says the (simulated) warehouse API is down.
WAREHOUSE_DOWN = "warehouse-api:down"
#: The Redis set of the orders the warehouse reserved stock for.
RESERVED = "warehouse-api:reserved"

broker = RedisBroker(url=BROKER)  # type: ignore[no-untyped-call]
dramatiq.set_broker(broker)

dead_letters = DeadLetterMiddleware()  # settings from MAHAVISHNU_DLQ_* or MAHAVISHNU_DLQ_CONFIG
broker.add_middleware(dead_letters)
dlq = dead_letters.dlq  # mahavishnu-dlq processor run --app examples.dramatiq_project.tasks:dlq

flags = redis.Redis.from_url(BROKER)


@dramatiq.actor(max_retries=2, min_backoff=100, max_backoff=500)
def reserve_stock(order_id: str, sku: str) -> None:
    """Reserve stock with the warehouse API; Dramatiq retries a refused connection twice."""
    if flags.exists(WAREHOUSE_DOWN):
        raise ConnectionError("warehouse API: connection refused")
    flags.sadd(RESERVED, order_id)
