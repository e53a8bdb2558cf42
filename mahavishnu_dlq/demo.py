"""The demo: a batch of simulated workflows run through the real code paths.

:func:`run_demo` builds a :class:`~mahavishnu_dlq.queue.DeadLetterQueue` on the
memory store with a policy shortened from minutes to fractions of a second,
registers four workflows with ``@dlq.workflow(name)`` and then:

1. runs ``count`` workflows through the decorated wrappers; a failure is a real
   exception raised inside the workflow, classified and stored by the queue and
   re-raised to the caller (the demo counts them);
2. starts the retry processor and waits until nothing is scheduled or being
   retried (or ``timeout`` passes), then stops it.

Whether a run fails, and how many times, is drawn per task from
``random.Random(seed)`` before anything runs, and every workflow counts the
calls it got per task, so "fails twice, then recovers" is what really happens
across the original run and the processor's retries. The scenarios:

- ``sync_orders``: ``ConnectionError``/``TimeoutError`` 1-2 times, then succeeds
  (network -> exponential: 0.2 s, 0.4 s …);
- ``import_catalog``: ``ValueError("invalid SKU …")`` (validation -> never: the
  task waits, pending, for an operator);
- ``charge_card``: an error carrying ``status_code=503`` on every call
  (transient -> exponential, until exhausted);
- ``resize_images``: ``MemoryError`` 1-2 times, then succeeds (resource -> linear).

Nothing is printed here: progress goes to an ``on_progress(snapshot)`` callback
and the outcome is a :class:`DemoResult`; ``mahavishnu-dlq demo`` renders both.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio

from mahavishnu_dlq.downstream.breaker import BreakerBook, BreakerPolicy
from mahavishnu_dlq.models import DeadLetterStatus, FailedTask
from mahavishnu_dlq.policy import PolicyBook, PolicyParams
from mahavishnu_dlq.queue import DeadLetterQueue
from mahavishnu_dlq.settings import DLQSettings
from mahavishnu_dlq.storage.memory import MemoryStore

__all__ = [
    "DEMO_ERRORS",
    "DEMO_POLICY",
    "WORKFLOWS",
    "DemoResult",
    "GatewayError",
    "ProgressCallback",
    "Scenario",
    "build_queue",
    "define_workflows",
    "plan_scenarios",
    "run_demo",
]

#: The demo's retry timing: the documented defaults, with seconds for minutes.
DEMO_POLICY = PolicyParams(
    exponential_base=0.2, exponential_cap=1.0, linear_step=0.3, max_retries=3
)

#: The simulated workflows, in the order they are reported.
WORKFLOWS = ("sync_orders", "import_catalog", "charge_card", "resize_images")

#: Receives a snapshot dict (``phase`` is "execute", "retry" or "done") as the demo runs.
ProgressCallback = Callable[[dict[str, Any]], None]

ALWAYS = -1  #: ``Scenario.failures`` for a task that never recovers

# One block of scenarios (workflow, kind); each block of tasks is this list shuffled,
# so any 12 consecutive tasks hold every kind of failure.
_BLOCK: tuple[tuple[str, str], ...] = (
    ("sync_orders", "ok"),
    ("sync_orders", "ok"),
    ("sync_orders", "flaky"),
    ("sync_orders", "flaky"),
    ("import_catalog", "ok"),
    ("import_catalog", "ok"),
    ("import_catalog", "invalid"),
    ("charge_card", "ok"),
    ("charge_card", "down"),
    ("resize_images", "ok"),
    ("resize_images", "oom"),
    ("resize_images", "oom"),
)


class GatewayError(Exception):
    """The payment gateway answered with an HTTP error status."""

    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code


#: The exceptions the simulated workflows raise (phase 1 catches exactly these).
DEMO_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionError,
    TimeoutError,
    ValueError,
    GatewayError,
    MemoryError,
)


@dataclass(frozen=True, slots=True)
class Scenario:
    """What happens to one task: how many calls fail before one succeeds."""

    workflow: str
    kind: str
    failures: int  #: 0 = succeeds at once, ALWAYS = never succeeds
    work_seconds: float  #: simulated work per call
    variant: int  #: picks the exception type / message detail

    def fails(self, call: int) -> bool:
        """Whether call number ``call`` (1 = the original run) raises."""
        return self.failures == ALWAYS or call <= self.failures


@dataclass
class DemoResult:
    """What a demo run did. ``to_dict()`` is its JSON form (without ``records``)."""

    seed: int
    count: int
    counts: dict[str, int]
    by_workflow: dict[str, dict[str, int]]
    statistics: dict[str, Any]
    examples: dict[str, FailedTask | None]
    elapsed_seconds: float
    execute_seconds: float
    retry_seconds: float
    timed_out: bool
    records: list[FailedTask] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible: statistics, counts, timings and the example records."""
        return {
            "seed": self.seed,
            "count": self.count,
            "counts": dict(self.counts),
            "by_workflow": {name: dict(row) for name, row in self.by_workflow.items()},
            "elapsed_seconds": round(self.elapsed_seconds, 3),
            "execute_seconds": round(self.execute_seconds, 3),
            "retry_seconds": round(self.retry_seconds, 3),
            "timed_out": self.timed_out,
            "statistics": self.statistics,
            "examples": {
                name: None if task is None else task.to_dict()
                for name, task in self.examples.items()
            },
        }


