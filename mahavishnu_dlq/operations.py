"""Operator actions and statistics: retry one task now, replay many, archive, purge, clear.

What the CLI's commands (and the web console) call through the
:class:`~mahavishnu_dlq.queue.DeadLetterQueue`: each action is a state-machine
transition of :mod:`mahavishnu_dlq.lifecycle` applied through the store's
compare-and-set, so an operator's retry claims a task exactly as the processor
does and never runs it twice at once. The filters the actions select by are
built here too, from loosely typed arguments (strings or enums, one or many),
with errors that name the argument and what it allows.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from mahavishnu_dlq import lifecycle
from mahavishnu_dlq.attempt import run_attempt
from mahavishnu_dlq.errors import (
    StoreUnavailableError,
    TaskBusyError,
    TaskNotFoundError,
    UnreadableRecordError,
)
from mahavishnu_dlq.limits import require_str
from mahavishnu_dlq.models import (
    AttemptOutcome,
    DeadLetterStatus,
    ErrorCategory,
    FailedTask,
    ReplayItem,
    ReplayReport,
    RetryPolicy,
    TaskFilter,
)
from mahavishnu_dlq.printable import library_logger

if TYPE_CHECKING:
    from mahavishnu_dlq.queue import DeadLetterQueue

__all__ = ["Operations", "StatusArg", "make_filter", "purge_filter", "replay_filter", "statuses"]

_log = library_logger("mahavishnu_dlq")

#: One status or several, as enums or their string values.
StatusArg = DeadLetterStatus | str | Iterable[DeadLetterStatus | str] | None

_REPLAYABLE = (DeadLetterStatus.PENDING, DeadLetterStatus.EXHAUSTED, DeadLetterStatus.RETRYING)
_PURGEABLE_DEFAULT = (DeadLetterStatus.COMPLETED, DeadLetterStatus.ARCHIVED)
_PAGE = 500  # records a replay reads per page


def statuses(value: StatusArg, argument: str = "status") -> tuple[DeadLetterStatus, ...] | None:
    """``value`` as a tuple of statuses; ``ValueError`` naming an unknown one."""
    if value is None:
        return None
    if isinstance(value, (str, DeadLetterStatus)):
        items: list[Any] = [value]
    elif isinstance(value, Iterable) and not isinstance(value, (bytes, bytearray, Mapping)):
        items = list(value)
    else:
        raise TypeError(
            f"{argument} must be a status or a list of statuses, got {type(value).__name__}"
        )
    chosen: list[DeadLetterStatus] = []
    for item in items:
        try:
            chosen.append(DeadLetterStatus(item))
        except ValueError:
            allowed = ", ".join(s.value for s in DeadLetterStatus)
            raise ValueError(f"{argument}: unknown status {item!r}; allowed: {allowed}") from None
    return tuple(chosen)


def make_filter(**fields: Any) -> TaskFilter:
    """A :class:`TaskFilter` of ``fields``, or a one-line ``ValueError`` naming the
    field and what it allows (instead of pydantic's report)."""
    try:
        return TaskFilter(**fields)
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False):
            where = ".".join(str(part) for part in error["loc"][:1]) or "filter"
            message = str(error["msg"])
            if error["type"] == "value_error":  # our validators' own words
                message = str((error.get("ctx") or {}).get("error", message))
            elif error["type"] == "enum":
                expected = (error.get("ctx") or {}).get("expected", "")
                message = f"unknown value {error.get('input')!r}; allowed: {expected}"
            problems.append(f"{where}: {message}")
        raise ValueError("; ".join(dict.fromkeys(problems))) from None


def replay_filter(filter: TaskFilter | None = None) -> TaskFilter:
    """What a replay selects: ``filter``, by default pending/exhausted/retrying tasks."""
    flt = filter or TaskFilter()
    if flt.status is None:
        flt = flt.model_copy(update={"status": _REPLAYABLE})
    return flt


def purge_filter(
    now: datetime, older_than: timedelta | datetime | None, status: StatusArg
) -> TaskFilter:
    """What a purge deletes: ``status`` (completed and archived by default) last updated
    before ``older_than`` (an age back from ``now``, or a cut-off time)."""
    chosen = statuses(status) or _PURGEABLE_DEFAULT
    cutoff: datetime | None
    if isinstance(older_than, timedelta):
        if older_than < timedelta(0):
            raise ValueError(f"older_than must not be negative, got {older_than}")
        try:
            cutoff = now - older_than
        except OverflowError:
            raise ValueError(f"older_than is too long: {older_than}") from None
    elif older_than is None or isinstance(older_than, datetime):
        cutoff = older_than
    else:
        raise TypeError(
            f"older_than must be a timedelta or a datetime, got {type(older_than).__name__}"
        )
    return make_filter(status=chosen, updated_before=cutoff)


