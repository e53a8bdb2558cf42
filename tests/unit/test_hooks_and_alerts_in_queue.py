"""Hooks and alert rules wired into the queue and the processor (FakeClock, run_once)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from mahavishnu_dlq import DeadLetterQueue, DLQSettings, MemoryStore, RetryProcessor
from mahavishnu_dlq.alerts import Alert, AlertRule
from mahavishnu_dlq.errors import ConfigurationError
from mahavishnu_dlq.models import DeadLetterStatus, FailedTask
from mahavishnu_dlq.testing import FakeClock

pytestmark = pytest.mark.anyio


async def broken(task: dict[str, Any], repos: list[str]) -> None:
    raise ConnectionError("still down")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def dlq(clock: FakeClock) -> DeadLetterQueue:
    queue = DeadLetterQueue(MemoryStore(), clock=clock)
    queue.register_handler("wf", broken)
    return queue


async def test_on_exhausted_runs_once_per_exhausted_task_wherever_it_happens(
    dlq: DeadLetterQueue,
) -> None:
    seen: list[str] = []

    @dlq.on_exhausted
    async def remember(task: FailedTask) -> None:
        assert task.status is DeadLetterStatus.EXHAUSTED
        seen.append(task.task_id)

    # by the processor: one retry allowed, it fails
    await dlq.enqueue(
        "p", {}, error=ConnectionError("x"), workflow="wf", retry_policy="immediate", max_retries=1
    )
    await RetryProcessor(dlq).drain()
    # at enqueue: no retry allowed at all
    await dlq.enqueue("e", {}, error=ConnectionError("x"), workflow="wf", max_retries=0)
    # by a manual retry of the exhausted task (one more retry, failing again)
    await dlq.retry_task("p")
    assert seen == ["p", "e", "p"]


async def test_a_failing_hook_is_logged_and_the_queue_goes_on(
    dlq: DeadLetterQueue, caplog: pytest.LogCaptureFixture
) -> None:
    def explode(task: FailedTask) -> None:
        raise RuntimeError("pager service down")

    dlq.on_exhausted(explode)
    with caplog.at_level(logging.ERROR, logger="mahavishnu_dlq"):
        stored = await dlq.enqueue("e", {}, error=ConnectionError("x"), max_retries=0)
    assert stored.status is DeadLetterStatus.EXHAUSTED
    (record,) = [r for r in caplog.records if getattr(r, "action", "") == "dlq.hook_failed"]
    assert record.task_id == "e"  # type: ignore[attr-defined]


async def test_alert_rules_from_settings_fire_through_the_processor_with_a_cooldown(
    clock: FakeClock,
) -> None:
    settings = DLQSettings(
        alerts=[
            {"name": "backlog", "kind": "depth", "threshold": 2, "cooldown_seconds": 60},
            {"name": "burst", "kind": "exhausted_rate", "threshold": 1, "window_seconds": 300},
        ]
    )
    dlq = DeadLetterQueue.from_settings(settings, store=MemoryStore())
    dlq.clock = clock
    dlq.alerts.clock = clock
    dlq.register_handler("wf", broken)
    fired: list[Alert] = []
    dlq.on_alert(fired.append)
    processor = RetryProcessor(dlq)
    for n in range(3):
        await dlq.enqueue(
            f"t{n}",
            {},
            error=ConnectionError("x"),
            workflow="wf",
            retry_policy="immediate",
            max_retries=1,
        )
    await processor.run_once()  # three retries fail: all exhausted, depth 3
    assert [(a.rule, a.value) for a in fired] == [("backlog", 3.0), ("burst", 3.0)]
    await processor.run_once()  # still true, within the cooldown: silent
    assert len(fired) == 2
    clock.advance(61)
    await processor.run_once()  # backlog repeats after its cooldown; the burst has not
    assert [a.rule for a in fired[2:]] == ["backlog"]


async def test_settings_name_a_bad_alert_rule() -> None:
    with pytest.raises(ConfigurationError) as caught:
        DLQSettings.load(alerts=[{"name": "x", "kind": "depthh", "threshold": 1}])
    assert "alerts" in str(caught.value)
    assert "depthh" in str(caught.value)


async def test_observe_refreshes_the_gauges_snapshot(dlq: DeadLetterQueue) -> None:
    dlq.alerts.add_rule(AlertRule(name="any", kind="depth", threshold=0))
    await dlq.enqueue("t", {}, error=ConnectionError("x"))
    alerts = await dlq.observe()
    assert [a.rule for a in alerts] == ["any"]
    assert dlq.telemetry.snapshot["queue_size"] == 1
