"""Retry policies: documented defaults, properties of the maths, the policy book."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mahavishnu_dlq import policy as policy_module
from mahavishnu_dlq.errors import RetryAfter
from mahavishnu_dlq.models import ErrorCategory, RetryPolicy
from mahavishnu_dlq.policy import (
    DEFAULT_CATEGORY_POLICIES,
    MAX_SECONDS,
    Jitter,
    PolicyBook,
    PolicyOverride,
    PolicyParams,
    RetryAction,
    RetryDecision,
    RetryState,
    apply_jitter,
    base_delay,
    decide,
    retry_after_hint,
)

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
MIN = 60.0
RETRYING = (RetryPolicy.IMMEDIATE, RetryPolicy.LINEAR, RetryPolicy.EXPONENTIAL)


def state(
    retry_count: int = 0, elapsed: float = 0.0, retry_after: float | None = None
) -> RetryState:
    return RetryState(retry_count, T0, T0 + timedelta(seconds=elapsed), retry_after)


@st.composite
def policy_params(
    draw: st.DrawFn, policies: Sequence[RetryPolicy] = RETRYING, *, deadlines: bool = True
) -> PolicyParams:
    cap = draw(st.floats(0, 7 * 86400))
    return PolicyParams(
        policy=draw(st.sampled_from(policies)),
        max_retries=draw(st.integers(0, 12)),
        linear_step=draw(st.floats(0, 86400)),
        exponential_base=draw(st.floats(0, cap)),
        exponential_cap=cap,
        jitter=draw(st.sampled_from(Jitter)),
        deadline=draw(st.none() | st.floats(0, 30 * 86400)) if deadlines else None,
    )


retry_states = st.builds(
    state,
    retry_count=st.integers(0, 64),
    elapsed=st.integers(0, 30 * 86400 * 10**6).map(lambda us: us / 10**6),
)
seeds = st.integers(0, 2**32)


# --- the documented defaults ---------------------------------------------------------


def test_linear_defaults_are_5_10_15_minutes() -> None:
    params = PolicyParams(policy=RetryPolicy.LINEAR)
    assert [base_delay(params, n) / MIN for n in range(3)] == [5, 10, 15]


def test_linear_is_capped_too() -> None:
    assert base_delay(PolicyParams(policy=RetryPolicy.LINEAR), 20) == 3600.0


def test_exponential_defaults_double_up_to_an_hour() -> None:
    params = PolicyParams()
    assert params.policy is RetryPolicy.EXPONENTIAL
    assert params.max_retries == 3
    assert [base_delay(params, n) / MIN for n in range(8)] == [1, 2, 4, 8, 16, 32, 60, 60]


def test_immediate_is_due_now() -> None:
    params = PolicyParams(policy=RetryPolicy.IMMEDIATE)
    assert base_delay(params, 0) == 0.0
    decision = decide(params, state(elapsed=90))
    assert decision == RetryDecision(
        RetryAction.RETRY, T0 + timedelta(seconds=90), 0.0, "scheduled"
    )


def test_immediate_retries_after_the_first_wait_for_the_floor() -> None:
    params = PolicyParams(policy=RetryPolicy.IMMEDIATE, max_retries=10)
    assert [base_delay(params, n) for n in range(4)] == [0.0, 1.0, 1.0, 1.0]
    later = decide(params, state(retry_count=2, elapsed=5))
    assert later.delay == 1.0
    assert later.next_retry_at == T0 + timedelta(seconds=6)
    quicker = PolicyParams(policy=RetryPolicy.IMMEDIATE, max_retries=10, immediate_min_delay=0.25)
    assert decide(quicker, state(retry_count=1)).delay == 0.25


@given(seed=st.integers(0, 2**32 - 1), jitter=st.sampled_from(list(Jitter)))
def test_immediate_floor_holds_under_jitter(seed: int, jitter: Jitter) -> None:
    params = PolicyParams(policy=RetryPolicy.IMMEDIATE, max_retries=10, jitter=jitter)
    decision = decide(params, state(retry_count=3), random.Random(seed))
    assert decision.delay is not None
    assert decision.delay >= min(params.immediate_min_delay, params.exponential_cap)


def test_first_exponential_retry_is_scheduled_in_a_minute() -> None:
    decision = decide(PolicyParams(), state())
    assert decision == RetryDecision(
        RetryAction.RETRY, T0 + timedelta(minutes=1), 60.0, "scheduled"
    )


@pytest.mark.parametrize("max_retries", [0, 3])
def test_never_waits_for_a_manual_retry(max_retries: int) -> None:
    decision = decide(PolicyParams(policy=RetryPolicy.NEVER, max_retries=max_retries), state())
    assert decision == RetryDecision(RetryAction.MANUAL, None, None, "never: manual retry only")


def test_never_exhausts_once_manual_retries_are_used_up() -> None:
    decision = decide(PolicyParams(policy=RetryPolicy.NEVER, max_retries=2), state(retry_count=2))
    assert decision == RetryDecision(RetryAction.EXHAUST, None, None, "max_retries (2) reached")


def test_never_has_no_delay() -> None:
    with pytest.raises(ValueError, match="NEVER"):
        base_delay(PolicyParams(policy=RetryPolicy.NEVER), 0)


def test_deadline_reason_names_the_deadline() -> None:
    decision = decide(PolicyParams(deadline=600), state(elapsed=600))
    assert decision == RetryDecision(RetryAction.EXHAUST, None, None, "deadline (600s) passed")


def test_retry_that_would_start_after_the_deadline_exhausts() -> None:
    # 1 min delay from 9.5 min: the retry would start at 10.5 min, after the deadline.
    decision = decide(PolicyParams(deadline=600), state(elapsed=570))
    assert decision.action is RetryAction.EXHAUST
    assert decision.reason == "deadline (600s) passed"


def test_retry_exactly_at_the_deadline_is_allowed() -> None:
    decision = decide(PolicyParams(deadline=600), state(elapsed=540))
    assert decision.action is RetryAction.RETRY
    assert decision.next_retry_at == T0 + timedelta(seconds=600)


# --- properties -------------------------------------------------------------------------


@given(policy_params(), retry_states, seeds)
def test_delays_are_never_negative_nor_above_the_cap(
    params: PolicyParams, rstate: RetryState, seed: int
) -> None:
    assert 0 <= base_delay(params, rstate.retry_count) <= params.exponential_cap
    decision = decide(params, rstate, random.Random(seed))
    if decision.action is RetryAction.RETRY:
        assert decision.delay is not None
        assert decision.next_retry_at is not None
        assert 0 <= decision.delay <= params.exponential_cap
        assert decision.next_retry_at == rstate.now + timedelta(seconds=decision.delay)
    else:
        assert decision.delay is None
        assert decision.next_retry_at is None


@given(policy_params(), st.integers(0, 200))
def test_delay_does_not_decrease_with_retry_count(params: PolicyParams, retry_count: int) -> None:
    assert base_delay(params, retry_count) <= base_delay(params, retry_count + 1)


@given(st.floats(0, 1e9), seeds)
def test_full_jitter_stays_within_zero_and_the_delay(delay: float, seed: int) -> None:
    assert 0 <= apply_jitter(delay, Jitter.FULL, random.Random(seed)) <= delay


@given(st.floats(0, 1e9), seeds)
def test_equal_jitter_stays_within_half_and_the_delay(delay: float, seed: int) -> None:
    assert delay / 2 <= apply_jitter(delay, Jitter.EQUAL, random.Random(seed)) <= delay


@given(st.floats(0, 1e9))
def test_no_jitter_keeps_the_delay(delay: float) -> None:
    assert apply_jitter(delay, Jitter.NONE, random.Random(0)) == delay


@given(
    policy_params(),
    retry_states,
    st.none() | st.floats(0, 1e7),
    st.floats(0, 30 * 86400),
    seeds,
)
def test_deadline_is_honoured(
    params: PolicyParams, rstate: RetryState, hint: float | None, deadline: float, seed: int
) -> None:
    params = replace(params, deadline=deadline)
    rstate = RetryState(rstate.retry_count, rstate.first_failed_at, rstate.now, hint)
    decision = decide(params, rstate, random.Random(seed))
    if decision.action is RetryAction.RETRY:
        assert decision.next_retry_at is not None
        assert decision.next_retry_at <= T0 + timedelta(seconds=deadline)
    if rstate.now >= T0 + timedelta(seconds=deadline):
        assert decision.action is RetryAction.EXHAUST


@given(policy_params(deadlines=False), st.integers(0, 11), st.floats(0, 1e7), seeds)
def test_retry_after_hint_overrides_the_computed_delay(
    params: PolicyParams, retry_count: int, hint: float, seed: int
) -> None:
    params = replace(params, max_retries=12)
    decision = decide(params, state(retry_count, retry_after=hint), random.Random(seed))
    assert decision == RetryDecision(
        RetryAction.RETRY, T0 + timedelta(seconds=hint), hint, "retry_after hint"
    )


def test_retry_after_hint_is_clamped() -> None:
    assert decide(PolicyParams(), state(retry_after=-5)).delay == 0.0
    assert decide(PolicyParams(), state(retry_after=math.inf)).delay == MAX_SECONDS
    assert decide(PolicyParams(), state(retry_after=math.nan)).delay == 60.0


@given(policy_params(RETRYING), retry_states)
def test_max_retries_zero_exhausts_a_retrying_policy(
    params: PolicyParams, rstate: RetryState
) -> None:
    params = replace(params, max_retries=0)
    assert decide(params, rstate).action is RetryAction.EXHAUST


@given(policy_params([*RETRYING, RetryPolicy.NEVER]), st.integers(1, 64), st.data())
def test_no_retries_left_exhausts(params: PolicyParams, extra: int, data: st.DataObject) -> None:
    params = replace(params, max_retries=data.draw(st.integers(1, 12)))
    decision = decide(params, state(params.max_retries + extra - 1, retry_after=0))
    assert decision == RetryDecision(
        RetryAction.EXHAUST, None, None, f"max_retries ({params.max_retries}) reached"
    )


@given(policy_params(), retry_states, seeds)
def test_same_seed_same_decision(params: PolicyParams, rstate: RetryState, seed: int) -> None:
    assert decide(params, rstate, random.Random(seed)) == decide(
        params, rstate, random.Random(seed)
    )


def test_module_rng_is_used_only_when_none_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(policy_module, "_RNG", random.Random(7))
    params = PolicyParams(jitter=Jitter.FULL)
    expected = decide(params, state(), random.Random(7))
    assert decide(params, state()) == expected
    assert decide(params, state(), random.Random(8)) != expected


@pytest.mark.parametrize("policy", RETRYING)
@pytest.mark.parametrize("retry_count", [10**3, 10**6, 10**100, 10**400])
def test_huge_retry_count_does_not_overflow(policy: RetryPolicy, retry_count: int) -> None:
    params = PolicyParams(policy=policy, max_retries=10**401)
    expected = 1.0 if policy is RetryPolicy.IMMEDIATE else 3600.0  # the floor after the first
    assert base_delay(params, retry_count) == expected
    assert decide(params, state(retry_count)).delay == expected


def test_tiny_exponential_base_still_reaches_the_cap() -> None:
    params = PolicyParams(exponential_base=5e-324, exponential_cap=MAX_SECONDS)
    assert base_delay(params, 10**6) == MAX_SECONDS
    assert base_delay(params, 0) == 5e-324


def test_jitter_rejects_negative_delays() -> None:
    with pytest.raises(ValueError, match="delay"):
        apply_jitter(-1.0, Jitter.FULL, random.Random(0))


# --- retry_after_hint ---------------------------------------------------------------------


class HintedError(Exception):
    def __init__(self, retry_after: object) -> None:
        super().__init__("hinted")
        self.retry_after = retry_after


class Headers:
    def __init__(self, headers: object) -> None:
        self.headers = headers


class HTTPError(Exception):
    def __init__(self, headers: object, retry_after: object = None) -> None:
        super().__init__("http error")
        self.response = Headers(headers)
        self.retry_after = retry_after


class BrokenError(Exception):
    @property
    def response(self) -> object:
        raise RuntimeError("no response yet")


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (None, None),
        (ValueError("plain"), None),
        (RetryAfter(30), 30.0),
        (RetryAfter(0), 0.0),
        (HintedError(5), 5.0),
        (HintedError(2.5), 2.5),
        (HintedError(" 12 "), 12.0),
        (HintedError(-1), None),
        (HintedError(math.nan), None),
        (HintedError(math.inf), None),
        (HintedError("soon"), None),
        (HintedError("1e999"), None),
        (HintedError(True), None),
        (HintedError([5]), None),
        (HTTPError({"Retry-After": "120"}), 120.0),
        (HTTPError({"retry-after": "7"}), 7.0),
        (HTTPError({"Retry-After": 3}), 3.0),
        (HTTPError({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}), None),
        (HTTPError({"Retry-After": "-4"}), None),
        (HTTPError({}), None),
        (HTTPError(["Retry-After", "5"]), None),
        (HTTPError(None), None),
        (HTTPError({"Retry-After": "120"}, retry_after="bad"), 120.0),
        (HTTPError({"Retry-After": "120"}, retry_after=9), 9.0),
        (BrokenError(), None),
    ],
)
def test_retry_after_hint(exc: BaseException | None, expected: float | None) -> None:
    assert retry_after_hint(exc) == expected


# --- PolicyParams / RetryState validation -------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_retries": -1}, "max_retries"),
        ({"linear_step": -1.0}, "linear_step"),
        ({"linear_step": math.nan}, "linear_step"),
        ({"exponential_base": -0.5}, "exponential_base"),
        ({"exponential_cap": -1.0}, "exponential_cap"),
        ({"exponential_cap": math.inf}, "exponential_cap"),
        ({"deadline": -1.0}, "deadline"),
        ({"deadline": 1e300}, "deadline"),
        ({"exponential_base": 120.0, "exponential_cap": 60.0}, "exponential_base"),
    ],
)
def test_params_validation_names_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field) as info:
        PolicyParams(**kwargs)
    assert repr(next(iter(kwargs.values()))) in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "field"), [({"max_retries": -1}, "max_retries"), ({"deadline": -1.0}, "deadline")]
)
def test_override_validation_names_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        PolicyOverride(**kwargs)


def test_state_validation() -> None:
    with pytest.raises(ValueError, match="retry_count"):
        RetryState(-1, T0, T0)
    with pytest.raises(ValueError, match="timezone-aware"):
        RetryState(0, T0.replace(tzinfo=None), T0)


# --- PolicyBook -------------------------------------------------------------------------


def test_default_category_policies() -> None:
    assert dict(DEFAULT_CATEGORY_POLICIES) == {
        ErrorCategory.TRANSIENT: RetryPolicy.EXPONENTIAL,
        ErrorCategory.NETWORK: RetryPolicy.EXPONENTIAL,
        ErrorCategory.RESOURCE: RetryPolicy.LINEAR,
        ErrorCategory.PERMISSION: RetryPolicy.NEVER,
        ErrorCategory.VALIDATION: RetryPolicy.NEVER,
        ErrorCategory.PERMANENT: RetryPolicy.NEVER,
    }


@pytest.mark.parametrize("category", ErrorCategory)
def test_book_uses_the_category_policy(category: ErrorCategory) -> None:
    book = PolicyBook(PolicyParams(policy=RetryPolicy.IMMEDIATE, max_retries=5))
    assert book.resolve(category=category) == PolicyParams(
        policy=DEFAULT_CATEGORY_POLICIES[category], max_retries=5
    )


def test_book_without_category_uses_the_default() -> None:
    default = PolicyParams(policy=RetryPolicy.LINEAR, deadline=60)
    assert PolicyBook(default).resolve(workflow="etl") == default
    assert PolicyBook().default == PolicyParams()


def test_category_policies_merge_over_the_defaults() -> None:
    book = PolicyBook(category_policies={ErrorCategory.RESOURCE: RetryPolicy.EXPONENTIAL})
    assert book.resolve(category=ErrorCategory.RESOURCE).policy is RetryPolicy.EXPONENTIAL
    assert book.resolve(category=ErrorCategory.PERMANENT).policy is RetryPolicy.NEVER


NET = ErrorCategory.NETWORK
BOOK = PolicyBook(
    PolicyParams(max_retries=3),
    by_category={NET: PolicyOverride(policy=RetryPolicy.LINEAR, max_retries=4, deadline=100)},
    by_workflow={"etl": PolicyOverride(max_retries=5, jitter=Jitter.FULL)},
    by_workflow_category={("etl", NET): PolicyOverride(policy=RetryPolicy.IMMEDIATE)},
)


@pytest.mark.parametrize(
    ("workflow", "category", "expected"),
    [
        ("other", None, PolicyParams(max_retries=3)),
        ("other", ErrorCategory.TRANSIENT, PolicyParams(max_retries=3)),
        ("other", NET, PolicyParams(RetryPolicy.LINEAR, max_retries=4, deadline=100)),
        ("etl", None, PolicyParams(max_retries=5, jitter=Jitter.FULL)),
        (
            "etl",
            ErrorCategory.RESOURCE,
            PolicyParams(RetryPolicy.LINEAR, max_retries=5, jitter=Jitter.FULL),
        ),
        (
            "etl",
            NET,
            PolicyParams(RetryPolicy.IMMEDIATE, max_retries=5, jitter=Jitter.FULL, deadline=100),
        ),
    ],
)
def test_book_precedence(
    workflow: str, category: ErrorCategory | None, expected: PolicyParams
) -> None:
    assert BOOK.resolve(workflow=workflow, category=category) == expected


def test_explicit_arguments_win() -> None:
    params = BOOK.resolve(workflow="etl", category=NET, policy=RetryPolicy.NEVER, max_retries=0)
    assert params == PolicyParams(
        RetryPolicy.NEVER, max_retries=0, jitter=Jitter.FULL, deadline=100
    )


def test_book_caches_and_bounds_the_cache() -> None:
    book = PolicyBook()
    first = book.resolve(workflow="etl", category=NET)
    assert book.resolve(workflow="etl", category=NET) is first
    for n in range(5000):
        book.resolve(workflow=f"wf-{n}")
    assert len(book._cache) <= 4096
    assert book.resolve(workflow="etl", category=NET) == first
