"""A circuit breaker per workflow, as data: its policy, its state and its transitions.

Pure: no I/O, no clock of its own. The processors of every process share one
:class:`Breaker` record per workflow in the store (``breaker/<workflow>`` in
:attr:`Store.controls <mahavishnu_dlq.storage.base.Store.controls>`), changed by
compare-and-set; :mod:`.shared` does the I/O and calls these functions inside
the mutations.

States:

``closed``
    Attempts go through. Their outcomes fill a sliding window (``window_seconds``,
    kept as ten buckets). When the window holds at least ``min_attempts`` outcomes
    and the share of *sick* failures reaches ``failure_ratio``, the breaker opens.
    A failure is sick when it says the downstream is unwell — by default the
    categories ``network``, ``transient``, ``resource`` and attempts that timed
    out; any other outcome (a success, a ``validation`` error: the service
    answered) counts as healthy.
``open``
    Nothing of the workflow is claimed until ``open_until``: ``open_seconds``,
    doubled with each trip in a row, at most ``open_max_seconds``. An operator may
    open it with no end (``forced``).
``half_open``
    Once ``open_until`` passes, the first processor to look moves it here; the
    fleet then claims ``half_open_attempts`` probes in all (each processor reserves
    probes by compare-and-set). All of them healthy: closed (the trip count
    resets). A sick one: open again, for longer.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from mahavishnu_dlq.clock import from_micros, to_micros
from mahavishnu_dlq.states import AttemptOutcome, ErrorCategory

__all__ = [
    "DEFAULT_TRIP_ON",
    "Breaker",
    "BreakerBook",
    "BreakerPolicy",
    "BreakerState",
    "is_sick",
]

#: What trips a breaker by default: failures that say the downstream is unwell.
DEFAULT_TRIP_ON: frozenset[str] = frozenset({"network", "transient", "resource", "timeout"})
_BUCKETS = 10  # the window is kept as this many buckets


class BreakerState(str, Enum):
    """Where a workflow's breaker is."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """When a workflow's breaker trips and how long it stays open."""

    enabled: bool = True
    failure_ratio: float = 0.5
    window_seconds: float = 60.0
    min_attempts: int = 10
    open_seconds: float = 30.0
    open_max_seconds: float = 600.0
    half_open_attempts: int = 3
    trip_on: frozenset[str] = DEFAULT_TRIP_ON

    def __post_init__(self) -> None:
        if not 0 < self.failure_ratio <= 1:
            raise ValueError(f"failure_ratio must be in (0, 1], got {self.failure_ratio}")
        for name in ("window_seconds", "open_seconds", "open_max_seconds"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.open_max_seconds < self.open_seconds:
            raise ValueError("open_max_seconds must be >= open_seconds")
        if self.min_attempts < 1 or self.half_open_attempts < 1:
            raise ValueError("min_attempts and half_open_attempts must be >= 1")
        known = {c.value for c in ErrorCategory} | {"timeout"}
        unknown = set(self.trip_on) - known
        if unknown:
            raise ValueError(f"trip_on: unknown {sorted(unknown)}; allowed: {sorted(known)}")

    def open_for(self, trips: int) -> float:
        """Seconds a breaker stays open after its ``trips``-th trip in a row."""
        grown = self.open_seconds * float(2 ** max(0, min(trips - 1, 60)))
        return min(grown, self.open_max_seconds)


@dataclass(frozen=True)
class BreakerBook:
    """The breaker policy of each workflow: a default and per-workflow overrides."""

    default: BreakerPolicy = field(default_factory=BreakerPolicy)
    by_workflow: Mapping[str, BreakerPolicy] = field(default_factory=dict)

    def for_workflow(self, workflow: str) -> BreakerPolicy:
        return self.by_workflow.get(workflow, self.default)

    @property
    def any_enabled(self) -> bool:
        return self.default.enabled or any(p.enabled for p in self.by_workflow.values())


def is_sick(
    outcome: AttemptOutcome, category: ErrorCategory | None, trip_on: Collection[str]
) -> bool:
    """Whether an attempt's outcome says the downstream is unwell."""
    if outcome is AttemptOutcome.TIMEOUT:
        return "timeout" in trip_on
    if outcome is AttemptOutcome.FAILURE and category is not None:
        return category.value in trip_on
    return False


