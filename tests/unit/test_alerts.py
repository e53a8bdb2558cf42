"""Alert rules, their cooldown and delivery; exhausted hooks; alert rule configuration.

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
import yaml

from mahavishnu_dlq.alerts import (
    Alert,
    AlertEvaluator,
    AlertKind,
    AlertRule,
    AlertRuleSettings,
    alert_rules_from_config,
    unique_rule_names,
)
from mahavishnu_dlq.errors import ConfigurationError
from mahavishnu_dlq.hooks import Hooks
from mahavishnu_dlq.models import FailedTask
from mahavishnu_dlq.queue import DeadLetterQueue
from mahavishnu_dlq.testing import FakeClock, make_task

pytestmark = pytest.mark.anyio

#: The sample configuration shown in the docs; test_docs_sample_is_valid keeps it valid.
DOCS_SAMPLE = """\
alerts:
  # More than 1000 open tasks (pending, retrying, exhausted).
  - name: dlq-backlog
    kind: depth
    threshold: 1000
    cooldown_seconds: 1800      # repeat at most every 30 min while still true
  # A task has waited more than an hour for its retry.
  - name: dlq-stale
    kind: oldest_pending
    threshold: 3600             # seconds
  # More than 10 tasks ran out of retries in the last 5 minutes.
  - name: dlq-exhaustion-burst
    kind: exhausted_rate
    threshold: 10
    window_seconds: 300
    cooldown_seconds: 900
"""


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


# --- rules and configuration ------------------------------------------------------------


def test_rule_defaults() -> None:
    rule = AlertRule("r", "exhausted_rate", 3)
    assert (rule.window_seconds, rule.cooldown_seconds) == (300.0, 600.0)
    assert isinstance(rule.threshold, float)


@pytest.mark.parametrize(
    ("kwargs", "field", "text"),
    [
        ({"threshold": -1}, "threshold", "threshold must be at least 0, got -1"),
        ({"threshold": float("nan")}, "threshold", "threshold must be at least 0, got nan"),
        (
            {"kind": "size"},
            "kind",
            "must be one of: depth, oldest_pending, exhausted_rate, breaker_open",
        ),
        ({"name": " "}, "name", "non-empty string"),
        ({"window_seconds": 0}, "window_seconds", "greater than 0 and at most 86400, got 0"),
        ({"cooldown_seconds": -5}, "cooldown_seconds", "between 0 and 604800, got -5"),
    ],
)
def test_rule_validation_names_field_value_and_range(
    kwargs: dict[str, Any], field: str, text: str
) -> None:
    fields: dict[str, Any] = {"name": "r", "kind": "depth", "threshold": 1, **kwargs}
    with pytest.raises(ConfigurationError) as info:
        AlertRule(**fields)
    assert info.value.field == field
    assert text in str(info.value)


def test_config_builds_rules() -> None:
    kind: AlertKind = "exhausted_rate"
    rules = alert_rules_from_config(
        [{"name": "burst", "kind": kind, "threshold": 10, "window_seconds": 60}]
    )
    assert rules == [AlertRule("burst", kind, 10, window_seconds=60)]
    assert alert_rules_from_config(None) == []
    assert alert_rules_from_config([]) == []


def test_docs_sample_is_valid() -> None:
    rules = alert_rules_from_config(yaml.safe_load(DOCS_SAMPLE)["alerts"])
    assert [(r.name, r.kind) for r in rules] == [
        ("dlq-backlog", "depth"),
        ("dlq-stale", "oldest_pending"),
        ("dlq-exhaustion-burst", "exhausted_rate"),
    ]
    assert rules[1].cooldown_seconds == 600


OK_RULE = {"name": "ok", "kind": "depth", "threshold": 1}


@pytest.mark.parametrize(
    ("bad", "line"),
    [
        ({"threshold": -5}, "alerts[1].threshold: must be at least 0, got -5"),
        ({"threshold": "lots"}, "alerts[1].threshold: must be a number at least 0, got 'lots'"),
        ({"threshold": ".inf"}, "alerts[1].threshold: must be a finite number at least 0"),
        (
            {"kind": "size"},
            (
                "alerts[1].kind: must be one of: depth, oldest_pending, exhausted_rate, "
                "breaker_open, got 'size'"
            ),
        ),
        (
            {"kind": "exhausted_rate", "window_seconds": 0},
            "alerts[1].window_seconds: must be greater than 0 and at most 86400, got 0",
        ),
        (
            {"kind": "exhausted_rate", "window_seconds": 90000},
            "alerts[1].window_seconds: must be greater than 0 and at most 86400, got 90000",
        ),
        (
            {"window_seconds": 60},
            (
                "alerts[1].window_seconds: only exhausted_rate rules have a window, "
                "this rule is depth, got 60"
            ),
        ),
        (
            {"cooldown_seconds": -1},
            "alerts[1].cooldown_seconds: must be between 0 and 604800, got -1",
        ),
        ({"name": ""}, "alerts[1].name: must not be empty, got ''"),
        ({"name": "ok"}, "alerts[1].name: 'ok' is used by alerts[0] too"),
        (
            {"cooldown": 60},
            (
                "alerts[1].cooldown: unknown setting; allowed here: name, kind, threshold, "
                "window_seconds, cooldown_seconds"
            ),
        ),
    ],
)
def test_config_errors_name_index_field_value_and_range(bad: dict[str, Any], line: str) -> None:
    second: dict[str, Any] = {"name": "second", "kind": "depth", "threshold": 5, **bad}
    if second.get("threshold") == ".inf":
        second["threshold"] = float("inf")
    with pytest.raises(ConfigurationError) as info:
        alert_rules_from_config([OK_RULE, second])
    message = str(info.value)
    assert message.startswith("invalid mahavishnu-dlq configuration (1 problem):\n")
    assert f"  - {line}" in message
    assert info.value.field == line.split(":", 1)[0]


def test_config_reports_every_problem_and_shape_errors() -> None:
    with pytest.raises(ConfigurationError) as info:
        alert_rules_from_config([{"kind": "depth", "threshold": -1}, "depth > 5"])
    message = str(info.value)
    assert "(3 problems)" in message
    assert "alerts[0].name: is required" in message
    assert "alerts[0].threshold: must be at least 0, got -1" in message
    assert "alerts[1]: must be a mapping of settings, got 'depth > 5'" in message
    with pytest.raises(ConfigurationError, match="alerts: must be a list of alert rules"):
        alert_rules_from_config({"name": "x"})


def test_unique_rule_names_as_a_settings_validator() -> None:
    rules = [AlertRuleSettings(name="a", kind="depth", threshold=1)] * 2
    with pytest.raises(ValueError, match=r"'a' is used twice: \[0\] and \[1\]"):
        unique_rule_names(rules)
    assert unique_rule_names(rules[:1]) == rules[:1]
