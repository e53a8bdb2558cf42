r"""The CLI against hostile input: stored text, arguments, ``--app`` objects, records.

- **Terminal escaping.** Records whose ids, workflows, repos, errors, tracebacks,
  input and metadata hold escape sequences (clear screen ``ESC [2J``, OSC 52
  clipboard writes, OSC 0 window titles), C1 controls, bidi overrides and lone
  surrogates are shown by every command with those characters written out
  (``\x1b[2J``), never raw; ``--json`` stays exact JSON.
- **Hostile arguments.** Every bad argument is one line on stderr and exit status
  2, never a traceback: durations past a century, rates out of range, deep or long
  cursors, impossible ids, long filters, odd files for ``--config``, ``--app``
  objects that raise.
- **Unreadable records.** ``show`` prints the stored form and why it cannot be
  read (exit 1), ``status`` counts them, ``retry``/``archive`` say so in one line.

The CLI runs in-process on a memory-store queue the test owns (see
:mod:`tests.unit.cli_fixtures`); stdout and stderr are captured as strict UTF-8
text, so a lone surrogate that reached them would fail the write.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from mahavishnu_dlq.cli import terminal
from mahavishnu_dlq.cli.common import emit_json
from mahavishnu_dlq.cli.render import render_task
from mahavishnu_dlq.cli.terminal import escape_block, escape_json, escape_line
from mahavishnu_dlq.queue import DeadLetterQueue
from tests.unit.cli_hostile.conftest import (
    APP,
    CLEAR,
    CLIPBOARD,
    CSI,
    HOSTILE,
    HOSTILE_ID,
    MODULE,
    RAW,
    RLO,
    SHOWN,
    SURROGATE_ID,
    TITLE,
    Cli,
    assert_clean,
    assert_shown,
)

# -- the escaper ---------------------------------------------------------------------------


def test_escape_line_writes_every_control_out() -> None:
    assert escape_line(HOSTILE) == SHOWN
    assert escape_line("\x00\x7f\x85\x9b\x9d") == r"\x00\x7f\x85\x9b\x9d"
    assert (
        escape_line("a\tb\u200e\u200f\u2066\u2069\u061c") == r"a\tb\u200e\u200f\u2066\u2069\u061c"
    )
    assert escape_line("\u2028\u2029\ud800\udfff") == r"\u2028\u2029\ud800\udfff"


def test_escape_block_keeps_newlines_and_tabs_only() -> None:
    text = f"Traceback:\n\tline {CLEAR}\r\n{RLO}end"
    assert escape_block(text) == "Traceback:\n\tline \\x1b[2J\\r\n\\u202eend"


def test_escape_leaves_printable_text_as_it_is() -> None:
    text = r"Zeitüberschreitung ✓ 東京 C:\temp\new 'a\nb' 😀 ä"
    assert escape_line(text) is text
    assert escape_block(text) is text


def test_escape_json_keeps_json_exact() -> None:
    data = {f"k{CLEAR}": [HOSTILE, "\udcff", "ok ü", "\u2028"]}
    text = escape_json(json.dumps(data, ensure_ascii=False, indent=2))
    assert_clean(text)
    assert json.loads(text) == data
    assert r"\u001b[2J" in text
    assert r"\u009b31m" in text
    assert r"\udcff" in text
    assert "ok ü" in text  # readable Unicode stays


def test_emit_json_writes_a_lone_surrogate_to_a_strict_utf8_stream(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="utf-8", errors="strict", write_through=True)
    monkeypatch.setattr("sys.stdout", stream)
    emit_json({"error": "bad \udcff", "ok": "ü"})
    text = raw.getvalue().decode("utf-8")
    assert r"\udcff" in text
    assert json.loads(text) == {"error": "bad \udcff", "ok": "ü"}


#: What the brief of the escaper names, written out again here as the test's oracle.
HOSTILE_CODES = [
    *range(0x20),  # C0
    *range(0x7F, 0xA0),  # DEL, C1
    0x061C,
    0x200E,
    0x200F,
    *range(0x202A, 0x202F),
    *range(0x2066, 0x206A),
    0x2028,
    0x2029,
    *range(0xD800, 0xE000),  # surrogates
]
UNSAFE_CHARS = st.sampled_from([chr(code) for code in HOSTILE_CODES])


def test_the_escaped_set_is_exactly_the_hostile_one() -> None:
    assert frozenset(HOSTILE_CODES) == terminal.UNSAFE
    for code in HOSTILE_CODES:
        assert RAW.search(escape_line(chr(code))) is None
        assert escape_line(chr(code)) != chr(code)


BIDI = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
#: Anything but controls (C0, DEL, C1), surrogates, line/paragraph separators and bidi
#: controls: backslashes, format characters such as U+200D, every script.
SAFE_TEXT = st.text(
    st.characters(exclude_categories=["Cc", "Cs", "Zl", "Zp"], exclude_characters=BIDI)
)


@given(st.text(st.one_of(st.characters(), UNSAFE_CHARS)))
def test_escape_line_output_has_nothing_raw(text: str) -> None:
    shown = escape_line(text)
    assert_clean(shown)
    assert "\n" not in shown
    assert "\t" not in shown


@given(st.text(st.one_of(st.characters(), UNSAFE_CHARS, st.just("\n"))))
def test_escape_block_keeps_the_lines(text: str) -> None:
    shown = escape_block(text)
    assert_clean(shown)
    assert shown.split("\n") == [escape_block(line) for line in text.split("\n")]


@given(SAFE_TEXT)
def test_printable_text_passes_unchanged(text: str) -> None:
    assert escape_line(text) == text
    assert escape_block(text) == text


@given(st.lists(SAFE_TEXT, max_size=5))
def test_a_block_of_printable_lines_passes_unchanged(lines: list[str]) -> None:
    text = "\n".join(lines)
    assert escape_block(text) == text


@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.text(st.characters(exclude_categories=["Cs"])),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
        max_leaves=10,
    )
)
def test_dumps_is_exact_json_with_nothing_raw(data: Any) -> None:
    text = terminal.dumps(data)
    assert_clean(text)
    assert json.loads(text) == data


def test_text_of_never_raises() -> None:
    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert terminal.text_of(Unprintable()) == "<Unprintable that cannot be shown>"


# -- every command escapes what it shows -----------------------------------------------------


def test_show_escapes_every_field(cli: Cli, hostile: DeadLetterQueue) -> None:
    ran = cli(*APP, "show", HOSTILE_ID)
    assert ran.code == 0, ran.err
    assert_shown(
        ran,
        r"t-\x1b[2J",  # id and panel title
        r"wf\x1b]0;pwned\x07",  # workflow
        r"repo\x1b]0;pwned\x07",  # repos
        r"boom \x1b[2J \x1b]52;c;aGVsbG8=\x07",  # error, on one line
        r"\x9b31m \u202e\nsecond line\rover",
        r'"key\u001b[2J": "value\u009b31m\u202e"',  # task input: exact JSON
        r'"note": "\u001b]52;c;aGVsbG8=\u0007\u2028\u0085"',  # metadata
        "Traceback (most recent call last):",
    )
    # the traceback is a block: its own lines stay lines, a carriage return is shown
    assert re.search(r"^.*ConnectionError: boom \\x1b\[2J.*$", ran.out, re.MULTILINE)
    assert re.search(r"^[│ ]*second line\\rover", ran.out, re.MULTILINE)


def test_show_json_is_exact(cli: Cli, hostile: DeadLetterQueue) -> None:
    ran = cli(*APP, "show", HOSTILE_ID, "--json")
    assert ran.code == 0, ran.err
    assert_clean(ran.out)
    task = ran.json()
    assert task["task_id"] == HOSTILE_ID
    assert task["error"] == HOSTILE
    assert task["task"] == {f"key{CLEAR}": f"value{CSI}{RLO}"}
    assert task["metadata"]["note"] == f"{CLIPBOARD}\u2028\x85"


def test_list_cells_are_one_escaped_line(cli: Cli, hostile: DeadLetterQueue) -> None:
    ran = cli(*APP, "list")
    assert ran.code == 0, ran.err
    assert_shown(ran, r"t-\x1b[2J", r"ConnectionError: boom \x1b[2J")
    row = next(line for line in ran.out.splitlines() if "t-\\x1b[2J" in line)
    assert "pending" in row
    assert "second line" not in ran.out.replace(row, "")  # no second row for the error


def test_status_escapes_fingerprints_and_backend(cli: Cli, hostile: DeadLetterQueue) -> None:
    hostile.store.backend = f"memory{TITLE}"
    ran = cli(*APP, "status")
    assert ran.code == 0, ran.err
    assert_shown(ran, r"boom \x1b[2J", r"memory\x1b]0;pwned\x07")
    assert "unreadable" not in ran.out  # none here


def test_replay_dry_run_and_report_escape_ids(cli: Cli, hostile: DeadLetterQueue) -> None:
    ran = cli(*APP, "replay", "--dry-run")
    assert ran.code == 0, ran.err
    assert_shown(ran, r"first: t-\x1b[2J", r"wf\x1b]0;pwned\x07")


def test_a_job_report_escapes_failed_ids_and_errors(cli: Cli, hostile: DeadLetterQueue) -> None:
    def evil(task: dict[str, Any], repos: list[str]) -> Any:
        raise ConnectionError(f"again {TITLE}\nnext")

    hostile.register_handler(f"wf{TITLE}", evil)
    ran = cli(*APP, "retry", "--text", "t-")
    assert ran.code == 1
    assert_shown(ran, "1 matched, 0 succeeded, 0 skipped, 1 failed")
    assert_shown(ran, r"t-\x1b[2J", r"again \x1b]0;pwned\x07\nnext")
    assert_clean(ran.err)
    job_id = next(word for word in ran.out.split() if word.startswith("job-"))
    shown = cli(*APP, "jobs", "show", job_id)
    assert shown.code == 0, shown.err
    assert_shown(shown, r"t-\x1b[2J", r"again \x1b]0;pwned\x07\nnext", r"text 't-'")


def test_a_filter_is_escaped_where_a_job_shows_it(cli: Cli, hostile: DeadLetterQueue) -> None:
    ran = cli(*APP, "archive", "--text", f"t-{CLEAR}", "--background")
    assert ran.code == 0, ran.err
    job_id = ran.out.strip()
    assert_clean(ran.err)
    shown = cli(*APP, "jobs", "show", job_id)
    assert shown.code == 0, shown.err
    assert_shown(shown, r"text 't-\x1b[2J'")
    listed = cli(*APP, "jobs", "list")
    assert_clean(listed.out)
    assert job_id in listed.out


@pytest.mark.parametrize("job_id", [f"job-{CLEAR}", f"job-{RLO}", "j" * 129, ""])
def test_a_job_id_that_cannot_be_is_a_usage_error(
    cli: Cli, dlq: DeadLetterQueue, job_id: str
) -> None:
    for command in ("show", "pause", "resume", "cancel"):
        ran = cli(*APP, "jobs", command, job_id)
        assert ran.code == 2
        assert "JOB_ID" in ran.one_error_line()


def test_retry_output_escapes_the_error(cli: Cli, hostile: DeadLetterQueue) -> None:
    def evil(task: dict[str, Any], repos: list[str]) -> Any:
        raise ConnectionError(f"again {TITLE}\nnext")

    hostile.register_handler(f"wf{TITLE}", evil)
    ran = cli(*APP, "retry", HOSTILE_ID)
    assert ran.code == 1
    assert_shown(ran, r"t-\x1b[2J", r"again \x1b]0;pwned\x07\nnext")


def test_archive_lines_escape_ids(cli: Cli, hostile: DeadLetterQueue) -> None:
    ran = cli(*APP, "archive", HOSTILE_ID, f"nope{TITLE}")
    assert ran.code == 1
    assert ran.out == "archived t-\\x1b[2J\n"
    assert ran.one_error_line() == r"mahavishnu-dlq: nope\x1b]0;pwned\x07: not found"


def test_purge_and_clear_messages_are_clean(cli: Cli, hostile: DeadLetterQueue) -> None:
    ran = cli(*APP, "purge", "--status", "pending", "--dry-run")
    assert ran.code == 0, ran.err
    assert_shown(ran, "would purge 1 task(s); nothing was changed", r"first: t-\x1b[2J")
    ran = cli(*APP, "clear", "--yes")
    assert (ran.code, ran.out) == (0, "cleared 1 task(s)\n")


def test_error_lines_escape_what_they_quote(cli: Cli, dlq: DeadLetterQueue) -> None:
    ran = cli(*APP, "show", f"nope{CLEAR}{CSI}")
    assert ran.code == 1
    assert ran.one_error_line() == (
        r"mahavishnu-dlq: no task with id 'nope\x1b[2J\x9b31m' in the dead-letter queue"
    )
    ran = cli(f"bogus{CLEAR}")
    assert ran.code == 2
    assert r"No such command 'bogus\x1b[2J'" in ran.one_error_line()


def test_a_surrogate_in_a_record_is_shown_written_out(
    cli: Cli, surrogates: DeadLetterQueue
) -> None:
    ran = cli(*APP, "show", SURROGATE_ID)
    assert ran.code == 0, ran.err
    assert_shown(ran, r"wf-\udcff", r"bad bytes \udcff", r"repo-\udcfd", r'"file-\udcfe"')
    ran = cli(*APP, "list")
    assert ran.code == 0, ran.err
    assert_shown(ran, r"bad bytes \udcff")


@pytest.mark.parametrize(
    "argv",
    [("show", SURROGATE_ID, "--json"), ("list", "--json"), ("status", "--json")],
    ids=["show", "list", "status"],
)
def test_json_with_a_surrogate_is_written(
    cli: Cli, surrogates: DeadLetterQueue, argv: tuple[str, ...]
) -> None:
    ran = cli(*APP, *argv)
    assert ran.code == 0, ran.err
    assert_clean(ran.out)
    assert r"\udcff" in ran.out
    data = ran.json()
    if argv[0] == "status":
        assert data["top_fingerprints"][0]["example_error"] == "bad bytes \udcff"
    else:
        task = data if argv[0] == "show" else data["tasks"][0]
        assert task["error"] == "bad bytes \udcff"


def test_config_show_escapes_yaml_and_stays_yaml(cli: Cli, tmp_path: Path) -> None:
    config = tmp_path / "dlq.yaml"
    config.write_text('processor:\n  worker_id: "w\\e[2J\\u202e\\N\\L"\n', encoding="utf-8")
    ran = cli("--config", str(config), "config", "show")
    assert ran.code == 0, ran.err
    assert_clean(ran.out)
    shown = yaml.safe_load(ran.out)
    assert shown["processor"]["worker_id"] == "w\x1b[2J\u202e\x85\u2028"


def test_config_show_names_a_hostile_file_name_escaped(cli: Cli, tmp_path: Path) -> None:
    config = tmp_path / f"dlq{CLEAR}.yaml"
    config.write_text("max_size: 500\n", encoding="utf-8")
    ran = cli("--config", str(config), "config", "show")
    assert ran.code == 0, ran.err
    assert_shown(ran, r"dlq\x1b[2J.yaml")
    ran = cli("config", "validate", str(config))
    assert ran.code == 0, ran.err
    assert_shown(ran, r"dlq\x1b[2J.yaml: valid")


def test_log_lines_are_escaped(cli: Cli, dlq: DeadLetterQueue) -> None:
    ran = cli("--app", f"{MODULE}:logging_factory", "status", "--json")
    assert ran.code == 0, ran.err
    assert_clean(ran.err)
    assert r"loaded \x1b[2J\x1b]0;pwned\x07" in ran.err
    assert r"ValueError: inner \x1b[2J" in ran.err  # the traceback, as a block
    assert "Traceback (most recent call last)" in ran.err


def test_the_demo_panels_escape_the_example_task(surrogates: DeadLetterQueue) -> None:
    task = anyio.run(surrogates.get_task, SURROGATE_ID)
    assert task is not None
    hostile_task = task.model_copy(update={"task_id": f"x{CLEAR}", "error": HOSTILE})
    buffer = io.StringIO()
    console = Console(file=buffer, width=200)
    console.print(render_task(hostile_task, f"example · network · {hostile_task.task_id}"))
    out = buffer.getvalue()
    assert_clean(out)
    assert r"example · network · x\x1b[2J" in out
    assert r"boom \x1b[2J" in out
    assert r"wf-\udcff" in out
