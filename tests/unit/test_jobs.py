"""Bulk jobs on the memory store: making them, running them in a processor, steering
them, their snapshot, their rate, a takeover, and what they report.

Deterministic: a FakeClock, jobs driven by ``RetryProcessor.run_once`` or a
``JobRunner`` by hand; the store contract of jobs is in tests/contract.
"""

from __future__ import annotations

import logging
import random
from datetime import datetime, timedelta, timezone
from typing import Any

import anyio
import pytest

from mahavishnu_dlq import DeadLetterQueue, RetryProcessor
from mahavishnu_dlq.attempt import run_attempt
from mahavishnu_dlq.errors import (
    JobNotFoundError,
    JobStateError,
    StoreUnavailableError,
)
from mahavishnu_dlq.jobs import FAILURES_KEPT, Job, JobKind, JobState
from mahavishnu_dlq.jobs.items import Tally
from mahavishnu_dlq.jobs.runner import JobRunner
from mahavishnu_dlq.models import DeadLetterStatus, ErrorCategory, TaskFilter
from mahavishnu_dlq.storage import MemoryStore
from mahavishnu_dlq.testing import FakeClock

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
PENDING = DeadLetterStatus.PENDING
EXHAUSTED = DeadLetterStatus.EXHAUSTED
COMPLETED = DeadLetterStatus.COMPLETED
ARCHIVED = DeadLetterStatus.ARCHIVED
RETRYING = DeadLetterStatus.RETRYING


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def dlq(clock: FakeClock) -> DeadLetterQueue:
    queue = DeadLetterQueue(clock=clock, rng=random.Random(7), worker_id="w-1", job_page_size=10)
    queue.register_handler("sync", lambda task, repos: {"ok": task["n"]})
    return queue


async def fill(dlq: DeadLetterQueue, n: int, *, workflow: str = "sync", prefix: str = "t") -> None:
    for i in range(n):
        await dlq.enqueue(
            f"{prefix}{i:04d}",
            {"n": i},
            error=ConnectionError("refused"),
            workflow=workflow,
            max_retries=0,  # exhausted at once: a replay gives it one more retry
        )


async def statuses(dlq: DeadLetterQueue) -> dict[str, int]:
    stats = await dlq.get_statistics()
    return {k: v for k, v in stats["status_breakdown"].items() if v}


# -- making a job -----------------------------------------------------------------------


async def test_start_job_stores_a_queued_job_with_the_snapshot_and_what_matched(
    dlq: DeadLetterQueue,
) -> None:
    await fill(dlq, 12)
    await fill(dlq, 3, workflow="other", prefix="o")
    job = await dlq.start_job("replay", TaskFilter(workflow="sync"), rate=50)
    assert job.state is JobState.QUEUED
    assert job.kind is JobKind.REPLAY
    assert job.matched == 12
    assert job.rate == 50
    assert job.snapshot_at == T0
    assert job.filter.status == (PENDING, EXHAUSTED, RETRYING)  # the kind's default
    assert job.summary is not None
    assert job.summary.by_workflow == {"sync": 12}
    assert job.summary.by_status == {"exhausted": 12}
    assert len(job.summary.sample) == 12
    assert "@" in job.created_by
    assert await dlq.get_job(job.job_id) == job
    assert [j.job_id for j in await dlq.list_jobs()] == [job.job_id]
    assert await statuses(dlq) == {"exhausted": 15}  # nothing changed yet


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ({"kind": "explode"}, "unknown job kind 'explode'"),
        ({"kind": "replay", "rate": 0}, "rate must be > 0"),
        ({"kind": "replay", "rate": float("nan")}, "rate must be > 0"),
        ({"kind": "replay", "older_than": timedelta(days=1)}, "older_than selects what a purge"),
        ({"kind": "purge", "older_than": timedelta(days=-1)}, "must not be negative"),
    ],
)
async def test_start_job_refuses_bad_arguments_naming_them(
    dlq: DeadLetterQueue, call: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        await dlq.start_job(**call)
    assert await dlq.list_jobs() == []


async def test_start_job_refuses_wrong_types(dlq: DeadLetterQueue) -> None:
    with pytest.raises(TypeError, match="filter must be a TaskFilter"):
        await dlq.start_job("replay", {"status": "pending"})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="rate must be a number"):
        await dlq.start_job("replay", rate="fast")  # type: ignore[arg-type]


async def test_unknown_job_ids_are_named(dlq: DeadLetterQueue) -> None:
    for call in (dlq.get_job, dlq.pause_job, dlq.resume_job, dlq.cancel_job):
        with pytest.raises(JobNotFoundError, match="no job with id 'job-nope'"):
            await call("job-nope")


