"""FailoverStore against a real node that is killed, restarted, absent and frozen.

Each test uses an index of its own on the module's node (``chaos_node``) and checks
the outcome by reading OpenSearch with a fresh store, as another process would. The
figures (time from node death to the first call served by the fallback, re-sync
rate, tasks lost) are recorded with ``chaos_timing`` and listed at the end of the
run; they are not asserted — except that nothing may be lost and a frozen node
must not hold callers much beyond the store timeout.
"""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import anyio
import pytest

from mahavishnu_dlq import DeadLetterQueue
from mahavishnu_dlq.models import AttemptOutcome, DeadLetterStatus
from mahavishnu_dlq.storage import FailoverStore
from mahavishnu_dlq.storage.opensearch import OpenSearchStore
from tests.chaos.conftest import Record, everything, until
from tests.chaos.node import ChaosNode

pytestmark = pytest.mark.anyio

TIMEOUT = 2.0  # the failover store's per-call bound
ROOT = Path(__file__).resolve().parents[2]


def failover_store(url: str, index: str) -> FailoverStore:
    search = OpenSearchStore(hosts=[url], index=index, timeout=5.0)
    return FailoverStore(search, failure_threshold=3, probe_interval=0.5, timeout=TIMEOUT)


async def recovered(store: FailoverStore) -> None:
    await until("the re-sync", lambda: not store.degraded, 180)


