"""Three processor processes share one breaker per workflow through the store.

A dead downstream (every attempt refused): the three processes (concurrency 2 each,
on a SQLite file or an OpenSearch index) together make at most 2 x min_attempts
attempts before all of them stop claiming, and no task is exhausted. Then the
open time is made to pass, and the fleet runs exactly one half-open round: at
least one probe and at most ``half_open_attempts`` (3), all of them refused, and
the breaker is open again, for longer.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mahavishnu_dlq import DeadLetterQueue
from mahavishnu_dlq.clock import to_micros
from mahavishnu_dlq.downstream import Breaker, BreakerState
from mahavishnu_dlq.models import DeadLetterStatus, TaskFilter
from tests.integration._worker import WORKFLOW
from tests.integration.test_processes import (
    Target,
    _enqueue_due,
    _Procs,
    _read_log,
    _wait_for,
    procs,
    target,
)

__all__ = ["procs", "target"]  # the fixtures, shared with test_processes

MIN_ATTEMPTS = 10
TASKS = 200


async def _breaker_and_exhausted(target: Target) -> tuple[Breaker, int]:
    dlq = DeadLetterQueue(target.store())
    await dlq.connect()
    try:
        (breaker,) = [b for b in await dlq.list_breakers() if b.workflow == WORKFLOW]
        exhausted = await dlq.count_tasks(TaskFilter(status=DeadLetterStatus.EXHAUSTED))
        return breaker, exhausted
    finally:
        await dlq.stop()


async def _open_time_passes(target: Target) -> None:
    """As if ``open_seconds`` had passed: the stored breaker's end moved to now."""
    dlq = DeadLetterQueue(target.store())
    await dlq.connect()
    try:
        now_us = to_micros(datetime.now(timezone.utc))

        def passed(current: dict[str, Any] | None) -> dict[str, Any]:
            assert current is not None
            return {**current, "open_until_us": now_us}

        await dlq.store.controls.mutate(f"breaker/{WORKFLOW}", passed)
    finally:
        await dlq.stop()


def _run_fleet(procs: _Procs, tmp: Path, round_name: str, *extra: str) -> list[dict[str, Any]]:
    logs = [tmp / f"{round_name}-{n}.jsonl" for n in range(3)]
    ready = [tmp / f"{round_name}-{n}.ready" for n in range(3)]
    go = tmp / f"{round_name}.go"
    workers = [
        procs.spawn(
            f"{round_name}-{n}",
            "dead",
            f"w{n}",
            str(logs[n]),
            "--duration=3",
            f"--ready={ready[n]}",
            f"--go={go}",
            *extra,
            n=n,
        )
        for n in range(3)
    ]
    _wait_for(lambda: all(path.exists() for path in ready), 60, "three connected workers")
    go.touch()  # a start barrier: the three claim from the same moment on
    for n, worker in enumerate(workers):
        procs.finish(f"{round_name}-{n}", worker, timeout=60)
    return [record for log in logs for record in _read_log(log)]


def test_three_processes_stop_together_and_run_one_half_open_round(
    procs: _Procs, target: Target, tmp_path: Path
) -> None:
    ids = [f"dead-{i:04d}" for i in range(TASKS)]
    target.run(_enqueue_due, target, ids, lambda i, task_id: {"id": task_id, "i": i})

    outage = _run_fleet(procs, tmp_path, "outage")
    assert MIN_ATTEMPTS <= len(outage) <= 2 * MIN_ATTEMPTS, len(outage)
    # (which processes made them varies: one may trip it before the others claim)
    breaker, exhausted = target.run(_breaker_and_exhausted, target)
    assert breaker.state is BreakerState.OPEN
    assert breaker.trips == 1
    assert exhausted == 0

    target.run(_open_time_passes, target)
    probes = _run_fleet(procs, tmp_path, "half-open")
    assert 1 <= len(probes) <= 3, probes  # one round of half_open_attempts, fleet-wide
    breaker, exhausted = target.run(_breaker_and_exhausted, target)
    assert (breaker.state, breaker.trips) == (BreakerState.OPEN, 2)
    assert exhausted == 0


def test_three_processes_share_one_rate_limit(
    procs: _Procs, target: Target, tmp_path: Path
) -> None:
    """10 tasks/s for the workflow, shared: three processes running for 3 s make
    about 10 x 3 attempts plus the bucket's first second (10), not three times that."""
    ids = [f"rated-{i:04d}" for i in range(TASKS)]
    target.run(_enqueue_due, target, ids, lambda i, task_id: {"id": task_id, "i": i})
    attempts = _run_fleet(procs, tmp_path, "rated", "--up", "--rate=10")
    times = sorted(r["at"] for r in attempts)
    span = times[-1] - times[0]  # about 3 s; more when a process saw the start late
    # 8: a claim of 2 in flight in each of the three processes, and the bucket's rounding
    assert 20 <= len(attempts) <= 10 * max(3.0, span) + 10 + 8, (len(attempts), span)
    late = [t for t in times if t >= times[0] + 1.0]  # after the first second's burst
    assert len(late) <= 10 * span + 5, (len(late), span)
