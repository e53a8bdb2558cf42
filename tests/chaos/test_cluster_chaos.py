"""A three-node cluster loses the node that holds the primary, under load, and takes it back.

Three nodes on loopback (`ChaosCluster`, 320 MiB heap each); the tasks index has one shard
and one replica. 50 producers in this process enqueue 10,000 ids through a store given all
three URLs, while 3 processor processes (``tests/integration/_worker.py``, the same workers
as the single-node multi-process test) claim and complete them. Once 2,500 ids are
acknowledged, the node holding the primary shard is SIGKILLed; once writes succeed again and
2,500 more ids were tried, it is started again on its data and the index turns green.

Then, as in ``tests/integration/test_processes.py``: every acknowledged id is in the index,
every stored task ran exactly once (by the processor the index names), no two executions of
one task overlapped, and every task is completed after one retry. An enqueue that failed
is not acknowledged (the producer does not send it again: a retry of a task that had landed
and completed would reopen it); whether it landed or not, it must not run twice.

A write acknowledged with ``wait_for_active_shards=1`` (the default) was replicated to every
in-sync copy before the answer, so the promoted replica has it: every id acknowledged before
the kill is read back (a realtime ``_mget``) while the old primary is still down. And the
client, given all three hosts, keeps working: no enqueue fails, and the producers' client
did meet the dead node (it marked it dead and went on with the others).

The figures (SIGKILL until a new primary, until the first acknowledged write, restart until
the node answers and until green) are printed and listed under "chaos timings"; they are
not asserted.

The module's other test freezes a node (SIGSTOP) instead: a hung node costs the client one
timeout, then it goes around it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from mahavishnu_dlq import DeadLetterQueue
from mahavishnu_dlq.errors import DLQError
from mahavishnu_dlq.models import AttemptOutcome, DeadLetterStatus
from mahavishnu_dlq.storage import opensearch_query as q
from mahavishnu_dlq.storage.opensearch import OpenSearchStore
from tests.chaos.cluster import ChaosCluster, dead_hosts
from tests.chaos.conftest import Record, everything, until
from tests.chaos.node import NodeError
from tests.integration._worker import WORKFLOW
from tests.integration.test_processes import _assert_no_overlap, _ends, _read_log, _starts

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
PRODUCERS, EACH = 50, 200  # 10,000 ids
PROCESSORS = 3
KILL_AT = 2_500  # acknowledged ids before the SIGKILL
RESTART_AFTER = 2_500  # ids tried after writes are back, before the restart
LEASE = 60.0  # seconds: an outcome that was not recorded shows up as a second run


@pytest.fixture(scope="module")
def chaos_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChaosCluster]:
    """The module's own three-node cluster (its work directory in the system temp dir, as
    for `chaos_module_node`); skips locally and fails with ``CI=true`` if it cannot start.
    The nodes' logs are kept in ``<pytest tmp>/chaos-cluster*``."""
    keep_logs_in = tmp_path_factory.mktemp("chaos-cluster")
    cluster = ChaosCluster()
    try:
        try:
            cluster.start()
        except Exception as exc:  # any reason means "no cluster here"
            reason = f"no OpenSearch cluster could be started ({type(exc).__name__}: {exc})"
            if os.environ.get("CI", "").lower() == "true":
                pytest.fail(f"{reason}; CI needs one", pytrace=False)
            pytest.skip(f"{reason}; this chaos test needs three nodes of its own")
        yield cluster
    finally:
        cluster.keep_logs(keep_logs_in)
        cluster.stop()


