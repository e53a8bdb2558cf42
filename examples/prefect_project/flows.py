"""The flows of the example project: the dead-letter hook is the whole set-up."""

from __future__ import annotations

import socket

from prefect import flow

from mahavishnu_dlq.integrations.prefect import dead_letter_hook


@flow(name="fetch-orders", on_failure=[dead_letter_hook])
def fetch_orders(host: str, port: int) -> str:
    """Connect to the order service (refused while it is down)."""
    with socket.create_connection((host, port), timeout=5):
        return f"fetched from {host}:{port}"
