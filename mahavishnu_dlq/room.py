"""Room in the queue: the open-task estimate behind ``max_size``, and ``on_full``.

**The estimate.** Asking the store how many tasks are open costs a round trip (a
refresh and a count on OpenSearch), so :class:`Room` keeps an estimate: the store's
last answer, plus the tasks this queue stored since, plus the enqueues past the
check whose store call has not returned yet (reserved), minus the tasks this queue
completed or archived since. It is an over-estimate of what this process knows,
never an under-estimate, so one process never stores past ``max_size`` because of
it. The answer is reused for up to :data:`REUSE_SECONDS`:

- below 95% of ``max_size``, as the headroom is large;
- at or over ``max_size``: a full queue refuses without asking again, so producers
  pushing against it cost the store nothing (a completion in this process lowers
  the estimate at once and lets the next failure in);
- in between, only when the last answer was "full" (the room is then what this
  process freed itself); otherwise the store is asked every time, so the limit
  stays exact near it.

Concurrent callers share one ask: 50 producers arriving together make one count.
Another process's enqueues and frees show at the next ask, within
:data:`REUSE_SECONDS`. A purge, a clear, or an archive by an operator or a job
forgets the answer (the store is asked at the next enqueue).

**on_full.** ``"reject"`` (the default) refuses a new failure with
:class:`~mahavishnu_dlq.errors.QueueFullError`. ``"archive_oldest"`` first makes
room: it archives the oldest ``exhausted`` tasks, then the oldest ``pending`` ones
under the ``never`` policy (waiting for a manual retry), never a task that still
has an automatic retry ahead. It archives in batches (:func:`make_room_batch`: at
least 1% of ``max_size``), so a queue full of exhausted tasks is not searched per
enqueue; each archived record is changed by compare-and-set (one that changed
meanwhile is skipped) and notes ``archived_reason: "overflow"`` in its metadata.
When nothing can be archived, the failure is refused with a ``QueueFullError``
saying so (and the search is not repeated for :data:`REUSE_SECONDS`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Literal

import anyio

from mahavishnu_dlq import lifecycle
from mahavishnu_dlq.errors import ConfigurationError, QueueFullError, TaskBusyError
from mahavishnu_dlq.models import DeadLetterStatus, FailedTask, RetryPolicy
from mahavishnu_dlq.printable import library_logger
from mahavishnu_dlq.storage.base import Mutation
from mahavishnu_dlq.storage.oldest import oldest_records

if TYPE_CHECKING:
    from mahavishnu_dlq.queue import DeadLetterQueue

__all__ = [
    "NEAR_FULL",
    "NOTHING_TO_ARCHIVE",
    "ON_FULL_CHOICES",
    "REUSE_SECONDS",
    "LifetimeCounters",
    "OnFull",
    "Room",
    "archivable",
    "check_on_full",
    "make_room_batch",
]

_log = library_logger("mahavishnu_dlq.queue")

#: What a full queue does with a new failure.
OnFull = Literal["reject", "archive_oldest"]
ON_FULL_CHOICES: tuple[OnFull, ...] = ("reject", "archive_oldest")
#: How long the store's open count (and a "full" verdict) is reused, in seconds.
REUSE_SECONDS = 1.0
#: Above this share of ``max_size`` the store is asked every time (see the module).
NEAR_FULL = 0.95
#: The reason an archive made to make room notes in the record's metadata.
OVERFLOW_REASON = "overflow"


def check_on_full(value: object) -> OnFull:
    """``value`` as an :data:`OnFull`; ``ConfigurationError`` naming the field otherwise."""
    for choice in ON_FULL_CHOICES:
        if value == choice and isinstance(value, str):
            return choice
    raise ConfigurationError(
        f"on_full must be one of 'reject', 'archive_oldest'; got {value!r}", field="on_full"
    )


def make_room_batch(max_size: int, needed: int) -> int:
    """How many tasks one make-room pass archives: what the callers waiting need, at
    least 1% of ``max_size`` (so a full queue is searched once per batch, not per
    enqueue), at most 10,000."""
    return min(10_000, max(1, needed, max_size // 100))


def archivable(task: FailedTask) -> bool:
    """True for a task ``archive_oldest`` may set aside: exhausted, or pending under the
    ``never`` policy with no automatic retry scheduled."""
    if task.status is DeadLetterStatus.EXHAUSTED:
        return True
    return (
        task.status is DeadLetterStatus.PENDING
        and task.retry_policy is RetryPolicy.NEVER
        and task.next_retry_at is None
    )


def _archive_unchanged(seen: FailedTask, now: datetime) -> Mutation:
    """A mutation archiving the task as ``seen``; a task changed meanwhile is refused."""

    def archive(current: FailedTask | None) -> FailedTask:
        if (
            current is None
            or current.status is not seen.status
            or current.updated_at != seen.updated_at
            or not archivable(current)
        ):
            raise TaskBusyError(seen.task_id, reason="changed since it was picked to make room")
        archived = lifecycle.archive(current, now=now)
        return archived.evolve(metadata={**archived.metadata, "archived_reason": OVERFLOW_REASON})

    return archive


class Room:
    """The open-task estimate of one queue, and its ``on_full`` policy (see the module)."""

    def __init__(self, dlq: DeadLetterQueue) -> None:
        self._dlq = dlq
        self._seen = 0  # the last answer, plus what this queue stored, minus what it freed
        self._reserved = 0  # enqueues past the check whose store call has not returned
        self._added = 0  # tasks this queue stored, ever (to carry over an ask)
        self._asked_at: float | None = None
        self._answer_full = False  # the last answer was at or over max_size
        self._asking: anyio.Event | None = None
        self._answers = 0
        self._making: anyio.Event | None = None
        self._wanting = 0  # room the callers inside make_room need together
        self._nothing_until = 0.0  # nothing archivable found: not searched again until then
        #: the clock of the reuse window (seconds; tests replace it)
        self.monotonic: Callable[[], float] = time.monotonic

    # -- the estimate ------------------------------------------------------------------

    def fresh(self) -> int | None:
        """The estimate while it may be reused (see the module); None when the store
        must be asked. No coroutine: the common path of an enqueue."""
        asked_at = self._asked_at
        if asked_at is None or self.monotonic() - asked_at >= REUSE_SECONDS:
            return None
        estimate = self._seen + self._reserved
        limit = self._dlq.max_size
        if estimate < NEAR_FULL * limit or estimate >= limit or self._answer_full:
            return estimate
        return None

    async def estimate(self) -> int:
        """The estimate, asking the store when it may not be reused."""
        fresh = self.fresh()
        if fresh is not None:
            return fresh
        return await self.ask()

    async def ask(self) -> int:
        """Ask the store, one ask at a time: a caller arriving while one is in flight
        waits for it and shares its answer."""
        while (asking := self._asking) is not None:
            answers = self._answers
            await asking.wait()
            if self._answers != answers:
                return self._seen + self._reserved
        asking = self._asking = anyio.Event()
        try:
            added = self._added
            asked_at = self.monotonic()  # before the round trip: the answer is this old
            count = await self._dlq.traced_store.open_count()
            # tasks stored during the ask may or may not be in ``count``: counted
            # again (an over-estimate, never an under-estimate)
            self._seen = count + self._added - added
            self._asked_at = asked_at
            self._answer_full = count >= self._dlq.max_size
            self._answers += 1
        finally:
            self._asking = None
            asking.set()
        return self._seen + self._reserved

    def reserve(self, count: int = 1) -> None:
        """``count`` enqueues passed the check: counted until their store call returns."""
        self._reserved += count

    def release(self, count: int = 1) -> None:
        """The store call of ``count`` reserved enqueues returned (see :meth:`added`)."""
        self._reserved -= count

    def added(self, count: int = 1) -> None:
        """This queue stored ``count`` new open tasks."""
        self._seen += count
        self._added += count

    def freed(self, count: int = 1) -> None:
        """This queue took ``count`` tasks it knows were open out of the open set (a
        completion, an archive to make room): room at once, without asking."""
        self._seen = max(0, self._seen - count)

    def forget(self) -> None:
        """Records went that may or may not have been open (a purge, a clear, an
        archive by an operator or a job): ask the store at the next enqueue."""
        self._asked_at = None
        self._nothing_until = 0.0

    # -- on_full ----------------------------------------------------------------------

    @property
    def nothing_to_archive(self) -> bool:
        """True while the last make-room pass found nothing archivable (for up to
        :data:`REUSE_SECONDS`, or until records go)."""
        return self.monotonic() < self._nothing_until

    async def make_room(self, open_now: int, needed: int = 1) -> int:
        """Under ``archive_oldest``: archive the oldest archivable tasks until ``needed``
        more fit (in batches, :func:`make_room_batch`); the new estimate, still at the
        limit when nothing could be archived (:attr:`nothing_to_archive`). One pass at a
        time: a caller arriving meanwhile waits for it and looks again."""
        limit = self._dlq.max_size
        self._wanting += needed
        try:
            while open_now + needed > limit and not self.nothing_to_archive:
                making = self._making
                if making is not None:
                    await making.wait()
                    open_now = await self.estimate()
                    continue
                making = self._making = anyio.Event()
                try:
                    fresh = self.fresh()  # a verdict older than the window is asked again
                    open_now = await self.ask() if fresh is None else fresh
                    if open_now + needed > limit:
                        # room for every caller waiting now, not only this one
                        wanted = make_room_batch(limit, open_now + self._wanting - limit)
                        if not await self._archive_oldest(wanted):
                            self._nothing_until = self.monotonic() + REUSE_SECONDS
                finally:
                    self._making = None
                    making.set()
                open_now = self._seen + self._reserved
        finally:
            self._wanting -= needed
        return open_now

    def full_error(self, open_now: int) -> QueueFullError:
        """The error refusing a new failure at ``open_now`` open tasks."""
        reason = None
        if self._dlq.on_full == "archive_oldest":
            reason = NOTHING_TO_ARCHIVE
        return QueueFullError(open_now, self._dlq.max_size, reason=reason)

    async def _archive_oldest(self, wanted: int) -> int:
        """Archive up to ``wanted`` tasks: the oldest exhausted, then the oldest pending
        under ``never``; how many were archived."""
        dlq = self._dlq
        archived: list[FailedTask] = []
        for status, policy in (
            (DeadLetterStatus.EXHAUSTED, None),
            (DeadLetterStatus.PENDING, RetryPolicy.NEVER),
        ):
            if len(archived) >= wanted:
                break
            found = await oldest_records(
                dlq.store, status, limit=wanted - len(archived), retry_policy=policy
            )
            now = dlq.clock.now()
            items = [(t.task_id, _archive_unchanged(t, now)) for t in found if archivable(t)]
            if not items:
                continue
            outcomes = await dlq.traced_store.mutate_many(items)
            archived.extend(o for o in outcomes if isinstance(o, FailedTask))
        if archived:
            self.freed(len(archived))
            counters = dlq.lifetime
            for key in ("archived", "archived_to_make_room"):
                if isinstance(counters, LifetimeCounters):  # known open: no ``forget``
                    counters.count_quietly(key, len(archived))
                else:
                    counters[key] = counters.get(key, 0) + len(archived)
            for task in archived:
                dlq.telemetry.count("archived", task)
            _log.info(
                "dlq.make_room archived %d oldest tasks (on_full=archive_oldest, max_size %d)",
                len(archived),
                dlq.max_size,
                extra={
                    "action": "dlq.make_room",
                    "count": len(archived),
                    "task_ids": [task.task_id for task in archived[:20]],
                },
            )
        return len(archived)


NOTHING_TO_ARCHIVE = (
    "on_full is 'archive_oldest' but no open task can be archived: every one is pending "
    "with an automatic retry ahead or being retried; archive or purge tasks, or raise "
    "max_size"
)


#: Counters whose rise may mean open tasks went (an archive or a purge of any status).
_MAY_FREE = frozenset({"archived", "purged", "retention_archived"})


class LifetimeCounters(dict[str, int]):
    """A queue's lifetime counters (``DeadLetterQueue.lifetime``), a plain dict to read.

    The counters that record records leaving the open set tell the queue's
    :class:`Room` as they rise, wherever they are counted: ``retry_success`` (a
    completion: that many open tasks fewer), ``archived``, ``purged`` and
    ``retention_archived`` (which may or may not have been open: the store is asked
    at the next enqueue).
    """

    def __init__(self, keys: tuple[str, ...], room: Room) -> None:
        super().__init__(dict.fromkeys(keys, 0))
        self._room = room

    def __setitem__(self, key: str, value: int) -> None:
        rise = value - self.get(key, 0)
        super().__setitem__(key, value)
        if rise > 0:
            if key == "retry_success":
                self._room.freed(rise)
            elif key in _MAY_FREE:
                self._room.forget()

    def count_quietly(self, key: str, amount: int) -> None:
        """Add ``amount`` to ``key`` without telling the room (it knows already)."""
        super().__setitem__(key, self.get(key, 0) + amount)
