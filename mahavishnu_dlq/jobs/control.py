"""Making and steering bulk jobs: the queue's ``start_job`` … ``cancel_job``.

:class:`JobMethods` is the part of :class:`~mahavishnu_dlq.queue.DeadLetterQueue`
that callers use; each method is one compare-and-set on the stored job, so a
pause, resume or cancel from any process reaches the job's runner wherever it
runs (the runner sees it when it records its next page, at most about a second
of work later).

``start_job`` resolves the job's filter (the kind's default statuses, the purge
cut-off) and takes the snapshot there and then: the store counts what matches by
status, category and workflow (``summary``) and the job keeps that time as
``snapshot_at``. A dry run stops there: the job is stored already ``done``, with
the summary as its report, and nothing is changed.
"""

from __future__ import annotations

import getpass
import math
import os
import socket
import uuid
from collections.abc import Iterable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from mahavishnu_dlq.errors import JobNotFoundError, JobStateError
from mahavishnu_dlq.jobs.model import FINAL_JOB_STATES, Job, JobKind, JobState
from mahavishnu_dlq.limits import require_str
from mahavishnu_dlq.models import TaskFilter
from mahavishnu_dlq.printable import library_logger

if TYPE_CHECKING:
    from mahavishnu_dlq.queue import DeadLetterQueue

__all__ = ["JobMethods", "job_kind", "job_states"]

_log = library_logger("mahavishnu_dlq")
_SAMPLE = 20  # ids a summary shows


def job_kind(kind: JobKind | str) -> JobKind:
    """``kind`` as a :class:`JobKind`; ``ValueError`` naming the ones there are."""
    try:
        return JobKind(kind)
    except ValueError:
        allowed = ", ".join(k.value for k in JobKind)
        raise ValueError(f"kind: unknown job kind {kind!r}; allowed: {allowed}") from None


def job_states(state: JobState | str | Iterable[JobState | str] | None) -> set[JobState] | None:
    """``state`` (one or many) as a set of :class:`JobState`; ``ValueError`` naming a bad one."""
    if state is None:
        return None
    values = [state] if isinstance(state, (str, JobState)) else list(state)
    chosen = set()
    for value in values:
        try:
            chosen.add(JobState(value))
        except ValueError:
            allowed = ", ".join(s.value for s in JobState)
            raise ValueError(f"state: unknown job state {value!r}; allowed: {allowed}") from None
    return chosen


