"""A worker process for the multi-process tests (run with ``python -m``), on any shared store.

``STORE`` names the store every process of a test shares: ``opensearch:URL:INDEX``
(an index on a node; asyncio only; ``opensearch:URL1,URL2,URL3:INDEX`` gives the client
every node of a cluster) or ``sqlite:PATH`` (a file on this host).
``--loop asyncio|trio`` picks the event loop the process runs on.

Modes (first argument):

``process STORE WORKER_ID LOG [options]``
    Runs a :class:`RetryProcessor` (``run_once`` cycles, so leases are never
    renewed) against the store until no open task is left or ``--timeout``
    passes (exit code 3). Every execution of the handler appends JSON lines to
    ``LOG``: ``{"event": "start", ...}`` when it begins and ``{"event": "end",
    "task_id", "pid", "loop", "start", "end"}`` when it ends (``time.time()``). A task
    whose payload has ``"block": true`` blocks for an hour when ``--block`` is
    given. ``--ready``/``--go``: touch the first file once connected, then wait
    for the second to exist before claiming (a start barrier). ``--until F``: no
    open task left is not the end until the file ``F`` exists (the producers are
    done). ``--ride-out``: a cycle that meets an unavailable store is logged
    (``{"event": "store_error", ...}``) and the next one starts after a pause, instead
    of the process failing (a chaos test kills nodes under it).

``enqueue STORE``
    Enqueues the tasks of :data:`RESTART_TASKS` through a ``DeadLetterQueue``,
    prints their ids as one JSON list, and closes the queue.

``dump STORE``
    Prints ``{task_id: status}`` of every stored task as one JSON object.

``dead STORE WORKER_ID LOG --ready F --go F [--duration S] [--open-seconds S]``
    Once connected, touches ``--ready`` and waits for ``--go`` (a start barrier),
    then runs a :class:`RetryProcessor` (``run()``, concurrency 2, claims of 2) for
    ``--duration`` seconds against a dead downstream: the handler appends one JSON
    line per attempt to ``LOG`` and raises ``ConnectionError`` (with ``--up`` it
    succeeds). Breaker: 10 attempts at least, ``--open-seconds`` open; ``--rate``:
    the workflow's rate limit (tasks per second).

``jobs STORE WORKER_ID [--lease-seconds S] [--page-size N] [--timeout T]``
    Runs a :class:`JobRunner` (the bulk-job side of a processor) against the store:
    takes every claimable job and runs it, until no unfinished job is left (exit 0)
    or ``--timeout`` passes (exit 3).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import anyio

from mahavishnu_dlq import DeadLetterQueue
from mahavishnu_dlq.downstream import BreakerBook, BreakerPolicy
from mahavishnu_dlq.downstream.rates import RateBook
from mahavishnu_dlq.errors import StoreUnavailableError
from mahavishnu_dlq.jobs.runner import JobRunner
from mahavishnu_dlq.processor import RetryProcessor
from mahavishnu_dlq.storage import Store
from mahavishnu_dlq.storage.base import event_loop_kind
from mahavishnu_dlq.storage.sqlite import SQLiteStore

WORKFLOW = "proc-wf"

#: (task_id, retry_policy, error) enqueued by the ``enqueue`` mode.
RESTART_TASKS: list[tuple[str, str, str]] = [
    ("restart-never-1", "never", "validation failed: bad input"),
    ("restart-never-2", "never", "permission denied"),
    ("restart-exp-1", "exponential", "connection reset by peer"),
    ("restart-exp-2", "exponential", "timeout talking to upstream"),
    ("restart-linear-1", "linear", "resource exhausted"),
]


def open_store(spec: str) -> Store:
    """The (unopened) store ``spec`` names: ``opensearch:URL[,URL...]:INDEX`` or
    ``sqlite:PATH``."""
    kind, _, rest = spec.partition(":")
    if kind == "sqlite" and rest:
        return SQLiteStore(rest)
    if kind == "opensearch":
        urls, _, index = rest.rpartition(":")  # the URLs have colons of their own
        hosts = [url for url in urls.split(",") if url]
        if hosts and index:
            from mahavishnu_dlq.storage.opensearch import OpenSearchStore  # noqa: PLC0415

            return OpenSearchStore(hosts=hosts, index=index)
    raise ValueError(f"a store is opensearch:URL[,URL...]:INDEX or sqlite:PATH, got {spec!r}")


class _Log:
    """One JSON line per event, flushed at once (the process may be killed)."""

    def __init__(self, path: str) -> None:
        self._file = Path(path).open("a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _wait_for_file(path: Path, timeout: float) -> None:
    """Block until ``path`` exists (the start barrier), at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.01)


async def _process(args: argparse.Namespace) -> int:
    log = _Log(args.log)
    pid = os.getpid()
    loop = event_loop_kind()

    async def handler(task: dict[str, Any], repos: list[str]) -> str:
        start = time.time()
        log.write({"event": "start", "task_id": task["id"], "pid": pid, "start": start})
        if args.block and task.get("block"):
            await anyio.sleep(3600)
        await anyio.sleep(0.001)
        ended = {"event": "end", "task_id": task["id"], "pid": pid, "loop": loop}
        log.write({**ended, "start": start, "end": time.time()})
        return "ok"

    store = open_store(args.store)
    dlq = DeadLetterQueue(store, worker_id=args.worker_id)
    dlq.register_handler(WORKFLOW, handler)
    processor = RetryProcessor(
        dlq,
        concurrency=args.concurrency,
        batch_size=args.batch_size,
        lease_seconds=args.lease_seconds,
        attempt_timeout=args.attempt_timeout,
        worker_id=args.worker_id,
    )
    await dlq.start()
    try:
        if args.ready:
            await anyio.Path(args.ready).touch()
        if args.go:
            await anyio.to_thread.run_sync(_wait_for_file, Path(args.go), args.timeout)
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            try:
                if await processor.run_once():
                    continue
                if await store.open_count() == 0 and (args.until is None or args.until.exists()):
                    return 0
            except StoreUnavailableError as exc:
                if not args.ride_out:
                    raise
                log.write(
                    {
                        "event": "store_error",
                        "pid": pid,
                        "at": time.time(),
                        "error": repr(exc)[:500],
                    }
                )
            await anyio.sleep(0.05)
        return 3
    finally:
        await dlq.stop()
        log.close()


