"""The bulk jobs of an OpenSearch store: an index of their own, ``<index>-jobs``.

Jobs are few, small and rarely written, and a listing must see every acknowledged
write (:class:`~mahavishnu_dlq.storage.base.JobStore`). So they live apart from the
tasks: every job write asks for ``refresh=true``, which then refreshes only this
small index, never the tasks' (whose refreshes the tasks store schedules itself).

Layout
    ``dynamic: strict``, one shard: ``job_id``, ``kind`` and ``state`` keywords,
    ``created_at`` (a date, for people) and ``created_at_us`` (microseconds, the
    listing order: a date keeps only milliseconds), and ``doc``, the whole job as
    JSON (``Job.to_dict()``), stored but not indexed. The document ``_id`` is the
    SHA-256 of the job id, as for tasks. :meth:`OpenSearchJobStore.ensure` puts a
    template for the index (so one re-created by a write is strict too) and creates
    it — at the store's ``open()``, or at the first job created when the store was
    opened for reading (until then a read finds no jobs);
    :meth:`~OpenSearchJobStore.drop` deletes both.

Compare-and-set
    :meth:`~OpenSearchJobStore.mutate` reads the job in realtime with its
    ``_seq_no``/``_primary_term``, computes the successor and writes it only if
    nobody wrote in between (``if_seq_no``/``if_primary_term``); a 409 means another
    process won, and the job is read and ``fn`` applied again, up to
    ``conflict_retries`` times. Mutations of one job inside a process wait for each
    other (a per-id lock), so they do not conflict at all.

Errors are the store's (:class:`~mahavishnu_dlq.storage.opensearch_client.Connection`):
an unreachable node is a :class:`~mahavishnu_dlq.errors.StoreUnavailableError`.
"""

from __future__ import annotations

import builtins
from collections.abc import Collection
from typing import Any

from mahavishnu_dlq.clock import to_micros
from mahavishnu_dlq.errors import JobNotFoundError, JobStateError
from mahavishnu_dlq.jobs.model import Job, JobState
from mahavishnu_dlq.limits import require_str
from mahavishnu_dlq.storage.base import JobMutation, KeyedLock
from mahavishnu_dlq.storage.memory_jobs import check_job_result
from mahavishnu_dlq.storage.opensearch_client import Connection, refusal, require_asyncio
from mahavishnu_dlq.storage.opensearch_query import doc_id
from mahavishnu_dlq.storage.opensearch_side import Ensured, SideIndex
from mahavishnu_dlq.storage.stored_jobs import read_job

__all__ = ["JOBS_MAPPING_VERSION", "OpenSearchJobStore", "jobs_index"]

#: Kept in the jobs index's ``_meta``; versions only ever add fields.
JOBS_MAPPING_VERSION = 1

_MAX_PAGE = 10_000  # index.max_result_window
_KEYWORD = {"type": "keyword"}
_PROPERTIES: dict[str, dict[str, Any]] = {
    "job_id": _KEYWORD,
    "kind": _KEYWORD,
    "state": _KEYWORD,
    "created_at": {"type": "date"},
    "created_at_us": {"type": "long"},
    "doc": {"type": "object", "enabled": False},  # stored in _source, never indexed
}
_LISTING_SORT = [{"created_at_us": "desc"}, {"job_id": "asc"}]


def jobs_index(index: str) -> str:
    """The index holding the jobs of the tasks index ``index``."""
    return f"{index}-jobs"


def _document(job: Job) -> dict[str, Any]:
    doc = job.to_dict()
    return {
        "job_id": job.job_id,
        "kind": doc["kind"],
        "state": doc["state"],
        "created_at": doc["created_at"],
        "created_at_us": to_micros(job.created_at),
        "doc": doc,
    }


