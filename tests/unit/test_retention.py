"""Retention on the memory store: each rule archives or purges exactly the tasks old
enough and of its status, a rule turned off does nothing, one run per interval across
processors sharing a store, a rule waits for its unfinished job, and what a run did is
logged and counted. The settings that build it are at the end.

Deterministic: a FakeClock, processors driven by ``run_once``; the compare-and-set of
the schedule on every store is in tests/contract/test_retention_schedule.py.
"""

from __future__ import annotations

import logging
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from mahavishnu_dlq import DeadLetterQueue, RetryProcessor
from mahavishnu_dlq.jobs import JobKind, JobState
from mahavishnu_dlq.jobs.runner import JobRunner
from mahavishnu_dlq.retention import RETENTION_KEY, Retention, RetentionScheduler
from mahavishnu_dlq.settings import DLQSettings
from mahavishnu_dlq.storage import MemoryStore, Store
from mahavishnu_dlq.testing import FakeClock
from tests.unit.settings_support import (  # clean_environment: an autouse fixture
    clean_environment,  # noqa: F401
    refused,
    write,
)

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
DAY = timedelta(days=1)
STATUSES = ("pending", "exhausted", "completed", "archived")


def queue(clock: FakeClock, store: Store | None = None, **kwargs: object) -> DeadLetterQueue:
    dlq = DeadLetterQueue(
        store or MemoryStore(),
        clock=clock,
        rng=random.Random(3),
        worker_id=str(kwargs.pop("worker_id", "w-1")),
        **kwargs,  # type: ignore[arg-type]
    )
    dlq.register_handler("ok", lambda task, repos: {"ok": True})
    return dlq


async def make(dlq: DeadLetterQueue, status: str, prefix: str, n: int = 2) -> list[str]:
    """``n`` tasks that end up in ``status`` now."""
    ids = [f"{prefix}-{status}-{i}" for i in range(n)]
    for task_id in ids:
        if status == "pending":  # no handler for "held": no processor takes it
            await dlq.enqueue(task_id, {}, error="down", workflow="held", max_retries=3)
        elif status == "exhausted":
            await dlq.enqueue(
                task_id, {}, error=ConnectionError("down"), workflow="ok", max_retries=0
            )
        else:
            await dlq.enqueue(task_id, {}, error="down", workflow="ok", max_retries=3)
            if status == "completed":
                assert (await dlq.retry_task(task_id))["success"]
            else:
                assert await dlq.archive_task(task_id)
    return ids


async def state_of(dlq: DeadLetterQueue, ids: list[str]) -> set[str]:
    """The statuses of ``ids`` ("gone" for a deleted one)."""
    found = set()
    for task_id in ids:
        task = await dlq.get_task(task_id)
        found.add("gone" if task is None else task.status.value)
    return found


RULES = [
    # rule, its age in days, the status it acts on, what an old task of it becomes
    ("archive_exhausted", 30, "exhausted", "archived"),
    ("purge_completed", 7, "completed", "gone"),
    ("purge_archived", 90, "archived", "gone"),
]


@pytest.mark.parametrize(("rule", "days", "status", "becomes"), RULES)
async def test_a_rule_removes_exactly_the_old_tasks_of_its_status(
    rule: str, days: int, status: str, becomes: str
) -> None:
    clock = FakeClock(T0)
    only = {name: (age if name == rule else 0) for name, age, _, _ in RULES}
    dlq = queue(
        clock,
        retention=Retention.in_days(
            archive_exhausted=only["archive_exhausted"],
            purge_completed=only["purge_completed"],
            purge_archived=only["purge_archived"],
        ),
    )
    old = {s: await make(dlq, s, "old") for s in STATUSES}
    clock.advance((days - 1) * DAY)
    young = {s: await make(dlq, s, "young") for s in STATUSES}
    clock.advance(2 * DAY)  # old: days + 1 days since their last update; young: 2 days
    await RetryProcessor(dlq).run_once()
    for s in STATUSES:
        assert await state_of(dlq, young[s]) == {s}, s
        assert await state_of(dlq, old[s]) == ({becomes} if s == status else {s}), s
    (job,) = await dlq.list_jobs()
    assert (job.state, job.done, job.created_by) == (JobState.DONE, 2, f"retention/{rule}")
    assert job.kind is (JobKind.ARCHIVE if rule == "archive_exhausted" else JobKind.PURGE)
    counter = "retention_archived" if rule == "archive_exhausted" else "retention_purged"
    assert (dlq.lifetime[counter], dlq.lifetime["retention_runs"]) == (2, 1)


