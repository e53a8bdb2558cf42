"""Bulk jobs run end to end on every store: pages through the store's own cursor, the
snapshot, pause and resume at a page boundary, purge by age, and a takeover after a
runner died mid-page (the job store itself is pinned down by test_job_store.py).

A FakeClock drives leases and ages; the runner is driven by hand, so every step is
deterministic on every backend.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from mahavishnu_dlq import DeadLetterQueue
from mahavishnu_dlq.capture import Failure
from mahavishnu_dlq.jobs import JobState
from mahavishnu_dlq.jobs.items import Tally
from mahavishnu_dlq.jobs.runner import JobRunner
from mahavishnu_dlq.models import DeadLetterStatus, TaskFilter
from mahavishnu_dlq.storage import Store
from mahavishnu_dlq.testing import FakeClock
from tests.unit.test_jobs import steer_after_first_page

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)
PAGE = 7


def queue(store: Store, clock: FakeClock) -> DeadLetterQueue:
    return DeadLetterQueue(store, clock=clock, worker_id="runner", job_page_size=PAGE)


async def fill(dlq: DeadLetterQueue, n: int, prefix: str = "t") -> list[str]:
    failures = [
        Failure(f"{prefix}{i:03d}", {"n": i}, error=ConnectionError("down"), max_retries=0)
        for i in range(n)
    ]
    stored = await dlq.enqueue_many(failures)
    assert not [item for item in stored if isinstance(item, Exception)]
    return [f.task_id for f in failures]


async def by_status(dlq: DeadLetterQueue) -> dict[str, int]:
    stats = await dlq.get_statistics()
    return {k: v for k, v in stats["status_breakdown"].items() if v}


async def test_a_replay_pages_through_its_snapshot(store: Store) -> None:
    clock = FakeClock(T0)
    dlq = queue(store, clock)
    ids = await fill(dlq, 30)
    job = await dlq.start_job("replay")
    assert job.matched == 30
    clock.advance(5)
    late = await fill(dlq, 3, prefix="late")  # failed after the start: not swept in
    runner = JobRunner(dlq)
    done = await runner.run(await runner.claim(job.job_id))
    assert (done.state, done.done, done.skipped, done.failed) == (JobState.DONE, 30, 0, 0)
    assert done.pages == 5  # 7 + 7 + 7 + 7 + 2
    for task_id in ids:
        task = await dlq.get_task(task_id)
        assert task is not None
        assert (task.status, task.last_job_id) == (DeadLetterStatus.PENDING, job.job_id)
    for task_id in late:
        task = await dlq.get_task(task_id)
        assert task is not None
        assert (task.status, task.last_job_id) == (DeadLetterStatus.EXHAUSTED, None)


async def test_archive_pauses_at_a_page_boundary_then_purge_by_age(store: Store) -> None:
    clock = FakeClock(T0)
    dlq = queue(store, clock)
    await fill(dlq, 20)
    job = await dlq.start_job("archive", TaskFilter(status=DeadLetterStatus.EXHAUSTED))
    runner = JobRunner(dlq)
    steer_after_first_page(runner, dlq.pause_job)
    paused = await runner.run(await runner.claim(job.job_id))
    assert (paused.state, paused.done, len(paused.in_flight)) == (JobState.PAUSED, PAGE, PAGE)
    assert await by_status(dlq) == {"archived": PAGE, "exhausted": 20 - PAGE}
    await dlq.resume_job(job.job_id)
    assert await runner.run_pending() == 1
    finished = await dlq.get_job(job.job_id)
    assert (finished.state, finished.done, finished.runs) == (JobState.DONE, 20, 2)
    clock.advance(timedelta(days=8))
    await fill(dlq, 2, prefix="young")
    for task_id in ("young000", "young001"):
        assert await dlq.archive_task(task_id)
    purge = await dlq.start_job("purge", older_than=timedelta(days=7))
    assert purge.matched == 20
    purged = await runner.run(await runner.claim(purge.job_id))
    assert (purged.state, purged.done, purged.skipped) == (JobState.DONE, 20, 0)
    assert await by_status(dlq) == {"archived": 2}


async def test_a_takeover_after_a_runner_died_mid_page_repeats_nothing(store: Store) -> None:
    clock = FakeClock(T0)
    dlq = queue(store, clock)
    ids = await fill(dlq, 20)
    job = await dlq.start_job("archive")
    dead = JobRunner(dlq, worker_id="dead", lease_seconds=30)
    claimed = await dead.claim(job.job_id)
    page = await dead._next_page(claimed, PAGE)
    claimed = await dead._record(claimed, None, page)  # announced, as a runner does
    await dead._act(claimed, list(page)[:4], Tally())  # four items, then it dies
    clock.advance(31)
    heir = JobRunner(dlq, worker_id="heir")
    taken = await heir.claim_next()
    assert taken is not None
    assert (taken.runner, taken.runs, taken.done) == ("heir", 2, 0)
    done = await heir.run(taken)
    assert (done.state, done.done, done.skipped, done.failed) == (JobState.DONE, 20, 0, 0)
    for task_id in ids:
        task = await dlq.get_task(task_id)
        assert task is not None
        assert (task.status, task.last_job_id) == (DeadLetterStatus.ARCHIVED, job.job_id)
