"""Hostile exceptions: classes whose ``str``, ``repr``, attributes, notes, headers,
module or name refuse or mislead, exception groups of them, chains that loop — each
described by an :class:`ExcSpec` that builds a fresh one — and the oracles saying what
the queue keeps of one: its text, its type's name, its traceback, its delay hint.
"""

from __future__ import annotations

import builtins
import math
from collections.abc import Iterator, Mapping
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, Final

from hypothesis import strategies as st

from tests.hostile.checks import assert_bounded
from tests.hostile.text import (
    SURROGATES,
    Unprintable,
    any_chars,
    hostile_text,
    is_valid,
    long_text,
    written_out,
)


class PlainError(Exception):
    """An ordinary exception."""


class StrRaisesError(Exception):
    def __str__(self) -> str:
        raise RuntimeError("StrRaisesError.__str__")


class ReprRaisesError(Exception):
    def __repr__(self) -> str:
        raise RuntimeError("ReprRaisesError.__repr__")


class GetattributeRaisesError(Exception):
    """Every dunder but ``__class__`` and ``__traceback__`` raises, and so does ``str``."""

    def __getattribute__(self, name: str) -> Any:
        if name.startswith("__") and name not in ("__class__", "__traceback__"):
            raise RuntimeError(f"no {name}")
        return object.__getattribute__(self, name)

    def __str__(self) -> str:
        raise RuntimeError("GetattributeRaisesError.__str__")


class SetattrRaisesError(Exception):
    def __setattr__(self, name: str, value: Any) -> None:
        raise RuntimeError(f"no attribute {name} for you")


class AnyAttributeError(Exception):
    """Every attribute it lacks reads as a string (a proxy, a mock-like error object)."""

    def __getattr__(self, name: str) -> str:
        return f"<{name}>"


class NotesError(Exception):
    """``__notes__`` is whatever it was given: a tuple, a string, a number, a list of odd things."""

    def __init__(self, message: str, notes: object) -> None:
        super().__init__(message)
        self.__notes__ = list(notes) if isinstance(notes, list) else notes


class RetryHintError(Exception):
    """A ``retry_after`` attribute of any kind (the policy reads it as a delay hint)."""

    def __init__(self, message: str, hint: object) -> None:
        super().__init__(message)
        self.retry_after = hint


class _Response:
    def __init__(self, headers: Mapping[str, Any]) -> None:
        self.headers = headers


class RetryHeaderError(Exception):
    """An HTTP-client-like exception whose response has a ``Retry-After`` header of any
    kind (the policy reads it as a delay hint too)."""

    def __init__(self, message: str, hint: object) -> None:
        super().__init__(message)
        self.response = _Response({"Retry-After": hint})


class _RaisingHeaders(Mapping[str, str]):
    def __getitem__(self, key: str) -> str:
        raise RuntimeError("headers cannot be read")

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0

    def get(self, key: str, default: Any = None) -> Any:
        raise RuntimeError("headers.get cannot be read")


class HostileHeadersError(Exception):
    """An HTTP-client-like exception whose ``response.headers`` cannot be read."""

    response = _Response(_RaisingHeaders())


class SurrogateNameError(Exception):
    """A class whose qualified name holds a lone surrogate and a bidi override
    (generated classes can)."""


SurrogateNameError.__qualname__ = "SurrogateName\udcff\u202eError"


class _Unformattable:
    def __format__(self, spec: str) -> str:
        raise RuntimeError("__module__ cannot be formatted")

    def __str__(self) -> str:
        raise RuntimeError("__module__ cannot be printed")


class HostileModuleError(Exception):
    """A class whose ``__module__`` cannot be formatted, and whose ``__name__`` would
    clear a terminal and break a log line."""


HostileModuleError.__module__ = _Unformattable()  # type: ignore[assignment]
HostileModuleError.__name__ = "HostileModule\x1b[2J\r\nError"

