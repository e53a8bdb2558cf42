"""The state machine, as pure functions from one record to the next.

::

    enqueue ──► PENDING ──claim──► RETRYING ──success──► COMPLETED
                  ▲                   │
                  └──failure, retries left (next_retry_at = policy)
                                      └──failure, no retries left──► EXHAUSTED
    PENDING / EXHAUSTED / COMPLETED ──archive──► ARCHIVED ──purge──► gone
    RETRYING whose lease expired ──► may be claimed again (crash recovery)

Each function takes the current :class:`FailedTask` and returns its successor
(or raises a :class:`~mahavishnu_dlq.errors.DLQError` when the transition is not
allowed). The queue hands them to :meth:`Store.mutate`, which makes them atomic;
so the rules live here once, whatever the backend.

Counting: ``retry_count`` is incremented when a retry is *claimed*, so a worker
that dies mid-attempt still uses up a retry; ``total_attempts`` counts every
execution including the original failing run. A retry released by a stopping
processor gives its retry back; an attempt that asked for ``RetryAfter`` does too.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from mahavishnu_dlq.errors import TaskBusyError
from mahavishnu_dlq.models import (
    Attempt,
    AttemptOutcome,
    DeadLetterStatus,
    FailedTask,
)
from mahavishnu_dlq.policy import RetryAction, RetryDecision

__all__ = [
    "archive",
    "claim",
    "expire",
    "finish",
    "hand_off",
    "make_due",
    "merge_failure",
    "release",
    "renew",
    "schedule",
    "schedule_action",
]

_PENDING = DeadLetterStatus.PENDING
_RETRYING = DeadLetterStatus.RETRYING
_EXHAUSTED = DeadLetterStatus.EXHAUSTED
_COMPLETED = DeadLetterStatus.COMPLETED
_ARCHIVED = DeadLetterStatus.ARCHIVED
_END_OF_TIME = datetime.max.replace(tzinfo=timezone.utc)


def schedule(decision: RetryDecision) -> dict[str, Any]:
    """Status and schedule after a failure, from the policy's decision."""
    return schedule_action(decision.action, decision.next_retry_at)


def schedule_action(action: RetryAction, next_retry_at: datetime | None) -> dict[str, Any]:
    """Status and schedule for a decided ``action`` (``next_retry_at`` counts for RETRY)."""
    if action is RetryAction.RETRY:
        return {"status": _PENDING, "next_retry_at": next_retry_at}
    if action is RetryAction.MANUAL:
        return {"status": _PENDING, "next_retry_at": None}
    return {"status": _EXHAUSTED, "next_retry_at": None}


def merge_failure(existing: FailedTask | None, incoming: FailedTask) -> FailedTask:
    """Enqueueing ``incoming`` over whatever is stored under its id (idempotent).

    - nothing stored: ``incoming`` as it is;
    - an open record (pending, retrying, exhausted): the same record, with the new
      input, the new failure as ``last_error`` and merged metadata; its schedule,
      counters and first failure are kept, so a duplicate delivery changes nothing
      that matters;
    - a closed record (completed, archived): reopened as a new failure that keeps
      the id's history (``created_at``, attempts, ``total_attempts``).
    """
    if existing is None:
        return incoming
    if existing.status in (_PENDING, _RETRYING, _EXHAUSTED):
        return existing.evolve(
            task=incoming.task,
            repos=incoming.repos,
            workflow=incoming.workflow or existing.workflow,
            last_error=incoming.error,
            last_error_type=incoming.error_type,
            metadata={**existing.metadata, **incoming.metadata},
            updated_at=incoming.updated_at,
        )
    return incoming.evolve(
        created_at=existing.created_at,
        attempts=existing.attempts,
        total_attempts=existing.total_attempts + incoming.total_attempts,
    )


def _close_running(
    attempts: list[Attempt],
    at: datetime,
    outcome: AttemptOutcome,
    error: str | None = None,
    error_type: str | None = None,
) -> list[Attempt]:
    """The history with its running attempt (if any) marked finished."""
    if attempts and attempts[-1].outcome is AttemptOutcome.RUNNING:
        update: dict[str, Any] = {"finished_at": at, "outcome": outcome}
        if error is not None:
            update.update(error=error[:2000], error_type=error_type)
        return [*attempts[:-1], attempts[-1].evolve(**update)]
    return attempts


def claim(
    task: FailedTask,
    *,
    now: datetime,
    owner: str,
    lease_seconds: float,
    trigger: str,
    attempts_kept: int,
) -> FailedTask:
    """Lease ``task`` to ``owner`` for one attempt.

    ``trigger`` is "processor" (the task must be due) or "manual" (an operator:
    pending and exhausted tasks may be retried at any time). A task whose lease
    is still running is refused with :class:`TaskBusyError`; a task whose lease
    expired has its lost attempt recorded first.
    """
    status = task.status
    attempts = task.attempts
    if status is _RETRYING:
        if task.lease_active(now):
            raise TaskBusyError(task.task_id, task.lease_owner)
        attempts = _close_running(attempts, task.lease_expires_at or now, AttemptOutcome.LOST)
    elif status in (_COMPLETED, _ARCHIVED):
        raise TaskBusyError(task.task_id, reason=f"it is {status.value}; there is nothing to retry")
    elif trigger == "processor" and (
        status is not _PENDING or task.next_retry_at is None or task.next_retry_at > now
    ):
        raise TaskBusyError(task.task_id, reason="it is not due")
    number = task.retry_count + 1
    attempt = Attempt.trusted(
        {
            "number": number,
            "started_at": now,
            "finished_at": None,
            "outcome": AttemptOutcome.RUNNING,
            "error": None,
            "error_type": None,
            "worker": owner,
            "trigger": trigger,
        }
    )
    return task.evolve(
        status=_RETRYING,
        retry_count=number,
        # an operator's retry of an exhausted task is one more retry, as replay gives
        max_retries=max(task.max_retries, number),
        total_attempts=task.total_attempts + 1,
        lease_owner=owner,
        lease_expires_at=_lease_end(now, lease_seconds),
        attempts=[*attempts, attempt][-attempts_kept:],
        updated_at=now,
    )


