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
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest

from mahavishnu_dlq import DeadLetterQueue
from mahavishnu_dlq.models import (
    AttemptOutcome,
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
    FAIL_WORKFLOW,
    HANDLER_ERROR,
    MEMORY_TASKS,
    OK_WORKFLOW,
    SLOW_WORKFLOW,
)

ROOT = Path(__file__).resolve().parents[2]
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


# -- OpenSearch: list, status, show ------------------------------------------------------------

QUOTA = "Quota-Exceeded for tenant zebra"

#: Enqueued first; then the --since boundary; then NEWER.
OLDER = (
    *(Failure(f"old-{i}", "billing") for i in range(4)),
    Failure("old-4", "shipping", ARCHIVED, VALIDATION, "order total is negative"),
    Failure("old-5", "shipping", PENDING, VALIDATION, "order total is negative"),
    Failure("old-6", "shipping", EXHAUSTED, PERMANENT, "no such customer"),
    Failure("old-7", "shipping", EXHAUSTED, PERMANENT, "no such customer"),
    Failure("old-8", "billing", PENDING, NETWORK, QUOTA),
    Failure("old-9", "billing", COMPLETED, NETWORK, QUOTA),
)
NEWER = (
    *(Failure(f"new-{i}", "shipping") for i in range(5)),
    Failure("new-5", "billing", PENDING, VALIDATION, "order total is negative"),
    Failure("new-6", "billing", ARCHIVED, VALIDATION, "order total is negative"),
    Failure("new-7", "billing", EXHAUSTED, PERMANENT, "no such customer"),
    Failure("new-8", "shipping", PENDING, NETWORK, QUOTA.upper()),
    Failure("new-9", "billing", COMPLETED, NETWORK, "connection refused"),
)


def _ids(failures: Sequence[Failure], **where: Any) -> set[str]:
    def wanted(f: Failure) -> bool:
        return all(
            getattr(f, key) in value if isinstance(value, tuple) else getattr(f, key) == value
            for key, value in where.items()
        )

    return {f.task_id for f in failures if wanted(f)}


@pytest.mark.opensearch
def test_list_filters_pages_and_status_see_what_another_process_enqueued(node: Node) -> None:
    node.enqueue(*OLDER)
    boundary = datetime.now(timezone.utc)
    node.enqueue(*NEWER)
    every = (*OLDER, *NEWER)
    records = node.records(*_ids(every))
    assert all(records[f.task_id].status is f.status for f in every)

    runs = node.cli.many(
        ["list", "--status", "exhausted,archived", "--limit", "100", "--json"],
        ["list", "--category", "validation", "--json"],
        ["list", "--workflow", "shipping", "--status", "pending", "--json"],
        ["list", "--text", "quota-exceeded FOR", "--json"],
        ["list", "--since", boundary.isoformat(), "--json"],
        ["list", "--since", "1h", "--limit", "100", "--json"],
        ["list", "--limit", "15"],
        ["status", "--json"],
        ["status"],
    )
    by_status, by_category, shipping_pending, text, since_iso, since_age = map(data, runs[:6])
    assert set(ids_of(by_status)) == _ids(every, status=(EXHAUSTED, ARCHIVED))
    assert by_status["count"] == 5
    assert by_status["cursor"] is None
    assert set(ids_of(by_category)) == _ids(every, category=VALIDATION)
    assert set(ids_of(shipping_pending)) == _ids(every, workflow="shipping", status=PENDING)
    assert set(ids_of(text)) == {"old-8", "old-9", "new-8"}
    assert set(ids_of(since_iso)) == _ids(NEWER)
    assert set(ids_of(since_age)) == _ids(every)
    for listing in (by_status, by_category, since_age):  # the records, as stored
        for task in listing["tasks"]:
            assert task == records[task["task_id"]].model_dump(mode="json")

    table = ok(runs[6])
    assert "15 tasks; next page: add --cursor " in table
    newest_first = sorted(every, key=lambda f: records[f.task_id].failed_at, reverse=True)
    assert all(f.task_id in table for f in newest_first[:15])
    assert not any(f.task_id in table for f in newest_first[15:])

    stats = data(runs[7])
    assert stats["backend"] == "opensearch"
    assert stats["total_stored"] == 20
    assert stats["status_breakdown"] == {
        s.value: len(_ids(every, status=s)) for s in DeadLetterStatus
    }
    assert stats["queue_size"] == len(_ids(every, status=(PENDING, EXHAUSTED)))
    assert stats["error_categories"] == {
        c.value: len(_ids(every, category=c)) for c in ErrorCategory
    }
    policies = Counter("exponential" if f.status is EXHAUSTED else f.policy.value for f in every)
    assert stats["retry_policies"] == {p.value: policies[p.value] for p in RetryPolicy}
    assert "opensearch" in ok(runs[8])

    # every page of 8 until the cursor runs out: each task exactly once, newest first
    seen: list[str] = []
    cursor: list[str] = []
    for _ in range(10):
        page = data(node.cli("list", "--limit", "8", "--json", *cursor))
        assert page["count"] == len(page["tasks"]) <= 8
        seen += ids_of(page)
        if page["cursor"] is None:
            break
        cursor = ["--cursor", page["cursor"]]
    else:
        pytest.fail(f"the cursor never ran out; seen {seen}")
    assert Counter(seen) == Counter(_ids(every))
    assert seen == [f.task_id for f in newest_first]


