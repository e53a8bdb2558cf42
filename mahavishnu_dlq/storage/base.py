"""The storage contract every backend implements.

A store keeps :class:`~mahavishnu_dlq.models.FailedTask` records by id and knows
nothing about retry rules: the queue decides *what* a record becomes and the
store makes the change atomic. The central operation is :meth:`Store.mutate`
— read a record, compute its successor with a pure function, write it only if
nobody changed it meanwhile (compare-and-set). The in-memory store does this in
one step; the OpenSearch store with ``if_seq_no``/``if_primary_term`` and a
retry on conflict. Claims, retries, archiving and idempotent enqueues are all
mutations, so every backend gets the same state machine for free.
:meth:`Store.mutate_many` applies many mutations in one call, each item on its
own (its failure is handed back in its place); :func:`mutate_each` builds it from
``mutate`` for stores whose mutations are remote calls.

Opening: :meth:`Store.open` creates what the store needs (indexes, a file, its
schema). ``open(create=False)``, what read-only tools use, creates nothing in
OpenSearch: a missing index (a typo in its name) raises
:class:`~mahavishnu_dlq.errors.StoreNotFoundError` rather than show an empty
queue. The memory, SQLite and journal stores open the same way either way.

Unreadable records: a store may hold a record it cannot decode (written by a
newer version, by hand, or before input was checked). Every read skips such a
record instead of failing — :meth:`Store.query`, :meth:`Store.claim_due` and
:meth:`Store.statistics` (which counts them as ``unreadable``) — except a read of
that very id, :meth:`Store.get` or :meth:`Store.mutate`, which raises
:class:`~mahavishnu_dlq.errors.UnreadableRecordError` carrying the stored form.
Counts and aggregations read no record: :meth:`Store.count` counts every stored
one, and :meth:`Store.fingerprint_groups` and :meth:`Store.failure_histogram` leave
out those whose stored values say they cannot be read (a status, category or policy
this version does not know).
:class:`UnreadableRecords` does the bookkeeping for a store: it decodes, logs
each undecodable id once per process, and remembers a bounded set of them.

:class:`KeyedLock` orders the mutations of one id inside a process, so that
only other processes' writes can race a compare-and-set.

The contract is pinned down by ``tests/contract/``, which runs against every
backend.
"""

from __future__ import annotations

import builtins
import inspect
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol, cast, runtime_checkable

import anyio

from mahavishnu_dlq.errors import UnreadableRecordError
from mahavishnu_dlq.jobs.model import Job, JobState, TaskSummary
from mahavishnu_dlq.models import DeadLetterStatus, FailedTask, TaskFilter, TaskPage
from mahavishnu_dlq.printable import library_logger

__all__ = [
    "ControlMutation",
    "ControlStore",
    "FingerprintCount",
    "FingerprintGroup",
    "HistogramBucket",
    "JobMutation",
    "JobStore",
    "KeyedLock",
    "Mutation",
    "Store",
    "StoreStatistics",
    "UnreadableRecords",
    "event_loop_kind",
    "mutate_each",
    "open_store",
    "report_unreadable",
]

_log = library_logger("mahavishnu_dlq.storage")
_REPORTED_KEPT = 100_000  # ids reported unreadable, remembered to log each once

#: Computes a record's successor from the current record (None when absent).
#: It must be pure: under contention a store may call it more than once. It
#: aborts the change by raising (a :class:`~mahavishnu_dlq.errors.DLQError`).
Mutation = Callable[[FailedTask | None], FailedTask]

#: Computes a job's successor from the stored job; pure, aborts by raising.
JobMutation = Callable[[Job], Job]


@dataclass(frozen=True, slots=True)
class FingerprintCount:
    """How many open tasks share one failure fingerprint."""

    fingerprint: str
    count: int
    error_type: str
    example_error: str