async def test_a_dry_run_reports_by_status_category_and_workflow_and_changes_nothing(
    dlq: DeadLetterQueue,
) -> None:
    await fill(dlq, 25)
    await dlq.enqueue("v1", {"n": 1}, error=ValueError("bad email"), workflow="mail")
    finished: list[Job] = []
    dlq.on_job_finished(finished.append)
    job = await dlq.start_job(JobKind.ARCHIVE, dry_run=True)
    assert job.state is JobState.DONE
    assert job.dry_run
    assert job.summary is not None
    assert job.summary.total == 26 == job.matched
    assert job.summary.by_workflow == {"sync": 25, "mail": 1}
    assert job.summary.by_category == {
        ErrorCategory.NETWORK.value: 25,
        ErrorCategory.VALIDATION.value: 1,
    }
    assert len(job.summary.sample) == 20
    assert finished == [job]
    assert await RetryProcessor(dlq).run_once() == 0  # nothing for a runner to do
    assert await statuses(dlq) == {"exhausted": 25, "pending": 1}


# -- running ----------------------------------------------------------------------------


async def test_a_processor_runs_a_replay_job_page_by_page_and_the_tasks_are_retried(
    dlq: DeadLetterQueue, caplog: pytest.LogCaptureFixture
) -> None:
    await fill(dlq, 25)
    finished: list[Job] = []
    dlq.on_job_finished(finished.append)
    job = await dlq.start_job("replay")
    processor = RetryProcessor(dlq)
    with caplog.at_level(logging.INFO, logger="mahavishnu_dlq"):
        attempts = await processor.drain()
    assert attempts == 25  # the job made them due; the same cycle retried them
    done = await dlq.get_job(job.job_id)
    assert done.state is JobState.DONE
    assert (done.matched, done.done, done.skipped, done.failed) == (25, 25, 0, 0)
    assert done.pages == 3  # 10 + 10 + 5
    assert done.finished_at is not None
    assert done.runner is None
    assert done.runs == 1
    assert finished == [done]
    assert await statuses(dlq) == {"completed": 25}
    task = await dlq.get_task("t0003")
    assert task is not None
    assert task.last_job_id == job.job_id
    actions = [getattr(r, "action", None) for r in caplog.records]
    assert "dlq.job.started" in actions
    assert "dlq.job.finished" in actions


async def test_archive_and_purge_jobs(dlq: DeadLetterQueue, clock: FakeClock) -> None:
    await fill(dlq, 15)
    archive = await dlq.start_job("archive", TaskFilter(text="t000"))  # t0000 … t0009
    await RetryProcessor(dlq).run_once()
    assert (await dlq.get_job(archive.job_id)).done == 10
    assert await statuses(dlq) == {"archived": 10, "exhausted": 5}
    assert dlq.lifetime["archived"] == 10
    clock.advance(timedelta(days=2))
    await dlq.enqueue("late", {"n": 0}, error="x", workflow="sync")
    await dlq.archive_task("late")  # archived now: younger than the purge's cut-off
    purge = await dlq.start_job("purge", older_than=timedelta(days=1))
    assert purge.matched == 10
    await RetryProcessor(dlq).run_once()
    done = await dlq.get_job(purge.job_id)
    assert (done.state, done.done, done.skipped) == (JobState.DONE, 10, 0)
    assert await statuses(dlq) == {"archived": 1, "exhausted": 5}
    assert dlq.lifetime["purged"] == 10


async def test_a_retry_job_runs_handlers_in_its_runner_and_reports_each_failure(
    dlq: DeadLetterQueue,
) -> None:
    def flaky(task: dict[str, Any], repos: list[str]) -> None:
        if task["n"] % 3 == 0:
            raise RuntimeError(f"still down for {task['n']}")

    dlq.register_handler("flaky", flaky)
    await fill(dlq, 9, workflow="flaky")
    await fill(dlq, 2, workflow="nobody", prefix="x")
    await dlq.start_job("retry")
    runner = JobRunner(dlq)
    claimed = await runner.claim_next()
    assert claimed is not None
    assert claimed.runner == "w-1"
    done = await runner.run(claimed)
    assert (done.done, done.failed, done.skipped) == (6, 3, 2)
    by_id = {f.task_id: f for f in done.failures}
    assert by_id["t0003"].outcome == "failed"
    assert "still down for 3" in by_id["t0003"].error
    assert by_id["x0000"].outcome == "skipped"
    assert "no handler here for workflow 'nobody'" in by_id["x0000"].error
    assert await statuses(dlq) == {"completed": 6, "exhausted": 5}