@pytest.mark.opensearch
def test_show_prints_the_record_as_json_and_its_details_for_people(node: Node) -> None:
    failure = Failure(
        "order-1234",
        "billing",
        error="card declined for order 1234",
        task={"order": 1234, "customer": "Zoë Ångström", "lines": [{"sku": "A-1", "qty": 2}]},
    )
    node.enqueue(failure)
    record = node.records("order-1234")["order-1234"]
    assert record.traceback is not None

    as_json, for_people, unknown = node.cli.many(
        ["show", "order-1234", "--json"], ["show", "order-1234"], ["show", "nope"]
    )
    shown = data(as_json)
    assert shown == record.model_dump(mode="json")
    assert FailedTask.model_validate(shown) == record
    text = ok(for_people)
    for part in (
        "order-1234",
        "billing",
        "RuntimeError: card declined for order 1234",  # the error
        "traceback (first failure)",
        "in charge_card",  # the traceback's innermost frame
        "Zoë Ångström",  # the input, not escaped
        '"sku": "A-1"',
        "repo-a, repo-b",
        record.error_fingerprint,
    ):
        assert part in text, f"{part!r} missing\n{describe(for_people)}"
    refused(unknown, 1, "'nope'")


# -- OpenSearch: replay, archive, purge, clear, retry, processor -----------------------------


@pytest.mark.opensearch
def test_replay_dry_run_changes_nothing_and_a_paced_replay_makes_five_due(node: Node) -> None:
    names = [f"replay-{i}" for i in range(8)]
    node.enqueue(*(Failure(name) for name in names))
    before = node.records(*names)
    assert all(t.status is PENDING and t.next_retry_at is None for t in before.values())

    as_json, for_people = node.cli.many(["replay", "--dry-run", "--json"], ["replay", "--dry-run"])
    report = data(as_json)
    assert report["dry_run"] is True
    assert (report["matched"], report["replayed"], report["skipped"]) == (8, 8, 0)
    assert {item["task_id"] for item in report["items"]} == set(names)
    assert {item["outcome"] for item in report["items"]} == {"would_replay"}
    assert report["failures"] == []
    text = ok(for_people)
    assert "8 matched, 8 would replay, 0 skipped (dry run: nothing was changed)" in text
    assert node.records(*names) == before

    started = datetime.now(timezone.utc)
    report = data(node.cli("replay", "--rate", "20/s", "--limit", "5", "--json"))
    finished = datetime.now(timezone.utc)
    assert report["dry_run"] is False
    assert (report["matched"], report["replayed"], report["skipped"]) == (5, 5, 0)
    assert (report["succeeded"], report["failed"]) == (0, 0)
    assert {item["outcome"] for item in report["items"]} == {"replayed"}
    replayed = {item["task_id"] for item in report["items"]}
    assert len(replayed) == 5
    after = node.records(*names)
    due = {name: task.next_retry_at for name, task in after.items() if task.next_retry_at}
    assert set(due) == replayed  # exactly the five the report names
    times = sorted(when for when in due.values() if when is not None)
    assert started <= times[0]
    assert times[-1] <= finished
    # 20/s: the fifth is made due 4/20 s after the first
    assert times[-1] - times[0] >= timedelta(seconds=0.18), times
    assert all(after[name].status is PENDING for name in replayed)
    assert all(after[name] == before[name] for name in set(names) - replayed)

    # a third process retries what the second made due, a fourth counts the result
    drained = data(node.cli("processor", "run", "--app", HANDLERS, "--drain", "--json"))
    assert drained["attempts"] == 5
    assert (drained["retry_success"], drained["retry_failed"], drained["exhausted"]) == (5, 0, 0)
    assert node.statuses(*names) == {
        name: "completed" if name in replayed else "pending" for name in names
    }
    stats = data(node.cli("status", "--json"))
    assert stats["status_breakdown"]["completed"] == 5
    assert stats["status_breakdown"]["pending"] == 3


