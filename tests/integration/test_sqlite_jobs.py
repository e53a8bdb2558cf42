"""The SQLite store's jobs beyond the shared contract: one file shared by several stores
and processes, files of schema versions 1 and 2 migrated in place, and job rows it
cannot read.

- Two ``SQLiteStore`` objects on one file (two writers, as two processes have): a job
  one creates the other reads and changes; increments from both at once all land
  (each mutation reads and writes inside its ``BEGIN IMMEDIATE`` transaction). A child
  process incrementing at the same time as this one loses nothing either.
- A file of schema version 1 (made with version 1's statements, holding tasks as
  version 1 wrote them: no ``last_job_id``) is opened by the store: its tasks and
  counts are intact, its schema is the current one, jobs and control records work —
  for a plain store and for a failover journal. A file of version 2 (with jobs, without
  control records) keeps its tasks and jobs and gains the ``controls`` table.
- A job row whose document this version cannot read (written by hand or by a newer
  version): listings skip it, a read or a mutation of it raises
  :class:`UnreadableJobError` with the stored text, and it is left as it is.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import anyio
import pytest

from mahavishnu_dlq.clock import to_micros
from mahavishnu_dlq.errors import UnreadableRecordError
from mahavishnu_dlq.jobs.model import Job, JobKind, JobState
from mahavishnu_dlq.models import DeadLetterStatus, FailedTask, TaskFilter
from mahavishnu_dlq.storage import opensearch_query as documents
from mahavishnu_dlq.storage import sqlite_schema
from mahavishnu_dlq.storage.journal import JournalStore
from mahavishnu_dlq.storage.sqlite import SQLiteStore
from mahavishnu_dlq.storage.stored_jobs import UnreadableJobError
from mahavishnu_dlq.testing import make_task
from tests.integration._sqlite_files import ROOT, integrity

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)


def make_job(job_id: str, **overrides: Any) -> Job:
    fields: dict[str, Any] = {
        "job_id": job_id,
        "kind": JobKind.RETRY,
        "created_at": T0,
        "updated_at": T0,
        "snapshot_at": T0,
        "filter": TaskFilter(status=(DeadLetterStatus.PENDING,), since=T0 - timedelta(days=1)),
    }
    fields.update(overrides)
    return Job.model_validate(fields)


def increment(job: Job) -> Job:
    return job.evolve(done=job.done + 1)


# -- one file, several stores and processes ---------------------------------------------------


async def test_a_job_made_by_one_store_is_read_and_changed_by_another(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite3"
    first, second = SQLiteStore(path), SQLiteStore(path)
    try:
        job = await first.jobs.create(make_job("j"))
        assert await second.jobs.get("j") == job
        with pytest.raises(ValueError, match="'j' exists"):
            await second.jobs.create(make_job("j"))
        running = await second.jobs.mutate("j", lambda j: j.evolve(state=JobState.RUNNING))
        assert await first.jobs.get("j") == running
        assert await first.jobs.list(states=[JobState.RUNNING]) == [running]
        assert await first.jobs.delete("j") is True
        assert await second.jobs.get("j") is None
    finally:
        await first.close()
        await second.close()


async def test_increments_from_two_stores_at_once_all_land(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite3"
    first, second = SQLiteStore(path), SQLiteStore(path)
    try:
        await first.jobs.create(make_job("n"))
        await second.open()
        async with anyio.create_task_group() as group:
            for _ in range(25):
                group.start_soon(first.jobs.mutate, "n", increment)
                group.start_soon(second.jobs.mutate, "n", increment)
        for store in (first, second):
            found = await store.jobs.get("n")
            assert found is not None
            assert found.done == 50
    finally:
        await first.close()
        await second.close()
    connection = sqlite3.connect(path)
    try:  # one write per mutation, counted in the row
        assert connection.execute("SELECT version FROM jobs").fetchone()[0] == 51
    finally:
        connection.close()


CHILD = """
import sys, anyio
from mahavishnu_dlq.storage.sqlite import SQLiteStore

