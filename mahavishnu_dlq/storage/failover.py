"""A store that keeps working while its primary (OpenSearch) is down, then catches up.

:class:`FailoverStore` wraps a primary store and a fallback (a :class:`MemoryStore`
by default):

Routing
    Every call goes to the primary, bounded by ``timeout`` seconds. A call that
    fails with :class:`StoreUnavailableError` or times out is served by the
    fallback instead, and the record it changed is written down in the *journal*.
    After ``failure_threshold`` consecutive failures the circuit *opens*: calls go
    straight to the fallback, so nobody waits for a dead node again. While some
    record's newest version lives in the fallback (it is in the journal), calls
    about that record go to the fallback too, so a task claimed during an outage
    is finished where it was claimed.

Seeding
    The fallback starts empty. A change to a record the fallback does not hold
    (say, the finish of an attempt claimed just before the node died) starts from
    the last version this store saw of it (a bounded cache of recent records), so
    the change is not lost for want of its record.

Re-sync
    A background probe runs every ``probe_interval`` seconds while anything is in
    the journal. When the primary answers, each journaled record is merged into it
    with a compare-and-set mutation — the newer ``updated_at`` wins and the attempt
    histories of both are kept — and records deleted during the outage are deleted
    there unless the primary holds a newer version; the merges go in batches of
    ``mutate_many``, each bounded by ``timeout`` (:mod:`~mahavishnu_dlq.storage.resync`).
    Only when the journal is empty does the circuit close. Two processes re-syncing
    at once cannot overwrite each other's newer changes: every merge is conditional.

Fail-closed
    With ``fallback=None`` nothing is served from memory: a failing primary call
    raises :class:`StoreUnavailableError` (the queue then re-raises the workflow's
    own exception with it attached), and the open circuit makes later calls fail
    fast until the probe sees the node again.

Reads of many records
    Listings, counts, statistics and aggregations are the primary's, or the fallback's
    while it serves (:mod:`~mahavishnu_dlq.storage.failover_reads`).

Visibility
    :attr:`health` tells which backend serves, whether the store is degraded, how
    many changes await re-sync, when it last failed over and recovered; the queue's
    statistics include it. A warning is logged once per transition, not per call.

Back-pressure
    A primary that answers "overloaded" (HTTP 429 beyond its own retries,
    :class:`~mahavishnu_dlq.errors.StoreOverloadedError`), or that is slow while it
    pushes back, is alive: the call is served by the fallback (journaled) but does
    not count toward opening the circuit.

Nothing stops the re-sync or the probe: a change the primary cannot take (its
record there cannot be read, say) is set aside — kept in the fallback, reported
once, counted as ``unsynced`` in :attr:`FailoverStore.health` — and the rest goes
on; the probe logs an unexpected error and tries again at the next interval.

Durability
    With a :class:`~mahavishnu_dlq.storage.journal.JournalStore` as the fallback
    (``failover.fallback: sqlite``, the default of settings) the fallback's records
    and the deletions it served are in a file on this host before the caller is
    acknowledged; the journal *is* that file. A process that opens finds what a
    dead process left there (or in another journal of the same directory, which it
    adopts) and re-syncs it when the primary answers. With a
    :class:`MemoryStore` fallback (the default of this class, and
    ``failover.fallback: memory``) the journal and the fallback live in this
    process: if it dies during an outage, changes not yet re-synced are gone.
    ``fallback=None`` refuses them instead (the caller keeps the failure).

Jobs
    Bulk jobs (:attr:`FailoverStore.jobs`) live on the primary only: a job is
    long-lived shared state that a journal could not merge back. Each job call goes
    to the primary's job store through the same timeout and circuit breaker; while
    the primary is down it raises :class:`StoreUnavailableError` (jobs wait; the
    tasks keep being served by the fallback). So do the control records
    (:attr:`FailoverStore.controls`: breakers and rate limits every process shares).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection, Sequence
from datetime import datetime
from typing import Any, TypeVar

import anyio

from mahavishnu_dlq.clock import Clock, SystemClock
from mahavishnu_dlq.errors import (
    ConfigurationError,
    StoreOverloadedError,
    StoreUnavailableError,
    TaskBusyError,
)
from mahavishnu_dlq.models import DeadLetterStatus, FailedTask
from mahavishnu_dlq.printable import library_logger
from mahavishnu_dlq.storage.base import Mutation, Store, mutate_each, open_store
from mahavishnu_dlq.storage.failover_jobs import PrimaryControls, PrimaryJobs
from mahavishnu_dlq.storage.failover_reads import FailoverReads
from mahavishnu_dlq.storage.journal import JournalStore
from mahavishnu_dlq.storage.memory import MemoryStore
from mahavishnu_dlq.storage.resync import Resync, merge_versions

__all__ = ["FailoverStore", "merge_versions"]

_log = library_logger(__name__)
T = TypeVar("T")

_SEEN_KEPT = 10_000  # recent records remembered to seed the fallback


class FailoverStore(FailoverReads):
    """A primary store (OpenSearch) with a fallback while it is down, re-synced after.

    Its set-wide reads (listings, counts, statistics, aggregations) are
    :class:`~mahavishnu_dlq.storage.failover_reads.FailoverReads`'."""

    backend = "failover"

    def __init__(
        self,
        primary: Store,
        fallback: Store | None = None,
        *,
        fail_closed: bool = False,
        failure_threshold: int = 3,
        probe_interval: float = 5.0,
        timeout: float = 5.0,
        clock: Clock | None = None,
    ) -> None:
        if failure_threshold < 1:
            raise ConfigurationError(
                f"failure_threshold must be >= 1, got {failure_threshold}",
                field="failover.failure_threshold",
            )
        if probe_interval <= 0 or timeout <= 0:
            raise ConfigurationError(
                f"probe_interval and timeout must be > 0, got {probe_interval} and {timeout}",
                field="failover",
            )
        self.primary = primary
        self.fallback: Store | None = None if fail_closed else (fallback or MemoryStore())
        self.failure_threshold = failure_threshold
        self.probe_interval = probe_interval
        self.timeout = timeout
        self.clock: Clock = clock or SystemClock()
        self._failures = 0
        self._open = False  # the circuit: True while calls go straight to the fallback
        self._journal: dict[str, int] = {}  # id -> change number, changed in the fallback
        self._deleted: dict[str, datetime] = {}  # id -> when, deleted in the fallback
        self._unsynced: dict[str, str] = {}  # id -> why the primary refused its re-sync
        self._change = 0
        self._seen: OrderedDict[str, FailedTask] = OrderedDict()
        self._wake = anyio.Event()
        self._create = True  # how open() was asked to open the primary; probes do the same
        self.failed_over_at: datetime | None = None
        self.recovered_at: datetime | None = None
        self.last_error: str | None = None
        self.resynced_total = 0
        #: called with "fallback" or "primary" on each switch (the queue's metrics)
        self.on_transition: Callable[[str], object] | None = None
        self.degraded_since: datetime | None = None  # first call the fallback served
        self.last_resync: tuple[int, float] | None = None  # (changes, seconds)
        self._resyncer: Resync | None = None
        if self.fallback is not None:  # only a fallback journals
            journal = (self._journal, self._deleted, self._unsynced)
            self._resyncer = Resync(primary, self.fallback, *journal)
        self.jobs = PrimaryJobs(self)  # the primary's (see the module's *Jobs*)
        self.controls = PrimaryControls(self)  # the primary's, like the jobs

    # -- health ------------------------------------------------------------------------

    @property
    def location(self) -> str | None:
        """Where the records are: the primary's location, and the journal file."""
        primary = getattr(self.primary, "location", None)
        if not isinstance(self.fallback, JournalStore):
            return primary
        return f"{primary or self.primary.backend}; journal {self.fallback.location}"

    @property
    def degraded(self) -> bool:
        """True while the fallback serves or holds changes the primary has not got."""
        return self._open or bool(self._journal) or bool(self._deleted)

    @property
    def pending_resync(self) -> int:
        """Changes (records written or deleted) waiting to be re-synced to the primary."""
        return len(self._journal) + len(self._deleted)

    @property
    def health(self) -> dict[str, Any]:
        """Which backend serves, degraded or not, pending re-sync, last transitions."""
        serving = "primary" if not self._open else "fallback" if self.fallback else "none"
        return {
            "serving": serving,
            "primary": self.primary.backend,
            "fallback": None if self.fallback is None else self.fallback.backend,
            "degraded": self.degraded,
            "circuit_open": self._open,
            "pending_resync": self.pending_resync,
            "failed_over_at": self.failed_over_at,
            "recovered_at": self.recovered_at,
            "last_error": self.last_error,
            "resynced_total": self.resynced_total,
            "degraded_since": self.degraded_since,
            "last_resync_changes": None if self.last_resync is None else self.last_resync[0],
            "last_resync_seconds": None if self.last_resync is None else self.last_resync[1],
            "unsynced": len(self._unsynced),
            "journal": (
                self.fallback.location if isinstance(self.fallback, JournalStore) else None
            ),
        }

    # -- lifecycle ---------------------------------------------------------------------

    async def open(self, *, create: bool = True) -> None:
        """Open both stores; a primary that is down opens degraded (see :meth:`monitor`).

        ``create=False`` opens the primary for reading (and so does every probe after):
        a primary whose data is missing raises
        :class:`~mahavishnu_dlq.errors.StoreNotFoundError`, which is no outage — it is
        raised here, the fallback never serves for it (nor is it opened: the primary
        is asked first then, so a misspelt index leaves no journal behind)."""
        self._create = create
        if create:
            await self._open_fallback()
        try:
            with anyio.fail_after(self.timeout):
                await open_store(self.primary, create=create)
        except (StoreUnavailableError, TimeoutError) as exc:
            self._trip(exc, at_start=True)  # start degraded (or failing fast); the probe recovers
        if not create:
            await self._open_fallback()

    async def _open_fallback(self) -> None:
        if self.fallback is not None:
            await self.fallback.open()
            await self._load_journal()

    async def _load_journal(self) -> None:
        """Take up what the journal file holds: changes a process that died (this
        one's predecessor, or one whose journal was adopted) did not re-sync."""
        if not isinstance(self.fallback, JournalStore):
            return
        ids, tombstones = await self.fallback.entries()
        for task_id in ids:
            if task_id not in self._journal:
                self._change += 1
                self._journal[task_id] = self._change
        for task_id, when in tombstones.items():
            self._deleted.setdefault(task_id, when)
        if ids or tombstones:
            self.degraded_since = self.degraded_since or self.clock.now()
            self._wake.set()
            # INFO: the process that left them warned as it closed; picking them up is
            # the normal start after an outage
            _log.info(
                "dlq.failover: the journal %s holds %d changes not yet re-synced to %s "
                "(left by a process that ended during an outage); re-syncing them when it "
                "answers",
                self.fallback.location,
                len(ids) + len(tombstones),
                self.primary.backend,
                extra={"action": "dlq.failover", "pending_resync": self.pending_resync},
            )

    async def close(self) -> None:
        """Try a last re-sync (bounded by the timeout), then close both stores."""
        if self.degraded and not self._open:
            with anyio.move_on_after(self.timeout):
                try:
                    await self._resync()
                except StoreUnavailableError as exc:  # failed again: the journal keeps them
                    _log.debug("dlq.failover: last re-sync at close failed: %s", exc)
        if self.pending_resync:
            kept = (
                f"they stay in the journal {self.fallback.location} for the next process"
                if isinstance(self.fallback, JournalStore)
                else "they are lost with this process"
            )
            _log.warning(
                "dlq.failover: closing with %d changes not re-synced to %s; %s",
                self.pending_resync,
                self.primary.backend,
                kept,
                extra={"action": "dlq.failover", "pending_resync": self.pending_resync},
            )
        with anyio.CancelScope(shield=True):
            try:
                await self.primary.close()
            except StoreUnavailableError as exc:
                _log.debug("dlq.failover: closing the primary: %s", exc)
            if self.fallback is not None:
                await self.fallback.close()

    # -- routing -----------------------------------------------------------------------

    def _pushing_back(self, exc: BaseException) -> bool:
        """True when ``exc`` says the primary is alive but overloaded (HTTP 429): its own
        error, or a timeout while it has pushed back within the last timeout."""
        if isinstance(exc, StoreOverloadedError):
            return True
        since = getattr(self.primary, "backpressure_at", None)
        return (
            isinstance(exc, TimeoutError)
            and isinstance(since, float)
            and time.monotonic() - since < 2 * self.timeout
        )

    def _trip(self, exc: BaseException, *, at_start: bool = False) -> None:
        if isinstance(exc, TimeoutError):
            self.last_error = f"no answer within {self.timeout:g} s"
        else:
            self.last_error = f"{type(exc).__name__}: {exc}"
        if self._pushing_back(exc) and not at_start:
            self.last_error += " (back-pressure: the circuit stays closed)"
            return
        self._failures += 1
        if not self._open and (at_start or self._failures >= self.failure_threshold):
            self._open = True
            self.failed_over_at = self.clock.now()
            if self.on_transition is not None:
                self.on_transition("fallback")
            target = "failing fast" if self.fallback is None else "serving from the fallback"
            _log.warning(
                "dlq.failover: %s unavailable (%s); %s",
                self.primary.backend,
                self.last_error,
                target,
                extra={"action": "dlq.failover", "to": "fallback" if self.fallback else "none"},
            )
        self._wake.set()

    def _unavailable(self, action: str, exc: BaseException) -> StoreUnavailableError:
        if isinstance(exc, StoreUnavailableError):
            return exc
        return StoreUnavailableError(
            self.primary.backend, f"{action}: no answer within {self.timeout:g} s"
        )

    async def _primary(
        self, action: str, call: Callable[[], Awaitable[T]], *, probing: bool = False
    ) -> T:
        """``call`` on the primary within the timeout; failures trip the breaker.

        While the circuit is open nothing is sent (only the probe asks): the call
        fails at once, so no caller waits for a node known to be down."""
        if self._open and not probing:
            raise StoreUnavailableError(
                self.primary.backend,
                f"{action}: circuit open since {self.failed_over_at}; "
                f"last error: {self.last_error}",
            )
        try:
            with anyio.fail_after(self.timeout):
                result = await call()
        except (StoreUnavailableError, TimeoutError) as exc:
            self._trip(exc)
            raise self._unavailable(action, exc) from exc
        self._failures = 0
        return result

    def _on_fallback(self, task_id: str | None = None) -> bool:
        if self._open:
            return True
        return task_id is not None and (
            task_id in self._journal or task_id in self._deleted or task_id in self._unsynced
        )

    def _remember(self, task: FailedTask | None) -> FailedTask | None:
        if task is not None:
            self._seen[task.task_id] = task
            self._seen.move_to_end(task.task_id)
            if len(self._seen) > _SEEN_KEPT:
                self._seen.popitem(last=False)
        return task

    def _journaled(self, task: FailedTask) -> FailedTask:
        if self.degraded_since is None:
            self.degraded_since = self.clock.now()
        self._change += 1
        self._journal[task.task_id] = self._change
        self._deleted.pop(task.task_id, None)
        self._wake.set()
        return self._remember(task) or task

    async def _fallback_mutate(self, task_id: str, fn: Mutation) -> FailedTask:
        assert self.fallback is not None  # noqa: S101 - callers check fail_closed first
        fallback = self.fallback
        seed = self._seen.get(task_id)
        if seed is not None and task_id not in self._deleted and task_id not in self._journal:

            def from_seed(current: FailedTask | None) -> FailedTask:
                return fn(current if current is not None else seed)

            return self._journaled(await fallback.mutate(task_id, from_seed))
        return self._journaled(await fallback.mutate(task_id, fn))

    # -- the Store protocol ------------------------------------------------------------

    async def get(self, task_id: str) -> FailedTask | None:
        if self.fallback is not None and self._on_fallback(task_id):
            found = await self.fallback.get(task_id)
            return (
                found if found is not None or task_id in self._deleted else self._seen_copy(task_id)
            )
        try:
            return self._remember(await self._primary("get", lambda: self.primary.get(task_id)))
        except StoreUnavailableError:
            if self.fallback is None:
                raise
            found = await self.fallback.get(task_id)
            return found if found is not None else self._seen_copy(task_id)

    def _seen_copy(self, task_id: str) -> FailedTask | None:
        return None if task_id in self._deleted else self._seen.get(task_id)

    async def mutate(self, task_id: str, fn: Mutation) -> FailedTask:
        if self.fallback is not None and self._on_fallback(task_id):
            return await self._fallback_mutate(task_id, fn)
        try:
            task = await self._primary("mutate", lambda: self.primary.mutate(task_id, fn))
        except StoreUnavailableError:
            if self.fallback is None:
                raise
            return await self._fallback_mutate(task_id, fn)
        self._remember(task)
        return task

    async def mutate_many(
        self, items: Sequence[tuple[str, Mutation]]
    ) -> list[FailedTask | Exception]:
        """Each item through :meth:`mutate`, so each gets its routing, timeout, breaker
        and journaling; an item the primary cannot take is served by the fallback
        (or, fail-closed, gets its :class:`StoreUnavailableError`)."""
        return await mutate_each(self, items)

    async def claim_due(
        self, now: datetime, limit: int, fn: Mutation, *, skip_workflows: Collection[str] = ()
    ) -> list[FailedTask]:
        claimed: list[FailedTask] = []
        if self.fallback is not None and (self._open or self._journal):
            # tasks whose newest version is in the fallback are claimed there
            found = await self.fallback.claim_due(now, limit, fn, skip_workflows=skip_workflows)
            claimed += [self._journaled(t) for t in found]
        if self._open or len(claimed) >= limit:
            return claimed

        def unless_newer_in_fallback(current: FailedTask | None) -> FailedTask:
            if current is not None and current.task_id in self._journal:
                raise TaskBusyError(current.task_id, reason="its newest version awaits re-sync")
            return fn(current)

        try:
            taken = await self._primary(
                "claim_due",
                lambda: self.primary.claim_due(
                    now,
                    limit - len(claimed),
                    unless_newer_in_fallback,
                    skip_workflows=skip_workflows,
                ),
            )
        except StoreUnavailableError:
            if self.fallback is None and not claimed:
                raise
            return claimed
        for task in taken:
            self._remember(task)
        return claimed + taken

    async def delete(self, task_id: str) -> bool:
        if self.fallback is not None and self._on_fallback(task_id):
            return await self._fallback_delete(task_id)
        try:
            deleted = await self._primary("delete", lambda: self.primary.delete(task_id))
        except StoreUnavailableError:
            if self.fallback is None:
                raise
            return await self._fallback_delete(task_id)
        self._seen.pop(task_id, None)
        return deleted

    async def _fallback_delete(self, task_id: str) -> bool:
        assert self.fallback is not None  # noqa: S101 - callers check fail_closed first
        when = self.clock.now()
        if isinstance(self.fallback, JournalStore):  # the tombstone is on disk before the ack
            deleted = await self.fallback.delete_with_tombstone(task_id, when)
        else:
            deleted = await self.fallback.delete(task_id)
        had = deleted or task_id in self._seen
        self._journal.pop(task_id, None)
        self._seen.pop(task_id, None)
        self._deleted[task_id] = when
        self._wake.set()
        return had

    async def purge(
        self, *, older_than: datetime | None, statuses: Collection[DeadLetterStatus]
    ) -> int:
        """Purge runs on the primary only: deleting by age needs the whole record set."""
        count = await self._primary(
            "purge", lambda: self.primary.purge(older_than=older_than, statuses=statuses)
        )
        self._seen.clear()
        return count

    async def clear(self) -> int:
        """Clear runs on the primary (and empties the fallback and the journal)."""
        count = await self._primary("clear", self.primary.clear)
        if self.fallback is not None:
            count += await self.fallback.clear()
        self._journal.clear()
        self._deleted.clear()
        self._unsynced.clear()
        self._seen.clear()
        return count

    # -- probing and re-sync -----------------------------------------------------------

    async def monitor(self) -> None:
        """Run forever: while degraded, probe every ``probe_interval`` s and re-sync
        when the primary answers. :class:`DeadLetterQueue` runs it between
        ``connect()`` and ``stop()``; a host using the store alone runs it in a task
        group of its own (or calls :meth:`probe`)."""
        while True:
            if not self.degraded:
                self._wake = anyio.Event()
                await self._wake.wait()
            await anyio.sleep(self.probe_interval)  # real time: tests call probe() themselves
            try:
                await self.probe()
            except Exception as exc:  # noqa: BLE001 - the probe runs in the host's task group
                _log.warning(
                    "dlq.failover: the probe failed (%s: %s); trying again in %g s",
                    type(exc).__name__,
                    exc,
                    self.probe_interval,
                    extra={"action": "dlq.failover", "outcome": "probe_failed"},
                )

    async def probe(self) -> bool:
        """Check the primary now and re-sync if it answers; True when fully recovered."""
        if not self.degraded:
            return True
        try:
            await self._primary(
                "probe", lambda: open_store(self.primary, create=self._create), probing=True
            )
        except StoreUnavailableError:
            return False
        try:
            await self._resync()
        except StoreUnavailableError:
            return False
        return not self.degraded

    async def _resync(self) -> None:
        """Merge every journaled change into the primary, then close the circuit."""
        started = time.perf_counter()
        done = 0
        while self._resyncer is not None and (self._journal or self._deleted):
            changes, failure = await self._resyncer.run(self.timeout)
            if failure is not None:
                self._trip(failure)
                raise self._unavailable("re-sync", failure)
            done += changes
        self.resynced_total += done
        if done:
            self.last_resync = (done, time.perf_counter() - started)
        self.degraded_since = None  # the journal is empty: the outage is over
        if self._open:
            self._open = False
            self._failures = 0
            self.recovered_at = self.clock.now()
            if self.on_transition is not None:
                self.on_transition("primary")
            _log.info(  # the outage warned once as it began; its end is good news
                "dlq.failover: %s is back; %d changes re-synced in %.2f s; serving from it again",
                self.primary.backend,
                done,
                time.perf_counter() - started,
                extra={"action": "dlq.failover", "to": "primary", "resynced": done},
            )
