"""The ``retention`` settings group: what ages out of the queue on its own.

Each rule is a number of days, ``0`` turning that rule off; ``enabled: false``
turns them all off. The retry processors run the rules as bulk jobs, one run per
``interval_seconds`` across every process sharing the store
(:mod:`mahavishnu_dlq.retention`).
"""

from __future__ import annotations

from pydantic import Field, field_validator

from mahavishnu_dlq.downstream.rates import parse_rate
from mahavishnu_dlq.retention import Retention

from .groups import _Group

__all__ = ["RetentionSettings"]

_CENTURY_DAYS = 36500


class RetentionSettings(_Group):
    """Retention rules, run by the retry processors as bulk jobs."""

    enabled: bool = Field(default=True, description="retention on (each rule below can be off)")
    archive_exhausted_after_days: int = Field(
        default=30,
        ge=0,
        le=_CENTURY_DAYS,
        description="archive exhausted tasks last updated this many days ago; 0: never",
    )
    purge_completed_after_days: int = Field(
        default=7,
        ge=0,
        le=_CENTURY_DAYS,
        description="delete completed tasks last updated this many days ago; 0: never",
    )
    purge_archived_after_days: int = Field(
        default=90,
        ge=0,
        le=_CENTURY_DAYS,
        description="delete archived tasks last updated this many days ago; 0: never",
    )
    interval_seconds: float = Field(
        default=3600,
        ge=60,
        le=86400,
        description="how often the rules run, one run across every process",
    )
    rate: str | None = Field(
        default=None,
        description="tasks per second of each retention job at most (500/s); null: no limit",
    )

    @field_validator("rate")
    @classmethod
    def _a_rate(cls, value: str | None) -> str | None:
        if value is not None:
            parse_rate(value)
        return value

    def policy(self) -> Retention:
        """The :class:`~mahavishnu_dlq.retention.Retention` these settings describe."""
        return Retention.in_days(
            archive_exhausted=self.archive_exhausted_after_days,
            purge_completed=self.purge_completed_after_days,
            purge_archived=self.purge_archived_after_days,
            interval_seconds=self.interval_seconds,
            rate=None if self.rate is None else parse_rate(self.rate),
            enabled=self.enabled,
        )
