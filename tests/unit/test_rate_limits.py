"""Rate limits per workflow and pauses asked by handlers, on a fake clock.

The shared token bucket is one record per workflow in ``Store.controls`` (the
memory store here; three processes sharing one are in
tests/integration/test_breaker_processes.py).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from mahavishnu_dlq import DeadLetterQueue, RetryProcessor
from mahavishnu_dlq.downstream.rates import Bucket, RateBook, parse_rate
from mahavishnu_dlq.errors import RetryAfter
from mahavishnu_dlq.jobs.runner import JobRunner
from mahavishnu_dlq.models import DeadLetterStatus, TaskFilter
from mahavishnu_dlq.settings import DLQSettings
from mahavishnu_dlq.testing import FakeClock

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 8, 1, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("text", "per_second"),
    [("5/s", 5.0), ("300/min", 5.0), ("3600/h", 1.0), ("2.5", 2.5), (4, 4.0), ("1 / second", 1.0)],
)
def test_rates_are_read_per_second(text: str | float, per_second: float) -> None:
    assert parse_rate(text) == per_second


@pytest.mark.parametrize("bad", ["fast", "0/s", "-1/s", "5/week", "", True])
def test_bad_rates_are_refused_naming_the_forms(bad: Any) -> None:
    with pytest.raises(ValueError, match="rate"):
        parse_rate(bad)


def test_a_bucket_starts_full_refills_at_its_rate_and_holds_one_second() -> None:
    bucket, granted = Bucket().take(T0, 10, rate=4)
    assert granted == 4  # full: one second's worth
    bucket, granted = bucket.take(T0, 10, rate=4)
    assert granted == 0
    assert bucket.next_token_in(T0, rate=4) == pytest.approx(0.25)
    bucket, granted = bucket.take(T0 + timedelta(seconds=0.5), 10, rate=4)
    assert granted == 2
    bucket = bucket.give_back(T0 + timedelta(seconds=0.5), 1, rate=4)
    assert bucket.tokens == pytest.approx(1)
    later = bucket.refilled(T0 + timedelta(hours=1), rate=4)
    assert later.tokens == 4  # never more than the capacity
    assert Bucket.from_record(bucket.to_record()) == bucket
    _slow, granted = Bucket().take(T0, 5, rate=0.5)
    assert granted == 1  # a slow rate still lets one through


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


def make_queue(clock: FakeClock, rates: RateBook) -> DeadLetterQueue:
    dlq = DeadLetterQueue(clock=clock, worker_id="w", batch_size=50, rates=rates)
    dlq.register_handler("api", lambda task, repos: "ok")
    dlq.register_handler("free", lambda task, repos: "ok")
    return dlq


async def enqueue(dlq: DeadLetterQueue, workflow: str, n: int) -> None:
    for i in range(n):
        await dlq.enqueue(
            f"{workflow}-{i:03d}", {"n": i}, error=ConnectionError("x"), workflow=workflow
        )


async def test_a_limited_workflow_is_claimed_at_its_rate_and_others_at_full_speed(
    clock: FakeClock,
) -> None:
    dlq = make_queue(clock, RateBook(by_workflow={"api": 2.0}))
    await enqueue(dlq, "api", 10)
    await enqueue(dlq, "free", 10)
    clock.advance(3600)
    processor = RetryProcessor(dlq)
    assert await processor.run_once() == 2 + 10  # two tokens for api; free is unlimited
    assert await processor.run_once() == 0  # no token left at this instant
    assert dlq.downstream.wake_in() == pytest.approx(0.5)  # the processor sleeps until then
    clock.advance(1)
    assert await processor.run_once() == 2
    clock.advance(0.5)
    assert await processor.run_once() == 1
    done = await dlq.count_tasks(TaskFilter(status=DeadLetterStatus.COMPLETED, workflow="api"))
    assert done == 5


async def test_a_default_limit_is_learned_for_each_workflow_it_meets(clock: FakeClock) -> None:
    dlq = DeadLetterQueue(clock=clock, worker_id="w", batch_size=50, rates=RateBook(default=1))
    dlq.default_callback = lambda task, repos: "ok"
    await enqueue(dlq, "anything", 5)
    clock.advance(3600)
    processor = RetryProcessor(dlq)
    assert await processor.run_once() == 0  # met, not yet limited: left for the next claim
    assert dlq.downstream.wake_in() == 0
    assert await processor.run_once() == 1
    assert await processor.run_once() == 0
    clock.advance(1)
    assert await processor.run_once() == 1


async def test_a_retry_after_pauses_the_whole_workflow_not_only_its_task(
    clock: FakeClock,
) -> None:
    dlq = make_queue(clock, RateBook())
    asked: list[int] = []

    def throttled(task: dict[str, Any], repos: list[str]) -> str:
        if not asked:
            asked.append(task["n"])
            raise RetryAfter(120, "429 Too Many Requests")
        return "ok"

    dlq.register_handler("api", throttled)
    dlq.batch_size = 1
    await enqueue(dlq, "api", 5)
    await enqueue(dlq, "free", 2)
    clock.advance(3600)
    processor = RetryProcessor(dlq)
    await processor.drain()
    assert asked == [0]
    api_done = TaskFilter(status=DeadLetterStatus.COMPLETED, workflow="api")
    assert await dlq.count_tasks(api_done) == 0  # paused, every task of it
    free_done = TaskFilter(status=DeadLetterStatus.COMPLETED, workflow="free")
    assert await dlq.count_tasks(free_done) == 2  # another workflow goes on
    assert dlq.downstream.wake_in() == pytest.approx(120)
    stats = await dlq.get_statistics()
    assert stats["breakers"]["api"]["state"] == "closed"
    clock.advance(121)
    await processor.drain()
    assert await dlq.count_tasks(api_done) == 5


async def test_a_retry_job_takes_a_token_per_task(clock: FakeClock) -> None:
    dlq = make_queue(clock, RateBook(by_workflow={"api": 2.0}))
    await enqueue(dlq, "api", 6)
    job = await dlq.start_job("retry")
    before = clock.now()
    done = await JobRunner(dlq).run(await JobRunner(dlq).claim(job.job_id))
    assert done.done == 6
    # two at once (a full bucket), then one every half second
    assert (clock.now() - before).total_seconds() == pytest.approx(2.0)


def test_settings_take_a_default_and_per_workflow_rates() -> None:
    settings = DLQSettings(
        store="memory", processor={"rate_limit": "50/s", "rate_limits": {"billing": "300/min"}}
    )
    book = settings.processor.rate_book()
    assert (book.default, book.for_workflow("billing"), book.for_workflow("x")) == (50, 5, 50)
    with pytest.raises(Exception, match="billing: a rate is N/s"):
        DLQSettings(store="memory", processor={"rate_limits": {"billing": "lots"}})
