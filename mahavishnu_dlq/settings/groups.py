"""The settings groups: one pydantic model per nested block of the settings.

``processor``, ``policies`` (with its per-category and per-workflow overrides),
``classifier``, ``sqlite`` and ``failover`` (``opensearch`` is in :mod:`.opensearch`);
the alert rules are :class:`~mahavishnu_dlq.alerts.AlertRuleSettings`. Each field carries its range
and a description (the validation messages and the documented example file say
both). A group refuses unknown keys and never shows its input in pydantic's own
messages; :mod:`~mahavishnu_dlq.settings.problems` writes the messages users see.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from mahavishnu_dlq.downstream.breaker import BreakerBook, BreakerPolicy
from mahavishnu_dlq.downstream.rates import RateBook, parse_rate
from mahavishnu_dlq.models import ErrorCategory, RetryPolicy
from mahavishnu_dlq.policy import MAX_SECONDS, Jitter, PolicyOverride

from .problems import number

__all__ = [
    "BreakerOverrideSettings",
    "BreakerSettings",
    "ClassifierRuleSettings",
    "ClassifierSettings",
    "FailoverSettings",
    "JobSettings",
    "PolicyOverrideSettings",
    "PolicySettings",
    "ProcessorSettings",
    "SQLiteSettings",
    "WorkflowPolicySettings",
]

_DAY = 86400.0


class _Group(BaseModel):
    """A nested settings group: unknown keys are errors, inputs never shown in errors."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)


_TRIP_ON = Literal[
    "network", "transient", "resource", "permission", "validation", "permanent", "timeout"
]


_DEFAULT_TRIP_ON: tuple[_TRIP_ON, ...] = ("network", "transient", "resource", "timeout")


class BreakerOverrideSettings(_Group):
    """One workflow's differences from the default breaker."""

    enabled: bool | None = Field(default=None, description="this workflow's breaker on or off")
    failure_ratio: float | None = Field(default=None, gt=0, le=1, description="share that trips")
    window_seconds: float | None = Field(default=None, ge=0.1, le=_DAY, description="window")
    min_attempts: int | None = Field(default=None, ge=1, le=100_000, description="least outcomes")
    open_seconds: float | None = Field(default=None, ge=0.01, le=_DAY, description="first open")
    open_max_seconds: float | None = Field(default=None, ge=0.01, le=_DAY, description="cap")
    half_open_attempts: int | None = Field(default=None, ge=1, le=1000, description="probes")
    trip_on: list[_TRIP_ON] | None = Field(default=None, description="what trips it")


class BreakerSettings(_Group):
    """A circuit breaker per workflow in the retry processor, shared by every process."""

    enabled: bool = Field(default=True, description="breakers on (per-workflow overrides win)")
    failure_ratio: float = Field(
        default=0.5, gt=0, le=1, description="share of sick failures in the window that trips it"
    )
    window_seconds: float = Field(
        default=60, ge=0.1, le=_DAY, description="the sliding window of attempt outcomes"
    )
    min_attempts: int = Field(
        default=10, ge=1, le=100_000, description="outcomes the window needs before it can trip"
    )
    open_seconds: float = Field(
        default=30, ge=0.01, le=_DAY, description="how long it stays open (doubling per trip)"
    )
    open_max_seconds: float = Field(
        default=600, ge=0.01, le=_DAY, description="the longest it stays open"
    )
    half_open_attempts: int = Field(
        default=3, ge=1, le=1000, description="probes let through, across all processes"
    )
    trip_on: list[_TRIP_ON] = Field(
        default_factory=lambda: list(_DEFAULT_TRIP_ON),
        description="failure categories (and timeout) that say the downstream is unwell",
    )
    by_workflow: dict[str, BreakerOverrideSettings] = Field(
        default_factory=dict, description="per-workflow overrides"
    )

    @model_validator(mode="after")
    def _caps(self) -> BreakerSettings:
        groups: list[tuple[str, BreakerSettings | BreakerOverrideSettings]] = [
            ("", self),
            *self.by_workflow.items(),
        ]
        for name, group in groups:
            opened = group.open_seconds or self.open_seconds
            cap = group.open_max_seconds or self.open_max_seconds
            if cap < opened:
                where = f"by_workflow.{name}." if name else ""
                raise ValueError(f"{where}open_max_seconds must be >= open_seconds")
        return self

    def book(self) -> BreakerBook:
        """The :class:`BreakerBook` these settings describe."""
        default = self._policy(BreakerOverrideSettings())
        return BreakerBook(
            default=default,
            by_workflow={wf: self._policy(o) for wf, o in self.by_workflow.items()},
        )

    def _policy(self, override: BreakerOverrideSettings) -> BreakerPolicy:
        def pick(name: str) -> Any:
            value = getattr(override, name)
            return getattr(self, name) if value is None else value

        return BreakerPolicy(
            enabled=pick("enabled"),
            failure_ratio=pick("failure_ratio"),
            window_seconds=pick("window_seconds"),
            min_attempts=pick("min_attempts"),
            open_seconds=pick("open_seconds"),
            open_max_seconds=pick("open_max_seconds"),
            half_open_attempts=pick("half_open_attempts"),
            trip_on=frozenset(pick("trip_on")),
        )