@pytest.mark.opensearch
def test_archive_purge_and_clear_ask_first_and_each_process_sees_the_last(node: Node) -> None:
    archived = ["arch-0", "arch-1", "arch-2"]
    kept = ["open-0", "open-1", "open-2"]
    everything = [*archived, *kept]
    node.enqueue(*(Failure(name) for name in everything))

    run = node.cli("archive", "arch-0", "arch-1", "nope", "arch-2")
    assert run.returncode == 1, describe(run)
    assert run.stdout.splitlines() == [f"archived {name}" for name in archived]
    refused(run, 1, "nope", "not found")
    records = node.records(*everything)
    assert all(records[name].status is ARCHIVED for name in archived)
    assert all(records[name].archived_at is not None for name in archived)
    assert all(records[name].status is PENDING for name in kept)

    purge = ["purge", "--older-than", "0s", "--status", "archived"]
    asked = node.cli(*purge, stdin="n\n")
    assert asked.returncode == 1, describe(asked)
    assert "Traceback" not in asked.stderr
    assert "Delete 3 task(s) (archived, last updated before " in asked.stderr
    last = asked.stderr.strip().splitlines()[-1]
    assert last.startswith(f"{PROG}: aborted: nothing was changed"), describe(asked)
    dry, too_young = node.cli.many(
        [*purge, "--dry-run"],
        ["purge", "--older-than", "1h", "--status", "archived", "--dry-run", "--json"],
    )
    assert ok(dry) == "would purge 3 task(s); nothing was deleted\n"
    assert data(too_young)["matched"] == 0
    assert node.statuses(*everything) == {
        **dict.fromkeys(archived, "archived"),
        **dict.fromkeys(kept, "pending"),
    }

    result = data(node.cli(*purge, "--yes", "--json"))
    assert (result["matched"], result["purged"], result["dry_run"]) == (3, 3, False)
    assert result["statuses"] == ["archived"]
    assert node.statuses(*everything) == {
        **dict.fromkeys(archived, "missing"),
        **dict.fromkeys(kept, "pending"),
    }

    asked = node.cli("clear", stdin="n\n")
    assert asked.returncode == 1, describe(asked)
    assert "Delete all 3 task(s) in the dead-letter queue?" in asked.stderr
    assert asked.stderr.strip().splitlines()[-1].startswith(f"{PROG}: aborted")
    assert "Traceback" not in asked.stderr
    assert set(node.statuses(*kept).values()) == {"pending"}

    assert ok(node.cli("clear", "-y")) == "cleared 3 task(s)\n"
    assert set(node.statuses(*everything).values()) == {"missing"}
    stats = data(node.cli("status", "--json"))
    assert stats["total_stored"] == 0
    assert stats["queue_size"] == 0


@pytest.mark.opensearch
def test_retry_runs_the_handler_and_a_failure_counts_toward_exhaustion(node: Node) -> None:
    node.enqueue(
        Failure("retry-ok"),
        Failure("retry-fail", FAIL_WORKFLOW, max_retries=2, error="upstream said no"),
    )

    success, failure, no_app = node.cli.many(
        ["retry", "retry-ok", "--app", HANDLERS, "--json"],
        ["--app", HANDLERS, "retry", "retry-fail"],
        ["retry", "retry-ok"],
    )
    result = data(success)
    assert result["success"] is True
    assert result["status"] == "completed"
    assert result["result"] == {"handled": "retry-ok", "repos": ["repo-a", "repo-b"]}
    assert failure.returncode == 1, describe(failure)
    assert "Traceback" not in failure.stderr
    assert "✗ retry 1 of task retry-fail failed; task is now pending" in failure.stdout
    assert f"error: {HANDLER_ERROR} retry-fail" in failure.stdout
    refused(no_app, 2, "--app")

    records = node.records("retry-ok", "retry-fail")
    done, failing = records["retry-ok"], records["retry-fail"]
    assert done.status is COMPLETED
    assert done.completed_at is not None
    assert [(a.trigger, a.outcome) for a in done.attempts] == [("manual", AttemptOutcome.SUCCESS)]
    assert failing.status is PENDING
    assert failing.retry_count == 1

    last, unknown = node.cli.many(
        ["retry", "retry-fail", "--app", HANDLERS, "--json"],
        ["retry", "nope", "--app", HANDLERS],
    )
    assert last.returncode == 1, describe(last)
    result = json.loads(last.stdout)
    assert result["success"] is False
    assert result["status"] == "exhausted"
    assert result["error"] == f"{HANDLER_ERROR} retry-fail"
    refused(unknown, 1, "nope")
    failing = node.records("retry-fail")["retry-fail"]
    assert failing.status is EXHAUSTED
    assert (failing.retry_count, failing.total_attempts) == (2, 3)
    assert [a.outcome for a in failing.attempts] == [AttemptOutcome.FAILURE] * 2


