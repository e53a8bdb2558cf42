"""Every relative link in the README and docs/ leads somewhere: the file exists and,
when the link names a heading (``page.md#anchor``), the page has that heading (its
GitHub anchor: lower case, punctuation dropped, spaces as hyphens)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
_LINK = re.compile(r"\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*$")
_FENCE = re.compile(r"^(```|~~~)")


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading's text."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _outside_code(page: Path) -> list[str]:
    lines, fenced = [], False
    for line in page.read_text(encoding="utf-8").splitlines():
        if _FENCE.match(line.strip()):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def anchors(page: Path) -> set[str]:
    found: set[str] = set()
    for line in _outside_code(page):
        match = _HEADING.match(line)
        if match:
            base = anchor(match[1])
            name, number = base, 1
            while name in found:  # repeated headings get -1, -2 …
                name = f"{base}-{number}"
                number += 1
            found.add(name)
    return found


def links(page: Path) -> list[str]:
    return [
        target
        for line in _outside_code(page)
        for target in _LINK.findall(re.sub(r"`[^`]*`", "", line))
        if not re.match(r"^[a-z]+:", target)  # http:, https:, mailto: …
    ]


def test_the_anchor_rule() -> None:
    assert anchor("5. Retry policies") == "5-retry-policies"
    assert (
        anchor("Retrying through an engine: `register_engine`, `Dispatched`, `report_outcome`")
        == "retrying-through-an-engine-register_engine-dispatched-report_outcome"
    )


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for target in links(page):
        path, _, fragment = target.partition("#")
        goal = page if not path else (page.parent / path).resolve()
        if not goal.exists():
            broken.append(f"{target}: no such file")
        elif fragment and goal.suffix == ".md" and fragment not in anchors(goal):
            broken.append(f"{target}: no heading #{fragment} in {goal.name}")
    assert broken == [], f"{page.relative_to(ROOT)}: " + "; ".join(broken)