async def test_a_job_acts_on_its_snapshot_only(dlq: DeadLetterQueue, clock: FakeClock) -> None:
    await fill(dlq, 5)
    job = await dlq.start_job("archive")
    assert job.matched == 5
    clock.advance(60)
    await fill(dlq, 3, prefix="new")  # failed after the job started: not swept in
    await RetryProcessor(dlq).run_once()
    done = await dlq.get_job(job.job_id)
    assert (done.state, done.matched, done.done, done.skipped) == (JobState.DONE, 5, 5, 0)
    assert await statuses(dlq) == {"archived": 5, "exhausted": 3}


async def test_the_snapshot_skips_a_task_retried_and_failed_after_the_start(
    dlq: DeadLetterQueue, clock: FakeClock
) -> None:
    dlq.register_handler("failing", lambda task, repos: (_ for _ in ()).throw(OSError("down")))
    await dlq.enqueue(
        "again", {"n": 1}, error=ConnectionError("x"), workflow="failing", max_retries=3
    )
    await fill(dlq, 2)
    job = await dlq.start_job("archive")
    clock.advance(86400)
    processor = RetryProcessor(dlq)
    claimed = await processor.claim(10)
    assert [t.task_id for t in claimed] == ["again"]
    await run_attempt(dlq, claimed[0], owner=processor.worker_id)
    again = await dlq.get_task("again")
    assert again is not None
    assert again.status is PENDING  # failed after the snapshot, still matches the filter
    done = await JobRunner(dlq).run(await JobRunner(dlq).claim(job.job_id))
    assert (done.done, done.skipped) == (2, 1)
    assert done.failures[0].task_id == "again"
    assert done.failures[0].outcome == "skipped"
    assert "failed again after the job started" in done.failures[0].error
    again = await dlq.get_task("again")
    assert again is not None
    assert again.status is PENDING


# -- steering ---------------------------------------------------------------------------


async def test_pause_resume_and_cancel_before_a_runner_takes_the_job(
    dlq: DeadLetterQueue,
) -> None:
    await fill(dlq, 5)
    job = await dlq.start_job("archive")
    paused = await dlq.pause_job(job.job_id)
    assert paused.state is JobState.PAUSED
    assert await dlq.pause_job(job.job_id) == paused  # idempotent
    await RetryProcessor(dlq).run_once()
    assert await statuses(dlq) == {"exhausted": 5}  # a paused job is not taken
    resumed = await dlq.resume_job(job.job_id)
    assert resumed.state is JobState.QUEUED
    cancelled = await dlq.cancel_job(job.job_id)
    assert cancelled.state is JobState.CANCELLED
    assert cancelled.finished_at is not None
    await RetryProcessor(dlq).run_once()
    assert await statuses(dlq) == {"exhausted": 5}
    with pytest.raises(JobStateError, match="it is cancelled"):
        await dlq.resume_job(job.job_id)
    with pytest.raises(JobStateError, match="it is cancelled"):
        await dlq.pause_job(job.job_id)
    assert await dlq.cancel_job(job.job_id) == cancelled  # idempotent


def steer_after_first_page(runner: JobRunner, steer: Any) -> None:
    """Make ``runner`` call ``steer(job_id)`` once, right after acting on its first page
    (as an operator's pause or cancel from elsewhere would arrive mid-run)."""
    act = runner._act
    steered: list[str] = []

    async def act_then_steer(job: Job, found: Any, tally: Tally) -> None:
        await act(job, found, tally)
        if not steered:
            steered.append(job.job_id)
            held = await steer(job.job_id)
            assert held.runner == runner.worker_id  # it stops at the page's record

    runner._act = act_then_steer  # type: ignore[method-assign]


async def test_a_pause_before_the_first_page_stops_at_once_and_resume_does_it_all(
    dlq: DeadLetterQueue,
) -> None:
    await fill(dlq, 25)
    job = await dlq.start_job("archive")
    runner = JobRunner(dlq)
    claimed = await runner.claim(job.job_id)
    held = await dlq.pause_job(job.job_id)
    assert (held.state, held.runner) == (JobState.PAUSED, "w-1")
    stopped = await runner.run(claimed)
    assert (stopped.state, stopped.done, stopped.runner) == (JobState.PAUSED, 0, None)
    assert len(stopped.in_flight) == 10  # announced, not acted on
    assert await statuses(dlq) == {"exhausted": 25}
    await dlq.resume_job(job.job_id)
    await RetryProcessor(dlq).run_once()
    done = await dlq.get_job(job.job_id)
    assert (done.state, done.done, done.runs, done.in_flight) == (JobState.DONE, 25, 2, [])


