"""Set-up and bare-client baselines for ``benchmarks.bench_web``.

* :func:`seed`: N tasks in the store's document format (``make_task`` +
  ``opensearch_query.document_json``) written by plain ``_bulk`` into
  ``bench-web-<N>`` (refresh off while loading, two requests in flight), or the
  index a previous run seeded, reused when its document count and corpus version
  match (both kept in the mapping's ``_meta``).
* The corpus (:func:`chunk_body`): :data:`WORKFLOWS` workflows of skewed sizes,
  every status and error category, :data:`FINGERPRINTS` fingerprints with a
  Zipf-like spread (the biggest group holds ~20% of the tasks), failures spread
  evenly over the :data:`DAYS` days before seeding, half the error texts carrying
  an id of their own, tracebacks on most tasks, attempts on retried ones, and
  payloads of ~0.2 KiB, ~2 KiB (8%) and ~24 KiB (0.5%).
* :class:`Touch`: a change and a refresh before a timed request, so the request
  reads an index changed since the last one, as a viewer of a live queue does.
* :class:`CorpusClock`: the wall clock moved back by the age of a reused index, so
  "the last 24 hours" and "since 7 days ago" select what they did right after
  seeding.
* The bare opensearch-py client doing the reads a route needs (:class:`Bare`),
  each request body built by the store's own functions, so the same work is
  asked of the node.

Timing is in :mod:`benchmarks._web_timing`, variants of the store's searches in
:mod:`benchmarks._web_variants`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import partial
from typing import Any

import anyio
from opensearchpy import AsyncOpenSearch, NotFoundError

from mahavishnu_dlq import __version__
from mahavishnu_dlq.models import (
    Attempt,
    AttemptOutcome,
    DeadLetterStatus,
    ErrorCategory,
    RetryPolicy,
    TaskFilter,
)
from mahavishnu_dlq.storage import opensearch_query as q
from mahavishnu_dlq.storage.aggregations import histogram_buckets
from mahavishnu_dlq.storage.opensearch import OpenSearchStore
from mahavishnu_dlq.storage.opensearch_reads import groups_body, histogram_body
from mahavishnu_dlq.testing import make_task

__all__ = [
    "DAYS",
    "FINGERPRINTS",
    "WORKFLOWS",
    "Bare",
    "CorpusClock",
    "Seeded",
    "Touch",
    "chunk_body",
    "fingerprint_of",
    "seed",
]

WORKFLOWS = 20
FINGERPRINTS = 300
DAYS = 14
#: Bumped when the corpus changes: an index seeded by another version is re-seeded.
CORPUS_VERSION = 1
_CHUNK = 5000  # documents per bulk request
_IN_FLIGHT = 2  # bulk requests in flight while seeding (the node has two cores)

_STATUSES = [
    (DeadLetterStatus.PENDING, 20),
    (DeadLetterStatus.RETRYING, 1),
    (DeadLetterStatus.EXHAUSTED, 35),
    (DeadLetterStatus.COMPLETED, 34),
    (DeadLetterStatus.ARCHIVED, 10),
]
_POLICY = {
    ErrorCategory.TRANSIENT: RetryPolicy.EXPONENTIAL,
    ErrorCategory.NETWORK: RetryPolicy.EXPONENTIAL,
    ErrorCategory.RESOURCE: RetryPolicy.LINEAR,
    ErrorCategory.PERMISSION: RetryPolicy.NEVER,
    ErrorCategory.VALIDATION: RetryPolicy.NEVER,
    ErrorCategory.PERMANENT: RetryPolicy.NEVER,
}
#: (error type, message with {k} for the fingerprint's variant, category)
_ERRORS = [
    ("ConnectionResetError", "connection reset by peer (svc-{k}.internal:443)", "network"),
    ("TimeoutError", "timed out after 30s waiting for svc-{k}.internal", "transient"),
    ("HTTPError", "503 Service Unavailable from api-{k}.partner.example", "transient"),
    ("ConnectionRefusedError", "[Errno 111] connection refused: db-{k}:5432", "network"),
    ("PermissionError", "403 Forbidden: token lacks scope orders:{k}", "permission"),
    ("ValidationError", "field 'amount' must be positive (rule {k})", "validation"),
    ("KeyError", "'customer_{k}'", "permanent"),
    ("OSError", "[Errno 28] No space left on device: /var/spool/job-{k}", "resource"),
    ("MemoryError", "out of memory while resizing buffer {k}", "resource"),
    ("ValueError", "invalid literal for int() with base 10: 'x{k}'", "permanent"),
]
_TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "/srv/app/workers/{wf}.py", line 88, in run\n'
    "    result = await handler(task, repos)\n"
    '  File "/srv/app/clients/http.py", line 214, in post\n'
    "    response = await self._session.post(url, json=body, timeout=self.timeout)\n"
    '  File "/srv/app/clients/http.py", line 160, in _send\n'
    "    raise {etype}(message)\n"
    "{etype}: {error}\n"
)


def fingerprint_of(k: int) -> str:
    """The fingerprint of the ``k``-th failure (16 hex characters, as the classifier's)."""
    return hashlib.sha1(f"bench-web-{k}".encode(), usedforsecurity=False).hexdigest()[:16]


def workflow_of(w: int) -> str:
    return f"wf-{w:02d}"


_WORKFLOW_WEIGHTS = [1 / math.sqrt(w + 1) for w in range(WORKFLOWS)]
_FINGERPRINT_WEIGHTS = [1 / (k + 1) ** 1.1 for k in range(FINGERPRINTS)]


def _payload(rng: random.Random, i: int) -> dict[str, Any]:
    roll = rng.random()
    task: dict[str, Any] = {
        "order_id": f"ord-{i:08d}",
        "customer": f"c-{rng.randrange(50_000)}",
        "amount": round(rng.uniform(1, 900), 2),
        "currency": "EUR",
        "lines": [{"sku": f"sku-{rng.randrange(5000)}", "qty": rng.randint(1, 4)}],
        "api_token": "tok-" + format(rng.getrandbits(64), "016x"),  # masked on the pages
    }
    if roll < 0.005:  # large: an attachment of ~24 KiB
        task["attachment"] = format(rng.getrandbits(96_000), "x")
    elif roll < 0.085:  # medium: ~2 KiB of lines
        task["lines"] = [
            {"sku": f"sku-{rng.randrange(5000)}", "qty": rng.randint(1, 4), "note": "gift wrap"}
            for _ in range(40)
        ]
    return task


def _attempts(
    rng: random.Random, count: int, failed: datetime, etype: str, error: str
) -> list[Attempt]:
    attempts = []
    at = failed
    for number in range(1, count + 1):
        at += timedelta(seconds=30 * 2**number + rng.randrange(30))
        attempts.append(
            Attempt(
                number=number,
                started_at=at,
                finished_at=at + timedelta(milliseconds=rng.randrange(50, 5000)),
                outcome=AttemptOutcome.FAILURE,
                error=error,
                error_type=etype,
                worker=f"worker-{rng.randrange(8)}",
            )
        )
    return attempts


def chunk_body(start: int, stop: int, now: datetime) -> str:
    """The ``_bulk`` body (NDJSON) of tasks ``start`` to ``stop - 1``: the same
    documents for the same arguments (one random generator per chunk)."""
    rng = random.Random(start)
    span = DAYS * 86400.0
    statuses = [s for s, _ in _STATUSES]
    status_weights = [w for _, w in _STATUSES]
    workflows = rng.choices(range(WORKFLOWS), _WORKFLOW_WEIGHTS, k=stop - start)
    fingerprints = rng.choices(range(FINGERPRINTS), _FINGERPRINT_WEIGHTS, k=stop - start)
    lines = []
    for i, w, k in zip(range(start, stop), workflows, fingerprints, strict=True):
        etype, template, category_name = _ERRORS[k % len(_ERRORS)]
        category = ErrorCategory(category_name)
        error = template.format(k=k)
        if rng.random() < 0.5:  # an id of its own: the error texts are many distinct values
            error += f" (request {rng.getrandbits(48):012x})"
        status = rng.choices(statuses, status_weights)[0]
        failed = now - timedelta(seconds=rng.uniform(0, span))
        retries = rng.randint(0, 3)
        attempts = _attempts(rng, retries, failed, etype, error)
        updated = attempts[-1].finished_at if attempts else failed
        assert updated is not None
        extra: dict[str, Any] = {"next_retry_at": None}
        if status is DeadLetterStatus.PENDING:
            extra["next_retry_at"] = updated + timedelta(seconds=60 * 2**retries)
        elif status is DeadLetterStatus.RETRYING:
            extra["lease_owner"] = f"worker-{rng.randrange(8)}"
            extra["lease_expires_at"] = updated + timedelta(minutes=10)
        elif status is DeadLetterStatus.COMPLETED:
            updated = extra["completed_at"] = updated + timedelta(seconds=5)
        elif status is DeadLetterStatus.ARCHIVED:
            updated = extra["archived_at"] = updated + timedelta(hours=1)
        workflow = workflow_of(w)
        task = make_task(
            task_id=f"{workflow}-{i:07d}-{rng.getrandbits(32):08x}",
            workflow=workflow,
            task=_payload(rng, i),
            repos=[f"repo-{w % 7}"],
            error=error,
            error_type=etype,
            error_category=category,
            error_fingerprint=fingerprint_of(k),
            traceback=(
                _TRACEBACK.format(wf=workflow, etype=etype, error=error)
                if rng.random() < 0.7
                else None
            ),
            last_error=error if retries else None,
            last_error_type=etype if retries else None,
            attempts=attempts,
            retry_count=retries,
            max_retries=3,
            total_attempts=retries + 1,
            retry_policy=_POLICY[category],
            status=status,
            metadata={
                "failure_context": {
                    "host": f"app-{rng.randrange(12)}",
                    "pid": rng.randrange(1000, 60000),
                    "python": "3.11.7",
                    "mahavishnu_dlq": __version__,
                    "uptime_seconds": round(rng.uniform(1, 900_000), 3),
                },
                "tenant": f"t-{w % 5}",
            },
            now=failed,
            updated_at=updated,
            **extra,
        )
        lines.append(json.dumps({"index": {"_id": q.doc_id(task.task_id)}}))
        lines.append(q.document_json(task, "bench-web-seed"))
    lines.append("")
    return "\n".join(lines)


# -- seeding -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Seeded:
    """The index the benchmark reads: how it came to be."""

    index: str
    tasks: int
    seeded_at: datetime
    reused: bool
    seconds: float | None  # loading time when seeded in this run

    @property
    def rate(self) -> float | None:
        return None if self.seconds is None else self.tasks / self.seconds


def bare_client(url: str) -> Any:
    """An opensearch-py client built as the store builds its own (pool of 64)."""
    return AsyncOpenSearch(hosts=[url], timeout=60, maxsize=64)


async def _existing(client: Any, index: str, tasks: int) -> datetime | None:
    """When ``index`` was seeded with this corpus and ``tasks`` documents; None if not."""
    try:
        mapping = await client.indices.get_mapping(index=index)
    except NotFoundError:
        return None
    meta = mapping[index]["mappings"].get("_meta") or {}
    mark = meta.get("bench_web") or {}
    if mark.get("version") != CORPUS_VERSION or mark.get("tasks") != tasks:
        return None
    count = (await client.count(index=index))["count"]
    if count != tasks:
        return None
    return datetime.fromisoformat(mark["seeded_at"])


async def _load(client: Any, index: str, tasks: int, now: datetime) -> None:
    slots = asyncio.Semaphore(_IN_FLIGHT)
    sent: set[asyncio.Task[None]] = set()

    async def send(body: str) -> None:
        try:
            answer = await client.bulk(body=body, index=index, params={"filter_path": "errors"})
            assert not answer["errors"], "bulk seeding failed"
        finally:
            slots.release()

    for start in range(0, tasks, _CHUNK):
        body = await asyncio.to_thread(chunk_body, start, min(tasks, start + _CHUNK), now)
        await slots.acquire()
        task = asyncio.create_task(send(body))
        sent.add(task)
        task.add_done_callback(sent.discard)
    await asyncio.gather(*sent)


async def seed(url: str, tasks: int, *, reseed: bool, say: Callable[[str], None]) -> Seeded:
    """``bench-web-<tasks>``: reused when a previous run seeded it with this corpus
    (unless ``reseed``), else (re)created by the store and filled by ``_bulk``."""
    index = f"bench-web-{tasks}"
    client = bare_client(url)
    store = OpenSearchStore(hosts=[url], index=index)
    try:
        seeded_at = None if reseed else await _existing(client, index, tasks)
        if seeded_at is not None:
            say(f"reusing {index} ({tasks:,} tasks, seeded {seeded_at:%Y-%m-%d %H:%M} UTC)")
            return Seeded(index, tasks, seeded_at, True, None)
        await store.drop()  # index, template, jobs and controls indexes
        await store.open()  # the store creates the index: its mapping and settings
        settings = {"index": {"refresh_interval": "-1"}}
        await client.indices.put_settings(index=index, body=settings)
        now = datetime.now(timezone.utc)
        say(f"seeding {index}: {tasks:,} tasks by _bulk ({_CHUNK:,} a request)")
        started = time.perf_counter()
        await _load(client, index, tasks, now)
        await client.indices.put_settings(index=index, body={"index": {"refresh_interval": "1s"}})
        await client.indices.refresh(index=index)
        seconds = time.perf_counter() - started
        count = (await client.count(index=index))["count"]
        assert count == tasks, f"{count} documents, {tasks} expected"
        meta = {
            "mahavishnu_dlq_mapping_version": q.MAPPING_VERSION,
            "bench_web": {"version": CORPUS_VERSION, "tasks": tasks, "seeded_at": now.isoformat()},
        }
        await client.indices.put_mapping(index=index, body={"_meta": meta})
        return Seeded(index, tasks, now, False, seconds)
    finally:
        await store.close()
        await client.close()


class CorpusClock:
    """The wall clock, moved back by ``offset``: a reused index looks freshly seeded."""

    def __init__(self, offset: timedelta) -> None:
        self.offset = offset

    def now(self) -> datetime:
        return datetime.now(timezone.utc) - self.offset

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(max(0.0, seconds))


# -- bare reads ----------------------------------------------------------------------------


class Bare:
    """The reads a route needs, made by the bare client with the store's request bodies."""

    def __init__(self, url: str, index: str) -> None:
        self.client = bare_client(url)
        self.index = index
        self.controls = f"{index}-controls"

    async def close(self) -> None:
        await self.client.close()

    async def facts(self) -> str:
        """The index's documents, size on disk and segments."""
        stats = await self.client.indices.stats(index=self.index, metric="docs,store,segments")
        primaries = stats["indices"][self.index]["primaries"]
        size = primaries["store"]["size_in_bytes"] / 2**30
        return (
            f"{primaries['docs']['count']:,} documents, {size:.2f} GiB on disk, "
            f"{primaries['segments']['count']} segments"
        )

    async def search(self, body: dict[str, Any], **params: Any) -> dict[str, Any]:
        answer: dict[str, Any] = await self.client.search(
            index=self.index, body=body, params=params or None
        )
        return answer

    async def statistics(self, top_fingerprints: int = 5) -> dict[str, Any]:
        """``get_statistics``: the statistics search, then the breakers (a refresh of
        the controls index and a search of it), as the queue issues them."""
        answer = await self.search(q.statistics_body(top_fingerprints))
        await self.breakers()
        return answer

    async def breakers(self) -> None:
        try:
            await self.client.indices.refresh(index=self.controls)
        except NotFoundError:
            return
        body = {
            "query": {"prefix": {"key": "breaker/"}},
            "sort": [{"key": "asc"}],
            "size": 1000,
            "_source": ["key", "doc"],
            "track_total_hits": False,
        }
        await self.client.search(index=self.controls, body=body)

    async def histogram(self, now: datetime, hours: int, buckets: int) -> dict[str, Any]:
        span = timedelta(hours=hours)
        width = timedelta(microseconds=-(-(span // timedelta(microseconds=1)) // buckets))
        return await self.search(histogram_body(histogram_buckets(now - span, now, width)))

    async def groups(self, flt: TaskFilter, limit: int) -> dict[str, Any]:
        return await self.search(groups_body(flt, limit))

    async def overview(
        self, now: datetime, open_filter: TaskFilter, *, together: bool, top_fingerprints: int = 5
    ) -> None:
        """The overview's reads: the statistics (then the breakers, as
        ``get_statistics`` reads them), the two histograms and the top groups — at once,
        as the page awaits them (``together``), or one after the other."""
        reads: list[Callable[[], Awaitable[Any]]] = [
            partial(self.statistics, top_fingerprints),
            partial(self.histogram, now, 24, 24),
            partial(self.histogram, now, 168, 28),
            partial(self.groups, open_filter, 5),
        ]
        if together:
            await asyncio.gather(*(read() for read in reads))
            return
        for read in reads:
            await read()

    def listing_body(self, flt: TaskFilter, limit: int) -> dict[str, Any]:
        """The store's first-page search: ``limit + 1`` hits (one more says whether
        there is a next page), newest failure first."""
        return {
            "query": q.filter_query(flt),
            "sort": q.LISTING_SORT,
            "track_total_hits": False,
            "size": limit + 1,
        }

    async def listing(self, flt: TaskFilter, limit: int) -> int:
        answer = await self.search(self.listing_body(flt, limit))
        return len(answer["hits"]["hits"])

    async def count(self, flt: TaskFilter) -> int:
        answer = await self.client.count(index=self.index, body={"query": q.filter_query(flt)})
        return int(answer["count"])

    async def task_page(self, flt: TaskFilter, limit: int) -> None:
        """The task list page's reads: the first page, then the count, in turn."""
        await self.listing(flt, limit)
        await self.count(flt)


# -- a change before each request ----------------------------------------------------------


class Touch:
    """A change to the index, made (untimed) before a timed request: ``batch`` existing
    tasks rewritten (a partial update of ``write_id``, which is not indexed) and the
    index refreshed. A queue taking failures refreshes every second, so a viewer whose
    overview reloads every 10 s always reads an index changed since its last look: the
    node's request cache (a size-0 search's answer, kept until the next refresh that
    changed something) cannot answer, and terms aggregations rebuild their global
    ordinals for the new segment. The documents, and what the console shows, stay as
    seeded."""

    def __init__(self, client: Any, index: str, *, batch: int = 10) -> None:
        self.client = client
        self.index = index
        self.batch = batch
        self.changes = 0
        self._ids: list[str] = []
        self._rng = random.Random(14)

    async def __call__(self) -> None:
        if not self._ids:
            body = {
                "size": 2000,
                "_source": False,
                "query": {"function_score": {"random_score": {"seed": 14, "field": "_seq_no"}}},
            }
            answer = await self.client.search(index=self.index, body=body)
            self._ids = [hit["_id"] for hit in answer["hits"]["hits"]]
        lines = []
        for doc_id in self._rng.sample(self._ids, self.batch):
            lines.append(json.dumps({"update": {"_id": doc_id}}))
            lines.append(json.dumps({"doc": {"write_id": f"bench-web-touch-{self.changes}"}}))
        lines.append("")
        answer = await self.client.bulk(
            body="\n".join(lines), index=self.index, params={"filter_path": "errors"}
        )
        assert not answer["errors"], "a change before a request failed"
        await self.client.indices.refresh(index=self.index)
        self.changes += 1