def _lease_end(now: datetime, lease_seconds: float) -> datetime:
    """When a lease taken at ``now`` runs out (at the latest, the end of the calendar)."""
    try:
        return now + timedelta(seconds=lease_seconds)
    except OverflowError:
        return _END_OF_TIME


def expire(task: FailedTask, *, now: datetime) -> FailedTask:
    """A retrying task whose worker vanished and that has no retry left: exhausted."""
    if task.status is not _RETRYING or task.lease_active(now):
        raise TaskBusyError(task.task_id, task.lease_owner)
    return task.evolve(
        status=_EXHAUSTED,
        next_retry_at=None,
        lease_owner=None,
        lease_expires_at=None,
        attempts=_close_running(task.attempts, task.lease_expires_at or now, AttemptOutcome.LOST),
        last_error="attempt lost: its worker stopped renewing the lease",
        last_error_type="LeaseExpired",
        updated_at=now,
    )


def _check_owner(task: FailedTask, owner: str) -> None:
    if task.status is not _RETRYING or task.lease_owner != owner:
        raise TaskBusyError(
            task.task_id,
            task.lease_owner,
            reason=f"the lease of {owner} was lost (now {task.status.value}, "
            f"held by {task.lease_owner or 'nobody'})",
        )


def renew(task: FailedTask, *, now: datetime, owner: str, lease_seconds: float) -> FailedTask:
    """Extend the lease of a long attempt; refused when the lease was lost."""
    _check_owner(task, owner)
    return task.evolve(lease_expires_at=_lease_end(now, lease_seconds), updated_at=now)


def hand_off(
    task: FailedTask, *, now: datetime, owner: str, token: str, wait_seconds: float
) -> FailedTask:
    """The attempt ``owner`` holds was sent to an engine: it stays running, its lease
    passed to ``token`` for ``wait_seconds``, until the engine reports how it ended
    (:func:`finish` with ``owner=token``) or the lease runs out (a lost attempt)."""
    _check_owner(task, owner)
    return task.evolve(
        lease_owner=token, lease_expires_at=_lease_end(now, wait_seconds), updated_at=now
    )


def finish(
    task: FailedTask,
    *,
    now: datetime,
    owner: str,
    outcome: AttemptOutcome,
    error: str | None = None,
    error_type: str | None = None,
    decision: RetryDecision | None = None,
    defer_until: datetime | None = None,
) -> FailedTask:
    """Record how the attempt ``owner`` holds ended, and what happens next.

    SUCCESS completes the task; FAILURE and TIMEOUT apply ``decision`` (retry
    later, wait for an operator, or exhausted); DEFERRED (``RetryAfter``) gives
    the retry back and waits until ``defer_until``.
    """
    _check_owner(task, owner)
    update: dict[str, Any] = {
        "lease_owner": None,
        "lease_expires_at": None,
        "attempts": _close_running(task.attempts, now, outcome, error, error_type),
        "updated_at": now,
    }
    if outcome is AttemptOutcome.SUCCESS:
        update.update(status=_COMPLETED, next_retry_at=None, completed_at=now)
    elif outcome is AttemptOutcome.DEFERRED:
        update.update(
            status=_PENDING,
            next_retry_at=defer_until or now,
            retry_count=max(0, task.retry_count - 1),
        )
    else:
        if decision is None:
            raise ValueError("a failed attempt needs the policy's decision")
        update.update(schedule(decision), last_error=error, last_error_type=error_type)
    return task.evolve(**update)


def release(task: FailedTask, *, now: datetime, owner: str) -> FailedTask:
    """Give an attempt back unfinished (the processor is stopping): due again at once."""
    _check_owner(task, owner)
    return task.evolve(
        status=_PENDING,
        next_retry_at=now,
        retry_count=max(0, task.retry_count - 1),
        lease_owner=None,
        lease_expires_at=None,
        attempts=_close_running(task.attempts, now, AttemptOutcome.CANCELLED),
        updated_at=now,
    )


def archive(task: FailedTask, *, now: datetime) -> FailedTask:
    """Set a task aside for audit; a task being retried right now is refused."""
    if task.status is _RETRYING and task.lease_active(now):
        raise TaskBusyError(task.task_id, task.lease_owner)
    if task.status is _ARCHIVED:
        return task
    return task.evolve(
        status=_ARCHIVED,
        next_retry_at=None,
        lease_owner=None,
        lease_expires_at=None,
        attempts=_close_running(task.attempts, task.lease_expires_at or now, AttemptOutcome.LOST),
        archived_at=now,
        updated_at=now,
    )


def make_due(task: FailedTask, *, now: datetime) -> FailedTask:
    """Replay: due at once. An exhausted task gets one more retry."""
    if task.status is _RETRYING and task.lease_active(now):
        raise TaskBusyError(task.task_id, task.lease_owner)
    if task.status in (_COMPLETED, _ARCHIVED):
        raise TaskBusyError(
            task.task_id, reason=f"it is {task.status.value}; replay takes open tasks only"
        )
    return task.evolve(
        status=_PENDING,
        next_retry_at=now,
        max_retries=max(task.max_retries, task.retry_count + 1),
        attempts=_close_running(task.attempts, task.lease_expires_at or now, AttemptOutcome.LOST),
        lease_owner=None,
        lease_expires_at=None,
        updated_at=now,
    )