async def test_a_running_job_pauses_at_a_page_boundary_and_resumes_from_its_cursor(
    dlq: DeadLetterQueue,
) -> None:
    await fill(dlq, 25)
    job = await dlq.start_job("archive")
    runner = JobRunner(dlq)
    steer_after_first_page(runner, dlq.pause_job)
    stopped = await runner.run(await runner.claim(job.job_id))
    assert stopped.state is JobState.PAUSED
    assert (stopped.done, stopped.pages, stopped.runner) == (10, 1, None)
    assert len(stopped.in_flight) == 10  # the next page, announced
    assert await statuses(dlq) == {"archived": 10, "exhausted": 15}
    resumed = await dlq.resume_job(job.job_id)
    assert resumed.state is JobState.QUEUED
    await RetryProcessor(dlq).run_once()
    done = await dlq.get_job(job.job_id)
    assert (done.state, done.done, done.skipped, done.runs) == (JobState.DONE, 25, 0, 2)
    assert await statuses(dlq) == {"archived": 25}


async def test_cancel_of_a_running_job_records_its_last_page(dlq: DeadLetterQueue) -> None:
    await fill(dlq, 25)
    finished: list[Job] = []
    dlq.on_job_finished(finished.append)
    job = await dlq.start_job("archive")
    runner = JobRunner(dlq)
    steer_after_first_page(runner, dlq.cancel_job)
    stopped = await runner.run(await runner.claim(job.job_id))
    assert (stopped.state, stopped.done) == (JobState.CANCELLED, 10)
    assert stopped.finished_at is not None
    assert finished == [stopped]
    assert await statuses(dlq) == {"archived": 10, "exhausted": 15}


async def test_a_job_held_by_a_live_runner_cannot_be_claimed(dlq: DeadLetterQueue) -> None:
    await fill(dlq, 3)
    job = await dlq.start_job("archive")
    await JobRunner(dlq, worker_id="a").claim(job.job_id)
    other = JobRunner(dlq, worker_id="b")
    assert await other.claim_next() is None
    with pytest.raises(JobStateError, match="it is running by a"):
        await other.claim(job.job_id)


async def test_a_runner_that_died_mid_page_is_taken_over_without_repeating_items(
    dlq: DeadLetterQueue, clock: FakeClock
) -> None:
    await fill(dlq, 25)
    job = await dlq.start_job("replay")
    dead = JobRunner(dlq, worker_id="dead", lease_seconds=30)
    claimed = await dead.claim(job.job_id)
    # it announces and replays the first page, then dies before recording it
    page = await dead._next_page(claimed, 10)
    claimed = await dead._record(claimed, None, page)
    await dead._act(claimed, list(page), Tally())
    replayed_first = await dlq.get_task(page[0].task_id)
    assert replayed_first is not None
    assert replayed_first.status is PENDING
    heir = JobRunner(dlq, worker_id="heir")
    assert await heir.claim_next() is None  # the lease still runs
    clock.advance(31)
    taken = await heir.claim_next()
    assert taken is not None
    assert (taken.runner, taken.runs, taken.done) == ("heir", 2, 0)
    assert taken.in_flight == [task.task_id for task in page]
    done = await heir.run(taken)
    assert (done.state, done.done, done.skipped, done.failed) == (JobState.DONE, 25, 0, 0)
    for task in page:  # replayed once: by the dead runner, counted by its heir
        again = await dlq.get_task(task.task_id)
        assert again is not None
        assert (again.last_job_id, again.status) == (job.job_id, PENDING)


async def test_failures_beyond_the_first_thousand_are_counted_not_kept(clock: FakeClock) -> None:
    dlq = DeadLetterQueue(clock=clock, worker_id="w", job_page_size=500, max_size=5000)
    dlq.register_handler("sync", lambda task, repos: None)
    for i in range(FAILURES_KEPT + 50):
        await dlq.enqueue(
            f"t{i}", {"n": i}, error=ConnectionError("x"), workflow="sync", max_retries=5
        )
    clock.advance(86400)
    processor = RetryProcessor(dlq, batch_size=5000)
    assert len(await processor.claim(5000)) == FAILURES_KEPT + 50  # busy: leased, running
    job = await dlq.start_job("archive")
    done = await JobRunner(dlq).run(await JobRunner(dlq).claim(job.job_id))
    assert done.skipped == FAILURES_KEPT + 50
    assert len(done.failures) == FAILURES_KEPT
    assert all("busy" in f.error for f in done.failures)


