"""Alert rules, their cooldown and delivery; exhausted hooks (the rules' configuration:
``test_alert_rules``).

Time is a :class:`FakeClock`: rules are evaluated at chosen instants and the
sliding window is moved by ``advance``. Only the timeout tests use real time
(a 0.05 s limit on a hook or callback that would otherwise wait for ever).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import anyio
import pytest

from mahavishnu_dlq.alerts import (
    Alert,
    AlertEvaluator,
    AlertRule,
)
from mahavishnu_dlq.hooks import Hooks
from mahavishnu_dlq.models import FailedTask
from mahavishnu_dlq.queue import DeadLetterQueue
from mahavishnu_dlq.testing import FakeClock, make_task

pytestmark = pytest.mark.anyio


def depth(threshold: float, *, cooldown: float = 600) -> AlertRule:
    return AlertRule("depth", "depth", threshold, cooldown_seconds=cooldown)


def stats(queue_size: int = 0, oldest: float | None = None) -> dict[str, Any]:
    return {"queue_size": queue_size, "oldest_pending_age_seconds": oldest}


def logged(caplog: pytest.LogCaptureFixture, action: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.__dict__.get("action") == action]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """Set at the end of a test: lets a sync hook abandoned in its thread finish."""
    event = threading.Event()
    yield event
    event.set()


# --- each kind fires above its threshold, not at or below it ---------------------------


@pytest.mark.parametrize(("size", "fires"), [(999, False), (1000, False), (1001, True)])
async def test_depth_fires_only_above_the_threshold(
    clock: FakeClock, size: int, fires: bool
) -> None:
    evaluator = AlertEvaluator([depth(1000)], clock=clock)
    alerts = await evaluator.evaluate(stats(queue_size=size))
    assert bool(alerts) is fires


async def test_depth_alert_fields_and_message(clock: FakeClock) -> None:
    evaluator = AlertEvaluator([AlertRule("backlog", "depth", 1000)], clock=clock)
    [alert] = await evaluator.evaluate(stats(queue_size=1250))
    assert alert == Alert(
        rule="backlog",
        kind="depth",
        value=1250.0,
        threshold=1000.0,
        message="dlq depth 1250 above 1000",
        at=clock.now(),
    )


@pytest.mark.parametrize(
    ("oldest", "fires"), [(None, False), (3599.5, False), (3600.0, False), (3600.5, True)]
)
async def test_oldest_pending_fires_only_above_the_threshold(
    clock: FakeClock, oldest: float | None, fires: bool
) -> None:
    evaluator = AlertEvaluator([AlertRule("stale", "oldest_pending", 3600)], clock=clock)
    alerts = await evaluator.evaluate(stats(oldest=oldest))
    assert bool(alerts) is fires
    if fires:
        assert alerts[0].value == oldest
        assert alerts[0].message == "dlq oldest pending task waiting 3600.5s, above 3600s"


async def test_missing_or_odd_statistics_are_not_checked(clock: FakeClock) -> None:
    evaluator = AlertEvaluator(
        [AlertRule("d", "depth", 0), AlertRule("o", "oldest_pending", 0)], clock=clock
    )
    assert await evaluator.evaluate({}) == []
    odd = {"queue_size": "many", "oldest_pending_age_seconds": True}
    assert await evaluator.evaluate(odd) == []
    assert evaluator.rules[0].name == "d"


@pytest.mark.parametrize(("events", "fires"), [(4, False), (5, False), (6, True)])
async def test_exhausted_rate_fires_only_above_the_threshold(
    clock: FakeClock, events: int, fires: bool
) -> None:
    evaluator = AlertEvaluator([AlertRule("burst", "exhausted_rate", 5)], clock=clock)
    for _ in range(events):
        evaluator.record_exhausted()
    alerts = await evaluator.evaluate(stats())
    assert bool(alerts) is fires
    if fires:
        assert alerts[0].value == 6
        assert alerts[0].message == "dlq 6 tasks exhausted in the last 300s, above 5"


async def test_threshold_zero_means_any(clock: FakeClock) -> None:
    evaluator = AlertEvaluator(
        [AlertRule("any-task", "depth", 0), AlertRule("any-exhausted", "exhausted_rate", 0)],
        clock=clock,
    )
    assert await evaluator.evaluate(stats(queue_size=0)) == []
    evaluator.record_exhausted()
    fired = await evaluator.evaluate(stats(queue_size=1))
    assert [a.rule for a in fired] == ["any-task", "any-exhausted"]


async def test_statistics_of_a_real_queue(clock: FakeClock) -> None:
    dlq = DeadLetterQueue(clock=clock)
    for n in range(3):
        await dlq.enqueue(f"t{n}", {"n": n}, error=ConnectionError("refused"))
    clock.advance(120)
    evaluator = AlertEvaluator(
        [AlertRule("deep", "depth", 2), AlertRule("stale", "oldest_pending", 60)], clock=clock
    )
    fired = await evaluator.evaluate(await dlq.get_statistics())
    assert {(a.rule, a.value) for a in fired} == {("deep", 3.0), ("stale", 120.0)}


# --- cooldown ---------------------------------------------------------------------------


async def test_cooldown_fires_once_then_again_after_it_while_still_true(clock: FakeClock) -> None:
    evaluator = AlertEvaluator([depth(10, cooldown=600)], clock=clock)
    first = await evaluator.evaluate(stats(queue_size=11))
    assert len(first) == 1
    for step in (1, 300, 298):  # 599 s after firing: still cooling down
        clock.advance(step)
        assert await evaluator.evaluate(stats(queue_size=50)) == []
    clock.advance(1)  # exactly 600 s
    [again] = await evaluator.evaluate(stats(queue_size=50))
    assert again.at - first[0].at == timedelta(seconds=600)
    assert again.value == 50


async def test_condition_clearing_does_not_reset_the_cooldown(clock: FakeClock) -> None:
    evaluator = AlertEvaluator([depth(10, cooldown=600)], clock=clock)
    assert await evaluator.evaluate(stats(queue_size=11))
    clock.advance(100)
    assert await evaluator.evaluate(stats(queue_size=0)) == []  # cleared
    clock.advance(100)
    assert await evaluator.evaluate(stats(queue_size=20)) == []  # back, inside the cooldown
    clock.advance(399)
    assert await evaluator.evaluate(stats(queue_size=20)) == []
    clock.advance(1)  # the cooldown has passed, still true
    assert len(await evaluator.evaluate(stats(queue_size=20))) == 1


async def test_condition_returning_after_the_cooldown_fires_at_once(clock: FakeClock) -> None:
    evaluator = AlertEvaluator([depth(10, cooldown=600)], clock=clock)
    assert await evaluator.evaluate(stats(queue_size=11))
    clock.advance(700)
    assert await evaluator.evaluate(stats(queue_size=0)) == []  # cleared
    clock.advance(3600)
    assert await evaluator.evaluate(stats(queue_size=0)) == []  # nothing fires while clear
    assert len(await evaluator.evaluate(stats(queue_size=12))) == 1  # returns: fires now


async def test_zero_cooldown_fires_at_every_evaluation(clock: FakeClock) -> None:
    evaluator = AlertEvaluator([depth(10, cooldown=0)], clock=clock)
    for _ in range(3):
        assert len(await evaluator.evaluate(stats(queue_size=11))) == 1


async def test_each_rule_has_its_own_cooldown(clock: FakeClock) -> None:
    evaluator = AlertEvaluator(
        [AlertRule("low", "depth", 10), AlertRule("high", "depth", 100)], clock=clock
    )
    assert [a.rule for a in await evaluator.evaluate(stats(queue_size=50))] == ["low"]
    clock.advance(60)
    assert [a.rule for a in await evaluator.evaluate(stats(queue_size=500))] == ["high"]


# --- exhausted_rate: sliding window and bounded memory --------------------------------


async def test_exhausted_events_age_out_of_the_window(clock: FakeClock) -> None:
    evaluator = AlertEvaluator(
        [AlertRule("burst", "exhausted_rate", 4, window_seconds=300, cooldown_seconds=0)],
        clock=clock,
    )
    for _ in range(3):
        evaluator.record_exhausted()
    clock.advance(200)
    for _ in range(2):
        evaluator.record_exhausted()
    clock.advance(99)  # 299 s after the first three: all five count
    assert evaluator.exhausted_count(300) == 5
    assert [a.value for a in await evaluator.evaluate(stats())] == [5.0]
    clock.advance(1)  # the first three are 300 s old: out of the window
    assert evaluator.exhausted_count(300) == 2
    assert await evaluator.evaluate(stats()) == []
    clock.advance(200)
    assert evaluator.exhausted_count(300) == 0


async def test_events_recorded_with_their_own_time(clock: FakeClock) -> None:
    evaluator = AlertEvaluator([AlertRule("burst", "exhausted_rate", 1)], clock=clock)
    now = clock.now()
    evaluator.record_exhausted(now - timedelta(seconds=10))
    evaluator.record_exhausted(now - timedelta(seconds=100))  # late, out of order
    evaluator.record_exhausted(now - timedelta(seconds=10, microseconds=5))  # same second
    evaluator.record_exhausted(now - timedelta(seconds=3000))  # older than any window
    assert evaluator.exhausted_count(300) == 3
    assert evaluator.exhausted_count(50) == 2
    with pytest.raises(ValueError, match="timezone-aware"):
        evaluator.record_exhausted(now.replace(tzinfo=None))


async def test_window_memory_stays_bounded(clock: FakeClock) -> None:
    evaluator = AlertEvaluator(
        [AlertRule("burst", "exhausted_rate", 1, window_seconds=60)], clock=clock
    )
    for _ in range(10_000):  # a burst in one second: one entry
        evaluator.record_exhausted()
    assert len(evaluator._exhausted.buckets) == 1
    assert evaluator.exhausted_count(60) == 10_000
    for _ in range(600):  # ten minutes of five a second, recorded as time goes
        clock.advance(1)
        for _ in range(5):
            evaluator.record_exhausted()
        assert len(evaluator._exhausted.buckets) <= 60
    assert evaluator.exhausted_count(60) == 300  # the last 60 seconds
    clock.advance(60)
    await evaluator.evaluate(stats())
    assert len(evaluator._exhausted.buckets) == 0


async def test_no_rate_rule_keeps_no_events_until_one_is_added(clock: FakeClock) -> None:
    evaluator = AlertEvaluator([depth(10)], clock=clock)
    evaluator.record_exhausted()
    assert len(evaluator._exhausted.buckets) == 0
    evaluator.add_rule(AlertRule("burst", "exhausted_rate", 0, window_seconds=30))
    evaluator.record_exhausted()
    assert [a.rule for a in await evaluator.evaluate(stats())] == ["burst"]


async def test_the_largest_window_decides_what_is_kept(clock: FakeClock) -> None:
    evaluator = AlertEvaluator(
        [
            AlertRule("fast", "exhausted_rate", 2, window_seconds=60),
            AlertRule("slow", "exhausted_rate", 2, window_seconds=3600),
        ],
        clock=clock,
    )
    for _ in range(3):
        evaluator.record_exhausted()
        clock.advance(100)
    assert [a.rule for a in await evaluator.evaluate(stats())] == ["slow"]


def test_rule_names_are_unique(clock: FakeClock) -> None:
    evaluator = AlertEvaluator([depth(1)], clock=clock)
    with pytest.raises(ValueError, match="'depth' exists already"):
        evaluator.add_rule(AlertRule("depth", "oldest_pending", 60))


# --- logging and delivery ---------------------------------------------------------------


async def test_fired_alerts_are_logged_with_their_extras(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    evaluator = AlertEvaluator([AlertRule("backlog", "depth", 1000)], clock=clock)
    with caplog.at_level(logging.WARNING, logger="mahavishnu_dlq"):
        await evaluator.evaluate(stats(queue_size=1250))
        await evaluator.evaluate(stats(queue_size=1250))  # cooling down: not logged
    [record] = logged(caplog, "dlq.alert")
    assert record.levelno == logging.WARNING
    assert record.name.startswith("mahavishnu_dlq")
    assert record.getMessage() == "dlq.alert backlog: dlq depth 1250 above 1000"
    extras = {k: record.__dict__[k] for k in ("rule", "kind", "value", "threshold")}
    assert extras == {"rule": "backlog", "kind": "depth", "value": 1250.0, "threshold": 1000.0}


async def test_sync_and_async_callbacks_receive_the_alerts(clock: FakeClock) -> None:
    got_sync: list[Alert] = []
    got_async: list[Alert] = []

    async def async_callback(alert: Alert) -> None:
        await anyio.lowlevel.checkpoint()
        got_async.append(alert)

    evaluator = AlertEvaluator(
        [AlertRule("a", "depth", 1), AlertRule("b", "depth", 2)],
        clock=clock,
        callbacks=[got_sync.append],
    )
    assert evaluator.add_callback(async_callback) is async_callback
    fired = await evaluator.evaluate(stats(queue_size=5))
    assert [a.rule for a in fired] == ["a", "b"]
    assert got_sync == fired  # in order, per callback
    assert got_async == fired
    assert await evaluator.evaluate(stats(queue_size=5)) == []  # nothing delivered either
    assert len(got_sync) == 2


async def test_failing_callback_is_logged_and_the_others_still_get_the_alert(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    got: list[Alert] = []

    def broken(alert: Alert) -> None:
        raise RuntimeError(f"webhook down for {alert.rule}")

    evaluator = AlertEvaluator([depth(1)], clock=clock, callbacks=[broken, got.append])
    with caplog.at_level(logging.WARNING, logger="mahavishnu_dlq"):
        fired = await evaluator.evaluate(stats(queue_size=2))
    assert got == fired
    [record] = logged(caplog, "dlq.alert_callback_failed")
    assert record.levelno == logging.ERROR
    assert record.__dict__["rule"] == "depth"
    assert record.__dict__["callback"].endswith("broken")
    assert record.__dict__["reason"] == "error"
    assert record.__dict__["error_type"] == "RuntimeError"
    assert record.exc_info is not None
    assert "webhook down for depth" in str(record.exc_info[1])


async def test_slow_callback_times_out_and_is_logged(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    got: list[Alert] = []

    async def hangs(alert: Alert) -> None:
        await anyio.sleep_forever()

    evaluator = AlertEvaluator(
        [depth(1)], clock=clock, callbacks=[hangs, got.append], callback_timeout_seconds=0.05
    )
    with anyio.fail_after(5), caplog.at_level(logging.WARNING, logger="mahavishnu_dlq"):
        await evaluator.evaluate(stats(queue_size=2))
    assert len(got) == 1
    [record] = logged(caplog, "dlq.alert_callback_failed")
    assert record.__dict__["reason"] == "timeout"
    assert record.__dict__["timeout_seconds"] == 0.05
    assert "timed out after 0.05s" in record.getMessage()


def test_timeouts_must_be_positive_and_finite(clock: FakeClock) -> None:
    for bad in (0, -1, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="timeout_seconds"):
            AlertEvaluator(clock=clock, callback_timeout_seconds=bad)
        with pytest.raises(ValueError, match="timeout_seconds"):
            Hooks(timeout_seconds=bad)
    with pytest.raises(TypeError, match="timeout_seconds"):
        Hooks(timeout_seconds=True)


# --- exhausted hooks ----------------------------------------------------------------------


async def test_sync_and_async_hooks_receive_the_task() -> None:
    seen: list[tuple[str, str]] = []

    def sync_hook(task: FailedTask) -> None:
        seen.append(("sync", task.task_id))

    hooks = Hooks([sync_hook])

    @hooks.add_on_exhausted
    async def async_hook(task: FailedTask) -> None:
        await anyio.lowlevel.checkpoint()
        seen.append(("async", task.task_id))

    await hooks.exhausted(make_task(task_id="t-9"))
    assert sorted(seen) == [("async", "t-9"), ("sync", "t-9")]
    await Hooks().exhausted(make_task())  # no hooks: nothing to do


async def test_failing_hook_is_logged_and_the_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[str] = []

    async def broken(task: FailedTask) -> None:
        raise ValueError("ticket system rejected it")

    hooks = Hooks([broken, lambda task: seen.append(task.task_id)])
    with caplog.at_level(logging.WARNING, logger="mahavishnu_dlq"):
        await hooks.exhausted(make_task(task_id="t-1", workflow="billing"))
    assert seen == ["t-1"]
    [record] = logged(caplog, "dlq.hook_failed")
    assert record.levelno == logging.ERROR
    assert record.name.startswith("mahavishnu_dlq")
    assert record.__dict__["task_id"] == "t-1"
    assert record.__dict__["workflow"] == "billing"
    assert record.__dict__["hook"].endswith("broken")
    assert record.__dict__["reason"] == "error"
    assert record.__dict__["error_type"] == "ValueError"


async def test_slow_hooks_time_out_and_are_logged(
    caplog: pytest.LogCaptureFixture, release: threading.Event
) -> None:
    seen: list[str] = []

    async def hangs(task: FailedTask) -> None:
        await anyio.sleep_forever()

    def blocks(task: FailedTask) -> None:  # a sync hook stuck in its thread
        release.wait(30)

    hooks = Hooks([hangs, blocks, lambda task: seen.append(task.task_id)], timeout_seconds=0.05)
    with anyio.fail_after(5), caplog.at_level(logging.WARNING, logger="mahavishnu_dlq"):
        await hooks.exhausted(make_task(task_id="t-2"))
    assert seen == ["t-2"]
    records = logged(caplog, "dlq.hook_failed")
    assert sorted(r.__dict__["hook"].rsplit(".", 1)[-1] for r in records) == ["blocks", "hangs"]
    for record in records:
        assert record.levelno == logging.ERROR
        assert record.__dict__["reason"] == "timeout"
        assert record.__dict__["task_id"] == "t-2"


async def test_cancelling_the_caller_still_cancels() -> None:
    async def hangs(task: FailedTask) -> None:
        await anyio.sleep_forever()

    hooks = Hooks([hangs], timeout_seconds=60)
    with anyio.move_on_after(0.05) as scope:
        await hooks.exhausted(make_task())
    assert scope.cancelled_caught
