"""``claim_due(..., skip_workflows=...)`` on every store: the tasks of workflows whose
circuit breakers are open are not looked at, so however many of them are due (and
older), the other workflows' due tasks are claimed."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from functools import partial

import pytest

from mahavishnu_dlq.models import DeadLetterStatus, FailedTask
from mahavishnu_dlq.storage import Store

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 7, 1, tzinfo=timezone.utc)


def due_task(task_id: str, workflow: str, due: datetime) -> FailedTask:
    return FailedTask(
        task_id=task_id,
        workflow=workflow,
        error="down",
        status=DeadLetterStatus.PENDING,
        next_retry_at=due,
        failed_at=T0,
        created_at=T0,
        updated_at=T0,
    )


def made(task: FailedTask, _current: FailedTask | None) -> FailedTask:
    return task


def claim(current: FailedTask | None) -> FailedTask:
    assert current is not None
    lease = T0 + timedelta(days=1)
    return current.evolve(status=DeadLetterStatus.RETRYING, lease_owner="w", lease_expires_at=lease)


async def test_tasks_of_skipped_workflows_are_not_claimed_however_many_come_first(
    store: Store,
) -> None:
    for i in range(300):  # due first: a dead downstream's backlog
        await store.mutate(f"dead-{i:03d}", partial(made, due_task(f"dead-{i:03d}", "dead", T0)))
    for i in range(3):
        later = T0 + timedelta(seconds=10 + i)
        await store.mutate(f"live-{i}", partial(made, due_task(f"live-{i}", "live", later)))
    now = T0 + timedelta(minutes=1)
    claimed = await store.claim_due(now, 3, claim, skip_workflows={"dead"})
    assert sorted(t.task_id for t in claimed) == ["live-0", "live-1", "live-2"]
    assert await store.claim_due(now, 3, claim, skip_workflows={"dead", "live"}) == []
    unskipped = await store.claim_due(now, 2, claim)
    assert [t.workflow for t in unskipped] == ["dead", "dead"]
