"""The original's error names: ``AdapterError``, ``ExternalServiceError`` and
``OPENSEARCH_AVAILABLE``.

``ExternalServiceError`` *is* :class:`~mahavishnu_dlq.errors.StoreUnavailableError`:
what the native store raises when OpenSearch is down is caught by code written
against the original. ``QueueFullError`` and ``TaskNotFoundError`` are ``ValueError``
subclasses natively, so ``except ValueError`` around ``enqueue`` / ``retry_task``
keeps working.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from mahavishnu_dlq.errors import StoreUnavailableError

__all__ = ["OPENSEARCH_AVAILABLE", "AdapterError", "ExternalServiceError"]

#: True when opensearch-py can be imported (the ``opensearch`` extra is installed).
OPENSEARCH_AVAILABLE: bool = importlib.util.find_spec("opensearchpy") is not None

#: The original's error for a failing external service: the store being unavailable.
ExternalServiceError = StoreUnavailableError


class AdapterError(Exception):
    """A workflow failed in its adapter and was not kept in the dead-letter queue.

    Shaped like the original's: ``message`` and a ``details`` dict (``workflow_id``,
    ``adapter``, ``error``, ``error_type``, ``dlq_reason``); the workflow's own
    exception is the ``__cause__``.
    """

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        self.message = message
        self.details: dict[str, Any] = dict(details or {})
        super().__init__(message)
