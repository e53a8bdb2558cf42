"""Bulk jobs as data: what a job is, its states, its counts and its report.

A :class:`Job` is a stored record, kept by the store beside the tasks
(:class:`~mahavishnu_dlq.storage.base.JobStore`). It says what to do (``kind``),
to which tasks (``filter``, resolved when the job is made: the kind's default
statuses, the purge cut-off), how fast (``rate``), and where it got to
(``cursor``, the counts, the first failures). Like a task it is immutable and
changed by compare-and-set, and like a task it is leased to one runner at a time.

The persisted format is the JSON of the model (``model_dump(mode="json")``):
changing field names is a migration.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mahavishnu_dlq.models import DeadLetterStatus, TaskFilter
from mahavishnu_dlq.states import JobKind, JobState

__all__ = [
    "FAILURES_KEPT",
    "FINAL_JOB_STATES",
    "Job",
    "JobFailure",
    "JobKind",
    "JobState",
    "TaskSummary",
]

#: Per-item failures a job keeps (the first ones); beyond, only the count grows.
FAILURES_KEPT = 1000


#: States a job never leaves.
FINAL_JOB_STATES = frozenset({JobState.DONE, JobState.CANCELLED, JobState.FAILED})

_DEFAULT_STATUSES: dict[JobKind, tuple[DeadLetterStatus, ...]] = {
    JobKind.REPLAY: (
        DeadLetterStatus.PENDING,
        DeadLetterStatus.EXHAUSTED,
        DeadLetterStatus.RETRYING,
    ),
    JobKind.RETRY: (
        DeadLetterStatus.PENDING,
        DeadLetterStatus.EXHAUSTED,
        DeadLetterStatus.RETRYING,
    ),
    JobKind.ARCHIVE: (
        DeadLetterStatus.PENDING,
        DeadLetterStatus.EXHAUSTED,
        DeadLetterStatus.RETRYING,
    ),
    JobKind.PURGE: (DeadLetterStatus.COMPLETED, DeadLetterStatus.ARCHIVED),
}


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware (UTC)")
    return value.astimezone(timezone.utc)


class JobFailure(BaseModel):
    """One task a job could not act on, and why."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    task_id: str
    error: str
    #: "failed" (the action failed: a retry's handler raised, the store refused it)
    #: or "skipped" (the task's state refused it: busy, gone, changed since the start)
    outcome: Literal["failed", "skipped"] = "failed"


