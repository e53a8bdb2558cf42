"""The JobStore contract (``store.jobs``) and ``Store.summarize``: every backend must pass
every test here, unchanged. The memory store is the reference; the others must hand
back exactly what it does (a job round-trips field for field, a summary counts what
``count()`` counts and samples what ``query()`` lists first)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import anyio
import pytest

from mahavishnu_dlq.errors import DLQError, JobNotFoundError
from mahavishnu_dlq.jobs.model import Job, JobFailure, JobKind, JobState, TaskSummary
from mahavishnu_dlq.models import (
    DeadLetterStatus,
    ErrorCategory,
    FailedTask,
    TaskFilter,
)
from mahavishnu_dlq.storage import Store
from mahavishnu_dlq.testing import make_task
from tests.contract._records import T0, at, put, seed

pytestmark = pytest.mark.anyio


def make_job(job_id: str = "job-1", **overrides: Any) -> Job:
    """A queued replay job created at ``T0`` (``overrides`` applied)."""
    fields: dict[str, Any] = {
        "job_id": job_id,
        "kind": JobKind.REPLAY,
        "created_at": T0,
        "updated_at": T0,
        "snapshot_at": T0,
    }
    fields.update(overrides)
    return Job.model_validate(fields)


def _rich_job() -> Job:
    """A job using every field, nested ones too (times with microseconds)."""
    return make_job(
        "job-rich/ü ✓",
        kind=JobKind.PURGE,
        filter=TaskFilter(
            status=(DeadLetterStatus.COMPLETED, DeadLetterStatus.ARCHIVED),
            error_category=(ErrorCategory.NETWORK,),
            workflow=("ingest", "report"),
            since=at(-3600.5),
            until=at(0.000001),
            updated_before=at(-60.25),
            text="Reset",
            fingerprint="fp-net",
        ),
        older_than_seconds=86400.5,
        rate=12.5,
        dry_run=True,
        state=JobState.RUNNING,
        created_by="ops@host",
        updated_at=at(5.123457),
        started_at=at(1.000001),
        finished_at=None,
        cursor="abc==",
        pages=3,
        matched=1200,
        done=10,
        skipped=2,
        failed=1,
        failures=[JobFailure(task_id="t-1", error="boom ✓"), JobFailure(task_id="t/2", error="")],
        summary=TaskSummary(
            total=1200,
            by_status={"completed": 1000, "archived": 200},
            by_category={"network": 1200},
            by_workflow={"ingest": 700, "report": 500},
            sample=["t-1", "t/2"],
        ),
        error=None,
        runner="host:123",
        lease_expires_at=at(35.5),
        runs=2,
    )


# -- single jobs ---------------------------------------------------------------------


async def test_a_created_job_reads_back_exactly(store: Store) -> None:
    job = _rich_job()
    assert await store.jobs.create(job) == job
    read = await store.jobs.get(job.job_id)
    assert read == job
    assert read is not None
    assert read.to_dict() == job.to_dict()
    assert read.filter.status == (DeadLetterStatus.COMPLETED, DeadLetterStatus.ARCHIVED)
    assert read.lease_expires_at == at(35.5)
    assert read.created_at.tzinfo is not None


async def test_creating_an_existing_id_is_refused_and_keeps_the_first(store: Store) -> None:
    first = make_job("dup", created_by="first")
    await store.jobs.create(first)
    with pytest.raises(ValueError, match="dup"):
        await store.jobs.create(make_job("dup", created_by="second"))
    assert await store.jobs.get("dup") == first


async def test_get_of_an_unknown_job_is_none(store: Store) -> None:
    assert await store.jobs.get("nope") is None


async def test_mutate_applies_the_function_and_returns_the_stored_job(store: Store) -> None:
    await store.jobs.create(make_job("m"))

    def start(job: Job) -> Job:
        return job.evolve(state=JobState.RUNNING, runner="r1", started_at=at(1), runs=job.runs + 1)

    stored = await store.jobs.mutate("m", start)
    assert stored.state is JobState.RUNNING
    assert stored.runner == "r1"
    assert stored.runs == 1
    assert await store.jobs.get("m") == stored
    again = await store.jobs.mutate("m", lambda job: job.evolve(runs=job.runs + 1))
    assert again.runs == 2
    assert again.runner == "r1"  # each mutation starts from the stored job


async def test_mutate_of_an_unknown_job_raises_job_not_found(store: Store) -> None:
    with pytest.raises(JobNotFoundError) as caught:
        await store.jobs.mutate("ghost", lambda job: job)
    assert caught.value.job_id == "ghost"
    assert await store.jobs.get("ghost") is None


async def test_a_mutation_that_raises_writes_nothing(store: Store) -> None:
    job = make_job("r")
    await store.jobs.create(job)

    def refuse(current: Job) -> Job:
        raise DLQError(f"refused {current.job_id}")

    with pytest.raises(DLQError, match="refused r"):
        await store.jobs.mutate("r", refuse)
    assert await store.jobs.get("r") == job


async def test_a_mutation_returning_another_job_id_is_refused(store: Store) -> None:
    job = make_job("own")
    await store.jobs.create(job)
    with pytest.raises(ValueError, match="other"):
        await store.jobs.mutate("own", lambda current: current.evolve(job_id="other"))
    assert await store.jobs.get("own") == job
    assert await store.jobs.get("other") is None


async def test_list_is_newest_first_ties_by_id_filtered_by_state_and_limited(
    store: Store,
) -> None:
    jobs = [
        make_job("b", created_at=at(10), state=JobState.DONE),
        make_job("a", created_at=at(10), state=JobState.RUNNING),
        make_job("c", created_at=at(20)),
        make_job("d", created_at=at(10.000001), state=JobState.PAUSED),
        make_job("e", created_at=at(-5), state=JobState.DONE),
    ]
    for job in jobs:
        await store.jobs.create(job)
    listed = await store.jobs.list()
    assert [job.job_id for job in listed] == ["c", "d", "a", "b", "e"]
    assert listed[0] == jobs[2]
    assert [job.job_id for job in await store.jobs.list(limit=2)] == ["c", "d"]
    assert await store.jobs.list(limit=0) == []
    done = await store.jobs.list(states=[JobState.DONE])
    assert [job.job_id for job in done] == ["b", "e"]
    active = await store.jobs.list(states={JobState.RUNNING, JobState.QUEUED, JobState.PAUSED})
    assert [job.job_id for job in active] == ["c", "d", "a"]
    assert await store.jobs.list(states=[JobState.CANCELLED]) == []
    assert await store.jobs.list(states=[]) == []


async def test_list_sees_a_mutation_at_once(store: Store) -> None:
    await store.jobs.create(make_job("x"))
    await store.jobs.mutate("x", lambda job: job.evolve(state=JobState.DONE))
    assert [job.job_id for job in await store.jobs.list(states=[JobState.DONE])] == ["x"]
    assert await store.jobs.list(states=[JobState.QUEUED]) == []


async def test_delete_removes_one_job(store: Store) -> None:
    await store.jobs.create(make_job("x"))
    await store.jobs.create(make_job("y"))
    assert await store.jobs.delete("x") is True
    assert await store.jobs.delete("x") is False
    assert await store.jobs.get("x") is None
    assert [job.job_id for job in await store.jobs.list()] == ["y"]
    with pytest.raises(JobNotFoundError):
        await store.jobs.mutate("x", lambda job: job)


async def test_concurrent_mutations_of_one_job_all_land(store: Store) -> None:
    await store.jobs.create(make_job("n"))

    async def increment() -> None:
        await store.jobs.mutate("n", lambda job: job.evolve(done=job.done + 1))

    async with anyio.create_task_group() as group:
        for _ in range(20):
            group.start_soon(increment)
    stored = await store.jobs.get("n")
    assert stored is not None
    assert stored.done == 20


async def test_jobs_and_tasks_do_not_see_each_other(store: Store) -> None:
    await store.jobs.create(make_job("same-id"))
    assert await store.get("same-id") is None
    assert await store.count() == 0
    await seed(store, make_task(task_id="same-id", now=T0))
    assert (await store.jobs.get("same-id")) == make_job("same-id")
    assert [job.job_id for job in await store.jobs.list()] == ["same-id"]


async def test_a_tasks_last_job_id_round_trips(store: Store) -> None:
    task = make_task(task_id="t", now=T0, last_job_id="job-7")
    await store.mutate("t", put(task))
    read = await store.get("t")
    assert read == task
    assert read is not None
    assert read.last_job_id == "job-7"
    [listed] = await store.query(TaskFilter(), limit=10)
    assert listed.last_job_id == "job-7"


# -- summarize -------------------------------------------------------------------------


_LONG_ERROR = "Connection RESET by the peer while the response body was read"


def _many() -> list[FailedTask]:
    """Tasks over statuses, categories and workflows, some failing at the same time."""
    statuses = list(DeadLetterStatus)
    categories = [ErrorCategory.NETWORK, ErrorCategory.VALIDATION, ErrorCategory.TRANSIENT]
    workflows = ["ingest", "report", "billing ✓"]
    tasks = []
    for i in range(40):
        status = statuses[i % len(statuses)]
        tasks.append(
            make_task(
                task_id=f"t{i:02d}",
                workflow=workflows[i % 3],
                failed_at=at(i // 2),  # pairs share a failure time: ties go by id
                created_at=at(i // 2),
                updated_at=at(i // 2),
                next_retry_at=at(i // 2) if status is DeadLetterStatus.PENDING else None,
                status=status,
                error=f"{_LONG_ERROR if i % 4 == 0 else 'invalid input'} #{i}",
                error_category=categories[i % 3],
                error_fingerprint=f"fp-{i % 5}",
            )
        )
    return tasks


_WORKFLOWS = ("ingest", "report", "billing ✓")


async def _counts(store: Store, flt: TaskFilter, field: str, values: list[Any]) -> dict[str, int]:
    """``count()`` of ``flt`` narrowed to each of ``values`` of ``field`` (nonzero ones)."""
    counts: dict[str, int] = {}
    allowed = getattr(flt, field)
    for value in values:
        if allowed is not None and value not in allowed:
            continue
        n = await store.count(flt.model_copy(update={field: (value,)}))
        if n:
            counts[getattr(value, "value", value)] = n
    return counts


async def _listing(store: Store, flt: TaskFilter) -> list[str]:
    """Every id ``query()`` lists for ``flt``, in its order (small pages)."""
    ids: list[str] = []
    cursor = None
    while True:
        page = await store.query(flt, limit=7, cursor=cursor)
        ids.extend(task.task_id for task in page)
        if page.cursor is None:
            return ids
        cursor = page.cursor


async def _expected(store: Store, flt: TaskFilter, sample: int) -> TaskSummary:
    """What a summary of ``flt`` must be, from ``count()`` and ``query()``."""
    return TaskSummary(
        total=await store.count(flt),
        by_status=await _counts(store, flt, "status", list(DeadLetterStatus)),
        by_category=await _counts(store, flt, "error_category", list(ErrorCategory)),
        by_workflow=await _counts(store, flt, "workflow", list(_WORKFLOWS)),
        sample=(await _listing(store, flt))[:sample],
    )


FILTERS = {
    "everything": TaskFilter(),
    "statuses": TaskFilter(status=(DeadLetterStatus.PENDING, DeadLetterStatus.EXHAUSTED)),
    "category and workflow": TaskFilter(
        error_category=(ErrorCategory.NETWORK,), workflow=("ingest", "billing ✓")
    ),
    "text": TaskFilter(text="connection reset"),
    "fingerprint": TaskFilter(fingerprint="fp-2"),
    "since and until": TaskFilter(since=at(3), until=at(15)),
    "everything at once": TaskFilter(
        status=tuple(DeadLetterStatus),
        workflow=("ingest", "report", "billing ✓"),
        text="RESET",
        since=at(0),
        until=at(19.5),
        fingerprint="fp-0",
    ),
    "updated before": TaskFilter(updated_before=at(4)),
    # longer than one regular expression takes (OpenSearch checks each match)
    "long text": TaskFilter(text="reset by the peer while the response body", until=at(18)),
}


@pytest.mark.parametrize("name", list(FILTERS))
async def test_summarize_counts_what_count_counts_and_samples_the_listing(
    store: Store, name: str
) -> None:
    await seed(store, *_many())
    flt = FILTERS[name]
    summary = await store.summarize(flt, sample=5)
    expected = await _expected(store, flt, 5)
    assert summary == expected
    assert summary.total == sum(summary.by_status.values()) > 0
    assert sum(summary.by_category.values()) == sum(summary.by_workflow.values()) == summary.total


async def test_summarize_without_a_sample_and_with_a_large_one(store: Store) -> None:
    tasks = _many()
    await seed(store, *tasks)
    none = await store.summarize(TaskFilter(), sample=0)
    assert none.sample == []
    assert none.total == len(tasks)
    assert none.by_workflow == {"ingest": 14, "report": 13, "billing ✓": 13}
    everything = await store.summarize(TaskFilter(), sample=1000)
    assert everything.sample == await _listing(store, TaskFilter())
    assert len(everything.sample) == len(tasks)
    default = await store.summarize(TaskFilter())
    assert default.sample == everything.sample[:20]


async def test_summarize_of_nothing_is_empty(store: Store) -> None:
    assert await store.summarize(TaskFilter()) == TaskSummary()
    await seed(store, *_many())
    assert await store.summarize(TaskFilter(workflow=("nope",))) == TaskSummary()
    assert await store.summarize(TaskFilter(since=at(1000))) == TaskSummary()


async def test_summarize_sees_changes_at_once(store: Store) -> None:
    await seed(store, make_task(task_id="a", now=T0, workflow="w"))
    first = await store.summarize(TaskFilter())
    assert first == TaskSummary(
        total=1,
        by_status={"pending": 1},
        by_category={"permanent": 1},
        by_workflow={"w": 1},
        sample=["a"],
    )
    await seed(store, make_task(task_id="b", now=T0 + timedelta(seconds=1), workflow="w"))
    await store.delete("a")
    second = await store.summarize(TaskFilter())
    assert second.total == 1
    assert second.sample == ["b"]