def creator() -> str:
    """``user@host`` of this process: who made a job, who forced a breaker."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container)
        user = str(os.getuid()) if hasattr(os, "getuid") else "?"
    return f"{user}@{socket.gethostname()}"


def _check_rate(rate: object) -> float | None:
    if rate is None:
        return None
    if isinstance(rate, bool) or not isinstance(rate, (int, float)):
        raise TypeError(f"rate must be a number of tasks per second, got {type(rate).__name__}")
    if not 0 < rate < math.inf:
        raise ValueError(f"rate must be > 0 and finite, got {rate}")
    return float(rate)


class JobMethods:
    """The job methods of :class:`~mahavishnu_dlq.queue.DeadLetterQueue`."""

    def _queue(self) -> DeadLetterQueue:
        return self  # type: ignore[return-value]  # mixed into DeadLetterQueue only

    async def start_job(
        self,
        kind: JobKind | str,
        filter: TaskFilter | None = None,
        *,
        rate: float | None = None,
        dry_run: bool = False,
        older_than: timedelta | None = None,
        created_by: str | None = None,
    ) -> Job:
        """Store a bulk job and return it; a retry processor sharing the store runs it.

        ``kind``: ``replay`` (make due now; the processors retry), ``retry`` (run the
        handler now, in the job's runner), ``archive`` or ``purge``. ``filter``
        selects the tasks (default statuses: open tasks, or completed and archived
        for a purge); ``older_than`` keeps a purge to tasks last updated that long
        ago. ``rate`` caps tasks per second. The job acts on what matched now (its
        snapshot): tasks that fail after this call are not swept in. A ``dry_run``
        changes nothing: the job is stored done, its ``summary`` saying what would
        be done.
        """
        dlq = self._queue()
        chosen = job_kind(kind)
        per_second = _check_rate(rate)
        if filter is not None and not isinstance(filter, TaskFilter):
            raise TypeError(f"filter must be a TaskFilter, got {type(filter).__name__}")
        if older_than is not None:
            if not isinstance(older_than, timedelta):
                raise TypeError(f"older_than must be a timedelta, got {type(older_than).__name__}")
            if older_than < timedelta(0):
                raise ValueError(f"older_than must not be negative, got {older_than}")
            if chosen is not JobKind.PURGE:
                raise ValueError("older_than selects what a purge deletes; use since/until")
        if not isinstance(dry_run, bool):
            raise TypeError(f"dry_run must be a bool, got {type(dry_run).__name__}")
        now = dlq.clock.now()
        flt = filter or TaskFilter()
        updates: dict[str, Any] = {}
        if flt.status is None:
            updates["status"] = Job.default_statuses(chosen)
        if older_than is not None:
            try:
                cutoff = now - older_than
            except OverflowError:
                raise ValueError(f"older_than is too long: {older_than}") from None
            before = flt.updated_before
            updates["updated_before"] = cutoff if before is None or before > cutoff else before
        flt = flt.model_copy(update=updates) if updates else flt
        job = Job(
            job_id=f"job-{uuid.uuid4().hex[:16]}",
            kind=chosen,
            filter=flt,
            older_than_seconds=None if older_than is None else older_than.total_seconds(),
            rate=per_second,
            dry_run=dry_run,
            created_by=require_str(created_by, "created_by") if created_by else creator(),
            created_at=now,
            updated_at=now,
            snapshot_at=now,
        )
        summary = await dlq.traced_store.summarize(job.selection(), sample=_SAMPLE)
        job = job.evolve(matched=summary.total, summary=summary)
        if dry_run:
            job = job.evolve(state=JobState.DONE, started_at=now, finished_at=now)
        job = await dlq.traced_store.jobs.create(job)
        _log.info(
            "dlq.job.created %s: %s of %d tasks%s by %s",
            job.job_id,
            chosen.value,
            job.matched,
            " (dry run)" if dry_run else "",
            job.created_by,
            extra={
                "action": "dlq.job.created",
                "job_id": job.job_id,
                "kind": chosen.value,
                "matched": job.matched,
                "dry_run": dry_run,
            },
        )
        if dry_run:
            await dlq.hooks.job_finished(job)
        elif dlq._wakeup is not None:
            dlq._wakeup()  # a processor of this process takes it at once
        return job

    async def get_job(self, job_id: str) -> Job:
        """The stored job; :class:`~mahavishnu_dlq.errors.JobNotFoundError` when unknown."""
        job_id = require_str(job_id, "job_id")
        job = await self._queue().traced_store.jobs.get(job_id)
        if job is None:
            raise JobNotFoundError(job_id)
        return job

    async def list_jobs(
        self,
        *,
        state: JobState | str | Iterable[JobState | str] | None = None,
        limit: int = 100,
    ) -> list[Job]:
        """Jobs (of ``state``: one or several), newest first."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ValueError(f"limit must be an int >= 0, got {limit!r}")
        return await self._queue().traced_store.jobs.list(states=job_states(state), limit=limit)

    async def pause_job(self, job_id: str) -> Job:
        """Stop a queued or running job at its next page boundary; :meth:`resume_job`
        continues it from there. Pausing a paused job changes nothing."""

        def pause(current: Job) -> Job:
            if current.state is JobState.PAUSED:
                return current
            if current.finished:
                raise JobStateError(current.job_id, f"it is {current.state.value}")
            return current.evolve(state=JobState.PAUSED, updated_at=self._queue().clock.now())

        return await self._steer(job_id, pause, "paused")

    async def resume_job(self, job_id: str) -> Job:
        """Let a paused job go on from its cursor (any processor takes it)."""

        def resume(current: Job) -> Job:
            if current.state in (JobState.QUEUED, JobState.RUNNING):
                return current
            if current.state is not JobState.PAUSED:
                raise JobStateError(current.job_id, f"it is {current.state.value}")
            now = self._queue().clock.now()
            if current.lease_held(now):
                # its runner has not reached the page boundary yet: it just goes on
                return current.evolve(state=JobState.RUNNING, updated_at=now)
            return current.evolve(
                state=JobState.QUEUED, runner=None, lease_expires_at=None, updated_at=now
            )

        job = await self._steer(job_id, resume, "resumed")
        dlq = self._queue()
        if job.state is JobState.QUEUED and dlq._wakeup is not None:
            dlq._wakeup()
        return job

    async def cancel_job(self, job_id: str) -> Job:
        """End a job for good. A running one stops at its next page boundary (what that
        page did is recorded); cancelling a finished job changes nothing."""

        def cancel(current: Job) -> Job:
            if current.state in FINAL_JOB_STATES:
                return current
            now = self._queue().clock.now()
            if current.lease_held(now):
                return current.evolve(state=JobState.CANCELLED, updated_at=now)
            return current.evolve(
                state=JobState.CANCELLED,
                runner=None,
                lease_expires_at=None,
                updated_at=now,
                finished_at=now,
            )

        job = await self._steer(job_id, cancel, "cancelled")
        if job.finished_at is not None and job.state is JobState.CANCELLED and job.runner is None:
            await self._queue().hooks.job_finished(job)
        return job

    async def _steer(self, job_id: str, fn: Any, verb: str) -> Job:
        job_id = require_str(job_id, "job_id")
        job: Job = await self._queue().traced_store.jobs.mutate(job_id, fn)
        _log.info(
            "dlq.job.%s %s (requested)",
            verb,
            job_id,
            extra={"action": f"dlq.job.{verb}", "job_id": job_id, "requested": True},
        )
        return job

    async def run_job(self, job_id: str) -> Job:
        """Run the job here, in the caller, as a runner like a processor's: leased, so
        another runner takes it over if this one dies. Returns when it is done,
        paused, cancelled or taken over. :class:`JobStateError` when another runner
        holds it or it is finished."""
        from mahavishnu_dlq.jobs.runner import JobRunner  # noqa: PLC0415 - a cycle otherwise

        runner = JobRunner(self._queue())
        job = await runner.claim(job_id)
        return await runner.run(job)
