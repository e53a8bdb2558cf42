"""What a command-line value may be: durations, times, rates, choices, ids and texts.

Each parser returns the value or raises :class:`typer.BadParameter` naming the
option, which the CLI reports as one line with exit status 2 before anything is
opened. Values come from a shell, so each is bounded as well as parsed: a
duration is at most a century (:data:`~mahavishnu_dlq.policy.MAX_SECONDS`), a rate
between one an hour and a million a second, a task id 1-512 characters of valid
Unicode like every stored id, a job id 1-128 printable characters, a workflow
name at most 512 characters (1-512 printable ones where it names a circuit
breaker: :func:`parse_workflow`), a ``--reason`` at most :data:`MAX_REASON_CHARS` and
``--text``/``--fingerprint`` at most :data:`MAX_FILTER_CHARS`; a value quoted in
a message is cut (:func:`quoted`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta, timezone
from enum import Enum
from functools import partial
from typing import TypeVar

import typer

from mahavishnu_dlq.limits import MAX_ID_CHARS, MAX_NAME_CHARS, MAX_SECONDS, is_valid_unicode

__all__ = [
    "MAX_FILTER_CHARS",
    "MAX_JOB_ID_CHARS",
    "MAX_RATE",
    "MAX_REASON_CHARS",
    "MIN_RATE",
    "count_parser",
    "parse_choices",
    "parse_count",
    "parse_duration",
    "parse_job_id",
    "parse_moment",
    "parse_rate",
    "parse_task_id",
    "parse_text",
    "parse_workflow",
    "quoted",
]

E = TypeVar("E", bound=Enum)

#: Longest ``--text`` or ``--fingerprint`` (characters).
MAX_FILTER_CHARS = 1024
#: Longest job id (characters): what :class:`~mahavishnu_dlq.jobs.Job` allows.
MAX_JOB_ID_CHARS = 128
#: Longest ``--reason`` an operator gives for opening or closing a breaker (characters).
MAX_REASON_CHARS = 1024
#: The slowest and fastest ``--rate`` (tasks per second): one an hour, a million a second.
MIN_RATE, MAX_RATE = 1 / 3600, 1_000_000.0


def quoted(text: str, chars: int = 60) -> str:
    """``repr`` of ``text``, cut to about ``chars`` characters (for error messages)."""
    return repr(text) if len(text) <= chars else repr(text[:chars]) + f"… ({len(text)} chars)"


_UNITS = {
    "ms": 0.001,
    "s": 1,
    "sec": 1,
    "m": 60,
    "min": 60,
    "h": 3600,
    "d": 86400,
    "w": 604800,
}
_DURATION_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|sec|min|s|m|h|d|w)", re.IGNORECASE)
_DURATION_HELP = "a number and a unit (s, m, h, d, w), e.g. 90s, 15m, 12h, 30d or 1h30m"
_CENTURY = f"at most a century ({MAX_SECONDS / 86400:.0f}d)"


def _seconds(text: str) -> float | None:
    """The seconds a duration names (inf for a number of 400 digits); None if it is none."""
    seconds, position, stripped = 0.0, 0, text.strip()
    while position < len(stripped):
        match = _DURATION_PART.match(stripped, position)
        if match is None:
            break
        seconds += float(match.group(1)) * _UNITS[match.group(2).lower()]
        position = match.end()
    return seconds if stripped and position == len(stripped) else None


def parse_duration(text: str, *, option: str = "duration") -> timedelta:
    """``30d``, ``12h``, ``1h30m``, ``90s`` … as a timedelta of at most a century
    (:data:`~mahavishnu_dlq.policy.MAX_SECONDS`); BadParameter otherwise."""
    seconds = _seconds(text)
    if seconds is None:
        raise typer.BadParameter(
            f"{quoted(text)} is not a duration: use {_DURATION_HELP}", param_hint=option
        )
    if not seconds <= MAX_SECONDS:  # inf included
        raise typer.BadParameter(f"{quoted(text)} is too long: {_CENTURY}", param_hint=option)
    return timedelta(seconds=seconds)


def parse_moment(text: str, now: datetime, *, option: str) -> datetime:
    """An ISO 8601 date/time (UTC unless it names a zone) or a duration meaning "ago"."""
    stripped = text.strip()
    if stripped[:1].isdigit() and ("-" in stripped[:5] or "T" in stripped):
        try:
            moment = datetime.fromisoformat(stripped.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    if _seconds(stripped) is None:
        raise typer.BadParameter(
            f"{quoted(text)} is neither a time (ISO 8601, e.g. 2026-11-26 or "
            f"2026-11-26T14:30:00Z) nor an age ({_DURATION_HELP})",
            param_hint=option,
        )
    age = parse_duration(stripped, option=option)  # an age of at most a century
    try:
        return now - age
    except OverflowError:  # a clock near year 1
        raise typer.BadParameter(
            f"{quoted(text)} ago is before the year 1", param_hint=option
        ) from None


def parse_choices(
    values: Iterable[str] | None,
    enum: type[E],
    *,
    option: str,
    only: Sequence[E] | None = None,
    refused: str = "not allowed here",
) -> tuple[E, ...]:
    """Repeated and/or comma-separated enum values; BadParameter naming the allowed
    ones. ``only`` narrows them (a member outside it is ``refused``, in those words)."""
    allowed = ", ".join(str(m.value) for m in (enum if only is None else only))
    chosen: list[E] = []
    for value in values or ():
        for name in filter(None, (part.strip().lower() for part in value.split(","))):
            try:
                member = enum(name)
            except ValueError:
                raise typer.BadParameter(
                    f"unknown value {name!r}; allowed: {allowed}", param_hint=option
                ) from None
            if only is not None and member not in only:
                raise typer.BadParameter(
                    f"{name!r}: {refused}; allowed: {allowed}", param_hint=option
                )
            if member not in chosen:
                chosen.append(member)
    return tuple(chosen)


_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:/\s*(s|sec|m|min|h))?\s*$", re.IGNORECASE)


def parse_count(text: str | int, *, option: str, low: int = 1, high: int = 1000) -> int:
    """A whole number from ``low`` to ``high`` (``--limit``, ``--concurrency``);
    BadParameter, worded like the other options' errors, otherwise."""
    value = str(text).strip()
    if not re.fullmatch(r"[+-]?\d{1,30}", value.replace("_", "")):
        raise typer.BadParameter(
            f"{quoted(str(text))} is not a whole number: give one from {low} to {high:,}",
            param_hint=option,
        )
    count = int(value.replace("_", ""))
    if not low <= count <= high:
        raise typer.BadParameter(
            f"{quoted(str(text))} is out of range: give a number from {low} to {high:,}",
            param_hint=option,
        )
    return count


