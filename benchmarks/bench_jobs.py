"""Bulk jobs on OpenSearch (issue 13, points 4 and 6), with same-run baselines.

    python -m benchmarks.bench_jobs [--quick] [--tasks 100000] [--rounds 3]

Uses ``MAHAVISHNU_DLQ_TEST_OPENSEARCH_URL`` when set, else starts a node with
``scripts/opensearch_node.py`` (512 MiB heap) and stops it at the end.

One index of N exhausted tasks (default 100,000; ``--quick`` 10,000; 20 workflows,
every error category), filled by plain ``_bulk`` writes and reset to "all
exhausted" the same way before each replay.

1. Dry run: ``start_job("replay", dry_run=True)`` (the store's ``summarize``: one
   search with aggregations, plus the job stored), median of 5, against the bare
   client's one ``_search`` with the same aggregations, and against counting by
   iteration (paging through ``list_tasks``, timed once): why aggregations.
2. Replay without a rate: ``start_job("replay")``, then one ``JobRunner`` runs it to
   the end in this process (tasks/s), against the bare client doing the same
   work (``search_after`` pages and one conditional ``_bulk`` per page): the
   ceiling. Interleaved, ``--rounds`` times; medians.
3. Memory of the runner: ``tracemalloc`` peak while a job runs over N/10 tasks
   (two workflows of twenty) and over N: flat when the peak does not grow with N.
4. Replay at ``rate=2000``: elapsed against the ideal (N-1)/2000 s.

Times are printed, never asserted: the verdicts say how a run compares to the
issue's targets on this machine (2 shared cores).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import sys
import time
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from benchmarks._jobs_common import (
    REPLAY_STATUSES,
    WORKFLOWS,
    Corpus,
    raw_replay,
    raw_summary,
)
from benchmarks.bench_opensearch import _node_module, _store, _table
from mahavishnu_dlq import DeadLetterQueue
from mahavishnu_dlq.clock import utcnow
from mahavishnu_dlq.jobs import Job, JobState
from mahavishnu_dlq.jobs.runner import JobRunner
from mahavishnu_dlq.models import TaskFilter
from mahavishnu_dlq.storage.opensearch import OpenSearchStore

_RATE = 2000.0
_DRY_RUNS = 5


def _mib(value: float) -> str:
    return f"{value / 2**20:.1f}"


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


@asynccontextmanager
async def _queue(url: str, index: str) -> AsyncIterator[DeadLetterQueue]:
    """A queue on a store of its own (a fresh client and caches) over ``index``."""
    store = _store(url, index)
    await store.open()
    try:
        yield DeadLetterQueue(store, max_size=10**9)
    finally:
        await store.close()


async def _timed(call: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = await call()
    return time.perf_counter() - started, result


# -- 1. dry run ------------------------------------------------------------------------


async def _by_iteration(dlq: DeadLetterQueue, until: datetime) -> int:
    """The dry run's counts by reading every match (what aggregations spare)."""
    counts: tuple[dict[str, int], ...] = ({}, {}, {})
    cursor: str | None = None
    total = 0
    while True:
        page = await dlq.list_tasks(REPLAY_STATUSES, limit=10_000, until=until, cursor=cursor)
        for task in page:
            keys = (task.status.value, task.error_category.value, task.workflow)
            for count, key in zip(counts, keys, strict=True):
                count[key] = count.get(key, 0) + 1
        total += len(page)
        if page.cursor is None:
            return total
        cursor = page.cursor


@dataclass
class DryRun:
    job: float
    raw: float
    iteration: float
    job_runs: list[float]
    raw_runs: list[float]


async def section_dry_run(url: str, index: str, n: int) -> DryRun:
    job_runs: list[float] = []
    raw_runs: list[float] = []
    async with _queue(url, index) as dlq:
        store = dlq.store
        assert isinstance(store, OpenSearchStore)
        for rep in range(_DRY_RUNS + 1):  # the first of each: warm-up, untimed
            seconds, job = await _timed(lambda: dlq.start_job("replay", dry_run=True))
            assert isinstance(job, Job)
            assert job.state is JobState.DONE, job
            assert job.matched == n, job
            assert job.summary is not None
            assert len(job.summary.by_workflow) == WORKFLOWS
            assert len(job.summary.sample) == 20
            raw_seconds, answer = await _timed(lambda: raw_summary(store, utcnow()))
            assert answer["hits"]["total"]["value"] == n
            if rep:
                job_runs.append(seconds)
                raw_runs.append(raw_seconds)
        iteration, counted = await _timed(
            lambda: _by_iteration(dlq, utcnow() + timedelta(microseconds=1))
        )
        assert counted == n
    return DryRun(
        statistics.median(job_runs), statistics.median(raw_runs), iteration, job_runs, raw_runs
    )


