"""The bulk jobs and control records of a failover store: its primary's, behind the
failover's breaker.

Jobs live on the primary only (see *Jobs* in :mod:`~mahavishnu_dlq.storage.failover`):
a job is long-lived state shared by every runner, which a per-process journal could
not merge back after an outage. :class:`PrimaryJobs` sends each call to the primary's
:class:`~mahavishnu_dlq.storage.base.JobStore` through
:meth:`FailoverStore._primary <mahavishnu_dlq.storage.failover.FailoverStore._primary>`:
bounded by the failover's ``timeout``, counted by its circuit breaker, and refused at
once with :class:`~mahavishnu_dlq.errors.StoreUnavailableError` while the circuit is
open — the job waits for the primary, the tasks meanwhile go on in the fallback.

:class:`PrimaryControls` does the same for the control records (circuit breakers and
rate limits shared by every process): they must be one record for all processes, so
a per-process fallback cannot stand in for them; while the primary is down their
callers get :class:`~mahavishnu_dlq.errors.StoreUnavailableError` and decide.
"""

from __future__ import annotations

import builtins
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from mahavishnu_dlq.jobs.model import Job, JobState
from mahavishnu_dlq.storage.base import ControlMutation, ControlStore, JobMutation, JobStore

if TYPE_CHECKING:
    from mahavishnu_dlq.storage.failover import FailoverStore

__all__ = ["PrimaryControls", "PrimaryJobs"]


class PrimaryJobs:
    """The primary's job store, each call through the failover store's timeout and breaker."""

    def __init__(self, store: FailoverStore) -> None:
        self._store = store

    def __repr__(self) -> str:
        return f"PrimaryJobs({self._jobs!r})"

    @property
    def _jobs(self) -> JobStore:
        return self._store.primary.jobs

    async def create(self, job: Job) -> Job:
        return await self._store._primary("create job", lambda: self._jobs.create(job))

    async def get(self, job_id: str) -> Job | None:
        return await self._store._primary("get job", lambda: self._jobs.get(job_id))

    async def mutate(self, job_id: str, fn: JobMutation) -> Job:
        return await self._store._primary("mutate job", lambda: self._jobs.mutate(job_id, fn))

    async def list(
        self, *, states: Collection[JobState] | None = None, limit: int = 100
    ) -> builtins.list[Job]:
        return await self._store._primary(
            "list jobs", lambda: self._jobs.list(states=states, limit=limit)
        )

    async def delete(self, job_id: str) -> bool:
        return await self._store._primary("delete job", lambda: self._jobs.delete(job_id))


class PrimaryControls:
    """The primary's control store, each call through the failover store's timeout and
    breaker."""

    def __init__(self, store: FailoverStore) -> None:
        self._store = store

    def __repr__(self) -> str:
        return f"PrimaryControls({self._controls!r})"

    @property
    def _controls(self) -> ControlStore:
        return self._store.primary.controls

    async def get(self, key: str) -> dict[str, Any] | None:
        return await self._store._primary("get control", lambda: self._controls.get(key))

    async def mutate(self, key: str, fn: ControlMutation) -> dict[str, Any]:
        return await self._store._primary("mutate control", lambda: self._controls.mutate(key, fn))

    async def list(self, prefix: str) -> builtins.list[tuple[str, dict[str, Any]]]:
        return await self._store._primary("list controls", lambda: self._controls.list(prefix))

    async def delete(self, key: str) -> bool:
        return await self._store._primary("delete control", lambda: self._controls.delete(key))