@pytest.mark.parametrize(
    "retention",
    [
        Retention.off(),
        Retention(
            archive_exhausted_after=None, purge_completed_after=None, purge_archived_after=None
        ),
    ],
    ids=["disabled", "every-rule-off"],
)
async def test_retention_turned_off_does_nothing(retention: Retention) -> None:
    clock = FakeClock(T0)
    dlq = queue(clock, retention=retention)
    tasks = {s: await make(dlq, s, "old") for s in STATUSES}
    clock.advance(1000 * DAY)
    await RetryProcessor(dlq).run_once()
    for s in STATUSES:
        assert await state_of(dlq, tasks[s]) == {s}
    assert await dlq.list_jobs() == []
    assert await dlq.store.controls.get(RETENTION_KEY) is None  # no run was even taken
    assert dlq.lifetime["retention_runs"] == 0


async def test_a_queue_built_in_code_has_the_documented_defaults() -> None:
    retention = DeadLetterQueue().retention
    assert retention == Retention()
    assert [(r.name, r.after) for r in retention.rules()] == [
        ("archive_exhausted", 30 * DAY),
        ("purge_completed", 7 * DAY),
        ("purge_archived", 90 * DAY),
    ]
    assert retention.interval_seconds == 3600


async def test_three_processors_sharing_a_store_make_one_run_per_interval() -> None:
    clock = FakeClock(T0)
    store = MemoryStore()
    queues = [queue(clock, store, worker_id=f"w-{i}") for i in range(3)]
    processors = [RetryProcessor(dlq) for dlq in queues]
    first = await make(queues[0], "completed", "first", 3)
    clock.advance(3600)
    second = await make(queues[1], "completed", "second", 2)

    async def cycle() -> int:
        for processor in processors:
            await processor.run_once()
        return sum(dlq.lifetime["retention_runs"] for dlq in queues)

    clock.set(T0 + 7 * DAY + timedelta(minutes=30))
    assert await cycle() == 1
    assert await state_of(queues[0], first) == {"gone"}
    assert await state_of(queues[0], second) == {"completed"}  # 6.5 days old
    clock.set(T0 + 7 * DAY + timedelta(minutes=89))  # old enough, but the hour is not over
    assert await cycle() == 1
    assert await state_of(queues[0], second) == {"completed"}
    clock.set(T0 + 7 * DAY + timedelta(minutes=90))
    assert await cycle() == 2
    assert await state_of(queues[0], second) == {"gone"}
    jobs = await queues[2].list_jobs()
    assert [(j.kind, j.matched, j.done) for j in jobs] == [
        (JobKind.PURGE, 2, 2),  # newest first
        (JobKind.PURGE, 3, 3),
    ]
    assert sum(dlq.lifetime["retention_purged"] for dlq in queues) == 5
    record = await store.controls.get(RETENTION_KEY)
    assert record is not None
    assert record["jobs"] == {"purge_completed": jobs[0].job_id}