def dry_run_rows(dry: DryRun, n: int) -> list[list[str]]:
    def spread(runs: list[float]) -> str:
        return f"{min(runs):.3f}-{max(runs):.3f}"

    at_scale = n >= 100_000
    return [
        [
            'start_job("replay", dry_run=True): summarize (aggregations) + job stored',
            f"{n:,}",
            f"{dry.job:.3f}",
            spread(dry.job_runs),
            f"{dry.job / dry.raw:.2f}x",
            "≤ 1 s at 100k",
            _verdict(dry.job <= 1.0) if at_scale else "—",
        ],
        [
            "raw _search: size 20 + 3 terms aggs + track_total_hits (bare client)",
            f"{n:,}",
            f"{dry.raw:.3f}",
            spread(dry.raw_runs),
            "1.00x",
            "—",
            "—",
        ],
        [
            "counting by iteration: list_tasks pages of 10,000 (once)",
            f"{n:,}",
            f"{dry.iteration:.3f}",
            "1 run",
            f"{dry.iteration / dry.raw:.0f}x",
            "—",
            "—",
        ],
    ]


# -- 2-4. replays ----------------------------------------------------------------------


@dataclass
class Run:
    seconds: float  # the runner's run() (or the raw loop), from first page to last
    tasks: int
    peak: int | None = None  # tracemalloc peak during the run, bytes
    start_job: float = 0.0  # start_job's own time (snapshot summary + job stored)

    @property
    def rate(self) -> float:
        return self.tasks / self.seconds


async def runner_replay(
    url: str,
    index: str,
    corpus: Corpus,
    *,
    flt: TaskFilter | None = None,
    rate: float | None = None,
    trace: bool = False,
) -> Run:
    """Reset the index, start a replay job and run it to the end with one runner."""
    await _reset(url, index, corpus)
    async with _queue(url, index) as dlq:
        started, job = await _timed(lambda: dlq.start_job("replay", flt, rate=rate))
        runner = JobRunner(dlq)
        job = await runner.claim(job.job_id)
        gc.collect()
        if trace:
            tracemalloc.start()
        try:
            seconds, job = await _timed(lambda: runner.run(job))
            peak = tracemalloc.get_traced_memory()[1] if trace else None
        finally:
            if trace:
                tracemalloc.stop()
    assert isinstance(job, Job)
    assert job.state is JobState.DONE, job
    assert job.done == job.matched, job
    assert job.skipped == job.failed == 0, job
    return Run(seconds, job.done, peak, started)


async def raw_run(url: str, index: str, corpus: Corpus, page: int) -> Run:
    await _reset(url, index, corpus)
    store = _store(url, index)
    try:
        gc.collect()
        seconds, done = await _timed(lambda: raw_replay(store, utcnow(), page))
    finally:
        await store.close()
    assert done == corpus.count, done
    return Run(seconds, done)


async def _reset(url: str, index: str, corpus: Corpus) -> None:
    store = _store(url, index)
    try:
        await corpus.fill(store)
    finally:
        await store.close()


@dataclass
class Replays:
    runner: list[Run]
    raw: list[Run]
    small: Run
    large: Run
    paced: Run

    @property
    def runner_rate(self) -> float:
        return statistics.median(r.rate for r in self.runner)

    @property
    def raw_rate(self) -> float:
        return statistics.median(r.rate for r in self.raw)

    @property
    def paced_ideal(self) -> float:
        return (self.paced.tasks - 1) / _RATE

    @property
    def paced_rate(self) -> float:
        return (self.paced.tasks - 1) / self.paced.seconds

    @property
    def paced_deviation(self) -> float:
        """Signed: positive when the run took longer than the ideal."""
        return (self.paced.seconds - self.paced_ideal) / self.paced_ideal


