"""The CLI as an operator meets it: ``python -m mahavishnu_dlq`` in a process of its own.

- Against a real OpenSearch node (the ``opensearch_url`` fixture, a fresh index per
  test, dropped afterwards): this process enqueues through a ``DeadLetterQueue``
  (asyncio: the store is asyncio-only), then CLI processes list, show, replay,
  archive, purge, clear, retry and run the processor; each one sees what the
  previous one changed.
- Against the embedded default (the per-user SQLite file, a clean environment): an
  application process enqueues and CLI processes see it; and with an ``--app``
  factory whose queue (a memory store) already holds failures.
- Bad input: one line on stderr starting with ``mahavishnu-dlq``, the documented
  exit status (2 usage or configuration, 1 not found or failed), never a
  traceback — an unreachable node included, whose passwords never show.

Handlers and the factory the CLI loads live in :mod:`tests.integration.cli_app`.
A CLI process refreshes the index when it closes its store, so what it wrote is
searchable at once for the next one; only the long-running processor is waited
for, by polling the store with a deadline. Independent commands run side by side
(:meth:`Cli.many`) to keep the file quick.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest

from mahavishnu_dlq import DeadLetterQueue
from mahavishnu_dlq.models import (
    DeadLetterStatus,
    ErrorCategory,
    FailedTask,
    RetryPolicy,
)
from mahavishnu_dlq.settings import DLQSettings, OpenSearchSettings
from mahavishnu_dlq.storage.opensearch import OpenSearchStore
from tests.integration import cli_app
from tests.integration._children import side_by_side
from tests.integration.cli_app import (
    OK_WORKFLOW,
)

ROOT = Path(__file__).resolve().parents[3]
PROG = "mahavishnu-dlq"
HANDLERS = "tests.integration.cli_app:handlers"
FACTORY = "tests.integration.cli_app:memory_queue"
TIMEOUT = 60.0  # for one CLI process; they take about a second

PENDING = DeadLetterStatus.PENDING
EXHAUSTED = DeadLetterStatus.EXHAUSTED
COMPLETED = DeadLetterStatus.COMPLETED
ARCHIVED = DeadLetterStatus.ARCHIVED
NETWORK = ErrorCategory.NETWORK
VALIDATION = ErrorCategory.VALIDATION
PERMANENT = ErrorCategory.PERMANENT

Run = subprocess.CompletedProcess[str]


# -- running the CLI ----------------------------------------------------------------------


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any ``MAHAVISHNU_DLQ_*`` variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("MAHAVISHNU_DLQ_")}
    env["COLUMNS"] = "200"  # wide enough that Rich folds no id, error or cursor
    env.update(extra)
    return env


def _argv(args: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", "mahavishnu_dlq", *args]


def describe(run: Run) -> str:
    """The command, its exit status and output, for assertion messages."""
    command = shlex.join([PROG, *run.args[3:]])
    return (
        f"$ {command}\nexit status {run.returncode}\n"
        f"--- stdout ---\n{run.stdout}\n--- stderr ---\n{run.stderr}"
    )


@dataclass(frozen=True)
class Cli:
    """``mahavishnu-dlq`` in subprocesses with one environment, from the repository root."""

    env: dict[str, str]

    def __call__(self, *args: str, stdin: str = "") -> Run:
        """Run one command; ``stdin`` is its whole input (empty: a prompt sees EOF)."""
        return subprocess.run(  # noqa: S603 - our own interpreter and module
            _argv(args),
            cwd=ROOT,
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )

    def many(self, *commands: Sequence[str]) -> list[Run]:
        """Independent commands, run side by side; their results in order."""
        return side_by_side([_argv(command) for command in commands], self.env, TIMEOUT)


def ok(run: Run) -> str:
    """The stdout of a command that must succeed (exit 0, no traceback)."""
    assert run.returncode == 0, describe(run)
    assert "Traceback" not in run.stderr, describe(run)
    return run.stdout


def data(run: Run) -> Any:
    """The JSON a successful ``--json`` command printed."""
    return json.loads(ok(run))


def refused(run: Run, code: int, *needles: str) -> str:
    """A problem reported the CLI way: exit ``code``, one line on stderr naming ``needles``."""
    line = run.stderr.strip()
    assert run.returncode == code, describe(run)
    assert "Traceback" not in run.stderr, describe(run)
    assert len(line.splitlines()) == 1, describe(run)
    assert line.startswith(PROG), describe(run)
    for needle in needles:
        assert needle in line, f"{needle!r} not named\n{describe(run)}"
    return line


def ids_of(listing: dict[str, Any]) -> list[str]:
    """The task ids of a ``list --json`` page, in order."""
    return [task["task_id"] for task in listing["tasks"]]


# -- the OpenSearch side: enqueue and read in this process -----------------------------------


@dataclass(frozen=True)
class Failure:
    """A failure this process enqueues, and the status it is brought to before the CLI runs.

    PENDING: awaiting an operator (policy "never") unless ``policy`` says otherwise;
    EXHAUSTED: no retries allowed; ARCHIVED: archived; COMPLETED: retried successfully.
    """

    task_id: str
    workflow: str = OK_WORKFLOW
    status: DeadLetterStatus = PENDING
    category: ErrorCategory = NETWORK
    error: str = "connection reset by peer"
    policy: RetryPolicy = RetryPolicy.NEVER
    max_retries: int = 3
    task: dict[str, Any] = field(default_factory=dict)


def raised(message: str) -> RuntimeError:
    """A RuntimeError that was really raised (it has a traceback through ``charge_card``)."""

    def charge_card() -> None:
        raise RuntimeError(message)

    try:
        charge_card()
    except RuntimeError as exc:
        return exc
    raise AssertionError("charge_card did not raise")  # pragma: no cover


class Node:
    """One test's index on the real node: the CLI's environment, enqueue and read."""

    def __init__(self, url: str, index: str) -> None:
        self.url = url
        self.index = index
        self.cli = Cli(
            clean_env(
                MAHAVISHNU_DLQ_STORE="opensearch",
                MAHAVISHNU_DLQ_OPENSEARCH__HOSTS=json.dumps([url]),
                MAHAVISHNU_DLQ_OPENSEARCH__INDEX=index,
            )
        )

    def queue(self) -> DeadLetterQueue:
        settings = DLQSettings(
            store="opensearch", opensearch=OpenSearchSettings(hosts=[self.url], index=self.index)
        )
        return DeadLetterQueue.from_settings(settings)

    def enqueue(self, *failures: Failure) -> None:
        """Enqueue ``failures`` in order, each brought to its status; the store is closed after."""
        anyio.run(partial(self._enqueue, failures), backend="asyncio")

    async def _enqueue(self, failures: Sequence[Failure]) -> None:
        dlq = self.queue()
        dlq.default_callback = cli_app.succeed  # completes what is to be COMPLETED
        await dlq.connect()  # not start(): no processor in this process
        try:
            for f in failures:
                exhausted = f.status is EXHAUSTED
                await dlq.enqueue(
                    f.task_id,
                    {"id": f.task_id, **f.task},
                    ["repo-a", "repo-b"],
                    raised(f.error),
                    retry_policy=RetryPolicy.EXPONENTIAL if exhausted else f.policy,
                    max_retries=0 if exhausted else f.max_retries,
                    error_category=f.category,
                    workflow=f.workflow,
                )
                if f.status is ARCHIVED:
                    assert await dlq.archive_task(f.task_id)
                elif f.status is COMPLETED:
                    assert (await dlq.retry_task(f.task_id))["success"]
        finally:
            await dlq.stop()

    def get(self, *task_ids: str) -> dict[str, FailedTask | None]:
        """The stored records (realtime reads: no refresh needed), None where there is none."""
        return anyio.run(partial(self._get, task_ids), backend="asyncio")

    async def _get(self, task_ids: Sequence[str]) -> dict[str, FailedTask | None]:
        store = OpenSearchStore(hosts=[self.url], index=self.index)
        try:
            return {task_id: await store.get(task_id) for task_id in task_ids}
        finally:
            await store.close()

    def records(self, *task_ids: str) -> dict[str, FailedTask]:
        """The stored records of ``task_ids``, which must all exist."""
        found = self.get(*task_ids)
        missing = [task_id for task_id, task in found.items() if task is None]
        assert not missing, f"no record of {missing}"
        return {task_id: task for task_id, task in found.items() if task is not None}

    def statuses(self, *task_ids: str) -> dict[str, str]:
        """``{task_id: status}``, "missing" for a record that is gone."""
        return {
            task_id: "missing" if task is None else task.status.value
            for task_id, task in self.get(*task_ids).items()
        }

    async def drop(self) -> None:
        store = OpenSearchStore(hosts=[self.url], index=self.index)
        try:
            await store.drop()
        finally:
            await store.close()


@pytest.fixture
def node(opensearch_url: str) -> Iterator[Node]:
    """A fresh index on the session's node (skipped or failed as the fixture decides)."""
    index = Node(opensearch_url, f"cli-accept-{uuid.uuid4().hex[:8]}")
    try:
        yield index
    finally:
        anyio.run(index.drop, backend="asyncio")


def wait_until(
    what: str, condition: Callable[[], bool], proc: subprocess.Popen[bytes], timeout: float
) -> None:
    """Poll ``condition()`` until true; fail after ``timeout`` s or if ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"the processor exited ({proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.1)