def plan_scenarios(count: int, rng: random.Random) -> dict[str, Scenario]:
    """Task id -> scenario for ``count`` tasks, drawn from ``rng`` (deterministic per seed)."""
    kinds: list[tuple[str, str]] = []
    while len(kinds) < count:
        block = list(_BLOCK)
        rng.shuffle(block)
        kinds.extend(block)
    fixed = {"ok": 0, "invalid": 1, "down": ALWAYS}
    plans: dict[str, Scenario] = {}
    for index, (workflow, kind) in enumerate(kinds[:count], start=1):
        failures = fixed[kind] if kind in fixed else rng.randint(1, 2)
        plans[f"{workflow}-{index:04d}"] = Scenario(
            workflow=workflow,
            kind=kind,
            failures=failures,
            work_seconds=rng.uniform(0.05, 0.2),
            variant=rng.randrange(1000),
        )
    return plans


def build_queue(
    seed: int, *, settings: DLQSettings | None = None, concurrency: int = 8
) -> DeadLetterQueue:
    """A memory-store queue with the demo's short policy.

    ``settings`` (from ``--config``) contribute the classifier rules, ``max_size``
    and ``attempts_kept``; their retry timing is not used (it is in minutes).
    """
    extra: dict[str, Any] = {}
    if settings is not None:
        extra = {
            "classifier": settings.error_classifier(),
            "max_size": settings.max_size,
            "attempts_kept": settings.attempts_kept,
        }
    return DeadLetterQueue(
        MemoryStore(),
        policies=PolicyBook(DEMO_POLICY),
        rng=random.Random(seed),
        worker_id="demo-worker",
        concurrency=concurrency,
        attempt_timeout_seconds=2.0,
        lease_seconds=30.0,
        retry_interval_seconds=0.2,
        # no circuit breaker: a workflow that always fails (charge_card) would open its
        # breaker and hold its scheduled retries past the demo's time limit
        breakers=BreakerBook(default=BreakerPolicy(enabled=False)),
        **extra,
    )


class _World:
    """The simulated outside world: per-task scenarios and the calls each task got."""

    def __init__(self, plans: dict[str, Scenario]) -> None:
        self.plans = plans
        self.calls: Counter[str] = Counter()

    async def call(self, task: dict[str, Any]) -> tuple[Scenario, int, bool]:
        """Count a call of ``task``, do its work; (scenario, call number, whether it fails)."""
        key = str(task["id"])
        self.calls[key] += 1
        number = self.calls[key]
        scenario = self.plans[key]
        await anyio.sleep(scenario.work_seconds)
        return scenario, number, scenario.fails(number)