async def _enqueue(args: argparse.Namespace) -> int:
    async with DeadLetterQueue(open_store(args.store), worker_id="enqueuer") as dlq:
        for task_id, policy, error in RESTART_TASKS:
            await dlq.enqueue(
                task_id,
                {"id": task_id, "n": len(task_id)},
                ["repo-a", "repo-b"],
                RuntimeError(error),
                retry_policy=policy,
                max_retries=3,
                metadata={"origin_pid": os.getpid()},
                workflow=WORKFLOW,
            )
    print(json.dumps([task_id for task_id, _, _ in RESTART_TASKS]))  # noqa: T201 - the answer
    return 0


async def _dump(args: argparse.Namespace) -> int:
    async with DeadLetterQueue(open_store(args.store), worker_id="dumper") as dlq:
        statuses: dict[str, str] = {}
        for task_id, _, _ in RESTART_TASKS:
            task = await dlq.get_task(task_id)
            statuses[task_id] = "missing" if task is None else task.status.value
    print(json.dumps(statuses))  # noqa: T201 - the answer
    return 0


async def _dead(args: argparse.Namespace) -> int:
    log = _Log(args.log)
    dlq = DeadLetterQueue(
        open_store(args.store),
        worker_id=args.worker_id,
        concurrency=2,
        batch_size=2,
        breakers=BreakerBook(
            default=BreakerPolicy(
                min_attempts=10, open_seconds=args.open_seconds, open_max_seconds=86400
            )
        ),
        rates=RateBook(by_workflow={} if args.rate is None else {WORKFLOW: args.rate}),
    )

    def refused(task: dict[str, Any], repos: list[str]) -> None:
        record = {"event": "attempt", "task_id": task["id"], "pid": os.getpid()}
        log.write({**record, "at": time.time()})
        if not args.up:
            raise ConnectionError("connection refused")

    dlq.register_handler(WORKFLOW, refused)
    await dlq.connect()
    try:
        await anyio.Path(args.ready).touch()
        await anyio.to_thread.run_sync(_wait_for_file, Path(args.go), 60.0)
        with anyio.move_on_after(args.duration):
            await RetryProcessor(dlq, check_interval=0.05).run()
    finally:
        await dlq.stop()
        log.close()
    return 0


async def _jobs(args: argparse.Namespace) -> int:
    dlq = DeadLetterQueue(
        open_store(args.store),
        worker_id=args.worker_id,
        job_lease_seconds=args.lease_seconds,
        job_page_size=args.page_size,
    )
    await dlq.connect()
    runner = JobRunner(dlq)
    deadline = time.monotonic() + args.timeout
    try:
        while time.monotonic() < deadline:
            job = await runner.claim_next()
            if job is not None:
                await runner.run(job)
                continue
            if all(job.finished for job in await dlq.list_jobs()):
                return 0
            await anyio.sleep(0.05)  # a job held by another runner: its lease runs
        return 3
    finally:
        await dlq.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="_worker")
    parser.add_argument("--loop", choices=["asyncio", "trio"], default="asyncio")
    modes = parser.add_subparsers(dest="mode", required=True)
    proc = modes.add_parser("process")
    proc.add_argument("store")
    proc.add_argument("worker_id")
    proc.add_argument("log")
    proc.add_argument("--concurrency", type=int, default=10)
    proc.add_argument("--batch-size", type=int, default=25)
    proc.add_argument("--lease-seconds", type=float, default=600.0)
    proc.add_argument("--attempt-timeout", type=float, default=300.0)
    proc.add_argument("--timeout", type=float, default=60.0)
    proc.add_argument("--block", action="store_true")
    proc.add_argument("--ready")
    proc.add_argument("--go")
    proc.add_argument("--until", type=Path, help="done only once this file exists")
    proc.add_argument("--ride-out", action="store_true", help="outlive store outages")
    dead = modes.add_parser("dead")
    dead.add_argument("store")
    dead.add_argument("worker_id")
    dead.add_argument("log")
    dead.add_argument("--duration", type=float, default=3.0)
    dead.add_argument("--open-seconds", type=float, default=3600.0)
    dead.add_argument("--rate", type=float, default=None)
    dead.add_argument("--up", action="store_true", help="the downstream answers")
    dead.add_argument("--ready", required=True)
    dead.add_argument("--go", required=True)
    jobs = modes.add_parser("jobs")
    jobs.add_argument("store")
    jobs.add_argument("worker_id")
    jobs.add_argument("--lease-seconds", type=float, default=60.0)
    jobs.add_argument("--page-size", type=int, default=500)
    jobs.add_argument("--timeout", type=float, default=60.0)
    for name in ("enqueue", "dump"):
        modes.add_parser(name).add_argument("store")
    args = parser.parse_args(argv)
    run = {
        "process": _process,
        "enqueue": _enqueue,
        "dump": _dump,
        "jobs": _jobs,
        "dead": _dead,
    }[args.mode]
    code: int = anyio.run(partial(run, args), backend=args.loop)
    return code


if __name__ == "__main__":
    sys.exit(main())
