"""Rate limits as every processor shares them: tokens taken before a claim.

:class:`Limiter` belongs to a queue's :class:`~.shared.Downstream`. Before a claim
it takes, for each rate-limited workflow, up to as many tokens as the claim may
take tasks from that workflow's shared bucket (``rate/<workflow>``,
:mod:`.rates`), by compare-and-set; the claim lets through no more tasks of the
workflow than it got, and the tokens it did not use are given back. A workflow
with no token now is left out of the claim, and the processor is woken when the
next token is due. A limit that applies to every workflow (``rate_limit``) is
learned workflow by workflow: the first due task of an unknown workflow is left
for the next claim, which takes tokens for it. A retry job's runner takes one
token per task (:meth:`Limiter.acquire`), waiting for it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from mahavishnu_dlq.downstream.rates import Bucket

if TYPE_CHECKING:
    from mahavishnu_dlq.downstream.shared import Gate
    from mahavishnu_dlq.queue import DeadLetterQueue

__all__ = ["PREFIX", "Limiter", "rate_key"]

#: Key prefix of the token buckets in ``Store.controls``.
PREFIX = "rate/"


def rate_key(workflow: str) -> str:
    return f"{PREFIX}{workflow}"


class Limiter:
    """The shared token buckets of one queue (see the module docstring)."""

    def __init__(self, dlq: DeadLetterQueue) -> None:
        self.dlq = dlq
        self.learned: set[str] = set()
        #: seconds until a limited workflow that got no token has one (None: none waits)
        self.wake_in: float | None = None

    def limited(self, workflow: str) -> bool:
        return self.dlq.rates.for_workflow(workflow) is not None

    def _workflows(self) -> set[str]:
        rates = self.dlq.rates
        names = set(rates.by_workflow)
        if rates.default is not None:
            names |= set(self.dlq.handlers) | self.learned
        return {name for name in names if self.limited(name)}

    async def reserve(self, gate: Gate, wanted: int) -> None:
        """Take tokens for the claim ``gate`` guards (``wanted`` per workflow at most)."""
        self.wake_in = None
        if not self.dlq.rates.any or wanted <= 0:
            return
        gate.needs_tokens = self.limited
        soonest = math.inf
        for workflow in sorted(self._workflows() - gate.blocked):
            granted, wait = await self._take(workflow, wanted)
            if granted:
                gate.tokens[workflow] = granted
            else:
                gate.blocked.add(workflow)
                soonest = min(soonest, wait)
        self.wake_in = None if soonest == math.inf else soonest

    async def _take(self, workflow: str, wanted: int) -> tuple[int, float]:
        rate = self.dlq.rates.for_workflow(workflow)
        assert rate is not None  # noqa: S101 - only limited workflows come here
        now = self.dlq.clock.now()
        granted, wait = 0, 0.0

        def take(current: dict[str, Any] | None) -> dict[str, Any]:
            nonlocal granted, wait
            bucket, granted = Bucket.from_record(current).take(now, wanted, rate)
            wait = bucket.next_token_in(now, rate) if not granted else 0.0
            return bucket.to_record()

        await self.dlq.traced_store.controls.mutate(rate_key(workflow), take)
        return granted, wait

    async def settle(self, gate: Gate) -> None:
        """Give back the tokens the claim did not use; learn the workflows it met."""
        if gate.unseen - self.learned:
            self.learned |= gate.unseen
            self.wake_in = 0.0  # claim again at once, with tokens for them
        now = self.dlq.clock.now()
        for workflow, granted in gate.tokens.items():
            unused = granted - gate.taken.get(workflow, 0)
            rate = self.dlq.rates.for_workflow(workflow)
            if unused <= 0 or rate is None:
                continue

            def give_back(
                current: dict[str, Any] | None, unused: int = unused, rate: float = rate
            ) -> dict[str, Any]:
                return Bucket.from_record(current).give_back(now, unused, rate).to_record()

            await self.dlq.traced_store.controls.mutate(rate_key(workflow), give_back)

    async def acquire(self, workflow: str) -> None:
        """Wait for one token of ``workflow`` (a retry job's runner, before each task)."""
        if not self.limited(workflow):
            return
        while True:
            granted, wait = await self._take(workflow, 1)
            if granted:
                return
            await self.dlq.clock.sleep(max(wait, 0.001))
