"""mahavishnu-dlq: no failed workflow execution is ever lost.

A failure is captured, classified, scheduled for retry under a policy, stored,
retried by a background processor, and kept for an operator to inspect, replay,
archive or purge. Start with :class:`DeadLetterQueue`.
"""

from __future__ import annotations

from typing import Any

from mahavishnu_dlq.alerts import Alert, AlertRule
from mahavishnu_dlq.blocking import BlockingDLQ
from mahavishnu_dlq.capture import Failure
from mahavishnu_dlq.classifier import ClassifierRule, ErrorClassifier
from mahavishnu_dlq.errors import (
    ConfigurationError,
    DLQError,
    InvalidPayloadError,
    JobNotFoundError,
    JobStateError,
    PayloadTooLargeError,
    QueueFullError,
    RetryAfter,
    StoreAccessError,
    StoreAuthenticationError,
    StoreNotFoundError,
    StoreOverloadedError,
    StoreTLSError,
    StoreUnavailableError,
    TaskBusyError,
    TaskNotFoundError,
    UnreadableRecordError,
)
from mahavishnu_dlq.hooks import Hooks
from mahavishnu_dlq.integration import DLQIntegration
from mahavishnu_dlq.jobs import Job, JobKind, JobState
from mahavishnu_dlq.limits import Limits
from mahavishnu_dlq.models import (
    Attempt,
    AttemptOutcome,
    DeadLetterStatus,
    DLQIntegrationStrategy,
    ErrorCategory,
    FailedTask,
    ReplayReport,
    RetryPolicy,
    TaskFilter,
    TaskPage,
)
from mahavishnu_dlq.policy import Jitter, PolicyBook, PolicyParams
from mahavishnu_dlq.processor import RetryProcessor
from mahavishnu_dlq.queue import DeadLetterQueue
from mahavishnu_dlq.settings import DLQSettings
from mahavishnu_dlq.storage import FailoverStore, MemoryStore, SQLiteStore, Store

__version__ = "0.1.0"

__all__ = [
    "Alert",
    "AlertRule",
    "Attempt",
    "AttemptOutcome",
    "BlockingDLQ",
    "ClassifierRule",
    "ConfigurationError",
    "DLQError",
    "DLQIntegration",
    "DLQIntegrationStrategy",
    "DLQSettings",
    "DeadLetterQueue",
    "DeadLetterStatus",
    "ErrorCategory",
    "ErrorClassifier",
    "FailedTask",
    "FailoverStore",
    "Failure",
    "Hooks",
    "InvalidPayloadError",
    "Jitter",
    "Job",
    "JobKind",
    "JobNotFoundError",
    "JobState",
    "JobStateError",
    "Limits",
    "MemoryStore",
    "OpenSearchStore",
    "PayloadTooLargeError",
    "PolicyBook",
    "PolicyParams",
    "QueueFullError",
    "ReplayReport",
    "RetryAfter",
    "RetryPolicy",
    "RetryProcessor",
    "SQLiteStore",
    "Store",
    "StoreAccessError",
    "StoreAuthenticationError",
    "StoreNotFoundError",
    "StoreOverloadedError",
    "StoreTLSError",
    "StoreUnavailableError",
    "TaskBusyError",
    "TaskFilter",
    "TaskNotFoundError",
    "TaskPage",
    "UnreadableRecordError",
    "__version__",
]


def __getattr__(name: str) -> Any:
    """``OpenSearchStore`` is imported lazily (it needs the ``opensearch`` extra)."""
    if name == "OpenSearchStore":
        from mahavishnu_dlq import storage  # noqa: PLC0415

        return storage.OpenSearchStore
    raise AttributeError(f"module 'mahavishnu_dlq' has no attribute {name!r}")
