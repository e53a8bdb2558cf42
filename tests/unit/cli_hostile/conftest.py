"""What the hostile-input CLI tests share: hostile strings and the check that nothing
raw reaches the terminal, running a command (its error line checked clean), the
isolated environment (autouse) and the queue under test."""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from typing import Any, Protocol

import anyio
import pytest

from mahavishnu_dlq.cli.app import run_cli
from mahavishnu_dlq.models import FailedTask
from mahavishnu_dlq.queue import DeadLetterQueue
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


def assert_shown(ran: Ran, *pieces: str) -> None:
    """Output and errors are clean, and each piece is shown, written out."""
    assert_clean(ran.out)
    assert_clean(ran.err)
    for piece in pieces:
        assert piece in ran.out + ran.err, (piece, ran.out, ran.err)