async def test_a_rule_waits_while_its_earlier_job_has_not_finished(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock(T0)
    dlq = queue(clock, retention=Retention.in_days(archive_exhausted=0, purge_archived=0))
    await make(dlq, "completed", "a", 2)
    clock.advance(8 * DAY)
    scheduler = RetentionScheduler(dlq)
    (first,) = await scheduler.run_due()  # started, not run: no processor took it yet
    await make(dlq, "completed", "b", 1)
    clock.advance(8 * DAY)
    with caplog.at_level(logging.INFO, logger="mahavishnu_dlq"):
        assert await scheduler.run_due() == []
    assert f"purge_completed (waits for {first.job_id})" in caplog.text
    assert await JobRunner(dlq).run_pending() == 1  # the first job ends (2 tasks)
    clock.advance(3600)
    (second,) = await scheduler.run_due()
    assert second.matched == 1
    assert second.job_id != first.job_id


async def test_a_run_is_logged_and_counted_with_what_its_jobs_removed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock(T0)
    dlq = queue(clock)
    await make(dlq, "exhausted", "old", 3)
    await make(dlq, "completed", "old", 2)
    clock.advance(31 * DAY)
    with caplog.at_level(logging.INFO, logger="mahavishnu_dlq"):
        await RetryProcessor(dlq).run_once()
    jobs = {job.created_by: job for job in await dlq.list_jobs()}
    assert set(jobs) == {"retention/archive_exhausted", "retention/purge_completed"}
    archive, purge = jobs["retention/archive_exhausted"], jobs["retention/purge_completed"]
    runs = [r for r in caplog.records if getattr(r, "action", None) == "dlq.retention"]
    assert len(runs) == 1
    assert runs[0].levelno == logging.INFO
    assert runs[0].jobs == {  # type: ignore[attr-defined]
        "archive_exhausted": archive.job_id,
        "purge_completed": purge.job_id,
    }
    assert f"archive_exhausted {archive.job_id} (3 tasks)" in runs[0].getMessage()
    ends = {
        r.rule: r.getMessage()  # type: ignore[attr-defined]
        for r in caplog.records
        if getattr(r, "action", None) == "dlq.retention.finished"
    }
    assert ends == {
        "archive_exhausted": f"dlq.retention.finished {archive.job_id}: archive_exhausted "
        "done, archived 3 of 3 matched (0 skipped, 0 failed)",
        "purge_completed": f"dlq.retention.finished {purge.job_id}: purge_completed done, "
        "purged 2 of 2 matched (0 skipped, 0 failed)",
    }
    stats = await dlq.get_statistics()
    assert {k: v for k, v in stats["lifetime_stats"].items() if k.startswith("retention")} == {
        "retention_runs": 1,
        "retention_archived": 3,
        "retention_purged": 2,
    }
    # the 3 archived just now are young: the archived rule leaves them for 90 days
    assert {k: v for k, v in stats["status_breakdown"].items() if v} == {"archived": 3}


async def test_a_run_with_nothing_old_enough_starts_no_job_and_logs_below_info(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock(T0)
    dlq = queue(clock)
    await make(dlq, "completed", "young", 2)
    with caplog.at_level(logging.INFO, logger="mahavishnu_dlq"):
        await RetryProcessor(dlq).run_once()
    assert await dlq.list_jobs() == []
    assert dlq.lifetime["retention_runs"] == 1
    assert not [r for r in caplog.records if "retention" in r.getMessage()]


async def test_a_store_that_cannot_be_reached_is_a_warning_not_a_stopped_processor(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock(T0)
    dlq = queue(clock)
    store = dlq.store
    assert isinstance(store, MemoryStore)

    async def refuse(key: str, fn: object) -> dict[str, object]:
        raise ConnectionError("the node is down")

    controls = store.controls
    original = controls.mutate
    controls.mutate = refuse  # type: ignore[method-assign]
    scheduler = RetentionScheduler(dlq)
    with caplog.at_level(logging.INFO, logger="mahavishnu_dlq"):
        for _ in range(3):  # a processor polls every few seconds: one warning
            assert await scheduler.run_due() == []
            clock.advance(60)
        controls.mutate = original  # type: ignore[method-assign]
        await make(dlq, "completed", "old", 1)
        clock.advance(8 * DAY)
        (job,) = await scheduler.run_due()
    assert job.matched == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == [
        "dlq.retention check failed: ConnectionError: the node is down; tried again every 60 s"
    ]
    assert "dlq.retention check works again" in caplog.text


def test_retention_refuses_ages_and_intervals_that_mean_nothing() -> None:
    with pytest.raises(ValueError, match="purge_completed_after must be above zero"):
        Retention(purge_completed_after=timedelta(0))
    with pytest.raises(TypeError, match="archive_exhausted_after must be a timedelta"):
        Retention(archive_exhausted_after=30)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="purge_archived_after must be at most a century"):
        Retention(purge_archived_after=timedelta(days=36501))
    with pytest.raises(ValueError, match="interval_seconds must be > 0"):
        Retention(interval_seconds=0)
    with pytest.raises(ValueError, match="rate must be a number of tasks per second"):
        Retention(rate=-1)


# -- settings -----------------------------------------------------------------------------


def test_retention_settings_default_to_the_documented_rules() -> None:
    settings = DLQSettings(store="memory")
    assert settings.retention.policy() == Retention()
    assert DeadLetterQueue.from_settings(settings).retention == Retention()


def test_retention_settings_from_yaml_and_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(
        tmp_path,
        "store: memory\nretention:\n  purge_completed_after_days: 3\n"
        "  purge_archived_after_days: 0\n  interval_seconds: 600\n  rate: 100/s\n",
    )
    monkeypatch.setenv("MAHAVISHNU_DLQ_RETENTION__ARCHIVE_EXHAUSTED_AFTER_DAYS", "14")
    settings = DLQSettings.from_yaml(path)
    policy = DeadLetterQueue.from_settings(settings).retention
    assert policy == Retention(
        archive_exhausted_after=14 * DAY,
        purge_completed_after=3 * DAY,
        purge_archived_after=None,
        interval_seconds=600,
        rate=100,
    )
    assert [rule.name for rule in policy.rules()] == ["archive_exhausted", "purge_completed"]
    monkeypatch.setenv("MAHAVISHNU_DLQ_RETENTION__ENABLED", "false")
    assert DLQSettings.from_yaml(path).retention.policy().rules() == []


@pytest.mark.parametrize(
    ("retention", "says"),
    [
        ({"purge_completed_after_days": -1}, "retention.purge_completed_after_days"),
        ({"archive_exhausted_after_days": 36501}, "retention.archive_exhausted_after_days"),
        ({"purge_archived_after_days": "soon"}, "retention.purge_archived_after_days"),
        ({"interval_seconds": 5}, "retention.interval_seconds"),
        ({"rate": "fast"}, "retention.rate"),
        ({"keep_days": 3}, "retention.keep_days"),
    ],
)
def test_bad_retention_settings_are_refused_naming_the_field(
    retention: dict[str, object], says: str
) -> None:
    assert says in refused(retention=retention)
