"""Several OS processes share one OpenSearch index: claims stay exclusive, a killed
worker's tasks are recovered after its lease, and nothing lives only in memory.

The workers are real subprocesses (``tests/integration/_os_worker.py``); the test
process enqueues and inspects with ``asyncio.run`` (OpenSearchStore is asyncio
only). Writes of other processes become searchable within the index refresh
interval (1 s), so every wait is a poll with a deadline.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from mahavishnu_dlq import DeadLetterQueue
from mahavishnu_dlq.models import AttemptOutcome, DeadLetterStatus, FailedTask
from mahavishnu_dlq.storage.opensearch import OpenSearchStore
from tests.integration._os_worker import RESTART_TASKS, WORKFLOW

pytestmark = pytest.mark.opensearch

ROOT = Path(__file__).resolve().parents[2]
WORKER = "tests.integration._os_worker"

_COMPLETED = DeadLetterStatus.COMPLETED
_RETRYING = DeadLetterStatus.RETRYING


# -- helpers -------------------------------------------------------------------------


def _index(kind: str) -> str:
    return f"dlq-procs-{kind}-{uuid.uuid4().hex[:10]}"


def _wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` every 0.2 s until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.2)


class _Procs:
    """Worker subprocesses of one test: stdout/stderr kept in files, all reaped at the end."""

    def __init__(self, url: str, index: str, tmp: Path) -> None:
        self.url = url
        self.index = index
        self.tmp = tmp
        self.started: list[tuple[str, subprocess.Popen[bytes]]] = []

    def spawn(self, name: str, mode: str, *args: str) -> subprocess.Popen[bytes]:
        with (
            (self.tmp / f"{name}.out").open("wb") as out,
            (self.tmp / f"{name}.err").open("wb") as err,
        ):
            proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                [sys.executable, "-m", WORKER, mode, self.url, self.index, *args],
                cwd=ROOT,
                stdout=out,
                stderr=err,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        self.started.append((name, proc))
        return proc

    def output(self, name: str) -> str:
        out = (self.tmp / f"{name}.out").read_text(errors="replace")
        err = (self.tmp / f"{name}.err").read_text(errors="replace")
        return f"--- {name} stdout ---\n{out}\n--- {name} stderr ---\n{err[-4000:]}"

    def finish(self, name: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
        """Wait for a worker to exit and require exit code 0."""
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            pytest.fail(f"{name} did not finish within {timeout:g}s\n{self.output(name)}")
        assert code == 0, f"{name} exited with {code}\n{self.output(name)}"

    def reap(self) -> None:
        for _, proc in self.started:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


@pytest.fixture
def procs(opensearch_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[_Procs]:
    """Subprocess bookkeeping on a fresh index, which is dropped afterwards."""
    kind = request.node.name.removeprefix("test_")[:20].replace("_", "-")
    workers = _Procs(opensearch_url, _index(kind), tmp_path)
    try:
        yield workers
    finally:
        workers.reap()
        asyncio.run(_drop(opensearch_url, workers.index))


async def _drop(url: str, index: str) -> None:
    store = OpenSearchStore(hosts=[url], index=index)
    try:
        await store.drop()
    finally:
        await store.close()


async def _enqueue_due(
    url: str, index: str, ids: list[str], payload: Callable[[int, str], dict[str, Any]]
) -> None:
    """Enqueue ``ids`` as due tasks (policy "immediate"), then make them searchable."""
    store = OpenSearchStore(hosts=[url], index=index)
    async with DeadLetterQueue(store, worker_id="enqueuer", max_size=100_000) as dlq:
        for start in range(0, len(ids), 200):
            await asyncio.gather(
                *(
                    dlq.enqueue(
                        task_id,
                        payload(start + i, task_id),
                        error=RuntimeError("original failure"),
                        retry_policy="immediate",
                        max_retries=3,
                        workflow=WORKFLOW,
                    )
                    for i, task_id in enumerate(ids[start : start + 200])
                )
            )
        # our own search refreshes the index first: every worker sees all tasks at once
        assert await store.count() == len(ids)


async def _get_all(url: str, index: str, ids: list[str]) -> dict[str, FailedTask]:
    """Every task by id, read in realtime (``get`` needs no refresh)."""
    store = OpenSearchStore(hosts=[url], index=index)
    await store.open()
    try:
        found: dict[str, FailedTask] = {}
        for start in range(0, len(ids), 100):
            chunk = ids[start : start + 100]
            tasks = await asyncio.gather(*(store.get(task_id) for task_id in chunk))
            for task_id, task in zip(chunk, tasks, strict=True):
                assert task is not None, f"{task_id} is missing from the index"
                found[task_id] = task
        return found
    finally:
        await store.close()


def _read_log(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _ends(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r["event"] == "end"]


def _starts(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r["event"] == "start"]


def _assert_no_overlap(executions: dict[str, list[tuple[float, float]]]) -> None:
    for task_id, intervals in executions.items():
        ordered = sorted(intervals)
        for (_, end), (start, _) in itertools.pairwise(ordered):
            assert end <= start, f"two executions of {task_id} overlapped: {ordered}"


# -- 1. exactly once across three processes ----------------------------------------------


def test_three_processes_run_every_task_exactly_once(procs: _Procs) -> None:
    count = 2000
    ids = [f"eo-{i:05d}" for i in range(count)]
    asyncio.run(
        _enqueue_due(procs.url, procs.index, ids, lambda i, task_id: {"id": task_id, "i": i})
    )
    go = procs.tmp / "go"
    workers: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
    for n in range(1, 4):
        worker_id = f"proc-worker-{n}"
        log = procs.tmp / f"{worker_id}.jsonl"
        proc = procs.spawn(
            worker_id,
            "process",
            worker_id,
            str(log),
            "--concurrency=10",
            "--batch-size=20",
            "--timeout=60",
            f"--ready={procs.tmp / f'{worker_id}.ready'}",
            f"--go={go}",
        )
        workers[worker_id] = (proc, log)
    _wait_for(
        lambda: (
            all((procs.tmp / f"{w}.ready").exists() for w in workers)
            or any(p.poll() is not None for p, _ in workers.values())
        ),
        30,
        "the three workers to connect",
    )
    go.touch()  # a start barrier: all three compete from the first claim on
    for worker_id, (proc, _) in workers.items():
        procs.finish(worker_id, proc, timeout=75)

    # every execution, from every process's own log
    executions: dict[str, list[tuple[float, float]]] = defaultdict(list)
    ran_by: dict[str, str] = {}
    per_worker: Counter[str] = Counter()
    for worker_id, (proc, log) in workers.items():
        records = _read_log(log)
        assert len(_starts(records)) == len(_ends(records)), f"{worker_id} left an attempt open"
        for record in _ends(records):
            assert record["pid"] == proc.pid
            assert record["start"] <= record["end"]
            executions[record["task_id"]].append((record["start"], record["end"]))
            ran_by[record["task_id"]] = worker_id
            per_worker[worker_id] += 1
    total = sum(len(v) for v in executions.values())
    twice = sorted(task_id for task_id, v in executions.items() if len(v) > 1)
    assert not twice, f"{len(twice)} tasks ran more than once, e.g. {twice[:5]}"
    assert total == count, f"{total} executions logged for {count} tasks"
    assert set(executions) == set(ids)
    _assert_no_overlap(executions)
    busy = [w for w in workers if per_worker[w] > 0]
    assert len(busy) >= 2, f"only {busy} did any work: {dict(per_worker)}"

    # the index agrees: completed once, by the process that logged the execution
    stored = asyncio.run(_get_all(procs.url, procs.index, ids))
    for task_id, task in stored.items():
        assert task.status is _COMPLETED, f"{task_id} is {task.status.value}"
        assert task.retry_count == 1
        assert task.total_attempts == 2  # the original failure and the one retry
        assert task.lease_owner is None
        [attempt] = task.attempts
        assert attempt.outcome is AttemptOutcome.SUCCESS
        assert attempt.worker == ran_by[task_id], f"{task_id}: index and logs disagree"


# -- 2. a worker killed mid-attempt --------------------------------------------------------


def test_tasks_of_a_killed_worker_are_recovered_after_its_lease(procs: _Procs) -> None:
    count = 60
    lease = 2.0
    ids = [f"kill-{i:03d}" for i in range(count)]
    blocking = {task_id for i, task_id in enumerate(ids) if i % 4 == 0}  # 15 tasks
    asyncio.run(
        _enqueue_due(
            procs.url,
            procs.index,
            ids,
            lambda _, task_id: {"id": task_id, "block": task_id in blocking},
        )
    )
    log_a = procs.tmp / "worker-a.jsonl"
    log_b = procs.tmp / "worker-b.jsonl"
    # A runs run_once cycles (no lease renewal) with every task in one batch: it
    # finishes the others and hangs in the blocking ones, holding their leases.
    proc_a = procs.spawn(
        "worker-a",
        "process",
        "worker-a",
        str(log_a),
        "--block",
        "--concurrency=60",
        "--batch-size=100",
        f"--lease-seconds={lease}",
        "--attempt-timeout=7200",
        "--timeout=120",
    )

    def a_is_stuck() -> bool:
        assert proc_a.poll() is None, f"worker-a exited early\n{procs.output('worker-a')}"
        records = _read_log(log_a)
        return len(_ends(records)) == count - len(blocking) and len(_starts(records)) == count

    _wait_for(a_is_stuck, 30, "worker-a to finish the others and hang in the blocking tasks")

    def a_recorded_the_others() -> bool:
        # a handler's "end" line comes before its outcome is written: kill A only
        # once every finished task is COMPLETED, so B has exactly the held ones to do
        tasks = asyncio.run(_get_all(procs.url, procs.index, ids))
        return all((t.status is _COMPLETED) != (i in blocking) for i, t in tasks.items())

    _wait_for(a_recorded_the_others, 30, "worker-a to record the tasks it finished")
    held = asyncio.run(_get_all(procs.url, procs.index, sorted(blocking)))
    for task_id, task in held.items():
        assert task.status is _RETRYING, f"{task_id} is {task.status.value}"
        assert task.lease_owner == "worker-a"
        assert task.retry_count == 1
    a_started = {r["task_id"]: r["start"] for r in _starts(_read_log(log_a))}

    os.kill(proc_a.pid, signal.SIGKILL)
    assert proc_a.wait(timeout=10) == -signal.SIGKILL
    killed_at = time.time()

    proc_b = procs.spawn("worker-b", "process", "worker-b", str(log_b), "--timeout=60")
    procs.finish("worker-b", proc_b, timeout=75)

    ended_b = _ends(_read_log(log_b))
    ran_b = Counter(r["task_id"] for r in ended_b)
    assert set(ran_b) == blocking, "worker-b should run exactly the tasks worker-a held"
    assert all(n == 1 for n in ran_b.values()), f"worker-b ran some twice: {ran_b}"

    stored = asyncio.run(_get_all(procs.url, procs.index, ids))
    executions: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for record in _ends(_read_log(log_a)):
        executions[record["task_id"]].append((record["start"], record["end"]))
    for task_id in blocking:
        executions[task_id].append((a_started[task_id], killed_at))  # ended by the kill
    for record in ended_b:
        executions[record["task_id"]].append((record["start"], record["end"]))
    _assert_no_overlap(executions)

    for task_id, task in stored.items():
        assert task.status is _COMPLETED, f"{task_id} is {task.status.value}"
        assert task.lease_owner is None
        if task_id not in blocking:
            assert task.total_attempts == 2
            assert [(a.worker, a.outcome) for a in task.attempts] == [
                ("worker-a", AttemptOutcome.SUCCESS)
            ]
            continue
        # original failure + the attempt lost with worker-a + worker-b's success
        assert task.total_attempts == 3, task.attempts
        assert task.retry_count == 2
        lost, won = task.attempts
        assert (lost.number, lost.worker, lost.outcome) == (1, "worker-a", AttemptOutcome.LOST)
        assert (won.number, won.worker, won.outcome) == (2, "worker-b", AttemptOutcome.SUCCESS)
        # the lost attempt ends when its lease expired; nobody started before that
        assert lost.finished_at is not None
        assert lost.finished_at - lost.started_at == timedelta(seconds=lease)
        assert won.started_at >= lost.finished_at
        assert ran_b[task_id] == 1
        [b_run] = [r for r in ended_b if r["task_id"] == task_id]
        assert b_run["start"] >= lost.finished_at.timestamp() - 0.01


# -- 3. across processes and a restart ---------------------------------------------------------


async def _operate(url: str, index: str, ids: list[str], origin_pid: int) -> list[Any]:
    """A fresh queue in this process: see the other process's tasks, retry one, archive one."""
    calls: list[Any] = []

    async def handler(task: dict[str, Any], repos: list[str]) -> str:
        calls.append((task, repos))
        return f"done {task['id']}"

    store = OpenSearchStore(hosts=[url], index=index)
    async with DeadLetterQueue(store, worker_id="operator") as dlq:
        dlq.register_handler(WORKFLOW, handler)
        deadline = time.monotonic() + 15
        while True:
            listed = await dlq.list_tasks(limit=100)
            if sorted(t.task_id for t in listed) == sorted(ids):
                break
            assert time.monotonic() < deadline, f"listing shows {[t.task_id for t in listed]}"
            await asyncio.sleep(0.2)
        assert {t.status for t in listed} == {DeadLetterStatus.PENDING}

        shown = await dlq.get_task("restart-never-1")
        assert shown is not None
        assert shown.task == {"id": "restart-never-1", "n": len("restart-never-1")}
        assert shown.repos == ["repo-a", "repo-b"]
        assert shown.error == "validation failed: bad input"
        assert shown.metadata["origin_pid"] == origin_pid
        assert shown.next_retry_at is None  # NEVER: waits for an operator
        later = await dlq.get_task("restart-exp-1")
        assert later is not None
        assert later.next_retry_at is not None
        assert later.next_retry_at > dlq.clock.now()

        result = await dlq.retry_task("restart-never-1")
        assert result["success"] is True, result
        assert result["result"] == "done restart-never-1"
        assert await dlq.archive_task("restart-exp-2") is True
    return calls


