"""A failover store's jobs live on its primary only: while the primary is down a job call
raises :class:`StoreUnavailableError` (bounded by the timeout, counted by the breaker,
refused at once while the circuit is open), while tasks go on in the fallback; and
``summarize`` is routed like ``count``. Its control records are the primary's, the same
way."""

from __future__ import annotations

import builtins
from collections.abc import Collection
from datetime import datetime, timezone
from typing import Any

import anyio
import pytest

from mahavishnu_dlq.errors import StoreUnavailableError
from mahavishnu_dlq.jobs.model import Job, JobKind, JobState, TaskSummary
from mahavishnu_dlq.models import TaskFilter
from mahavishnu_dlq.storage import FailoverStore, MemoryStore
from mahavishnu_dlq.storage.base import ControlMutation, JobMutation
from mahavishnu_dlq.storage.memory_jobs import MemoryControlStore, MemoryJobStore
from mahavishnu_dlq.testing import make_task

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


class Gated(MemoryJobStore):
    """Jobs in memory, behind a node that can be down (refuses) or frozen (never answers)."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.frozen = False
        self.calls = 0

    async def _gate(self) -> None:
        self.calls += 1
        if self.down:
            raise StoreUnavailableError("gated", "connection refused")
        if self.frozen:
            await anyio.sleep_forever()

    async def create(self, job: Job) -> Job:
        await self._gate()
        return await super().create(job)

    async def get(self, job_id: str) -> Job | None:
        await self._gate()
        return await super().get(job_id)

    async def mutate(self, job_id: str, fn: JobMutation) -> Job:
        await self._gate()
        return await super().mutate(job_id, fn)

    async def list(
        self, *, states: Collection[JobState] | None = None, limit: int = 100
    ) -> builtins.list[Job]:
        await self._gate()
        return await super().list(states=states, limit=limit)

    async def delete(self, job_id: str) -> bool:
        await self._gate()
        return await super().delete(job_id)


def job(job_id: str = "j") -> Job:
    return Job(job_id=job_id, kind=JobKind.ARCHIVE, created_at=T0, updated_at=T0, snapshot_at=T0)


async def failover() -> tuple[FailoverStore, MemoryStore, Gated]:
    primary = MemoryStore()
    gated = Gated()
    primary.jobs = gated
    store = FailoverStore(primary, failure_threshold=2, timeout=0.2)
    await store.open()
    return store, primary, gated


async def test_jobs_are_the_primarys() -> None:
    store, primary, gated = await failover()
    made = await store.jobs.create(job())
    assert await primary.jobs.get("j") == made
    assert await store.jobs.list() == [made]
    done = await store.jobs.mutate("j", lambda j: j.evolve(state=JobState.DONE))
    assert await gated.get("j") == done
    assert await store.jobs.delete("j") is True
    assert "Gated" in repr(store.jobs)
    await store.close()


async def test_while_the_primary_is_down_job_calls_fail_and_tasks_go_on() -> None:
    store, _, gated = await failover()
    await store.jobs.create(job())
    gated.down = True
    for _ in range(2):
        with pytest.raises(StoreUnavailableError, match="connection refused"):
            await store.jobs.get("j")
    assert store.health["circuit_open"] is True  # job calls count toward the breaker
    calls = gated.calls
    with pytest.raises(StoreUnavailableError, match="mutate job: circuit open"):
        await store.jobs.mutate("j", lambda j: j.evolve(done=1))
    assert gated.calls == calls  # refused at once: nothing sent
    task = make_task(task_id="t", now=T0)
    assert await store.mutate("t", lambda _current: task) == task  # served by the fallback
    assert (await store.summarize(TaskFilter())).sample == ["t"]  # the fallback's, like count
    gated.down = False
    assert await store.probe() is True
    assert (await store.jobs.get("j")) == job()
    await store.close()


async def test_a_primary_that_does_not_answer_is_a_timeout() -> None:
    store, _, gated = await failover()
    gated.frozen = True
    with anyio.fail_after(5), pytest.raises(StoreUnavailableError, match="list jobs: no answer"):
        await store.jobs.list()
    await store.close()


async def test_summarize_is_the_primarys_while_it_serves() -> None:
    store, primary, _ = await failover()
    await primary.mutate("p", lambda _current: make_task(task_id="p", now=T0, workflow="w"))
    summary = await store.summarize(TaskFilter(), sample=5)
    assert summary == await primary.summarize(TaskFilter(), sample=5)
    assert summary == TaskSummary(
        total=1,
        by_status={"pending": 1},
        by_category=summary.by_category,
        by_workflow={"w": 1},
        sample=["p"],
    )
    await store.close()


class GatedControls(MemoryControlStore):
    """Control records in memory, behind a node that can be down or frozen."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.frozen = False
        self.calls = 0

    async def _gate(self) -> None:
        self.calls += 1
        if self.down:
            raise StoreUnavailableError("gated", "connection refused")
        if self.frozen:
            await anyio.sleep_forever()

    async def get(self, key: str) -> dict[str, Any] | None:
        await self._gate()
        return await super().get(key)

    async def mutate(self, key: str, fn: ControlMutation) -> dict[str, Any]:
        await self._gate()
        return await super().mutate(key, fn)

    async def list(self, prefix: str) -> builtins.list[tuple[str, dict[str, Any]]]:
        await self._gate()
        return await super().list(prefix)

    async def delete(self, key: str) -> bool:
        await self._gate()
        return await super().delete(key)


async def controlled() -> tuple[FailoverStore, GatedControls]:
    primary = MemoryStore()
    gated = GatedControls()
    primary.controls = gated
    store = FailoverStore(primary, failure_threshold=2, timeout=0.2)
    await store.open()
    return store, gated


def opened(_current: dict[str, Any] | None) -> dict[str, Any]:
    return {"state": "open"}


async def test_controls_are_the_primarys() -> None:
    store, gated = await controlled()
    assert await store.controls.mutate("breaker/w", opened) == {"state": "open"}
    assert await gated.get("breaker/w") == {"state": "open"}
    assert await store.controls.get("breaker/w") == {"state": "open"}
    assert await store.controls.list("breaker/") == [("breaker/w", {"state": "open"})]
    assert await store.controls.delete("breaker/w") is True
    assert "GatedControls" in repr(store.controls)
    await store.close()


async def test_while_the_primary_is_down_control_calls_fail_and_tasks_go_on() -> None:
    store, gated = await controlled()
    await store.controls.mutate("breaker/w", opened)
    gated.down = True
    with pytest.raises(StoreUnavailableError, match="connection refused"):
        await store.controls.mutate("breaker/w", opened)
    with pytest.raises(StoreUnavailableError, match="connection refused"):
        await store.controls.list("")
    assert store.health["circuit_open"] is True  # control calls count toward the breaker
    calls = gated.calls
    with pytest.raises(StoreUnavailableError, match="get control: circuit open"):
        await store.controls.get("breaker/w")
    assert gated.calls == calls  # refused at once: nothing sent
    task = make_task(task_id="t", now=T0)
    assert await store.mutate("t", lambda _current: task) == task  # served by the fallback
    gated.down = False
    assert await store.probe() is True
    assert await store.controls.get("breaker/w") == {"state": "open"}
    await store.close()


async def test_a_primary_whose_controls_do_not_answer_is_a_timeout() -> None:
    store, gated = await controlled()
    gated.frozen = True
    with (
        anyio.fail_after(5),
        pytest.raises(StoreUnavailableError, match="mutate control: no answer"),
    ):
        await store.controls.mutate("rate/w", opened)
    await store.close()
