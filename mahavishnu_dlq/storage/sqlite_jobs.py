"""The bulk jobs of a SQLite store: the ``jobs`` table of its file (schema version 2).

A :class:`SQLiteJobStore` uses its store's machinery, nothing of its own: reads run
in the store's reader threads, writes are operations of the store's writer
(:mod:`~mahavishnu_dlq.storage.sqlite_writer`), each applied inside the writer's
``BEGIN IMMEDIATE`` transaction. That makes a mutation a compare-and-set without a
retry: the job is read, ``fn`` computes its successor and the row is written in one
transaction that holds SQLite's write lock from the read on, so no other writer —
another task of this process (the writer applies one operation at a time) or
another process or store on the file (``BEGIN IMMEDIATE`` waits for the lock) — can
change the job in between. ``version`` counts the writes of a row (a tool watching
the file sees a change without decoding it).

A row whose ``doc`` this version cannot read is skipped by :meth:`SQLiteJobStore.list`
and refused by :meth:`~SQLiteJobStore.get` and :meth:`~SQLiteJobStore.mutate`
(:class:`~mahavishnu_dlq.storage.stored_jobs.UnreadableJobError`), see
:mod:`~mahavishnu_dlq.storage.stored_jobs`.
"""

from __future__ import annotations

import builtins
import sqlite3
from collections.abc import Collection
from typing import TYPE_CHECKING

from mahavishnu_dlq.clock import to_micros
from mahavishnu_dlq.errors import JobNotFoundError
from mahavishnu_dlq.jobs.model import Job, JobState
from mahavishnu_dlq.limits import require_str
from mahavishnu_dlq.storage.base import JobMutation
from mahavishnu_dlq.storage.memory_jobs import check_job_result
from mahavishnu_dlq.storage.stored_jobs import read_job

if TYPE_CHECKING:
    from mahavishnu_dlq.storage.sqlite import SQLiteStore

__all__ = ["SQLiteJobStore"]

_INSERT = (
    "INSERT INTO jobs (job_id, state, created_at_us, version, doc) VALUES (?, ?, ?, 1, ?) "
    "ON CONFLICT(job_id) DO NOTHING"
)
_UPDATE = (
    "UPDATE jobs SET state = ?, created_at_us = ?, version = version + 1, doc = ? WHERE job_id = ?"
)
_LISTING = " ORDER BY created_at_us DESC, job_id ASC"


class SQLiteJobStore:
    """The :class:`~mahavishnu_dlq.storage.base.JobStore` of a SQLite store (see the module)."""

    def __init__(self, store: SQLiteStore) -> None:
        self._store = store

    def __repr__(self) -> str:
        return f"SQLiteJobStore({self._store.location!r})"

    def _where(self) -> str:
        return f"sqlite file {self._store.location!r}"

    def _stored(self, connection: sqlite3.Connection, job_id: str) -> Job | None:
        row = connection.execute("SELECT doc FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return None if row is None else read_job(self._where(), job_id, row[0], strict=True)

    async def create(self, job: Job) -> Job:
        if not isinstance(job, Job):
            raise TypeError(f"create takes a Job, got {type(job).__name__}")
        values = (job.job_id, job.state.value, to_micros(job.created_at), job.model_dump_json())

        def apply(connection: sqlite3.Connection) -> bool:
            return connection.execute(_INSERT, values).rowcount > 0

        if not await self._store._write(apply):
            raise ValueError(f"a job with id {job.job_id!r} exists in {self._where()}")
        return job

    async def get(self, job_id: str) -> Job | None:
        job_id = require_str(job_id, "job_id")
        found: Job | None = await self._store._read(lambda c: self._stored(c, job_id))
        return found

    async def mutate(self, job_id: str, fn: JobMutation) -> Job:
        """Read, ``fn`` and write in one of the writer's transactions (see the module):
        ``fn`` runs once, in the writer's thread; when it raises, nothing is written."""
        job_id = require_str(job_id, "job_id")

        def apply(connection: sqlite3.Connection) -> Job:
            current = self._stored(connection, job_id)
            if current is None:
                raise JobNotFoundError(job_id)
            new = check_job_result(job_id, fn(current))
            connection.execute(  # the one write, last: a failure leaves nothing to undo
                _UPDATE,
                (new.state.value, to_micros(new.created_at), new.model_dump_json(), job_id),
            )
            return new

        stored: Job = await self._store._write(apply)
        return stored

    async def list(
        self, *, states: Collection[JobState] | None = None, limit: int = 100
    ) -> builtins.list[Job]:
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        sql, params = "SELECT job_id, doc FROM jobs", []
        if states is not None:
            wanted = sorted({JobState(state).value for state in states})
            if not wanted:
                return []
            sql += f" WHERE state IN ({', '.join('?' * len(wanted))})"
            params = wanted
        where = self._where()

        def read(connection: sqlite3.Connection) -> builtins.list[Job]:
            jobs: builtins.list[Job] = []
            if limit == 0:
                return jobs
            for job_id, doc in connection.execute(sql + _LISTING, params):
                job = read_job(where, job_id, doc, strict=False)  # unreadable: skipped
                if job is not None:
                    jobs.append(job)
                    if len(jobs) == limit:
                        break
            return jobs

        found: builtins.list[Job] = await self._store._read(read)
        return found

    async def delete(self, job_id: str) -> bool:
        job_id = require_str(job_id, "job_id")

        def apply(connection: sqlite3.Connection) -> bool:
            return connection.execute("DELETE FROM jobs WHERE job_id = ?", (job_id,)).rowcount > 0

        deleted: bool = await self._store._write(apply)
        return deleted