@pytest.mark.opensearch
def test_processor_drain_retries_what_is_due_and_leaves_the_rest(node: Node) -> None:
    due_ok = [f"due-ok-{i}" for i in range(3)]
    node.enqueue(
        *(Failure(name, policy=RetryPolicy.IMMEDIATE) for name in due_ok),
        Failure("due-fail", FAIL_WORKFLOW, policy=RetryPolicy.IMMEDIATE, max_retries=1),
        Failure("later", policy=RetryPolicy.EXPONENTIAL),  # due in a minute
        Failure("manual"),  # awaiting an operator
    )
    before = node.records("later", "manual")
    assert before["later"].next_retry_at is not None

    summary = data(node.cli("processor", "run", "--app", HANDLERS, "--drain", "--json"))
    assert summary["attempts"] == 4  # three successes, the one failure of due-fail
    assert (summary["retry_success"], summary["retry_failed"], summary["exhausted"]) == (3, 1, 1)
    assert node.statuses(*due_ok, "due-fail") == {
        **dict.fromkeys(due_ok, "completed"),
        "due-fail": "exhausted",
    }
    assert node.records("later", "manual") == before

    again = ok(node.cli("--app", HANDLERS, "processor", "run", "--drain"))
    assert re.fullmatch(
        r"processor \S+ stopped; 0 attempts: 0 retry success, 0 retry failed, 0 exhausted\n",
        again,
    ), again


@pytest.mark.opensearch
def test_processor_runs_until_sigint_and_reports(node: Node, tmp_path: Path) -> None:
    first = [f"live-{i}" for i in range(3)]
    node.enqueue(*(Failure(name, policy=RetryPolicy.IMMEDIATE) for name in first))

    def completed(*names: str) -> bool:
        return set(node.statuses(*names).values()) == {"completed"}

    out, err = tmp_path / "processor.out", tmp_path / "processor.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            _argv(["processor", "run", "--app", HANDLERS, "--interval", "0.2"]),
            cwd=ROOT,
            env=node.cli.env,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
        )
    try:
        wait_until("the first tasks completed", partial(completed, *first), proc, 30)
        node.enqueue(Failure("live-late", policy=RetryPolicy.IMMEDIATE))  # while it runs
        wait_until("the late task completed", partial(completed, "live-late"), proc, 30)
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stdout_text, stderr_text = out.read_text(), err.read_text()
    run = subprocess.CompletedProcess(proc.args, code, stdout_text, stderr_text)
    assert code == 0, describe(run)
    assert "Traceback" not in stderr_text, describe(run)
    started = re.search(r"processor (\S+) on opensearch, .*checking every 0\.2 s", stderr_text)
    assert started is not None, describe(run)
    assert "SIGINT: stopping" in stderr_text, describe(run)
    assert stdout_text == (
        f"processor {started.group(1)} stopped; 4 retry success, 0 retry failed, 0 exhausted\n"
    ), describe(run)


@pytest.mark.opensearch
def test_sigterm_mid_attempt_gives_the_task_back(node: Node, tmp_path: Path) -> None:
    """Stopping the processor while an attempt runs returns the task to pending."""
    node.enqueue(Failure("slow-1", SLOW_WORKFLOW, policy=RetryPolicy.IMMEDIATE))

    def retrying() -> bool:
        return node.statuses("slow-1") == {"slow-1": "retrying"}

    err = tmp_path / "processor.err"
    with err.open("wb") as stderr:
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            _argv(["processor", "run", "--app", HANDLERS, "--interval", "0.2"]),
            cwd=ROOT,
            env=node.cli.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        wait_until("the attempt started", retrying, proc, 30)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 0, err.read_text()
    assert "SIGTERM: stopping" in err.read_text()
    task = node.records("slow-1")["slow-1"]
    assert task.status is PENDING
    assert (task.lease_owner, task.lease_expires_at) == (None, None)
    assert task.retry_count == 0  # the unfinished attempt is given back …
    assert task.total_attempts == 2  # … but still counted as run (the first failure + 1)
    assert task.attempts[-1].outcome is AttemptOutcome.CANCELLED
    assert task.next_retry_at is not None  # due again at once, for the next processor


