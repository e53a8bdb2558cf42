"""Operator actions of :class:`~mahavishnu_dlq.queue.DeadLetterQueue`.

:class:`OperatorActions` is the part of the queue an operator (the CLI, the web
console, a script) calls to act on stored tasks: retry one now, archive it, replay
a selection, purge, count, clear. Each method delegates to
:class:`~mahavishnu_dlq.operations.Operations`, which holds the logic.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from mahavishnu_dlq.models import ReplayItem, ReplayReport, TaskFilter
from mahavishnu_dlq.operations import StatusArg, purge_filter, replay_filter

if TYPE_CHECKING:
    from mahavishnu_dlq.clock import Clock
    from mahavishnu_dlq.operations import Operations
    from mahavishnu_dlq.storage.base import Store

__all__ = ["OperatorActions"]


class OperatorActions:
    """The operator actions of :class:`~mahavishnu_dlq.queue.DeadLetterQueue` (a mixin)."""

    if TYPE_CHECKING:  # DeadLetterQueue's
        _operations: Operations
        clock: Clock

        @property
        def traced_store(self) -> Store: ...

    async def retry_task(self, task_id: str) -> dict[str, Any]:
        """Retry one task now through its handler, claiming it like the processor does.

        Returns ``{"success", "task_id", "result" | "error", "message"}``. Raises
        :class:`TaskNotFoundError` for an unknown id, :class:`TaskBusyError` while
        the task is being retried elsewhere, :class:`UnreadableRecordError` when its
        stored record cannot be read. A failure counts toward exhaustion exactly like
        an automatic retry.
        """
        return await self._operations.retry_task(task_id)

    async def archive_task(self, task_id: str) -> bool:
        """Set a task aside for audit. False when no such task exists."""
        return await self._operations.archive_task(task_id)

    async def replay(
        self,
        filter: TaskFilter | None = None,
        *,
        dry_run: bool = False,
        rate_per_second: float | None = None,
        limit: int | None = None,
        run: bool = False,
        on_item: Callable[[ReplayItem], object] | None = None,
    ) -> ReplayReport:
        """Make matching tasks due now (or, with ``run=True``, retry each one inline).

        Without a status in ``filter``, pending, exhausted and stranded retrying
        tasks are selected (:meth:`replay_filter`). ``dry_run`` lists what would be
        replayed and touches nothing; ``rate_per_second`` paces the changes;
        ``limit`` caps how many; ``on_item`` is called after each task (progress).
        An exhausted task gets one more retry. Records that cannot be read are
        skipped (and counted by :meth:`get_statistics` as ``unreadable``).
        """
        return await self._operations.replay(
            filter,
            dry_run=dry_run,
            rate_per_second=rate_per_second,
            limit=limit,
            run=run,
            on_item=on_item,
        )

    @staticmethod
    def replay_filter(filter: TaskFilter | None = None) -> TaskFilter:
        """What :meth:`replay` selects: ``filter``, by default pending/exhausted/retrying."""
        return replay_filter(filter)

    async def purge(
        self,
        *,
        older_than: timedelta | datetime | None = None,
        status: StatusArg = None,
        dry_run: bool = False,
    ) -> int:
        """Delete records (completed and archived unless ``status`` says otherwise).

        ``older_than`` is an age (timedelta) or a cut-off time: records last
        updated before it go. Returns how many were deleted, or with ``dry_run``
        how many match now (nothing is deleted).
        """
        return await self._operations.purge(older_than=older_than, status=status, dry_run=dry_run)

    def purge_filter(
        self, *, older_than: timedelta | datetime | None = None, status: StatusArg = None
    ) -> TaskFilter:
        """The records :meth:`purge` with these arguments deletes, as a filter."""
        return purge_filter(self.clock.now(), older_than, status)

    async def count_tasks(self, filter: TaskFilter | None = None) -> int:
        """How many stored records match ``filter`` (all when None)."""
        return await self.traced_store.count(filter)

    async def clear_all(self) -> int:
        """Delete every record. Returns how many were deleted."""
        return await self._operations.clear_all()