def _info(action: str, message: str, *args: Any, **extra: Any) -> None:
    """An INFO line with a stable ``action`` and structured extras (ids and counts, never
    task input or metadata)."""
    if _log.isEnabledFor(logging.INFO):
        _log.info(message, *args, extra={"action": action, **extra})


class Operations:
    """The operator actions of one queue (see the module docstring)."""

    def __init__(self, dlq: DeadLetterQueue) -> None:
        self._dlq = dlq

    async def statistics(self, top_fingerprints: int = 5) -> dict[str, Any]:
        """See :meth:`DeadLetterQueue.get_statistics`."""
        dlq = self._dlq
        stats = await dlq.traced_store.statistics(top_fingerprints=top_fingerprints)
        now = dlq.clock.now()
        size = stats.open_count
        oldest = stats.oldest_pending_failed_at
        result = {
            "queue_size": size,
            "max_size": dlq.max_size,
            "utilization_percent": round(100.0 * size / dlq.max_size, 2),
            "status_breakdown": {s.value: stats.by_status.get(s, 0) for s in DeadLetterStatus},
            "error_categories": {c.value: stats.by_category.get(c.value, 0) for c in ErrorCategory},
            "retry_policies": {p.value: stats.by_policy.get(p.value, 0) for p in RetryPolicy},
            "lifetime_stats": dict(dlq.lifetime),
            "is_processor_running": dlq.is_processor_running,
            # the running processor's real check interval; None when none runs here
            "retry_interval_seconds": (
                dlq.processor.check_interval
                if dlq.processor is not None and dlq.is_processor_running
                else None
            ),
            "backend": dlq.store.backend,
            "location": getattr(dlq.store, "location", None),
            "degraded": bool(getattr(dlq.store, "degraded", False)),
            "failover": getattr(dlq.store, "health", None),
            "total_stored": stats.total,
            "unreadable": stats.unreadable,
            "oldest_pending_age_seconds": (
                None if oldest is None else max(0.0, (now - oldest).total_seconds())
            ),
            "top_fingerprints": [
                {
                    "fingerprint": fp.fingerprint,
                    "count": fp.count,
                    "error_type": fp.error_type,
                    "example_error": fp.example_error,
                }
                for fp in stats.top_fingerprints
            ],
        }
        result["breakers"] = await self._breakers(now)
        dlq.telemetry.snapshot = result  # what the depth, age and breaker gauges report
        return result

    async def _breakers(self, now: datetime) -> dict[str, dict[str, Any]] | None:
        """Every workflow's circuit breaker: state, since when, the window's failure
        ratio; None while the store that keeps them cannot be reached (a degraded
        failover store keeps them on its primary only)."""
        dlq = self._dlq
        found: dict[str, dict[str, Any]] = {}
        try:
            breakers = await dlq.downstream.breakers()
        except StoreUnavailableError:
            return None
        for breaker in breakers:
            policy = dlq.downstream.policy(breaker.workflow)
            found[breaker.workflow] = {
                "state": breaker.state.value,
                "since": None if breaker.since is None else breaker.since.isoformat(),
                "open_until": (
                    None if breaker.open_until is None else breaker.open_until.isoformat()
                ),
                "failure_ratio": round(breaker.failure_ratio(now, policy), 4),
                "trips": breaker.trips,
                "by": breaker.by,
                "enabled": policy.enabled,
                "paused_until": (
                    None if breaker.paused_until is None else breaker.paused_until.isoformat()
                ),
                "rate_per_second": dlq.rates.for_workflow(breaker.workflow),
            }
        return found

    # -- one task ----------------------------------------------------------------------

    async def retry_task(self, task_id: str) -> dict[str, Any]:
        """See :meth:`DeadLetterQueue.retry_task`."""
        dlq = self._dlq
        task_id = require_str(task_id, "task_id")
        current = await dlq.traced_store.get(task_id)
        if current is None:
            raise TaskNotFoundError(task_id)
        if current.status in (DeadLetterStatus.COMPLETED, DeadLetterStatus.ARCHIVED):
            return {
                "success": False,
                "task_id": task_id,
                "error": "not retryable",
                "message": f"task {task_id} is {current.status.value}; there is nothing to retry",
            }
        if not dlq.can_retry(current):
            return {
                "success": False,
                "task_id": task_id,
                "error": "no handler",
                "message": f"no handler registered for workflow {current.workflow!r} "
                "and no default callback",
            }
        owner = f"{dlq.worker_id}/manual"
        claimed = await dlq.traced_store.mutate(
            task_id, partial(self._claim_manual, task_id=task_id, owner=owner)
        )
        dlq.lifetime["manually_retried"] += 1
        outcome = await run_attempt(dlq, claimed, owner=owner)
        if outcome.status is DeadLetterStatus.EXHAUSTED and outcome.record is not None:
            await dlq.hooks.exhausted(outcome.record)
        _info(
            "dlq.manual_retry",
            "dlq.manual_retry %s: %s -> %s",
            task_id,
            outcome.outcome.value,
            outcome.status.value,
            task_id=task_id,
            outcome=outcome.outcome.value,
            status=outcome.status.value,
        )
        if outcome.success:
            return {
                "success": True,
                "task_id": task_id,
                "result": outcome.result,
                "message": f"task {task_id} succeeded on retry {claimed.retry_count}",
            }
        if outcome.outcome is AttemptOutcome.RUNNING and outcome.record is not None:
            return {  # an engine handler sent it: its worker reports the outcome
                "success": False,
                "task_id": task_id,
                "dispatched": outcome.record.lease_owner,
                "message": f"retry {claimed.retry_count} of task {task_id} was sent as "
                f"{outcome.record.lease_owner}; its engine reports the outcome",
            }
        return {
            "success": False,
            "task_id": task_id,
            "error": outcome.error,
            "message": f"retry {claimed.retry_count} of task {task_id} failed; "
            f"task is now {outcome.status.value}",
        }

    def _claim_manual(self, current: FailedTask | None, *, task_id: str, owner: str) -> FailedTask:
        if current is None:
            raise TaskNotFoundError(task_id)
        dlq = self._dlq
        return lifecycle.claim(
            current,
            now=dlq.clock.now(),
            owner=owner,
            lease_seconds=dlq.lease_seconds,
            trigger="manual",
            attempts_kept=dlq.attempts_kept,
        )

    async def archive_task(self, task_id: str) -> bool:
        """See :meth:`DeadLetterQueue.archive_task`."""
        dlq = self._dlq
        task_id = require_str(task_id, "task_id")

        def archive(current: FailedTask | None) -> FailedTask:
            if current is None:
                raise TaskNotFoundError(task_id)
            return lifecycle.archive(current, now=dlq.clock.now())

        try:
            before = await dlq.traced_store.get(task_id)
            await dlq.traced_store.mutate(task_id, archive)
        except TaskNotFoundError:
            return False
        if before is not None and before.status is not DeadLetterStatus.ARCHIVED:
            dlq.lifetime["archived"] += 1
            dlq.telemetry.count("archived", before)
            _info("dlq.archive", "dlq.archive %s", task_id, task_id=task_id)
        return True

    # -- many tasks --------------------------------------------------------------------

    async def replay(
        self,
        filter: TaskFilter | None,
        *,
        dry_run: bool,
        rate_per_second: float | None,
        limit: int | None,
        run: bool,
        on_item: Callable[[ReplayItem], object] | None,
    ) -> ReplayReport:
        """See :meth:`DeadLetterQueue.replay`."""
        dlq = self._dlq
        _check_replay(filter, rate_per_second, limit)
        flt = replay_filter(filter)
        report = ReplayReport(dry_run=dry_run)
        # Paced by the injected clock (not the event loop's): item k starts k/rate
        # seconds after the first, so n items take (n-1)/rate seconds.
        pace = rate_per_second is not None and not dry_run
        started = dlq.clock.now()
        async for task in self._iterate(flt, limit):
            if pace and report.matched and rate_per_second is not None:
                wait = _pause(started, report.matched / rate_per_second, dlq.clock.now())
                if wait > 0:
                    await dlq.clock.sleep(wait)
            report.matched += 1
            item = await self._replay_one(task, dry_run=dry_run, run=run)
            report.items.append(item)
            if on_item is not None:
                on_item(item)
            if item.outcome in ("replayed", "would_replay"):
                report.replayed += 1
            elif item.outcome == "succeeded":
                report.replayed += 1
                report.succeeded += 1
            elif item.outcome == "failed":
                report.failed += 1
            else:
                report.skipped += 1
        if report.replayed and not dry_run and dlq._wakeup is not None:
            dlq._wakeup()
        _info(
            "dlq.replay",
            "dlq.replay %d matched, %d replayed, %d failed, %d skipped%s",
            report.matched,
            report.replayed,
            report.failed,
            report.skipped,
            " (dry run)" if dry_run else "",
            matched=report.matched,
            replayed=report.replayed,
            dry_run=dry_run,
        )
        return report

    async def _iterate(self, flt: TaskFilter, limit: int | None) -> AsyncIterator[FailedTask]:
        seen = 0
        cursor: str | None = None
        while limit is None or seen < limit:
            size = _PAGE if limit is None else min(_PAGE, limit - seen)
            page = await self._dlq.traced_store.query(flt, limit=size, cursor=cursor)
            for task in page:
                yield task
                seen += 1
            if page.cursor is None:
                return
            cursor = page.cursor

    async def _replay_one(self, task: FailedTask, *, dry_run: bool, run: bool) -> ReplayItem:
        now = self._dlq.clock.now()
        try:
            if dry_run:
                lifecycle.make_due(task, now=now)
                return ReplayItem(task_id=task.task_id, outcome="would_replay")
            if run:
                result = await self.retry_task(task.task_id)
                outcome = (
                    "succeeded"
                    if result["success"]
                    else "dispatched"
                    if result.get("dispatched")
                    else "failed"
                )
                return ReplayItem(
                    task_id=task.task_id, outcome=outcome, detail=str(result.get("error") or "")
                )

            def due(current: FailedTask | None) -> FailedTask:
                if current is None:
                    raise TaskNotFoundError(task.task_id)
                return lifecycle.make_due(current, now=now)

            await self._dlq.traced_store.mutate(task.task_id, due)
            return ReplayItem(task_id=task.task_id, outcome="replayed")
        except (TaskBusyError, TaskNotFoundError, UnreadableRecordError) as exc:
            return ReplayItem(task_id=task.task_id, outcome="skipped", detail=str(exc))

    async def purge(
        self, *, older_than: timedelta | datetime | None, status: StatusArg, dry_run: bool
    ) -> int:
        """See :meth:`DeadLetterQueue.purge`."""
        dlq = self._dlq
        flt = purge_filter(dlq.clock.now(), older_than, status)
        if dry_run:
            return await dlq.traced_store.count(flt)
        count = await dlq.traced_store.purge(
            older_than=flt.updated_before, statuses=flt.status or ()
        )
        dlq.lifetime["purged"] += count
        dlq.telemetry.purged(count)
        _info("dlq.purge", "dlq.purge %d records", count, count=count)
        return count

    async def clear_all(self) -> int:
        """See :meth:`DeadLetterQueue.clear_all`."""
        dlq = self._dlq
        count = await dlq.traced_store.clear()
        dlq.lifetime["purged"] += count
        dlq.telemetry.purged(count)
        _info("dlq.clear", "dlq.clear %d records", count, count=count)
        return count


def _check_replay(filter: object, rate_per_second: object, limit: object) -> None:
    """``TypeError``/``ValueError`` naming a replay argument that cannot be used."""
    if rate_per_second is not None:
        if isinstance(rate_per_second, bool) or not isinstance(rate_per_second, (int, float)):
            raise TypeError(
                f"rate_per_second must be a number, got {type(rate_per_second).__name__}"
            )
        if not (0 < rate_per_second < math.inf):
            raise ValueError(f"rate_per_second must be > 0 and finite, got {rate_per_second}")
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise TypeError(f"limit must be an int, got {type(limit).__name__}")
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
    if filter is not None and not isinstance(filter, TaskFilter):
        raise TypeError(f"filter must be a TaskFilter, got {type(filter).__name__}")


def _pause(started: datetime, offset: float, now: datetime) -> float:
    """Seconds from ``now`` until ``offset`` seconds after ``started`` (a century at most)."""
    try:
        return (started + timedelta(seconds=offset) - now).total_seconds()
    except OverflowError:
        return 100 * 365 * 86400.0
