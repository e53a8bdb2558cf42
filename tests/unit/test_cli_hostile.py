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

import base64
import dataclasses
import io
import json
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import anyio
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from mahavishnu_dlq.cli import terminal
from mahavishnu_dlq.cli.app import run_cli
from mahavishnu_dlq.cli.common import emit_json, parse_duration, parse_moment, parse_rate
from mahavishnu_dlq.cli.render import render_source, render_task
from mahavishnu_dlq.cli.terminal import escape_block, escape_json, escape_line
from mahavishnu_dlq.errors import UnreadableRecordError
from mahavishnu_dlq.models import FailedTask, decode_cursor, encode_cursor
from mahavishnu_dlq.queue import DeadLetterQueue
from mahavishnu_dlq.settings import DLQSettings
from mahavishnu_dlq.storage.base import Mutation, StoreStatistics
from mahavishnu_dlq.storage.memory import MemoryStore
from mahavishnu_dlq.testing import FakeClock
from tests.unit import cli_fixtures as fx

MODULE = "tests.unit.cli_fixtures"
APP = ("--app", f"{MODULE}:holder.dlq")
START = datetime(2026, 1, 1, tzinfo=timezone.utc)

CLEAR = "\x1b[2J"  # clear the screen
CLIPBOARD = "\x1b]52;c;aGVsbG8=\x07"  # OSC 52: write "hello" to the clipboard
TITLE = "\x1b]0;pwned\x07"  # OSC 0: set the window title
CSI = "\x9b31m"  # C1 CSI: red, on terminals that read 8-bit controls
RLO = "\u202e"  # right-to-left override
HOSTILE = f"boom {CLEAR} {CLIPBOARD} {TITLE} {CSI} {RLO}\nsecond line\rover"
#: What the terminal shows of HOSTILE in one line.
SHOWN = r"boom \x1b[2J \x1b]52;c;aGVsbG8=\x07 \x1b]0;pwned\x07 \x9b31m \u202e\nsecond line\rover"

#: Characters that must never reach the terminal raw (newline and tab may, as layout).
RAW = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
    "\u2028\u2029\ud800-\udfff]"
)


def assert_clean(text: str) -> None:
    found = RAW.search(text)
    assert found is None, f"raw {found.group()!r} at {found.start()}: {text[:2000]!r}"


# -- running the CLI ---------------------------------------------------------------------


@dataclass(frozen=True)
class Ran:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    def one_error_line(self) -> str:
        """The single stderr line of a failed command: no traceback, nothing raw."""
        lines = self.err.splitlines()
        assert len(lines) == 1, self.err
        assert "Traceback" not in self.err
        assert_clean(self.err)
        assert lines[0].startswith("mahavishnu-dlq"), lines[0]
        return lines[0]


