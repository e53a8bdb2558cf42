"""Several OS processes share one store: claims stay exclusive, a killed worker's tasks are
recovered after its lease, and nothing lives only in memory.

Every test runs on each store processes can share: an OpenSearch index (marker
``opensearch``; a fresh index per test, dropped afterwards) and a SQLite file in
the test's directory. The workers are real subprocesses
(``tests/integration/_worker.py``) given the store as a spec (``opensearch:URL:INDEX``,
``sqlite:PATH``). OpenSearch runs on asyncio only; on SQLite the workers and this
process alternate between trio and asyncio (:attr:`Target.loops`), so processes
on different event loops share one file. Writes of other processes become
searchable on OpenSearch within the index refresh interval (1 s), so every wait
is a poll with a deadline.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import anyio
import pytest

from mahavishnu_dlq import DeadLetterQueue
from mahavishnu_dlq.models import AttemptOutcome, DeadLetterStatus, FailedTask
from mahavishnu_dlq.storage import Store
from tests.integration._worker import RESTART_TASKS, WORKFLOW, open_store

ROOT = Path(__file__).resolve().parents[2]
WORKER = "tests.integration._worker"

_COMPLETED = DeadLetterStatus.COMPLETED
_RETRYING = DeadLetterStatus.RETRYING

T = TypeVar("T")


# -- helpers -------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """The store a test's processes share, and the event loops they run on."""

    backend: str
    spec: str  # what the workers are given: opensearch:URL:INDEX or sqlite:PATH
    loops: tuple[str, ...]  # process n runs on loops[n % len(loops)]

    def store(self) -> Store:
        return open_store(self.spec)

    def loop(self, n: int) -> str:
        return self.loops[n % len(self.loops)]

    def run(self, fn: Callable[..., Awaitable[T]], *args: Any, n: int = 0) -> T:
        """``fn(*args)`` in this process, on event loop ``n`` (see :meth:`loop`)."""
        return anyio.run(partial(fn, *args), backend=self.loop(n))


