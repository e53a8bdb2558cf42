"""Alerts: telling someone when the dead-letter queue needs attention.

- :class:`AlertRule` says when to alert: the queue is deeper than N tasks
  (``depth``), the oldest pending task has waited longer than T seconds
  (``oldest_pending``), or more than R tasks were exhausted in a sliding window
  (``exhausted_rate``).
- :class:`AlertEvaluator` checks the rules against
  :meth:`DeadLetterQueue.get_statistics` output, holds each rule's cooldown, logs
  every :class:`Alert` it fires (``dlq.alert``) and delivers it to its callbacks.

Cooldown: a rule that fires stays silent for ``cooldown_seconds``, whether its
condition clears meanwhile or not; once the cooldown has passed it fires again
at the first evaluation that finds the condition true. A condition that stays
true is therefore repeated every cooldown (like Alertmanager's repeat
interval), and one that flaps inside a cooldown is reported once.

:class:`AlertRuleSettings` and :func:`alert_rules_from_config` read rules from
configuration (the ``alerts:`` list of the YAML file). :class:`Hooks` (per-task
callbacks such as ``on_exhausted``) lives in :mod:`mahavishnu_dlq.hooks` and is
re-exported here.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, get_args

import anyio
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails, PydanticUndefined

from mahavishnu_dlq.clock import Clock, SystemClock, to_micros
from mahavishnu_dlq.errors import ConfigurationError
from mahavishnu_dlq.hooks import (
    DEFAULT_TIMEOUT_SECONDS,
    ExhaustedHook,
    Hooks,
    callable_name,
    check_timeout,
    guarded_call,
)
from mahavishnu_dlq.printable import library_logger

__all__ = [
    "Alert",
    "AlertCallback",
    "AlertEvaluator",
    "AlertKind",
    "AlertRule",
    "AlertRuleSettings",
    "ExhaustedHook",
    "Hooks",
    "alert_rules_from_config",
    "unique_rule_names",
]

_log = library_logger(__name__)

AlertKind = Literal["depth", "oldest_pending", "exhausted_rate", "breaker_open"]
#: ``callback(alert)``: a function or coroutine function; its return value is ignored.
AlertCallback = Callable[["Alert"], Any]

_KINDS: tuple[str, ...] = get_args(AlertKind)
_NAME_MAX = 200
_WINDOW_MAX = 86_400.0  # one day: bounds the exhausted events kept in memory
_COOLDOWN_MAX = 604_800.0  # one week
_SECOND = 1_000_000  # exhausted events are counted per second (microseconds)


# --- rules and alerts ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Alert:
    """One firing of an :class:`AlertRule`."""

    rule: str  #: the rule's name
    kind: AlertKind
    value: float  #: what was measured: tasks, seconds, or exhausted tasks in the window
    threshold: float
    message: str  #: one readable line, e.g. ``dlq depth 1250 above 1000``
    at: datetime  #: when it fired (UTC, the evaluator's clock)


@dataclass(frozen=True, slots=True)
class AlertRule:
    """When to alert: the measured value of ``kind`` is strictly above ``threshold``.

    - ``depth``: open tasks (``queue_size``: pending, retrying, exhausted) > threshold.
    - ``oldest_pending``: the oldest pending task has waited > threshold seconds.
    - ``exhausted_rate``: more than threshold tasks were exhausted in the last
      ``window_seconds`` (counted to the second; only this kind uses the window).

    ``cooldown_seconds``: after firing, the rule does not fire again until this
    much time has passed, even if its condition cleared and returned meanwhile.
    A threshold of 0 means "any". Invalid values raise :class:`ConfigurationError`
    naming the field, the value and what is allowed.
    """

    name: str
    kind: AlertKind
    threshold: float
    window_seconds: float = 300.0
    cooldown_seconds: float = 600.0

    def __post_init__(self) -> None:
        name: object = self.name
        if not isinstance(name, str) or not name.strip() or len(name) > _NAME_MAX:
            raise ConfigurationError(
                f"alert rule name must be a non-empty string of at most {_NAME_MAX} "
                f"characters, got {name!r}",
                field="name",
            )
        if self.kind not in _KINDS:
            raise ConfigurationError(
                f"alert rule {name!r}: kind must be one of: {', '.join(_KINDS)}, got {self.kind!r}",
                field="kind",
            )
        self._number("threshold", low=0.0, low_open=False, high=None)
        self._number("window_seconds", low=0.0, low_open=True, high=_WINDOW_MAX)
        self._number("cooldown_seconds", low=0.0, low_open=False, high=_COOLDOWN_MAX)

    def _number(self, name: str, *, low: float, low_open: bool, high: float | None) -> None:
        value: object = getattr(self, name)
        number = float(value) if isinstance(value, (int, float)) else math.nan
        if (
            isinstance(value, bool)
            or not math.isfinite(number)
            or (number <= low if low_open else number < low)
            or (high is not None and number > high)
        ):
            allowed = _range_text(low, low_open, high)
            raise ConfigurationError(
                f"alert rule {self.name!r}: {name} must be {allowed}, got {value!r}", field=name
            )
        object.__setattr__(self, name, number)


def _range_text(low: float, low_open: bool, high: float | None) -> str:
    if high is None:
        return f"{'greater than' if low_open else 'at least'} {_num(low)}"
    if low_open:
        return f"greater than {_num(low)} and at most {_num(high)}"
    return f"between {_num(low)} and {_num(high)}"


def _num(value: float) -> str:
    """``1250`` for whole numbers, ``12.5`` otherwise."""
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


def _message(rule: AlertRule, value: float) -> str:
    if rule.kind == "depth":
        return f"dlq depth {_num(value)} above {_num(rule.threshold)}"
    if rule.kind == "oldest_pending":
        return f"dlq oldest pending task waiting {_num(value)}s, above {_num(rule.threshold)}s"
    if rule.kind == "breaker_open":
        return f"dlq {_num(value)} workflow circuit breakers open, above {_num(rule.threshold)}"
    return (
        f"dlq {_num(value)} tasks exhausted in the last {_num(rule.window_seconds)}s, "
        f"above {_num(rule.threshold)}"
    )


# --- evaluating rules -------------------------------------------------------------------


@dataclass(slots=True)
class _Bucket:
    second: int  # start of the second, in microseconds since the epoch
    count: int


@dataclass(slots=True)
class _Window:
    """Exhausted events per second, newest last, none older than ``horizon``."""

    horizon: int = 0  # microseconds; 0: nothing is kept
    buckets: deque[_Bucket] = field(default_factory=deque)

    def prune(self, now: int) -> None:
        buckets = self.buckets
        while buckets and now - buckets[0].second >= self.horizon:
            buckets.popleft()

    def add(self, when: int, now: int) -> None:
        self.prune(now)
        second = when - when % _SECOND
        if now - second >= self.horizon:
            return  # already out of every window
        buckets = self.buckets
        if not buckets or buckets[-1].second < second:
            buckets.append(_Bucket(second, 1))
            return
        index = len(buckets) - 1  # late event (another clock): walk back to its second
        while index >= 0 and buckets[index].second > second:
            index -= 1
        if index >= 0 and buckets[index].second == second:
            buckets[index].count += 1
        else:
            buckets.insert(index + 1, _Bucket(second, 1))

    def count(self, window: int, now: int) -> int:
        total = 0
        for bucket in reversed(self.buckets):
            if now - bucket.second >= window:
                break
            total += bucket.count
        return total


class AlertEvaluator:
    """Checks :class:`AlertRule` s against queue statistics and delivers what fires.

    The queue calls :meth:`record_exhausted` whenever a task becomes exhausted;
    the processor calls :meth:`evaluate` with :meth:`DeadLetterQueue.get_statistics`
    output. Each fired :class:`Alert` is logged at WARNING (action ``dlq.alert``,
    extras ``rule``, ``kind``, ``value``, ``threshold``) and passed to every
    callback (sync or async; each call limited to ``callback_timeout_seconds``; a
    failure is logged at ERROR as ``dlq.alert_callback_failed``, never raised).

    Exhausted events are kept only while some ``exhausted_rate`` rule can still
    count them, one entry per second at most: memory is bounded by the largest
    window (at most one day), whatever the rate.
    """

    def __init__(
        self,
        rules: Iterable[AlertRule] = (),
        *,
        clock: Clock | None = None,
        callbacks: Iterable[AlertCallback] = (),
        callback_timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        self.clock: Clock = clock or SystemClock()
        self.callbacks: list[AlertCallback] = list(callbacks)
        self.callback_timeout_seconds = check_timeout(callback_timeout_seconds)
        self._rules: dict[str, AlertRule] = {}
        self._last_fired: dict[str, datetime] = {}
        self._exhausted = _Window()
        for rule in rules:
            self.add_rule(rule)

    @property
    def rules(self) -> tuple[AlertRule, ...]:
        """The rules, in the order they were added."""
        return tuple(self._rules.values())

    def add_rule(self, rule: AlertRule) -> None:
        """Add ``rule``; its name must be new (cooldowns are kept per name)."""
        if rule.name in self._rules:
            raise ValueError(f"an alert rule named {rule.name!r} exists already")
        self._rules[rule.name] = rule
        windows = [r.window_seconds for r in self._rules.values() if r.kind == "exhausted_rate"]
        self._exhausted.horizon = math.ceil(max(windows, default=0.0) * _SECOND)

    def add_callback(self, callback: AlertCallback) -> AlertCallback:
        """Deliver fired alerts to ``callback`` too; returns it (works as a decorator)."""
        self.callbacks.append(callback)
        return callback

    def record_exhausted(self, at: datetime | None = None) -> None:
        """Note that a task became exhausted at ``at`` (default: now). Cheap, never blocks.

        Ignored when no ``exhausted_rate`` rule exists or ``at`` is older than
        every window.
        """
        if not self._exhausted.horizon:
            return
        now = to_micros(self.clock.now())
        if at is not None and at.tzinfo is None:
            raise ValueError(f"record_exhausted needs a timezone-aware time, got {at!r}")
        self._exhausted.add(now if at is None else to_micros(at), now)

    def exhausted_count(self, window_seconds: float) -> int:
        """Exhausted events recorded in the last ``window_seconds`` (to the second)."""
        now = to_micros(self.clock.now())
        self._exhausted.prune(now)
        return self._exhausted.count(math.ceil(window_seconds * _SECOND), now)

    async def evaluate(self, stats: Mapping[str, Any]) -> list[Alert]:
        """Check every rule now; log and deliver the alerts that fire, and return them.

        Reads ``stats["queue_size"]`` and ``stats["oldest_pending_age_seconds"]``
        (None or missing: that rule is not checked). A rule in its cooldown does
        not fire.
        """
        now = self.clock.now()
        fired: list[Alert] = []
        for rule in self._rules.values():
            value = self._measure(rule, stats)
            if value is None or value <= rule.threshold:
                continue
            last = self._last_fired.get(rule.name)
            if last is not None and (now - last).total_seconds() < rule.cooldown_seconds:
                continue
            self._last_fired[rule.name] = now
            alert = Alert(rule.name, rule.kind, value, rule.threshold, _message(rule, value), now)
            _log.warning(
                "dlq.alert %s: %s",
                rule.name,
                alert.message,
                extra={
                    "action": "dlq.alert",
                    "rule": rule.name,
                    "kind": rule.kind,
                    "value": value,
                    "threshold": rule.threshold,
                },
            )
            fired.append(alert)
        if fired and self.callbacks:
            async with anyio.create_task_group() as group:
                for callback in list(self.callbacks):
                    group.start_soon(self._deliver, callback, fired, name=callable_name(callback))
        return fired

    def _measure(self, rule: AlertRule, stats: Mapping[str, Any]) -> float | None:
        if rule.kind == "exhausted_rate":
            return float(self.exhausted_count(rule.window_seconds))
        if rule.kind == "breaker_open":
            breakers = stats.get("breakers")
            if not isinstance(breakers, Mapping):
                return None
            return float(
                sum(
                    1
                    for b in breakers.values()
                    if isinstance(b, Mapping) and b.get("state") == "open"
                )
            )
        key = "queue_size" if rule.kind == "depth" else "oldest_pending_age_seconds"
        value = stats.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        return float(value)

    async def _deliver(self, callback: AlertCallback, alerts: Sequence[Alert]) -> None:
        for alert in alerts:  # in order, one after another, for this callback
            await guarded_call(
                callback,
                alert,
                timeout=self.callback_timeout_seconds,
                action="dlq.alert_callback_failed",
                role="callback",
                extra={"rule": alert.rule, "kind": alert.kind},
                logger=_log,
            )


# --- configuration ----------------------------------------------------------------------


class AlertRuleSettings(BaseModel):
    """One entry of the ``alerts:`` list in the settings; :meth:`to_rule` builds the rule."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True, frozen=True)

    name: str = Field(
        min_length=1, max_length=_NAME_MAX, description="unique name, in logs and alerts"
    )
    kind: AlertKind = Field(description="depth, oldest_pending, exhausted_rate or breaker_open")
    threshold: float = Field(
        ge=0,
        allow_inf_nan=False,
        description="fires when the measured value is above this (tasks, seconds, tasks)",
    )
    window_seconds: float = Field(
        default=300,
        gt=0,
        le=_WINDOW_MAX,
        description="exhausted_rate only: exhausted tasks are counted over this window",
    )
    cooldown_seconds: float = Field(
        default=600,
        ge=0,
        le=_COOLDOWN_MAX,
        description="after firing, the rule stays silent this long",
    )

    @field_validator("name")
    @classmethod
    def _name_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value

    @field_validator("window_seconds")
    @classmethod
    def _window_only_for_rate(cls, value: float, info: ValidationInfo) -> float:
        kind = info.data.get("kind")
        if kind is not None and kind != "exhausted_rate":
            raise ValueError(f"only exhausted_rate rules have a window, this rule is {kind}")
        return value

    def to_rule(self) -> AlertRule:
        """The :class:`AlertRule` these settings describe."""
        return AlertRule(
            name=self.name,
            kind=self.kind,
            threshold=self.threshold,
            window_seconds=self.window_seconds,
            cooldown_seconds=self.cooldown_seconds,
        )