class ProcessorSettings(_Group):
    """The background retry processor."""

    concurrency: int = Field(
        default=10, ge=1, le=1000, description="tasks retried at the same time"
    )
    attempt_timeout_seconds: float = Field(
        default=300, ge=0.1, le=_DAY, description="one retry attempt is cancelled after this"
    )
    lease_seconds: float = Field(
        default=600,
        ge=1,
        le=_DAY,
        description="how long a claimed task stays reserved for its worker (crash recovery)",
    )
    batch_size: int = Field(
        default=100, ge=1, le=10000, description="due tasks claimed per processor cycle"
    )
    prefetch: int = Field(
        default=4,
        ge=1,
        le=100,
        description=(
            "a running processor holds up to concurrency times prefetch claimed tasks (running "
            "and waiting for a slot); 1: it claims only for its free slots"
        ),
    )
    worker_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description="name of this worker in leases and attempts; host:pid:random when unset",
    )
    breaker: BreakerSettings = Field(
        default_factory=BreakerSettings, description="the per-workflow circuit breakers"
    )
    rate_limit: str | None = Field(
        default=None,
        description="tasks per second of every workflow at most (5/s, 300/min); null: none",
    )
    rate_limits: dict[str, str] = Field(
        default_factory=dict, description="per-workflow rates, e.g. {billing: 5/s}"
    )

    @field_validator("rate_limit")
    @classmethod
    def _a_rate(cls, value: str | None) -> str | None:
        if value is not None:
            parse_rate(value)
        return value

    @field_validator("rate_limits")
    @classmethod
    def _rates(cls, value: dict[str, str]) -> dict[str, str]:
        for workflow, rate in value.items():
            try:
                parse_rate(rate)
            except ValueError as exc:
                raise ValueError(f"{workflow}: {exc}") from None
        return value

    def rate_book(self) -> RateBook:
        """The :class:`RateBook` of ``rate_limit`` and ``rate_limits``."""
        return RateBook(
            default=None if self.rate_limit is None else parse_rate(self.rate_limit),
            by_workflow={wf: parse_rate(rate) for wf, rate in self.rate_limits.items()},
        )


class JobSettings(_Group):
    """Bulk jobs (replay, retry, archive, purge by filter) run by the retry processors."""

    page_size: int = Field(
        default=500,
        ge=1,
        le=10000,
        description="tasks a job reads and acts on per page; progress is recorded after each",
    )
    lease_seconds: float = Field(
        default=60,
        ge=1,
        le=_DAY,
        description="how long a job stays with its runner without news (crash takeover)",
    )
    poll_seconds: float = Field(
        default=2, ge=0.05, le=3600, description="how often a processor looks for new jobs"
    )


class PolicyOverrideSettings(_Group):
    """Partial retry policy: unset fields inherit from the less specific level."""

    policy: RetryPolicy | None = Field(default=None, description="retry policy")
    max_retries: int | None = Field(default=None, ge=0, le=10, description="automatic retries")
    deadline_seconds: float | None = Field(
        default=None,
        gt=0,
        le=MAX_SECONDS,
        description="give up this long after the first failure",
    )
    jitter: Jitter | None = Field(default=None, description="randomisation of the delay")

    def to_override(self) -> PolicyOverride:
        """The :class:`~mahavishnu_dlq.policy.PolicyOverride` these settings describe."""
        return PolicyOverride(
            policy=self.policy,
            max_retries=self.max_retries,
            deadline=self.deadline_seconds,
            jitter=self.jitter,
        )


class WorkflowPolicySettings(PolicyOverrideSettings):
    """Policy override of one workflow, optionally refined per error category."""

    categories: dict[ErrorCategory, PolicyOverrideSettings] = Field(
        default_factory=dict,
        description="overrides for this workflow's failures of one error category",
    )


class PolicySettings(_Group):
    """Retry policy parameters and their per-category / per-workflow overrides."""

    linear_step_seconds: float = Field(
        default=300, gt=0, le=_DAY, description="LINEAR: delay grows by this each retry"
    )
    exponential_base_seconds: float = Field(
        default=60, gt=0, le=_DAY, description="EXPONENTIAL: delay of the first retry"
    )
    exponential_cap_seconds: float = Field(
        default=3600, gt=0, le=7 * _DAY, description="the longest computed delay"
    )
    jitter: Jitter = Field(default=Jitter.NONE, description="none, full or equal")
    immediate_min_delay_seconds: float = Field(
        default=1,
        ge=0,
        le=3600,
        description="IMMEDIATE: the first retry is at once, later ones at least this late",
    )
    deadline_seconds: float | None = Field(
        default=None,
        gt=0,
        le=MAX_SECONDS,
        description="give up this long after the first failure (none: no deadline)",
    )
    category_policies: dict[ErrorCategory, RetryPolicy] = Field(
        default_factory=dict,
        description="retry policy per error category, over the built-in mapping",
    )
    by_category: dict[ErrorCategory, PolicyOverrideSettings] = Field(
        default_factory=dict, description="overrides per error category"
    )
    by_workflow: dict[str, WorkflowPolicySettings] = Field(
        default_factory=dict, description="overrides per workflow name (most specific wins)"
    )

    @model_validator(mode="after")
    def _cap_not_below_base(self) -> PolicySettings:
        if self.exponential_cap_seconds < self.exponential_base_seconds:
            raise ValueError(
                f"exponential_cap_seconds ({number(self.exponential_cap_seconds)}) must be "
                f">= exponential_base_seconds ({number(self.exponential_base_seconds)})"
            )
        return self

    @field_validator("by_workflow")
    @classmethod
    def _workflow_names(
        cls, value: dict[str, WorkflowPolicySettings]
    ) -> dict[str, WorkflowPolicySettings]:
        for name in value:
            if not name.strip():
                raise ValueError("workflow names in by_workflow must not be empty")
        return value


