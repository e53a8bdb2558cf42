"""JobRunner: takes bulk jobs from the store and works through them, page by page.

A retry processor owns one (so do ``DeadLetterQueue.run_job`` and the CLI when
no processor took a job in time). :meth:`JobRunner.claim_next` leases the oldest
claimable job to this runner with a compare-and-set — queued, or running under a
lease that ran out, its runner presumed dead — and :meth:`JobRunner.run` works
through it:

1. act on the page announced in the job (``in_flight``: its ids), by
   :mod:`.items` — replay/archive by ``mutate_many``, purge by delete, retry by
   claiming and running the handler, ``concurrency`` at a time — paced by the
   job's rate;
2. read the following page of the job's selection (the filter bounded by the
   snapshot) from the recorded cursor;
3. record: the page's counts and first failures, the following page announced
   and the cursor past it, a renewed lease — a compare-and-set that also notices a
   pause or a cancel (the runner stops there) or that the job was taken over (it
   stops without recording: the new runner acts on the announced page again, by
   id, and the marker keeps items from repeating while still counting them).

A processor's runner (``retention=True``) also starts the retention jobs when a run
is due, in :meth:`JobRunner.run_pending` (:mod:`mahavishnu_dlq.retention`).

**Rate.** One runner per job: the lease makes sure of it, so the job's rate is
the runner's pace (item k of a run starts k/rate seconds after the run started),
whichever process runs it; a takeover starts its own pace from where the job is.

The lease is renewed after each page and, while a page takes long (slow handlers
of a retry job), every third of ``lease_seconds``.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Collection, Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio

from mahavishnu_dlq import lifecycle
from mahavishnu_dlq.attempt import run_attempt
from mahavishnu_dlq.errors import DLQError, JobStateError, StoreUnavailableError
from mahavishnu_dlq.jobs import items
from mahavishnu_dlq.jobs.model import FAILURES_KEPT, Job, JobKind, JobState
from mahavishnu_dlq.models import DeadLetterStatus, FailedTask, TaskPage
from mahavishnu_dlq.printable import library_logger
from mahavishnu_dlq.retention import RetentionScheduler, count_removed, log_finished

if TYPE_CHECKING:
    from mahavishnu_dlq.queue import DeadLetterQueue

__all__ = ["JobRunner"]

_log = library_logger("mahavishnu_dlq")

_PURGE_CONCURRENCY = 16  # deletes in flight at once (one request each on OpenSearch)
_TICKS_PER_SECOND = 10  # a paced job acts in chunks of rate/10 items


#: states in which a job is no runner's (a cancelled one's runner records its last page)
_NOT_MINE = frozenset({JobState.QUEUED, JobState.DONE, JobState.FAILED})


class _Lost(Exception):  # noqa: N818 - a signal: the job is no longer this runner's
    """Another runner holds the job now (this one's lease ran out)."""


class JobRunner:
    """Runs bulk jobs for one queue (see the module docstring)."""

    def __init__(
        self,
        dlq: DeadLetterQueue,
        *,
        worker_id: str | None = None,
        lease_seconds: float | None = None,
        page_size: int | None = None,
        retention: bool = False,
    ) -> None:
        self.dlq = dlq
        #: a processor's runner also makes the retention runs when due (:mod:`.retention`)
        self.retention = RetentionScheduler(dlq) if retention else None
        self.worker_id = worker_id or dlq.worker_id
        self.lease_seconds = lease_seconds or dlq.job_lease_seconds
        self.page_size = page_size or dlq.job_page_size
        self._lost = False
        if self.page_size < 1:
            raise ValueError(f"page_size must be >= 1, got {self.page_size}")
        if not 0 < self.lease_seconds < math.inf:
            raise ValueError(f"lease_seconds must be > 0 and finite, got {self.lease_seconds}")

    # -- claiming ------------------------------------------------------------------------

    def _claimer(self, now: datetime) -> Callable[[Job], Job]:
        def claim(current: Job) -> Job:
            if not current.claimable(now):
                where = f" by {current.runner}" if current.runner else ""
                raise JobStateError(current.job_id, f"it is {current.state.value}{where}")
            return current.evolve(
                state=JobState.RUNNING,
                runner=self.worker_id,
                lease_expires_at=now + timedelta(seconds=self.lease_seconds),
                started_at=current.started_at or now,
                updated_at=now,
                runs=current.runs + 1,
            )

        return claim

    async def claim(self, job_id: str) -> Job:
        """Lease the job ``job_id`` to this runner; :class:`JobStateError` when it is not
        claimable (finished, paused, or running under a live lease)."""
        now = self.dlq.clock.now()
        job = await self.dlq.traced_store.jobs.mutate(job_id, self._claimer(now))
        self._taken(job)
        return job

    async def claim_next(self, *, kinds: Collection[JobKind] | None = None) -> Job | None:
        """Lease the oldest claimable job (of ``kinds``) to this runner, or None."""
        now = self.dlq.clock.now()
        jobs = self.dlq.traced_store.jobs
        candidates = await jobs.list(states=(JobState.QUEUED, JobState.RUNNING), limit=1000)
        for job in reversed(candidates):  # oldest first
            if not job.claimable(now) or (kinds is not None and job.kind not in kinds):
                continue
            try:
                claimed = await jobs.mutate(job.job_id, self._claimer(now))
            except DLQError:  # another runner was quicker, or it was paused meanwhile
                continue
            self._taken(claimed)
            return claimed
        return None

    def _taken(self, job: Job) -> None:
        again = job.runs > 1
        _log.info(
            "dlq.job.%s %s: %s%s by %s",
            "resumed" if again else "started",
            job.job_id,
            job.kind.value,
            f" from item {job.processed} of {job.matched}" if again else f" of {job.matched}",
            self.worker_id,
            extra={
                "action": "dlq.job.resumed" if again else "dlq.job.started",
                "job_id": job.job_id,
                "kind": job.kind.value,
                "runner": self.worker_id,
            },
        )

    async def run_pending(self, *, kinds: Collection[JobKind] | None = None) -> int:
        """Claim and run claimable jobs until none is left; how many were run. A
        processor's runner first starts the retention jobs when a run is due."""
        if self.retention is not None:
            await self.retention.run_due()
        ran = 0
        while (job := await self.claim_next(kinds=kinds)) is not None:
            await self.run(job)
            ran += 1
        return ran

    # -- running ---------------------------------------------------------------------------

    async def run(self, job: Job) -> Job:
        """Work through ``job`` (claimed by this runner) until it is done, paused,
        cancelled or taken over; the job as last stored (or as last seen, when lost)."""
        tracer = self.dlq.telemetry.tracer()
        if tracer is None:
            return await self._run(job)
        attributes = {
            "dlq.job_id": job.job_id,
            "dlq.job.kind": job.kind.value,
            "dlq.backend": self.dlq.store.backend,
            "dlq.worker": self.worker_id,
        }
        with tracer.start_as_current_span("dlq.job", attributes=attributes) as span:
            job = await self._run(job)
            span.set_attribute("dlq.job.state", job.state.value)
            span.set_attribute("dlq.job.done", job.done)
            span.set_attribute("dlq.job.skipped", job.skipped)
            span.set_attribute("dlq.job.failed", job.failed)
            return job

    async def _run(self, job: Job) -> Job:
        self._lost = False
        outcome: Job | Exception | None = None
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(self._keep_lease, job.job_id, group.cancel_scope)
                try:
                    outcome = await self._pages(job)
                except Exception as exc:  # noqa: BLE001 - raised below, as itself
                    outcome = exc
                group.cancel_scope.cancel()
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                await self._release(job.job_id)
            raise
        if isinstance(outcome, Exception):
            await self._stopped_by(job, outcome)
            raise outcome
        if outcome is None or self._lost:
            current = await self.dlq.traced_store.jobs.get(job.job_id)
            _log.warning(
                "dlq.job.lost %s: taken over by %s; this runner stops",
                job.job_id,
                current.runner if current is not None else "nobody (deleted)",
                extra={"action": "dlq.job.lost", "job_id": job.job_id, "runner": self.worker_id},
            )
            return current or job
        await self._ended(outcome)
        return outcome

    async def _keep_lease(self, job_id: str, scope: anyio.CancelScope) -> None:
        """Renew the lease every third of it while a page runs; on losing the job, stop
        the page (:meth:`_run` then reports the job lost)."""
        while True:
            await anyio.sleep(self.lease_seconds / 3)
            now = self.dlq.clock.now()
            try:
                await self.dlq.traced_store.jobs.mutate(job_id, partial(self._renew, now))
            except _Lost:
                self._lost = True
                scope.cancel()
                return
            except Exception as exc:  # noqa: BLE001 - tried again at the next renewal
                _log.warning(
                    "dlq.job.renew %s failed: %s: %s",
                    job_id,
                    type(exc).__name__,
                    exc,
                    extra={"action": "dlq.job.renew", "job_id": job_id, "outcome": "failed"},
                )

    async def _stopped_by(self, job: Job, exc: Exception) -> None:
        """The job could not go on: a store that cannot be reached gives it back (it
        goes on when the store is back); anything else fails the job, with the error."""
        if isinstance(exc, StoreUnavailableError):
            await self._release(job.job_id)
            return
        now = self.dlq.clock.now()
        error = f"{type(exc).__name__}: {exc}"[:2000]

        def fail(current: Job) -> Job:
            self._mine(current)
            return current.evolve(
                state=JobState.FAILED,
                error=error,
                runner=None,
                lease_expires_at=None,
                updated_at=now,
                finished_at=now,
            )

        try:
            failed = await self.dlq.traced_store.jobs.mutate(job.job_id, fail)
        except Exception:  # noqa: BLE001 - the lease runs out; the next runner tries again
            return
        _log.error(
            "dlq.job.failed %s: %s",
            job.job_id,
            error,
            extra={"action": "dlq.job.failed", "job_id": job.job_id, "kind": job.kind.value},
        )
        log_finished(failed)
        await self.dlq.hooks.job_finished(failed)

    async def _release(self, job_id: str) -> None:
        """Give the job back (queued, no lease) when this runner is stopped mid-job, so
        another runner takes it at once instead of when the lease runs out."""
        now = self.dlq.clock.now()

        def release(current: Job) -> Job:
            self._mine(current)
            if current.state is JobState.RUNNING:
                return current.evolve(
                    state=JobState.QUEUED, runner=None, lease_expires_at=None, updated_at=now
                )
            return current.evolve(runner=None, lease_expires_at=None, updated_at=now)

        try:
            await self.dlq.traced_store.jobs.mutate(job_id, release)
        except _Lost:
            return
        except Exception as exc:  # noqa: BLE001 - the lease runs out instead
            _log.warning(
                "dlq.job.release %s failed (%s: %s); another runner takes it when its lease "
                "runs out",
                job_id,
                type(exc).__name__,
                exc,
                extra={"action": "dlq.job.release", "job_id": job_id, "outcome": "failed"},
            )
            return
        _log.info(
            "dlq.job.released %s: given back by %s",
            job_id,
            self.worker_id,
            extra={"action": "dlq.job.released", "job_id": job_id, "runner": self.worker_id},
        )

    def _mine(self, current: Job) -> None:
        if current.runner != self.worker_id or current.state in _NOT_MINE:
            raise _Lost

    def _renew(self, now: datetime, current: Job) -> Job:
        self._mine(current)
        return current.evolve(lease_expires_at=now + timedelta(seconds=self.lease_seconds))

    async def _pages(self, job: Job) -> Job | None:
        """Pages until the job is no longer running; None when it was taken over.

        A page is announced before it is acted on: the record that ends one page
        names the ids of the next (``in_flight``) and moves the cursor past it. A
        runner that takes the job over acts on the announced ids first — by id, so
        an item its predecessor already moved out of the filter (archived, deleted)
        is still counted — then goes on from the cursor.
        """
        clock = self.dlq.clock
        started = clock.now()
        acted = 0
        size = self.page_size if job.rate is None else min(self.page_size, math.ceil(job.rate))
        chunk = size if job.rate is None else max(1, math.ceil(job.rate / _TICKS_PER_SECOND))
        try:
            if job.in_flight:  # its last runner stopped inside this page
                page: Sequence[FailedTask | str] = await self._fetch(job.in_flight)
            elif job.listed_all:
                page = []
            else:
                first = await self._next_page(job, size)
                job = await self._record(job, None, first)
                if job.state is not JobState.RUNNING:  # paused or cancelled already
                    return job
                page = first
            while True:
                tally = items.Tally()
                for at in range(0, len(page), chunk):
                    if job.rate is not None and acted:
                        wait = _until(started, acted / job.rate, clock.now())
                        if wait > 0:
                            await clock.sleep(wait)
                    part = page[at : at + chunk]
                    await self._act(job, part, tally)
                    acted += len(part)
                following = None if job.listed_all else await self._next_page(job, size)
                job = await self._record(job, tally, following)
                if job.state is not JobState.RUNNING or following is None:
                    return job
                page = following
        except _Lost:
            return None

    async def _next_page(self, job: Job, size: int) -> TaskPage[FailedTask]:
        return await self.dlq.traced_store.query(job.selection(), limit=size, cursor=job.cursor)

    async def _fetch(self, task_ids: Sequence[str]) -> list[FailedTask | str]:
        """The records of ``task_ids`` as stored now; the id itself where none is."""
        found: list[FailedTask | str] = list(task_ids)
        limiter = anyio.CapacityLimiter(_PURGE_CONCURRENCY)

        async def get(index: int) -> None:
            async with limiter:
                task = await self.dlq.traced_store.get(task_ids[index])
            if task is not None:
                found[index] = task

        async with anyio.create_task_group() as group:
            for index in range(len(task_ids)):
                group.start_soon(get, index)
        return found

    async def _record(
        self, job: Job, tally: items.Tally | None, following: TaskPage[FailedTask] | None
    ) -> Job:
        """Add a page's outcomes (``tally``; None before the first page) to the stored
        job and announce the ``following`` page (None: there is none, the job is done)."""
        now = self.dlq.clock.now()
        last = following is None
        counts = tally or items.Tally()

        def record(current: Job) -> Job:
            self._mine(current)
            room = max(0, FAILURES_KEPT - len(current.failures))
            changes: dict[str, Any] = {
                "pages": current.pages + (tally is not None),
                "done": current.done + counts.done,
                "skipped": current.skipped + counts.skipped,
                "failed": current.failed + counts.failed,
                "failures": [*current.failures, *counts.failures[:room]],
                "updated_at": now,
                "lease_expires_at": now + timedelta(seconds=self.lease_seconds),
                "in_flight": [] if following is None else [t.task_id for t in following],
            }
            if following is not None:
                changes["cursor"] = following.cursor
                changes["listed_all"] = following.cursor is None
            if last:
                changes["state"] = JobState.DONE
            if last or current.state is not JobState.RUNNING:  # done, paused or cancelled
                changes.update(runner=None, lease_expires_at=None)
                if last or current.state is JobState.CANCELLED:
                    changes["finished_at"] = now
            return current.evolve(**changes)

        stored = await self.dlq.traced_store.jobs.mutate(job.job_id, record)
        if tally is not None:
            self.dlq.telemetry.job_items(job.kind.value, tally.done, tally.skipped, tally.failed)
            _log.debug(
                "dlq.job.page %s: page %d, %d done, %d skipped, %d failed",
                job.job_id,
                stored.pages,
                tally.done,
                tally.skipped,
                tally.failed,
                extra={"action": "dlq.job.page", "job_id": job.job_id, "page": stored.pages},
            )
        return stored

    async def _ended(self, job: Job) -> None:
        verb = {
            JobState.DONE: "finished",
            JobState.PAUSED: "paused",
            JobState.CANCELLED: "cancelled",
        }.get(job.state, job.state.value)
        _log.info(
            "dlq.job.%s %s: %s %d of %d matched: %d done, %d skipped, %d failed",
            verb,
            job.job_id,
            job.kind.value,
            job.processed,
            job.matched,
            job.done,
            job.skipped,
            job.failed,
            extra={
                "action": f"dlq.job.{verb}",
                "job_id": job.job_id,
                "kind": job.kind.value,
                "done": job.done,
                "skipped": job.skipped,
                "failed": job.failed,
            },
        )
        if job.finished:
            log_finished(job)
            await self.dlq.hooks.job_finished(job)

    # -- acting on items ---------------------------------------------------------------

    async def _act(self, job: Job, found: Sequence[FailedTask | str], tally: items.Tally) -> None:
        """Act on a page's tasks; an id alone is a task announced but gone since (a
        purge counts it done: gone is what it wanted; the other kinds skip it)."""
        tasks: list[FailedTask] = []
        for task in found:
            if isinstance(task, FailedTask):
                tasks.append(task)
            elif job.kind is JobKind.PURGE:
                tally.ok()
            else:
                tally.skip(task, "it was deleted")
        if not tasks:
            return
        if job.kind is JobKind.PURGE:
            await self._purge(job, tasks, tally)
        elif job.kind is JobKind.RETRY:
            await self._retry(job, tasks, tally)
        else:
            await self._change(job, tasks, tally)

    async def _change(self, job: Job, tasks: Sequence[FailedTask], tally: items.Tally) -> None:
        now = self.dlq.clock.now()
        fn = items.mutation(job, now, items.change_of(job.kind, now))
        results = await self.dlq.traced_store.mutate_many([(task.task_id, fn) for task in tasks])
        archived = 0
        for task, result in zip(tasks, results, strict=True):
            tally.count(task.task_id, result)
            if job.kind is JobKind.ARCHIVE and isinstance(result, FailedTask):
                archived += 1
                self.dlq.telemetry.count("archived", result)
        self.dlq.lifetime["archived"] += archived
        count_removed(self.dlq, job, archived)

    async def _purge(self, job: Job, tasks: Sequence[FailedTask], tally: items.Tally) -> None:
        """Delete each task the snapshot still covers (a deletion leaves no marker: a
        repeated page finds the deleted ones gone from the listing)."""
        limiter = anyio.CapacityLimiter(_PURGE_CONCURRENCY)
        deleted = 0

        async def purge_one(task: FailedTask) -> None:
            nonlocal deleted
            refused = items.refusal(job, task)
            if refused is not None:
                tally.count(task.task_id, refused)
                return
            async with limiter:
                try:
                    gone = await self.dlq.traced_store.delete(task.task_id)
                except Exception as exc:  # noqa: BLE001 - counted; a store outage propagates
                    tally.count(task.task_id, exc)
                    return
            if gone:
                deleted += 1
                tally.ok()
            else:
                tally.skip(task.task_id, "it was deleted")

        await _each(purge_one, tasks)
        self.dlq.lifetime["purged"] += deleted
        count_removed(self.dlq, job, deleted)
        self.dlq.telemetry.purged(deleted)

    async def _retry(self, job: Job, tasks: Sequence[FailedTask], tally: items.Tally) -> None:
        """Claim each task for this job and run its handler here, ``concurrency`` at once."""
        dlq = self.dlq
        limiter = anyio.CapacityLimiter(dlq.concurrency)
        owner = f"{self.worker_id}/job"

        async def retry_one(task: FailedTask) -> None:
            if not dlq.can_retry(task):
                tally.skip(task.task_id, f"no handler here for workflow {task.workflow!r}")
                return
            await dlq.downstream.limiter.acquire(task.workflow)  # the workflow's rate limit
            now = dlq.clock.now()

            def claim(current: FailedTask) -> FailedTask:
                return lifecycle.claim(
                    current,
                    now=now,
                    owner=owner,
                    lease_seconds=dlq.lease_seconds,
                    trigger="manual",
                    attempts_kept=dlq.attempts_kept,
                )

            async with limiter:
                try:
                    claimed = await dlq.traced_store.mutate(
                        task.task_id, items.mutation(job, now, claim)
                    )
                except Exception as exc:  # noqa: BLE001 - counted; a store outage propagates
                    tally.count(task.task_id, exc)
                    return
                dlq.lifetime["manually_retried"] += 1
                outcome = await run_attempt(
                    dlq, claimed, owner=owner, timeout=dlq.attempt_timeout_seconds
                )
            if outcome.success:
                tally.ok()
            else:
                tally.fail(task.task_id, outcome.error or outcome.outcome.value)
            if outcome.status is DeadLetterStatus.EXHAUSTED and outcome.record is not None:
                await dlq.exhausted(outcome.record)

        await _each(retry_one, tasks)


async def _each(fn: Callable[[FailedTask], Awaitable[None]], tasks: Sequence[FailedTask]) -> None:
    """``fn`` on every task at once (callers bound the concurrency); the first exception
    re-raised as itself, not in an exception group, after the others were cancelled."""
    problem: list[Exception] = []

    async def one(task: FailedTask, scope: anyio.CancelScope) -> None:
        try:
            await fn(task)
        except Exception as exc:  # noqa: BLE001 - re-raised below
            problem.append(exc)
            scope.cancel()

    async with anyio.create_task_group() as group:
        for task in tasks:
            group.start_soon(one, task, group.cancel_scope)
    if problem:
        raise problem[0]


def _until(started: datetime, offset: float, now: datetime) -> float:
    """Seconds from ``now`` until ``offset`` seconds after ``started``."""
    try:
        return (started + timedelta(seconds=offset) - now).total_seconds()
    except OverflowError:  # pragma: no cover - a rate so low the wait passes a century
        return 100 * 365 * 86400.0
