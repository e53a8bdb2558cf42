"""The example's Celery app: three lines give it the dead-letter queue.

``install(app)`` connects to Celery's signals in every process that imports this
module: in the workers it stores the tasks that fail for good; in the process that
runs ``dlq`` (the CLI's processor, or :mod:`examples.celery_project.run`) it
re-sends them to their queue.
"""

from __future__ import annotations

import os

import redis
from celery import Celery

from mahavishnu_dlq.integrations.celery import install

BROKER = os.environ.get("CELERY_BROKER_URL", "redis://localhost:6379/0")
#: The Redis key that says the (simulated) billing API is down.
BILLING_DOWN = "billing-api:down"

app = Celery("billing", broker=BROKER, backend=BROKER)
dlq = install(app)  # settings from MAHAVISHNU_DLQ_* or MAHAVISHNU_DLQ_CONFIG


@app.task(
    name="billing.sync_invoice",
    autoretry_for=(ConnectionError,),
    max_retries=2,
    default_retry_delay=0.2,
)  # type: ignore[untyped-decorator]
def sync_invoice(invoice_id: str, amount_cents: int) -> str:
    """Send an invoice to the billing API; Celery retries a dropped connection twice."""
    with redis.Redis.from_url(BROKER) as flags:
        if flags.exists(BILLING_DOWN):
            raise ConnectionError("billing API: connection refused")
    return f"invoice {invoice_id} synced ({amount_cents} cents)"