def unique_rule_names(rules: list[AlertRuleSettings]) -> list[AlertRuleSettings]:
    """``rules`` unchanged; ValueError naming the positions of a repeated name.

    The body of a ``field_validator("alerts")`` on the settings.
    """
    duplicates = _duplicates(rules)
    if duplicates:
        first, index, name = duplicates[0]
        raise ValueError(f"rule name {name!r} is used twice: [{first}] and [{index}]")
    return rules


def _duplicates(rules: Sequence[AlertRuleSettings]) -> list[tuple[int, int, str]]:
    """``(first index, repeating index, name)`` of every repeated rule name."""
    seen: dict[str, int] = {}
    found = []
    for index, rule in enumerate(rules):
        if rule.name in seen:
            found.append((seen[rule.name], index, rule.name))
        else:
            seen[rule.name] = index
    return found


_RULES = TypeAdapter(list[AlertRuleSettings])
_LIMIT_ERRORS = frozenset({"greater_than", "greater_than_equal", "less_than_equal"})
_NOUNS = {
    "float_parsing": "a number ",
    "float_type": "a number ",
    "finite_number": "a finite number ",
}
_FIXED = {
    "missing": "is required",
    "string_too_short": "must not be empty",
    "string_type": "must be a string",
    "model_type": "must be a mapping of settings",
    "list_type": "must be a list of alert rules",
}


