"""Bulk jobs kept in this process: the :class:`~mahavishnu_dlq.storage.base.JobStore`
of the memory store (and the reference the contract tests hold the others to)."""

from __future__ import annotations

import builtins
import copy
import json
from collections.abc import Collection
from typing import Any, cast

from mahavishnu_dlq.errors import JobNotFoundError
from mahavishnu_dlq.jobs.model import Job, JobState
from mahavishnu_dlq.limits import require_str
from mahavishnu_dlq.storage.base import ControlMutation, JobMutation

__all__ = [
    "MemoryControlStore",
    "MemoryJobStore",
    "check_control",
    "check_job_result",
    "newest_first",
]


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


def check_control(key: str, new: object) -> dict[str, Any]:
    """``new`` when it is a JSON object (a plain dict whose JSON text reads back equal);
    otherwise the mutation of ``key`` is a bug."""
    if not isinstance(new, dict):
        raise TypeError(f"a mutation of control record {key!r} returned {type(new).__name__}")
    try:
        stored = json.loads(json.dumps(new, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"control record {key!r} is not JSON: {exc}") from None
    return cast("dict[str, Any]", stored)


class MemoryControlStore:
    """Control records in a dict; each kept as a JSON round trip, so no caller shares it."""

    def __init__(self) -> None:
        self._records: dict[str, dict[str, Any]] = {}

    async def get(self, key: str) -> dict[str, Any] | None:
        record = self._records.get(require_str(key, "key"))
        return None if record is None else copy.deepcopy(record)

    async def mutate(self, key: str, fn: ControlMutation) -> dict[str, Any]:
        key = require_str(key, "key")
        current = self._records.get(key)
        new = check_control(key, fn(None if current is None else copy.deepcopy(current)))
        self._records[key] = new
        return copy.deepcopy(new)

    async def list(self, prefix: str) -> builtins.list[tuple[str, dict[str, Any]]]:
        return [
            (key, copy.deepcopy(record))
            for key, record in sorted(self._records.items())
            if key.startswith(prefix)
        ]

    async def delete(self, key: str) -> bool:
        return self._records.pop(require_str(key, "key"), None) is not None