@dataclass(frozen=True)
class Breaker:
    """One workflow's breaker as stored (see the module docstring)."""

    workflow: str
    state: BreakerState = BreakerState.CLOSED
    since: datetime | None = None
    open_until: datetime | None = None  #: None while open: forced open by an operator
    trips: int = 0  #: trips in a row (resets on close)
    #: the window: (bucket start in µs, healthy, sick) per bucket, oldest first
    window: tuple[tuple[int, int, int], ...] = ()
    probes: int = 0  #: half-open probes reserved by processors
    probes_healthy: int = 0
    by: str | None = None  #: who forced the last change (an operator), if anyone
    reason: str | None = None
    #: a handler's ``RetryAfter`` hint paused the whole workflow until then
    paused_until: datetime | None = None

    # -- reading ------------------------------------------------------------------------

    def counts(self, now: datetime, policy: BreakerPolicy) -> tuple[int, int]:
        """(healthy, sick) outcomes in the window ending at ``now``."""
        size = _bucket_us(policy)
        now_us = to_micros(now)
        oldest = now_us - now_us % size - size * _BUCKETS  # as _add keeps them
        healthy = sick = 0
        for bucket, ok, bad in self.window:
            if bucket > oldest:
                healthy += ok
                sick += bad
        return healthy, sick

    def failure_ratio(self, now: datetime, policy: BreakerPolicy) -> float:
        healthy, sick = self.counts(now, policy)
        total = healthy + sick
        return sick / total if total else 0.0

    def paused(self, now: datetime) -> bool:
        return self.paused_until is not None and now < self.paused_until

    def pause(self, until: datetime) -> Breaker:
        """Paused until ``until`` (the later of it and a pause already set)."""
        if self.paused_until is not None and self.paused_until >= until:
            return self
        return replace(self, paused_until=until)

    def allows(self, now: datetime) -> bool:
        """Whether tasks of the workflow may be claimed (not paused; not open, or due
        to half-open)."""
        if self.paused(now):
            return False
        if self.state is BreakerState.OPEN:
            return self.open_until is not None and now >= self.open_until
        return True

    # -- transitions --------------------------------------------------------------------

    def observe(
        self, now: datetime, healthy: int, sick: int, policy: BreakerPolicy
    ) -> tuple[Breaker, BreakerState | None]:
        """Add attempt outcomes; the breaker after, and the state it moved to (if any)."""
        if self.state is BreakerState.OPEN:
            return self, None  # stragglers of attempts started before it opened
        if self.state is BreakerState.HALF_OPEN:
            if sick:
                return self._open(now, policy, self.trips + 1), BreakerState.OPEN
            done = self.probes_healthy + healthy
            if done >= policy.half_open_attempts:
                return self.close(now), BreakerState.CLOSED
            return replace(self, probes_healthy=done), None
        window = _add(self.window, now, healthy, sick, policy)
        moved = replace(self, window=window)
        ok, bad = moved.counts(now, policy)
        if ok + bad >= policy.min_attempts and bad >= policy.failure_ratio * (ok + bad):
            return moved._open(now, policy, self.trips + 1), BreakerState.OPEN
        return moved, None

    def _open(self, now: datetime, policy: BreakerPolicy, trips: int) -> Breaker:
        return Breaker(
            workflow=self.workflow,
            state=BreakerState.OPEN,
            since=now,
            open_until=now + timedelta(seconds=policy.open_for(trips)),
            trips=trips,
            window=self.window,  # what tripped it stays visible (statistics)
            paused_until=self.paused_until,
        )

    def half_open(self, now: datetime) -> Breaker:
        """Open past its time: let probes through."""
        return replace(
            self, state=BreakerState.HALF_OPEN, since=now, probes=0, probes_healthy=0, by=None
        )

    def reserve(self, wanted: int, policy: BreakerPolicy) -> tuple[Breaker, int]:
        """Reserve up to ``wanted`` half-open probes; the breaker after, and how many."""
        if self.state is not BreakerState.HALF_OPEN:
            return self, 0
        granted = max(0, min(wanted, policy.half_open_attempts - self.probes))
        return replace(self, probes=self.probes + granted), granted

    def give_back(self, unused: int) -> Breaker:
        """Return reserved probes that claimed nothing."""
        if self.state is not BreakerState.HALF_OPEN or unused <= 0:
            return self
        return replace(self, probes=max(self.probes_healthy, self.probes - unused))

    def close(self, now: datetime, *, by: str | None = None, reason: str | None = None) -> Breaker:
        return Breaker(
            workflow=self.workflow, state=BreakerState.CLOSED, since=now, by=by, reason=reason
        )

    def force_open(self, now: datetime, *, by: str, reason: str | None = None) -> Breaker:
        """Open until an operator closes it."""
        return Breaker(
            workflow=self.workflow,
            state=BreakerState.OPEN,
            since=now,
            open_until=None,
            trips=self.trips,
            window=self.window,
            by=by,
            reason=reason,
        )

    # -- the stored form ----------------------------------------------------------------

    def to_record(self) -> dict[str, Any]:
        return {
            "workflow": self.workflow,
            "state": self.state.value,
            "since_us": None if self.since is None else to_micros(self.since),
            "open_until_us": None if self.open_until is None else to_micros(self.open_until),
            "trips": self.trips,
            "window": [list(bucket) for bucket in self.window],
            "probes": self.probes,
            "probes_healthy": self.probes_healthy,
            "by": self.by,
            "reason": self.reason,
            "paused_until_us": None if self.paused_until is None else to_micros(self.paused_until),
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Breaker:
        """The breaker in a stored record; ``ValueError``/``KeyError``/``TypeError`` when
        it is not one."""
        since, until = record.get("since_us"), record.get("open_until_us")
        paused = record.get("paused_until_us")
        return cls(
            workflow=str(record["workflow"]),
            state=BreakerState(record["state"]),
            since=None if since is None else from_micros(int(since)),
            open_until=None if until is None else from_micros(int(until)),
            trips=int(record.get("trips", 0)),
            window=tuple((int(b[0]), int(b[1]), int(b[2])) for b in record.get("window") or ()),
            probes=int(record.get("probes", 0)),
            probes_healthy=int(record.get("probes_healthy", 0)),
            by=record.get("by"),
            reason=record.get("reason"),
            paused_until=None if paused is None else from_micros(int(paused)),
        )


def _bucket_us(policy: BreakerPolicy) -> int:
    return max(1, int(policy.window_seconds * 1_000_000 / _BUCKETS))


def _add(
    window: tuple[tuple[int, int, int], ...],
    now: datetime,
    healthy: int,
    sick: int,
    policy: BreakerPolicy,
) -> tuple[tuple[int, int, int], ...]:
    """``window`` with the outcomes added to the bucket of ``now``, old buckets dropped."""
    size = _bucket_us(policy)
    now_us = to_micros(now)
    bucket = now_us - now_us % size
    oldest = bucket - size * _BUCKETS
    kept = [b for b in window if b[0] > oldest]
    if kept and kept[-1][0] == bucket:
        start, ok, bad = kept[-1]
        kept[-1] = (start, ok + healthy, bad + sick)
    else:
        kept.append((bucket, healthy, sick))
    return tuple(kept)
