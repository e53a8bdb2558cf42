"""What an engine integration costs a task that succeeds (issue 18: at most 5 µs).

Run ``python -m benchmarks.bench_engines [--rounds 15] [--calls 20000]``.

A task that succeeds must not pay for the dead-letter queue. Each row runs the same
successful unit of work with the integration installed and without it, in the same
process, interleaved round by round (the order alternating), so both meet the same
load; the cost is the median of the per-round differences, and the smallest
difference (the quiet-machine cost) beside it:

- **Celery**: ``task.apply()`` — a real run of the task through Celery's tracer in
  this process (request context, ``task_prerun`` / ``task_success`` /
  ``task_postrun`` signals, result handling; no broker round trip), with
  :func:`~mahavishnu_dlq.integrations.celery.install` connected and disconnected
  between rounds. And the part that is ours alone: sending ``task_success`` with
  our receiver connected, against no receiver at all.
- **Dramatiq**: what a worker thread does after a message succeeds —
  ``broker.emit_after("process_message", message, result=...)`` through the
  broker's middleware chain — with
  :class:`~mahavishnu_dlq.integrations.dramatiq.DeadLetterMiddleware` in the chain
  and without it; and ``actor.send`` plus the actor's function through
  :class:`dramatiq.brokers.stub.StubBroker` with a real worker is not timed: its
  threads' polling would swamp microseconds.
- **Prefect**: a flow with ``on_failure=[dead_letter_hook]`` against the same flow
  without it. The hook runs only when a run fails; a successful run pays nothing
  of ours, and the row checks it: the hook's counters must not move over all the
  successful runs. A flow run costs about a second here (API round trips to the
  ephemeral server per state change, its log and event flushes), so the timed
  difference is that second's noise, printed for completeness with few calls.

The table is Markdown, ready for ``docs/performance.md``. This is a measurement,
not a test: nothing here fails a build.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

__all__ = ["Measured", "main", "paired"]

TARGET_US = 5.0


@dataclass(frozen=True)
class Measured:
    """One row: per-call microseconds of the bare and the installed runs."""

    label: str
    calls: int
    bare_us: list[float]
    installed_us: list[float]
    #: for a hook only called on failure: whether it ran at all (None: not counted)
    hook_ran: bool | None = None

    @property
    def differences(self) -> list[float]:
        return [i - b for b, i in zip(self.bare_us, self.installed_us, strict=True)]

    @property
    def overhead_us(self) -> float:
        return statistics.median(self.differences)

    @property
    def quiet_us(self) -> float:
        return min(self.installed_us) - min(self.bare_us)


def _time(fn: Callable[[], object], calls: int) -> float:
    """Microseconds per call of ``fn`` over ``calls`` calls (the GC kept out)."""
    gc.collect()
    gc.disable()
    try:
        started = time.perf_counter_ns()
        for _ in range(calls):
            fn()
        return (time.perf_counter_ns() - started) / calls / 1000.0
    finally:
        gc.enable()


def paired(
    label: str,
    bare: Callable[[], object],
    installed: Callable[[], object],
    *,
    switch: Callable[[bool], object] | None = None,
    calls: int,
    rounds: int,
) -> Measured:
    """Time ``bare`` and ``installed`` in alternating order, ``rounds`` times each;
    ``switch(True/False)`` installs and removes the integration around its runs."""
    flip = switch or (lambda on: None)
    flip(False)
    _time(bare, max(1, calls // 10))  # warm-up
    flip(True)
    _time(installed, max(1, calls // 10))
    flip(False)
    bare_us: list[float] = []
    installed_us: list[float] = []
    for number in range(rounds):
        order = [(False, bare), (True, installed)]
        if number % 2:
            order.reverse()
        for on, fn in order:
            flip(on)
            (installed_us if on else bare_us).append(_time(fn, calls))
    flip(False)
    return Measured(label, calls, bare_us, installed_us)


# -- Celery -------------------------------------------------------------------------------


def celery_rows(calls: int, rounds: int) -> list[Measured]:
    from celery import Celery, signals  # noqa: PLC0415 - the extra is optional

    from mahavishnu_dlq import DeadLetterQueue, MemoryStore  # noqa: PLC0415
    from mahavishnu_dlq.integrations.celery import install, installed  # noqa: PLC0415

    app = Celery("bench", broker="memory://", backend="cache+memory://")
    app.conf.update(task_store_eager_result=False, task_ignore_result=True)

    @app.task(name="bench.add")  # type: ignore[untyped-decorator]
    def add(x: int, y: int) -> int:
        return x + y

    install(app, dlq=DeadLetterQueue(MemoryStore()))
    integration = installed(app)
    assert integration is not None

    def switch(on: bool) -> None:
        if on:
            integration.connect()
        else:
            integration.disconnect()

    rows = [
        paired(
            "Celery: `task.apply()` of a task that succeeds",
            lambda: add.apply((1, 2)),
            lambda: add.apply((1, 2)),
            switch=switch,
            calls=max(1, calls // 10),
            rounds=rounds,
        ),
        paired(
            "Celery: `task_success` sent, our receiver vs none",
            lambda: signals.task_success.send(sender=add, result=3),
            lambda: signals.task_success.send(sender=add, result=3),
            switch=switch,
            calls=calls,
            rounds=rounds,
        ),
    ]
    integration.disconnect()
    return rows


# -- Dramatiq ------------------------------------------------------------------------------


def dramatiq_rows(calls: int, rounds: int) -> list[Measured]:
    import dramatiq  # noqa: PLC0415 - the extra is optional
    from dramatiq.brokers.stub import StubBroker  # noqa: PLC0415
    from dramatiq.middleware import default_middleware  # noqa: PLC0415

    from mahavishnu_dlq import DeadLetterQueue, MemoryStore  # noqa: PLC0415
    from mahavishnu_dlq.integrations.dramatiq import DeadLetterMiddleware  # noqa: PLC0415

    def broker(with_dlq: bool) -> Any:
        made = StubBroker(middleware=[m() for m in default_middleware])
        if with_dlq:
            made.add_middleware(DeadLetterMiddleware(dlq=DeadLetterQueue(MemoryStore())))
        return made

    bare, with_dlq = broker(False), broker(True)

    def message(on: Any) -> Any:
        """A message of an actor declared on ``on``, as a worker thread holds it."""

        def add(x: int, y: int) -> int:
            return x + y

        actor = dramatiq.actor(actor_name="bench_add", broker=on)(add)
        return dramatiq.MessageProxy(actor.message(1, 2))

    bare_message, dlq_message = message(bare), message(with_dlq)
    return [
        paired(
            "Dramatiq: `after_process_message` of a message that succeeded",
            lambda: bare.emit_after("process_message", bare_message, result=3),
            lambda: with_dlq.emit_after("process_message", dlq_message, result=3),
            calls=calls,
            rounds=rounds,
        )
    ]


# -- Prefect -------------------------------------------------------------------------------


@contextmanager
def _quiet_prefect() -> Iterator[None]:
    """Prefect on a throwaway home and its ephemeral API, its logs kept off the table."""
    import logging  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as home:
        os.environ.setdefault("PREFECT_HOME", home)
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "ERROR")
        os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        logging.getLogger("prefect").setLevel(logging.ERROR)
        yield


def prefect_rows(calls: int, rounds: int) -> list[Measured]:
    with _quiet_prefect():
        from prefect import flow  # noqa: PLC0415 - the extra is optional

        from mahavishnu_dlq.integrations.prefect import dead_letter_hook  # noqa: PLC0415

        @flow(name="bench-add", persist_result=False)
        def bare(x: int, y: int) -> int:
            return x + y

        @flow(name="bench-add", persist_result=False, on_failure=[dead_letter_hook])
        def hooked(x: int, y: int) -> int:
            return x + y

        before = dict(dead_letter_hook.bridge.counters)
        row = paired(
            "Prefect: a flow run that succeeds, with the hook vs without",
            lambda: bare(1, 2),
            lambda: hooked(1, 2),
            calls=calls,
            rounds=rounds,
        )
        # Prefect calls on_failure hooks only for a failed run: ours ran not once
        touched = dead_letter_hook.bridge.counters != before
        return [Measured(row.label, row.calls, row.bare_us, row.installed_us, hook_ran=touched)]


# -- the table -----------------------------------------------------------------------------


def table(rows: list[Measured]) -> str:
    lines = [
        (
            "| success path | calls x rounds | without (µs) | with (µs) "
            "| cost (µs, median of rounds) | cost on a quiet round (µs) | target |"
        ),
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        verdict = "met" if row.overhead_us <= TARGET_US else "NOT met"
        if row.hook_ran is not None:  # a run costs ~1 s: the difference is that run's noise
            verdict = "NOT met: the hook ran" if row.hook_ran else "met: the hook never ran"
        lines.append(
            f"| {row.label} | {row.calls:,} x {len(row.bare_us)} | "
            f"{statistics.median(row.bare_us):.2f} | {statistics.median(row.installed_us):.2f} | "
            f"{row.overhead_us:+.2f} | {row.quiet_us:+.2f} | ≤ {TARGET_US:g} ({verdict}) |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--prefect-calls", type=int, default=5)
    parser.add_argument("--engines", default="celery,dramatiq,prefect")
    args = parser.parse_args(argv)
    chosen = set(args.engines.split(","))
    rows: list[Measured] = []
    if "celery" in chosen:
        rows += celery_rows(args.calls, args.rounds)
    if "dramatiq" in chosen:
        rows += dramatiq_rows(args.calls, args.rounds)
    if "prefect" in chosen:
        rows += prefect_rows(args.prefect_calls, max(3, args.rounds // 3))
    print(
        f"# engine integrations on the success path — Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    )
    print()
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