def define_workflows(
    dlq: DeadLetterQueue, world: _World
) -> dict[str, Callable[..., Awaitable[Any]]]:
    """Register the four demo workflows on ``dlq``; name -> wrapped workflow."""

    @dlq.workflow("sync_orders")
    async def sync_orders(task: dict[str, Any], repos: list[str]) -> dict[str, Any]:
        scenario, number, fails = await world.call(task)
        if fails and scenario.variant % 2:
            raise ConnectionError(
                f"connection reset by peer while syncing order {task['order_id']}"
            )
        if fails:
            raise TimeoutError(f"orders API did not answer within 5s (call {number})")
        return {"order_id": task["order_id"], "synced": True}

    @dlq.workflow("import_catalog")
    async def import_catalog(task: dict[str, Any], repos: list[str]) -> dict[str, Any]:
        _, _, fails = await world.call(task)
        if fails:
            raise ValueError(f"invalid SKU {task['sku']!r}: expected 3 letters, dash, 6 digits")
        return {"sku": task["sku"], "imported": True}

    @dlq.workflow("charge_card")
    async def charge_card(task: dict[str, Any], repos: list[str]) -> dict[str, Any]:
        _, _, fails = await world.call(task)
        if fails:
            raise GatewayError(
                f"payment gateway returned 503 Service Unavailable for {task['amount_cents']}c",
                status_code=503,
            )
        return {"charged_cents": task["amount_cents"]}

    @dlq.workflow("resize_images")
    async def resize_images(task: dict[str, Any], repos: list[str]) -> dict[str, Any]:
        _, _, fails = await world.call(task)
        if fails:
            raise MemoryError(f"out of memory resizing {task['image']} ({task['pixels']} px)")
        return {"image": task["image"], "resized": True}

    return {
        "sync_orders": sync_orders,
        "import_catalog": import_catalog,
        "charge_card": charge_card,
        "resize_images": resize_images,
    }


def _task_input(task_id: str, scenario: Scenario, index: int) -> dict[str, Any]:
    """The workflow input of one task (it carries its own id for the call counter)."""
    variant = scenario.variant
    if scenario.workflow == "sync_orders":
        return {"id": task_id, "order_id": 10_000 + index}
    if scenario.workflow == "import_catalog":
        sku = f"sku{variant:03d}" if scenario.kind == "invalid" else f"ABC-{100_000 + variant}"
        return {"id": task_id, "sku": sku}
    if scenario.workflow == "charge_card":
        return {"id": task_id, "amount_cents": 500 + 25 * variant}
    return {"id": task_id, "image": f"img_{index:04d}.png", "pixels": 4096 * (1 + variant % 4)}


async def _all_records(dlq: DeadLetterQueue) -> list[FailedTask]:
    records: list[FailedTask] = []
    cursor: str | None = None
    while True:
        page = await dlq.list_tasks(limit=1000, cursor=cursor)
        records.extend(page)
        if page.cursor is None:
            return records
        cursor = page.cursor


async def _retry_snapshot(dlq: DeadLetterQueue) -> dict[str, Any]:
    """Phase 2 counts; ``scheduled`` and ``retrying`` come from one listing."""
    scheduled = retrying = manual = 0
    cursor: str | None = None
    while True:
        page = await dlq.list_tasks(
            [DeadLetterStatus.PENDING, DeadLetterStatus.RETRYING], limit=1000, cursor=cursor
        )
        for task in page:
            if task.status is DeadLetterStatus.RETRYING:
                retrying += 1
            elif task.next_retry_at is not None:
                scheduled += 1
            else:
                manual += 1
        if page.cursor is None:
            break
        cursor = page.cursor
    stats = await dlq.get_statistics()
    return {
        "scheduled": scheduled,
        "retrying": retrying,
        "awaiting_manual": manual,
        "status_breakdown": stats["status_breakdown"],
        "lifetime_stats": stats["lifetime_stats"],
    }


def _tally(rows: dict[str, dict[str, int]], records: list[FailedTask]) -> None:
    """Add each stored record's final status to its workflow's row."""
    for record in records:
        row = rows.get(record.workflow)
        if row is not None and record.status.value in row:
            row[record.status.value] += 1


def _examples(records: list[FailedTask]) -> dict[str, FailedTask | None]:
    completed = [r for r in records if r.status is DeadLetterStatus.COMPLETED and r.retry_count]
    exhausted = [r for r in records if r.status is DeadLetterStatus.EXHAUSTED]
    manual = [
        r for r in records if r.status is DeadLetterStatus.PENDING and r.next_retry_at is None
    ]
    return {
        "completed_after_retries": max(completed, key=lambda r: r.retry_count, default=None),
        "exhausted": exhausted[0] if exhausted else None,
        "pending_manual": manual[0] if manual else None,
    }


