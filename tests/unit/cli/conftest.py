"""What the in-process CLI tests share: running a command and capturing it, the
isolated environment (autouse), the queue under test and its seeds (see
``test_cli_commands``)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from typing import Any, Protocol

import anyio
import pytest
from typer.testing import CliRunner, Result

from mahavishnu_dlq import lifecycle
from mahavishnu_dlq.cli import build_app
from mahavishnu_dlq.cli.app import run_cli
from mahavishnu_dlq.jobs import Job
from mahavishnu_dlq.models import DeadLetterStatus, FailedTask
from mahavishnu_dlq.queue import DeadLetterQueue
from mahavishnu_dlq.storage.memory import MemoryStore
from mahavishnu_dlq.testing import FakeClock, FlakyHandler
from tests.unit import cli_fixtures as fx

MODULE = "tests.unit.cli_fixtures"
SPEC = f"{MODULE}:holder.dlq"
APP = ("--app", SPEC)
WORKER = "cli-test"
START = datetime(2026, 1, 1, tzinfo=timezone.utc)
MASK = "**********"
STATUSES = [s.value for s in DeadLetterStatus]
TASK_KEYS = set(FailedTask.model_fields)
STATS_KEYS = {
    "queue_size",
    "max_size",
    "utilization_percent",
    "status_breakdown",
    "error_categories",
    "retry_policies",
    "lifetime_stats",
    "is_processor_running",
    "retry_interval_seconds",
    "backend",
    "degraded",
    "failover",
    "total_stored",
    "unreadable",
    "location",
    "oldest_pending_age_seconds",
    "top_fingerprints",
    "breakers",
}
#: What ``--json`` prints of a bulk job (replay, retry, archive, purge by filter, jobs show).
JOB_KEYS = set(Job.model_fields)


# -- running the CLI ---------------------------------------------------------------------


@dataclass(frozen=True)
class Ran:
    """What one command did: exit status and the captured streams."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    def one_error_line(self) -> str:
        """The single stderr line of a failed command (and no traceback)."""
        lines = self.err.splitlines()
        assert len(lines) == 1, self.err
        assert "Traceback" not in self.err
        return lines[0]


class Cli(Protocol):
    def __call__(self, *argv: str) -> Ran: ...


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Cli:
    """``run_cli(argv)`` with stdout and stderr captured."""

    def invoke(*argv: str) -> Ran:
        capsys.readouterr()
        code = run_cli(list(argv))
        out, err = capsys.readouterr()
        return Ran(code, out, err)

    return invoke


def prompted(argv: list[str], answer: str) -> Result:
    """Run through CliRunner, answering prompts with ``answer``."""
    return CliRunner().invoke(build_app(), argv, input=answer)


# -- isolation and the queue under test -------------------------------------------------------


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No MAHAVISHNU_DLQ_* from the machine, a wide console, fresh handlers, logging restored."""
    for name in list(os.environ):
        if name.upper().startswith("MAHAVISHNU_DLQ_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setattr(fx, "holder", fx.Holder())
    monkeypatch.setattr(fx, "handlers", {"ok": FlakyHandler(), "bad": FlakyHandler(failures=10**6)})
    monkeypatch.setattr(fx, "single_handler", FlakyHandler(result="single"))
    root = logging.getLogger()
    loggers = [logging.getLogger(name) for name in ("mahavishnu_dlq", "opensearch")]
    levels = (root.level, [logger.level for logger in loggers])
    before = set(root.handlers)
    yield
    for handler in [h for h in root.handlers if h not in before]:
        if type(handler).__name__ == "RichHandler":  # what the CLI's basicConfig installed
            root.removeHandler(handler)
    root.setLevel(levels[0])
    for logger, level in zip(loggers, levels[1], strict=True):
        logger.setLevel(level)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def dlq(clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> DeadLetterQueue:
    """The queue ``--app tests.unit.cli_fixtures:holder.dlq`` names; the CLI's now is its clock."""
    queue = DeadLetterQueue(MemoryStore(), clock=clock, worker_id=WORKER)
    for workflow, handler in fx.handlers.items():
        queue.register_handler(workflow, handler)
    fx.holder.dlq = queue
    return queue