class ClassifierRuleSettings(_Group):
    """One explicit classification rule: exception type and/or message regex -> category."""

    category: ErrorCategory = Field(description="the category a matching failure gets")
    exception_type: str | None = Field(
        default=None,
        min_length=1,
        description="exception class name, plain (TimeoutError) or dotted (httpx.ReadTimeout)",
    )
    pattern: str | None = Field(
        default=None, min_length=1, description="regular expression searched in the message"
    )

    @field_validator("exception_type")
    @classmethod
    def _dotted_name(cls, value: str | None) -> str | None:
        if value is not None and not all(part.isidentifier() for part in value.split(".")):
            raise ValueError(f"exception_type {value!r} is not a (dotted) class name")
        return value

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(
                    f"pattern {value!r} is not a valid regular expression: {exc}"
                ) from exc
        return value

    @model_validator(mode="after")
    def _something_to_match(self) -> ClassifierRuleSettings:
        if self.exception_type is None and self.pattern is None:
            raise ValueError("a classifier rule needs an exception_type, a pattern or both")
        return self


class ClassifierSettings(_Group):
    """How failures are sorted into error categories."""

    use_keywords: bool = Field(
        default=True, description="fall back to message keywords (timeout, rate limit …)"
    )
    rules: list[ClassifierRuleSettings] = Field(
        default_factory=list, description="explicit rules, checked first, in order"
    )


def state_dir() -> Path:
    """Where mahavishnu-dlq keeps its files for this user: ``$XDG_STATE_HOME/mahavishnu-dlq``,
    else ``~/.local/state/mahavishnu-dlq`` (the XDG base directory rule)."""
    base = os.environ.get("XDG_STATE_HOME") or ""
    root = Path(base) if os.path.isabs(base) else Path.home() / ".local" / "state"
    return root / "mahavishnu-dlq"


def a_path(value: str | None) -> str | None:
    """A path setting: no NUL, ``~`` expanded; None stays None (the default path)."""
    if value is None:
        return None
    if "\x00" in value:
        raise ValueError("path must not contain a NUL character")
    return str(Path(value).expanduser())


class SQLiteSettings(_Group):
    """The SQLite store (``store: sqlite``): one durable file shared by a host's processes."""

    path: str | None = Field(
        default=None,
        min_length=1,
        max_length=4096,
        description="the database file, created with its directory; null: "
        "$XDG_STATE_HOME/mahavishnu-dlq/dlq.sqlite3 (~/.local/state/... without it)",
    )
    busy_timeout_seconds: float = Field(
        default=30,
        ge=0.1,
        le=600,
        description="how long a write waits for another process to release the file",
    )

    @field_validator("path")
    @classmethod
    def _a_file_path(cls, value: str | None) -> str | None:
        return a_path(value)

    def file(self) -> Path:
        """The database file: ``path``, else the per-user default (read when asked)."""
        return Path(self.path) if self.path is not None else state_dir() / "dlq.sqlite3"


class FailoverSettings(_Group):
    """The failover store: OpenSearch first, a fallback while it is down."""

    fallback: Literal["sqlite", "memory", "none"] = Field(
        default="sqlite",
        description="where writes go while OpenSearch is down: sqlite (a journal file that "
        "outlives the process), memory (lost if the process dies), none (refused)",
    )
    path: str | None = Field(
        default=None,
        min_length=1,
        max_length=4096,
        description="the directory of the sqlite journals, created when needed; null: "
        "$XDG_STATE_HOME/mahavishnu-dlq/failover/<opensearch.index>",
    )
    failure_threshold: int = Field(
        default=3, ge=1, le=100, description="consecutive failures that open the circuit"
    )
    probe_interval_seconds: float = Field(
        default=5, ge=0.1, le=3600, description="how often recovery is probed"
    )
    store_timeout_seconds: float = Field(
        default=5, ge=0.05, le=300, description="an OpenSearch call slower than this fails over"
    )

    @field_validator("path")
    @classmethod
    def _a_directory_path(cls, value: str | None) -> str | None:
        return a_path(value)

    def directory(self, index: str) -> Path:
        """The journals' directory for ``index``: ``path``, else the per-user default."""
        return Path(self.path) if self.path is not None else state_dir() / "failover" / index
