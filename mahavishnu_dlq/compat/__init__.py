"""Migrating from the original Mahavishnu DLQ: its names, with its shapes.

Change the imports of code written against ``mahavishnu.core.dead_letter_queue``,
``.dlq_integration``, ``.errors``, ``.resilience``, ``.status`` and
``.opensearch_constants`` to ``from mahavishnu_dlq.compat import ...``; the code
runs on the native queue. ``docs/migration.md`` lists each name's shape, and what
the native API does differently and why.
"""

from __future__ import annotations

from mahavishnu_dlq.compat.errors import OPENSEARCH_AVAILABLE, AdapterError, ExternalServiceError
from mahavishnu_dlq.compat.integration import DLQIntegration, create_dlq_integration
from mahavishnu_dlq.compat.queue import DeadLetterQueue
from mahavishnu_dlq.compat.task import FailedTask
from mahavishnu_dlq.errors import QueueFullError, TaskNotFoundError
from mahavishnu_dlq.models import (
    DeadLetterStatus,
    DLQIntegrationStrategy,
    ErrorCategory,
    RetryPolicy,
)

__all__ = [
    "OPENSEARCH_AVAILABLE",
    "AdapterError",
    "DLQIntegration",
    "DLQIntegrationStrategy",
    "DeadLetterQueue",
    "DeadLetterStatus",
    "ErrorCategory",
    "ExternalServiceError",
    "FailedTask",
    "QueueFullError",
    "RetryPolicy",
    "TaskNotFoundError",
    "create_dlq_integration",
]
