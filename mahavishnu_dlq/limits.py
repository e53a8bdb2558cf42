"""Limits: what the queue takes, how much of it it keeps, and the checks at the door.

A dead-letter queue is where bad data ends up, so everything that enters is
checked here before a record is built (:mod:`mahavishnu_dlq.capture` calls it):

- ``task_id`` is a string of 1-512 characters, ``workflow`` at most 512; they, every
  repository name and every string of the task input and metadata (keys and
  values) must be valid Unicode: a lone surrogate
  (``b"\\xff".decode("utf-8", "surrogateescape")``, as file names and ``sys.argv``
  give) cannot be encoded, sent or stored;
- the task input and metadata are JSON objects whose keys are strings (``{1: "a",
  "1": "b"}`` would collide once encoded), nested at most ``max_payload_depth``
  levels (so whatever is stored can always be encoded again), and together with
  the repository names at most ``max_payload_bytes`` of UTF-8 JSON;
- error texts (``error``, ``last_error``, ``traceback`` and the attempts' errors)
  are never refused — they describe a failure that must be kept — but cut to
  ``max_error_bytes`` each, keeping the start and the end around a marker that
  says how much was cut; a lone surrogate in them is written as ``\\udcff``.

Refusals raise :class:`~mahavishnu_dlq.errors.InvalidPayloadError` or
:class:`~mahavishnu_dlq.errors.PayloadTooLargeError` naming the field; an id that
is not a string raises ``TypeError`` naming the argument. The fast paths (ASCII
text, a flat payload) cost a few C-level checks.
"""

from __future__ import annotations

import re
import reprlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from mahavishnu_dlq.errors import InvalidPayloadError

__all__ = [
    "MAX_ID_CHARS",
    "MAX_NAME_CHARS",
    "MAX_NUMBER_DIGITS",
    "MAX_SECONDS",
    "MAX_TYPE_CHARS",
    "Limits",
    "bound_text",
    "check_id",
    "check_name",
    "check_numbers",
    "check_tree",
    "clean_text",
    "cut_text",
    "find_invalid_text",
    "is_valid_unicode",
    "require_str",
    "shown",
]

#: Longest task id (characters).
#: The longest duration (seconds) a policy accepts or schedules: a century.
#: Longer delay hints are clamped to it, so a datetime can always hold the result.
MAX_SECONDS = 100 * 365 * 86400.0

MAX_ID_CHARS = 512
#: Longest workflow name (characters).
MAX_NAME_CHARS = 512
#: Longest error type kept (characters): a class name, cut like error texts beyond it.
MAX_TYPE_CHARS = 1024
#: Most digits of an integer in a payload: OpenSearch's JSON parser refuses longer
#: numbers, so every store refuses them at the door.
MAX_NUMBER_DIGITS = 1000

_LONG_DIGITS = re.compile(r"\d{%d}" % (MAX_NUMBER_DIGITS + 1))  # noqa: UP031 - a regex
_HUGE = 10**MAX_NUMBER_DIGITS

_CONTAINERS = (dict, list, tuple)
_short = reprlib.Repr()
_short.maxstring = 60
_short.maxother = 60