class OpenSearchJobStore:
    """The :class:`~mahavishnu_dlq.storage.base.JobStore` of an OpenSearch store (see
    the module); ``conn`` is the store's connection, ``index`` its tasks index."""

    def __init__(
        self,
        conn: Connection,
        index: str,
        *,
        conflict_retries: int = 20,
        replicas: int | None = None,
    ) -> None:
        self._conn = conn
        self._client = conn.client
        self._translated = conn.translated
        self._side = SideIndex(
            index, "jobs", _PROPERTIES, JOBS_MAPPING_VERSION, "bulk jobs", replicas
        )
        self.index = self._side.name
        #: how the index is made: its mapping, template and the check of an existing one
        self.side = self._side
        self._made = Ensured(self._side, conn)
        self._conflict_retries = max(1, conflict_retries)
        self._ids = KeyedLock()

    def __repr__(self) -> str:
        return f"OpenSearchJobStore(index={self.index!r})"

    def _where(self) -> str:
        return f"opensearch index {self.index!r}"

    # -- the index ---------------------------------------------------------------------

    async def ensure(self) -> None:
        """Put the template and create the index (idempotent); an existing index that
        maps a field otherwise is refused (``ConfigurationError``), one that lacks a
        field is completed in place (:class:`~.opensearch_side.SideIndex`)."""
        await self._made.ensure()

    async def drop(self) -> None:
        """Delete the index and its template (with the store's :meth:`drop`)."""
        await self._made.drop()

    # -- the JobStore protocol ------------------------------------------------------------

    async def _read(self, job_id: str) -> tuple[Job | None, tuple[int, int] | None]:
        """The job (realtime) and its ``(seq_no, primary_term)``."""
        with self._translated("get job"):
            # 404: no such job, or no jobs index yet (an answer: not logged)
            found = await self._client.get(index=self.index, id=doc_id(job_id), ignore=(404,))
        if refusal(found) is not None or not found.get("found"):
            return None, None
        source = found["_source"]
        stored = source.get("doc") if isinstance(source, dict) else source
        job = read_job(self._where(), job_id, stored, strict=True)
        return job, (found["_seq_no"], found["_primary_term"])

    async def create(self, job: Job) -> Job:
        require_asyncio()
        if not isinstance(job, Job):
            raise TypeError(f"create takes a Job, got {type(job).__name__}")
        await self._made.before_write()  # a store opened for reading makes it now
        with self._translated("create job"):
            made = await self._client.create(
                index=self.index,
                id=doc_id(job.job_id),
                body=_document(job),
                refresh="true",
                ignore=(409,),  # the id is taken: the caller's error, not the node's
            )
        if refusal(made) is not None:
            raise ValueError(f"a job with id {job.job_id!r} exists in {self._where()}")
        return job

    async def get(self, job_id: str) -> Job | None:
        require_asyncio()
        job, _ = await self._read(require_str(job_id, "job_id"))
        return job

    async def mutate(self, job_id: str, fn: JobMutation) -> Job:
        require_asyncio()
        job_id = require_str(job_id, "job_id")
        async with self._ids.hold(job_id):
            for _ in range(self._conflict_retries):
                current, version = await self._read(job_id)
                if current is None or version is None:
                    raise JobNotFoundError(job_id)
                new = check_job_result(job_id, fn(current))
                with self._translated("mutate job"):
                    written = await self._client.index(
                        index=self.index,
                        id=doc_id(job_id),
                        body=_document(new),
                        if_seq_no=version[0],
                        if_primary_term=version[1],
                        refresh="true",
                        ignore=(409,),
                    )
                if refusal(written) is not None:
                    continue  # another process wrote it meanwhile (409): read it again
                return new
        raise JobStateError(
            job_id, f"{self._conflict_retries} concurrent updates won the race; try again"
        )

    async def list(
        self, *, states: Collection[JobState] | None = None, limit: int = 100
    ) -> builtins.list[Job]:
        require_asyncio()
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        query: dict[str, Any] = {"match_all": {}}
        if states is not None:
            query = {"terms": {"state": sorted({JobState(state).value for state in states})}}
        body: dict[str, Any] = {
            "query": query,
            "sort": _LISTING_SORT,
            "size": min(max(limit, 1), _MAX_PAGE),
            "_source": ["job_id", "doc"],
            "track_total_hits": False,
        }
        jobs: builtins.list[Job] = []
        while len(jobs) < limit:
            with self._translated("list jobs"):
                # no jobs index yet (404): no jobs
                response = await self._client.search(index=self.index, body=body, ignore=(404,))
            if refusal(response) is not None:
                return jobs
            hits = response["hits"]["hits"]
            for hit in hits:
                source = hit.get("_source") or {}
                stored_id = str(source.get("job_id", hit["_id"]))
                job = read_job(self._where(), stored_id, source.get("doc"), strict=False)
                if job is not None:  # unreadable: skipped
                    jobs.append(job)
                    if len(jobs) == limit:
                        break
            if len(hits) < body["size"]:
                break
            body["search_after"] = hits[-1]["sort"]
        return jobs

    async def delete(self, job_id: str) -> bool:
        require_asyncio()
        job_id = require_str(job_id, "job_id")
        with self._translated("delete job"):
            # 404: no such job, or no jobs index (an answer: not logged)
            deleted = await self._client.delete(
                index=self.index, id=doc_id(job_id), refresh="true", ignore=(404,)
            )
        return refusal(deleted) is None and deleted.get("result") != "not_found"
