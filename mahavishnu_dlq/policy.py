"""Retry policies: small pure functions from (policy, state) to a decision.

Like tenacity's strategies, :func:`decide` reads a :class:`PolicyParams` (which
policy, how many retries, jitter, deadline) and a :class:`RetryState` (retries
made, first failure time, the current time, an optional delay hint) and returns a
:class:`RetryDecision`: retry at a given time, wait for a manual retry, or give up.
Nothing here reads the clock or a global random generator unless asked to, so the
maths is tested with hypothesis and no sleeping. :class:`PolicyBook` picks the
parameters for one failure from per-workflow and per-category settings.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import Enum
from types import MappingProxyType
from typing import Any

from mahavishnu_dlq.errors import RetryAfter
from mahavishnu_dlq.limits import MAX_SECONDS
from mahavishnu_dlq.models import ErrorCategory, RetryPolicy

__all__ = [
    "DEFAULT_CATEGORY_POLICIES",
    "MAX_SECONDS",
    "Jitter",
    "PolicyBook",
    "PolicyOverride",
    "PolicyParams",
    "RetryAction",
    "RetryDecision",
    "RetryState",
    "apply_jitter",
    "base_delay",
    "clamp_seconds",
    "decide",
    "later",
    "retry_after_hint",
]


_RNG = random.Random()
_CACHE_LIMIT = 4096
_OVERRIDE_FIELDS = ("policy", "max_retries", "deadline", "jitter")


class Jitter(str, Enum):
    """How a computed delay is randomised, to spread retries of many tasks apart."""

    NONE = "none"  #: the delay as computed
    FULL = "full"  #: uniform in [0, delay]
    EQUAL = "equal"  #: uniform in [delay/2, delay]


class RetryAction(str, Enum):
    """What to do with a failed task."""

    RETRY = "retry"  #: retry automatically at ``next_retry_at``
    MANUAL = "manual"  #: stay pending until someone retries it by hand
    EXHAUST = "exhaust"  #: no retries left: mark the task exhausted


def _check_seconds(name: str, value: float | None) -> None:
    if value is not None and not (0 <= value <= MAX_SECONDS):  # also rejects NaN
        raise ValueError(f"{name} must be between 0 and {MAX_SECONDS:g} seconds, got {value!r}")


def _check_retries(value: int | None) -> None:
    if value is not None and value < 0:
        raise ValueError(f"max_retries must be >= 0, got {value!r}")


@dataclass(frozen=True, slots=True)
class PolicyParams:
    """Everything :func:`decide` needs to know about a policy. Durations are seconds."""

    policy: RetryPolicy = RetryPolicy.EXPONENTIAL
    max_retries: int = 3
    linear_step: float = 300.0  #: LINEAR: 5, 10, 15 min …
    exponential_base: float = 60.0  #: EXPONENTIAL: 1, 2, 4 … min
    exponential_cap: float = 3600.0  #: the longest computed delay, LINEAR included
    jitter: Jitter = Jitter.NONE
    deadline: float | None = None  #: give up this long after the first failure
    #: IMMEDIATE: the first retry is due at once, every later one at least this late,
    #: so a task that keeps failing cannot spend its retries in milliseconds
    immediate_min_delay: float = 1.0

    def __post_init__(self) -> None:
        _check_retries(self.max_retries)
        for name in (
            "linear_step",
            "exponential_base",
            "exponential_cap",
            "deadline",
            "immediate_min_delay",
        ):
            _check_seconds(name, getattr(self, name))
        if self.exponential_base > self.exponential_cap:
            raise ValueError(
                f"exponential_base ({self.exponential_base!r}) must not exceed "
                f"exponential_cap ({self.exponential_cap!r})"
            )


@dataclass(frozen=True, slots=True)
class RetryState:
    """Where a failed task stands. Datetimes are timezone-aware."""

    retry_count: int  #: retries already made (0 right after the first failure)
    first_failed_at: datetime
    now: datetime
    retry_after: float | None = None  #: delay hint (seconds); overrides the computed delay

    def __post_init__(self) -> None:
        if self.retry_count < 0:
            raise ValueError(f"retry_count must be >= 0, got {self.retry_count!r}")
        if self.first_failed_at.tzinfo is None or self.now.tzinfo is None:
            raise ValueError("first_failed_at and now must be timezone-aware")


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """The outcome of :func:`decide`; ``next_retry_at`` and ``delay`` are set only for RETRY."""

    action: RetryAction
    next_retry_at: datetime | None
    delay: float | None  #: seconds from ``state.now``
    reason: str  #: short, stable text for logs and the task's history


def base_delay(params: PolicyParams, retry_count: int) -> float:
    """The un-jittered delay (seconds) before retry number ``retry_count + 1``.

    IMMEDIATE is 0 for the first retry and ``immediate_min_delay`` after that (the
    cap bounds it too);
    LINEAR and EXPONENTIAL are capped by ``exponential_cap``, so any
    ``retry_count`` is safe. NEVER has no delay and raises ``ValueError``.
    """
    cap = params.exponential_cap
    if params.policy is RetryPolicy.NEVER:
        raise ValueError("the NEVER policy has no retry delay")
    if params.policy is RetryPolicy.IMMEDIATE:
        return 0.0 if retry_count == 0 else min(params.immediate_min_delay, cap)
    if params.policy is RetryPolicy.LINEAR:
        try:
            return min(params.linear_step * (retry_count + 1), cap)
        except OverflowError:  # retry_count too large for a float
            return cap if params.linear_step > 0 else 0.0
    # 2**2200 exceeds any finite ratio cap/base; ldexp is exact until it overflows.
    try:
        return min(math.ldexp(params.exponential_base, min(retry_count, 2200)), cap)
    except OverflowError:
        return cap


def apply_jitter(delay: float, jitter: Jitter, rng: random.Random) -> float:
    """Randomise ``delay`` (>= 0) with ``rng``; the result stays within [0, delay]."""
    if not delay >= 0:
        raise ValueError(f"delay must be >= 0, got {delay!r}")
    if jitter is Jitter.FULL:
        return rng.uniform(0.0, delay)
    if jitter is Jitter.EQUAL:
        return min(delay, delay / 2 + rng.uniform(0.0, delay / 2))
    return delay


def _exhaust(reason: str) -> RetryDecision:
    return RetryDecision(RetryAction.EXHAUST, None, None, reason)


def decide(
    params: PolicyParams, state: RetryState, rng: random.Random | None = None
) -> RetryDecision:
    """Decide what happens to a failed task; pure apart from ``rng``.

    Steps, in order: no retries left -> EXHAUST (a NEVER task that was never
    retried stays MANUAL, even with ``max_retries=0``); NEVER -> MANUAL; deadline
    passed -> EXHAUST; otherwise the delay is the hint (clamped to
    [0, MAX_SECONDS]) or the jittered :func:`base_delay`, and a retry that would
    start after the deadline -> EXHAUST. A deadline beyond the calendar (past the
    year 9999) is no deadline; a retry beyond it -> EXHAUST. ``rng`` defaults to a
    module-level generator; pass a seeded one for reproducible jitter.
    """
    never = params.policy is RetryPolicy.NEVER
    if state.retry_count >= params.max_retries and not (never and state.retry_count == 0):
        return _exhaust(f"max_retries ({params.max_retries}) reached")
    if never:
        return RetryDecision(RetryAction.MANUAL, None, None, "never: manual retry only")
    deadline_at = None
    if params.deadline is not None:
        deadline_at = later(state.first_failed_at, params.deadline)
        if deadline_at is not None and state.now >= deadline_at:
            return _exhaust(f"deadline ({params.deadline:g}s) passed")
    hint = state.retry_after
    if hint is not None and not math.isnan(hint):
        delay, reason = min(max(hint, 0.0), MAX_SECONDS), "retry_after hint"
    else:
        computed = base_delay(params, state.retry_count)
        delay = apply_jitter(computed, params.jitter, _RNG if rng is None else rng)
        if params.policy is RetryPolicy.IMMEDIATE and state.retry_count:
            delay = max(delay, computed)  # the floor holds under jitter
        reason = "scheduled"
    next_retry_at = later(state.now, delay)
    if next_retry_at is None:
        return _exhaust(f"the next retry ({delay:g}s from now) would fall after the year 9999")
    if deadline_at is not None and next_retry_at > deadline_at:
        return _exhaust(f"deadline ({params.deadline:g}s) passed")
    return RetryDecision(RetryAction.RETRY, next_retry_at, delay, reason)


def later(when: datetime, seconds: float) -> datetime | None:
    """``when`` plus ``seconds``, or None when that falls after the year 9999."""
    try:
        return when + timedelta(seconds=seconds)
    except OverflowError:
        return None


def _attr(obj: object, name: str) -> Any:
    try:
        return getattr(obj, name, None)
    except Exception:  # noqa: BLE001 - reading a hint must never break capturing a failure
        return None


def clamp_seconds(seconds: float) -> float:
    """A delay in [0, :data:`MAX_SECONDS`]: NaN is 0, infinity the longest delay."""
    if math.isnan(seconds):
        return 0.0
    return min(max(seconds, 0.0), MAX_SECONDS)


def _seconds(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        seconds = float(value)
    except (ValueError, OverflowError):
        return None
    return seconds if 0 <= seconds < math.inf else None


def retry_after_hint(exc: BaseException | None) -> float | None:
    """The delay (seconds) an exception asks for, or None.

    Looks at, in order: a :class:`~mahavishnu_dlq.errors.RetryAfter` signal; a
    numeric (or numeric string) ``retry_after`` attribute; a ``Retry-After``
    header in ``exc.response.headers`` (delta-seconds only, not HTTP dates).
    Negative, infinite, NaN and non-numeric values are ignored, and so is anything
    that raises while being read.
    """
    if exc is None:
        return None
    if isinstance(exc, RetryAfter):
        return _seconds(exc.seconds)
    hint = _seconds(_attr(exc, "retry_after"))
    if hint is not None:
        return hint
    headers = _attr(_attr(exc, "response"), "headers")
    if not isinstance(headers, Mapping):
        return None
    try:
        value = headers.get("Retry-After")
        return _seconds(value if value is not None else headers.get("retry-after"))
    except Exception:  # noqa: BLE001 - a hostile mapping: no hint, never a crash
        return None


@dataclass(frozen=True, slots=True)
class PolicyOverride:
    """Partial policy settings; None inherits (so an override cannot remove a deadline)."""

    policy: RetryPolicy | None = None
    max_retries: int | None = None
    deadline: float | None = None
    jitter: Jitter | None = None

    def __post_init__(self) -> None:
        _check_retries(self.max_retries)
        _check_seconds("deadline", self.deadline)


#: The policy each error category gets unless settings say otherwise.
DEFAULT_CATEGORY_POLICIES: Mapping[ErrorCategory, RetryPolicy] = MappingProxyType(
    {
        ErrorCategory.TRANSIENT: RetryPolicy.EXPONENTIAL,
        ErrorCategory.NETWORK: RetryPolicy.EXPONENTIAL,
        ErrorCategory.RESOURCE: RetryPolicy.LINEAR,
        ErrorCategory.PERMISSION: RetryPolicy.NEVER,
        ErrorCategory.VALIDATION: RetryPolicy.NEVER,
        ErrorCategory.PERMANENT: RetryPolicy.NEVER,
    }
)


def _apply(params: PolicyParams, override: PolicyOverride | None) -> PolicyParams:
    if override is None:
        return params
    changes: dict[str, Any] = {
        name: value for name in _OVERRIDE_FIELDS if (value := getattr(override, name)) is not None
    }
    return replace(params, **changes) if changes else params


class PolicyBook:
    """Resolves the PolicyParams for one failure.

    Precedence: explicit args > workflow+category > workflow > category > defaults.
    The category level is the category's policy (``category_policies``, merged
    over :data:`DEFAULT_CATEGORY_POLICIES`) and then ``by_category``. Results are
    cached, so treat a book as read-only once built.
    """

    def __init__(
        self,
        default: PolicyParams | None = None,
        *,
        category_policies: Mapping[ErrorCategory, RetryPolicy] | None = None,
        by_category: Mapping[ErrorCategory, PolicyOverride] | None = None,
        by_workflow: Mapping[str, PolicyOverride] | None = None,
        by_workflow_category: Mapping[tuple[str, ErrorCategory], PolicyOverride] | None = None,
    ) -> None:
        self.default = default if default is not None else PolicyParams()
        self.category_policies = MappingProxyType(
            {**DEFAULT_CATEGORY_POLICIES, **(category_policies or {})}
        )
        self.by_category = MappingProxyType(dict(by_category or {}))
        self.by_workflow = MappingProxyType(dict(by_workflow or {}))
        self.by_workflow_category = MappingProxyType(dict(by_workflow_category or {}))
        self._cache: dict[tuple[object, ...], PolicyParams] = {}

    def resolve(
        self,
        *,
        workflow: str = "",
        category: ErrorCategory | None = None,
        policy: RetryPolicy | None = None,
        max_retries: int | None = None,
    ) -> PolicyParams:
        """The parameters for a failure of ``workflow`` in ``category`` (cached)."""
        key = (workflow, category, policy, max_retries)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        params = self.default
        if category is not None:
            policy_for = self.category_policies.get(category, params.policy)
            params = _apply(params, PolicyOverride(policy=policy_for))
            params = _apply(params, self.by_category.get(category))
        params = _apply(params, self.by_workflow.get(workflow))
        if category is not None:
            params = _apply(params, self.by_workflow_category.get((workflow, category)))
        params = _apply(params, PolicyOverride(policy=policy, max_retries=max_retries))
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[key] = params
        return params
