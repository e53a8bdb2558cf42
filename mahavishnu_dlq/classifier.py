"""Error classification and fingerprints.

An :class:`ErrorClassifier` decides what kind of failure an exception is — an
:class:`~mahavishnu_dlq.models.ErrorCategory`, which picks the default retry
policy. It asks, in order: the explicit :class:`ClassifierRule` list, what the
exception *is* (an HTTP status code it carries, its type walked along the MRO,
its ``errno``), the same for its ``__cause__``/``__context__`` chain, then
keywords in the message matched on word boundaries; anything else is
``PERMANENT``.

A fingerprint groups identical failures: a short stable hash of the exception
type, the message with ids and numbers masked, and the innermost frame of the
user's own code (not this package, the standard library or site-packages); those
parts are made in :mod:`mahavishnu_dlq.fingerprints`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import hashlib
import json
import re
import socket
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Final, NamedTuple

from pydantic import ValidationError

from mahavishnu_dlq.fingerprints import error_type_name, normalise_message, user_frame
from mahavishnu_dlq.models import ErrorCategory

__all__ = [
    "ClassifierRule",
    "ErrorClassifier",
    "error_type_name",
    "http_status",
    "normalise_message",
]

_CACHE_SIZE: Final = 4096
#: How many exceptions of a ``__cause__``/``__context__`` chain (and group members) are read.
_MAX_CHAIN: Final = 8
#: Keywords are searched in the first characters of a message only (bounds time and cache memory).
_KEYWORD_SCAN_CHARS: Final = 4096

_C = ErrorCategory


# --------------------------------------------------------------------------- rules


def _class_matches_name(cls: type, name: str) -> bool:
    """True when ``name`` names ``cls``: bare (``"ReadTimeout"``), qualified
    (``"httpx._exceptions.ReadTimeout"``) or by a parent package of its module
    (``"httpx.ReadTimeout"``, ``"requests.Timeout"``)."""
    qualname = cls.__qualname__
    if name in (cls.__name__, qualname):
        return True
    if not name.endswith("." + qualname):
        return False
    package = name[: -len(qualname) - 1]
    module = cls.__module__
    return module == package or module.startswith(package + ".")


def _mro_matches_name(cls: type, name: str) -> bool:
    return any(_class_matches_name(klass, name) for klass in cls.__mro__)


@dataclass(frozen=True, slots=True)
class ClassifierRule:
    """An explicit classification: errors matching this rule get ``category``.

    ``exception_type`` is a class (its subclasses match too) or a name matched
    against every class of the exception's MRO, bare (``"TimeoutError"``) or
    qualified (``"httpx.ReadTimeout"``; a parent package of the defining module
    is enough). ``pattern`` is a regular expression searched case-insensitively
    in the message's first 4096 characters (as the keywords are), so a rule's cost
    is bounded whatever the message. With both, both must match; a rule needs at
    least one.
    Only pattern rules can match a plain-string error.
    """

    category: ErrorCategory
    exception_type: str | type[BaseException] | None = None
    pattern: str | None = None
    _regex: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        category: Any = self.category
        if not isinstance(category, ErrorCategory):
            try:
                category = ErrorCategory(str(category).lower())
            except ValueError:
                raise ValueError(f"unknown error category {self.category!r}") from None
            object.__setattr__(self, "category", category)
        kind: object = self.exception_type
        if kind is not None and not (
            (isinstance(kind, str) and kind)
            or (isinstance(kind, type) and issubclass(kind, BaseException))
        ):
            raise ValueError(
                f"exception_type must be an exception class or a non-empty name, got {kind!r}"
            )
        if self.pattern is not None:
            if not self.pattern:
                raise ValueError("pattern must not be empty")
            try:
                regex = re.compile(self.pattern, re.IGNORECASE)
            except re.error as exc:
                raise ValueError(f"invalid pattern {self.pattern!r}: {exc}") from exc
            object.__setattr__(self, "_regex", regex)
        if self.exception_type is None and self.pattern is None:
            raise ValueError("a ClassifierRule needs an exception_type, a pattern or both")

    def matches(self, error: BaseException | str) -> bool:
        """True when ``error`` (an exception or a message) matches this rule."""
        if isinstance(error, str):
            return self.exception_type is None and self._search(error)
        kind = self.exception_type
        if isinstance(kind, str):
            if not _mro_matches_name(type(error), kind):
                return False
        elif kind is not None and not isinstance(error, kind):
            return False
        return self._regex is None or self._search(_message(error))

    def _search(self, message: str) -> bool:
        # the same bounded prefix the keywords read: classification time is bounded
        # whatever the message (``timeout.*retry`` over 256 kB took 27 s)
        regex = self._regex
        return regex is not None and regex.search(message, 0, _KEYWORD_SCAN_CHARS) is not None


# --------------------------------------------------------------------------- what the exception is

#: The most specific class of the exception's MRO found here decides.
_TYPE_CATEGORIES: Final[Mapping[type, ErrorCategory]] = {
    TimeoutError: _C.NETWORK,
    asyncio.TimeoutError: _C.NETWORK,  # an alias of TimeoutError from 3.11
    concurrent.futures.TimeoutError: _C.NETWORK,  # idem
    ConnectionError: _C.NETWORK,
    socket.gaierror: _C.NETWORK,
    socket.herror: _C.NETWORK,
    MemoryError: _C.RESOURCE,
    PermissionError: _C.PERMISSION,
    ValidationError: _C.VALIDATION,
    json.JSONDecodeError: _C.VALIDATION,
    UnicodeError: _C.VALIDATION,
    ValueError: _C.VALIDATION,
    TypeError: _C.VALIDATION,
    KeyError: _C.VALIDATION,
}

#: Well-known client-library types, matched by name so that nothing is imported.
_NAMED_TYPE_CATEGORIES: Final[tuple[tuple[str, ErrorCategory], ...]] = (
    ("httpx.TimeoutException", _C.NETWORK),
    ("httpx.NetworkError", _C.NETWORK),
    ("httpx.RemoteProtocolError", _C.NETWORK),
    ("httpcore.TimeoutException", _C.NETWORK),
    ("httpcore.NetworkError", _C.NETWORK),
    ("requests.exceptions.Timeout", _C.NETWORK),
    ("requests.exceptions.ConnectionError", _C.NETWORK),
    ("urllib3.exceptions.TimeoutError", _C.NETWORK),
    ("urllib3.exceptions.ProtocolError", _C.NETWORK),
    ("aiohttp.ClientConnectionError", _C.NETWORK),
    ("opensearchpy.exceptions.ConnectionError", _C.NETWORK),
    ("trio.TooSlowError", _C.NETWORK),
)


def _errno_table(table: Mapping[ErrorCategory, tuple[str, ...]]) -> dict[int, ErrorCategory]:
    return {
        code: category
        for category, names in table.items()
        for name in names
        if (code := getattr(errno, name, None)) is not None
    }


# fmt: off
_ERRNO_CATEGORIES: Final = _errno_table({
    _C.NETWORK: (
        "ECONNREFUSED", "ECONNRESET", "ECONNABORTED", "EHOSTUNREACH", "EHOSTDOWN",
        "ENETUNREACH", "ENETDOWN", "ENETRESET", "ETIMEDOUT", "EPIPE",
    ),
    _C.RESOURCE: ("ENOSPC", "EMFILE", "ENFILE", "ENOMEM", "EDQUOT"),
    _C.PERMISSION: ("EACCES", "EPERM"),
    _C.TRANSIENT: ("EAGAIN",),
})
# fmt: on


class _TypeFacts(NamedTuple):
    uses_errno: bool  # OSError comes before the deciding class: errno decides first
    category: ErrorCategory | None
    is_group: bool  # an ExceptionGroup: its members are classified too


_type_facts_cache: dict[type, _TypeFacts] = {}


def _type_facts(cls: type) -> _TypeFacts:
    """What the type of an exception says, cached per type (cleared when full).

    The MRO is walked from the class itself: the first class with a known
    category wins. ``OSError`` has none of its own; when it comes before the
    deciding class, the instance's ``errno`` is consulted first.
    """
    facts = _type_facts_cache.get(cls)
    if facts is not None:
        return facts
    uses_errno = False
    category: ErrorCategory | None = None
    for klass in cls.__mro__:
        category = _TYPE_CATEGORIES.get(klass) or next(
            (cat for name, cat in _NAMED_TYPE_CATEGORIES if _class_matches_name(klass, name)),
            None,
        )
        if category is not None:
            break
        uses_errno = uses_errno or klass is OSError
    is_group = any(klass.__name__ == "BaseExceptionGroup" for klass in cls.__mro__)
    facts = _TypeFacts(uses_errno, category, is_group)
    if len(_type_facts_cache) >= _CACHE_SIZE:
        _type_facts_cache.clear()
    _type_facts_cache[cls] = facts
    return facts


def _status_category(status: int) -> ErrorCategory | None:
    if status in (401, 403, 407):
        return _C.PERMISSION
    if status in (408, 425, 429) or status >= 500:
        return _C.TRANSIENT
    if status >= 400:
        return _C.VALIDATION
    return None  # 1xx-3xx say nothing about a failure


def _builtin_category(exc: BaseException) -> ErrorCategory | None:
    """The category of one exception from what it carries and what it is.

    A status code is the most specific thing an exception can carry, so it wins
    over the type: client libraries derive their HTTP errors from generic bases
    (``Exception``, ``OSError``, even ``ValueError``), and ``HTTPError(503)`` is
    TRANSIENT whatever its base. Then the type along the MRO, with ``errno``
    deciding for ``OSError``.
    """
    status = http_status(exc)
    if status is not None:
        category = _status_category(status)
        if category is not None:
            return category
    uses_errno, category, _ = _type_facts(type(exc))
    if uses_errno:
        code = _safe_getattr(exc, "errno")
        if isinstance(code, int):
            return _ERRNO_CATEGORIES.get(code, category)
    return category


def _safe_getattr(obj: object, name: str) -> Any:
    try:
        return getattr(obj, name, None)
    except Exception:  # noqa: BLE001 - a broken property must not break classification
        return None


def _as_status(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return int(value) if 100 <= value <= 599 else None


def http_status(exc: BaseException) -> int | None:
    """The HTTP status code an exception carries, or None.

    Read from ``status_code``, ``status`` or ``code`` (``code`` is ignored on
    ``SystemExit``, where it is an exit status), then from ``exc.response``
    (``status_code``/``status``, or botocore's
    ``response["ResponseMetadata"]["HTTPStatusCode"]``). Only ints in 100..599 count.
    """
    for attr in ("status_code", "status", "code"):
        if attr == "code" and isinstance(exc, SystemExit):
            continue
        status = _as_status(_safe_getattr(exc, attr))
        if status is not None:
            return status
    response = _safe_getattr(exc, "response")
    if response is None:
        return None
    if isinstance(response, Mapping):
        metadata = response.get("ResponseMetadata")
        return _as_status(metadata.get("HTTPStatusCode")) if isinstance(metadata, Mapping) else None
    for attr in ("status_code", "status"):
        status = _as_status(_safe_getattr(response, attr))
        if status is not None:
            return status
    return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, then its group members and its cause/context, breadth first.

    Follows ``__cause__``, else ``__context__`` unless suppressed (``raise ... from
    None``), like the interpreter's own report. Bounded and safe against cycles.
    """
    seen: set[int] = set()
    pending: deque[BaseException] = deque([exc])
    while pending and len(seen) < _MAX_CHAIN:
        current = pending.popleft()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        if _type_facts(type(current)).is_group:
            members = _safe_getattr(current, "exceptions")
            if isinstance(members, tuple):
                pending.extend(m for m in members if isinstance(m, BaseException))
        linked = current.__cause__
        if linked is None and not current.__suppress_context__:
            linked = current.__context__
        if linked is not None:
            pending.append(linked)


