r"""Terminal-safe text: what a record or an argument says is shown, never obeyed.

A dead-letter queue keeps what failed, and failures carry hostile text: an error
message may hold ``ESC [2J`` (clear the screen), OSC 52 (write the clipboard) or
OSC 0 (set the window title), a C1 control such as U+009B (a CSI on some
terminals), bidi controls that reorder what the operator reads, or a lone
surrogate that a UTF-8 stream refuses to write. Every human-readable line the CLI
prints goes through this module, which writes such characters out visibly:

- C0 controls, DEL and C1 controls as ``\x1b``, ``\x7f``, ``\x9b``; newline,
  carriage return and tab as ``\n``, ``\r``, ``\t`` in a line (:func:`escape_line`:
  ids, names, table cells, error lines), while a block (:func:`escape_block`: a
  traceback, the stored form of a record) keeps its newlines and tabs — a carriage
  return is always written out;
- the bidi controls (U+061C, U+200E, U+200F, U+202A-U+202E, U+2066-U+2069) and the
  line and paragraph separators U+2028, U+2029 as ``\u202e`` …;
- lone surrogates (U+D800-U+DFFF, as undecodable bytes in argv give) as ``\udcff``.

Everything else passes unchanged, printable text in any script and backslashes
included, so ``\x1b`` on the screen is an escaped ESC or those four characters as
stored (``--json`` tells them apart). JSON — shown in ``show`` or printed by
``--json`` — writes the same characters as JSON escapes (:func:`escape_json`:
``\u001b``, ``\u202e``, ``\udcff``), so it stays exact JSON that decodes to what
is stored. The tables are built once; a text with nothing to escape is returned
as it is after one regular-expression scan.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any, TextIO

from rich.console import ConsoleRenderable
from rich.logging import RichHandler

from mahavishnu_dlq.printable import UNSAFE, escape_block, escape_json, escape_line

__all__ = [
    "UNSAFE",
    "EscapingRichHandler",
    "dumps",
    "escape_block",
    "escape_json",
    "escape_line",
    "say",
    "text_of",
]


def dumps(data: Any, *, indent: int | None = 2) -> str:
    """``data`` as JSON for people or pipes: readable Unicode, unsafe characters as
    JSON escapes (values JSON lacks become strings)."""
    return escape_json(json.dumps(data, indent=indent, ensure_ascii=False, default=str))


def text_of(value: object) -> str:
    """``str(value)``, which never raises (an exception's ``__str__`` may)."""
    try:
        return str(value)
    except Exception:  # noqa: BLE001 - a hostile __str__ must not hide the real problem
        return f"<{type(value).__name__} that cannot be shown>"


def say(text: str, *, err: bool = False) -> None:
    """Write ``text`` as one escaped line on stdout (or stderr)."""
    stream: TextIO = sys.stderr if err else sys.stdout
    stream.write(escape_line(text) + "\n")


class EscapingRichHandler(RichHandler):
    """Rich's log handler, writing a record's message as one escaped line and its
    traceback (``exc_info``, ``stack_info``) as an escaped block."""

    def render_message(self, record: logging.LogRecord, message: str) -> ConsoleRenderable:
        head = record.__dict__.get("message")  # what Formatter.format set: the message alone
        if isinstance(head, str) and message.startswith(head):
            shown = escape_line(head) + escape_block(message[len(head) :])
        else:
            shown = escape_block(message)
        return super().render_message(record, shown)
