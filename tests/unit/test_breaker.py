"""Circuit breakers per workflow: the state machine on a fake clock, and the processor
that stops claiming a sick workflow's tasks while the others go on.

Deterministic: a FakeClock, ``run_once``/``drain`` with one task per claim, the memory
store (the shared records are contract-tested on every store).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from mahavishnu_dlq import DeadLetterQueue, RetryProcessor
from mahavishnu_dlq.alerts import AlertRule
from mahavishnu_dlq.downstream import Breaker, BreakerBook, BreakerPolicy, BreakerState
from mahavishnu_dlq.models import AttemptOutcome, DeadLetterStatus, ErrorCategory, TaskFilter
from mahavishnu_dlq.settings import DLQSettings
from mahavishnu_dlq.testing import FakeClock

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 5, 1, tzinfo=timezone.utc)
POLICY = BreakerPolicy(min_attempts=10, failure_ratio=0.5, window_seconds=60, open_seconds=30)
CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# -- the state machine -------------------------------------------------------------------


def test_it_trips_only_with_enough_outcomes_and_a_high_enough_ratio() -> None:
    breaker = Breaker("svc")
    breaker, moved = breaker.observe(at(0), 0, 9, POLICY)
    assert (breaker.state, moved) == (CLOSED, None)  # 9 < min_attempts
    breaker, moved = breaker.observe(at(1), 11, 0, POLICY)
    assert moved is None  # 9 of 20: below half
    breaker, moved = breaker.observe(at(2), 0, 2, POLICY)
    assert (breaker.state, moved) == (OPEN, OPEN)  # 11 of 22
    assert breaker.open_until == at(2 + 30)
    assert breaker.trips == 1


def test_outcomes_leave_the_window_as_it_slides() -> None:
    breaker, _ = Breaker("svc").observe(at(0), 0, 9, POLICY)
    assert breaker.counts(at(30), POLICY) == (0, 9)
    assert breaker.counts(at(70), POLICY) == (0, 0)
    breaker, moved = breaker.observe(at(70), 0, 9, POLICY)
    assert moved is None  # the first nine fell out: 9 < 10
    assert breaker.failure_ratio(at(70), POLICY) == 1.0


def test_half_open_lets_a_fixed_number_of_probes_through_and_closes_on_their_success() -> None:
    opened, _ = Breaker("svc").observe(at(0), 0, 10, POLICY)
    assert not opened.allows(at(29))
    assert opened.allows(at(30))
    probing = opened.half_open(at(30))
    probing, granted = probing.reserve(2, POLICY)
    assert granted == 2
    probing, granted = probing.reserve(5, POLICY)
    assert granted == 1  # three in all, across every processor
    probing, granted = probing.reserve(5, POLICY)
    assert granted == 0
    probing = probing.give_back(1)
    assert probing.probes == 2
    probing, moved = probing.observe(at(31), 2, 0, POLICY)
    assert (probing.state, moved) == (HALF_OPEN, None)
    closed, moved = probing.observe(at(32), 1, 0, POLICY)
    assert (closed.state, moved, closed.trips) == (CLOSED, CLOSED, 0)
    assert closed.window == ()


def test_a_sick_probe_opens_it_again_for_longer_up_to_the_cap() -> None:
    policy = BreakerPolicy(min_attempts=1, open_seconds=30, open_max_seconds=100)
    breaker, _ = Breaker("svc").observe(at(0), 0, 1, policy)
    opened_for = []
    now = 0.0
    for _ in range(4):
        assert breaker.open_until is not None
        opened_for.append((breaker.open_until - at(now)).total_seconds())
        now = (breaker.open_until - T0).total_seconds()
        breaker = breaker.half_open(at(now))
        breaker, moved = breaker.observe(at(now), 0, 1, policy)
        assert moved is OPEN
    assert opened_for == [30, 60, 100, 100]


def test_a_breaker_is_stored_as_plain_json_and_read_back_equal() -> None:
    breaker, _ = Breaker("wf/ü x").observe(at(0), 3, 10, POLICY)
    forced = breaker.force_open(at(5), by="ops@host", reason="maintenance")
    for original in (breaker, forced, forced.close(at(9), by="ops@host")):
        assert Breaker.from_record(original.to_record()) == original
    assert forced.open_until is None
    assert not forced.allows(at(10_000))  # until an operator closes it


def test_the_policy_refuses_what_cannot_work() -> None:
    with pytest.raises(ValueError, match="failure_ratio"):
        BreakerPolicy(failure_ratio=0)
    with pytest.raises(ValueError, match="open_max_seconds"):
        BreakerPolicy(open_seconds=60, open_max_seconds=10)
    with pytest.raises(ValueError, match="trip_on: unknown"):
        BreakerPolicy(trip_on=frozenset({"network", "flaky"}))


# -- in the processor --------------------------------------------------------------------


class Downstream:
    """A fake service: up or down, counting the calls it got."""

    def __init__(self) -> None:
        self.up = True
        self.calls = 0

    def __call__(self, task: dict[str, Any], repos: list[str]) -> str:
        self.calls += 1
        if not self.up:
            raise ConnectionError("connection refused")
        return "ok"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


def make_queue(clock: FakeClock, **breaker: Any) -> DeadLetterQueue:
    book = BreakerBook(default=BreakerPolicy(**breaker)) if breaker else BreakerBook()
    return DeadLetterQueue(clock=clock, worker_id="w", batch_size=1, breakers=book)


async def enqueue_due(dlq: DeadLetterQueue, clock: FakeClock, workflow: str, n: int) -> None:
    for i in range(n):
        await dlq.enqueue(
            f"{workflow}-{i:03d}",
            {"n": i},
            error=ConnectionError("x"),
            workflow=workflow,
            max_retries=3,
        )
    clock.advance(3600)  # every first retry is due


async def test_an_outage_costs_one_window_of_attempts_and_no_task_is_exhausted(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    dlq = make_queue(clock)
    service, other = Downstream(), Downstream()
    service.up = False
    dlq.register_handler("svc", service)
    dlq.register_handler("other", other)
    await enqueue_due(dlq, clock, "svc", 30)
    await enqueue_due(dlq, clock, "other", 5)
    processor = RetryProcessor(dlq)
    with caplog.at_level(logging.INFO, logger="mahavishnu_dlq"):
        attempts = await processor.drain()
    assert service.calls == 10  # min_attempts, then the circuit is open
    assert other.calls == 5  # another workflow goes on
    assert attempts == 15
    stats = await dlq.get_statistics()
    assert stats["breakers"]["svc"]["state"] == "open"
    assert stats["breakers"]["svc"]["failure_ratio"] == 1.0
    assert stats["breakers"]["other"]["state"] == "closed"
    assert await dlq.count_tasks(TaskFilter(status=DeadLetterStatus.EXHAUSTED)) == 0
    untouched = await dlq.get_task("svc-029")
    assert untouched is not None
    assert untouched.retry_count == 0  # its retries were not spent
    assert "dlq.breaker.open" in [getattr(r, "action", None) for r in caplog.records]

    # the service recovers; after open_seconds one half-open round of three probes
    service.up = True
    clock.advance(29)
    assert await processor.run_once() == 0  # still open
    clock.advance(1)
    assert await processor.run_once() == 1  # a probe (one per claim here)
    breaker = (await dlq.get_statistics())["breakers"]["svc"]
    assert breaker["state"] == "half_open"
    await processor.drain()
    assert service.calls == 10 + 20  # the three probes closed it; the due rest followed
    assert (await dlq.get_statistics())["breakers"]["svc"]["state"] == "closed"
    assert await dlq.count_tasks(TaskFilter(status=DeadLetterStatus.COMPLETED)) == 25
    clock.advance(3600)  # the ten that failed in the outage: their second retry
    await processor.drain()
    assert await dlq.count_tasks(TaskFilter(status=DeadLetterStatus.COMPLETED)) == 35


async def test_with_the_breaker_off_the_outage_exhausts_tasks(clock: FakeClock) -> None:
    dlq = make_queue(clock, enabled=False)
    service = Downstream()
    service.up = False
    dlq.register_handler("svc", service)
    await dlq.enqueue("t", {"n": 0}, error=ConnectionError("x"), workflow="svc", max_retries=2)
    for _ in range(3):
        clock.advance(86400)
        await RetryProcessor(dlq).drain()
    task = await dlq.get_task("t")
    assert task is not None
    assert task.status is DeadLetterStatus.EXHAUSTED
    assert (await dlq.get_statistics())["breakers"] == {}


async def test_validation_errors_are_the_task_s_fault_and_never_trip_it(clock: FakeClock) -> None:
    dlq = make_queue(clock)

    def invalid(task: dict[str, Any], repos: list[str]) -> None:
        raise ValueError("invalid email address")

    dlq.register_handler("svc", invalid)
    await enqueue_due(dlq, clock, "svc", 20)
    assert await RetryProcessor(dlq).drain() == 20
    assert dlq.downstream.known["svc"].state is CLOSED


async def test_a_half_open_probe_that_fails_opens_it_again_for_longer(clock: FakeClock) -> None:
    dlq = make_queue(clock, min_attempts=2, open_seconds=10)
    service = Downstream()
    service.up = False
    dlq.register_handler("svc", service)
    await enqueue_due(dlq, clock, "svc", 10)
    processor = RetryProcessor(dlq)
    await processor.drain()
    assert service.calls == 2
    clock.advance(10)
    await processor.drain()
    assert service.calls == 3  # one probe failed: open again
    breaker = dlq.downstream.known["svc"]
    assert (breaker.state, breaker.trips) == (OPEN, 2)
    assert breaker.open_until == clock.now() + timedelta(seconds=20)


async def test_an_operator_opens_and_closes_a_breaker_by_hand(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    dlq = make_queue(clock)
    service = Downstream()
    dlq.register_handler("svc", service)
    await enqueue_due(dlq, clock, "svc", 3)
    with caplog.at_level(logging.INFO, logger="mahavishnu_dlq"):
        opened = await dlq.open_breaker("svc", by="ops@box", reason="maintenance")
    assert (opened.state, opened.open_until, opened.by) == (OPEN, None, "ops@box")
    clock.advance(86400)
    assert await RetryProcessor(dlq).drain() == 0  # open until closed by hand
    closed = await dlq.close_breaker("svc", by="ops@box")
    assert closed.state is CLOSED
    assert await RetryProcessor(dlq).drain() == 3
    lines = [r for r in caplog.records if getattr(r, "action", "").startswith("dlq.breaker.")]
    assert [(r.action, r.by) for r in lines] == [  # type: ignore[attr-defined]
        ("dlq.breaker.open", "ops@box"),
    ]
    assert [b.workflow for b in await dlq.list_breakers()] == ["svc"]


async def test_a_breaker_open_alert_fires_with_its_cooldown(clock: FakeClock) -> None:
    dlq = DeadLetterQueue(
        clock=clock,
        worker_id="w",
        alert_rules=[AlertRule("circuit", "breaker_open", threshold=0, cooldown_seconds=300)],
    )
    await dlq.open_breaker("svc", by="ops")
    fired = await dlq.observe()
    assert [(a.rule, a.kind, a.value) for a in fired] == [("circuit", "breaker_open", 1.0)]
    assert await dlq.observe() == []  # cooldown
    await dlq.close_breaker("svc", by="ops")
    clock.advance(301)
    assert await dlq.observe() == []


async def test_a_retry_deadline_is_not_extended_by_an_open_circuit(clock: FakeClock) -> None:
    """The documented choice: a deadline counts from the first failure, open time
    included; a task whose deadline passed while the circuit was open still gets its
    next attempt, and a failure then exhausts it."""
    settings = DLQSettings(
        store="memory",
        processor={
            "batch_size": 1,
            "breaker": {"min_attempts": 1, "open_seconds": 3600, "open_max_seconds": 3600},
        },
        policies={"deadline_seconds": 600},
    )
    dlq = DeadLetterQueue.from_settings(settings)
    dlq.clock = clock
    dlq.alerts.clock = clock
    service = Downstream()
    service.up = False
    dlq.register_handler("svc", service)
    await dlq.enqueue("a", {"n": 0}, error=ConnectionError("x"), workflow="svc", max_retries=5)
    await dlq.enqueue("b", {"n": 1}, error=ConnectionError("x"), workflow="svc", max_retries=5)
    clock.advance(300)
    await RetryProcessor(dlq).drain()
    assert service.calls == 1  # "a" failed; the circuit opened for an hour
    clock.advance(3600)  # b's deadline (600 s after its failure) passed meanwhile
    b = await dlq.get_task("b")
    assert b is not None
    assert (b.status, b.retry_count) == (DeadLetterStatus.PENDING, 0)
    await RetryProcessor(dlq).drain()
    b = await dlq.get_task("b")
    assert b is not None
    assert b.retry_count == 1  # it got its attempt
    assert b.status is DeadLetterStatus.EXHAUSTED  # and its failure, past the deadline, ends it


def test_settings_build_the_book_with_overrides() -> None:
    settings = DLQSettings(
        store="memory",
        processor={
            "breaker": {
                "min_attempts": 4,
                "trip_on": ["network"],
                "by_workflow": {"billing": {"enabled": False}, "mail": {"open_seconds": 5}},
            }
        },
    )
    book = settings.processor.breaker.book()
    assert book.default.min_attempts == 4
    assert book.default.trip_on == frozenset({"network"})
    assert not book.for_workflow("billing").enabled
    assert book.for_workflow("mail").open_seconds == 5
    assert book.for_workflow("mail").min_attempts == 4
    assert book.for_workflow("other") is book.default
    with pytest.raises(Exception, match="open_max_seconds"):
        DLQSettings(store="memory", processor={"breaker": {"open_seconds": 900}})


def test_is_sick_reads_the_category_and_timeouts() -> None:
    from mahavishnu_dlq.downstream.breaker import is_sick  # noqa: PLC0415

    trip = POLICY.trip_on
    assert is_sick(AttemptOutcome.FAILURE, ErrorCategory.NETWORK, trip)
    assert is_sick(AttemptOutcome.TIMEOUT, None, trip)
    assert not is_sick(AttemptOutcome.FAILURE, ErrorCategory.VALIDATION, trip)
    assert not is_sick(AttemptOutcome.SUCCESS, None, trip)
    assert not is_sick(AttemptOutcome.DEFERRED, None, trip)


async def test_transitions_are_counted_and_the_state_is_a_gauge(clock: FakeClock) -> None:
    from tests.unit.test_telemetry import Otel  # noqa: PLC0415 - the SDK test harness

    otel = Otel()
    try:
        dlq = DeadLetterQueue(
            clock=clock,
            worker_id="w",
            batch_size=1,
            breakers=BreakerBook(default=BreakerPolicy(min_attempts=2, open_seconds=10)),
            meter_provider=otel.meter_provider,
        )
        service = Downstream()
        service.up = False
        dlq.register_handler("svc", service)
        await enqueue_due(dlq, clock, "svc", 5)
        processor = RetryProcessor(dlq)
        await processor.drain()
        await dlq.get_statistics()  # what the gauge reports
        assert otel.total("dlq.breaker.transitions", workflow="svc", to="open") == 1
        (point,) = otel.points("dlq.breaker.state")
        assert (point.value, point.attributes["dlq.workflow"]) == (2, "svc")
        service.up = True
        clock.advance(10)
        await processor.drain()
        await dlq.get_statistics()
        assert otel.total("dlq.breaker.transitions", workflow="svc", to="half_open") == 1
        assert otel.total("dlq.breaker.transitions", workflow="svc", to="closed") == 1
        (point,) = otel.points("dlq.breaker.state")
        assert point.value == 0
    finally:
        otel.tracer_provider.shutdown()
        otel.meter_provider.shutdown()
