"""Every runnable Python example in ``README.md`` and ``docs/*.md`` runs, and prints
what the page says it prints, so the docs cannot drift from the code.

The convention (docs/index.md says it in one sentence):

- **Which blocks run.** Every fenced ```` ```python ```` block runs, unless the line
  just before its fence is an HTML comment ``<!-- fragment: <the setup it needs> -->``
  (a running OpenSearch node, a handler defined elsewhere, a web server ...): a
  fragment is shown to the reader and never run. A block marked
  ``<!-- opensearch: ... -->`` instead runs against the test session's OpenSearch node
  (``MAHAVISHNU_DLQ_OPENSEARCH__HOSTS`` names it, ``MAHAVISHNU_DLQ_OPENSEARCH__INDEX`` a
  fresh index, dropped after), as an ``opensearch`` test. Shell blocks (```` ```bash ````,
  ```` ```console ````) are not run here: they need a configured queue, a node or a
  second terminal; the CLI's own tests cover the commands.
- **How a block runs.** As a script of its own, in a fresh ``python`` process with a
  timeout, in an empty temporary directory that holds a copy of ``settings/`` (so
  "run from the repository root" examples find their files and nothing they write
  lands in the tree), with ``HOME`` and ``XDG_STATE_HOME`` in that directory and no
  ``MAHAVISHNU_DLQ_*`` variables from the caller's environment.
- **Files an example reads.** A non-Python block whose lead-in paragraph ends with a
  file name in backticks and a colon (```` `bad.yaml`: ````, "with this
  ```` `rules.yaml` ````:") is written to that file for the Python blocks after it.
- **Expected output.** When the next fenced block after a Python block is untagged or
  ```` ```text ````, and at most one paragraph ending in a colon (``Output:``) sits
  between them, that block is what the example prints: its stdout, then its stderr
  (log records, a traceback), compared line by line after trailing blanks are
  stripped. Such an example may end in an uncaught exception on purpose (its output
  shows it); without an expected output it must exit with status 0. Variables written
  as ```` `MAHAVISHNU_DLQ_NAME=value` ```` in that paragraph ("Run with ...") are set
  for the run. The normalisations: the script's own path shows as ``example.py``; a
  line ``...`` stands for any number of lines (the part of a traceback in the
  library); ``<any>`` stands for text that differs from run to run, should a page
  ever need it (today's pages print fixed ids and a ``FakeClock``'s times instead).
  Nothing else is normalised.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import pytest

from mahavishnu_dlq.storage.opensearch import OpenSearchStore

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TIMEOUT_SECONDS = 60
_FENCE = re.compile(r"^```(\w*)\s*$")
_FRAGMENT = re.compile(r"^<!--\s*fragment\b.*-->\s*$")
_OPENSEARCH = re.compile(r"^<!--\s*opensearch:.*-->\s*$")
_FILE_LEAD = re.compile(r"`([\w./-]+)`:$")
_ENV = re.compile(r"`(MAHAVISHNU_DLQ_\w+=[^`\s]*(?:\s+MAHAVISHNU_DLQ_\w+=[^`\s]*)*)`")
_ANY = "<any>"


@dataclass
class Block:
    """One fenced block: its language, text, first line (1-based), the paragraphs
    between the block before it and this one, the last of them, and the line just
    before its fence."""

    lang: str
    text: str
    line: int
    between: list[str]
    lead: str
    before: str


@dataclass
class Example:
    """A Python block to run, with what it needs and what it should print."""

    page: Path
    line: int
    code: str
    fragment: bool
    opensearch: bool
    files: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    expected: str | None = None

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(text: str) -> list[Block]:
    """The fenced blocks of a page, top-level ones only (not indented in a list)."""
    lines = text.splitlines()
    found: list[Block] = []
    last_end = 0
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if match is None:
            i += 1
            continue
        end = i + 1
        while end < len(lines) and not lines[end].startswith("```"):
            end += 1
        text_between = "\n".join(lines[last_end:i])
        between = [p.strip() for p in re.split(r"\n\s*\n", text_between) if p.strip()]
        lead = between[-1] if between else ""
        before = lines[i - 1].strip() if i > 0 else ""
        body = "\n".join(lines[i + 1 : end]) + "\n"
        found.append(Block(match.group(1), body, i + 1, between, lead, before))
        last_end = end + 1
        i = end + 1
    return found


def examples(page: Path, text: str | None = None) -> list[Example]:
    """The Python examples of one page (``text``, or the file), with their files,
    environment and output."""
    found: list[Example] = []
    files: dict[str, str] = {}
    page_blocks = blocks(page.read_text(encoding="utf-8") if text is None else text)
    for n, block in enumerate(page_blocks):
        file_lead = _FILE_LEAD.search(block.lead)
        if block.lang != "python" and file_lead is not None:
            files[file_lead.group(1)] = block.text
            continue
        if block.lang != "python":
            continue
        example = Example(
            page,
            block.line,
            block.text,
            fragment=bool(_FRAGMENT.match(block.before)),
            opensearch=bool(_OPENSEARCH.match(block.before)),
            files=dict(files),
        )
        if n + 1 < len(page_blocks):
            after = page_blocks[n + 1]
            lead_ok = not after.between or (len(after.between) == 1 and after.lead.endswith(":"))
            if after.lang in ("", "text") and lead_ok:
                example.expected = after.text
                for group in _ENV.findall(after.lead):
                    for pair in group.split():
                        key, _, value = pair.partition("=")
                        example.env[key] = value
        found.append(example)
    return found


ALL = [example for page in PAGES for example in examples(page)]
RUNNABLE = [example for example in ALL if not (example.fragment or example.opensearch)]
ON_OPENSEARCH = [example for example in ALL if example.opensearch]


def _lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.strip("\n").splitlines()]


def _pattern(expected: str) -> re.Pattern[str]:
    """``expected`` as a regular expression: a line ``...`` is any lines, ``<any>`` any
    text within a line."""
    parts: list[str] = []
    for line in _lines(expected):
        if line.strip() == "...":
            parts.append(r"(?:[^\n]*\n)*?")
        else:
            parts.append(".*?".join(re.escape(piece) for piece in line.split(_ANY)) + "\n")
    return re.compile("".join(parts))


def run(example: Example, tmp_path: Path, **extra_env: str) -> tuple[int, str]:
    """Run one example as described in the module docstring: its exit status, and its
    stdout followed by its stderr."""
    shutil.copytree(ROOT / "settings", tmp_path / "settings")
    for name, content in example.files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(content, encoding="utf-8")
    script = tmp_path / "example.py"
    script.write_text(example.code, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAHAVISHNU_DLQ_")}
    env.pop("PYTHONWARNINGS", None)
    env.update(
        HOME=str(tmp_path / "home"),
        XDG_STATE_HOME=str(tmp_path / "state"),
        PYTHONPATH=str(ROOT),
        COLUMNS="100",
        **example.env,
        **extra_env,
    )
    completed = subprocess.run(  # noqa: S603 - our own interpreter on the page's code
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_SECONDS,
        check=False,
    )
    output = (completed.stdout + completed.stderr).replace(str(script), "example.py")
    return completed.returncode, output


def check(example: Example, status: int, got: str) -> None:
    """The example exited 0, or printed exactly what the page shows."""
    if example.expected is None:
        assert status == 0, f"{example.name} failed:\n{got}"
        return
    got_text = "".join(line + "\n" for line in _lines(got))
    assert _pattern(example.expected).fullmatch(got_text), (
        f"{example.name} prints\n{got}\nbut the page shows\n{example.expected}"
    )


@pytest.mark.parametrize("example", RUNNABLE, ids=[e.name for e in RUNNABLE])
def test_example_runs_and_prints_what_the_page_shows(example: Example, tmp_path: Path) -> None:
    check(example, *run(example, tmp_path))


@pytest.mark.opensearch
@pytest.mark.parametrize("example", ON_OPENSEARCH, ids=[e.name for e in ON_OPENSEARCH])
def test_opensearch_example_runs_on_the_test_node(
    example: Example, tmp_path: Path, opensearch_url: str
) -> None:
    index = f"docs-{uuid.uuid4().hex[:8]}-tasks"
    try:
        status, got = run(
            example,
            tmp_path,
            MAHAVISHNU_DLQ_OPENSEARCH__HOSTS=json.dumps([opensearch_url]),
            MAHAVISHNU_DLQ_OPENSEARCH__INDEX=index,
        )
    finally:
        anyio.run(_drop, opensearch_url, index, backend="asyncio")
    check(example, status, got)


async def _drop(url: str, index: str) -> None:
    store = OpenSearchStore(hosts=[url], index=index)
    try:
        await store.drop()
    finally:
        await store.close()


_SAMPLE = """\
`bad.yaml`:

