"""Hostile text and ids: the pieces that break text handling somewhere, strategies that
mix them into generated text, ``str`` look-alikes whose methods raise, and what the
queue keeps of a value that should have been a string.
"""

from __future__ import annotations

from typing import Final

from hypothesis import strategies as st

from mahavishnu_dlq import InvalidPayloadError

#: Pieces that break text handling somewhere: NUL and other controls, terminal escapes,
#: bidi overrides, zero-width characters and BOM, astral and ZWJ emoji, path parts,
#: format strings, regular-expression and Lucene metacharacters, case-folding oddities.
SPECIALS: Final = (
    *("\x00", "\x07", "\x1b[2J\x1b[31m", "\r\n", "\t", "\x7f", "\x85", "\u2028", "\u202e"),
    *("\u2066", "\u200b", "\ufeff", "\ufffd", "\uffff"),
    *("\U0001f600", "\U0001f469\u200d\U0001f469\u200d\U0001f467", "\U0010ffff"),
    *("/", "..", "../../etc/passwd", "\\", "%s%n", "{0}", "${x}", "' OR '1'='1", "<script>"),
    *(".*", "[a-", "(?i)", "\\d+", "a{1000}", "#@&~<>", '"', "|"),
    # Σ, ς (final sigma: folds to the plain small sigma), ǅ (title case), K (Kelvin sign:
    # folds to k), İ (folds to two characters), ß (folds to "ss"), ﬁ (folds to "fi")
    *("\u03a3", "\u03c2", "\u01c5", "\u212a", "\u0130", "\u00df", "\ufb01"),
)
#: Lone surrogates, as undecodable bytes in file names and argv give.
SURROGATES: Final = ("\udcff", "\ud800", "\udfff", "\ud83d")
#: What forges a log line or drives a terminal: line breaks, escape sequences (clear
#: the screen, OSC 52 writes the clipboard), C1 controls, bidi controls, separators.
BREAKERS: Final = (
    *("\n", "\r\n", "\r", "\t", "\x00", "\x7f", "\x85", "\x9b2J", "\u2028", "\u2029"),
    *("\x1b[2J\x1b[31m", "\x1b]52;c;aGk=\x07", "\u202e", "\u2066", "\u200f", "\u061c"),
)

valid_chars = st.characters(exclude_categories=["Cs"])
any_chars = st.characters()  # surrogates included


def texts_of(chars: st.SearchStrategy[str], pieces: tuple[str, ...]) -> st.SearchStrategy[str]:
    """Short text of ``chars``, or a few such bits and ``pieces`` joined."""
    piece = st.one_of(st.text(chars, max_size=3), st.sampled_from(pieces))
    return st.one_of(st.text(chars, max_size=12), st.lists(piece, max_size=6).map("".join))


#: Valid Unicode, every category but surrogates, with the special pieces mixed in.
valid_text = texts_of(valid_chars, SPECIALS)
#: Any text at all: lone surrogates too.
hostile_text = texts_of(any_chars, SPECIALS + SURROGATES)
#: Valid Unicode, never empty.
nonempty_text = st.builds(
    lambda first, rest: first + rest,
    st.one_of(st.text(valid_chars, min_size=1, max_size=2), st.sampled_from(SPECIALS)),
    valid_text,
)


def sized_text(size: int, chars: st.SearchStrategy[str] = valid_chars) -> st.SearchStrategy[str]:
    """Text of exactly ``size`` characters (a short generated piece, repeated)."""
    return st.text(chars, min_size=1, max_size=4).map(lambda piece: (piece * size)[:size])


def long_text(
    chars: st.SearchStrategy[str], most: int, pieces: tuple[str, ...] = SPECIALS
) -> st.SearchStrategy[str]:
    """Text of up to ``most`` characters: a generated (or special) piece repeated."""
    return st.builds(
        lambda piece, times: (piece * times)[:most],
        st.text(chars, min_size=1, max_size=8) | st.sampled_from(pieces),
        st.integers(1, most),
    )


def holding(
    pieces: tuple[str, ...], rest: st.SearchStrategy[str] = valid_text
) -> st.SearchStrategy[str]:
    """Text holding at least one of ``pieces``."""
    return st.builds(lambda a, piece, b: a + piece + b, rest, st.sampled_from(pieces), rest)


def is_valid(text: str) -> bool:
    """True unless ``text`` holds a lone surrogate."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def written_out(text: str) -> str:
    """``text`` with lone surrogates written as ``\\udcxx`` (what error texts become)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


class HostileStr(str):
    """A ``str`` subclass whose ``str()`` and ``format()`` refuse. (Its ``repr`` works:
    Hypothesis prints failing examples with it.)"""

    __slots__ = ()

    def __str__(self) -> str:
        raise RuntimeError("HostileStr.__str__")

    def __format__(self, spec: str) -> str:
        raise RuntimeError("HostileStr.__format__")

    def __repr__(self) -> str:
        return f"HostileStr({str.__repr__(self)})"


class Unprintable:
    """An object whose ``str()`` raises (in payloads, repos, error texts, results)."""

    def __str__(self) -> str:
        raise RuntimeError("Unprintable.__str__")

    def __repr__(self) -> str:
        return "Unprintable()"


class PrintsHostileStr:
    """An object whose ``str()`` is a :class:`HostileStr`."""

    def __str__(self) -> str:
        return HostileStr("printed\r\n\x1b[2J")

    def __repr__(self) -> str:
        return "PrintsHostileStr()"


def text_of(value: object) -> str:
    """What the queue keeps of a value that should have been text (a repository name,
    a workflow, an ``error`` that is not an exception): a string's own characters (never
    a subclass's ``__str__``), else ``str(value)`` — ``"None"`` for None — or
    ``<Type str() failed>`` when that raises. (``error=None`` is kept as ``""``.)"""
    if isinstance(value, str):
        return str.__str__(value)
    try:
        text = str(value)
    except Exception:
        return f"<{type(value).__name__} str() failed>"
    return str.__str__(text)


# -- ids ------------------------------------------------------------------------------

good_ids = st.one_of(nonempty_text, sized_text(512), sized_text(1))
non_strings = st.one_of(
    st.none(),
    st.integers(),
    st.floats(),
    st.binary(max_size=4),
    st.builds(object),
    st.lists(st.integers(), max_size=2),
    st.builds(Unprintable),
)
#: Any id a caller could pass: valid, empty, 513 characters, lone surrogates, a
#: ``str`` subclass whose methods raise, not a string at all.
hostile_ids = st.one_of(
    good_ids,
    hostile_text,
    sized_text(512, any_chars),
    sized_text(513),
    nonempty_text.map(HostileStr),
    non_strings,
)


def id_refusal(task_id: object) -> type[Exception] | None:
    """The documented error for ``task_id``, or None when it is a valid id."""
    if not isinstance(task_id, str):
        return TypeError
    text = str.__str__(task_id)
    if not 1 <= len(text) <= 512 or not is_valid(text):
        return InvalidPayloadError
    return None