def alert_rules_from_config(items: Any, *, path: str = "alerts") -> list[AlertRule]:
    """Validate ``items`` (the list under ``alerts:``, None for none) into rules.

    Raises :class:`ConfigurationError` with one line per problem, naming the
    rule's position, the field, the bad value and what is allowed, e.g.
    ``alerts[1].threshold: must be at least 0, got -5``.
    """
    if items is None:
        return []
    try:
        settings = _RULES.validate_python(items)
    except ValidationError as exc:
        problems = [_problem(error, path) for error in exc.errors(include_url=False)]
        raise _config_error(problems) from exc
    duplicates = [
        (f"{path}[{index}].name", f"{path}[{index}].name: {name!r} is used by {path}[{first}] too")
        for first, index, name in _duplicates(settings)
    ]
    if duplicates:
        raise _config_error(duplicates)
    return [rule.to_rule() for rule in settings]


def _config_error(problems: list[tuple[str, str]]) -> ConfigurationError:
    count = len(problems)
    header = f"invalid mahavishnu-dlq configuration ({count} problem{'s' if count != 1 else ''})"
    lines = "\n".join(f"  - {text}" for _, text in problems)
    return ConfigurationError(f"{header}:\n{lines}", field=problems[0][0])


def _problem(error: ErrorDetails, path: str) -> tuple[str, str]:
    loc = error["loc"]
    where = path + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)
    kind = error["type"]
    name = str(loc[-1]) if len(loc) > 1 else ""
    info = AlertRuleSettings.model_fields.get(name)
    if kind == "extra_forbidden":
        return where, f"{where}: unknown setting; allowed here: " + ", ".join(
            AlertRuleSettings.model_fields
        )
    if kind in _LIMIT_ERRORS or kind in {"float_parsing", "float_type", "finite_number"}:
        text = f"must be {_NOUNS.get(kind, '')}{_field_range(info)}".rstrip()
    elif kind == "literal_error":
        text = "must be one of: " + ", ".join(_KINDS)
    elif kind == "value_error":
        text = str((error.get("ctx") or {}).get("error", error["msg"]))
    elif kind == "string_too_long":
        text = f"must be at most {_NAME_MAX} characters"
    else:
        text = _FIXED.get(kind, error["msg"][:1].lower() + error["msg"][1:])
    message = f"{where}: {text}"
    value = error.get("input", PydanticUndefined)
    if kind != "missing" and value is not PydanticUndefined and not isinstance(value, Mapping):
        shown = repr(value)
        message += f", got {shown if len(shown) <= 120 else shown[:117] + '...'}"
    return where, message


def _field_range(info: FieldInfo | None) -> str:
    """``at least 0`` / ``between 0 and 604800`` … from a numeric field's constraints."""
    limits: dict[str, float] = {}
    for item in info.metadata if info is not None else ():
        for bound in ("gt", "ge", "le"):
            if getattr(item, bound, None) is not None:
                limits[bound] = getattr(item, bound)
    open_low = "gt" in limits
    return _range_text(limits.get("gt", limits.get("ge", 0.0)), open_low, limits.get("le"))
