"""The CLI against hostile arguments (one line on stderr, exit status 2, never a
traceback) and records it cannot read (see ``test_escaping`` for how these tests run)."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import os
import re
from datetime import datetime, timedelta, timezone
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest

from mahavishnu_dlq.cli.common import parse_duration, parse_moment, parse_rate
from mahavishnu_dlq.cli.render import render_source
from mahavishnu_dlq.cli.terminal import escape_block
from mahavishnu_dlq.errors import UnreadableRecordError
from mahavishnu_dlq.models import FailedTask, decode_cursor, encode_cursor
from mahavishnu_dlq.queue import DeadLetterQueue
from mahavishnu_dlq.settings import DLQSettings
from mahavishnu_dlq.storage.base import Mutation, StoreStatistics
from mahavishnu_dlq.storage.memory import MemoryStore
from mahavishnu_dlq.testing import FakeClock
from tests.unit import cli_fixtures as fx
from tests.unit.cli_hostile.conftest import (
    APP,
    CLEAR,
    CSI,
    MODULE,
    TITLE,
    Cli,
    assert_clean,
    assert_shown,
)

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


@pytest.mark.parametrize(
    "argv",
    [
        ["replay", "--older-than", "2d"],
        ["archive", "--older-than", "2d", "--dry-run"],
        ["purge", "--older-than", "2d", "--yes"],
        ["purge", "--older-than", "2d"],
    ],
)
def test_an_older_than_before_the_year_1_is_a_usage_error(cli: Cli, argv: list[str]) -> None:
    fx.holder.dlq = DeadLetterQueue(
        MemoryStore(), clock=FakeClock(datetime(1, 1, 2, tzinfo=timezone.utc))
    )
    ran = cli(*APP, *argv)
    assert ran.code == 2
    line = ran.one_error_line()
    assert "Invalid value for --older-than: that long ago is before the year 1" in line
    assert anyio.run(fx.holder.dlq.list_jobs) == []


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
