"""The retry policy's oracle, up to the end of the calendar: when a task that failed,
or asked for a delay, is due again — or why it is exhausted instead (its retries spent,
its deadline passed, or its retry falling after the year 9999). The tasks it judges have
the immediate policy without jitter; their workflow may have a deadline.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from mahavishnu_dlq import AttemptOutcome, DeadLetterQueue, DeadLetterStatus, FailedTask
from mahavishnu_dlq.policy import MAX_SECONDS
from tests.hostile.checks import EXHAUSTED, PENDING


def later(when: datetime, seconds: float) -> datetime | None:
    """``when`` plus ``seconds``, or None past the end of the calendar (the year 9999)."""
    try:
        return when + timedelta(seconds=seconds)
    except OverflowError:
        return None


def deadline_of(dlq: DeadLetterQueue, record: FailedTask) -> float | None:
    """The deadline (seconds after the first failure) of ``record``'s policy."""
    return dlq.policies.resolve(
        workflow=record.workflow,
        category=record.error_category,
        policy=record.retry_policy,
        max_retries=record.max_retries,
    ).deadline


def expected_schedule(
    record: FailedTask, deadline: float | None, hint: float | None
) -> tuple[DeadLetterStatus, datetime | None]:
    """Status and next retry of ``record`` (immediate policy, no jitter) right after a
    failure at ``record.updated_at`` that asked for a delay of ``hint`` seconds.

    Exhausted when its retries are spent, when its ``deadline`` has passed, or when the
    retry would fall after the deadline or after the year 9999 (a deadline that falls
    after it is none). Otherwise the retry is due after the hint (at most a century),
    or at once after the first failure and a second after any later one.
    """
    if record.retry_count >= record.max_retries:
        return EXHAUSTED, None
    now = record.updated_at
    deadline_at = None if deadline is None else later(record.failed_at, deadline)
    if deadline_at is not None and now >= deadline_at:
        return EXHAUSTED, None
    scheduled = 0.0 if record.retry_count == 0 else 1.0  # immediate: at once, then 1 s
    due = later(now, scheduled if hint is None else min(hint, MAX_SECONDS))
    if due is None or (deadline_at is not None and due > deadline_at):
        return EXHAUSTED, None
    return PENDING, due


def check_deferred(
    seconds: float, before: FailedTask, after: FailedTask, deadline: float | None
) -> str | None:
    """A deferral gives the retry back and waits as long as asked, at most a century;
    one that would end after the deadline or after the year 9999 gives up instead, saying
    why (a deadline that falls after the year 9999 is none). Returns that error text."""
    last = after.attempts[-1]
    wait = min(seconds, MAX_SECONDS)
    until = later(after.updated_at, wait)
    deadline_at = None if deadline is None else later(after.failed_at, deadline)
    if until is not None and (deadline_at is None or until <= deadline_at):
        assert (after.status, last.outcome) == (PENDING, AttemptOutcome.DEFERRED)
        assert after.retry_count == before.retry_count
        assert after.next_retry_at == until
        return None
    why = (
        "the retry would fall after the year 9999"
        if until is None
        else f"deadline ({deadline:g}s) passed"
    )
    error = f"RetryAfter({wait:g}s): {why}"
    assert (after.status, after.next_retry_at) == (EXHAUSTED, None)
    assert (after.last_error, after.last_error_type) == (error, "RetryAfter")
    assert (last.outcome, last.error, last.error_type) == (
        AttemptOutcome.FAILURE,
        error,
        "RetryAfter",
    )
    assert after.retry_count == before.retry_count + 1
    return error