# -- the embedded default: a per-user SQLite file, clean environment ------------------------


APP_PROCESS = """
import anyio
from mahavishnu_dlq import DeadLetterQueue, DLQSettings

async def main() -> None:
    async with DeadLetterQueue.from_settings(DLQSettings.load()) as dlq:
        await dlq.enqueue("from-the-app", {"order": 7}, error=ConnectionError("refused"))

anyio.run(main)
"""


def test_embedded_default_is_a_durable_file_the_app_and_the_cli_share() -> None:
    env = clean_env()
    cli = Cli(env)
    state = Path(env["XDG_STATE_HOME"]) / "mahavishnu-dlq" / "dlq.sqlite3"
    empty, config, config_json = cli.many(
        ["list"], ["config", "show"], ["config", "show", "--json"]
    )
    assert ok(empty).strip() == "no tasks match"
    assert "\nstore: sqlite\n" in ok(config)
    assert "secrets masked" in ok(config)
    settings = data(config_json)
    assert (settings["store"], settings["sqlite"]["path"], settings["max_size"]) == (
        "sqlite",
        None,  # the per-user default file
        10000,
    )
    app = subprocess.run(  # noqa: S603 - our own interpreter
        [sys.executable, "-c", APP_PROCESS],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert app.returncode == 0, app.stderr
    stats, table, listing, shown, unknown = cli.many(
        ["status", "--json"],
        ["status"],
        ["list", "--json"],
        ["show", "from-the-app", "--json"],
        ["show", "nope"],
    )
    counts = data(stats)
    assert (counts["backend"], counts["location"], counts["total_stored"]) == (
        "sqlite",
        str(state),
        1,
    )
    assert counts["degraded"] is False
    assert str(state) in ok(table).replace("\n", "")  # status names the file
    assert [task["task_id"] for task in data(listing)["tasks"]] == ["from-the-app"]
    assert data(shown)["task"] == {"order": 7}
    refused(unknown, 1, "no task with id 'nope'")


def test_app_factory_queue_serves_every_command_of_its_process() -> None:
    cli = Cli(clean_env())
    app = ["--app", FACTORY]
    listing, shown, success, failure, dry, inline, stats = cli.many(
        [*app, "list", "--json"],
        [*app, "show", "mem-fail-1", "--json"],
        [*app, "retry", "mem-ok-1"],
        [*app, "retry", "mem-fail-1", "--json"],
        [*app, "replay", "--dry-run", "--json"],
        [*app, "replay", "--run", "--json"],
        [*app, "status", "--json"],
    )
    names = {task_id for task_id, _, _ in MEMORY_TASKS}
    assert set(ids_of(data(listing))) == names
    task = data(shown)
    assert (task["task_id"], task["workflow"], task["status"]) == (
        "mem-fail-1",
        FAIL_WORKFLOW,
        "pending",
    )
    assert task["error"] == "invalid order total"
    assert task["task"] == {"id": "mem-fail-1", "amount": 42}
    assert ok(success).startswith("✓ task mem-ok-1 succeeded on retry 1")
    assert failure.returncode == 1, describe(failure)
    result = json.loads(failure.stdout)
    assert (result["success"], result["status"]) == (False, "pending")
    report = data(dry)
    assert (report["dry_run"], report["matched"], report["replayed"]) == (True, 3, 3)
    assert {item["task_id"] for item in report["items"]} == names
    # --run retries inline through the factory's handlers; one of them always fails
    assert inline.returncode == 1, describe(inline)
    report = json.loads(inline.stdout)
    assert (report["matched"], report["succeeded"], report["failed"]) == (3, 2, 1)
    assert [item["task_id"] for item in report["failures"]] == ["mem-fail-1"]
    counts = data(stats)
    assert (counts["backend"], counts["total_stored"]) == ("memory", 3)
    assert counts["lifetime_stats"]["enqueued_total"] == 3


# -- bad input: one line, the right exit status, no traceback -------------------------------------

BAD_INPUT: list[tuple[str, list[str], dict[str, str], int, tuple[str, ...]]] = [
    ("unknown status", ["list", "--status", "bogus"], {}, 2, ("--status", "'bogus'")),
    ("unknown category", ["list", "--category", "bogus"], {}, 2, ("--category", "'bogus'")),
    ("bad duration", ["purge", "--older-than", "30x"], {}, 2, ("--older-than", "'30x'")),
    ("bad --since", ["list", "--since", "last-tuesday"], {}, 2, ("--since", "last-tuesday")),
    ("bad --since date", ["list", "--since", "2026-13-45"], {}, 2, ("--since", "2026-13-45")),
    ("bad --rate", ["replay", "--rate", "fast"], {}, 2, ("--rate", "'fast'")),
    ("zero --rate", ["replay", "--rate", "0/s"], {}, 2, ("--rate", "'0/s'")),
    ("bad --cursor", ["list", "--cursor", "zzz"], {}, 2, ("--cursor",)),
    ("missing config", ["--config", "{tmp}/missing.yaml", "status"], {}, 2, ("missing.yaml",)),
    ("malformed YAML", ["--config", "{tmp}/malformed.yaml", "status"], {}, 2, ("malformed",)),
    ("out of range", ["--config", "{tmp}/range.yaml", "status"], {}, 2, ("max_size", "5")),
    (
        "out of range in env",
        ["status"],
        {"MAHAVISHNU_DLQ_PROCESSOR__CONCURRENCY": "0"},
        2,
        ("processor.concurrency", "MAHAVISHNU_DLQ_PROCESSOR__CONCURRENCY"),
    ),
    (
        "missing config in env",
        ["status"],
        {"MAHAVISHNU_DLQ_CONFIG": "{tmp}/missing.yaml"},
        2,
        ("missing.yaml",),
    ),
    ("no such module", ["--app", "nosuchmodule:x", "status"], {}, 2, ("nosuchmodule",)),
    (
        "no such attribute",
        ["--app", "tests.integration.cli_app:nosuchattr", "status"],
        {},
        2,
        ("nosuchattr",),
    ),
    ("--app without colon", ["--app", "badformat", "status"], {}, 2, ("badformat",)),
    ("retry without --app", ["retry", "some-task"], {}, 2, ("--app",)),
    ("processor without --app", ["processor", "run", "--drain"], {}, 2, ("--app",)),
    ("show unknown id", ["show", "nope"], {}, 1, ("'nope'",)),
    ("retry unknown id", ["retry", "nope", "--app", HANDLERS], {}, 1, ("nope",)),
    ("archive unknown id", ["archive", "nope"], {}, 1, ("nope",)),
]


@pytest.mark.parametrize(
    ("args", "env", "code", "needles"),
    [pytest.param(*case[1:], id=case[0]) for case in BAD_INPUT],
)
def test_bad_input_is_one_line_and_the_right_exit_status(
    args: list[str], env: dict[str, str], code: int, needles: tuple[str, ...], tmp_path: Path
) -> None:
    (tmp_path / "malformed.yaml").write_text("max_size: [1, 2\n")
    (tmp_path / "range.yaml").write_text("max_size: 5\n")
    place = {"tmp": str(tmp_path)}
    cli = Cli(clean_env(**{k: v.format_map(place) for k, v in env.items()}))
    run = cli(*(arg.format_map(place) for arg in args))
    refused(run, code, *needles)
    assert run.stdout == "", describe(run)


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_unreachable_opensearch_is_one_line_without_credentials() -> None:
    port = _closed_port()
    secrets = ("s3cret-pass",)
    cli = Cli(
        clean_env(
            MAHAVISHNU_DLQ_STORE="opensearch",
            # the credentials move to username/password when settings load (the store
            # sends them, and masks the password in what it reports)
            MAHAVISHNU_DLQ_OPENSEARCH__HOSTS=json.dumps(
                [f"http://elastic:s3cret-pass@127.0.0.1:{port}"]
            ),
        )
    )
    *failed, config = cli.many(
        ["status"],
        ["list", "--json"],
        ["show", "some-task"],
        ["retry", "some-task", "--app", HANDLERS],
        ["purge", "--yes"],
        ["processor", "run", "--app", HANDLERS, "--drain"],
        ["config", "show", "--json"],
    )
    for run in failed:
        refused(run, 1, f"127.0.0.1:{port}")
        assert not any(secret in run.stderr + run.stdout for secret in secrets), describe(run)
    shown = data(config)
    assert shown["store"] == "opensearch"
    assert not any(secret in config.stdout for secret in secrets), describe(config)