def flaky(workflow: str) -> FlakyHandler:
    """The handler ``tests.unit.cli_fixtures:handlers`` maps ``workflow`` to."""
    handler = fx.handlers[workflow]
    assert isinstance(handler, FlakyHandler)
    return handler


def raised(error: BaseException) -> BaseException:
    """``error`` with a traceback, as a workflow would have raised it."""
    try:
        raise error
    except BaseException as exc:
        return exc


def enqueue(
    dlq: DeadLetterQueue,
    task_id: str,
    *,
    workflow: str = "ok",
    error: BaseException | str | None = None,
    **options: Any,
) -> FailedTask:
    failure = ConnectionError("connection reset by peer") if error is None else error
    call = partial(
        dlq.enqueue, task_id, {"id": task_id}, ["repo-a"], failure, workflow=workflow, **options
    )
    return anyio.run(call)


def record(dlq: DeadLetterQueue, task_id: str) -> FailedTask:
    task = anyio.run(dlq.get_task, task_id)
    assert task is not None, task_id
    return task


def records(dlq: DeadLetterQueue) -> dict[str, FailedTask]:
    return {task.task_id: task for task in anyio.run(partial(dlq.list_tasks, limit=10000))}


def complete(dlq: DeadLetterQueue, task_id: str) -> None:
    assert anyio.run(dlq.retry_task, task_id)["success"]


def archive(dlq: DeadLetterQueue, task_id: str) -> None:
    assert anyio.run(dlq.archive_task, task_id)


def lease(dlq: DeadLetterQueue, task_id: str, owner: str = "other-worker") -> None:
    """Another worker is retrying ``task_id`` right now (a live lease)."""

    def claim(current: FailedTask | None) -> FailedTask:
        assert current is not None
        return lifecycle.claim(
            current,
            now=dlq.clock.now(),
            owner=owner,
            lease_seconds=600,
            trigger="manual",
            attempts_kept=20,
        )

    anyio.run(dlq.store.mutate, task_id, claim)


def snapshot(dlq: DeadLetterQueue) -> dict[str, dict[str, Any]]:
    return {task_id: task.model_dump() for task_id, task in records(dlq).items()}


def jobs(dlq: DeadLetterQueue) -> list[Job]:
    """The stored bulk jobs, newest first."""
    return anyio.run(dlq.list_jobs)


def job_of(dlq: DeadLetterQueue, job_id: str) -> Job:
    return anyio.run(dlq.get_job, job_id)


@pytest.fixture
def mixed(dlq: DeadLetterQueue, clock: FakeClock) -> DeadLetterQueue:
    """net-1/net-2 pending (network), val-1 pending (validation, awaiting an operator),
    exh-1 exhausted, done-1 completed, arch-1 archived — one second apart."""
    enqueue(dlq, "net-1")
    clock.advance(1)
    enqueue(dlq, "net-2", workflow="bad")
    clock.advance(1)
    enqueue(dlq, "val-1", workflow="imports", error=ValueError("invalid row 7"))
    clock.advance(1)
    enqueue(dlq, "exh-1", error=TimeoutError("upstream timed out"), max_retries=0)
    clock.advance(1)
    enqueue(dlq, "done-1")
    complete(dlq, "done-1")
    clock.advance(1)
    enqueue(dlq, "arch-1", workflow="bad")
    archive(dlq, "arch-1")
    statuses = {task_id: task.status.value for task_id, task in records(dlq).items()}
    assert statuses == {
        "net-1": "pending",
        "net-2": "pending",
        "val-1": "pending",
        "exh-1": "exhausted",
        "done-1": "completed",
        "arch-1": "archived",
    }
    return dlq