# --------------------------------------------------------------------------- message keywords

#: Checked in this order; the first category with a keyword in the message wins
#: (so "rate limit exceeded: access denied" is TRANSIENT, "invalid token" PERMISSION).
# fmt: off
_KEYWORDS: Final[tuple[tuple[ErrorCategory, tuple[str, ...]], ...]] = (
    (_C.TRANSIENT, (
        r"rate[ _-]?limit\w*", r"rate exceeded", r"too[ _-]?many[ _-]?requests", r"throttl\w*",
        r"temporar\w*", r"(?:service[ _-]?)?unavailable\w*", r"try[ _-]?again",
        r"retry (?:later|after)", r"(?:server[ _-]?)?overloaded", r"deadlock\w*",
        r"could not serialize",
    )),
    (_C.RESOURCE, (
        r"quota(?:s|[ _-]?exceeded\w*)?", r"out[ _-]?of[ _-]?memory\w*", r"disk[ _-]?full",
        r"no space left", r"resources?[ _-]?exhausted", r"too many open files", r"memory limit",
        r"cannot allocate memory", r"insufficient (?:memory|storage|disk space|resources)",
        r"oom[ _-]?kill\w*",
    )),
    (_C.PERMISSION, (
        r"permission[ _-]?(?:denied|error)", r"access[ _-]?denied\w*", r"denied", r"forbidden\w*",
        r"unauthori[sz]ed\w*", r"not authori[sz]ed", r"unauthenticated", r"not permitted",
        r"insufficient (?:permissions?|privileges?)",
        r"(?:invalid|expired|bad) (?:credentials?|token|api[ _-]?key|password)",
        r"authenticat\w* (?:failed|failure|required|error)",
    )),
    (_C.NETWORK, (
        r"connection[ _-]?(?:refused|reset|aborted|closed|error|lost|failed)\w*",
        r"(?:lost|broken|closed|dropped) connection",
        r"(?:could not|couldn't|cannot|can't|unable to|failed to) connect",
        r"timed?[ _-]?out(?:s|error|exception)?", r"unreachable", r"dns", r"getaddrinfo",
        r"name resolution", r"name or service not known", r"no route to host",
        r"(?:web)?socket\w*", r"network\w*", r"broken pipe", r"disconnected", r"econn\w+",
        r"etimedout",
    )),
    (_C.VALIDATION, (
        r"invalid", r"malformed", r"required field", r"missing required", r"is required",
        r"must be", r"validation\w*", r"schema", r"not a valid", r"not valid", r"unexpected type",
        r"type mismatch", r"bad request", r"unprocessable",
        r"(?:bad|wrong|unsupported|unknown) format",
        r"(?:failed to|could not|cannot|unable to) (?:parse|decode|deseriali[sz]e)",
        r"parse error",
    )),
)
# fmt: on

