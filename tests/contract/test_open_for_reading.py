"""The Store contract of ``open(create=False)``: every backend opens its existing data
for reading, reads what is stored, and still writes, jobs and control records included.
(What a store opened so refuses to make — a missing OpenSearch index — is in
``tests/integration/test_read_only_open.py``.)"""

from __future__ import annotations

import pytest

from mahavishnu_dlq.jobs.model import Job, JobKind
from mahavishnu_dlq.models import TaskFilter
from mahavishnu_dlq.storage import Store
from mahavishnu_dlq.storage.base import open_store
from mahavishnu_dlq.testing import make_task
from tests.contract._records import T0, put, seed

pytestmark = pytest.mark.anyio


async def test_opened_again_for_reading_it_reads_what_is_stored(store: Store) -> None:
    await seed(store, make_task(task_id="a", failed_at=T0), make_task(task_id="b", failed_at=T0))
    await open_store(store, create=False)
    found = await store.get("a")
    assert found is not None
    assert found.task_id == "a"
    assert await store.count() == 2
    listed = await store.query(TaskFilter(), limit=10)
    assert [t.task_id for t in listed] == ["a", "b"]  # same failed_at: by id
    assert (await store.statistics()).total == 2


async def test_a_store_opened_for_reading_still_writes(store: Store) -> None:
    await open_store(store, create=False)
    written = await store.mutate("c", put(make_task(task_id="c", failed_at=T0)))
    assert written.task_id == "c"
    job = Job(job_id="job-r1", kind=JobKind.REPLAY, created_at=T0, updated_at=T0, snapshot_at=T0)
    await store.jobs.create(job)
    assert [j.job_id for j in await store.jobs.list()] == ["job-r1"]
    await store.controls.mutate("breaker/read-only", lambda _current: {"state": "open"})
    assert await store.controls.get("breaker/read-only") == {"state": "open"}
