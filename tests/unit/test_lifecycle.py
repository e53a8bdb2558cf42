"""The state machine as pure functions: every transition, every refusal, the invariants."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mahavishnu_dlq import lifecycle
from mahavishnu_dlq.errors import TaskBusyError
from mahavishnu_dlq.models import (
    Attempt,
    AttemptOutcome,
    DeadLetterStatus,
    FailedTask,
    RetryPolicy,
)
from mahavishnu_dlq.policy import (
    PolicyParams,
    RetryAction,
    RetryDecision,
    RetryState,
    decide,
)
from mahavishnu_dlq.testing import make_task

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
LEASE = 30.0

PENDING = DeadLetterStatus.PENDING
RETRYING = DeadLetterStatus.RETRYING
EXHAUSTED = DeadLetterStatus.EXHAUSTED
COMPLETED = DeadLetterStatus.COMPLETED
ARCHIVED = DeadLetterStatus.ARCHIVED


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def retry_at(when: datetime) -> RetryDecision:
    return RetryDecision(RetryAction.RETRY, when, (when - T0).total_seconds(), "scheduled")


MANUAL = RetryDecision(RetryAction.MANUAL, None, None, "never: manual retry only")
EXHAUST = RetryDecision(RetryAction.EXHAUST, None, None, "max_retries (3) reached")


def claim(
    task: FailedTask,
    now: datetime = T0,
    *,
    owner: str = "w1",
    trigger: str = "processor",
    attempts_kept: int = 20,
) -> FailedTask:
    return lifecycle.claim(
        task,
        now=now,
        owner=owner,
        lease_seconds=LEASE,
        trigger=trigger,
        attempts_kept=attempts_kept,
    )


def claimed(**overrides: Any) -> FailedTask:
    """A task claimed by w1 at T0 (lease until T0 + 30 s)."""
    return claim(make_task(now=T0, **overrides))


# -- scheduled ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("decision", "status", "next_retry_at"),
    [
        (retry_at(at(60)), PENDING, at(60)),
        (MANUAL, PENDING, None),
        (EXHAUST, EXHAUSTED, None),
    ],
)
def test_scheduled_applies_the_first_decision(
    decision: RetryDecision, status: DeadLetterStatus, next_retry_at: datetime | None
) -> None:
    task = make_task(next_retry_at=None).evolve(**lifecycle.schedule(decision))
    assert task.status is status
    assert task.next_retry_at == next_retry_at
    assert task.retry_count == 0


# -- claim ----------------------------------------------------------------------------


def test_processor_claims_a_due_task() -> None:
    task = make_task(now=T0, next_retry_at=at(10), retry_count=1, total_attempts=2)
    new = claim(task, at(15), owner="worker-a")
    assert new.status is RETRYING
    assert new.retry_count == 2
    assert new.total_attempts == 3
    assert new.lease_owner == "worker-a"
    assert new.lease_expires_at == at(15 + LEASE)
    assert new.updated_at == at(15)
    assert new.next_retry_at == at(10)  # the schedule it was claimed for, unchanged
    assert new.attempts == [
        Attempt(
            number=2,
            started_at=at(15),
            outcome=AttemptOutcome.RUNNING,
            worker="worker-a",
            trigger="processor",
        )
    ]
    # pure: the input is untouched
    assert task.status is PENDING
    assert task.attempts == []


def test_claim_at_exactly_the_due_time_is_allowed() -> None:
    assert claim(make_task(next_retry_at=at(10)), at(10)).status is RETRYING


@pytest.mark.parametrize(
    "task",
    [
        make_task(next_retry_at=at(60)),  # not due yet
        make_task(next_retry_at=None),  # manual only (NEVER)
        make_task(status=EXHAUSTED, next_retry_at=None),
        make_task(status=EXHAUSTED, next_retry_at=at(0)),
    ],
    ids=["future", "manual-only", "exhausted", "exhausted-with-stale-schedule"],
)
def test_processor_refuses_tasks_that_are_not_due(task: FailedTask) -> None:
    with pytest.raises(TaskBusyError, match="not due") as info:
        claim(task, at(30))
    assert info.value.task_id == task.task_id


@pytest.mark.parametrize(
    "task",
    [
        make_task(next_retry_at=at(3600)),
        make_task(next_retry_at=None, retry_policy=RetryPolicy.NEVER),
        make_task(status=EXHAUSTED, next_retry_at=None, retry_count=3),
    ],
    ids=["future", "manual-only", "exhausted"],
)
def test_manual_claim_takes_pending_and_exhausted_tasks_at_any_time(task: FailedTask) -> None:
    new = claim(task, at(1), owner="ops/manual", trigger="manual")
    assert new.status is RETRYING
    assert new.retry_count == task.retry_count + 1
    assert new.lease_owner == "ops/manual"
    assert new.attempts[-1].trigger == "manual"
    assert new.attempts[-1].worker == "ops/manual"
    assert new.attempts[-1].number == task.retry_count + 1


@pytest.mark.parametrize("status", [COMPLETED, ARCHIVED])
@pytest.mark.parametrize("trigger", ["processor", "manual"])
def test_closed_tasks_cannot_be_claimed(status: DeadLetterStatus, trigger: str) -> None:
    task = make_task(status=status, next_retry_at=None)
    with pytest.raises(TaskBusyError, match=status.value):
        claim(task, at(1), trigger=trigger)


@pytest.mark.parametrize("trigger", ["processor", "manual"])
def test_a_task_with_a_running_lease_is_busy(trigger: str) -> None:
    task = claimed()
    with pytest.raises(TaskBusyError) as info:
        claim(task, at(LEASE - 1), owner="w2", trigger=trigger)
    assert info.value.owner == "w1"
    assert "w1" in str(info.value)


def test_an_expired_lease_may_be_claimed_and_the_lost_attempt_is_recorded() -> None:
    task = claimed()
    new = claim(task, at(LEASE), owner="w2")  # the lease ends exactly now: expired
    assert new.lease_owner == "w2"
    assert new.retry_count == 2
    assert new.total_attempts == 3
    lost, running = new.attempts
    assert lost.outcome is AttemptOutcome.LOST
    assert lost.finished_at == at(LEASE)  # when the lease ran out
    assert lost.worker == "w1"
    assert running.outcome is AttemptOutcome.RUNNING
    assert running.number == 2
    assert running.worker == "w2"


def test_claim_keeps_only_the_last_attempts() -> None:
    history = [
        Attempt(number=n, started_at=at(n), finished_at=at(n), outcome=AttemptOutcome.FAILURE)
        for n in range(1, 6)
    ]
    task = make_task(attempts=history, retry_count=5, max_retries=10)
    new = claim(task, at(10), attempts_kept=3)
    assert [a.number for a in new.attempts] == [4, 5, 6]
    assert new.attempts[-1].outcome is AttemptOutcome.RUNNING


# -- finish ---------------------------------------------------------------------------


def test_success_completes_the_task() -> None:
    new = lifecycle.finish(claimed(), now=at(5), owner="w1", outcome=AttemptOutcome.SUCCESS)
    assert new.status is COMPLETED
    assert new.completed_at == at(5)
    assert new.updated_at == at(5)
    assert new.next_retry_at is None
    assert new.lease_owner is None
    assert new.lease_expires_at is None
    assert new.retry_count == 1  # the successful retry still counts
    (attempt,) = new.attempts
    assert attempt.outcome is AttemptOutcome.SUCCESS
    assert attempt.finished_at == at(5)
    assert attempt.error is None


@pytest.mark.parametrize("outcome", [AttemptOutcome.FAILURE, AttemptOutcome.TIMEOUT])
def test_failure_with_retries_left_is_rescheduled(outcome: AttemptOutcome) -> None:
    new = lifecycle.finish(
        claimed(),
        now=at(5),
        owner="w1",
        outcome=outcome,
        error="connection refused",
        error_type="ConnectionRefusedError",
        decision=retry_at(at(125)),
    )
    assert new.status is PENDING
    assert new.next_retry_at == at(125)
    assert new.retry_count == 1
    assert new.last_error == "connection refused"
    assert new.last_error_type == "ConnectionRefusedError"
    assert new.error == "connection reset by peer"  # the first failure is kept
    assert new.lease_owner is None
    assert new.lease_expires_at is None
    assert new.completed_at is None
    (attempt,) = new.attempts
    assert attempt.outcome is outcome
    assert attempt.error == "connection refused"
    assert attempt.error_type == "ConnectionRefusedError"
    assert attempt.finished_at == at(5)


def test_failure_of_a_never_task_waits_for_an_operator() -> None:
    new = lifecycle.finish(
        claimed(),
        now=at(5),
        owner="w1",
        outcome=AttemptOutcome.FAILURE,
        error="bad",
        error_type="ValueError",
        decision=MANUAL,
    )
    assert new.status is PENDING
    assert new.next_retry_at is None


def test_failure_without_retries_left_is_exhausted() -> None:
    new = lifecycle.finish(
        claimed(retry_count=2, max_retries=3),
        now=at(5),
        owner="w1",
        outcome=AttemptOutcome.FAILURE,
        error="still down",
        error_type="ConnectionError",
        decision=EXHAUST,
    )
    assert new.status is EXHAUSTED
    assert new.next_retry_at is None
    assert new.retry_count == 3
    assert new.attempts[-1].outcome is AttemptOutcome.FAILURE


def test_a_failure_needs_a_decision() -> None:
    with pytest.raises(ValueError, match="decision"):
        lifecycle.finish(claimed(), now=at(5), owner="w1", outcome=AttemptOutcome.FAILURE)


def test_a_long_error_is_cut_in_the_history() -> None:
    new = lifecycle.finish(
        claimed(),
        now=at(5),
        owner="w1",
        outcome=AttemptOutcome.FAILURE,
        error="x" * 5000,
        error_type="RuntimeError",
        decision=MANUAL,
    )
    assert new.attempts[-1].error == "x" * 2000


def test_deferred_gives_the_retry_back_and_waits() -> None:
    task = claimed(retry_count=1, total_attempts=2)
    assert task.retry_count == 2
    new = lifecycle.finish(
        task, now=at(5), owner="w1", outcome=AttemptOutcome.DEFERRED, defer_until=at(95)
    )
    assert new.status is PENDING
    assert new.retry_count == 1
    assert new.total_attempts == 3  # it did run
    assert new.next_retry_at == at(95)
    assert new.attempts[-1].outcome is AttemptOutcome.DEFERRED
    assert new.lease_owner is None


def test_deferred_without_a_time_is_due_at_once() -> None:
    new = lifecycle.finish(claimed(), now=at(5), owner="w1", outcome=AttemptOutcome.DEFERRED)
    assert new.next_retry_at == at(5)
    assert new.retry_count == 0


@pytest.mark.parametrize(
    "task",
    [
        claimed(),  # held by w1, not by w2
        make_task(),  # not being retried at all
        make_task(status=COMPLETED, next_retry_at=None),
    ],
    ids=["other-owner", "pending", "completed"],
)
def test_only_the_lease_owner_may_finish_release_or_renew(task: FailedTask) -> None:
    with pytest.raises(TaskBusyError, match="lease of w2 was lost"):
        lifecycle.finish(task, now=at(1), owner="w2", outcome=AttemptOutcome.SUCCESS)
    with pytest.raises(TaskBusyError):
        lifecycle.release(task, now=at(1), owner="w2")
    with pytest.raises(TaskBusyError):
        lifecycle.renew(task, now=at(1), owner="w2", lease_seconds=LEASE)


def test_the_owner_may_finish_even_after_its_lease_ran_out() -> None:
    # nobody else claimed it meanwhile, so the result is still good
    new = lifecycle.finish(claimed(), now=at(LEASE * 3), owner="w1", outcome=AttemptOutcome.SUCCESS)
    assert new.status is COMPLETED


# -- release, renew, expire -----------------------------------------------------------


def test_release_returns_the_task_due_now_and_refunds_the_retry() -> None:
    new = lifecycle.release(claimed(), now=at(7), owner="w1")
    assert new.status is PENDING
    assert new.next_retry_at == at(7)
    assert new.retry_count == 0
    assert new.total_attempts == 2
    assert new.lease_owner is None
    assert new.lease_expires_at is None
    assert new.updated_at == at(7)
    (attempt,) = new.attempts
    assert attempt.outcome is AttemptOutcome.CANCELLED
    assert attempt.finished_at == at(7)


def test_renew_extends_the_lease() -> None:
    new = lifecycle.renew(claimed(), now=at(20), owner="w1", lease_seconds=LEASE)
    assert new.lease_expires_at == at(20 + LEASE)
    assert new.status is RETRYING
    assert new.lease_owner == "w1"
    assert new.updated_at == at(20)
    assert new.attempts[-1].outcome is AttemptOutcome.RUNNING


def test_expire_exhausts_a_stranded_attempt() -> None:
    task = claimed(retry_count=2, max_retries=3)
    new = lifecycle.expire(task, now=at(LEASE + 1))
    assert new.status is EXHAUSTED
    assert new.next_retry_at is None
    assert new.lease_owner is None
    assert new.lease_expires_at is None
    assert new.last_error_type == "LeaseExpired"
    assert new.last_error is not None
    assert "lease" in new.last_error
    assert new.attempts[-1].outcome is AttemptOutcome.LOST
    assert new.attempts[-1].finished_at == at(LEASE)
    assert new.updated_at == at(LEASE + 1)


@pytest.mark.parametrize("task", [claimed(), make_task()], ids=["lease-running", "not-retrying"])
def test_expire_refuses_live_or_idle_tasks(task: FailedTask) -> None:
    with pytest.raises(TaskBusyError):
        lifecycle.expire(task, now=at(1))


# -- archive --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "task",
    [
        make_task(),
        make_task(status=EXHAUSTED, next_retry_at=None),
        make_task(status=COMPLETED, next_retry_at=None, completed_at=T0),
    ],
    ids=["pending", "exhausted", "completed"],
)
def test_archive(task: FailedTask) -> None:
    new = lifecycle.archive(task, now=at(9))
    assert new.status is ARCHIVED
    assert new.archived_at == at(9)
    assert new.updated_at == at(9)
    assert new.next_retry_at is None
    assert new.completed_at == task.completed_at


def test_archive_is_idempotent() -> None:
    once = lifecycle.archive(make_task(), now=at(9))
    twice = lifecycle.archive(once, now=at(50))
    assert twice == once
    assert twice.archived_at == at(9)


def test_archive_refuses_a_task_being_retried() -> None:
    with pytest.raises(TaskBusyError):
        lifecycle.archive(claimed(), now=at(1))


def test_archive_of_a_stranded_attempt_closes_it_as_lost() -> None:
    new = lifecycle.archive(claimed(), now=at(LEASE + 5))
    assert new.status is ARCHIVED
    assert new.lease_owner is None
    assert new.lease_expires_at is None
    assert new.attempts[-1].outcome is AttemptOutcome.LOST
    assert new.attempts[-1].finished_at == at(LEASE)


# -- make_due (replay) ----------------------------------------------------------------


def test_make_due_makes_a_future_task_due_now() -> None:
    new = lifecycle.make_due(make_task(next_retry_at=at(3600), max_retries=3), now=at(2))
    assert new.status is PENDING
    assert new.next_retry_at == at(2)
    assert new.max_retries == 3
    assert new.updated_at == at(2)


def test_make_due_gives_an_exhausted_task_one_more_retry() -> None:
    task = make_task(status=EXHAUSTED, next_retry_at=None, retry_count=3, max_retries=3)
    new = lifecycle.make_due(task, now=at(2))
    assert new.status is PENDING
    assert new.next_retry_at == at(2)
    assert new.max_retries == 4
    assert new.retry_count == 3


def test_make_due_never_lowers_max_retries() -> None:
    # exhausted by a deadline with retries left on paper
    task = make_task(status=EXHAUSTED, next_retry_at=None, retry_count=1, max_retries=5)
    assert lifecycle.make_due(task, now=at(2)).max_retries == 5


def test_make_due_recovers_a_stranded_attempt() -> None:
    new = lifecycle.make_due(claimed(), now=at(LEASE + 1))
    assert new.status is PENDING
    assert new.lease_owner is None
    assert new.lease_expires_at is None
    assert new.attempts[-1].outcome is AttemptOutcome.LOST


@pytest.mark.parametrize(
    "task",
    [
        claimed(),
        make_task(status=COMPLETED, next_retry_at=None),
        make_task(status=ARCHIVED, next_retry_at=None),
    ],
    ids=["lease-running", "completed", "archived"],
)
def test_make_due_refuses(task: FailedTask) -> None:
    with pytest.raises(TaskBusyError):
        lifecycle.make_due(task, now=at(1))


# -- merge_failure (idempotent enqueue) -----------------------------------------------


def incoming(**overrides: Any) -> FailedTask:
    """A new failure for task-1, as enqueue builds it, one hour after T0."""
    fields: dict[str, Any] = {
        "now": at(3600),
        "task": {"n": 2},
        "repos": ["repo-b"],
        "error": "timeout talking to db",
        "error_type": "TimeoutError",
        "last_error": "timeout talking to db",
        "last_error_type": "TimeoutError",
        "metadata": {"user": "bob", "new": True},
        "next_retry_at": at(3660),
    }
    fields.update(overrides)
    return make_task(**fields)


def test_merge_into_nothing_is_the_incoming_record() -> None:
    new = incoming()
    assert lifecycle.merge_failure(None, new) is new


@pytest.mark.parametrize("status", [PENDING, RETRYING, EXHAUSTED])
def test_merge_into_an_open_record_keeps_schedule_counters_and_first_error(
    status: DeadLetterStatus,
) -> None:
    existing = make_task(
        now=T0,
        status=status,
        retry_count=2,
        total_attempts=3,
        next_retry_at=at(240),
        metadata={"user": "alice", "kept": 1},
        attempts=[Attempt(number=1, started_at=at(60), outcome=AttemptOutcome.FAILURE)],
        lease_owner="w1" if status is RETRYING else None,
        lease_expires_at=at(300) if status is RETRYING else None,
    )
    new = lifecycle.merge_failure(existing, incoming())
    # updated from the new delivery
    assert new.task == {"n": 2}
    assert new.repos == ["repo-b"]
    assert new.last_error == "timeout talking to db"
    assert new.last_error_type == "TimeoutError"
    assert new.metadata == {"user": "bob", "kept": 1, "new": True}
    assert new.updated_at == at(3600)
    # kept from the stored record
    assert new.status is status
    assert new.next_retry_at == at(240)
    assert new.retry_count == 2
    assert new.total_attempts == 3
    assert new.attempts == existing.attempts
    assert new.error == existing.error
    assert new.error_type == existing.error_type
    assert new.failed_at == T0
    assert new.created_at == T0
    assert new.lease_owner == existing.lease_owner


def test_merge_keeps_the_workflow_when_the_new_delivery_has_none() -> None:
    existing = make_task(workflow="ingest")
    assert lifecycle.merge_failure(existing, incoming(workflow="")).workflow == "ingest"
    assert lifecycle.merge_failure(existing, incoming(workflow="other")).workflow == "other"


@pytest.mark.parametrize("status", [COMPLETED, ARCHIVED])
def test_merge_into_a_closed_record_reopens_it_with_its_history(
    status: DeadLetterStatus,
) -> None:
    history = [
        Attempt(number=1, started_at=at(60), finished_at=at(61), outcome=AttemptOutcome.SUCCESS)
    ]
    existing = make_task(
        now=T0,
        status=status,
        next_retry_at=None,
        retry_count=1,
        total_attempts=2,
        attempts=history,
        completed_at=at(61) if status is COMPLETED else None,
        archived_at=at(100) if status is ARCHIVED else None,
    )
    new = lifecycle.merge_failure(existing, incoming())
    assert new.status is PENDING
    assert new.created_at == T0
    assert new.failed_at == at(3600)
    assert new.attempts == history
    assert new.total_attempts == 3
    assert new.retry_count == 0
    assert new.next_retry_at == at(3660)
    assert new.error == "timeout talking to db"
    assert new.completed_at is None
    assert new.archived_at is None


# -- invariants over any sequence of transitions -------------------------------------

_OPS = (
    "claim",
    "claim_manual",
    "claim_other",
    "succeed",
    "fail",
    "defer",
    "release",
    "renew",
    "expire",
    "archive",
    "make_due",
    "reenqueue",
)


def _step(task: FailedTask, op: str, now: datetime) -> FailedTask:
    owner = task.lease_owner or "w1"
    if op == "claim":
        return claim(task, now, attempts_kept=4)
    if op == "claim_manual":
        return claim(task, now, owner="ops", trigger="manual", attempts_kept=4)
    if op == "claim_other":
        return claim(task, now, owner="w2", attempts_kept=4)
    if op == "succeed":
        return lifecycle.finish(task, now=now, owner=owner, outcome=AttemptOutcome.SUCCESS)
    if op == "fail":
        params = PolicyParams(policy=task.retry_policy, max_retries=task.max_retries)
        state = RetryState(task.retry_count, task.failed_at, now)
        return lifecycle.finish(
            task,
            now=now,
            owner=owner,
            outcome=AttemptOutcome.FAILURE,
            error="boom",
            error_type="RuntimeError",
            decision=decide(params, state),
        )
    if op == "defer":
        return lifecycle.finish(
            task, now=now, owner=owner, outcome=AttemptOutcome.DEFERRED, defer_until=now
        )
    if op == "release":
        return lifecycle.release(task, now=now, owner=owner)
    if op == "renew":
        return lifecycle.renew(task, now=now, owner=owner, lease_seconds=LEASE)
    if op == "expire":
        return lifecycle.expire(task, now=now)
    if op == "archive":
        return lifecycle.archive(task, now=now)
    if op == "make_due":
        return lifecycle.make_due(task, now=now)
    fresh = make_task(now=now, next_retry_at=now, error="again", max_retries=task.max_retries)
    return lifecycle.merge_failure(task, fresh)


def _check_invariants(task: FailedTask) -> None:
    retrying = task.status is RETRYING
    assert (task.lease_owner is not None) is retrying
    assert (task.lease_expires_at is not None) is retrying
    running = [a for a in task.attempts if a.outcome is AttemptOutcome.RUNNING]
    assert len(running) == (1 if retrying else 0)
    if running:
        assert task.attempts[-1] is running[0]
    assert len(task.attempts) <= 4
    assert all(a.finished_at is not None for a in task.attempts if a not in running)
    assert task.retry_count >= 0
    assert task.total_attempts >= task.retry_count + 1
    if task.status is not PENDING:
        assert task.next_retry_at is None or retrying
    if task.status is COMPLETED:
        assert task.completed_at is not None
    assert (task.archived_at is not None) is (task.status is ARCHIVED)


@given(
    steps=st.lists(
        st.tuples(st.sampled_from(_OPS), st.integers(min_value=0, max_value=60)), max_size=40
    ),
    max_retries=st.integers(min_value=0, max_value=4),
)
def test_any_sequence_of_transitions_keeps_the_record_consistent(
    steps: list[tuple[str, int]], max_retries: int
) -> None:
    task = make_task(now=T0, max_retries=max_retries)
    now = T0
    for op, advance in steps:
        now += timedelta(seconds=advance)
        try:
            new = _step(task, op, now)
        except TaskBusyError:
            continue  # a refused transition changes nothing
        assert new.updated_at >= task.updated_at
        task = new
        _check_invariants(task)