async def main():
    store = SQLiteStore(sys.argv[1])
    try:
        for _ in range(int(sys.argv[2])):
            await store.jobs.mutate("n", lambda job: job.evolve(done=job.done + 1))
    finally:
        await store.close()

anyio.run(main)
"""


async def test_increments_from_another_process_at_the_same_time_all_land(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite3"
    store = SQLiteStore(path)
    runs: list[subprocess.CompletedProcess[bytes]] = []

    async def child() -> None:
        argv = [sys.executable, "-c", CHILD, str(path), "60"]
        runs.append(await anyio.run_process(argv, cwd=ROOT, check=False))

    try:
        await store.jobs.create(make_job("n"))
        mine = 0
        with anyio.fail_after(60):
            async with anyio.create_task_group() as group:
                group.start_soon(child)
                while not runs:  # increment as long as the child runs
                    await store.jobs.mutate("n", increment)
                    mine += 1
        [run] = runs
        assert run.returncode == 0, run.stderr.decode()
        found = await store.jobs.get("n")
        assert found is not None
        assert found.done == 60 + mine
    finally:
        await store.close()


# -- schema version 1 -------------------------------------------------------------------------


def make_v1_file(path: Path, tasks: list[FailedTask], *, jobs: list[Job] | None = None) -> None:
    """A file as version 1 made it: its statements, its documents (no ``last_job_id``);
    with ``jobs``, as version 2 made it (version 2's statements and those jobs too)."""
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("BEGIN")
        version = 1 if jobs is None else 2
        for step in range(1, version + 1):
            for statement in sqlite_schema.MIGRATIONS[step]:
                connection.execute(statement)
        for task in tasks:
            doc = json.loads(documents.document_json(task, ""))
            del doc["last_job_id"]
            connection.execute(
                sqlite_schema.UPSERT, sqlite_schema.row_values(task, json.dumps(doc))
            )
        for job in jobs or []:
            connection.execute(
                "INSERT INTO jobs (job_id, state, created_at_us, version, doc) "
                "VALUES (?, ?, ?, 1, ?)",
                (job.job_id, job.state.value, to_micros(job.created_at), job.model_dump_json()),
            )
        connection.execute(f"PRAGMA user_version = {version}")
        connection.execute("COMMIT")
    finally:
        connection.close()


def schema_of(path: Path) -> tuple[int, list[str]]:
    connection = sqlite3.connect(path)
    try:
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        tables = connection.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
        ).fetchall()
        return int(version), [name for (name,) in tables]
    finally:
        connection.close()


V1_TASKS = [
    make_task(task_id=f"old-{i}", now=T0 + timedelta(seconds=i), workflow=f"wf{i % 2}")
    for i in range(5)
]


async def test_a_version_1_file_is_migrated_in_place(tmp_path: Path) -> None:
    path = tmp_path / "v1.sqlite3"
    make_v1_file(path, V1_TASKS)
    assert schema_of(path) == (1, ["counts", "tasks", "tombstones"])
    store = SQLiteStore(path)
    try:
        for task in V1_TASKS:
            assert await store.get(task.task_id) == task
        assert (await store.statistics()).total == 5
        assert await store.count(TaskFilter(workflow="wf0")) == 3
        summary = await store.summarize(TaskFilter(), sample=2)
        assert summary.by_workflow == {"wf0": 3, "wf1": 2}
        assert summary.sample == ["old-4", "old-3"]
        job = await store.jobs.create(make_job("after-migration"))
        assert await store.jobs.list() == [job]
        # a task written after the migration carries its job
        tagged = V1_TASKS[0].model_copy(update={"last_job_id": "after-migration"})
        await store.mutate("old-0", lambda _current: tagged)
        assert await store.get("old-0") == tagged
        assert await store.controls.mutate("breaker/wf0", lambda _: {"state": "open"}) == {
            "state": "open"
        }
    finally:
        await store.close()
    assert schema_of(path) == (3, ["controls", "counts", "jobs", "tasks", "tombstones"])
    assert integrity(path) == "ok"
    again = SQLiteStore(path)  # a second open finds nothing to do
    try:
        assert await again.jobs.get("after-migration") == job
        assert await again.count() == 5
        assert await again.controls.list("breaker/") == [("breaker/wf0", {"state": "open"})]
    finally:
        await again.close()