class Processors:
    """The processor processes: started behind a barrier, done once the producers are."""

    def __init__(self, spec: str, tmp: Path, count: int) -> None:
        self.tmp = tmp
        self.go = tmp / "go"
        self.produced = tmp / "produced"  # the processors may finish once it exists
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        for n in range(1, count + 1):
            worker_id = f"cluster-worker-{n}"
            with (tmp / f"{worker_id}.out").open("wb") as out:
                self.procs[worker_id] = subprocess.Popen(  # noqa: S603 - our interpreter and module
                    [
                        *(sys.executable, "-m", "tests.integration._worker", "process", spec),
                        *(worker_id, str(self.log(worker_id))),
                        *("--concurrency=10", "--batch-size=25", f"--lease-seconds={LEASE}"),
                        *("--timeout=600", "--ride-out", f"--until={self.produced}"),
                        *(f"--ready={tmp / f'{worker_id}.ready'}", f"--go={self.go}"),
                    ],
                    cwd=ROOT,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )

    def log(self, worker_id: str) -> Path:
        return self.tmp / f"{worker_id}.jsonl"

    def output(self, worker_id: str) -> str:
        return (self.tmp / f"{worker_id}.out").read_text(errors="replace")[-4000:]

    def ready(self) -> bool:
        for worker_id, proc in self.procs.items():
            assert proc.poll() is None, f"{worker_id} exited early:\n{self.output(worker_id)}"
        return all((self.tmp / f"{w}.ready").exists() for w in self.procs)

    def finish(self, timeout: float) -> None:
        """Wait for every processor to exit 0 (once nothing is open and ``produced`` exists)."""
        deadline = time.monotonic() + timeout
        for worker_id, proc in self.procs.items():
            try:
                code = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pytest.fail(
                    f"{worker_id} still running after {timeout:g}s:\n{self.output(worker_id)}"
                )
            assert code == 0, f"{worker_id} exited {code}:\n{self.output(worker_id)}"

    def reap(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait()


@pytest.fixture
def processors_of(tmp_path: Path) -> Iterator[Callable[[str], Processors]]:
    """Start the processors on a store spec; every one killed and reaped at the end."""
    started: list[Processors] = []

    def start(spec: str) -> Processors:
        started.append(Processors(spec, tmp_path, PROCESSORS))
        return started[-1]

    try:
        yield start
    finally:
        for processors in started:
            processors.reap()


async def test_the_primary_node_dies_under_load_and_no_task_is_lost_or_run_twice(
    chaos_cluster: ChaosCluster,
    processors_of: Callable[[str], Processors],
    chaos_timing: Record,
) -> None:
    cluster = chaos_cluster
    index = f"dlq-cluster-{uuid.uuid4().hex[:10]}"
    began = time.monotonic()
    store = OpenSearchStore(hosts=cluster.urls, index=index, number_of_replicas=1)
    dlq = DeadLetterQueue(store, worker_id="producer", max_size=100_000)
    await dlq.connect()  # the index, its template and side indexes: 1 shard, 1 replica
    await anyio.to_thread.run_sync(cluster.wait_for_status, "green", 120, index)
    processors = processors_of(f"opensearch:{','.join(cluster.urls)}:{index}")
    await until("the processors to connect", processors.ready, 60)
    processors.go.touch()

    acked: dict[str, tuple[float, float]] = {}  # id: (enqueue began, acknowledged)
    failed: dict[str, str] = {}  # id: the error its enqueue raised
    outage: dict[str, Any] = {}

    async def produce(p: int) -> None:
        for i in range(EACH):
            task_id = f"c{p:02d}-{i:03d}"
            sent = time.monotonic()
            try:
                await dlq.enqueue(
                    task_id,
                    {"id": task_id},
                    error=RuntimeError("original failure"),
                    retry_policy="immediate",
                    max_retries=3,
                    workflow=WORKFLOW,
                )
            except DLQError as exc:
                failed[task_id] = f"{type(exc).__name__}: {exc}"
                continue
            acked[task_id] = (sent, time.monotonic())

    def promoted() -> bool:
        try:
            return bool(cluster.primary_of(index) != outage["victim"])
        except NodeError:
            return False  # no started primary yet

    def writes_back() -> bool:
        return any(sent >= outage["killed"] for sent, _ in acked.values())

    async def chaos() -> None:
        await until("2,500 acknowledged ids", lambda: len(acked) >= KILL_AT, 180)
        victim = await anyio.to_thread.run_sync(cluster.primary_of, index)
        manager = await anyio.to_thread.run_sync(cluster.cluster_manager)
        killed = time.monotonic()
        outage.update(victim=victim, manager=manager, killed=killed)
        await anyio.to_thread.run_sync(cluster.kill, victim)
        async with anyio.create_task_group() as group:

            async def new_primary() -> None:
                await until("a new primary", lambda: anyio.to_thread.run_sync(promoted), 120)
                outage["new"] = time.monotonic()

            group.start_soon(new_primary)
            await until("a write acknowledged after the kill", writes_back, 120)
        # what was acknowledged before the kill, read while the old primary is still down:
        # the promoted replica had it (replicated before the acknowledgement)
        before = [q.doc_id(task_id) for task_id, (_, done) in acked.items() if done < killed]
        outage["before"] = len(before)
        outage["missing"] = await anyio.to_thread.run_sync(cluster.missing, index, before)
        tried_at_back = len(acked) + len(failed)

        def more_tried() -> bool:
            outage["dead_hosts"] |= dead_hosts(store)  # the client met the dead node, went on
            return len(acked) + len(failed) >= min(tried_at_back + RESTART_AFTER, 10_000)

        outage["dead_hosts"] = set()
        await until("2,500 more ids tried", more_tried, 300)
        outage["restarting"] = time.monotonic()
        await anyio.to_thread.run_sync(cluster.restart, victim)
        outage["answering"] = time.monotonic()
        await anyio.to_thread.run_sync(cluster.wait_for_status, "green", 180, index)
        outage["green"] = time.monotonic()

    try:
        async with anyio.create_task_group() as group:
            group.start_soon(chaos)
            for p in range(PRODUCERS):
                group.start_soon(produce, p)
        produced = time.monotonic()
    finally:
        await dlq.stop()  # refreshes: every processor sees every task
        processors.produced.touch()
    await anyio.to_thread.run_sync(processors.finish, 300)
    processed = time.monotonic()

    # what the index holds, and what ran: every execution, from every process's own log
    reader = OpenSearchStore(hosts=cluster.urls, index=index)
    try:
        stored = {task.task_id: task for task in await everything(reader)}
        await reader.drop()
    finally:
        await reader.close()
    executions: dict[str, list[tuple[float, float]]] = defaultdict(list)
    ran_by: dict[str, str] = {}
    per_worker: Counter[str] = Counter()
    store_errors = 0
    for worker_id in processors.procs:
        records = _read_log(processors.log(worker_id))
        assert len(_starts(records)) == len(_ends(records)), f"{worker_id} left an attempt open"
        store_errors += sum(1 for r in records if r["event"] == "store_error")
        for record in _ends(records):
            executions[record["task_id"]].append((record["start"], record["end"]))
            ran_by[record["task_id"]] = worker_id
            per_worker[worker_id] += 1

    killed = outage["killed"]
    first_back = min(done for sent, done in acked.values() if sent >= killed)
    in_flight = [done - sent for sent, done in acked.values() if sent < killed <= done]
    victim = cluster.names[outage["victim"]]
    role = victim + (", the cluster manager" if outage["manager"] == victim else "")
    figures = [
        (f"SIGKILL of the primary's node ({role}) -> new primary started", outage["new"] - killed),
        ("SIGKILL -> first write acknowledged again", first_back - killed),
        (
            f"longest wait of the {len(in_flight)} enqueues in flight at the kill",
            max(in_flight, default=0.0),
        ),
        ("restart -> the node answers", outage["answering"] - outage["restarting"]),
        ("restart -> index green again", outage["green"] - outage["restarting"]),
        (f"ids acknowledged before the kill, all on the promoted primary: {outage['before']}", 0.0),
        (f"{len(acked)} ids acknowledged, {len(failed)} failed, {len(stored)} stored", 0.0),
        (f"processor cycles that met an unavailable store: {store_errors}", 0.0),
        (
            f"producing {PRODUCERS * EACH} ids ({len(acked) / (produced - began):.0f}/s)",
            produced - began,
        ),
        ("scenario, from the index's creation to the last processor's exit", processed - began),
    ]
    for what, seconds in figures:
        chaos_timing(what, seconds)
        print(f"{seconds:7.2f} s  {what}")  # noqa: T201 - the figures, with -s

    lost = set(acked) - set(stored)
    assert not lost, f"{len(lost)} acknowledged ids are not in the index, e.g. {sorted(lost)[:5]}"
    assert set(stored) <= set(acked) | set(failed), "the index holds ids nobody enqueued"
    twice = sorted(task_id for task_id, runs in executions.items() if len(runs) > 1)
    assert not twice, f"{len(twice)} tasks ran more than once, e.g. {twice[:5]}"
    assert set(executions) == set(stored), "the executions and the stored tasks differ"
    _assert_no_overlap(executions)
    busy = [w for w in processors.procs if per_worker[w] > 0]
    assert len(busy) >= 2, f"only {busy} did any work: {dict(per_worker)}"
    for task_id, task in stored.items():
        assert task.status is DeadLetterStatus.COMPLETED, f"{task_id} is {task.status.value}"
        assert task.retry_count == 1
        assert task.total_attempts == 2  # the original failure and the one retry
        assert task.lease_owner is None
        [attempt] = task.attempts
        assert attempt.outcome is AttemptOutcome.SUCCESS
        assert attempt.worker == ran_by[task_id], f"{task_id}: index and logs disagree"
    failures = Counter(error.split(":")[0] for error in failed.values())
    assert not failed, f"{len(failed)} enqueues failed: {dict(failures)}"
    assert not outage["missing"], (
        f"{len(outage['missing'])} of the {outage['before']} ids acknowledged before the kill "
        "were not on the promoted primary"
    )
    victim_url = cluster.urls[outage["victim"]]
    assert victim_url in outage["dead_hosts"], "the producers' client never met the dead node"


async def test_a_hung_node_costs_one_timeout_then_the_client_goes_around_it(
    chaos_cluster: ChaosCluster, chaos_timing: Record
) -> None:
    """A node that hangs (SIGSTOP) rather than dies: connections to it open, nothing
    answers. The node chosen holds no copy of the index, so the cluster itself does not
    wait for it: only the requests the client sends to it do. Given several hosts, the
    store's client retries a timed-out request on the next host and sets the hung one aside
    (as it does a refused one): one enqueue waits one timeout, none fails."""
    cluster = chaos_cluster
    timeout = 2.0
    index = f"dlq-cluster-hung-{uuid.uuid4().hex[:8]}"
    store = OpenSearchStore(hosts=cluster.urls, index=index, number_of_replicas=1, timeout=timeout)
    dlq = DeadLetterQueue(store, worker_id="hung")
    await dlq.connect()
    latencies: list[float] = []
    try:
        await anyio.to_thread.run_sync(cluster.wait_for_status, "green", 120, index)
        [hung] = set(range(len(cluster.urls))) - await anyio.to_thread.run_sync(
            cluster.copies_of, index
        )
        await anyio.to_thread.run_sync(cluster.freeze, hung)
        try:
            for n in range(30):
                sent = time.monotonic()
                await dlq.enqueue(f"hung-{n}", {"id": n}, error=RuntimeError("x"))
                latencies.append(time.monotonic() - sent)
            met = dead_hosts(store)
        finally:
            await anyio.to_thread.run_sync(cluster.thaw, hung)
        assert await store.count() == 30
    finally:
        await store.drop()
        await dlq.stop()
    slow = [seconds for seconds in latencies if seconds >= timeout]
    chaos_timing("hung node: the one enqueue that met it", max(latencies))
    print(f"{max(latencies):7.2f} s  hung node: the one enqueue that met it")  # noqa: T201
    assert met == {cluster.urls[hung]}, f"the client set aside {met}"
    assert len(slow) == 1, f"enqueues that waited a timeout: {slow}"
    assert max(latencies) < 2 * timeout