async def test_no_enqueue_is_lost_when_the_node_dies_and_returns(
    chaos_node: ChaosNode, index_name: str, reader: OpenSearchStore, chaos_timing: Record
) -> None:
    producers, each = 50, 400
    store = failover_store(chaos_node.url, index_name)
    dlq = DeadLetterQueue(store, max_size=100_000)
    await dlq.connect()
    done = 0
    outage: dict[str, Any] = {}

    async def produce(p: int) -> None:
        nonlocal done
        for i in range(each):
            task_id = f"p{p:02d}-{i:03d}"
            await dlq.enqueue(
                task_id, {"p": p, "i": i}, ["repo"], ConnectionError(f"boom {task_id}")
            )
            done += 1

    async def chaos() -> None:
        await until("a quarter enqueued", lambda: done >= producers * each // 4, 60)
        outage["killed_at"] = datetime.now(timezone.utc)
        await anyio.to_thread.run_sync(chaos_node.kill)
        await until("the fallback serving", lambda: store.degraded_since is not None, 30)
        outage["first_fallback"] = store.degraded_since
        outage["done_at_kill"] = done
        await anyio.sleep(5)
        outage["restarting"] = time.monotonic()
        await anyio.to_thread.run_sync(chaos_node.restart)
        outage["ready"] = time.monotonic()

    try:
        async with anyio.create_task_group() as group:
            group.start_soon(chaos)
            for p in range(producers):
                group.start_soon(produce, p)
        await recovered(store)
        health = store.health
    finally:
        await dlq.stop()

    expected = {f"p{p:02d}-{i:03d}" for p in range(producers) for i in range(each)}
    stored = await everything(reader)
    ids = [t.task_id for t in stored]
    assert len(ids) == len(set(ids)), "a task id is stored twice"
    assert set(ids) == expected, f"lost: {len(expected - set(ids))}"
    for task in stored:  # every record intact
        p, i = (int(part) for part in task.task_id[1:].split("-"))
        assert task.task == {"p": p, "i": i}
        assert task.error == f"boom {task.task_id}"
        assert task.status is DeadLetterStatus.PENDING
    latency = (outage["first_fallback"] - outage["killed_at"]).total_seconds()
    chaos_timing("node death -> first call served by the fallback", latency)
    chaos_timing("restart until yellow", outage["ready"] - outage["restarting"])
    changes, seconds = health["last_resync_changes"], health["last_resync_seconds"]
    chaos_timing(f"re-sync of {changes} changes ({changes / seconds:.0f}/s)", seconds)
    chaos_timing(f"tasks lost of {len(expected)}", float(len(expected - set(ids))))


async def test_a_processor_keeps_retrying_through_the_outage(
    chaos_node: ChaosNode, index_name: str, reader: OpenSearchStore
) -> None:
    store = failover_store(chaos_node.url, index_name)
    dlq = DeadLetterQueue(store, max_size=100_000, concurrency=8)
    calls: dict[str, int] = {}

    async def handler(task: dict[str, Any], repos: list[str]) -> str:
        calls[task["id"]] = calls.get(task["id"], 0) + 1
        await anyio.sleep(0.2)  # long enough that the kill finds attempts in flight
        if task["ok"]:
            return "done"
        raise ConnectionError("still failing")

    dlq.register_handler("wf", handler)
    await dlq.connect()
    ids = [f"job-{n:03d}" for n in range(300)]
    try:
        for n, task_id in enumerate(ids):
            await dlq.enqueue(
                task_id,
                {"id": task_id, "ok": n % 3 != 0},
                error=ConnectionError("first failure"),
                workflow="wf",
                retry_policy="immediate",
                max_retries=2,
            )
        await dlq.start_retry_processor(check_interval_seconds=0.05)
        await until("some retries done", lambda: len(calls) >= 40, 60)
        await anyio.to_thread.run_sync(chaos_node.kill)
        # the attempts in flight finish into the fallback; failed ones are retried there
        await until("outcomes kept in the fallback", lambda: store.pending_resync >= 5, 60)
        kept_during_outage = store.pending_resync
        await anyio.sleep(2)
        await anyio.to_thread.run_sync(chaos_node.restart)

        async def settled() -> bool:
            stats = await dlq.get_statistics()
            done = stats["status_breakdown"]
            return not store.degraded and done["completed"] + done["exhausted"] == len(ids)

        await until("every task settled and re-synced", settled, 180)
    finally:
        await dlq.stop()

    assert kept_during_outage >= 5
    stored = {t.task_id: t for t in await everything(reader)}
    assert set(stored) == set(ids)
    for n, task_id in enumerate(ids):
        task = stored[task_id]
        if n % 3 != 0:
            assert task.status is DeadLetterStatus.COMPLETED, task
            assert task.attempts[-1].outcome is AttemptOutcome.SUCCESS
        else:
            assert task.status is DeadLetterStatus.EXHAUSTED, task
            assert task.retry_count == 2
            failures = [a for a in task.attempts if a.outcome is AttemptOutcome.FAILURE]
            assert len(failures) >= 2, task.attempts  # the history survived the outage


async def test_a_queue_started_while_the_node_is_down_syncs_when_it_appears(
    chaos_node: ChaosNode, index_name: str, reader: OpenSearchStore, chaos_timing: Record
) -> None:
    """Also the re-sync figure: 20,000 changes recorded while the node was away."""
    count = 20_000
    await anyio.to_thread.run_sync(chaos_node.kill)
    store = failover_store(chaos_node.url, index_name)
    dlq = DeadLetterQueue(store, max_size=100_000)
    try:
        await dlq.connect()  # no error: degraded
        assert store.health["circuit_open"]
        for n in range(count):
            await dlq.enqueue(f"early-{n}", {"n": n}, error=TimeoutError())
        assert (await dlq.get_statistics())["queue_size"] == count
        assert store.pending_resync == count
        await anyio.to_thread.run_sync(chaos_node.start)
        await recovered(store)
        changes, seconds = store.last_resync or (0, 0.0)
    finally:
        await dlq.stop()
    # nothing left to re-sync, and every task is on the node (below). On a loaded
    # machine a bulk against the node that has just started may time out: that pass
    # stops, and the next probe's pass takes the rest (last_resync is that pass)
    assert store.pending_resync == 0
    assert 0 < changes <= count
    chaos_timing(f"re-sync of {changes} changes ({changes / seconds:.0f}/s)", seconds)
    assert {t.task_id for t in await everything(reader)} == {f"early-{n}" for n in range(count)}


async def test_a_frozen_node_trips_the_breaker_instead_of_blocking_callers(
    chaos_node: ChaosNode, index_name: str, reader: OpenSearchStore, chaos_timing: Record
) -> None:
    store = failover_store(chaos_node.url, index_name)
    dlq = DeadLetterQueue(store)
    await dlq.connect()
    latencies: list[float] = []

    async def enqueue(task_id: str) -> None:
        started = time.monotonic()
        await dlq.enqueue(task_id, {"id": task_id}, error=ConnectionError("x"))
        latencies.append(time.monotonic() - started)

    try:
        await enqueue("before")
        await anyio.to_thread.run_sync(chaos_node.freeze)
        async with anyio.create_task_group() as group:
            for n in range(20):
                group.start_soon(enqueue, f"frozen-{n}")
        assert store.health["circuit_open"]
        assert max(latencies) < 3 * TIMEOUT  # bounded by the timeout, not by the node
        chaos_timing("slowest call while frozen", max(latencies))
        await anyio.to_thread.run_sync(chaos_node.thaw)
        await recovered(store)
    finally:
        await dlq.stop()
    stored = {t.task_id for t in await everything(reader)}
    assert stored == {"before", *(f"frozen-{n}" for n in range(20))}


class Worker:
    """A process of :mod:`tests.chaos._failover_worker`, driven line by line."""

    def __init__(self, url: str, index: str, name: str) -> None:
        self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "tests.chaos._failover_worker", url, index, name],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def send(self, command: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()

    def answer(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        assert line, f"the worker exited ({self.process.poll()})"
        return line

    def ask(self, command: str) -> str:
        self.send(command)
        return self.answer()

    def stop(self) -> int:
        """Ask it to stop (kill it after a minute); its exit status."""
        if self.process.poll() is None:
            self.send("stop")
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
        code = self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()
        return code


async def test_two_processes_resync_without_overwriting_each_others_newer_changes(
    chaos_node: ChaosNode, index_name: str, reader: OpenSearchStore
) -> None:
    setup = DeadLetterQueue(OpenSearchStore(hosts=[chaos_node.url], index=index_name))
    await setup.connect()
    await setup.enqueue("shared", {"by": "setup"}, error=ConnectionError("original"))
    await setup.stop()
    a, b = Worker(chaos_node.url, index_name, "a"), Worker(chaos_node.url, index_name, "b")
    try:
        ask = anyio.to_thread.run_sync
        assert await ask(a.ask, "see") == "seen"
        assert await ask(b.ask, "see") == "seen"
        await ask(chaos_node.kill)
        assert await ask(a.ask, "write") == "written 51"  # a's change of shared first …
        await anyio.sleep(0.01)
        assert await ask(b.ask, "write") == "written 51"  # … b's is newer
        await ask(chaos_node.restart)
        a.send("sync")  # both re-sync at once
        b.send("sync")
        answers = [await ask(a.answer), await ask(b.answer)]
        assert answers == ["synced 51", "synced 51"]
    finally:
        codes = [a.stop(), b.stop()]
    assert codes == [0, 0]
    stored = {t.task_id: t for t in await everything(reader)}
    expected = {"shared", *(f"a-{n}" for n in range(50)), *(f"b-{n}" for n in range(50))}
    assert set(stored) == expected
    shared = stored["shared"]
    assert shared.task == {"by": "b"}  # the newer change won, in either order of re-sync
    assert shared.last_error == "from b"