#: The kinds that are one class each, built from their message alone.
_CLASSES: Final[dict[str, type[Exception]]] = {
    "plain": PlainError,
    "str_raises": StrRaisesError,
    "repr_raises": ReprRaisesError,
    "getattribute_raises": GetattributeRaisesError,
    "setattr_raises": SetattrRaisesError,
    "any_attribute": AnyAttributeError,
    "hostile_headers": HostileHeadersError,
    "surrogate_name": SurrogateNameError,
    "hostile_module": HostileModuleError,
}
#: The kinds built from their message and an ``extra`` value.
_WITH_EXTRA: Final[dict[str, type[Exception]]] = {
    "notes": NotesError,
    "retry_hint": RetryHintError,
    "retry_header": RetryHeaderError,
}
#: Kinds whose ``str()`` raises: their text is ``<exception str() failed>``.
_UNREADABLE_TEXT = frozenset({"str_raises", "getattribute_raises"})
#: Kinds whose traceback cannot be formatted (the rest of them is kept).
_UNREADABLE_TRACEBACK = frozenset({"getattribute_raises", "hostile_module"})

_BUILTINS: Final = (ValueError, KeyError, ConnectionError, TimeoutError, RuntimeError, OSError)

#: ExceptionGroup (Python 3.11+).
_GROUP: type[Exception] | None = getattr(builtins, "ExceptionGroup", None)


def _link(exc: BaseException, attribute: str, other: BaseException) -> None:
    object.__setattr__(exc, attribute, other)  # the descriptor, past a hostile __setattr__


def type_name(cls: type[BaseException]) -> str:
    """The name the queue keeps for an exception class: ``module.Qualname`` (builtins
    bare), its ``__name__`` when the module or qualified name is not a string; lone
    surrogates written out, at most 1024 characters."""
    module: object = cls.__module__
    name: object = cls.__qualname__
    if isinstance(module, str) and isinstance(name, str):
        text = name if module == "builtins" else f"{module}.{name}"
    else:
        text = cls.__name__
    return written_out(text)[:1024]


def exception_text(exc: BaseException) -> str:
    """The error text the queue keeps for ``exc`` (before bounding): ``str(exc)``, its
    type's name when empty, a stand-in when ``str`` raises."""
    try:
        text = str(exc)
    except Exception:
        return "<exception str() failed>"
    return text or type_name(type(exc))