async def _reopen(url: str, index: str) -> dict[str, FailedTask]:
    """A brand-new queue and store on the same index: the changes are all there."""
    store = OpenSearchStore(hosts=[url], index=index)
    async with DeadLetterQueue(store, worker_id="restarted") as dlq:
        tasks: dict[str, FailedTask] = {}
        for task_id, _, _ in RESTART_TASKS:
            task = await dlq.get_task(task_id)
            assert task is not None, f"{task_id} is gone after the restart"
            tasks[task_id] = task
        deadline = time.monotonic() + 15
        while True:  # searches too (they see other processes' writes after a refresh)
            done = await dlq.list_tasks(status="completed")
            archived = await dlq.list_tasks(status="archived")
            pending = await dlq.list_tasks(status="pending")
            got = (
                [t.task_id for t in done],
                [t.task_id for t in archived],
                sorted(t.task_id for t in pending),
            )
            want = (
                ["restart-never-1"],
                ["restart-exp-2"],
                sorted(["restart-never-2", "restart-exp-1", "restart-linear-1"]),
            )
            if got == want:
                break
            assert time.monotonic() < deadline, f"listings after restart: {got}"
            await asyncio.sleep(0.2)
        stats = await dlq.get_statistics()
        assert stats["backend"] == "opensearch"
        assert stats["total_stored"] == len(RESTART_TASKS)
        breakdown = stats["status_breakdown"]
        assert (breakdown["completed"], breakdown["archived"], breakdown["pending"]) == (1, 1, 3)
        return tasks


