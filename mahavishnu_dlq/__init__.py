"""mahavishnu-dlq: no failed workflow execution is ever lost.

A failure is captured, classified, scheduled for retry under a policy, stored,
retried by a background processor, and kept for an operator to inspect, replay,
archive or purge. Start with :class:`DeadLetterQueue`.

The public names are imported on first use (PEP 562): ``import mahavishnu_dlq``
builds no pydantic model and opens no dependency, so a command line or a host
that needs one name does not pay for all of them. ``from mahavishnu_dlq import
X`` and ``mahavishnu_dlq.X`` work as before; type checkers see the imports below.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mahavishnu_dlq._version import __version__
    from mahavishnu_dlq.alerts import Alert, AlertRule
    from mahavishnu_dlq.blocking import BlockingDLQ
    from mahavishnu_dlq.capture import Failure
    from mahavishnu_dlq.classifier import ClassifierRule, ErrorClassifier
    from mahavishnu_dlq.errors import (
        ConfigurationError,
        Dispatched,
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
    from mahavishnu_dlq.retention import Retention
    from mahavishnu_dlq.settings import DLQSettings
    from mahavishnu_dlq.storage import (
        FailoverStore,
        MemoryStore,
        OpenSearchStore,
        SQLiteStore,
        Store,
    )

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
    "Dispatched",
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
    "Retention",
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

_ERRORS = (
    "ConfigurationError",
    "DLQError",
    "Dispatched",
    "InvalidPayloadError",
    "JobNotFoundError",
    "JobStateError",
    "PayloadTooLargeError",
    "QueueFullError",
    "RetryAfter",
    "StoreAccessError",
    "StoreAuthenticationError",
    "StoreNotFoundError",
    "StoreOverloadedError",
    "StoreTLSError",
    "StoreUnavailableError",
    "TaskBusyError",
    "TaskNotFoundError",
    "UnreadableRecordError",
)
_MODELS = (
    "Attempt",
    "AttemptOutcome",
    "DLQIntegrationStrategy",
    "DeadLetterStatus",
    "ErrorCategory",
    "FailedTask",
    "ReplayReport",
    "RetryPolicy",
    "TaskFilter",
    "TaskPage",
)
_STORES = ("FailoverStore", "MemoryStore", "OpenSearchStore", "SQLiteStore", "Store")

#: Each public name and the module that defines it, imported by :func:`__getattr__`.
_MODULE_OF: dict[str, str] = {
    "Alert": "alerts",
    "AlertRule": "alerts",
    "BlockingDLQ": "blocking",
    "ClassifierRule": "classifier",
    "DLQIntegration": "integration",
    "DLQSettings": "settings",
    "DeadLetterQueue": "queue",
    "ErrorClassifier": "classifier",
    "Failure": "capture",
    "Hooks": "hooks",
    "Jitter": "policy",
    "Job": "jobs",
    "JobKind": "jobs",
    "JobState": "jobs",
    "Limits": "limits",
    "PolicyBook": "policy",
    "PolicyParams": "policy",
    "RetryProcessor": "processor",
    "Retention": "retention",
    "__version__": "_version",  # written there alone (the build reads it too)
    **dict.fromkeys(_ERRORS, "errors"),
    **dict.fromkeys(_MODELS, "models"),
    **dict.fromkeys(_STORES, "storage"),  # OpenSearchStore needs the ``opensearch`` extra
}


def __getattr__(name: str) -> Any:
    """A public name (or a submodule) imported on first use, then kept as a global."""
    module_name = _MODULE_OF.get(name)
    if module_name is None:
        if name.startswith("__"):
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        try:  # ``mahavishnu_dlq.queue`` after a bare ``import mahavishnu_dlq``
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module_name}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The module's globals and every public name, imported or not."""
    return sorted({*globals(), *__all__})
