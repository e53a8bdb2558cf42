"""Retention on every store: of two queues whose processors ask at the same time, the
schedule's compare-and-set lets exactly one make the run, and its job purges exactly
the tasks old enough. The rules themselves are pinned down on the memory store
(tests/unit/test_retention.py).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import anyio
import pytest

from mahavishnu_dlq import DeadLetterQueue
from mahavishnu_dlq.jobs import Job, JobKind
from mahavishnu_dlq.jobs.runner import JobRunner
from mahavishnu_dlq.retention import RETENTION_KEY, RetentionScheduler
from mahavishnu_dlq.storage import Store
from mahavishnu_dlq.testing import FakeClock

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)


async def completed(dlq: DeadLetterQueue, prefix: str, n: int) -> list[str]:
    ids = [f"{prefix}{i}" for i in range(n)]
    for task_id in ids:
        await dlq.enqueue(task_id, {"n": 1}, error=ConnectionError("down"), workflow="ok")
        assert (await dlq.retry_task(task_id))["success"]
    return ids


async def test_one_of_two_queues_takes_the_retention_run(store: Store) -> None:
    clock = FakeClock(T0)
    queues = [DeadLetterQueue(store, clock=clock, worker_id=f"w-{i}") for i in range(2)]
    for dlq in queues:
        dlq.register_handler("ok", lambda task, repos: None)
    old = await completed(queues[0], "old", 3)
    clock.advance(timedelta(days=6))
    young = await completed(queues[1], "young", 2)
    clock.advance(timedelta(days=1, seconds=1))
    started: list[list[Job]] = []

    async def ask(dlq: DeadLetterQueue) -> None:
        started.append(await RetentionScheduler(dlq).run_due())

    async with anyio.create_task_group() as group:
        for dlq in queues:
            group.start_soon(ask, dlq)
    assert sorted(len(jobs) for jobs in started) == [0, 1]
    assert [dlq.lifetime["retention_runs"] for dlq in queues].count(1) == 1
    (job,) = [job for jobs in started for job in jobs]
    assert (job.kind, job.matched, job.created_by) == (
        JobKind.PURGE,
        3,
        "retention/purge_completed",
    )
    record = await store.controls.get(RETENTION_KEY)
    assert record is not None
    winner = next(dlq for dlq in queues if dlq.lifetime["retention_runs"])
    assert record["last_run_by"] == winner.worker_id
    assert record["jobs"] == {"purge_completed": job.job_id}
    assert await JobRunner(queues[1]).run_pending() == 1
    for task_id in old:
        assert await queues[0].get_task(task_id) is None
    for task_id in young:
        assert await queues[0].get_task(task_id) is not None
    # not due again before the interval, on either queue
    assert await RetentionScheduler(queues[0]).run_due() == []
    assert await RetentionScheduler(queues[1]).run_due() == []