def test_tasks_survive_processes_and_a_restart(procs: _Procs) -> None:
    enqueuer = procs.spawn("enqueuer", "enqueue")
    procs.finish("enqueuer", enqueuer, timeout=60)
    ids = json.loads((procs.tmp / "enqueuer.out").read_text())
    assert ids == [task_id for task_id, _, _ in RESTART_TASKS]

    calls = asyncio.run(_operate(procs.url, procs.index, ids, enqueuer.pid))
    assert calls == [({"id": "restart-never-1", "n": len("restart-never-1")}, ["repo-a", "repo-b"])]

    tasks = asyncio.run(_reopen(procs.url, procs.index))
    retried = tasks["restart-never-1"]
    assert retried.status is _COMPLETED
    assert retried.completed_at is not None
    assert (retried.retry_count, retried.total_attempts) == (1, 2)
    [attempt] = retried.attempts
    assert (attempt.worker, attempt.trigger, attempt.outcome) == (
        "operator/manual",
        "manual",
        AttemptOutcome.SUCCESS,
    )
    archived = tasks["restart-exp-2"]
    assert archived.status is DeadLetterStatus.ARCHIVED
    assert archived.archived_at is not None
    for task_id in ("restart-never-2", "restart-exp-1", "restart-linear-1"):
        assert tasks[task_id].status is DeadLetterStatus.PENDING
        assert tasks[task_id].attempts == []
        assert tasks[task_id].total_attempts == 1

    # and a third process, which never saw any of it, reads the same
    dumper = procs.spawn("dumper", "dump")
    procs.finish("dumper", dumper, timeout=60)
    assert json.loads((procs.tmp / "dumper.out").read_text()) == {
        "restart-never-1": "completed",
        "restart-never-2": "pending",
        "restart-exp-1": "pending",
        "restart-exp-2": "archived",
        "restart-linear-1": "pending",
    }