@dataclass(frozen=True, slots=True)
class FingerprintGroup:
    """Tasks sharing one failure fingerprint (:meth:`Store.fingerprint_groups`)."""

    fingerprint: str
    count: int
    #: of one example task of the group: the newest (ties: the first by id)
    error_type: str
    #: the error message of that example task (its first 200 characters)
    example_error: str
    #: the earliest ``failed_at`` in the group
    first_seen: datetime
    #: the latest ``failed_at`` in the group
    last_seen: datetime
    #: workflow -> count: the 10 biggest workflows at most, biggest first (ties by name)
    workflows: dict[str, int]
    #: status value -> count
    by_status: dict[str, int]


@dataclass(frozen=True, slots=True)
class HistogramBucket:
    """Failures in one time bucket of :meth:`Store.failure_histogram`."""

    #: where the bucket starts (aware, UTC); it ends where the next one starts
    start: datetime
    #: error category value -> count (only categories that occur)
    by_category: dict[str, int]


@dataclass(frozen=True, slots=True)
class StoreStatistics:
    """Counts a store can give without loading every record."""

    total: int
    by_status: dict[DeadLetterStatus, int]
    by_category: dict[str, int]
    by_policy: dict[str, int]
    oldest_pending_failed_at: datetime | None
    top_fingerprints: list[FingerprintCount] = field(default_factory=list)
    #: stored records that cannot be read (skipped by every read; see the user guide)
    unreadable: int = 0

    @property
    def open_count(self) -> int:
        """Tasks that still need something done (pending, retrying, exhausted)."""
        return (
            self.by_status.get(DeadLetterStatus.PENDING, 0)
            + self.by_status.get(DeadLetterStatus.RETRYING, 0)
            + self.by_status.get(DeadLetterStatus.EXHAUSTED, 0)
        )


@runtime_checkable
class JobStore(Protocol):
    """Where a store keeps its bulk jobs (:mod:`mahavishnu_dlq.jobs`), beside the tasks.

    A handful of small records changed by compare-and-set, like the tasks: a job is
    leased to one runner by a :meth:`mutate`. Every read sees every acknowledged
    write (a listing too: jobs are few and rarely written).
    """

    async def create(self, job: Job) -> Job:
        """Store a new job; ``ValueError`` when a job with its id exists."""
        ...

    async def get(self, job_id: str) -> Job | None:
        """The stored job, or None."""
        ...

    async def mutate(self, job_id: str, fn: JobMutation) -> Job:
        """Atomically replace the job by ``fn(current)`` (compare-and-set, retried on a
        conflict: ``fn`` may run more than once). If ``fn`` raises, nothing is written
        and the exception propagates; an unknown id raises
        :class:`~mahavishnu_dlq.errors.JobNotFoundError`. Returns the job as stored."""
        ...

    async def list(
        self, *, states: Collection[JobState] | None = None, limit: int = 100
    ) -> builtins.list[Job]:
        """Jobs in ``states`` (all when None), newest ``created_at`` first (ties by id)."""
        ...

    async def delete(self, job_id: str) -> bool:
        """Remove one job; False when there was none."""
        ...


#: Computes a control record's successor from the stored one (None when absent);
#: pure, aborts by raising.
ControlMutation = Callable[[dict[str, Any] | None], dict[str, Any]]


@runtime_checkable
class ControlStore(Protocol):
    """Small shared records that steer the processors of every process: a circuit
    breaker per workflow (``breaker/<workflow>``), a rate limit's token bucket
    (``rate/<workflow>``). Each is a JSON object under a key (at most 512 characters),
    changed by compare-and-set like a task. Every read sees every acknowledged write.
    """

    async def get(self, key: str) -> dict[str, Any] | None:
        """The stored record, or None."""
        ...

    async def mutate(self, key: str, fn: ControlMutation) -> dict[str, Any]:
        """Atomically replace the record under ``key`` by ``fn(current)`` (None when
        absent; retried on a conflict: ``fn`` may run more than once). If ``fn``
        raises, nothing is written and the exception propagates. Returns the record
        as stored. The record must be a JSON object (``TypeError`` / ``ValueError``
        otherwise)."""
        ...

    async def list(self, prefix: str) -> builtins.list[tuple[str, dict[str, Any]]]:
        """Every ``(key, record)`` whose key starts with ``prefix``, in key order."""
        ...

    async def delete(self, key: str) -> bool:
        """Remove one record; False when there was none."""
        ...


