"""A bulk job survives its runner: SIGKILL halfway through a 5,000-task replay.

Real processes on a shared store (a SQLite file, or an OpenSearch index). Worker
A runs the job at 1,000 tasks/s; once the job has recorded 2,000 items the test
kills A with SIGKILL, in the middle of a page. Worker B takes the job over when
A's lease (2 s) runs out and continues from the recorded cursor. Every task must
have been replayed exactly once: the store itself counts the writes of each task
(a trigger on SQLite, the document ``_version`` on OpenSearch), so a page done
twice or an item skipped shows.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from collections import Counter

from mahavishnu_dlq import DeadLetterQueue
from mahavishnu_dlq.capture import Failure
from mahavishnu_dlq.jobs import Job, JobState
from mahavishnu_dlq.models import DeadLetterStatus
from tests.integration.test_processes import Target, _Procs, procs, target

__all__ = ["procs", "target"]  # the fixtures, shared with test_processes

N = 5000
RATE = 1000.0
LEASE = "2"


async def _fill(target: Target) -> list[str]:
    dlq = DeadLetterQueue(target.store(), max_size=N + 1)
    await dlq.connect()
    try:
        failures = [
            Failure(
                f"job-task-{i:05d}",
                {"n": i},
                error=ConnectionError("refused"),
                max_retries=0,  # exhausted at once: what an operator replays
                workflow="jobs",
            )
            for i in range(N)
        ]
        stored = await dlq.enqueue_many(failures)
        assert all(not isinstance(item, Exception) for item in stored)
        assert await dlq.count_tasks() == N
        return [f.task_id for f in failures]
    finally:
        await dlq.stop()


async def _start(target: Target) -> Job:
    dlq = DeadLetterQueue(target.store())
    await dlq.connect()
    try:
        return await dlq.start_job("replay", rate=RATE)
    finally:
        await dlq.stop()


async def _job(target: Target, job_id: str) -> Job:
    dlq = DeadLetterQueue(target.store())
    await dlq.connect()
    try:
        return await dlq.get_job(job_id)
    finally:
        await dlq.stop()


async def _tasks(target: Target) -> dict[str, tuple[str, str | None]]:
    dlq = DeadLetterQueue(target.store())
    await dlq.connect()
    try:
        found: dict[str, tuple[str, str | None]] = {}
        cursor = None
        while True:
            page = await dlq.list_tasks(limit=1000, cursor=cursor)
            for task in page:
                found[task.task_id] = (task.status.value, task.last_job_id)
            if page.cursor is None:
                return found
            cursor = page.cursor
    finally:
        await dlq.stop()


class WriteCounter:
    """How often the store wrote each task, counted by the store itself."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.before: Counter[str] = Counter()
        if target.backend == "sqlite":
            with sqlite3.connect(self._path()) as db:
                db.execute("CREATE TABLE audit (task_id TEXT NOT NULL)")
                db.execute(
                    "CREATE TRIGGER audit_tasks AFTER UPDATE ON tasks "
                    "BEGIN INSERT INTO audit VALUES (NEW.task_id); END"
                )
        else:
            self.before = self._versions()

    def _path(self) -> str:
        return self.target.spec.removeprefix("sqlite:")

    def _versions(self) -> Counter[str]:
        from opensearchpy import OpenSearch  # noqa: PLC0415 - the opensearch extra

        url, _, index = self.target.spec.removeprefix("opensearch:").rpartition(":")
        client = OpenSearch(hosts=[url])
        try:
            client.indices.refresh(index=index)
            found = client.search(
                index=index,
                body={"size": N + 10, "version": True, "_source": ["task_id"]},
            )
            return Counter(
                {hit["_source"]["task_id"]: hit["_version"] for hit in found["hits"]["hits"]}
            )
        finally:
            client.close()

    def writes(self) -> Counter[str]:
        """Writes of each task since this counter was made."""
        if self.target.backend == "sqlite":
            with sqlite3.connect(self._path()) as db:
                rows = db.execute("SELECT task_id, count(*) FROM audit GROUP BY task_id")
                return Counter(dict(rows.fetchall()))
        now = self._versions()
        now.subtract(self.before)
        return now


def test_a_killed_runner_s_job_is_taken_over_and_every_task_is_replayed_once(
    procs: _Procs, target: Target
) -> None:
    ids = target.run(_fill, target)
    counter = WriteCounter(target)
    job = target.run(_start, target)
    assert job.matched == N

    runner_a = procs.spawn("a", "jobs", "runner-a", "--lease-seconds", LEASE, n=0)
    deadline = time.monotonic() + 60
    seen = job
    while seen.processed < 2000:  # recorded: A is somewhere in the page after it
        assert runner_a.poll() is None, procs.output("a")
        assert time.monotonic() < deadline, f"runner a made no progress: {seen}"
        time.sleep(0.05)  # a real process at a real rate: polled, never waited on
        seen = target.run(_job, target, job.job_id)
    os.kill(runner_a.pid, signal.SIGKILL)
    assert runner_a.wait(timeout=10) == -signal.SIGKILL
    killed_at = target.run(_job, target, job.job_id)
    assert killed_at.state is JobState.RUNNING
    assert killed_at.runner == "runner-a"
    assert killed_at.processed < N

    runner_b = procs.spawn("b", "jobs", "runner-b", "--lease-seconds", LEASE, n=1)
    procs.finish("b", runner_b, timeout=90)

    done = target.run(_job, target, job.job_id)
    assert done.state is JobState.DONE, done
    assert (done.matched, done.done, done.skipped, done.failed) == (N, N, 0, 0)
    assert done.runs == 2  # A, then B from A's cursor
    assert done.failures == []
    tasks = target.run(_tasks, target)
    assert sorted(tasks) == sorted(ids)
    assert set(tasks.values()) == {(DeadLetterStatus.PENDING.value, job.job_id)}
    writes = counter.writes()
    assert set(writes) == set(ids)
    assert set(writes.values()) == {1}, Counter(writes.values())