def count_parser(option: str, *, low: int = 1, high: int = 1000) -> Callable[[str], int]:
    """:func:`parse_count` for ``option``, as typer's ``parser=``."""
    return partial(parse_count, option=option, low=low, high=high)


def parse_rate(text: str, *, option: str = "--rate") -> float:
    """``10``, ``10/s``, ``600/min``, ``3600/h`` as tasks per second, between
    :data:`MIN_RATE` (one an hour) and :data:`MAX_RATE`; BadParameter otherwise."""
    match = _RATE.match(text)
    rate = 0.0
    if match is not None:
        rate = float(match.group(1)) / _UNITS[(match.group(2) or "s").lower()]
    if rate <= 0:
        raise typer.BadParameter(
            f"{quoted(text)} is not a rate: use a positive number per second, minute or hour,"
            " e.g. 10/s, 600/min",
            param_hint=option,
        )
    if not MIN_RATE <= rate <= MAX_RATE:  # inf (a number of 400 digits) refused too
        raise typer.BadParameter(
            f"{quoted(text)} is out of range: a rate is at least 1/h (a slower one would "
            f"wait for days between tasks) and at most {MAX_RATE:,.0f}/s",
            param_hint=option,
        )
    return rate


def parse_task_id(text: str, *, option: str = "TASK_ID") -> str:
    """A task id argument: 1-512 characters of valid Unicode, as every stored id is."""
    if not text or len(text) > MAX_ID_CHARS:
        size = "empty" if not text else f"{len(text)} characters long"
        raise typer.BadParameter(
            f"a task id is 1-{MAX_ID_CHARS} characters; this one is {size}", param_hint=option
        )
    if not is_valid_unicode(text):
        raise typer.BadParameter(
            f"{quoted(text)} is not valid Unicode (undecodable bytes in the argument), "
            "so no stored task has it",
            param_hint=option,
        )
    return text


def parse_job_id(text: str, *, option: str = "JOB_ID") -> str:
    """A job id argument: 1-128 printable characters (``jobs list`` shows them)."""
    if not text or len(text) > MAX_JOB_ID_CHARS:
        size = "empty" if not text else f"{len(text)} characters long"
        raise typer.BadParameter(
            f"a job id is 1-{MAX_JOB_ID_CHARS} characters; this one is {size}", param_hint=option
        )
    if not text.isprintable() or not is_valid_unicode(text):
        raise typer.BadParameter(
            f"{quoted(text)} is not a job id: job ids are printable characters "
            "(jobs list shows them)",
            param_hint=option,
        )
    return text


def parse_text(text: str, *, option: str, max_chars: int = MAX_FILTER_CHARS) -> str:
    """A text option (a workflow name, ``--text``): at most ``max_chars``, valid Unicode."""
    if len(text) > max_chars:
        raise typer.BadParameter(
            f"{quoted(text)} is too long: at most {max_chars} characters", param_hint=option
        )
    if not is_valid_unicode(text):
        raise typer.BadParameter(
            f"{quoted(text)} is not valid Unicode (undecodable bytes in the argument), "
            "so nothing stored matches it",
            param_hint=option,
        )
    return text


def parse_workflow(text: str, *, option: str = "WORKFLOW") -> str:
    """A workflow name argument (``breaker open|close``): 1-512 printable characters,
    as long as a stored workflow name may be. Taken as given: no spaces are stripped."""
    if not text or len(text) > MAX_NAME_CHARS:
        size = "empty" if not text else f"{len(text)} characters long"
        raise typer.BadParameter(
            f"a workflow name is 1-{MAX_NAME_CHARS} characters; this one is {size}",
            param_hint=option,
        )
    if not text.isprintable() or not is_valid_unicode(text):
        raise typer.BadParameter(
            f"{quoted(text)} is not a workflow name here: name a breaker with printable "
            "characters (breaker list shows them)",
            param_hint=option,
        )
    return text
