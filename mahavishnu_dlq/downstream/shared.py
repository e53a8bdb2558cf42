"""The breakers as every processor shares them: read before a claim, fed after an attempt.

:class:`Downstream` belongs to a queue. Before each claim the processor asks it
for a :class:`Gate` (:meth:`Downstream.gate`): it reads every breaker record of
the store (one ``controls.list``), moves an open breaker whose time is up to
half-open and reserves half-open probes, all by compare-and-set, so that the
whole fleet makes one half-open round of ``half_open_attempts`` probes. The
claim then refuses the tasks of blocked workflows (their retries and deadlines
untouched) and lets through no more probes than were reserved; unused ones are
given back (:meth:`Downstream.settle`).

After each attempt, :meth:`Downstream.record` adds its outcome to the workflow's
window: a sick failure at once (so that every processor stops soon after
``min_attempts``), healthy outcomes gathered and written at most every second
(or at once while half-open: a probe's success closes the breaker).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from mahavishnu_dlq.downstream.breaker import Breaker, BreakerPolicy, BreakerState, is_sick
from mahavishnu_dlq.downstream.limiter import Limiter
from mahavishnu_dlq.errors import StoreUnavailableError
from mahavishnu_dlq.limits import require_str
from mahavishnu_dlq.printable import library_logger
from mahavishnu_dlq.states import AttemptOutcome

if TYPE_CHECKING:
    from mahavishnu_dlq.attempt import AttemptResult
    from mahavishnu_dlq.models import FailedTask
    from mahavishnu_dlq.queue import DeadLetterQueue

__all__ = ["PREFIX", "BreakerMethods", "Downstream", "Gate", "breaker_key", "operator"]

_log = library_logger("mahavishnu_dlq")

#: Key prefix of the breaker records in ``Store.controls``.
PREFIX = "breaker/"
_FLUSH_EVERY = 1.0  # seconds between writes of healthy outcomes alone
_READ_EVERY = 0.25  # seconds a processor trusts the breakers it read (no sick outcome since)


class _Gone(Exception):  # noqa: N818 - a signal: the record went away
    """The breaker record was deleted meanwhile."""


def breaker_key(workflow: str) -> str:
    return f"{PREFIX}{workflow}"


def operator() -> str:
    """Who is acting, for the log: ``user@host``."""
    from mahavishnu_dlq.jobs.control import creator  # noqa: PLC0415 - one definition

    return creator()


@dataclass
class Gate:
    """What one claim may take: nothing of ``blocked`` workflows (an open breaker, a
    pause, no token), at most ``probes[workflow]`` tasks of a half-open one and at most
    ``tokens[workflow]`` of a rate-limited one."""

    blocked: set[str] = field(default_factory=set)
    probes: dict[str, int] = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=dict)
    taken: dict[str, int] = field(default_factory=dict)
    #: limited workflows the claim met with no tokens taken for them (learned for later)
    unseen: set[str] = field(default_factory=set)
    needs_tokens: Callable[[str], bool] = lambda _workflow: False

    def admits(self, workflow: str) -> bool:
        """Whether a task of ``workflow`` may be claimed now (counting it as taken)."""
        if workflow in self.blocked:
            return False
        if workflow not in self.tokens and self.needs_tokens(workflow):
            self.unseen.add(workflow)
            return False
        caps = [cap for cap in (self.probes.get(workflow), self.tokens.get(workflow)) if cap]
        taken = self.taken.get(workflow, 0)
        if caps and taken >= min(caps):
            return False
        self.taken[workflow] = taken + 1
        return True

    def reason(self, workflow: str) -> str:
        if workflow in self.blocked:
            return f"workflow {workflow!r} is held back (breaker open, paused or no token)"
        return f"workflow {workflow!r} has no probe or token left for this claim"


class Downstream:
    """The breakers of one queue's processors (see the module docstring)."""

    def __init__(self, dlq: DeadLetterQueue) -> None:
        self.dlq = dlq
        #: the breakers as last read (workflow -> breaker)
        self.known: dict[str, Breaker] = {}
        self._healthy: dict[str, int] = {}
        self._flushed_at: dict[str, float] = {}
        self._read_at = -_READ_EVERY  # monotonic time of the last read of the breakers
        self._sick_since_read = False
        self._blind = False  # the last read failed: the store keeping them is down
        self._pauses = False  # a handler asked to pause a workflow (read the breakers)
        self.limiter = Limiter(dlq)

    def policy(self, workflow: str) -> BreakerPolicy:
        return self.dlq.breakers.for_workflow(workflow)

    # -- before a claim -------------------------------------------------------------------

    async def gate(self, wanted: int = 1) -> Gate:
        """The gate the next claim (of up to ``wanted`` tasks) goes through: the
        breakers as read at most :data:`_READ_EVERY` ago — read again sooner after a
        sick outcome here or when a breaker is due to half-open — and the tokens of
        the rate-limited workflows."""
        gate = await self._breaker_gate()
        await self.limiter.reserve(gate, wanted)
        return gate

    def holds(self, workflow: str) -> bool:
        """Whether a task of ``workflow`` claimed with its breaker closed must not start
        now: its breaker, as this process last knew it, is open, half-open (only the
        reserved probes run) or paused."""
        breaker = self.known.get(workflow)
        if breaker is None:
            return False
        if breaker.paused(self.dlq.clock.now()):
            return True
        return breaker.state is not BreakerState.CLOSED and self._applies(breaker)

    def wake_in(self) -> float | None:
        """Seconds until a held-back workflow may go on (a token, the end of a pause)."""
        now = self.dlq.clock.now()
        waits = [
            (b.paused_until - now).total_seconds()
            for b in self.known.values()
            if b.paused_until is not None and b.paused_until > now
        ]
        if self.limiter.wake_in is not None:
            waits.append(self.limiter.wake_in)
        return min(waits, default=None)

    async def _breaker_gate(self) -> Gate:
        if not self.dlq.breakers.any_enabled and not self._pauses:
            return Gate()
        now = self.dlq.clock.now()
        if not self._sick_since_read and time.monotonic() - self._read_at < _READ_EVERY:
            gate = Gate()
            for breaker in self.known.values():
                if breaker.paused(now):
                    gate.blocked.add(breaker.workflow)
                    continue
                if breaker.state is BreakerState.CLOSED or not self._applies(breaker):
                    continue
                if breaker.state is BreakerState.HALF_OPEN or breaker.allows(now):
                    return await self._read_gate()  # probes to reserve: ask the store
                gate.blocked.add(breaker.workflow)
            return gate
        return await self._read_gate()

    def _unreachable(self, exc: StoreUnavailableError, now: datetime) -> Gate:
        """The breakers cannot be read (a failover store keeps them on its primary,
        which is down): the processor goes on with the breakers as last read — an open
        one stays shut until its time, nothing is half-opened — and says so once."""
        if not self._blind:
            self._blind = True
            _log.warning(
                "dlq.breaker: the shared breakers cannot be read (%s); going on with the "
                "ones last read until the store is back",
                exc,
                extra={"action": "dlq.breaker", "outcome": "unavailable"},
            )
        gate = Gate()
        for breaker in self.known.values():
            shut = breaker.state is BreakerState.HALF_OPEN or not breaker.allows(now)
            if breaker.state is not BreakerState.CLOSED and shut and self._applies(breaker):
                gate.blocked.add(breaker.workflow)
        return gate

    def _applies(self, breaker: Breaker) -> bool:
        """A breaker counts when its workflow's policy is on, or an operator forced it."""
        forced = breaker.by is not None and breaker.state is BreakerState.OPEN
        return forced or self.policy(breaker.workflow).enabled

    async def _read_gate(self) -> Gate:
        gate = Gate()
        self._sick_since_read = False
        self._read_at = time.monotonic()
        controls = self.dlq.traced_store.controls
        now = self.dlq.clock.now()
        known: dict[str, Breaker] = {}
        try:
            records = await controls.list(PREFIX)
        except StoreUnavailableError as exc:
            return self._unreachable(exc, now)
        for key, record in records:
            try:
                breaker = Breaker.from_record(record)
            except (KeyError, TypeError, ValueError):
                _log.warning(
                    "dlq.breaker: record %r cannot be read; ignored",
                    key,
                    extra={"action": "dlq.breaker", "outcome": "unreadable"},
                )
                continue
            known[breaker.workflow] = breaker
            policy = self.policy(breaker.workflow)
            if breaker.paused(now):
                gate.blocked.add(breaker.workflow)
                continue
            if breaker.state is BreakerState.CLOSED or not self._applies(breaker):
                continue
            if not breaker.allows(now):
                gate.blocked.add(breaker.workflow)
                continue
            breaker, granted = await self._reserve(breaker.workflow, policy)
            known[breaker.workflow] = breaker
            if granted:
                gate.probes[breaker.workflow] = granted
            else:
                gate.blocked.add(breaker.workflow)
        self.known = known
        self._blind = False
        return gate

    async def _reserve(self, workflow: str, policy: BreakerPolicy) -> tuple[Breaker, int]:
        """Move an open breaker past its time to half-open, and reserve probes."""
        now = self.dlq.clock.now()
        granted = 0
        moved = False

        def reserve(current: dict[str, Any] | None) -> dict[str, Any]:
            nonlocal granted, moved
            breaker = Breaker(workflow) if current is None else Breaker.from_record(current)
            moved = breaker.state is BreakerState.OPEN and breaker.allows(now)
            if moved:
                breaker = breaker.half_open(now)
            breaker, granted = breaker.reserve(policy.half_open_attempts, policy)
            return breaker.to_record()

        stored = Breaker.from_record(
            await self.dlq.traced_store.controls.mutate(breaker_key(workflow), reserve)
        )
        if moved:
            self._transition(stored, BreakerState.HALF_OPEN)
        return stored, granted

    async def settle(self, gate: Gate) -> None:
        """Give back the probes a claim reserved and did not use."""
        for workflow, allowed in gate.probes.items():
            unused = allowed - gate.taken.get(workflow, 0)
            if unused > 0:

                def give_back(
                    current: dict[str, Any] | None, unused: int = unused
                ) -> dict[str, Any]:
                    if current is None:
                        raise _Gone
                    return Breaker.from_record(current).give_back(unused).to_record()

                try:
                    await self.dlq.traced_store.controls.mutate(breaker_key(workflow), give_back)
                except _Gone:  # deleted meanwhile: nothing to give back to
                    continue
        await self.limiter.settle(gate)

    # -- after an attempt ---------------------------------------------------------------

    async def record(self, task: FailedTask, result: AttemptResult) -> None:
        """Add an attempt's outcome to its workflow's breaker; a ``RetryAfter`` pauses
        the whole workflow for its seconds."""
        workflow = task.workflow
        if result.outcome is AttemptOutcome.DEFERRED and result.defer_seconds:
            try:
                await self.pause(workflow, result.defer_seconds)
            except StoreUnavailableError:
                return
            return
        policy = self.policy(workflow)
        if not policy.enabled:
            return
        sick = is_sick(result.outcome, result.category, policy.trip_on)
        if sick:
            self._sick_since_read = True
        healthy = self._healthy.get(workflow, 0) + (not sick)
        known = self.known.get(workflow)
        urgent = sick or (known is not None and known.state is not BreakerState.CLOSED)
        if not urgent and time.monotonic() - self._flushed_at.get(workflow, 0.0) < _FLUSH_EVERY:
            self._healthy[workflow] = healthy
            return
        self._healthy[workflow] = 0
        self._flushed_at[workflow] = time.monotonic()
        try:
            await self._observe(workflow, healthy, int(sick), policy)
        except StoreUnavailableError:  # gate() has said so: these outcomes are not shared
            return

    async def pause(self, workflow: str, seconds: float) -> Breaker:
        """Hold back every task of ``workflow`` for ``seconds`` (a day at most), in every
        process: the downstream asked for it (``RetryAfter``)."""
        now = self.dlq.clock.now()
        until = now + timedelta(seconds=min(max(0.0, seconds), 86400.0))

        def pause(current: dict[str, Any] | None) -> dict[str, Any]:
            breaker = Breaker(workflow) if current is None else Breaker.from_record(current)
            return breaker.pause(until).to_record()

        stored = Breaker.from_record(
            await self.dlq.traced_store.controls.mutate(breaker_key(workflow), pause)
        )
        self.known[workflow] = stored
        self._pauses = True
        self._read_at = -_READ_EVERY
        _log.info(
            "dlq.breaker.pause %s until %s (the handler asked for %g s)",
            workflow,
            until.isoformat(),
            seconds,
            extra={"action": "dlq.breaker.pause", "workflow": workflow, "seconds": seconds},
        )
        return stored

    async def flush(self) -> None:
        """Write the healthy outcomes gathered so far (a processor that stops)."""
        for workflow, healthy in list(self._healthy.items()):
            if healthy:
                self._healthy[workflow] = 0
                await self._observe(workflow, healthy, 0, self.policy(workflow))

    async def _observe(self, workflow: str, healthy: int, sick: int, policy: BreakerPolicy) -> None:
        now = self.dlq.clock.now()
        moved: BreakerState | None = None

        def observe(current: dict[str, Any] | None) -> dict[str, Any]:
            nonlocal moved
            breaker = Breaker(workflow) if current is None else Breaker.from_record(current)
            breaker, moved = breaker.observe(now, healthy, sick, policy)
            return breaker.to_record()

        stored = Breaker.from_record(
            await self.dlq.traced_store.controls.mutate(breaker_key(workflow), observe)
        )
        self.known[workflow] = stored
        if moved is not None:
            self._transition(stored, moved)

    # -- operators ----------------------------------------------------------------------

    async def force(
        self, workflow: str, state: BreakerState, *, by: str, reason: str | None
    ) -> Breaker:
        """Open a workflow's breaker until closed by hand, or close it now."""
        now = self.dlq.clock.now()

        def force(current: dict[str, Any] | None) -> dict[str, Any]:
            breaker = Breaker(workflow) if current is None else Breaker.from_record(current)
            if state is BreakerState.OPEN:
                return breaker.force_open(now, by=by, reason=reason).to_record()
            return breaker.close(now, by=by, reason=reason).to_record()

        stored = Breaker.from_record(
            await self.dlq.traced_store.controls.mutate(breaker_key(workflow), force)
        )
        self.known[workflow] = stored
        self._read_at = -_READ_EVERY  # this process's processors see it at their next claim
        self._transition(stored, state, by=by)
        return stored

    async def breakers(self) -> list[Breaker]:
        """Every stored breaker, by workflow."""
        found = []
        for _key, record in await self.dlq.traced_store.controls.list(PREFIX):
            try:
                found.append(Breaker.from_record(record))
            except (KeyError, TypeError, ValueError):
                continue
        return found

    def _transition(self, breaker: Breaker, to: BreakerState, *, by: str | None = None) -> None:
        verb = {"closed": "close", "open": "open", "half_open": "half_open"}[to.value]
        until = f" until {breaker.open_until.isoformat()}" if breaker.open_until is not None else ""
        who = f" by {by}" if by else ""
        log = _log.warning if to is BreakerState.OPEN else _log.info
        log(
            "dlq.breaker.%s %s%s%s",
            verb,
            breaker.workflow,
            until if to is BreakerState.OPEN else "",
            who,
            extra={
                "action": f"dlq.breaker.{verb}",
                "workflow": breaker.workflow,
                "state": to.value,
                "trips": breaker.trips,
                **({"by": by} if by else {}),
            },
        )
        self.dlq.telemetry.breaker_transition(breaker.workflow, to.value)


class BreakerMethods:
    """The breaker methods of :class:`~mahavishnu_dlq.queue.DeadLetterQueue`."""

    def _queue(self) -> DeadLetterQueue:
        return self  # type: ignore[return-value]  # mixed into DeadLetterQueue only

    async def list_breakers(self) -> list[Breaker]:
        """Every workflow's stored circuit breaker (a workflow with none is closed)."""
        return await self._queue().downstream.breakers()

    async def open_breaker(
        self, workflow: str, *, by: str | None = None, reason: str | None = None
    ) -> Breaker:
        """Open ``workflow``'s breaker until :meth:`close_breaker`: no task of it is
        claimed by any processor; logged (``dlq.breaker.open``) with ``by``."""
        return await self._queue().downstream.force(
            require_str(workflow, "workflow"), BreakerState.OPEN, by=by or operator(), reason=reason
        )

    async def close_breaker(
        self, workflow: str, *, by: str | None = None, reason: str | None = None
    ) -> Breaker:
        """Close ``workflow``'s breaker now (its window starts empty)."""
        return await self._queue().downstream.force(
            require_str(workflow, "workflow"),
            BreakerState.CLOSED,
            by=by or operator(),
            reason=reason,
        )