@runtime_checkable
class Store(Protocol):
    """Where failed tasks live. All methods are coroutines; all timestamps UTC."""

    #: Short backend name shown in statistics: "memory", "opensearch", "failover".
    backend: str

    @property
    def jobs(self) -> JobStore:
        """The store's bulk jobs, kept beside its tasks."""
        ...

    @property
    def controls(self) -> ControlStore:
        """The records the processors of every process share (breakers, rate limits)."""
        ...

    async def open(self, *, create: bool = True) -> None:
        """Connect and create whatever the store needs (idempotent).

        ``create=False`` opens for reading: the store changes nothing to open, and
        data that is not where the settings point raises
        :class:`~mahavishnu_dlq.errors.StoreNotFoundError` instead of showing an empty
        queue. A store keeping its data in this process or in a local file (memory,
        SQLite) may open the same way either way; each backend says what it does.
        Call it through :func:`open_store`, which also opens a store written before
        ``create`` existed.
        """
        ...

    async def close(self) -> None:
        """Release connections; buffered writes are flushed first."""
        ...

    async def get(self, task_id: str) -> FailedTask | None:
        """The stored record, or None. Read-your-writes: sees every acknowledged change."""
        ...

    async def mutate(self, task_id: str, fn: Mutation) -> FailedTask:
        """Atomically replace the record of ``task_id`` by ``fn(current)``.

        ``current`` is None when no record exists. If ``fn`` raises, nothing is
        written and the exception propagates. Returns the record as stored.
        """
        ...

    async def mutate_many(
        self, items: Sequence[tuple[str, Mutation]]
    ) -> list[FailedTask | Exception]:
        """Apply each ``(task_id, fn)`` as :meth:`mutate` would, in one call.

        Results in input order: the record as stored, or the exception that refused
        that item (``fn`` raised, the store refused it, or the store could not be
        reached); one item's failure never affects another. Items of one id are
        applied in their order, each seeing the previous one's result.
        """
        ...

    async def claim_due(
        self, now: datetime, limit: int, fn: Mutation, *, skip_workflows: Collection[str] = ()
    ) -> list[FailedTask]:
        """Apply ``fn`` to up to ``limit`` tasks that are due at ``now``.

        Due means PENDING with ``next_retry_at <= now``, or RETRYING with
        ``lease_expires_at <= now`` (its worker is presumed dead). Oldest due
        first. Each application is atomic like :meth:`mutate`; a task whose
        ``fn`` raises a ``DLQError`` or that another worker changed first is
        skipped. Tasks of ``skip_workflows`` are not looked at (their circuit
        breakers are open). Returns the records as stored.
        """
        ...

    async def next_due_at(self) -> datetime | None:
        """The earliest time any task becomes due, if the store can tell cheaply."""
        ...

    async def delete(self, task_id: str) -> bool:
        """Remove one record; False when there was none."""
        ...

    async def query(
        self, flt: TaskFilter, *, limit: int, cursor: str | None = None
    ) -> TaskPage[FailedTask]:
        """Records matching ``flt``, newest ``failed_at`` first (ties by ``task_id``).

        The page's ``cursor`` continues after its last record and stays valid while
        records change; it is None on the last page.
        """
        ...

    async def count(self, flt: TaskFilter | None = None) -> int:
        """How many records match ``flt`` (all records when None)."""
        ...

    async def open_count(self) -> int:
        """How many records are pending, retrying or exhausted (checked against max_size)."""
        ...

    async def summarize(self, flt: TaskFilter, *, sample: int = 20) -> TaskSummary:
        """How many records match ``flt``, by status, category and workflow, and the
        first ``sample`` ids in listing order — counted by the store, not by reading
        every record (a bulk job's dry run)."""
        ...

    async def statistics(self, *, top_fingerprints: int = 5) -> StoreStatistics:
        """Counts per status, category and policy, oldest pending, top fingerprints."""
        ...

    async def fingerprint_groups(
        self, flt: TaskFilter | None = None, *, limit: int = 50
    ) -> list[FingerprintGroup]:
        """Groups of the records matching ``flt`` (all when None) by
        ``error_fingerprint``, biggest first (ties: fingerprint ascending); at most
        ``limit`` (1 to 1000, else ``ValueError``). Records with an empty fingerprint
        form no group. Counted by the store (an aggregation), not by reading every
        record; records that cannot be read are left out."""
        ...

    async def failure_histogram(
        self, *, since: datetime, until: datetime, bucket: timedelta
    ) -> list[HistogramBucket]:
        """Records whose ``failed_at`` is in ``[since, until)``, counted by error
        category per bucket of ``bucket`` length starting at ``since`` (bucket ``i``
        covers ``since + i*bucket`` up to the next one; the last ends at ``until``).
        Every bucket is returned, in time order, empty ones with ``{}``. ``ValueError``
        unless ``since < until`` (both aware), ``bucket > 0`` and there are at most
        1000 buckets. Records that cannot be read are left out."""
        ...

    async def purge(
        self, *, older_than: datetime | None, statuses: Collection[DeadLetterStatus]
    ) -> int:
        """Delete records in ``statuses`` last updated before ``older_than``; the count."""
        ...

    async def clear(self) -> int:
        """Delete every record; the count."""
        ...


