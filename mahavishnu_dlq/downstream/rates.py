"""Rate limits per workflow, as data: a token bucket every process shares.

Pure: no I/O. A workflow with a limit of *r* tasks per second has a bucket
(``rate/<workflow>`` in ``Store.controls``) holding up to ``max(1, r)`` tokens (one
second's worth), refilled at *r* per second. A processor takes tokens by
compare-and-set before it claims, one per task, and gives back what its claim
did not use. (A pause asked by a handler's ``RetryAfter`` is kept with the
workflow's breaker: :mod:`.breaker`.)
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mahavishnu_dlq.clock import from_micros, to_micros

__all__ = ["Bucket", "RateBook", "parse_rate"]

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:/\s*(s|sec|second|m|min|minute|h|hour))?\s*$")
_PER = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600}


def parse_rate(text: str | float) -> float:
    """Tasks per second of ``"5/s"``, ``"300/min"``, ``"1000/h"`` or a number;
    ``ValueError`` naming what is allowed."""
    if isinstance(text, bool):
        raise ValueError(f"a rate is a number or N/s, N/min, N/h, got {text!r}")  # noqa: TRY004 - settings report ValueError
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        match = _RATE.match(text)
        if match is None:
            raise ValueError(f"a rate is N/s, N/min or N/h (for example 5/s), got {text!r}")
        value = float(match.group(1)) / _PER[match.group(2) or "s"]
    if not 0 < value < math.inf:
        raise ValueError(f"a rate must be above 0, got {text!r}")
    return value


@dataclass(frozen=True)
class RateBook:
    """Tasks per second allowed for each workflow: a default (None: unlimited) and
    per-workflow limits."""

    default: float | None = None
    by_workflow: Mapping[str, float] = field(default_factory=dict)

    def for_workflow(self, workflow: str) -> float | None:
        return self.by_workflow.get(workflow, self.default)

    @property
    def any(self) -> bool:
        return self.default is not None or bool(self.by_workflow)


@dataclass(frozen=True)
class Bucket:
    """A workflow's shared token bucket (see the module docstring)."""

    tokens: float = 0.0
    at: datetime | None = None  #: when ``tokens`` was last brought up to date

    def refilled(self, now: datetime, rate: float) -> Bucket:
        """The bucket at ``now``: tokens grown by ``rate`` per second since ``at``
        (a new bucket starts full)."""
        capacity = max(1.0, rate)
        if self.at is None:
            return Bucket(capacity, now)
        elapsed = max(0.0, (now - self.at).total_seconds())
        return Bucket(min(capacity, self.tokens + elapsed * rate), now)

    def take(self, now: datetime, wanted: int, rate: float) -> tuple[Bucket, int]:
        """Take up to ``wanted`` whole tokens; the bucket after, and how many."""
        bucket = self.refilled(now, rate)
        granted = max(0, min(wanted, math.floor(bucket.tokens + 1e-9)))
        return Bucket(bucket.tokens - granted, now), granted

    def give_back(self, now: datetime, unused: int, rate: float) -> Bucket:
        bucket = self.refilled(now, rate)
        return Bucket(min(max(1.0, rate), bucket.tokens + max(0, unused)), now)

    def next_token_in(self, now: datetime, rate: float) -> float:
        """Seconds until a whole token is there (0 when there is one now)."""
        bucket = self.refilled(now, rate)
        return max(0.0, (1 - bucket.tokens) / rate)

    def to_record(self) -> dict[str, Any]:
        return {"tokens": self.tokens, "at_us": None if self.at is None else to_micros(self.at)}

    @classmethod
    def from_record(cls, record: Mapping[str, Any] | None) -> Bucket:
        if record is None:
            return cls()
        at = record.get("at_us")
        return cls(
            tokens=float(record.get("tokens", 0.0)),
            at=None if at is None else from_micros(int(at)),
        )
