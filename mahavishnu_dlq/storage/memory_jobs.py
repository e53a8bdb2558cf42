"""Bulk jobs kept in this process: the :class:`~mahavishnu_dlq.storage.base.JobStore`
of the memory store (and the reference the contract tests hold the others to)."""

from __future__ import annotations

import builtins
from collections.abc import Collection

from mahavishnu_dlq.errors import JobNotFoundError
from mahavishnu_dlq.jobs.model import Job, JobState
from mahavishnu_dlq.limits import require_str
from mahavishnu_dlq.storage.base import JobMutation

__all__ = ["MemoryJobStore", "check_job_result", "newest_first"]


def newest_first(jobs: Collection[Job], limit: int) -> builtins.list[Job]:
    """``jobs`` in listing order (newest ``created_at`` first, ties by id), ``limit`` of them."""
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    ordered = sorted(jobs, key=lambda job: job.job_id)
    ordered.sort(key=lambda job: job.created_at, reverse=True)
    return ordered[:limit]


def check_job_result(job_id: str, new: object) -> Job:
    """``new`` when it is a job with id ``job_id``; otherwise the mutation is a bug."""
    if not isinstance(new, Job):
        raise TypeError(f"a job mutation returned {type(new).__name__}, not a Job")
    if new.job_id != job_id:
        raise ValueError(f"a mutation of job {job_id!r} returned job {new.job_id!r}")
    return new


class MemoryJobStore:
    """Jobs in a dict. Jobs are immutable, so the stored ones are handed out as they are."""

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}

    async def create(self, job: Job) -> Job:
        if job.job_id in self._jobs:
            raise ValueError(f"a job with id {job.job_id!r} exists")
        self._jobs[job.job_id] = job
        return job

    async def get(self, job_id: str) -> Job | None:
        return self._jobs.get(require_str(job_id, "job_id"))

    async def mutate(self, job_id: str, fn: JobMutation) -> Job:
        current = self._jobs.get(require_str(job_id, "job_id"))
        if current is None:
            raise JobNotFoundError(job_id)
        new = check_job_result(job_id, fn(current))
        self._jobs[job_id] = new
        return new

    async def list(
        self, *, states: Collection[JobState] | None = None, limit: int = 100
    ) -> builtins.list[Job]:
        wanted = None if states is None else {JobState(state) for state in states}
        return newest_first(
            [job for job in self._jobs.values() if wanted is None or job.state in wanted], limit
        )

    async def delete(self, job_id: str) -> bool:
        return self._jobs.pop(require_str(job_id, "job_id"), None) is not None

    def clear(self) -> None:
        """Forget every job."""
        self._jobs.clear()