```yaml
max_size: 50
```

<!-- fragment: needs a running OpenSearch node -->
```python
print("never run")
```

```text
not an output: the block above is a fragment
```

```python
print("run")
```

Run with `MAHAVISHNU_DLQ_MAX_SIZE=2000 MAHAVISHNU_DLQ_STORE=memory`:

```
run
```

```python
print("no output shown")
```

Some prose.

More prose:

```
not the output: two paragraphs sit between
```
"""


def test_the_convention_is_read_as_documented() -> None:
    """Fragments, files, environment and expected outputs are found as the module
    docstring says (on a sample page)."""
    fragment, with_output, without = examples(ROOT / "sample.md", _SAMPLE)
    assert fragment.fragment
    assert not with_output.fragment
    assert with_output.files == {"bad.yaml": "max_size: 50\n"}
    assert with_output.expected == "run\n"
    assert with_output.env == {"MAHAVISHNU_DLQ_MAX_SIZE": "2000", "MAHAVISHNU_DLQ_STORE": "memory"}
    assert without.expected is None
    assert _pattern("Traceback\n...\nValueError: <any> bad\n").fullmatch(
        "Traceback\n  File x\n    raise\nValueError: order 7 bad\n"
    )
    assert not _pattern("a\nb\n").fullmatch("a\nb\nc\n")


def test_every_example_is_found() -> None:
    """No Python block hides from the extraction: none is indented (in a list), and
    the user guide's examples are found, most of them with their output."""
    for page in PAGES:
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            assert not re.match(r"^\s+```python", line), f"{page.name}:{number}: indented"
    guide = [e for e in ALL if e.page.name == "user-guide.md"]
    assert len(guide) >= 20
    assert sum(e.expected is not None for e in guide) >= 10


def test_fragments_say_what_they_need() -> None:
    """A fragment marker names its setup: ``<!-- fragment: needs ... -->``."""
    for page in PAGES:
        for block in blocks(page.read_text(encoding="utf-8")):
            if _FRAGMENT.match(block.before):
                assert re.match(r"^<!--\s*fragment:\s*\S", block.before), (
                    f"{page.name}:{block.line}: say what the fragment needs"
                )