# -- rate, failures of the store ---------------------------------------------------------


async def test_the_rate_paces_items_by_the_clock(dlq: DeadLetterQueue, clock: FakeClock) -> None:
    await fill(dlq, 30)
    job = await dlq.start_job("archive", rate=10)
    before = clock.now()
    done = await JobRunner(dlq).run(await JobRunner(dlq).claim(job.job_id))
    assert done.done == 30
    assert (clock.now() - before).total_seconds() == pytest.approx(2.9)  # (30 - 1) / 10


class Flaky(MemoryStore):
    """A memory store whose task writes fail on demand."""

    def __init__(self) -> None:
        super().__init__()
        self.down: BaseException | None = None

    async def mutate_many(self, items: Any) -> Any:
        if self.down is not None:
            raise self.down
        return await super().mutate_many(items)


async def test_a_store_outage_gives_the_job_back_and_another_error_fails_it(
    clock: FakeClock,
) -> None:
    store = Flaky()
    dlq = DeadLetterQueue(store, clock=clock, worker_id="w", job_page_size=10)
    dlq.register_handler("sync", lambda task, repos: None)
    await fill(dlq, 5)
    finished: list[Job] = []
    dlq.on_job_finished(finished.append)
    job = await dlq.start_job("archive")
    store.down = StoreUnavailableError("memory", "switched off")
    runner = JobRunner(dlq)
    with pytest.raises(StoreUnavailableError):
        await runner.run(await runner.claim(job.job_id))
    back = await dlq.get_job(job.job_id)
    assert (back.state, back.runner, back.done) == (JobState.QUEUED, None, 0)
    store.down = RuntimeError("a bug")
    with pytest.raises(RuntimeError):
        await runner.run(await runner.claim(job.job_id))
    failed = await dlq.get_job(job.job_id)
    assert failed.state is JobState.FAILED
    assert failed.error == "RuntimeError: a bug"
    assert finished == [failed]


async def test_a_running_processor_takes_a_new_job_at_once(dlq: DeadLetterQueue) -> None:
    await fill(dlq, 12)
    ended = anyio.Event()

    async def finished(job: Job) -> None:
        ended.set()

    dlq.on_job_finished(finished)
    await dlq.start_retry_processor(check_interval_seconds=3600)
    try:
        job = await dlq.start_job("archive")
        with anyio.fail_after(10):
            await ended.wait()
    finally:
        await dlq.stop_retry_processor()
    done = await dlq.get_job(job.job_id)
    assert (done.state, done.done) == (JobState.DONE, 12)


async def test_a_job_run_is_a_span_and_its_items_are_counted_by_kind_and_outcome(
    clock: FakeClock,
) -> None:
    from tests.unit.test_telemetry import Otel  # noqa: PLC0415 - the SDK test harness

    otel = Otel()
    try:
        dlq = DeadLetterQueue(
            clock=clock,
            worker_id="w",
            job_page_size=10,
            tracer_provider=otel.tracer_provider,
            meter_provider=otel.meter_provider,
        )
        dlq.register_handler("sync", lambda task, repos: None)
        await fill(dlq, 12)
        busy = await dlq.enqueue(
            "busy", {"n": 0}, error=ConnectionError("x"), max_retries=3, workflow="sync"
        )
        clock.advance(86400)
        assert [t.task_id for t in await RetryProcessor(dlq).claim(10)] == [busy.task_id]
        job = await dlq.start_job("archive")
        done = await JobRunner(dlq).run(await JobRunner(dlq).claim(job.job_id))
        assert (done.done, done.skipped) == (12, 1)
        (span,) = otel.finished("dlq.job")
        assert span.attributes is not None
        assert span.attributes["dlq.job_id"] == job.job_id
        assert span.attributes["dlq.job.kind"] == "archive"
        assert span.attributes["dlq.job.state"] == "done"
        assert (span.attributes["dlq.job.done"], span.attributes["dlq.job.skipped"]) == (12, 1)
        assert otel.total("dlq.jobs.items", kind="archive", outcome="done") == 12
        assert otel.total("dlq.jobs.items", kind="archive", outcome="skipped") == 1
        assert otel.total("dlq.tasks.archived") == 12
    finally:
        otel.tracer_provider.shutdown()
        otel.meter_provider.shutdown()
