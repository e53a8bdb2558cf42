"""The library's enumerations, without pydantic: what a command-line option or a quick
``import`` needs, at no cost.

They are the same objects as ``mahavishnu_dlq.models.DeadLetterStatus`` and the others
(and ``mahavishnu_dlq.jobs.JobKind``/``JobState``), which import them from here.
"""

from __future__ import annotations

from enum import Enum

__all__ = [
    "AttemptOutcome",
    "DLQIntegrationStrategy",
    "DeadLetterStatus",
    "ErrorCategory",
    "JobKind",
    "JobState",
    "RetryPolicy",
]


class RetryPolicy(str, Enum):
    """When the processor retries a task."""

    NEVER = "never"
    LINEAR = "linear"
    EXPONENTIAL = "exponential"
    IMMEDIATE = "immediate"


class DeadLetterStatus(str, Enum):
    """Where a task is in its life (see the state machine in the user guide)."""

    PENDING = "pending"
    RETRYING = "retrying"
    EXHAUSTED = "exhausted"
    COMPLETED = "completed"
    ARCHIVED = "archived"


class ErrorCategory(str, Enum):
    """What kind of failure this is; decides the default retry policy."""

    TRANSIENT = "transient"
    NETWORK = "network"
    RESOURCE = "resource"
    PERMISSION = "permission"
    VALIDATION = "validation"
    PERMANENT = "permanent"


class DLQIntegrationStrategy(str, Enum):
    """Which failures :class:`~mahavishnu_dlq.integration.DLQIntegration` enqueues."""

    AUTOMATIC = "automatic"
    SELECTIVE = "selective"
    MANUAL = "manual"
    DISABLED = "disabled"


class AttemptOutcome(str, Enum):
    """How one attempt ended."""

    RUNNING = "running"
    SUCCESS = "success"
    FAILURE = "failure"
    TIMEOUT = "timeout"
    DEFERRED = "deferred"
    CANCELLED = "cancelled"
    LOST = "lost"


class JobKind(str, Enum):
    """What a job does to each task it selects."""

    #: make the task due now; the processors retry it on their own (one more retry
    #: for an exhausted task)
    REPLAY = "replay"
    #: retry the task now, in the job's runner, through its handler
    RETRY = "retry"
    #: set the task aside for audit
    ARCHIVE = "archive"
    #: delete the record
    PURGE = "purge"


class JobState(str, Enum):
    """Where a job is in its life."""

    QUEUED = "queued"  # waiting for a runner (new, resumed, or its runner let it go)
    RUNNING = "running"  # leased to a runner
    PAUSED = "paused"  # stopped at a page boundary; resume continues from the cursor
    DONE = "done"
    CANCELLED = "cancelled"
    FAILED = "failed"  # the job itself could not go on (not one item: those are counted)
