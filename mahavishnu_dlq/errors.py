"""Errors raised by mahavishnu-dlq.

Every error derives from :class:`DLQError`. Subclasses carry structured
attributes (``task_id``, ``limit``, ``field`` …) as well as a message, so that a
host can react to them without parsing text. Errors raised by a storage client
are wrapped and kept as ``__cause__``.

:class:`RetryAfter` is not an error: it is a control-flow signal a workflow
raises to ask for a later retry without counting the attempt as a failure.
"""

from __future__ import annotations

__all__ = [
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
]


class DLQError(Exception):
    """The dead-letter queue could not do what was asked."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (type(self).__doc__ or "").strip())


class QueueFullError(DLQError, ValueError):
    """The dead-letter queue is full.

    Also a ``ValueError``: the original Mahavishnu DLQ raised one, and code catching it
    keeps working.
    """

    def __init__(self, size: int, limit: int, reason: str | None = None) -> None:
        self.size = size
        self.limit = limit
        super().__init__(
            f"dead-letter queue is full: {size} open tasks, max_size is {limit}; "
            + (reason or "archive or purge tasks, or raise max_size")
        )


class TaskNotFoundError(DLQError, LookupError, ValueError):
    """No task with this id is stored.

    Also a ``ValueError``, as the original Mahavishnu DLQ raised.
    """

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        super().__init__(f"no task with id {task_id!r} in the dead-letter queue")


class JobNotFoundError(DLQError, LookupError):
    """No bulk job with this id is stored."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"no job with id {job_id!r}")


class JobStateError(DLQError):
    """The job's state refuses the change (resuming a finished job, say)."""

    def __init__(self, job_id: str, reason: str) -> None:
        self.job_id = job_id
        super().__init__(f"job {job_id!r}: {reason}")


class TaskBusyError(DLQError):
    """The task is being retried right now."""

    def __init__(self, task_id: str, owner: str | None = None, reason: str | None = None) -> None:
        self.task_id = task_id
        self.owner = owner
        if reason:  # not busy as such: the task's state refuses the change
            super().__init__(f"task {task_id!r}: {reason}")
            return
        detail = f"it is being retried by {owner}" if owner else "it is being retried"
        super().__init__(f"task {task_id!r} is busy: {detail}")


class StoreUnavailableError(DLQError):
    """The storage backend is unavailable."""

    _state = "unavailable"

    def __init__(self, backend: str, detail: str = "") -> None:
        self.backend = backend
        super().__init__(f"{backend} store is {self._state}" + (f": {detail}" if detail else ""))


class StoreOverloadedError(StoreUnavailableError):
    """The storage backend is up but refuses work for now (back-pressure, HTTP 429).

    Raised only after the store's own retries with backoff ran out. A failover
    store serves the call from its fallback but does not count it toward opening
    its circuit: an overloaded node is alive.
    """

    _state = "overloaded (back-pressure)"


class StoreAuthenticationError(StoreUnavailableError):
    """The storage backend refused our credentials (HTTP 401).

    An outage to a failover store (it keeps tasks in its journal while the password is
    being fixed), but never worded as one: the message names the user and the settings
    to fix, never the password.
    """

    _state = "refusing our credentials"


class StoreAccessError(StoreUnavailableError):
    """The storage backend knows who we are but forbids what was asked (HTTP 403).

    The message names the permission the backend reported missing, and the user.
    """

    _state = "refusing access"


class StoreTLSError(StoreUnavailableError):
    """The TLS connection to the storage backend failed: an untrusted, expired or
    wrong-host certificate, or a client certificate the backend refused.

    The message names the host, what the certificate check said and the setting to fix.
    """

    _state = "unreachable over TLS"


class StoreNotFoundError(DLQError, LookupError):
    """The store's data is not where the settings point (e.g. a missing OpenSearch index).

    Raised when a store is opened for reading only, which never creates anything: a typo
    in the index name must not show an empty queue.
    """

    def __init__(self, backend: str, detail: str) -> None:
        self.backend = backend
        super().__init__(f"{backend} store not found: {detail}")


class UnreadableRecordError(DLQError, LookupError):
    """A record is stored under this id but cannot be read."""

    def __init__(self, task_id: str, reason: str, source: str | None = None) -> None:
        self.task_id = task_id
        self.reason = reason
        #: the stored form as the store holds it (JSON text), for an operator to inspect
        self.source = source
        super().__init__(f"task {task_id!r} is stored but cannot be read: {reason}")


class ConfigurationError(DLQError, ValueError):
    """The configuration is invalid."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.field = field
        super().__init__(message)


class PayloadTooLargeError(DLQError, ValueError):
    """The task payload is too large to store."""

    def __init__(
        self,
        task_id: str,
        size: int,
        limit: int,
        *,
        setting: str = "max_payload_bytes",
        what: str = "payload",
    ) -> None:
        self.task_id = task_id
        self.size = size
        self.limit = limit
        #: the setting that sets ``limit``
        self.setting = setting
        super().__init__(
            f"task {task_id!r} is too large to store: its {what} is {size} bytes of JSON, "
            f"the limit ({setting}) is {limit}"
        )


class InvalidPayloadError(DLQError, ValueError):
    """The task payload cannot be stored."""

    def __init__(self, task_id: str, detail: str) -> None:
        self.task_id = task_id
        super().__init__(f"task {task_id!r} cannot be stored: {detail}")


class RetryAfter(Exception):  # noqa: N818 - a signal, not an error; named like tenacity's TryAgain
    """Retry this task later without counting the attempt as a failure."""

    def __init__(self, seconds: float, reason: str = "") -> None:
        if not seconds >= 0:  # also NaN
            raise ValueError(f"RetryAfter seconds must be >= 0, got {seconds}")
        self.seconds = float(seconds)
        self.reason = reason
        super().__init__(f"retry after {seconds:g}s" + (f": {reason}" if reason else ""))


class Dispatched(Exception):  # noqa: N818 - a signal, not an error, like RetryAfter
    """Raised by an engine's retry handler (:meth:`DeadLetterQueue.register_engine`)
    once it has sent the work to the engine (a Celery or Dramatiq worker, a Prefect
    deployment) instead of running it: the attempt stays running, held under the
    dispatch token (``record.lease_owner`` as the handler got it), until the engine's
    worker reports how it ended with :meth:`DeadLetterQueue.report_outcome`. A report
    that never comes is a lost attempt once the engine's wait is over, and the task is
    sent again. Raised by any other handler, it is a failed attempt."""

    def __init__(self, reason: str = "") -> None:
        self.reason = reason
        super().__init__("dispatched" + (f": {reason}" if reason else ""))
