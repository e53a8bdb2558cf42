#!/usr/bin/env python3
"""The command reference of ``docs/cli.md``, generated from the CLI's own help.

The reference is the help of the root and of every command and subcommand, exactly
as ``mahavishnu-dlq ... --help`` prints it in an 80-column terminal, one
``### mahavishnu-dlq <path>`` section each. It lives between two marker lines in
``docs/cli.md``; the prose above them is written by hand::

    python scripts/cli_reference.py            # print the generated block
    python scripts/cli_reference.py --write    # write it into docs/cli.md
    python scripts/cli_reference.py --check    # exit 1, naming the difference, if stale

The help is rendered through the command objects (``get_help`` on a context with a
fixed width), so the output is the same on every machine and nothing is run.
Importable: ``tests/unit/test_cli_reference.py`` calls :func:`render_reference` and
:func:`generated_block`.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import typer
from typer import _click
from typer.core import TyperGroup

from mahavishnu_dlq.cli import build_app
from mahavishnu_dlq.cli.common import PROG

__all__ = [
    "BEGIN",
    "DOCUMENT",
    "END",
    "HELP_WIDTH",
    "Entry",
    "StaleReferenceError",
    "check",
    "generated_block",
    "main",
    "render_reference",
    "splice",
    "walk",
]

DOCUMENT = Path(__file__).resolve().parent.parent / "docs" / "cli.md"
BEGIN = "<!-- BEGIN GENERATED REFERENCE (scripts/cli_reference.py) -->"
END = "<!-- END GENERATED REFERENCE -->"
#: click's width in an 80-column terminal (it leaves two columns free)
HELP_WIDTH = 78
_REGENERATE = "python scripts/cli_reference.py --write"


class StaleReferenceError(Exception):
    """docs/cli.md has no generated block, or a malformed one."""


@dataclass(frozen=True)
class Entry:
    """One command of the tree: its path below the root, the command, its context."""

    path: tuple[str, ...]
    command: _click.Command
    context: _click.Context

    @property
    def title(self) -> str:
        """``mahavishnu-dlq processor run``; ``mahavishnu-dlq`` for the root."""
        return " ".join((PROG, *self.path))

    @property
    def anchor(self) -> str:
        """The heading's anchor, as GitHub and MkDocs spell it."""
        return "-".join((PROG, *self.path))


def walk(width: int = HELP_WIDTH) -> Iterator[Entry]:
    """The root, then every command in the order its group lists them, depth first.

    Each context is made as the CLI makes it (with the command's context settings),
    but with resilient parsing and no arguments, so no callback runs and a missing
    required argument is no error; ``width`` fixes the help's width.
    """
    root = typer.main.get_command(build_app())
    context = root.make_context(PROG, [], resilient_parsing=True, terminal_width=width)
    yield from _walk(root, context, ())


def _walk(
    command: _click.Command, context: _click.Context, path: tuple[str, ...]
) -> Iterator[Entry]:
    yield Entry(path, command, context)
    if not isinstance(command, TyperGroup):
        return
    for name in command.list_commands(context):
        sub = command.get_command(context, name)
        if sub is None or sub.hidden:
            continue
        sub_context = sub.make_context(name, [], parent=context, resilient_parsing=True)
        yield from _walk(sub, sub_context, (*path, name))


def render_reference(width: int = HELP_WIDTH) -> str:
    """The generated block, markers excluded: an index, then one section per command."""
    entries = list(walk(width))
    index = " · ".join(f"[`{' '.join(e.path) or PROG}`](#{e.anchor})" for e in entries)
    parts = [
        "<!-- Do not edit between these markers: run `" + _REGENERATE + "`. -->",
        index,
    ]
    for entry in entries:
        text = entry.command.get_help(entry.context)
        parts.append(f"### {entry.title}\n\n```text\n{text}\n```")
    return "\n\n".join(parts) + "\n"


def _markers(lines: Sequence[str]) -> tuple[int, int]:
    begin = [n for n, line in enumerate(lines) if line.strip() == BEGIN]
    end = [n for n, line in enumerate(lines) if line.strip() == END]
    if len(begin) != 1 or len(end) != 1 or begin[0] > end[0]:
        raise StaleReferenceError(
            f"expected the line {BEGIN!r} once, then the line {END!r} once "
            f"(found {len(begin)} and {len(end)})"
        )
    return begin[0], end[0]


def generated_block(document: str) -> str:
    """The text between the marker lines of ``document`` (StaleReferenceError without)."""
    lines = document.splitlines(keepends=True)
    begin, end = _markers(lines)
    return "".join(lines[begin + 1 : end]).strip("\n") + "\n"


def splice(document: str, block: str) -> str:
    """``document`` with the text between its marker lines replaced by ``block``."""
    lines = document.splitlines(keepends=True)
    begin, end = _markers(lines)
    head, tail = "".join(lines[: begin + 1]), "".join(lines[end:])
    return f"{head}\n{block.strip(chr(10))}\n\n{tail}"


def _sections(block: str) -> dict[str, str]:
    sections: dict[str, str] = {}
    title = ""
    for line in block.splitlines():
        if line.startswith("### "):
            title = line.removeprefix("### ")
            sections[title] = ""
        elif title:
            sections[title] += line + "\n"
    return sections


def check(document: Path = DOCUMENT, width: int = HELP_WIDTH) -> list[str]:
    """What is out of date in ``document``'s generated block (empty when it is current)."""
    try:
        current = generated_block(document.read_text(encoding="utf-8"))
    except (OSError, StaleReferenceError) as exc:
        return [f"{document}: {exc}; add the marker lines, then run {_REGENERATE}"]
    expected = render_reference(width)
    if current == expected:
        return []
    old, new = _sections(current), _sections(expected)
    changed = [title for title in new if title in old and old[title] != new[title]]
    problems = [f"{document} is out of date: run {_REGENERATE}"]
    problems += [f"  missing section: {title}" for title in new if title not in old]
    problems += [f"  section no command has: {title}" for title in old if title not in new]
    problems += [f"  help changed: {title}" for title in changed]
    diff = difflib.unified_diff(
        current.splitlines(),
        expected.splitlines(),
        f"{document.name} (generated block)",
        "scripts/cli_reference.py",
        lineterm="",
    )
    return [*problems, *diff]


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="write the block into the file")
    mode.add_argument("--check", action="store_true", help="exit 1 if the file is out of date")
    parser.add_argument(
        "--file", type=Path, default=DOCUMENT, help="the document (default: docs/cli.md)"
    )
    args = parser.parse_args(argv)
    document: Path = args.file
    if args.check:
        problems = check(document)
        if problems:
            sys.stderr.write("\n".join(problems) + "\n")
            return 1
        sys.stdout.write(f"{document} is up to date\n")
        return 0
    block = render_reference()
    if not args.write:
        sys.stdout.write(block)
        return 0
    try:
        text = document.read_text(encoding="utf-8")
        updated = splice(text, block)
    except (OSError, StaleReferenceError) as exc:
        sys.stderr.write(f"{document}: {exc}\n")
        return 1
    if updated != text:
        document.write_text(updated, encoding="utf-8", newline="\n")
        sys.stdout.write(f"{document}: reference updated\n")
    else:
        sys.stdout.write(f"{document} is up to date\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
