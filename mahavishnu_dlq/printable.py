r"""Printable text: characters a terminal or a log would obey, written out instead.

Failures carry hostile text: an error message may hold ``ESC [2J`` (clear the
screen), OSC 52 (write the clipboard), a C1 control such as U+009B (a CSI on some
terminals), bidi controls that reorder what an operator reads, line breaks that
forge a log line, or a lone surrogate a UTF-8 stream refuses to write. These
functions write such characters out visibly:

- C0 controls, DEL and C1 controls as ``\x1b``, ``\x7f``, ``\x9b``; newline,
  carriage return and tab as ``\n``, ``\r``, ``\t`` in a line (:func:`escape_line`:
  ids, names, table cells, log and error lines), while a block (:func:`escape_block`:
  a traceback, the stored form of a record) keeps its newlines and tabs — a
  carriage return is always written out;
- the bidi controls (U+061C, U+200E, U+200F, U+202A-U+202E, U+2066-U+2069) and the
  line and paragraph separators U+2028, U+2029 as ``\u202e`` …;
- lone surrogates (U+D800-U+DFFF, as undecodable bytes in argv give) as ``\udcff``.

Everything else passes unchanged. :func:`escape_json` writes the same characters
as JSON escapes, so JSON stays exact. The tables are built once; a text with
nothing to escape is returned as it is after one regular-expression scan. The
CLI (:mod:`mahavishnu_dlq.cli.terminal`) uses them, and so does every logger of the
library (:func:`library_logger`): the arguments of a log line — task ids, error
texts — are escaped, so a line is one line whatever the data says (the structured
``extra`` fields keep the values as they are, for formatters that quote them).
"""

from __future__ import annotations

import logging
import re

__all__ = ["UNSAFE", "escape_block", "escape_json", "escape_line", "library_logger"]

#: Every code point the terminal output writes out instead of printing.
UNSAFE: frozenset[int] = frozenset(
    [
        *range(0x20),  # C0 controls, ESC among them
        0x7F,  # DEL
        *range(0x80, 0xA0),  # C1 controls: U+009B is a CSI, U+009D an OSC
        0x061C,  # Arabic letter mark
        0x200E,  # left-to-right mark
        0x200F,  # right-to-left mark
        *range(0x202A, 0x202F),  # embeddings and overrides
        *range(0x2066, 0x206A),  # isolates
        0x2028,  # line separator
        0x2029,  # paragraph separator
        *range(0xD800, 0xE000),  # surrogates: alone, they cannot be encoded
    ]
)
_NAMED = {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"}
_KEPT_IN_BLOCKS = (0x09, 0x0A)


def _visible(code: int) -> str:
    if code in _NAMED:
        return _NAMED[code]
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _class(codes: frozenset[int]) -> re.Pattern[str]:
    """A character class of ``codes``, consecutive ones as ranges (quick to compile)."""
    ranges: list[list[int]] = []
    for code in sorted(codes):
        if ranges and ranges[-1][1] == code - 1:
            ranges[-1][1] = code
        else:
            ranges.append([code, code])
    parts = (
        f"\\U{first:08x}" if first == last else f"\\U{first:08x}-\\U{last:08x}"
        for first, last in ranges
    )
    return re.compile("[" + "".join(parts) + "]")


_LINE_TABLE = {code: _visible(code) for code in UNSAFE}
_BLOCK_TABLE = {code: _LINE_TABLE[code] for code in UNSAFE if code not in _KEPT_IN_BLOCKS}
# json.dumps escapes C0 controls already; a raw newline in its output is layout
_JSON_TABLE = {code: f"\\u{code:04x}" for code in UNSAFE if code != 0x0A}
_LINE_UNSAFE = _class(UNSAFE)
_BLOCK_UNSAFE = _class(frozenset(_BLOCK_TABLE))
_JSON_UNSAFE = _class(frozenset(_JSON_TABLE))


def escape_line(text: str) -> str:
    """``text`` for one line of a terminal: every unsafe character written out,
    newlines, carriage returns and tabs included."""
    if _LINE_UNSAFE.search(text) is None:
        return text
    return text.translate(_LINE_TABLE)


def escape_block(text: str) -> str:
    """``text`` for a multi-line block (a traceback): as :func:`escape_line`, but its
    newlines and tabs are kept."""
    if _BLOCK_UNSAFE.search(text) is None:
        return text
    return text.translate(_BLOCK_TABLE)


def escape_json(text: str) -> str:
    """JSON text (``json.dumps`` output) with every unsafe character inside its strings
    written as a JSON escape: still exact JSON, and safe for a terminal."""
    if _JSON_UNSAFE.search(text) is None:
        return text
    return text.translate(_JSON_TABLE)


def _shown(value: object) -> object:
    if isinstance(value, str):
        return escape_line(value)
    if isinstance(value, BaseException):  # its str() may raise, or hold anything
        try:
            return escape_line(str(value))
        except Exception:  # noqa: BLE001 - a hostile __str__ must not break logging
            return f"<{type(value).__name__}>"
    return value


class _PrintableArgs(logging.Filter):
    """Escapes the string and exception arguments of the records of a logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and args:
            record.args = tuple(_shown(arg) for arg in args)
        return True


_FILTER = _PrintableArgs()


def library_logger(name: str) -> logging.Logger:
    """The logger ``name``, its records' arguments escaped (see the module docstring)."""
    logger = logging.getLogger(name)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    return logger