async def open_store(store: Store, *, create: bool = True) -> None:
    """``store.open(create=create)``; a store whose ``open`` takes no ``create`` (one
    written against an earlier version of :class:`Store`) is opened with ``open()``,
    as it always was."""
    if create or not _takes_create(store):
        await store.open()
    else:
        await store.open(create=False)


def _takes_create(store: Store) -> bool:
    try:
        parameters = inspect.signature(store.open).parameters
    except (TypeError, ValueError):  # a callable without a signature: ask it as before
        return False
    return "create" in parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
    )


async def mutate_each(
    store: Store, items: Sequence[tuple[str, Mutation]], *, concurrency: int = 64
) -> list[FailedTask | Exception]:
    """:meth:`Store.mutate_many` for stores whose mutations are remote calls.

    Items are grouped by id (ids in first-seen order); one coroutine per distinct
    id applies that id's items in their order through ``store.mutate``, at most
    ``concurrency`` ids at once. Each item's ``Exception`` lands in its own slot;
    anything else (cancellation) propagates.
    """
    if not items:
        return []
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    results: list[FailedTask | Exception | None] = [None] * len(items)
    by_id: dict[str, list[int]] = {}
    for index, (task_id, _) in enumerate(items):
        by_id.setdefault(task_id, []).append(index)
    limiter = anyio.CapacityLimiter(concurrency)

    async def apply(task_id: str, indexes: list[int]) -> None:
        async with limiter:
            for index in indexes:
                try:
                    results[index] = await store.mutate(task_id, items[index][1])
                except Exception as exc:  # noqa: BLE001 - handed back in the item's slot
                    results[index] = exc

    async with anyio.create_task_group() as group:
        for task_id, indexes in by_id.items():
            group.start_soon(apply, task_id, indexes)
    return cast("list[FailedTask | Exception]", results)  # every slot is filled by now


class KeyedLock:
    """One FIFO lock per key, made when contended and gone when free.

    ``async with lock.hold(key):`` runs the block alone for ``key``; others wait
    their turn in arrival order. An uncontended ``hold`` costs two dict operations.
    """

    def __init__(self) -> None:
        self._busy: dict[str, deque[anyio.Event]] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        await self._acquire(key)
        try:
            yield
        finally:
            self._release(key)

    @asynccontextmanager
    async def hold_all(self, keys: Iterable[str]) -> AsyncIterator[None]:
        """Hold every key of ``keys`` at once. They are taken in sorted order, so two
        holders of several keys never wait for each other (each waits only for keys
        above all it holds), nor for a holder of one."""
        held: list[str] = []
        try:
            for key in sorted(set(keys)):
                await self._acquire(key)
                held.append(key)
            yield
        finally:
            for key in held:
                self._release(key)

    async def _acquire(self, key: str) -> None:
        waiters = self._busy.get(key)
        if waiters is None:
            self._busy[key] = deque()
            return
        turn = anyio.Event()
        waiters.append(turn)
        try:
            await turn.wait()
        except BaseException:
            if turn.is_set():  # handed the lock just as we were cancelled: pass it on
                self._release(key)
            else:
                waiters.remove(turn)
            raise

    def _release(self, key: str) -> None:
        waiters = self._busy[key]
        if waiters:
            waiters.popleft().set()  # the next in line holds it now
        else:
            del self._busy[key]

    def __len__(self) -> int:
        """Keys held right now."""
        return len(self._busy)


