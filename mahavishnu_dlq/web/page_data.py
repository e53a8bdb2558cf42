"""What the pages read from requests and show of records: filters, flashes, rows.

:class:`FilterForm` is the task filter of the pages — the CLI's ``--status``,
``--category``, ``--workflow``, ``--since``, ``--until``, ``--text`` and
``--fingerprint`` as query or form fields — kept as typed text (so a link or a
hidden field carries it on unchanged) and turned into a
:class:`~mahavishnu_dlq.models.TaskFilter` with one message per bad field. Times
are ISO 8601 (UTC unless they name a zone) or an age back from now (``2h``,
``7d``, ``1h30m``). The rest shapes records for the templates: a job's progress,
a task's attempts, a flash message chosen by a code (never text from the URL).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar

from mahavishnu_dlq.jobs.model import Job, JobKind
from mahavishnu_dlq.limits import MAX_NAME_CHARS, is_valid_unicode
from mahavishnu_dlq.models import (
    Attempt,
    DeadLetterStatus,
    ErrorCategory,
    FailedTask,
    TaskFilter,
)
from mahavishnu_dlq.operations import make_filter

__all__ = [
    "PAGE_SIZES",
    "AttemptRow",
    "FilterForm",
    "JobView",
    "attempt_rows",
    "flash_message",
    "parse_age",
    "parse_moment",
    "parse_rate",
]

#: Rows per page the task list offers (the first is the default).
PAGE_SIZES = (50, 25, 100, 200)
_TEXT_CHARS = 1000
_MAX_WORKFLOWS = 100
#: tasks per second: one an hour at least, as many as the API takes at most
MIN_RATE, MAX_RATE = 1 / 3600, 100_000.0
_MAX_AGE = timedelta(days=36_500)

_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}
_AGE_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(sec|min|s|m|h|d|w)", re.IGNORECASE)


def parse_age(text: str) -> timedelta | None:
    """``90s``, ``15m``, ``12h``, ``7d``, ``2w`` or ``1h30m`` as a duration; None if not one."""
    stripped, seconds, position = text.strip(), 0.0, 0
    while position < len(stripped):
        match = _AGE_PART.match(stripped, position)
        if match is None:
            return None
        seconds += float(match.group(1)) * _UNITS[match.group(2).lower()]
        position = match.end()
    if not stripped or not math.isfinite(seconds) or seconds > _MAX_AGE.total_seconds():
        return None
    return timedelta(seconds=seconds)


def parse_moment(text: str, now: datetime) -> datetime:
    """An ISO 8601 time (UTC unless it names a zone) or an age meaning "that long ago";
    ``ValueError`` with a message for people otherwise."""
    stripped = text.strip()
    age = parse_age(stripped)
    if age is not None:
        return now - age
    try:
        moment = datetime.fromisoformat(stripped.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(
            "not a time: use an ISO time (2026-01-31 or 2026-01-31T14:30Z) or an age (2h, 7d)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def parse_rate(text: str) -> float | None:
    """Tasks per second from a form field (empty: no limit); ``ValueError`` otherwise."""
    stripped = text.strip()
    if not stripped:
        return None
    try:
        rate = float(stripped)
    except ValueError:
        raise ValueError("the rate is a number of tasks per second, e.g. 5 or 0.5") from None
    if not (math.isfinite(rate) and MIN_RATE <= rate <= MAX_RATE):
        raise ValueError(f"the rate must be from {MIN_RATE:.5f} (one an hour) and {MAX_RATE:,.0f}")
    return rate


def _text(value: str, name: str, limit: int = _TEXT_CHARS) -> str:
    if len(value) > limit:
        raise ValueError(f"at most {limit} characters")
    if not is_valid_unicode(value):
        raise ValueError(f"{name} is not valid Unicode")
    return value


@dataclass(frozen=True)
class FilterForm:
    """The task filter of a page, as typed (query string or form fields)."""

    status: tuple[str, ...] = ()
    category: tuple[str, ...] = ()
    workflow: str = ""
    since: str = ""
    until: str = ""
    text: str = ""
    fingerprint: str = ""
    #: field -> what is wrong with it (filled by :meth:`to_filter`)
    errors: dict[str, str] = field(default_factory=dict, compare=False)

    @classmethod
    def of(cls, fields: Mapping[str, Sequence[str]]) -> FilterForm:
        """From query parameters or form fields (``name -> values``)."""

        def one(name: str) -> str:
            values = fields.get(name) or [""]
            return values[0].strip()

        def many(name: str) -> tuple[str, ...]:
            return tuple(dict.fromkeys(v.strip() for v in fields.get(name, ()) if v.strip()))

        return cls(
            status=many("status"),
            category=many("category"),
            workflow=one("workflow"),
            since=one("since"),
            until=one("until"),
            text=one("text"),
            fingerprint=one("fingerprint"),
        )

    @classmethod
    def of_filter(cls, flt: TaskFilter) -> FilterForm:
        """A stored filter (a job's) as a form, times in ISO 8601."""
        return cls(
            status=tuple(s.value for s in flt.status or ()),
            category=tuple(c.value for c in flt.error_category or ()),
            workflow=", ".join(flt.workflow or ()),
            since="" if flt.since is None else flt.since.isoformat(),
            until="" if flt.until is None else flt.until.isoformat(),
            text=flt.text or "",
            fingerprint=flt.fingerprint or "",
        )

    @property
    def empty(self) -> bool:
        """No field narrows the selection."""
        return not self.items()

    def items(self) -> list[tuple[str, str]]:
        """The fields as query pairs (repeated names for several values)."""
        pairs = [("status", s) for s in self.status] + [("category", c) for c in self.category]
        for name in ("workflow", "since", "until", "text", "fingerprint"):
            value: str = getattr(self, name)
            if value:
                pairs.append((name, value))
        return pairs

    def workflows(self) -> tuple[str, ...] | None:
        """The comma-separated workflow names, in order, without repeats."""
        names = [name.strip() for name in self.workflow.split(",") if name.strip()]
        return tuple(dict.fromkeys(names)) or None

    def to_filter(self, now: datetime) -> TaskFilter | None:
        """The filter; None (and :attr:`errors` filled, one message per field) when a
        field is wrong."""
        errors = self.errors
        errors.clear()
        values: dict[str, Any] = {
            "status": _choices(self.status, DeadLetterStatus, "status", errors),
            "error_category": _choices(self.category, ErrorCategory, "category", errors),
        }
        try:
            values["workflow"] = _workflows(self.workflows())
        except ValueError as exc:
            errors["workflow"] = str(exc)
        for name in ("since", "until"):
            text: str = getattr(self, name)
            if text:
                try:
                    values[name] = parse_moment(text, now)
                except (ValueError, OverflowError) as exc:
                    errors[name] = str(exc) if isinstance(exc, ValueError) else "out of range"
        for name in ("text", "fingerprint"):
            text = getattr(self, name)
            if text:
                try:
                    values[name] = _text(text, name)
                except ValueError as exc:
                    errors[name] = str(exc)
        if errors:
            return None
        try:
            return make_filter(**values)
        except ValueError as exc:
            errors["filter"] = str(exc)
            return None


E = TypeVar("E", DeadLetterStatus, ErrorCategory)


def _choices(
    chosen: tuple[str, ...], enum: type[E], name: str, errors: dict[str, str]
) -> tuple[E, ...] | None:
    known = [value for value in chosen if value in enum._value2member_map_]
    if len(known) != len(chosen):
        errors[name] = f"unknown {name}; allowed: " + ", ".join(e.value for e in enum)
    return tuple(enum(value) for value in known) or None


def _workflows(names: tuple[str, ...] | None) -> tuple[str, ...] | None:
    if names is not None:
        if len(names) > _MAX_WORKFLOWS:
            raise ValueError(f"at most {_MAX_WORKFLOWS} workflows")
        for name in names:
            _text(name, "a workflow name", MAX_NAME_CHARS)
    return names


# -- records as pages show them ---------------------------------------------------------


@dataclass(frozen=True)
class AttemptRow:
    """One attempt of a task's timeline."""

    attempt: Attempt
    seconds: float | None


def attempt_rows(task: FailedTask) -> list[AttemptRow]:
    """The task's attempts, newest first, with how long each took."""
    rows = []
    for attempt in sorted(task.attempts, key=lambda a: (a.number, a.started_at), reverse=True):
        seconds = None
        if attempt.finished_at is not None:
            seconds = max(0.0, (attempt.finished_at - attempt.started_at).total_seconds())
        rows.append(AttemptRow(attempt, seconds))
    return rows


@dataclass(frozen=True)
class JobView:
    """A job with what its page shows: progress and the selection as a form."""

    job: Job
    #: processed / matched, None while nothing matched (an empty job is done at once)
    fraction: float | None
    selection: FilterForm

    @classmethod
    def of(cls, job: Job) -> JobView:
        """The view of ``job``."""
        fraction = None if job.matched == 0 else min(1.0, job.processed / job.matched)
        return cls(job, fraction, FilterForm.of_filter(job.filter))


#: What each kind of job does, said for its preview and its page.
KIND_VERBS = {
    JobKind.REPLAY: "Replay (make due now; the retry processors retry them)",
    JobKind.RETRY: "Retry now, one by one, through their handlers",
    JobKind.ARCHIVE: "Archive (set aside for audit)",
    JobKind.PURGE: "Purge (delete the records for good)",
}

_FLASHES = {
    "signed-in": "Signed in.",
    "retry-succeeded": "Retried: the handler succeeded; the task is completed.",
    "retry-dispatched": "Sent to its engine: the task stays retrying until its worker "
    "reports how the retry ended.",
    "retry-failed": "Retried: the handler failed again; see the attempts below.",
    "retry-refused": "Not retried: the task is finished (completed or archived).",
    "retry-no-handler": "Not retried: this process has no handler for the task's workflow "
    "(register one, or let a retry processor that has it take the task).",
    "archived": "Archived.",
    "started": "Job started.",
    "paused": "Paused: the job stops at its next page boundary.",
    "resumed": "Resumed.",
    "cancelled": "Cancelled.",
}


def flash_message(code: str | None) -> str | None:
    """The message of a ``?done=`` code (unknown codes show nothing)."""
    return None if code is None else _FLASHES.get(code)