async def test_a_version_2_file_is_migrated_in_place(tmp_path: Path) -> None:
    path = tmp_path / "v2.sqlite3"
    jobs = [make_job("old-job"), make_job("running", state=JobState.RUNNING, done=3)]
    make_v1_file(path, V1_TASKS, jobs=jobs)
    assert schema_of(path) == (2, ["counts", "jobs", "tasks", "tombstones"])
    store = SQLiteStore(path)
    try:
        for task in V1_TASKS:
            assert await store.get(task.task_id) == task
        assert await store.count(TaskFilter(workflow="wf1")) == 2
        assert await store.jobs.get("old-job") == jobs[0]
        assert await store.jobs.list(states=[JobState.RUNNING]) == [jobs[1]]
        assert await store.controls.list("") == []
        await store.controls.mutate("rate/wf1", lambda _: {"tokens": 2.5})
        assert await store.controls.get("rate/wf1") == {"tokens": 2.5}
    finally:
        await store.close()
    assert schema_of(path) == (3, ["controls", "counts", "jobs", "tasks", "tombstones"])
    assert integrity(path) == "ok"


async def test_a_version_1_failover_journal_is_migrated_when_taken(tmp_path: Path) -> None:
    make_v1_file(tmp_path / "journal-1.sqlite3", V1_TASKS[:2])
    journal = JournalStore(tmp_path)
    await journal.open()
    try:
        assert journal.slot == 1
        ids, tombstones = await journal.entries()
        assert ids == ["old-0", "old-1"]
        assert tombstones == {}
        assert await journal.get("old-1") == V1_TASKS[1]
    finally:
        await journal.close()
    assert schema_of(tmp_path / "journal-1.sqlite3") == (
        sqlite_schema.SCHEMA_VERSION,
        ["controls", "counts", "jobs", "tasks", "tombstones"],
    )


# -- job rows this version cannot read --------------------------------------------------------


async def test_an_unreadable_job_row_is_skipped_by_listings_and_refused_by_reads(
    tmp_path: Path,
) -> None:
    path = tmp_path / "jobs.sqlite3"
    store = SQLiteStore(path)
    try:
        good = await store.jobs.create(make_job("good"))
        connection = sqlite3.connect(path)
        try:
            stored = json.dumps({**make_job("bad").to_dict(), "state": "hibernating"})
            rows = [("bad", "hibernating", 1, stored), ("junk", "queued", 2, "{not json")]
            connection.executemany(
                "INSERT INTO jobs (job_id, state, created_at_us, version, doc) "
                "VALUES (?, ?, ?, 1, ?)",
                rows,
            )
            connection.commit()
        finally:
            connection.close()
        assert await store.jobs.list() == [good]
        with pytest.raises(UnreadableJobError) as caught:
            await store.jobs.get("bad")
        assert isinstance(caught.value, UnreadableRecordError)
        assert caught.value.job_id == "bad"
        assert caught.value.source == stored
        assert str(caught.value).startswith("job 'bad' is stored but cannot be read: state")
        with pytest.raises(UnreadableJobError, match=r"'junk'.*not JSON"):
            await store.jobs.mutate("junk", increment)
        with pytest.raises(UnreadableJobError):
            await store.jobs.mutate("bad", increment)
        assert await store.jobs.delete("junk") is True  # an operator can remove it
    finally:
        await store.close()
    connection = sqlite3.connect(path)
    try:
        assert connection.execute("SELECT doc FROM jobs WHERE job_id = 'bad'").fetchone()[0] == (
            stored
        )
    finally:
        connection.close()