class _Run:
    """One demo run: the queue, the simulated world, the counters and the progress feed."""

    def __init__(
        self,
        count: int,
        seed: int,
        settings: DLQSettings | None,
        concurrency: int,
        on_progress: ProgressCallback | None,
    ) -> None:
        self.count = count
        self.plans = plan_scenarios(count, random.Random(seed))
        self.world = _World(self.plans)
        self.dlq = build_queue(seed, settings=settings, concurrency=concurrency)
        self.workflows = define_workflows(self.dlq, self.world)
        self.concurrency = concurrency
        self.on_progress = on_progress
        self.counts = {"executed": 0, "succeeded": 0, "failed": 0, "stored": 0}
        self.rows = {
            name: dict.fromkeys(("runs", "ok", "failed", "completed", "exhausted", "pending"), 0)
            for name in WORKFLOWS
        }
        self.started = anyio.current_time()

    def emit(self, phase: str, **extra: Any) -> None:
        if self.on_progress is not None:
            elapsed = anyio.current_time() - self.started
            self.on_progress(
                {"phase": phase, "total": self.count, **self.counts, "elapsed": elapsed, **extra}
            )

    async def execute_all(self) -> None:
        """Phase 1: every task through its decorated workflow, ``concurrency`` at a time."""
        self.emit("execute")
        limiter = anyio.CapacityLimiter(self.concurrency)
        async with anyio.create_task_group() as group:
            for index, task_id in enumerate(self.plans, start=1):
                group.start_soon(self._execute, index, task_id, limiter)

    async def _execute(self, index: int, task_id: str, limiter: anyio.CapacityLimiter) -> None:
        scenario = self.plans[task_id]
        row = self.rows[scenario.workflow]
        row["runs"] += 1
        async with limiter:
            try:
                await self.workflows[scenario.workflow](
                    _task_input(task_id, scenario, index),
                    task_id=task_id,
                    metadata={"source": "mahavishnu-dlq demo", "scenario": scenario.kind},
                )
                self.counts["succeeded"] += 1
                row["ok"] += 1
            except DEMO_ERRORS as exc:  # stored by the DLQ, then re-raised to us
                self.counts["failed"] += 1
                row["failed"] += 1
                self.counts["stored"] += getattr(exc, "dlq_task_id", None) is not None
            self.counts["executed"] += 1
            self.emit("execute")

    async def retry_all(self, timeout: float, poll_interval: float) -> tuple[bool, dict[str, Any]]:
        """Phase 2: run the processor until nothing is scheduled or retrying.

        Returns (timed out, last snapshot).
        """
        deadline = anyio.current_time() + timeout
        await self.dlq.start_retry_processor(check_interval_seconds=0.2)
        try:
            while True:
                snapshot = await _retry_snapshot(self.dlq)
                self.emit("retry", **snapshot)
                if snapshot["scheduled"] == 0 and snapshot["retrying"] == 0:
                    return False, snapshot
                if anyio.current_time() >= deadline:
                    return True, snapshot
                await anyio.sleep(poll_interval)
        finally:
            await self.dlq.stop_retry_processor()


async def run_demo(
    count: int = 60,
    *,
    seed: int | None = None,
    timeout: float = 50.0,
    on_progress: ProgressCallback | None = None,
    settings: DLQSettings | None = None,
    concurrency: int = 8,
    poll_interval: float = 0.1,
) -> DemoResult:
    """Run ``count`` simulated workflows, then let the processor retry their failures.

    ``seed`` fixes which tasks fail and how often (a random seed is drawn when
    None and reported in the result). ``timeout`` caps the retry phase (seconds).
    """
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    if not timeout > 0:
        raise ValueError(f"timeout must be > 0, got {timeout}")
    if seed is None:
        seed = random.SystemRandom().randrange(1_000_000)
    run = _Run(count, seed, settings, concurrency, on_progress)
    async with run.dlq:
        await run.execute_all()
        executed_at = anyio.current_time()
        timed_out, snapshot = await run.retry_all(timeout, poll_interval)
        retried_at = anyio.current_time()
        statistics = await run.dlq.get_statistics()
        records = await _all_records(run.dlq)
    run.counts["workflow_calls"] = sum(run.world.calls.values())
    _tally(run.rows, records)
    snapshot.update(
        status_breakdown=statistics["status_breakdown"],
        lifetime_stats=statistics["lifetime_stats"],
    )
    run.emit("done", **snapshot)
    return DemoResult(
        seed=seed,
        count=count,
        counts=run.counts,
        by_workflow=run.rows,
        statistics=statistics,
        examples=_examples(records),
        elapsed_seconds=anyio.current_time() - run.started,
        execute_seconds=executed_at - run.started,
        retry_seconds=retried_at - executed_at,
        timed_out=timed_out,
        records=records,
    )
