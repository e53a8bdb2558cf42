"""The original's ``DeadLetterQueue``, as a thin layer over the native queue.

Every call goes to a :class:`mahavishnu_dlq.queue.DeadLetterQueue` (``.native``); this
class only gives it the original's constructor, defaults and answers:

- ``DeadLetterQueue(max_size=10000, opensearch_client=None, observability_manager=None,
  *, fail_on_opensearch_unavailable=False)``: in memory, or — given an
  ``AsyncOpenSearch`` client — on an :class:`~mahavishnu_dlq.storage.OpenSearchStore`
  on that client behind a :class:`~mahavishnu_dlq.storage.FailoverStore` (an in-memory
  fallback, or none when ``fail_on_opensearch_unavailable`` is set: fail closed);
- ``enqueue`` defaults to the exponential policy and 3 retries, as the original did;
  with ``fail_on_opensearch_unavailable`` and no client it raises
  ``ExternalServiceError``;
- ``get_task`` answers None for completed and archived tasks (they left the
  original's queue); ``list_tasks`` lists the open ones unless a status is given;
- ``retry_task`` raises ``ValueError`` (``TaskNotFoundError``) for an unknown id and
  ``RuntimeError`` when no retry callback was given;
- ``start_retry_processor(callback, check_interval_seconds=60)`` returns None.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from mahavishnu_dlq import models
from mahavishnu_dlq.compat.errors import ExternalServiceError
from mahavishnu_dlq.compat.task import FailedTask
from mahavishnu_dlq.errors import TaskNotFoundError
from mahavishnu_dlq.models import DeadLetterStatus, ErrorCategory, RetryPolicy
from mahavishnu_dlq.queue import DeadLetterQueue as NativeQueue
from mahavishnu_dlq.storage import FailoverStore, MemoryStore, Store

__all__ = ["DeadLetterQueue"]

_GONE = (DeadLetterStatus.COMPLETED, DeadLetterStatus.ARCHIVED)


def _hosts(client: Any) -> list[str]:
    """The client's hosts as URLs, for messages (``opensearch`` when unknown)."""
    found: list[str] = []
    for host in getattr(getattr(client, "transport", None), "hosts", None) or []:
        if isinstance(host, Mapping) and "host" in host:
            scheme = "https" if host.get("use_ssl") else host.get("scheme", "http")
            found.append(f"{scheme}://{host['host']}:{host.get('port', 9200)}")
    return found or ["http://opensearch"]


def _search_client(client: object) -> bool:
    """Whether ``client`` is an ``AsyncOpenSearch`` (False without the extra)."""
    try:
        from opensearchpy import AsyncOpenSearch  # noqa: PLC0415 - optional extra
    except ImportError:  # pragma: no cover - the opensearch extra is missing
        return False
    return isinstance(client, AsyncOpenSearch)


def _store(client: object, fail_closed: bool) -> Store:
    if not _search_client(client):
        return MemoryStore()
    from mahavishnu_dlq.storage.opensearch import OpenSearchStore  # noqa: PLC0415 - extra

    search = OpenSearchStore(_hosts(client), client=client)  # type: ignore[arg-type]
    return FailoverStore(search, MemoryStore(), fail_closed=fail_closed)


class DeadLetterQueue:
    """A dead-letter queue with the original Mahavishnu constructor and methods."""

    def __init__(
        self,
        max_size: int = 10000,
        opensearch_client: Any = None,
        observability_manager: Any = None,
        *,
        fail_on_opensearch_unavailable: bool = False,
    ) -> None:
        self.opensearch_client = opensearch_client
        self.observability_manager = observability_manager
        self.fail_on_opensearch_unavailable = fail_on_opensearch_unavailable
        self._has_store = _search_client(opensearch_client)
        #: the native queue every call goes to
        self.native = NativeQueue(
            _store(opensearch_client, fail_on_opensearch_unavailable), max_size=max_size
        )

    @property
    def max_size(self) -> int:
        """The most open tasks the queue keeps."""
        return self.native.max_size

    async def _ready(self) -> NativeQueue:
        await self.native.connect()
        return self.native

    async def enqueue(
        self,
        task_id: str,
        task: Mapping[str, Any],
        repos: Iterable[str] | None,
        error: BaseException | str,
        retry_policy: RetryPolicy | str = RetryPolicy.EXPONENTIAL,
        max_retries: int = 3,
        metadata: Mapping[str, Any] | None = None,
        error_category: ErrorCategory | str | None = None,
    ) -> FailedTask:
        """Store a failed task. ``ValueError`` (``QueueFullError``) when full;
        ``ExternalServiceError`` when ``fail_on_opensearch_unavailable`` is set and no
        OpenSearch client was given, or OpenSearch cannot take it."""
        if self.fail_on_opensearch_unavailable and not self._has_store:
            raise ExternalServiceError(
                "opensearch",
                f"fail_on_opensearch_unavailable is set and no OpenSearch client was given: "
                f"task {task_id} not enqueued",
            )
        native = await self._ready()
        record = await native.enqueue(
            task_id,
            task,
            repos,
            error,
            retry_policy=retry_policy,
            max_retries=max_retries,
            metadata=metadata,
            error_category=error_category,
        )
        return FailedTask.of(record)

    async def get_task(self, task_id: str) -> FailedTask | None:
        """The task, or None (also for completed and archived tasks, as the original)."""
        record = await (await self._ready()).get_task(task_id)
        if record is None or record.status in _GONE:
            return None
        return FailedTask.of(record)

    async def list_tasks(
        self, status: DeadLetterStatus | str | None = None, limit: int = 100
    ) -> list[FailedTask]:
        """Open tasks (or those with ``status``), newest failure first."""
        chosen: Any = status if status is not None else tuple(models.OPEN_STATUSES)
        page = await (await self._ready()).list_tasks(chosen, limit)
        return [FailedTask.of(record) for record in page]

    async def retry_task(self, task_id: str) -> dict[str, Any]:
        """Retry one task now with the callback; ``{"success", "task_id", ...}``."""
        native = await self._ready()
        record = await native.get_task(task_id)
        if record is None or record.status in _GONE:
            raise TaskNotFoundError(task_id)
        if not native.can_retry(record):
            raise RuntimeError("No retry callback configured. Use start_retry_processor() first.")
        return await native.retry_task(task_id)

    async def start_retry_processor(
        self,
        callback: Callable[..., Any],
        check_interval_seconds: float = 60,
    ) -> None:
        """Retry due tasks in the background with ``callback(task, repos)``."""
        await (await self._ready()).start_retry_processor(callback, check_interval_seconds)

    async def stop_retry_processor(self) -> None:
        """Stop the background processor (in-flight attempts go back to pending)."""
        await self.native.stop_retry_processor()

    async def archive_task(self, task_id: str) -> bool:
        """Set a task aside; False when there is no such task."""
        return await (await self._ready()).archive_task(task_id)

    async def get_statistics(self) -> dict[str, Any]:
        """The original's statistics keys (and the native ones beside them);
        ``retry_interval_seconds`` is the running processor's interval, else None."""
        return await (await self._ready()).get_statistics()

    async def clear_all(self) -> int:
        """Delete every task; how many were deleted."""
        return await (await self._ready()).clear_all()

    async def shutdown(self) -> None:
        """Stop the processor and close the store (not a client the caller gave)."""
        await self.native.stop()