_reported: dict[tuple[str, str], None] = {}


def report_unreadable(where: str, task_id: str, reason: str) -> None:
    """Log (WARNING, action ``dlq.unreadable``) that the record ``task_id`` in ``where``
    (a backend and its index or file) cannot be read — once per process and id."""
    key = (where, task_id)
    if key in _reported:
        return
    if len(_reported) >= _REPORTED_KEPT:
        _reported.clear()
    _reported[key] = None
    shown = task_id.encode("utf-8", "backslashreplace").decode("utf-8")
    _log.warning(
        "dlq.unreadable: record %r in %s cannot be read and is skipped: %s",
        shown,
        where,
        reason,
        extra={"action": "dlq.unreadable", "task_id": shown, "reason": reason},
    )


class UnreadableRecords:
    """A store's view of the records it cannot decode.

    ``decode(source)`` turns a stored form into a record or raises ``ValueError``
    (pydantic's ``ValidationError``), ``TypeError`` or ``KeyError``; ``reason``
    says why in one line; ``raw`` shows a stored form as text. Undecodable records
    are remembered by key (a bounded, most recent set: claims can leave them out)
    and reported once per process by :func:`report_unreadable`.
    """

    def __init__(
        self,
        where: str,
        decode: Callable[[Any], FailedTask],
        *,
        reason: Callable[[BaseException], str] = lambda exc: f"{type(exc).__name__}: {exc}",
        raw: Callable[[Any], str] = repr,
        kept: int = 1000,
    ) -> None:
        self.where = where
        self._decode = decode
        self._reason = reason
        self._raw = raw
        self._kept = kept
        self._known: OrderedDict[str, str] = OrderedDict()  # key -> why

    def read(self, key: str, source: Any) -> FailedTask | None:
        """The record in ``source``; None (noted, reported) when it cannot be decoded."""
        try:
            return self._decode(source)
        except (ValueError, TypeError, KeyError) as exc:
            self._note(key, source, self._reason(exc))
            return None

    def read_or_raise(self, task_id: str, key: str, source: Any) -> FailedTask:
        """The record in ``source``, or :class:`UnreadableRecordError` showing it."""
        try:
            return self._decode(source)
        except (ValueError, TypeError, KeyError) as exc:
            why = self._reason(exc)
            self._note(key, source, why)
            raise UnreadableRecordError(task_id, why, self._raw(source)) from exc

    def _note(self, key: str, source: Any, why: str) -> None:
        self._known[key] = why
        self._known.move_to_end(key)
        if len(self._known) > self._kept:
            self._known.popitem(last=False)
        task_id = source.get("task_id") if isinstance(source, dict) else None
        report_unreadable(self.where, task_id if isinstance(task_id, str) else key, why)

    @property
    def keys(self) -> Collection[str]:
        """Keys of the records found undecodable (the most recent ``kept``)."""
        return self._known.keys()

    def forget(self, key: str | None = None) -> None:
        """Forget ``key`` (deleted), or every key when None (cleared)."""
        if key is None:
            self._known.clear()
        else:
            self._known.pop(key, None)


def event_loop_kind() -> str:
    """``"asyncio"``, ``"trio"``, or ``"unknown"`` outside an event loop (sniffio comes
    with trio; without it, only asyncio runs)."""
    try:
        import sniffio  # noqa: PLC0415 - optional: it comes with trio, the other loop
    except ImportError:  # pragma: no cover - without trio installed only asyncio runs
        return "asyncio"
    try:
        return str(sniffio.current_async_library())
    except sniffio.AsyncLibraryNotFoundError:
        return "unknown"