def _wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` every 0.2 s until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.2)


class _Procs:
    """Worker subprocesses of one test: stdout/stderr kept in files, all reaped at the end."""

    def __init__(self, target: Target, tmp: Path) -> None:
        self.target = target
        self.tmp = tmp
        self.started: list[tuple[str, subprocess.Popen[bytes]]] = []

    def spawn(self, name: str, mode: str, *args: str, n: int = 0) -> subprocess.Popen[bytes]:
        """Start worker ``name`` in ``mode`` on event loop ``n`` of the target."""
        loop = f"--loop={self.target.loop(n)}"
        with (
            (self.tmp / f"{name}.out").open("wb") as out,
            (self.tmp / f"{name}.err").open("wb") as err,
        ):
            proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                [sys.executable, "-m", WORKER, loop, mode, self.target.spec, *args],
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


@pytest.fixture(params=["sqlite", pytest.param("opensearch", marks=pytest.mark.opensearch)])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    """The shared store: a fresh OpenSearch index (dropped afterwards) or a new SQLite file."""
    if request.param == "sqlite":
        yield Target("sqlite", f"sqlite:{tmp_path / 'shared.sqlite3'}", ("trio", "asyncio"))
        return
    url = request.getfixturevalue("opensearch_url")
    kind = request.node.name.removeprefix("test_")[:20].replace("_", "-").split("[")[0]
    index = f"dlq-procs-{kind}-{uuid.uuid4().hex[:10]}"
    opensearch = Target("opensearch", f"opensearch:{url}:{index}", ("asyncio",))
    try:
        yield opensearch
    finally:
        opensearch.run(_drop, opensearch)


async def _drop(target: Target) -> None:
    from mahavishnu_dlq.storage.opensearch import OpenSearchStore  # noqa: PLC0415 - extra

    store = target.store()
    assert isinstance(store, OpenSearchStore)
    try:
        await store.drop()
    finally:
        await store.close()


@pytest.fixture
def procs(target: Target, tmp_path: Path) -> Iterator[_Procs]:
    """Subprocess bookkeeping, every worker killed and reaped at the end."""
    workers = _Procs(target, tmp_path)
    try:
        yield workers
    finally:
        workers.reap()


async def _enqueue_due(
    target: Target, ids: list[str], payload: Callable[[int, str], dict[str, Any]]
) -> None:
    """Enqueue ``ids`` as due tasks (policy "immediate"), then make them searchable."""
    store = target.store()

    async def enqueue(dlq: DeadLetterQueue, i: int, task_id: str) -> None:
        await dlq.enqueue(
            task_id,
            payload(i, task_id),
            error=RuntimeError("original failure"),
            retry_policy="immediate",
            max_retries=3,
            workflow=WORKFLOW,
        )

    async with DeadLetterQueue(store, worker_id="enqueuer", max_size=100_000) as dlq:
        for start in range(0, len(ids), 200):
            async with anyio.create_task_group() as tg:
                for i, task_id in enumerate(ids[start : start + 200]):
                    tg.start_soon(enqueue, dlq, start + i, task_id)
        # our own search refreshes the index first: every worker sees all tasks at once
        assert await store.count() == len(ids)


async def _get_all(target: Target, ids: list[str]) -> dict[str, FailedTask]:
    """Every task by id, read in realtime (``get`` needs no refresh)."""
    store = target.store()
    await store.open()
    found: dict[str, FailedTask | None] = {}

    async def get(task_id: str) -> None:
        found[task_id] = await store.get(task_id)

    try:
        for start in range(0, len(ids), 100):
            async with anyio.create_task_group() as tg:
                for task_id in ids[start : start + 100]:
                    tg.start_soon(get, task_id)
    finally:
        await store.close()
    missing = [task_id for task_id in ids if found[task_id] is None]
    assert not missing, f"{missing[:5]} ({len(missing)}) are missing from the store"
    return {task_id: task for task_id, task in found.items() if task is not None}


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


def test_three_processes_run_every_task_exactly_once(procs: _Procs, target: Target) -> None:
    count = 2000
    ids = [f"eo-{i:05d}" for i in range(count)]
    target.run(_enqueue_due, target, ids, lambda i, task_id: {"id": task_id, "i": i})
    go = procs.tmp / "go"
    workers: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
    loop_of: dict[str, str] = {}  # each process's event loop: on SQLite, trio, asyncio, trio
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
            n=n - 1,
        )
        workers[worker_id] = (proc, log)
        loop_of[worker_id] = target.loop(n - 1)
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
            assert record["loop"] == loop_of[worker_id]
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

    # the store agrees: completed once, by the process that logged the execution
    stored = target.run(_get_all, target, ids)
    for task_id, task in stored.items():
        assert task.status is _COMPLETED, f"{task_id} is {task.status.value}"
        assert task.retry_count == 1
        assert task.total_attempts == 2  # the original failure and the one retry
        assert task.lease_owner is None
        [attempt] = task.attempts
        assert attempt.outcome is AttemptOutcome.SUCCESS
        assert attempt.worker == ran_by[task_id], f"{task_id}: index and logs disagree"


# -- 2. a worker killed mid-attempt --------------------------------------------------------


def test_tasks_of_a_killed_worker_are_recovered_after_its_lease(
    procs: _Procs, target: Target
) -> None:
    count = 60
    lease = 2.0
    ids = [f"kill-{i:03d}" for i in range(count)]
    blocking = {task_id for i, task_id in enumerate(ids) if i % 4 == 0}  # 15 tasks
    target.run(
        _enqueue_due, target, ids, lambda _, task_id: {"id": task_id, "block": task_id in blocking}
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
        n=0,  # on SQLite: trio
    )

    def a_is_stuck() -> bool:
        assert proc_a.poll() is None, f"worker-a exited early\n{procs.output('worker-a')}"
        records = _read_log(log_a)
        return len(_ends(records)) == count - len(blocking) and len(_starts(records)) == count

    _wait_for(a_is_stuck, 30, "worker-a to finish the others and hang in the blocking tasks")

    def a_recorded_the_others() -> bool:
        # a handler's "end" line comes before its outcome is written: kill A only
        # once every finished task is COMPLETED, so B has exactly the held ones to do
        tasks = target.run(_get_all, target, ids)
        return all((t.status is _COMPLETED) != (i in blocking) for i, t in tasks.items())

    _wait_for(a_recorded_the_others, 30, "worker-a to record the tasks it finished")
    held = target.run(_get_all, target, sorted(blocking))
    for task_id, task in held.items():
        assert task.status is _RETRYING, f"{task_id} is {task.status.value}"
        assert task.lease_owner == "worker-a"
        assert task.retry_count == 1
    a_started = {r["task_id"]: r["start"] for r in _starts(_read_log(log_a))}

    os.kill(proc_a.pid, signal.SIGKILL)
    assert proc_a.wait(timeout=10) == -signal.SIGKILL
    killed_at = time.time()

    proc_b = procs.spawn("worker-b", "process", "worker-b", str(log_b), "--timeout=60", n=1)
    procs.finish("worker-b", proc_b, timeout=75)

    ended_b = _ends(_read_log(log_b))
    ran_b = Counter(r["task_id"] for r in ended_b)
    assert set(ran_b) == blocking, "worker-b should run exactly the tasks worker-a held"
    assert all(n == 1 for n in ran_b.values()), f"worker-b ran some twice: {ran_b}"
    assert {r["loop"] for r in _ends(_read_log(log_a))} == {target.loop(0)}
    assert {r["loop"] for r in ended_b} == {target.loop(1)}

    stored = target.run(_get_all, target, ids, n=1)
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


async def _operate(target: Target, ids: list[str], origin_pid: int) -> list[Any]:
    """A fresh queue in this process: see the other process's tasks, retry one, archive one."""
    calls: list[Any] = []

    async def handler(task: dict[str, Any], repos: list[str]) -> str:
        calls.append((task, repos))
        return f"done {task['id']}"

    async with DeadLetterQueue(target.store(), worker_id="operator") as dlq:
        dlq.register_handler(WORKFLOW, handler)
        deadline = time.monotonic() + 15
        while True:
            listed = await dlq.list_tasks(limit=100)
            if sorted(t.task_id for t in listed) == sorted(ids):
                break
            assert time.monotonic() < deadline, f"listing shows {[t.task_id for t in listed]}"
            await anyio.sleep(0.2)
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


async def _reopen(target: Target) -> dict[str, FailedTask]:
    """A brand-new queue and store on the same index or file: the changes are all there."""
    async with DeadLetterQueue(target.store(), worker_id="restarted") as dlq:
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
            await anyio.sleep(0.2)
        stats = await dlq.get_statistics()
        assert stats["backend"] == target.backend
        assert stats["total_stored"] == len(RESTART_TASKS)
        breakdown = stats["status_breakdown"]
        assert (breakdown["completed"], breakdown["archived"], breakdown["pending"]) == (1, 1, 3)
        return tasks


def test_tasks_survive_processes_and_a_restart(procs: _Procs, target: Target) -> None:
    enqueuer = procs.spawn("enqueuer", "enqueue", n=0)  # on SQLite: trio
    procs.finish("enqueuer", enqueuer, timeout=60)
    ids = json.loads((procs.tmp / "enqueuer.out").read_text())
    assert ids == [task_id for task_id, _, _ in RESTART_TASKS]

    calls = target.run(_operate, target, ids, enqueuer.pid, n=1)
    assert calls == [({"id": "restart-never-1", "n": len("restart-never-1")}, ["repo-a", "repo-b"])]

    tasks = target.run(_reopen, target)
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
    dumper = procs.spawn("dumper", "dump", n=1)  # on SQLite: asyncio
    procs.finish("dumper", dumper, timeout=60)
    assert json.loads((procs.tmp / "dumper.out").read_text()) == {
        "restart-never-1": "completed",
        "restart-never-2": "pending",
        "restart-exp-1": "pending",
        "restart-exp-2": "archived",
        "restart-linear-1": "pending",
    }