async def section_replays(url: str, index: str, corpus: Corpus, rounds: int) -> Replays:
    n = corpus.count
    page = 500  # DeadLetterQueue.job_page_size's default: the runner's page
    print("  … warm-up: a replay of a twentieth of the tasks, untimed", file=sys.stderr)
    await runner_replay(url, index, corpus, flt=TaskFilter(workflow=["wf-0"]))
    runner: list[Run] = []
    raw: list[Run] = []
    for r in range(rounds):  # interleaved: the node's state drifts along the run
        runner.append(await runner_replay(url, index, corpus))
        raw.append(await raw_run(url, index, corpus, page))
        print(
            f"  … round {r + 1}: runner {runner[-1].rate:,.0f}/s, raw {raw[-1].rate:,.0f}/s",
            file=sys.stderr,
        )
    tenth = TaskFilter(workflow=[f"wf-{w}" for w in range(WORKFLOWS // 10)])
    print("  … memory: tracemalloc runs at N/10 and N", file=sys.stderr)
    small = await runner_replay(url, index, corpus, flt=tenth, trace=True)
    assert small.tasks == n // 10, small.tasks
    large = await runner_replay(url, index, corpus, trace=True)
    print(f"  … paced: rate={_RATE:.0f}/s over {n:,} tasks", file=sys.stderr)
    paced = await runner_replay(url, index, corpus, rate=_RATE)
    return Replays(runner, raw, small, large, paced)


def replay_rows(rep: Replays, n: int) -> list[list[str]]:
    def spread(runs: list[Run]) -> str:
        return f"{min(r.rate for r in runs):,.0f}-{max(r.rate for r in runs):,.0f}"

    seconds = statistics.median(r.seconds for r in rep.runner)
    raw_seconds = statistics.median(r.seconds for r in rep.raw)
    start = statistics.median(r.start_job for r in rep.runner)
    return [
        [
            "JobRunner.run, no rate (one runner, pages of 500)",
            f"{n:,}",
            f"{seconds:.1f}",
            f"{rep.runner_rate:,.0f}",
            spread(rep.runner),
            f"{rep.runner_rate / rep.raw_rate:.0%}",
            "≥ 2,000/s",
            _verdict(rep.runner_rate >= 2000),
        ],
        [
            "raw: search_after pages of 500 + one conditional _bulk each (ceiling)",
            f"{n:,}",
            f"{raw_seconds:.1f}",
            f"{rep.raw_rate:,.0f}",
            spread(rep.raw),
            "100%",
            "—",
            "—",
        ],
        [
            'start_job("replay") itself (snapshot summary + job stored)',
            f"{n:,}",
            f"{start:.3f}",
            "—",
            "—",
            "—",
            "—",
            "—",
        ],
    ]


def memory_rows(rep: Replays) -> list[list[str]]:
    assert rep.small.peak is not None
    assert rep.large.peak is not None
    growth = rep.large.peak / rep.small.peak
    flat = growth < 2.0  # ten times the tasks, less than twice the memory
    return [
        [
            "JobRunner.run, replay of two workflows (N/10)",
            f"{rep.small.tasks:,}",
            _mib(rep.small.peak),
            f"{rep.small.peak / rep.small.tasks:,.0f}",
            "1.00x",
            "—",
            "—",
        ],
        [
            "JobRunner.run, replay of everything (N)",
            f"{rep.large.tasks:,}",
            _mib(rep.large.peak),
            f"{rep.large.peak / rep.large.tasks:,.0f}",
            f"{growth:.2f}x",
            "flat (< 2x for 10x tasks)",
            _verdict(flat),
        ],
    ]


def paced_rows(rep: Replays) -> list[list[str]]:
    dev = rep.paced_deviation
    return [
        [
            f"JobRunner.run, rate={_RATE:,.0f}/s",
            f"{rep.paced.tasks:,}",
            f"{rep.paced.seconds:.2f}",
            f"{rep.paced_ideal:.2f}",
            f"{rep.paced_rate:,.0f}",
            f"{dev:+.1%}",
            "within 5%",
            _verdict(abs(dev) <= 0.05),
        ]
    ]


# -- the run ---------------------------------------------------------------------------


async def run_all(url: str, n: int, rounds: int) -> None:
    info_store = _store(url, "unused")
    info = await info_store._client.info()
    await info_store.close()
    print("# mahavishnu_dlq bulk job benchmarks (OpenSearch)\n")
    print(
        f"- node: OpenSearch {info['version']['number']} at {url}; "
        f"heap {os.environ.get('BENCH_HEAP', '512 MiB')}; Python {sys.version.split()[0]}; "
        f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}\n"
        f"- {n:,} exhausted tasks, {WORKFLOWS} workflows, every error category; "
        f"{rounds} interleaved round(s) of the unpaced replay\n"
    )
    made, corpus = await _timed(lambda: asyncio.to_thread(Corpus.make, n))
    index = f"bench-jobs-{uuid.uuid4().hex[:10]}"
    loader = _store(url, index)
    await loader.open()
    try:
        filled = await corpus.fill(loader)
        print(
            f"  … {n:,} documents made in {made:.0f} s, loaded in {filled:.0f} s", file=sys.stderr
        )
        dry = await section_dry_run(url, index, n)
        replays = await section_replays(url, index, corpus, rounds)
    finally:
        await loader.drop()
        await loader.close()

    print("## 1. Dry run: what a replay of everything would do (seconds)\n")
    headers = ["what", "tasks", "seconds (median)", "runs", "ratio to raw", "target", "result"]
    print(_table(headers, dry_run_rows(dry, n)), "\n")
    print("## 2. Replay without a rate (one runner, to the end)\n")
    headers = ["what", "tasks", "seconds", "tasks/s", "runs", "of ceiling", "target", "result"]
    print(_table(headers, replay_rows(replays, n)), "\n")
    print("## 3. Memory of the runner (tracemalloc peak during JobRunner.run)\n")
    headers = ["run", "tasks", "peak MiB", "peak B/task", "growth", "target", "result"]
    print(_table(headers, memory_rows(replays)))
    print(
        "\nThe store remembers its own last write of at most 4,096 documents (bounded):"
        " below that many tasks the peak grows with them, above it stays flat.\n"
    )
    print(f"## 4. Replay at rate={_RATE:,.0f}/s\n")
    headers = ["run", "tasks", "seconds", "ideal (N-1)/rate", "achieved/s", "deviation"]
    print(_table([*headers, "target", "result"], paced_rows(replays)), "\n")

    size = "100k" if n == 100_000 else f"{n:,}"
    print("## Targets\n")
    print(f"- dry run at {size}: {dry.job:.3f} s (target ≤ 1 s at 100k)")
    print(f"- replay no rate: {replays.runner_rate:,.0f} tasks/s (target ≥ 2,000)")
    print(
        f"- replay at {_RATE:,.0f}/s: {replays.paced_rate:,.0f}/s "
        f"(dev {replays.paced_deviation:+.1%}, target ≤ 5%)"
    )
    assert replays.large.peak is not None
    assert replays.small.peak is not None
    print(
        f"- runner memory: peak {_mib(replays.small.peak)} MiB at {replays.small.tasks:,} "
        f"tasks, {_mib(replays.large.peak)} MiB at {replays.large.tasks:,} (target: flat)"
    )


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_jobs")
    parser.add_argument("--quick", action="store_true", help="10,000 tasks")
    parser.add_argument("--tasks", type=int, default=None, help="tasks (default 100,000)")
    parser.add_argument("--rounds", type=int, default=3, help="unpaced replay rounds")
    return parser.parse_args()


def cli() -> None:
    args = _parse()
    n = args.tasks or (10_000 if args.quick else 100_000)
    if n < 2 * WORKFLOWS or n % WORKFLOWS:
        raise SystemExit(f"--tasks must be a multiple of {WORKFLOWS} (N/10 is two workflows)")
    url = os.environ.get("MAHAVISHNU_DLQ_TEST_OPENSEARCH_URL")
    node = None
    if not url:
        node = _node_module().start_node()
        url = node.url
    try:
        asyncio.run(run_all(url, n, max(1, args.rounds)))
    finally:
        if node is not None:
            node.stop()


if __name__ == "__main__":
    cli()