_KEYWORD_PATTERNS: Final = tuple(
    (category, re.compile(r"\b(?:" + "|".join(words) + r")\b", re.IGNORECASE))
    for category, words in _KEYWORDS
)


def _keyword_category(message: str) -> ErrorCategory | None:
    return _cached_keyword_category(message[:_KEYWORD_SCAN_CHARS])


@lru_cache(maxsize=_CACHE_SIZE)
def _cached_keyword_category(message: str) -> ErrorCategory | None:
    for category, regex in _KEYWORD_PATTERNS:
        if regex.search(message):
            return category
    return None


def _message(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # noqa: BLE001 - a broken __str__ must not break classification
        return ""


# --------------------------------------------------------------------------- the classifier


class ErrorClassifier:
    """Decides the :class:`~mahavishnu_dlq.models.ErrorCategory` of a failure.

    ``rules`` are tried first, in order (first match wins), on the exception and
    then on its cause chain. ``use_keywords=False`` turns the message-keyword
    step off. Instances are immutable and safe to share between threads.
    """

    __slots__ = ("_rules", "_use_keywords")

    def __init__(self, rules: Sequence[ClassifierRule] = (), *, use_keywords: bool = True) -> None:
        self._rules: tuple[ClassifierRule, ...] = tuple(rules)
        self._use_keywords = use_keywords

    @property
    def rules(self) -> tuple[ClassifierRule, ...]:
        """The explicit rules, in the order they are tried."""
        return self._rules

    @property
    def use_keywords(self) -> bool:
        """Whether message keywords are consulted."""
        return self._use_keywords

    def __repr__(self) -> str:
        return f"ErrorClassifier(rules={list(self._rules)!r}, use_keywords={self._use_keywords})"

    def classify(self, error: BaseException | str) -> ErrorCategory:
        """The category of ``error``: rules, then what it is, then keywords, else PERMANENT.

        Each step reads the exception first, then its cause chain. A plain
        string goes to the pattern rules and the keywords only.
        """
        if isinstance(error, str):
            for rule in self._rules:
                if rule.matches(error):
                    return rule.category
            return (self._use_keywords and _keyword_category(error)) or _C.PERMANENT
        chain = tuple(_chain(error))
        for exc in chain:
            for rule in self._rules:
                if rule.matches(exc):
                    return rule.category
        for exc in chain:
            category = _builtin_category(exc)
            if category is not None:
                return category
        if self._use_keywords:
            for exc in chain:
                category = _keyword_category(_message(exc))
                if category is not None:
                    return category
        return _C.PERMANENT

    def fingerprint(self, error: BaseException | str, *, error_type: str | None = None) -> str:
        """16 hex characters that are equal for the same failure.

        An exception: sha1 of its type name (``error_type`` overrides it), its
        normalised message and its innermost frame of user code
        (``"module:function"``, line numbers left out so edits elsewhere keep
        the fingerprint). A string: ``error_type`` (default ``""``) and the
        normalised string. Stable across processes and machines.
        """
        if isinstance(error, str):
            parts = (error_type or "", normalise_message(error), "")
        else:
            name = error_type if error_type is not None else error_type_name(error)
            parts = (name, normalise_message(_message(error)), user_frame(error.__traceback__))
        payload = "\x1f".join(parts).encode("utf-8", "surrogatepass")
        return hashlib.sha1(payload, usedforsecurity=False).hexdigest()[:16]