class Cli(Protocol):
    def __call__(self, *argv: str) -> Ran: ...


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Cli:
    """``run_cli(argv)`` with stdout and stderr captured."""

    def invoke(*argv: str) -> Ran:
        capsys.readouterr()
        code = run_cli(list(argv))
        out, err = capsys.readouterr()
        return Ran(code, out, err)

    return invoke


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No MAHAVISHNU_DLQ_* from the machine, a wide console, a fresh holder, logging restored."""
    for name in list(os.environ):
        if name.upper().startswith("MAHAVISHNU_DLQ_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setattr(fx, "holder", fx.Holder())
    root = logging.getLogger()
    loggers = [logging.getLogger(name) for name in ("mahavishnu_dlq", "opensearch")]
    levels = (root.level, [logger.level for logger in loggers])
    before = set(root.handlers)
    yield
    for handler in [h for h in root.handlers if h not in before]:
        root.removeHandler(handler)
    root.setLevel(levels[0])
    for logger, level in zip(loggers, levels[1], strict=True):
        logger.setLevel(level)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def dlq(clock: FakeClock) -> DeadLetterQueue:
    """The queue ``--app tests.unit.cli_fixtures:holder.dlq`` names."""
    queue = DeadLetterQueue(MemoryStore(), clock=clock, worker_id="cli-test")
    fx.holder.dlq = queue
    return queue


def raised(error: BaseException) -> BaseException:
    try:
        raise error
    except BaseException as exc:
        return exc


HOSTILE_ID = f"t-{CLEAR}"


@pytest.fixture
def hostile(dlq: DeadLetterQueue) -> DeadLetterQueue:
    """One pending task whose every text field is hostile, with a traceback."""
    call = partial(
        dlq.enqueue,
        HOSTILE_ID,
        {f"key{CLEAR}": f"value{CSI}{RLO}"},
        [f"repo{TITLE}"],
        raised(ConnectionError(HOSTILE)),
        workflow=f"wf{TITLE}",
        metadata={"note": f"{CLIPBOARD}\u2028\x85"},
    )
    anyio.run(call)
    return dlq


SURROGATE_ID = "s-1"


def put(dlq: DeadLetterQueue, task: FailedTask) -> None:
    """Store ``task`` as it is (the store takes what capture would refuse)."""
    anyio.run(dlq.store.mutate, task.task_id, lambda _current: task)


@pytest.fixture
def surrogates(dlq: DeadLetterQueue) -> DeadLetterQueue:
    """A record holding lone surrogates, as an older version or another writer stored."""
    put(
        dlq,
        FailedTask(
            task_id=SURROGATE_ID,
            workflow="wf-\udcff",
            task={"name": "file-\udcfe"},
            repos=["repo-\udcfd"],
            error="bad bytes \udcff",
            error_type="UnicodeDecodeError",
            error_fingerprint="f00d",
            traceback="Traceback:\n  bad \udcff\n",
            failed_at=START,
            created_at=START,
            updated_at=START,
        ),
    )
    return dlq


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


def assert_shown(ran: Ran, *pieces: str) -> None:
    """Output and errors are clean, and each piece is shown, written out."""
    assert_clean(ran.out)
    assert_clean(ran.err)
    for piece in pieces:
        assert piece in ran.out + ran.err, (piece, ran.out, ran.err)


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
    assert_shown(ran, r"would replay: t-\x1b[2J")


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
    assert (ran.code, ran.out) == (0, "would purge 1 task(s); nothing was deleted\n")
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


# -- hostile arguments: one line, exit status 2 ------------------------------------------------


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


LONG = "x" * 100_000
HUGE_NUMBER = "1" + "0" * 400  # float() makes it inf
SURROGATE = os.fsdecode(b"job-\xff")  # as argv gives undecodable bytes


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["list", "--since", "1000000000d"], "--since: '1000000000d' is too long"),
        (["list", "--until", "5000000w"], "at most a century (36500d)"),
        (["list", "--since", f"{HUGE_NUMBER}s"], "is too long"),
        (["purge", "--older-than", "1000000000d", "--yes"], "--older-than"),
        (["purge", "--older-than", "3000000d", "--yes"], "at most a century"),
        (["replay", "--rate", "0.000001/s"], "is out of range: a rate is at least 1/h"),
        (["replay", "--rate", "1/d"], "is not a rate"),
        (["replay", "--rate", "1e309/s"], "is not a rate"),
        (["replay", "--rate", f"{HUGE_NUMBER}/s"], "at most 1,000,000/s"),
        (["replay", "--rate", "nan"], "is not a rate"),
        (["replay", "--rate", "inf"], "is not a rate"),
        (["list", "--limit", str(10**30)], "--limit"),
        (["list", "--cursor", _b64(b"[" * 100_000)], "longer than 10000 characters"),
        (["list", "--cursor", _b64(b"[" * 5000)], "malformed cursor"),
        (["list", "--cursor", "W10é"], "a cursor is ASCII"),
        (["list", "--cursor", _b64(b'[true,"x"]')], "malformed cursor"),
        (["list", "--cursor", _b64(b"[1" + b"0" * 40 + b',"x"]')], "malformed cursor"),
        (["show", ""], "TASK_ID: a task id is 1-512 characters; this one is empty"),
        (["show", LONG], "this one is 100000 characters long"),
        (["show", SURROGATE], r"'job-\udcff' is not valid Unicode"),
        (["retry", "", "--app", f"{MODULE}:handlers"], "TASK_ID"),
        (["archive", "ok", LONG], "100000 characters long"),
        (["list", "--text", LONG], "--text: 'xxxx"),
        (["list", "--text", SURROGATE], "is not valid Unicode"),
        (["replay", "--workflow", "w" * 513], "at most 512 characters"),
        (["list", "--workflow", f"ok,{SURROGATE}"], "--workflow"),
        (["list", "--fingerprint", LONG], "at most 1024 characters"),
        (
            ["processor", "run", "--app", f"{MODULE}:handlers", "--interval", "inf", "--drain"],
            "--interval",
        ),
        (
            ["processor", "run", "--app", f"{MODULE}:handlers", "--interval", "nan", "--drain"],
            "--interval",
        ),
        (
            ["processor", "run", "--app", f"{MODULE}:handlers", "--interval", "3601", "--drain"],
            "--interval",
        ),
        (["demo", "--timeout", "inf"], "--timeout"),
        (["demo", "--count", str(10**30)], "--count"),
    ],
    ids=lambda value: value[:3] if isinstance(value, list) else None,
)
def test_a_hostile_argument_is_one_line_and_exit_2(
    cli: Cli, dlq: DeadLetterQueue, argv: list[str], expected: str
) -> None:
    ran = cli(*APP, *argv) if argv[0] not in ("processor", "demo") else cli(*argv)
    assert ran.code == 2, ran.err
    line = ran.one_error_line()
    assert expected in line, line
    assert len(line) < 1000, "a long argument is cut in the message"
    assert ran.out == ""


def test_an_error_line_quoting_a_huge_argument_is_cut(cli: Cli) -> None:
    ran = cli(f"{CLEAR}{LONG}")
    assert ran.code == 2
    line = ran.one_error_line()
    assert line.startswith(r"mahavishnu-dlq: No such command '\x1b[2Jxxx")
    assert "… (95" in line  # about 96,000 more characters, cut
    assert len(line) < 4200


@pytest.mark.parametrize(
    "argv",
    [
        ["--since", "0001-01-01"],
        ["--since", "0001-01-01T00:00:00+14:00"],
        ["--until", "9999-12-31T23:59:59+14:00"],
        ["--until", "9999-12-31T23:59:59.999999-14:00"],
        ["--since", "36500d"],
    ],
)
def test_times_at_the_ends_of_the_range_work(
    cli: Cli, hostile: DeadLetterQueue, argv: list[str]
) -> None:
    ran = cli(*APP, "list", *argv, "--json")
    assert ran.code == 0, ran.err
    assert ran.json()["count"] == 1
    ran = cli(*APP, "replay", "--dry-run", *argv, "--json")
    assert ran.code == 0, ran.err
    assert ran.json()["matched"] == 1


def test_an_age_before_the_year_1_is_a_usage_error(cli: Cli) -> None:
    fx.holder.dlq = DeadLetterQueue(
        MemoryStore(), clock=FakeClock(datetime(1, 1, 2, tzinfo=timezone.utc))
    )
    ran = cli(*APP, "list", "--since", "2d")
    assert ran.code == 2
    assert "'2d' ago is before the year 1" in ran.one_error_line()


def test_the_slowest_and_fastest_rates() -> None:
    assert parse_rate("1/h") == pytest.approx(1 / 3600)
    assert parse_rate("1000000/s") == 1_000_000
    assert parse_duration("36500d") == timedelta(days=36500)
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert parse_moment("36500d", now, option="--since") == now - timedelta(days=36500)


def test_a_legitimate_cursor_of_the_longest_id_is_read() -> None:
    longest = "\U0001f600" * 512  # every character 12 characters of ASCII JSON
    cursor = encode_cursor(-(2**63) + 1, longest)
    assert len(cursor) <= 10_000
    assert decode_cursor(cursor) == (-(2**63) + 1, longest)


def test_a_replay_with_an_id_of_control_characters(cli: Cli, hostile: DeadLetterQueue) -> None:
    ran = cli(*APP, "replay", "--rate", "1/h", "--text", CLEAR)
    assert ran.code == 0, ran.err
    assert_shown(ran, "1 matched, 1 replayed")


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("directory", lambda tmp: tmp),
        ("/dev/null", lambda tmp: Path(os.devnull)),
        ("binary", lambda tmp: _write(tmp / "binary.yaml", bytes(range(256)) * 4)),
        ("fifo", lambda tmp: _fifo(tmp / "fifo.yaml")),
        ("escapes", lambda tmp: _write(tmp / "esc.yaml", b"store: memory\x1b[2J\n")),
        ("big", lambda tmp: _write(tmp / "big.yaml", b"a: " + b"x" * 2_000_000 + b"\n")),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_an_unusable_config_file_is_one_line_and_exit_2(
    cli: Cli, tmp_path: Path, name: str, make: Any
) -> None:
    path = make(tmp_path)
    for argv in (("--config", str(path), "status"), ("config", "validate", str(path))):
        ran = cli(*argv)
        assert ran.code == 2, (name, ran.err)
        ran.one_error_line()
        assert ran.out == ""
    ran = cli("config", "validate", str(path), "--json")
    assert ran.code == 2
    assert ran.json()["valid"] is False


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


@pytest.mark.parametrize(
    "error",
    [
        RecursionError("maximum recursion depth"),
        MemoryError(),
        UnicodeDecodeError("utf-8", b"\xff", 0, 1, f"bad{CLEAR}"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_whatever_loading_the_settings_raises_is_one_line_and_exit_2(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, error: BaseException
) -> None:
    def load(*_args: Any, **_kwargs: Any) -> DLQSettings:
        raise error

    monkeypatch.setattr(DLQSettings, "load", load)
    monkeypatch.setattr(DLQSettings, "from_yaml", load)
    ran = cli("status")
    assert ran.code == 2
    assert f"cannot load the settings: {type(error).__name__}" in ran.one_error_line()
    ran = cli("config", "validate", "whatever.yaml")
    assert ran.code == 2
    assert type(error).__name__ in ran.one_error_line()


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            f"{MODULE}:exploding.queue",
            r"getting exploding.queue raised RuntimeError: no queue today \x1b[2J",
        ),
        (
            f"{MODULE}:unprintable_factory",
            "the factory raised _UnprintableError: <_UnprintableError that cannot be shown>",
        ),
        (f"{MODULE}:hostile_mapping", r"raised RuntimeError: cannot iterate \x1b[2J"),
        (f"{MODULE}:hostile_name", r"is a \x1b[2J\x1b]0;pwned\x07; expected a DeadLetterQueue"),
        ("builtins:exit", "the factory raised SystemExit"),
        (f"{CLEAR}:x", r"no module named '\x1b[2J'"),
        ("..:x", "importing .. failed"),
        (f"{MODULE}:" + "x" * 100_000, "has no attribute"),
    ],
    ids=["attribute", "unprintable", "mapping", "name", "exit", "module", "relative", "long"],
)
def test_a_hostile_app_is_one_line_and_exit_2(cli: Cli, spec: str, expected: str) -> None:
    ran = cli("--app", spec, "status")
    assert ran.code == 2, ran.err
    line = ran.one_error_line()
    assert expected in line, line
    assert ran.out == ""


def test_an_error_nothing_expected_is_still_one_line(cli: Cli) -> None:
    ran = cli("--app", f"{MODULE}:broken_store_factory", "status")
    assert ran.code == 1
    assert ran.one_error_line() == (
        r"mahavishnu-dlq: unexpected error: RuntimeError: disk on fire \x1b[2J\x1b]0;pwned\x07"
        " (-vv logs the traceback)"
    )


def test_unanswerable_input_to_a_question_is_no(
    cli: Cli, hostile: DeadLetterQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    stdin = io.TextIOWrapper(io.BytesIO(b"\xff\xfe y\n"), encoding="utf-8", errors="strict")
    monkeypatch.setattr("sys.stdin", stdin)
    ran = cli(*APP, "clear")
    assert ran.code == 1
    assert "aborted: nothing was changed" in ran.err
    assert len(anyio.run(partial(hostile.list_tasks, limit=10))) == 1


# -- unreadable records ------------------------------------------------------------------------


BAD = "bad-1"
BAD_SOURCE = json.dumps(
    {"task_id": BAD, "status": "resurrected", "error": f"kaput {CLEAR}", "task": {"k": "\udcff"}}
)


class UnreadableStore(MemoryStore):
    """A memory store that holds one record (``BAD``) it cannot decode."""

    def __init__(self, source: str | None = BAD_SOURCE) -> None:
        super().__init__()
        self.source = source

    def _refuse(self) -> UnreadableRecordError:
        return UnreadableRecordError(BAD, f"unknown status 'resurrected'{TITLE}", self.source)

    async def get(self, task_id: str) -> FailedTask | None:
        if task_id == BAD:
            raise self._refuse()
        return await super().get(task_id)

    async def mutate(self, task_id: str, fn: Mutation) -> FailedTask:
        if task_id == BAD:
            raise self._refuse()
        return await super().mutate(task_id, fn)

    async def statistics(self, *, top_fingerprints: int = 5) -> StoreStatistics:
        stats = await super().statistics(top_fingerprints=top_fingerprints)
        return dataclasses.replace(stats, unreadable=1)


def unreadable_queue(clock: FakeClock, source: str | None = BAD_SOURCE) -> DeadLetterQueue:
    queue = DeadLetterQueue(UnreadableStore(source), clock=clock, worker_id="cli-test")
    fx.holder.dlq = queue
    return queue


REASON_LINE = (
    r"mahavishnu-dlq: task 'bad-1' is stored but cannot be read: unknown status "
    r"'resurrected'\x1b]0;pwned\x07"
)


def test_show_of_an_unreadable_record_prints_its_stored_form(cli: Cli, clock: FakeClock) -> None:
    unreadable_queue(clock)
    ran = cli(*APP, "show", BAD)
    assert ran.code == 1
    assert ran.one_error_line() == REASON_LINE + "; its stored form is on stdout"
    assert_clean(ran.out)
    assert json.loads(ran.out) == json.loads(BAD_SOURCE)  # indented, exact
    assert '\n  "status": "resurrected",\n' in ran.out
    assert r'"error": "kaput \u001b[2J"' in ran.out


def test_show_json_of_an_unreadable_record(cli: Cli, clock: FakeClock) -> None:
    unreadable_queue(clock)
    ran = cli(*APP, "show", BAD, "--json")
    assert ran.code == 1
    assert ran.one_error_line().startswith(REASON_LINE)
    assert_clean(ran.out)
    assert ran.json() == {
        "task_id": BAD,
        "unreadable": True,
        "reason": f"unknown status 'resurrected'{TITLE}",
        "source": json.loads(BAD_SOURCE),
    }


@pytest.mark.parametrize(
    "source",
    [f"not json {CLEAR}\n\tline 2 {CSI}\udcff", "[" * 100_000, None],
    ids=["text", "deep", "none"],
)
def test_show_of_an_unreadable_record_whose_source_is_no_json(
    cli: Cli, clock: FakeClock, source: str | None
) -> None:
    unreadable_queue(clock, source)
    ran = cli(*APP, "show", BAD)
    assert ran.code == 1
    line = ran.one_error_line()
    assert line.startswith(REASON_LINE)
    assert_clean(ran.out)
    if source is None:
        assert ran.out == ""
        assert line == REASON_LINE
    else:
        assert ran.out == escape_block(source) + "\n"
        assert render_source(source) == escape_block(source)
    ran = cli(*APP, "show", BAD, "--json")
    assert ran.code == 1
    assert ran.json()["source"] == source


def test_status_counts_unreadable_records(cli: Cli, clock: FakeClock) -> None:
    unreadable_queue(clock)
    ran = cli(*APP, "status")
    assert ran.code == 0, ran.err
    assert re.search(r"unreadable\s+1 stored but cannot be read", ran.out)
    ran = cli(*APP, "status", "--json")
    assert ran.json()["unreadable"] == 1


@pytest.mark.parametrize(
    "argv",
    [("retry", BAD, "--app", f"{MODULE}:holder.dlq"), ("archive", BAD)],
    ids=["retry", "archive"],
)
def test_retry_and_archive_of_an_unreadable_record_are_one_line_exit_1(
    cli: Cli, clock: FakeClock, argv: tuple[str, ...]
) -> None:
    unreadable_queue(clock)
    ran = cli(*APP, *argv)
    assert ran.code == 1
    line = ran.one_error_line()
    assert "is stored but cannot be read: unknown status 'resurrected'\\x1b]0;pwned\\x07" in line
    assert ran.out == ""