class TaskSummary(BaseModel):
    """What a filter selects, counted by the store (aggregations, not iteration)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    total: int = 0
    by_status: dict[str, int] = Field(default_factory=dict)
    by_category: dict[str, int] = Field(default_factory=dict)
    by_workflow: dict[str, int] = Field(default_factory=dict)
    #: the first ids in listing order (newest failure first)
    sample: list[str] = Field(default_factory=list)

    @classmethod
    def of(
        cls,
        by_status: dict[str, int],
        by_category: dict[str, int],
        by_workflow: dict[str, int],
        sample: list[str],
    ) -> TaskSummary:
        """A summary of these counts (every match has one status: they sum to the total)."""
        return cls(
            total=sum(by_status.values()),
            by_status=by_status,
            by_category=by_category,
            by_workflow=by_workflow,
            sample=sample,
        )


class Job(BaseModel):
    """A bulk operation on the tasks a filter selected when it started."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    job_id: str = Field(min_length=1, max_length=128)
    kind: JobKind
    #: the selection, resolved when the job was made (default statuses filled in,
    #: ``older_than`` turned into ``updated_before``)
    filter: TaskFilter = Field(default_factory=TaskFilter)
    #: purge: tasks last updated longer ago than this (as asked; see ``filter``)
    older_than_seconds: float | None = Field(default=None, ge=0)
    rate: float | None = Field(default=None, gt=0, description="tasks per second at most")
    dry_run: bool = False
    state: JobState = JobState.QUEUED
    created_by: str = ""
    created_at: datetime
    updated_at: datetime
    #: the snapshot: tasks that failed after this time are not acted on
    snapshot_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None

    #: the store's listing cursor after the page in ``in_flight`` (None before the
    #: first page was listed)
    cursor: str | None = None
    #: the ids of the page being worked on, announced before it is acted on: a runner
    #: that takes the job over acts on these first (by id), then reads on from ``cursor``
    in_flight: list[str] = Field(default_factory=list)
    #: the listing has no page after ``in_flight``
    listed_all: bool = False
    pages: int = Field(default=0, ge=0)
    matched: int = Field(default=0, ge=0, description="tasks selected when the job started")
    done: int = Field(default=0, ge=0)
    skipped: int = Field(default=0, ge=0)
    failed: int = Field(default=0, ge=0)
    #: the first :data:`FAILURES_KEPT` failed or skipped items (``failed`` and
    #: ``skipped`` keep counting beyond)
    failures: list[JobFailure] = Field(default_factory=list)
    summary: TaskSummary | None = None
    #: why the job failed (state ``failed``)
    error: str | None = None

    runner: str | None = None
    lease_expires_at: datetime | None = None
    #: how often a runner took the job (more than 1: it was resumed or taken over)
    runs: int = Field(default=0, ge=0)

    @field_validator("filter", mode="before")
    @classmethod
    def _stored_filter(cls, value: Any) -> Any:
        """A stored job's filter has its times as ISO 8601 text (its JSON form); a
        :class:`TaskFilter` takes only datetimes from callers, so they are parsed here."""
        if not isinstance(value, dict):
            return value
        parsed = dict(value)
        for name in ("since", "until", "updated_before"):
            if isinstance(parsed.get(name), str):
                try:
                    parsed[name] = datetime.fromisoformat(parsed[name])
                except ValueError:
                    raise ValueError(f"filter.{name}: not an ISO 8601 time") from None
        return parsed

    @field_validator(
        "created_at",
        "updated_at",
        "snapshot_at",
        "started_at",
        "finished_at",
        "lease_expires_at",
    )
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        return _utc(value)

    # -- derived ---------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        """True once the job is done, cancelled or failed."""
        return self.state in FINAL_JOB_STATES

    @property
    def processed(self) -> int:
        """Items acted on so far, whatever the outcome."""
        return self.done + self.skipped + self.failed

    def lease_active(self, now: datetime) -> bool:
        """True while a runner holds an unexpired lease on this job."""
        return (
            self.state is JobState.RUNNING
            and self.lease_expires_at is not None
            and self.lease_expires_at > now
        )

    def lease_held(self, now: datetime) -> bool:
        """True while a runner holds an unexpired lease (in any state: a paused or
        cancelled job's runner records its last page before letting go)."""
        return (
            self.runner is not None
            and self.lease_expires_at is not None
            and self.lease_expires_at > now
        )

    def claimable(self, now: datetime) -> bool:
        """Queued, or running under a lease that ran out (its runner is presumed dead)."""
        return self.state is JobState.QUEUED or (
            self.state is JobState.RUNNING and not self.lease_active(now)
        )

    def selection(self) -> TaskFilter:
        """The filter a runner pages through: the job's filter, bounded by the snapshot
        (tasks whose first failure came after ``snapshot_at`` are not swept in)."""
        bound = self.snapshot_at + timedelta(microseconds=1)  # failed_at <= snapshot_at
        until = self.filter.until
        return self.filter.model_copy(
            update={"until": bound if until is None or until > bound else until}
        )

    def evolve(self, **changes: Any) -> Job:
        """A copy with ``changes`` applied (validated)."""
        return Job.model_validate({**self.__dict__, **changes})

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible dict (what stores persist and ``--json`` prints)."""
        return self.model_dump(mode="json")

    @staticmethod
    def default_statuses(kind: JobKind) -> tuple[DeadLetterStatus, ...]:
        """The statuses a job of ``kind`` selects when its filter names none."""
        return _DEFAULT_STATUSES[kind]