def hint_seconds(value: object) -> float | None:
    """The delay a ``retry_after`` attribute or ``Retry-After`` header asks for: a
    number or numeric string, finite and not negative; anything else asks for none."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        seconds = float(value)
    except (ValueError, OverflowError):
        return None
    return seconds if 0 <= seconds < math.inf else None


@dataclass(frozen=True)
class ExcSpec:
    """How to make one (hostile) exception; each :meth:`build` makes a fresh one."""

    kind: str
    message: str
    extra: Any = None
    chain: str = ""  # "", "cause_cycle", "self_context"
    raised: bool = True

    def build(self) -> Exception:
        exc = self._make()
        if self.chain == "cause_cycle":
            other = PlainError("the other end of the cycle")
            _link(exc, "__cause__", other)
            _link(other, "__cause__", exc)
        elif self.chain == "self_context":
            _link(exc, "__context__", exc)
        if self.raised:
            with suppress(Exception):
                raise exc  # now it has a traceback
        return exc

    def _make(self) -> Exception:
        kind, message = self.kind, self.message
        if kind == "builtin":
            return _BUILTINS[self.extra % len(_BUILTINS)](message)
        if kind == "oserror":
            return OSError(2, message, f"file-{SURROGATES[0]}-{message}")
        if kind == "group":
            if _GROUP is None:  # Python 3.10
                return PlainError(message)
            return _GROUP(message, [spec.build() for spec in self.extra])
        if kind in _WITH_EXTRA:
            return _WITH_EXTRA[kind](message, self.extra)
        return _CLASSES[kind](message)

    @property
    def markable(self) -> bool:
        """Whether the queue can set ``dlq_task_id`` / ``dlq_error`` on it."""
        return self.kind != "setattr_raises"

    @property
    def traceback_readable(self) -> bool:
        """Whether its traceback can be formatted (then the record must keep it)."""
        if not self.raised or self.kind in _UNREADABLE_TRACEBACK:
            return False
        if self.kind == "group" and _GROUP is not None:
            return all(spec.kind != "getattribute_raises" for spec in self.extra)
        return True

    @property
    def hint(self) -> float | None:
        """The delay it asks for (seconds, not yet clamped), or None."""
        return hint_seconds(self.extra) if self.kind in ("retry_hint", "retry_header") else None

    def expected_text(self, exc: BaseException) -> str:
        """The error text the queue keeps for ``exc`` (before bounding)."""
        if self.kind in _UNREADABLE_TEXT:
            return "<exception str() failed>"
        return exception_text(exc)


messages = st.one_of(hostile_text, long_text(any_chars, 3000))
#: Delay hints of any kind: numbers of any size and sign, numeric and other text.
retry_hints = st.one_of(
    st.floats(),
    st.integers(),
    st.sampled_from(["12", "1e999", "-1", "nan", "inf", "soon", 10**400]),
    st.builds(object),
)
note_values = st.one_of(
    st.tuples(hostile_text),
    hostile_text,
    st.integers(),
    st.none(),
    st.lists(st.one_of(hostile_text, st.integers(), st.builds(Unprintable)), max_size=3),
)

SIMPLE_KINDS: Final = (
    *("plain", "builtin", "oserror", "str_raises", "repr_raises", "getattribute_raises"),
    *("setattr_raises", "any_attribute", "notes", "retry_hint", "retry_header"),
    *("hostile_headers", "surrogate_name", "hostile_module"),
)
_EXTRAS: Final[dict[str, st.SearchStrategy[Any]]] = {
    "builtin": st.integers(0, 99),
    "notes": note_values,
    "retry_hint": retry_hints,
    "retry_header": retry_hints,
}


def _spec_from(kind: str, message: str, extra: Any, chain: str, raised: bool) -> ExcSpec:
    if kind in ("getattribute_raises", "setattr_raises") and chain:
        chain = ""  # these cannot be linked into a chain by the test either
    return ExcSpec(kind, message, extra, chain, raised)


def exc_specs_of(texts: st.SearchStrategy[str] = messages) -> st.SearchStrategy[ExcSpec]:
    """Every kind of hostile exception, with messages from ``texts``: the simple kinds,
    and exception groups of them."""
    chains = st.sampled_from(["", "", "cause_cycle", "self_context"])

    def of_kind(kind: str, extra: st.SearchStrategy[Any]) -> st.SearchStrategy[ExcSpec]:
        return st.builds(_spec_from, st.just(kind), texts, extra, chains, st.booleans())

    simple = st.one_of([of_kind(kind, _EXTRAS.get(kind, st.none())) for kind in SIMPLE_KINDS])
    return simple | of_kind("group", st.lists(simple, min_size=1, max_size=3).map(tuple))


#: Every kind of hostile exception, exception groups of them included.
exc_specs = exc_specs_of()


def assert_exception_kept(
    spec: ExcSpec, exc: BaseException, text: str | None, kept_type: str | None, limit: int
) -> None:
    """What a record keeps of ``exc``: its text (bounded) and its type's name, both
    valid Unicode, whatever else about it could not be read."""
    assert_bounded(text, spec.expected_text(exc), limit)
    assert kept_type is not None
    assert is_valid(kept_type), kept_type.encode("utf-8", "backslashreplace")
    assert kept_type == type_name(type(exc))


def assert_traceback_kept(spec: ExcSpec, trace: str | None, limit: int) -> None:
    """A traceback that can be formatted is kept (bounded), whatever other part of the
    exception could not be read."""
    if spec.traceback_readable:
        assert trace is not None, "a readable traceback was thrown away"
    if trace is not None:
        assert_bounded(trace, None, limit)
