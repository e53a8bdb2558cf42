"""The version is written in one place, ``mahavishnu_dlq/_version.py``: the build reads it
(``dynamic = ["version"]``), the package re-exports it, the installed metadata agrees, and no
other source file writes the version string again."""

from __future__ import annotations

import importlib
import importlib.metadata
import re
import sys
from pathlib import Path
from typing import Any

from packaging.version import Version

import mahavishnu_dlq
from mahavishnu_dlq import _version

ROOT = Path(__file__).resolve().parents[2]
VERSION_FILE = ROOT / "mahavishnu_dlq" / "_version.py"
#: Sources that must read the version instead of writing it.
SOURCES = ("mahavishnu_dlq", "tests", "benchmarks", "scripts", "examples")


def _pyproject() -> dict[str, Any]:
    # tomllib is Python 3.11+; pytest depends on tomli before that
    toml = importlib.import_module("tomllib" if sys.version_info >= (3, 11) else "tomli")
    with (ROOT / "pyproject.toml").open("rb") as file:
        loaded: dict[str, Any] = toml.load(file)
    return loaded


def test_the_build_reads_the_version_from_the_version_module() -> None:
    pyproject = _pyproject()
    assert "version" not in pyproject["project"]
    assert pyproject["project"]["dynamic"] == ["version"]
    path = pyproject["tool"]["hatch"]["version"]["path"]
    assert ROOT / path == VERSION_FILE


def test_the_package_and_its_metadata_give_that_version() -> None:
    assert mahavishnu_dlq.__version__ is _version.__version__
    assert str(Version(mahavishnu_dlq.__version__)) == mahavishnu_dlq.__version__  # PEP 440
    # the metadata of the install in this environment, written by the build from _version.py
    assert importlib.metadata.version("mahavishnu-dlq") == mahavishnu_dlq.__version__


def test_the_version_string_is_written_once() -> None:
    literal = re.compile(rf"""["']{re.escape(mahavishnu_dlq.__version__)}["']""")
    assignment = re.compile(r"^\s*__version__\s*[:=]", re.MULTILINE)
    writers = []
    for top in SOURCES:
        for path in sorted((ROOT / top).rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            if path != VERSION_FILE and (literal.search(text) or assignment.search(text)):
                writers.append(str(path.relative_to(ROOT)))
    assert writers == [], "import __version__ from mahavishnu_dlq instead"
    assert len(assignment.findall(VERSION_FILE.read_text(encoding="utf-8"))) == 1


def test_the_changelog_has_a_section_for_the_version() -> None:
    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    headings = re.findall(r"^## \[([^\]]+)\]", text, re.MULTILINE)
    assert headings[0] == "Unreleased"
    assert mahavishnu_dlq.__version__ in headings
