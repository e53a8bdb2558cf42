"""What a job does to one task, and how each item's outcome is counted.

Every change a job makes to a task is a compare-and-set mutation that first
checks two things against the stored record:

* **the snapshot** — a job acts on the tasks that matched when it started. A task
  whose first failure, or a failed attempt, came after ``snapshot_at`` failed
  after the job started: it is skipped, not swept in. So is a task that no
  longer matches the job's filter (an operator archived it meanwhile, say).
* **the marker** — the change stamps ``last_job_id`` with the job's id. A page
  acted on by a runner that died before recording its progress is acted on again
  by the runner that takes the job over; the marker tells it the item was done
  already, so no task is replayed, archived or retried twice by one job.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from mahavishnu_dlq import lifecycle
from mahavishnu_dlq.errors import DLQError, StoreUnavailableError, TaskBusyError, TaskNotFoundError
from mahavishnu_dlq.jobs.model import FAILURES_KEPT, Job, JobFailure, JobKind
from mahavishnu_dlq.models import AttemptOutcome, FailedTask

__all__ = ["DoneEarlier", "Tally", "changed_since", "mutation", "refusal"]


class DoneEarlier(DLQError):  # noqa: N818 - an outcome (done before), not a failure
    """This job acted on the task before (a page repeated after a takeover)."""

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        super().__init__(f"task {task_id!r}: done by this job before")


def changed_since(task: FailedTask, snapshot_at: datetime) -> str | None:
    """Why ``task`` falls outside a snapshot taken at ``snapshot_at``, or None."""
    if task.failed_at > snapshot_at:
        return "it failed after the job started"
    for attempt in reversed(task.attempts):
        finished = attempt.finished_at
        if (
            finished is not None
            and finished > snapshot_at
            and attempt.outcome is not AttemptOutcome.SUCCESS
        ):
            return "it failed again after the job started"
    return None


def refusal(job: Job, task: FailedTask) -> DLQError | None:
    """The error that keeps ``job`` from acting on ``task``, or None when it may.

    :class:`DoneEarlier` when the marker says this job did it already.
    """
    if task.last_job_id == job.job_id:
        return DoneEarlier(task.task_id)
    why = changed_since(task, job.snapshot_at)
    if why is None and not job.selection().matches(task):
        why = f"it no longer matches the job's filter (it is {task.status.value})"
    return None if why is None else TaskBusyError(task.task_id, reason=why)


def mutation(
    job: Job, now: datetime, change: Callable[[FailedTask], FailedTask]
) -> Callable[[FailedTask | None], FailedTask]:
    """The mutation that applies ``change`` to a task for ``job``, checked and marked."""

    def apply(current: FailedTask | None) -> FailedTask:
        if current is None:
            raise TaskNotFoundError("?")
        refused = refusal(job, current)
        if refused is not None:
            raise refused
        return change(current).evolve(last_job_id=job.job_id, updated_at=now)

    return apply


def change_of(kind: JobKind, now: datetime) -> Callable[[FailedTask], FailedTask]:
    """The state-machine transition a replay or archive job applies."""
    if kind is JobKind.REPLAY:
        return lambda task: lifecycle.make_due(task, now=now)
    if kind is JobKind.ARCHIVE:
        return lambda task: lifecycle.archive(task, now=now)
    raise ValueError(f"a {kind.value} job does not change tasks by one mutation")


@dataclass
class Tally:
    """The outcomes of one page's items, added to the job when the page is recorded."""

    done: int = 0
    skipped: int = 0
    failed: int = 0
    failures: list[JobFailure] = field(default_factory=list)

    def ok(self) -> None:
        self.done += 1

    def skip(self, task_id: str, why: str) -> None:
        self.skipped += 1
        self._keep(task_id, why, "skipped")

    def fail(self, task_id: str, why: str) -> None:
        self.failed += 1
        self._keep(task_id, why, "failed")

    def _keep(self, task_id: str, why: str, outcome: str) -> None:
        if len(self.failures) < FAILURES_KEPT:
            self.failures.append(JobFailure(task_id=task_id, error=why[:2000], outcome=outcome))

    def count(self, task_id: str, result: object) -> None:
        """Count one item from what the store handed back for it (a record or an error).

        A store that could not be reached is not an item's fault: it propagates, and
        the page is done again later (the marker keeps that from repeating items)."""
        if isinstance(result, FailedTask | DoneEarlier):
            self.ok()
        elif isinstance(result, StoreUnavailableError):
            raise result
        elif isinstance(result, TaskNotFoundError):
            self.skip(task_id, "it was deleted")
        elif isinstance(result, DLQError):
            self.skip(task_id, _reason(result))
        elif isinstance(result, Exception):
            self.fail(task_id, f"{type(result).__name__}: {result}")

    @property
    def total(self) -> int:
        return self.done + self.skipped + self.failed


def _reason(exc: DLQError) -> str:
    """An item's skip reason without the ``task 'id':`` prefix the errors carry."""
    text = str(exc)
    task_id = getattr(exc, "task_id", None)
    prefix = f"task {task_id!r}: "
    return text[len(prefix) :] if task_id is not None and text.startswith(prefix) else text
