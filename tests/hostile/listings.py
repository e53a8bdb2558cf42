"""Hostile listings: records to store (:class:`Seed`), ``list_tasks`` arguments that
select them by parts of their own fields in other cases, or by any text, and arguments
each filter refuses; the oracle is ``TaskFilter.matches`` in listing order, and a
refusal is a one-line ``TypeError`` / ``ValueError`` naming the argument.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Final

from hypothesis import strategies as st

from mahavishnu_dlq import DeadLetterQueue, DeadLetterStatus, ErrorCategory, FailedTask
from mahavishnu_dlq.clock import to_micros
from mahavishnu_dlq.operations import make_filter, statuses
from tests.hostile.checks import T0, assert_exact, one_line, outcome
from tests.hostile.text import (
    SURROGATES,
    holding,
    hostile_text,
    nonempty_text,
    sized_text,
    valid_text,
)


@dataclass(frozen=True)
class Seed:
    """One stored record for the listing properties."""

    task_id: str
    workflow: str
    error: str
    category: ErrorCategory | None
    max_retries: int
    later: int  # seconds after the previous record


def seeds(
    text: st.SearchStrategy[str],
    ids: st.SearchStrategy[str],
    long: st.SearchStrategy[str],
) -> st.SearchStrategy[list[Seed]]:
    """Records to list: ids, workflows and error texts (``long`` ones too)."""
    seed = st.builds(
        Seed,
        ids,
        text,
        st.one_of(text, long),
        st.none() | st.sampled_from(list(ErrorCategory)),
        st.integers(0, 2),
        st.integers(0, 2),
    )
    return st.lists(seed, min_size=1, max_size=6, unique_by=lambda s: s.task_id)


async def store_seeds(dlq: DeadLetterQueue, planted: list[Seed]) -> list[FailedTask]:
    stored = []
    for seed in planted:
        dlq.clock.advance(seed.later)  # type: ignore[attr-defined]
        stored.append(
            await dlq.enqueue(
                seed.task_id,
                {"seed": seed.task_id},
                error=seed.error,
                workflow=seed.workflow,
                error_category=seed.category,
                max_retries=seed.max_retries,
            )
        )
    return stored


@dataclass(frozen=True)
class Ref:
    """A filter value taken from a stored record once the records exist: a field, or
    (for ``text``) part of one in another case."""

    index: int
    field: str
    start: int = 0
    length: int = 1 << 30
    case: int = 0

    def resolve(self, records: list[FailedTask]) -> str:
        value: str = getattr(records[self.index % len(records)], self.field) or ""
        start = self.start % (len(value) or 1)
        part = value[start : start + self.length]
        return [part, part.upper(), part.lower(), part.swapcase(), part.casefold()][self.case % 5]


def resolve(value: object, records: list[FailedTask]) -> Any:
    """``value`` with every :class:`Ref` in it replaced."""
    if isinstance(value, Ref):
        return value.resolve(records)
    if isinstance(value, list):
        return [resolve(item, records) for item in value]
    return value


_TEXT_FIELDS: Final = (
    *("task_id", "workflow", "error", "error_type", "last_error", "error_fingerprint"),
)
_refs = st.integers(0, 5)


def needles(text: st.SearchStrategy[str], long: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    """A ``text`` filter: part of a stored field in another case, or any text (long
    ones too: past the longest regular expression a node takes)."""
    part = st.builds(
        Ref,
        _refs,
        st.sampled_from(_TEXT_FIELDS),
        st.integers(0, 1200),
        st.integers(1, 1200),
        st.integers(0, 4),
    )
    return st.one_of(part, text, long)


@dataclass
class Listing:
    """The arguments of one ``list_tasks`` call (with :class:`Ref` placeholders), and
    which of them are bad."""

    arguments: dict[str, Any]
    bad: frozenset[str] = frozenset()

    def resolved(self, records: list[FailedTask]) -> dict[str, Any]:
        return {name: resolve(value, records) for name, value in self.arguments.items()}


_TIMES = st.integers(-10, 20).map(lambda seconds: T0 + timedelta(seconds=seconds))


def good_arguments(
    text: st.SearchStrategy[str], long: st.SearchStrategy[str]
) -> dict[str, st.SearchStrategy[Any]]:
    workflows = st.builds(Ref, _refs, st.just("workflow"))
    return {
        "status": st.sampled_from(list(DeadLetterStatus))
        | st.lists(st.sampled_from([s.value for s in DeadLetterStatus]), max_size=3),
        "limit": st.integers(1, 7),
        "error_category": st.sampled_from([c.value for c in ErrorCategory])
        | st.lists(st.sampled_from(list(ErrorCategory)), max_size=3),
        "workflow": workflows | text | st.lists(workflows | text, max_size=2),
        "since": _TIMES,
        "until": _TIMES,
        "text": needles(text, long),
        "fingerprint": st.builds(Ref, _refs, st.just("error_fingerprint")) | text,
    }


def _unknown(values: Iterable[str]) -> st.SearchStrategy[str]:
    known = frozenset(values)
    return nonempty_text.filter(lambda text: text not in known)


#: Not a list of values: refused whatever the field.
_NOT_A_LIST = st.sampled_from([b"pending", {"pending": 1}, 5])
#: Not an aware datetime: naive, or what reads as a time elsewhere (ISO text, a Unix
#: timestamp, a date), or not a time at all.
_NOT_A_TIME = st.one_of(
    st.just(datetime(2026, 1, 1)),  # noqa: DTZ001 - naive on purpose
    _TIMES.map(datetime.isoformat),
    st.integers(0, 2**33),
    st.floats(0, 2e9) | st.just(math.nan),
    st.builds(date, st.integers(1, 9999), st.integers(1, 12), st.integers(1, 28)),
    valid_text.map(lambda text: f"not a date: {text}"),
    holding(SURROGATES),
    st.just(10**30),
)
#: Not a string: refused by ``text`` and ``fingerprint``, bytes too.
_NOT_A_STRING = st.one_of(
    st.integers(), st.binary(max_size=3), st.lists(valid_text, min_size=1, max_size=2)
)

#: Values each argument of ``list_tasks`` refuses (``TypeError`` / ``ValueError``).
BAD_ARGUMENTS: Final[dict[str, st.SearchStrategy[Any]]] = {
    "status": st.one_of(
        st.integers(),
        st.just([None]),
        _unknown(status.value for status in DeadLetterStatus),
        st.builds(object),
        _NOT_A_LIST,
    ),
    "limit": st.sampled_from([0, -1, 10001, True, "3", 2.5, None]),
    "error_category": st.one_of(
        st.integers(),
        _unknown(category.value for category in ErrorCategory),
        st.just([5]),
        _NOT_A_LIST,
    ),
    "workflow": st.one_of(st.integers(), st.just([5]), holding(SURROGATES), _NOT_A_LIST),
    "since": _NOT_A_TIME,
    "until": _NOT_A_TIME,
    "text": _NOT_A_STRING | holding(SURROGATES),
    "fingerprint": _NOT_A_STRING | holding(SURROGATES),
    "cursor": st.one_of(
        hostile_text, st.integers(), sized_text(10_001, st.just("A")), st.just("!!")
    ),
}
#: The arguments a ``TaskFilter`` reads: a bad one is always a ``ValueError``.
FILTER_FIELDS: Final = frozenset(
    {"error_category", "workflow", "since", "until", "text", "fingerprint"}
)


@st.composite
def listings(
    draw: st.DrawFn,
    text: st.SearchStrategy[str],
    long: st.SearchStrategy[str],
    hostile: bool = True,
) -> Listing:
    """Arguments for ``list_tasks``: half of the time a ``text`` filter, and up to two
    other good ones; when ``hostile``, one time in three one or two of them bad."""
    good = good_arguments(text, long)
    others = sorted(name for name in good if name != "text")
    chosen = set(draw(st.lists(st.sampled_from(others), max_size=2, unique=True)))
    if draw(st.booleans()):
        chosen.add("text")
    arguments = {name: draw(good[name]) for name in sorted(chosen)}
    arguments = {name: value for name, value in arguments.items() if value is not None}
    bad: frozenset[str] = frozenset()
    if hostile and draw(st.sampled_from([False, False, True])):
        names = st.sampled_from(sorted(BAD_ARGUMENTS))
        bad = frozenset(draw(st.lists(names, min_size=1, max_size=2)))
        arguments.update({name: draw(BAD_ARGUMENTS[name]) for name in sorted(bad)})
    return Listing(arguments, bad)


def expected_listing(planted: list[FailedTask], arguments: dict[str, Any]) -> list[str]:
    """The ids ``list_tasks(**arguments)`` must return, all pages, in listing order."""
    selection = {key: value for key, value in arguments.items() if key not in ("limit", "cursor")}
    selection["status"] = statuses(selection.get("status"))
    flt = make_filter(**selection)
    chosen = [record for record in planted if flt.matches(record)]
    chosen.sort(key=lambda record: (-to_micros(record.failed_at), record.task_id))
    return [record.task_id for record in chosen]


async def list_all(dlq: DeadLetterQueue, arguments: dict[str, Any]) -> list[FailedTask]:
    """Every page of ``list_tasks(**arguments)``, following the cursors."""
    found: list[FailedTask] = []
    cursor = arguments.get("cursor")
    limit = arguments.get("limit", 100)
    for _ in range(100):
        page = await dlq.list_tasks(**{**arguments, "cursor": cursor})
        assert len(page) <= limit
        found.extend(page)
        if page.cursor is None:
            return found
        assert len(page) == limit
        cursor = page.cursor
    raise AssertionError("the cursors never ended")


async def check_listing(
    dlq: DeadLetterQueue, planted: list[FailedTask], listing: Listing
) -> list[str] | None:
    """``list_tasks`` refuses bad arguments with ValueError/TypeError (always ValueError
    for the filter's own fields), one line naming one of them; otherwise its pages hold
    exactly what ``TaskFilter.matches`` selects, in order. Returns the ids found (None
    when refused)."""
    arguments = listing.resolved(planted)
    found = await outcome(list_all(dlq, arguments))
    if isinstance(found, Exception):
        refusal = f"{type(found).__name__}: {found!s:.300}"
        assert isinstance(found, (ValueError, TypeError)), refusal
        assert listing.bad, f"refused good arguments: {refusal}"
        if listing.bad <= FILTER_FIELDS:
            assert type(found) is ValueError, refusal
        message = one_line(found)
        named = [name for name in listing.bad if re.search(rf"\b{name}\b", message)]
        assert named, (sorted(listing.bad), message[:300])
        return None
    assert not listing.bad, f"accepted bad arguments: {sorted(listing.bad)}"
    expected = expected_listing(planted, arguments)
    assert [record.task_id for record in found] == expected
    by_id = {record.task_id: record for record in planted}
    for record in found:
        assert_exact(by_id[record.task_id], record)
    return expected