@dataclass(frozen=True, slots=True)
class Limits:
    """The bounds a :class:`~mahavishnu_dlq.queue.DeadLetterQueue` enforces.

    ``max_payload_bytes``: the largest UTF-8 JSON size of a task's input, metadata
    and repository names together. ``max_payload_depth``: how deeply they may nest
    (the top-level object is level 1). ``max_error_bytes``: each error text is cut
    to this many bytes.
    """

    max_payload_bytes: int = 1_048_576
    max_payload_depth: int = 100
    max_error_bytes: int = 65_536

    def __post_init__(self) -> None:
        for name, low, high in (
            ("max_payload_bytes", 1, 1 << 30),
            ("max_payload_depth", 1, 200),
            ("max_error_bytes", 1024, 1 << 26),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, got {type(value).__name__}")
            if not low <= value <= high:
                raise ValueError(f"{name} must be between {low} and {high}, got {value}")


def require_str(value: object, argument: str) -> str:
    """``value`` as a plain string; ``TypeError`` naming ``argument`` otherwise."""
    if value.__class__ is str:
        return value
    if isinstance(value, str):
        return str.__str__(value)
    raise TypeError(f"{argument} must be a string, got {type(value).__name__}")


def is_valid_unicode(text: str) -> bool:
    """True unless ``text`` holds a lone surrogate (which UTF-8 cannot encode)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def shown(value: object) -> str:
    """A short, safe ``repr`` of ``value`` for messages (a hostile ``__repr__`` cannot break it)."""
    try:
        return _short.repr(value)
    except Exception:  # noqa: BLE001 - a hostile __repr__ must not hide the real problem
        return f"<{type(value).__name__}>"


def check_id(task_id: object) -> str:
    """The task id, checked: ``TypeError`` when not a string, ``InvalidPayloadError``
    when empty, longer than :data:`MAX_ID_CHARS` or not valid Unicode."""
    text = require_str(task_id, "task_id")
    if not text or len(text) > MAX_ID_CHARS:
        raise InvalidPayloadError(
            clean_text(text), f"task_id must be a string of 1-{MAX_ID_CHARS} characters"
        )
    if not is_valid_unicode(text):
        raise InvalidPayloadError(
            clean_text(text),
            "task_id is not valid Unicode (it holds a lone surrogate, as undecodable bytes "
            "in file names and argv give); decode such bytes with errors='replace' or "
            "'backslashreplace' first",
        )
    return text


def check_name(task_id: str, field: str, value: object, max_chars: int = MAX_NAME_CHARS) -> str:
    """A short name (workflow, repository): a valid Unicode string of at most ``max_chars``."""
    if not isinstance(value, str):
        raise InvalidPayloadError(task_id, f"{field} must be a string, got {type(value).__name__}")
    if len(value) > max_chars:
        raise InvalidPayloadError(
            task_id, f"{field} is {len(value)} characters long; at most {max_chars} are allowed"
        )
    if not is_valid_unicode(value):
        raise InvalidPayloadError(
            task_id, f"{field} {clean_text(value)!r} is not valid Unicode (a lone surrogate)"
        )
    return value if value.__class__ is str else str.__str__(value)


def _where(field: str, path: tuple[object, ...]) -> str:
    text = field + "".join(f"[{shown(part)}]" for part in path)
    return text if len(text) <= 200 else text[:197] + "..."


def check_tree(task_id: str, field: str, value: Any, max_depth: int) -> bool:
    """Every key of ``value`` (a dict) and of what it nests is a string, and it nests at
    most ``max_depth`` levels; ``InvalidPayloadError`` naming where otherwise. Returns
    whether ``value`` holds any container at all (a flat dict's copy is a full copy).

    Only containers are visited (dicts, lists, tuples — what the JSON encoder
    walks); leaves are left to the encoder. A container that holds itself is
    reported as nested too deeply.
    """
    stack: list[tuple[Any, int, tuple[object, ...]]] = [(value, 1, ())]
    pop, push = stack.pop, stack.append
    nested = False
    while stack:
        node, depth, path = pop()
        if depth > max_depth:
            raise InvalidPayloadError(
                task_id,
                f"{field} is nested deeper than {max_depth} levels (or holds itself) at "
                f"{_where(field, path)}; flatten it or raise max_payload_depth",
            )
        if isinstance(node, dict):
            for key, item in node.items():
                if key.__class__ is not str and not isinstance(key, str):
                    raise InvalidPayloadError(
                        task_id,
                        f"{field} has a key that is not a string at {_where(field, path)}: "
                        f"{shown(key)} ({type(key).__name__}); JSON keys are strings, and "
                        "1 and '1' would collide",
                    )
                if isinstance(item, _CONTAINERS):
                    push((item, depth + 1, (*path, key)))
                    nested = True
        else:
            for index, item in enumerate(node):
                if isinstance(item, _CONTAINERS):
                    push((item, depth + 1, (*path, index)))
    return nested


def check_numbers(task_id: str, field: str, value: Any, text: str) -> None:
    """``InvalidPayloadError`` naming where ``value`` (whose JSON is ``text``) holds an
    integer of more than :data:`MAX_NUMBER_DIGITS` digits. Only a text with such a run
    of digits (in a number or a string) is walked, so this costs one scan at most."""
    if len(text) <= MAX_NUMBER_DIGITS or _LONG_DIGITS.search(text) is None:
        return
    stack: list[tuple[Any, tuple[object, ...]]] = [(value, ())]
    while stack:
        node, where = stack.pop()
        if isinstance(node, int) and not isinstance(node, bool) and abs(node) >= _HUGE:
            raise InvalidPayloadError(
                task_id,
                f"{field} holds an integer of more than {MAX_NUMBER_DIGITS} digits at "
                f"{_where(field, where)}; store it as a string",
            )
        if isinstance(node, dict):
            stack.extend((item, (*where, key)) for key, item in node.items())
        elif isinstance(node, (list, tuple)):
            stack.extend((item, (*where, index)) for index, item in enumerate(node))


def _strings(value: Any, path: tuple[object, ...]) -> Iterator[tuple[tuple[object, ...], str]]:
    """Every string in ``value`` (keys too) with where it is; depth already checked."""
    stack: list[tuple[Any, tuple[object, ...]]] = [(value, path)]
    while stack:
        node, where = stack.pop()
        if isinstance(node, str):
            yield where, node
        elif isinstance(node, dict):
            for key, item in node.items():
                if isinstance(key, str):
                    yield where, key
                stack.append((item, (*where, key)))
        elif isinstance(node, (list, tuple)):
            stack.extend((item, (*where, index)) for index, item in enumerate(node))


def find_invalid_text(task_id: str, field: str, value: Any) -> InvalidPayloadError | None:
    """The error naming the first string of ``value`` that is not valid Unicode, if any."""
    for path, text in _strings(value, ()):
        if not is_valid_unicode(text):
            return InvalidPayloadError(
                task_id,
                f"{field} holds a string that is not valid Unicode (a lone surrogate) at "
                f"{_where(field, path)}: {clean_text(text)[:60]!r}",
            )
    return None


def clean_text(text: str) -> str:
    """``text`` with every lone surrogate written out as ``\\udcxx`` (valid Unicode)."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


_MARKER = "\n[... {cut} bytes cut by mahavishnu-dlq (max_error_bytes {limit}) ...]\n"


def cut_text(text: str, limit: int) -> str:
    """``text`` (valid Unicode) cut to at most ``limit`` UTF-8 bytes: its start and its
    end kept around a marker saying how many bytes were cut. ``limit`` >= 1024."""
    if len(text) <= limit >> 2:  # at most 4 bytes a character: it fits
        return text
    data = text.encode("utf-8")
    size = len(data)
    if size <= limit:
        return text
    reserved = len(_MARKER.format(cut=size, limit=limit))  # the count has at most this many digits
    keep = max(0, limit - reserved)
    tail_bytes = keep // 2
    head = data[: keep - tail_bytes].decode("utf-8", "ignore")  # a cut character is dropped
    tail = data[size - tail_bytes :].decode("utf-8", "ignore")
    cut = size - len(head.encode("utf-8")) - len(tail.encode("utf-8"))
    return f"{head}{_MARKER.format(cut=cut, limit=limit)}{tail}"


def bound_text(text: str, limit: int) -> str:
    """An error text as stored: lone surrogates written out, then cut to ``limit`` bytes."""
    return cut_text(clean_text(text), limit)
