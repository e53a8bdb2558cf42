"""How the durable stores keep a control record, and what they do with one they cannot read.

The SQLite and OpenSearch control stores (:mod:`.sqlite_controls`,
:mod:`.opensearch_controls`) keep a control record — a JSON object, checked by
:func:`~mahavishnu_dlq.storage.memory_jobs.check_control` like the memory store does —
as its JSON under its key. Shared here:

- :func:`control_key`: a key is a string of valid Unicode (a lone surrogate cannot
  be stored in either backend: refused with ``ValueError`` before anything is sent);
- :func:`read_control`: a stored record that is not a JSON object (damaged, written by
  hand) is skipped by a listing (logged once per process, ``dlq.unreadable``) and
  refused by a read or a mutation of that very key with :class:`UnreadableControlError`
  carrying the stored form, so that nobody overwrites what they could not read;
- :class:`ControlBusyError`: the compare-and-set lost every race to other writers.
"""

from __future__ import annotations

import json
from typing import Any

from mahavishnu_dlq.errors import DLQError, UnreadableRecordError
from mahavishnu_dlq.limits import is_valid_unicode, require_str
from mahavishnu_dlq.storage.base import report_unreadable

__all__ = [
    "ControlBusyError",
    "UnreadableControlError",
    "control_json",
    "control_key",
    "decode_control",
    "read_control",
]


class UnreadableControlError(UnreadableRecordError):
    """A control record is stored under this key but cannot be read (an
    :class:`~mahavishnu_dlq.errors.UnreadableRecordError`; ``task_id`` holds the key)."""

    def __init__(self, key: str, reason: str, source: str | None = None) -> None:
        super().__init__(key, reason, source)
        self.key = key
        self.args = (f"control record {key!r} is stored but cannot be read: {reason}",)

    def __str__(self) -> str:
        return str(self.args[0])


class ControlBusyError(DLQError):
    """Other writers changed the control record every time this one tried to."""

    def __init__(self, key: str, attempts: int) -> None:
        self.key = key
        super().__init__(
            f"control record {key!r}: {attempts} concurrent updates won the race; try again"
        )


def control_key(key: object, argument: str = "key") -> str:
    """``key`` as a plain string; ``TypeError`` when it is none, ``ValueError`` when it
    holds a lone surrogate (no backend can store it). ``argument`` names it."""
    key = require_str(key, argument)
    if not is_valid_unicode(key):
        raise ValueError(f"control {argument} {key!r} is not valid Unicode (a lone surrogate)")
    return key


def control_json(record: dict[str, Any]) -> str:
    """The stored text of a checked record (compact, Unicode kept as it is)."""
    return json.dumps(record, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def decode_control(source: Any) -> dict[str, Any]:
    """The record in ``source`` (its JSON text, or the decoded value); ``ValueError`` or
    ``TypeError`` when it is not a JSON object."""
    if isinstance(source, str):
        try:
            source = json.loads(source)
        except RecursionError as exc:
            raise ValueError("the stored text is not JSON: nested too deeply") from exc
        except ValueError as exc:  # JSONDecodeError
            raise ValueError(f"the stored text is not JSON: {exc}") from exc
    if not isinstance(source, dict):
        raise TypeError(f"the stored record is a {type(source).__name__}, not an object")
    return source


def read_control(
    where: str, key: str, source: Any, *, strict: bool, misplaced: str | None = None
) -> dict[str, Any] | None:
    """:func:`decode_control`, for a store at ``where`` (as messages name it). A record
    that cannot be decoded — or is ``misplaced``: stored where its key does not belong,
    as that text says — is reported once (``dlq.unreadable``), then: ``strict`` (a read
    of that key) raises :class:`UnreadableControlError`; otherwise (a listing) None."""
    try:
        if misplaced is not None:
            raise ValueError(misplaced)
        return decode_control(source)
    except (ValueError, TypeError) as exc:
        why = f"{type(exc).__name__}: {exc}"
        report_unreadable(f"{where} (controls)", key, why)
        if not strict:
            return None
        raw = source if isinstance(source, str) else _shown(source)
        raise UnreadableControlError(key, why, raw) from exc


def _shown(source: Any) -> str:
    try:
        return json.dumps(source, ensure_ascii=False, sort_keys=True)
    except (TypeError, ValueError):
        return repr(source)
