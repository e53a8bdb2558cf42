"""Fingerprint parts: an exception's type name, its message with what varies masked,
and the innermost frame of the user's own code.

:meth:`ErrorClassifier.fingerprint <mahavishnu_dlq.classifier.ErrorClassifier.fingerprint>`
hashes these three; :func:`error_type_name` also names the type of every stored error.
Both public names are re-exported by :mod:`mahavishnu_dlq.classifier`.
"""

from __future__ import annotations

import os
import re
import sys
import sysconfig
from functools import lru_cache
from types import TracebackType
from typing import Final

from mahavishnu_dlq.limits import clean_text

__all__ = ["error_type_name", "normalise_message", "user_frame"]

_CACHE_SIZE: Final = 4096
#: normalise_message reads this much of a message; its result is at most 500 characters.
_NORMALISE_SCAN_CHARS: Final = 4096
_NORMALISED_MAX: Final = 500


def error_type_name(exc: BaseException) -> str:
    """``"module.Qualname"`` of the exception's class; builtins by bare name.

    A class whose ``__module__`` or ``__qualname__`` is not a string (or raises) is
    named by ``__name__``; a lone surrogate in a name is written out (``\\udcff``).
    """
    cls = type(exc)
    try:
        module, name = cls.__module__, cls.__qualname__
        if not (isinstance(module, str) and isinstance(name, str)):
            raise TypeError("a class name that is not a string")
        text = name if module == "builtins" else f"{module}.{name}"
    except Exception:  # noqa: BLE001 - a hostile class still has a name to show
        try:
            text = str(type.__getattribute__(cls, "__name__"))
        except Exception:  # noqa: BLE001
            text = "<unnamed exception type>"
    return clean_text(text)


_ISO_TIMESTAMP: Final = (
    r"(?<!\d)\d{4}-\d{2}-\d{2}"
    r"(?:[t ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:z|[+-]\d{2}(?::?\d{2})?)?)?"
)

#: (pattern, replacement, needles): a pattern is tried only when the message holds
#: one of its needles (each can only match text containing one), which skips most
#: of them for most messages; no needles: always tried.
_MASKS: Final[tuple[tuple[re.Pattern[str], str, tuple[str, ...]], ...]] = tuple(
    (re.compile(pattern, re.IGNORECASE), replacement, needles)
    for pattern, replacement, needles in (
        # the query string and fragment of a URL
        (r"(\b[a-z][a-z0-9+.-]*://[^\s?#'\"<>]*)[?#][^\s'\"<>]*", r"\1?<query>", ("://",)),
        (r"[\w.%+-]+@[\w-]+(?:\.[\w-]+)+", "<email>", ("@",)),
        (_ISO_TIMESTAMP, "<time>", ("-",)),
        (
            r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b",
            "<uuid>",
            ("-",),
        ),
        (r"(?<!\w)'[^'\n]*'(?!\w)", "<str>", ("'",)),
        (r'"[^"\n]*"', "<str>", ('"',)),
        (r"\b0x[0-9a-f]+\b", "<hex>", ("0x", "0X")),
        (r"\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{8,}\b", "<hex>", ()),
        # long tokens mixing letters and digits: base62 ids, ULIDs, API request ids
        (r"\b(?=[a-z]*\d)(?=\d*[a-z])[a-z0-9]{16,}\b", "<id>", ()),
        (r"(?:(?<![\w.-])-)?\d+(?:[.,]\d+)*", "<num>", ()),
        (r"\s+", " ", ()),
    )
)


def normalise_message(message: str) -> str:
    """``message`` with what varies between occurrences of one failure masked.

    URL query strings, e-mail addresses, ISO timestamps, UUIDs, quoted strings,
    hex ids (8+ hex digits), long alphanumeric ids and numbers become
    placeholders; whitespace is collapsed, the text lower-cased and cut to 500
    characters. Only the first 4096 characters are read.
    """
    return _normalise(message[:_NORMALISE_SCAN_CHARS])


@lru_cache(maxsize=_CACHE_SIZE)
def _normalise(message: str) -> str:
    for regex, replacement, needles in _MASKS:
        if needles:
            for needle in needles:
                if needle in message:
                    break
            else:
                continue  # cannot match: skip the scan
        message = regex.sub(replacement, message)
    return message.strip().lower()[:_NORMALISED_MAX]


def _library_roots() -> tuple[str, ...]:
    package = os.path.dirname(os.path.realpath(__file__))
    paths = {
        sysconfig.get_paths().get(name) for name in ("stdlib", "platstdlib", "purelib", "platlib")
    }
    return (package, *sorted(os.path.realpath(path) for path in paths if path))


_LIBRARY_ROOTS: Final = _library_roots()


@lru_cache(maxsize=1024)
def _is_user_file(filename: str) -> bool:
    """False for this package, the standard library and installed packages."""
    if filename.startswith("<"):
        return not filename.startswith("<frozen")  # "<string>", "<stdin>" are user code
    path = os.path.realpath(filename)
    parts = path.split(os.sep)
    if "site-packages" in parts or "dist-packages" in parts:
        return False
    return not any(path == root or path.startswith(root + os.sep) for root in _LIBRARY_ROOTS)


def user_frame(tb: TracebackType | None) -> str:
    """``"module:function"`` of the innermost traceback frame in user code, or ``""``."""
    frames = []
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for frame in reversed(frames):
        code = frame.f_code
        module = frame.f_globals.get("__name__")
        module = module if isinstance(module, str) else ""
        filename = code.co_filename
        if filename.startswith("<"):  # generated code (dataclasses, exec): judge its module
            filename = getattr(sys.modules.get(module), "__file__", None) or filename
        if _is_user_file(filename):
            where = module or os.path.basename(code.co_filename)
            return f"{where}:{code.co_name}"
    return ""
