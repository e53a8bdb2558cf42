"""The CLI in-process, against a queue the test owns.

The memory store lives in this process, so each test builds a queue (memory
store, :class:`FakeClock`) and seeds it, puts it in
:data:`tests.unit.cli_fixtures.holder`, and drives the real command tree through
:func:`run_cli` with ``--app tests.unit.cli_fixtures:holder.dlq``; afterwards it
reads the same queue to check what the command did. Prompts are answered through
:class:`typer.testing.CliRunner` (or a patched stdin). Nothing sleeps: the queue
paces itself with the fake clock, and the CLI's "now" is pinned to it.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from functools import partial

import anyio
import pytest
import typer
from rich.console import Console

from mahavishnu_dlq.cli.arguments import parse_count
from mahavishnu_dlq.cli.common import parse_choices, parse_duration, parse_moment, parse_rate
from mahavishnu_dlq.cli.render import render_statistics
from mahavishnu_dlq.models import DeadLetterStatus, ErrorCategory
from mahavishnu_dlq.queue import DeadLetterQueue
from mahavishnu_dlq.storage.memory import MemoryStore
from mahavishnu_dlq.testing import FakeClock
from tests.unit.cli.conftest import (
    APP,
    STATS_KEYS,
    STATUSES,
    TASK_KEYS,
    Cli,
    Ran,
    enqueue,
    lease,
    raised,
    record,
)

# -- parsing helpers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30d", 30 * 86400),
        ("12h", 12 * 3600),
        ("1h30m", 5400),
        ("1h 30m", 5400),
        ("1H30M", 5400),
        ("90s", 90),
        ("15min", 900),
        ("2w", 2 * 604800),
        ("1.5h", 5400),
        ("250ms", 0.25),
        (" 45sec ", 45),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "   ", "30", "30x", "d", "-5m", "5m-", "1h30", "h1"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(typer.BadParameter, match="is not a duration") as caught:
        parse_duration(text, option="--older-than")
    assert caught.value.param_hint == "--older-than"
    assert repr(text) in str(caught.value)


def test_parse_moment_reads_iso_times_as_utc_and_ages_as_ago() -> None:
    now = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)
    utc = timezone.utc
    assert parse_moment("2026-11-20", now, option="--since") == datetime(2026, 11, 20, tzinfo=utc)
    assert parse_moment("2026-11-26T14:30:00Z", now, option="--since") == datetime(
        2026, 11, 26, 14, 30, tzinfo=utc
    )
    naive = parse_moment("2026-11-26T14:30:00", now, option="--since")
    assert naive == datetime(2026, 11, 26, 14, 30, tzinfo=utc)
    assert naive.utcoffset() == timedelta(0)
    zoned = parse_moment("2026-11-26T14:30:00+02:00", now, option="--since")
    assert zoned == datetime(2026, 11, 26, 12, 30, tzinfo=utc)
    assert parse_moment("2h", now, option="--since") == now - timedelta(hours=2)
    assert parse_moment("1d12h", now, option="--since") == now - timedelta(hours=36)
    assert parse_moment(" 90s ", now, option="--since") == now - timedelta(seconds=90)


@pytest.mark.parametrize("text", ["", "yesterday", "2026-13-45", "2026-11-26T25:00", "-2h"])
def test_parse_moment_refuses(text: str) -> None:
    now = datetime(2026, 11, 26, tzinfo=timezone.utc)
    with pytest.raises(typer.BadParameter, match="is neither a time") as caught:
        parse_moment(text, now, option="--until")
    assert caught.value.param_hint == "--until"


@pytest.mark.parametrize(
    ("text", "per_second"),
    [
        ("10", 10.0),
        ("10/s", 10.0),
        ("10 / sec", 10.0),
        ("0.5/s", 0.5),
        ("600/min", 10.0),
        ("600/m", 10.0),
        ("3600/h", 1.0),
        ("90/H", 0.025),
    ],
)
def test_parse_rate(text: str, per_second: float) -> None:
    assert parse_rate(text) == pytest.approx(per_second)


@pytest.mark.parametrize(("text", "count"), [("1", 1), ("20", 20), (" 1000 ", 1000), (7, 7)])
def test_parse_count(text: str | int, count: int) -> None:
    assert parse_count(text, option="--limit") == count


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("0", "'0' is out of range: give a number from 1 to 1,000"),
        ("1001", "'1001' is out of range"),
        ("-3", "'-3' is out of range"),
        ("many", "'many' is not a whole number: give one from 1 to 1,000"),
        ("2.5", "'2.5' is not a whole number"),
        ("", "'' is not a whole number"),
        ("9" * 100, "is not a whole number"),
    ],
)
def test_parse_count_refuses_in_the_words_of_the_other_options(text: str, problem: str) -> None:
    with pytest.raises(typer.BadParameter, match=re.escape(problem)) as caught:
        parse_count(text, option="--limit")
    assert caught.value.param_hint == "--limit"


@pytest.mark.parametrize("text", ["0", "0/s", "-1", "fast", "", "10/d", "10/", "/s"])
def test_parse_rate_refuses(text: str) -> None:
    with pytest.raises(typer.BadParameter, match="is not a rate") as caught:
        parse_rate(text)
    assert caught.value.param_hint == "--rate"


def test_parse_choices_splits_dedupes_and_ignores_case() -> None:
    values = ["pending,EXHAUSTED", "pending", " Retrying ,", ","]
    assert parse_choices(values, DeadLetterStatus, option="--status") == (
        DeadLetterStatus.PENDING,
        DeadLetterStatus.EXHAUSTED,
        DeadLetterStatus.RETRYING,
    )
    assert parse_choices(None, DeadLetterStatus, option="--status") == ()
    assert parse_choices([], ErrorCategory, option="--category") == ()
    assert parse_choices(["network"], ErrorCategory, option="--category") == (
        ErrorCategory.NETWORK,
    )


def test_parse_choices_names_the_allowed_values() -> None:
    with pytest.raises(typer.BadParameter) as caught:
        parse_choices(["pending,bogus"], DeadLetterStatus, option="--status")
    message = str(caught.value)
    assert "unknown value 'bogus'" in message
    assert "allowed: pending, retrying, exhausted, completed, archived" in message
    assert caught.value.param_hint == "--status"


# -- usage errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["bogus"], "No such command 'bogus'"),
        (["list", "--bogus"], "No such option: --bogus"),
        (["show"], "Missing argument 'TASK_ID'"),
        (["archive"], "name TASK_ID, or select tasks with filter options"),
        (["retry"], "name TASK_ID, or select tasks with filter options"),
        (["archive", "t-1", "--status", "pending"], "not both"),
        (["jobs", "list", "--state", "sleeping"], "unknown value 'sleeping'"),
        (["jobs", "list", "--limit", "0"], "--limit: '0' is out of range: give a number from 1"),
        (["jobs", "show"], "Missing argument 'JOB_ID'"),
        (["jobs", "bogus"], "No such command 'bogus'"),
        (["replay", "--wait", "soon"], "--wait"),
        (["--app"], "--app"),
        (["list", "--limit", "many"], "--limit: 'many' is not a whole number: give one from 1"),
        (["list", "--limit", "1001"], "Invalid value for --limit: '1001' is out of range"),
        (["list", "--status", "nope"], "unknown value 'nope'"),
        (["list", "--category", "cosmic"], "unknown value 'cosmic'"),
        (["list", "--since", "last tuesday"], "--since"),
        (["purge", "--older-than", "30", "--yes"], "--older-than"),
        (["replay", "--rate", "fast"], "--rate"),
        (["processor", "bogus"], "No such command 'bogus'"),
        (["processor", "run", "--concurrency", "0"], "--concurrency: '0' is out of range"),
        (["replay", "--limit", "0"], "No such option: --limit"),
        (["config", "validate"], "Missing argument 'FILE'"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(cli: Cli, argv: list[str], expected: str) -> None:
    ran = cli(*argv)
    assert ran.code == 2
    line = ran.one_error_line()
    assert line.startswith("mahavishnu-dlq")
    assert expected in line
    assert ran.out == ""


def test_no_arguments_print_help_and_exit_2(cli: Cli) -> None:
    ran = cli()
    assert ran.code == 2
    assert "Usage: mahavishnu-dlq" in ran.out
    for command in ("status", "list", "show", "retry", "replay", "archive", "purge", "clear"):
        assert re.search(rf"^\s+{command}\s", ran.out, re.MULTILINE), command
    assert ran.err == ""


def test_a_group_without_its_subcommand_prints_its_help(cli: Cli) -> None:
    ran = cli("processor")
    assert ran.code == 2
    assert "Usage: mahavishnu-dlq processor" in ran.out
    assert "run" in ran.out
    assert ran.err == ""


def test_version(cli: Cli) -> None:
    from mahavishnu_dlq import __version__  # noqa: PLC0415 - only here

    ran = cli("--version")
    assert ran.code == 0
    assert ran.out == f"mahavishnu-dlq {__version__}\n"


# -- status ----------------------------------------------------------------------------


def test_status_json_shape(cli: Cli, mixed: DeadLetterQueue) -> None:
    ran = cli(*APP, "status", "--json")
    assert ran.code == 0, ran.err
    stats = ran.json()
    assert set(stats) == STATS_KEYS
    assert stats["backend"] == "memory"
    assert stats["degraded"] is False
    assert stats["failover"] is None  # only a failover store reports its state
    assert stats["is_processor_running"] is False
    assert stats["total_stored"] == 6
    assert stats["queue_size"] == 4  # pending and exhausted
    assert stats["max_size"] == 10000
    assert isinstance(stats["utilization_percent"], float)
    assert stats["status_breakdown"] == {
        "pending": 3,
        "retrying": 0,
        "exhausted": 1,
        "completed": 1,
        "archived": 1,
    }
    assert set(stats["error_categories"]) == {c.value for c in ErrorCategory}
    assert stats["error_categories"]["validation"] == 1
    assert all(isinstance(count, int) for count in stats["retry_policies"].values())
    assert stats["lifetime_stats"]["enqueued_total"] == 6
    assert stats["oldest_pending_age_seconds"] == pytest.approx(5.0)  # the fake clock's
    fingerprints = stats["top_fingerprints"]
    assert fingerprints
    for fp in fingerprints:
        assert set(fp) == {"fingerprint", "count", "error_type", "example_error"}
        assert isinstance(fp["count"], int)


def test_status_human_output(cli: Cli, mixed: DeadLetterQueue) -> None:
    ran = cli(*APP, "status")
    assert ran.code == 0, ran.err
    out = ran.out
    assert re.search(r"backend\s+memory", out)
    assert re.search(r"open tasks\s+4 / 10000", out)
    assert re.search(r"stored\s+6\b", out)
    assert re.search(r"pending\s+3\b", out)
    assert re.search(r"exhausted\s+1\b", out)
    assert re.search(r"oldest pending\s+5\.0 s", out)
    assert "invalid row 7" in out  # an example error of a top fingerprint
    assert ran.err == ""


def test_status_leaves_out_the_lifetime_counters_of_its_own_process(
    cli: Cli, mixed: DeadLetterQueue
) -> None:
    ran = cli(*APP, "status")
    assert ran.code == 0, ran.err
    assert "enqueued_total" not in ran.out  # counted while the fixture seeded, not by status
    assert re.search(
        r"lifetime counters\s+not shown: they count this process, and no processor", ran.out
    )
    assert re.search(r"processor\s+stopped here", ran.out)
    assert re.search(r"elsewhere\s+no processor at work \(no live leases", ran.out)
    assert cli(*APP, "status", "--json").json()["lifetime_stats"]["enqueued_total"] == 6


def test_status_names_the_processors_at_work_elsewhere(cli: Cli, mixed: DeadLetterQueue) -> None:
    lease(mixed, "net-1", owner="host-a:41")
    lease(mixed, "net-2", owner="host-b:7")
    lease(mixed, "val-1", owner="host-a:41")
    ran = cli(*APP, "status")
    assert ran.code == 0, ran.err
    assert re.search(
        r"elsewhere\s+2 processors at work on 3 tasks: host-a:41 \(2\), host-b:7 \(1\)", ran.out
    )


def test_status_with_a_lease_that_has_expired_sees_no_processor(
    cli: Cli, mixed: DeadLetterQueue, clock: FakeClock
) -> None:
    lease(mixed, "net-1")
    clock.advance(601)  # past the 600 s lease: its worker is presumed dead
    ran = cli(*APP, "status")
    assert re.search(r"elsewhere\s+no processor at work", ran.out)


def test_statistics_show_the_lifetime_counters_of_a_processor_running_here() -> None:
    stats = anyio.run(DeadLetterQueue(MemoryStore()).get_statistics)
    console = Console(width=160, record=True)
    console.print(render_statistics(stats | {"is_processor_running": True}, leases={}))
    out = console.export_text()
    assert "lifetime counters" in out
    assert "enqueued_total" in out
    assert "running here" in out
    console.print(render_statistics(stats, counters=True))  # the demo: its own work
    assert "enqueued_total" in console.export_text()


# -- list ------------------------------------------------------------------------------


def _ids(ran: Ran) -> list[str]:
    assert ran.code == 0, ran.err
    return [task["task_id"] for task in ran.json()["tasks"]]


def test_list_json_shape_newest_first(cli: Cli, mixed: DeadLetterQueue) -> None:
    ran = cli(*APP, "list", "--json")
    data = ran.json()
    assert set(data) == {"tasks", "count", "cursor"}
    assert data["count"] == 6
    assert data["cursor"] is None
    assert _ids(ran) == ["arch-1", "done-1", "exh-1", "val-1", "net-2", "net-1"]
    for task in data["tasks"]:
        assert set(task) == TASK_KEYS
        assert task["status"] in STATUSES
        assert isinstance(task["retry_count"], int)
        assert isinstance(task["attempts"], list)
        assert datetime.fromisoformat(task["failed_at"]).tzinfo is not None


def test_list_human_output_names_ids_and_statuses(cli: Cli, mixed: DeadLetterQueue) -> None:
    ran = cli(*APP, "list")
    assert ran.code == 0, ran.err
    lines = ran.out.splitlines()
    for task_id, status in [
        ("net-1", "pending"),
        ("exh-1", "exhausted"),
        ("done-1", "completed"),
        ("arch-1", "archived"),
    ]:
        row = next(line for line in lines if task_id in line)
        assert status in row
    row = next(line for line in lines if "net-1" in line)
    assert "in 55.0 s" in row  # due one minute after it failed; the clock is 5 s on
    assert "ConnectionError: connection reset by peer" in row
    assert "6 tasks" in ran.out
    assert "--cursor" not in ran.out


def test_list_shows_full_dates_with_seconds(cli: Cli, mixed: DeadLetterQueue) -> None:
    ran = cli(*APP, "list")
    row = next(line for line in ran.out.splitlines() if "net-1" in line)
    assert "2026-01-01 00:00:00" in row  # failed at, to the second
    assert "network" in row


@pytest.mark.parametrize("columns", [80, 100, 120])
def test_list_at_80_columns_keeps_every_column_and_wraps_ids_and_errors(
    cli: Cli, dlq: DeadLetterQueue, monkeypatch: pytest.MonkeyPatch, columns: int
) -> None:
    long_id = "order-2026-12-06-abcdef-0123456789"
    message = "connection reset by peer while talking to upstream api.example.com"
    enqueue(dlq, long_id, error=ConnectionError(message))
    monkeypatch.setenv("COLUMNS", str(columns))
    ran = cli(*APP, "list")
    assert ran.code == 0, ran.err
    lines = ran.out.splitlines()
    assert max(len(line) for line in lines) <= columns
    for header in ("id", "status", "category", "retries", "next retry", "failed at", "error"):
        assert header in ran.out
    assert "network" in ran.out
    assert "2026-01-01" in ran.out
    assert "00:00:00" in ran.out
    # the id and the error wrap within their columns, every character kept
    header = next(line for line in lines if " error" in line)
    status_at = next(line.index("status") for line in lines if "status" in line)
    error_at, rule = header.index(" error") + 1, lines.index(header) + 1
    body = [line for line in lines[rule + 1 :] if line.strip() and "1 task" not in line]
    assert "".join(line[:status_at].strip() for line in body) == long_id
    error = "".join("".join(line[error_at:].split()) for line in body)  # wrapped or folded
    assert error == "ConnectionError:" + message.replace(" ", "")


def test_list_human_output_with_nothing_to_show(cli: Cli, dlq: DeadLetterQueue) -> None:
    ran = cli(*APP, "list")
    assert ran.code == 0
    assert "no tasks match" in ran.out


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--status", "pending"], {"net-1", "net-2", "val-1"}),
        (["-s", "completed,archived"], {"done-1", "arch-1"}),
        (["-s", "exhausted", "-s", "ARCHIVED"], {"exh-1", "arch-1"}),
        (["--category", "validation"], {"val-1"}),
        (["--workflow", "bad"], {"net-2", "arch-1"}),
        (["-w", "imports", "-w", "bad"], {"net-2", "arch-1", "val-1"}),
        (["--text", "ROW 7"], {"val-1"}),
        (["-t", "net-"], {"net-1", "net-2"}),
        (["--since", "2026-01-01T00:00:03Z"], {"exh-1", "done-1", "arch-1"}),
        (["--until", "2026-01-01T00:00:02"], {"net-1", "net-2"}),
        (["--since", "2s"], {"done-1", "arch-1", "exh-1"}),  # ages count from the fake clock
        (["-s", "pending", "--workflow", "ok"], {"net-1"}),
        (["--workflow", "nobody"], set()),
    ],
)
def test_list_filters(
    cli: Cli, mixed: DeadLetterQueue, options: list[str], expected: set[str]
) -> None:
    ran = cli(*APP, "list", "--json", *options)
    assert set(_ids(ran)) == expected
    assert ran.json()["count"] == len(expected)


def test_list_fingerprint_filter(cli: Cli, mixed: DeadLetterQueue) -> None:
    fingerprint = record(mixed, "val-1").error_fingerprint
    assert _ids(cli(*APP, "list", "--json", "--fingerprint", fingerprint)) == ["val-1"]


@pytest.mark.parametrize(("size", "pages"), [(5, 3), (4, 3), (1, 12), (12, 1), (100, 1)])
def test_list_pages_through_every_task_exactly_once(
    cli: Cli, dlq: DeadLetterQueue, clock: FakeClock, size: int, pages: int
) -> None:
    expected: list[str] = []
    for batch in range(4):  # ties on failed_at are ordered by id
        ids = [f"b{batch}-{n}" for n in range(3)]
        for task_id in ids:
            enqueue(dlq, task_id)
        expected = sorted(ids) + expected
        clock.advance(1)
    seen: list[str] = []
    cursor: str | None = None
    fetched = 0
    while True:
        more = ["--cursor", cursor] if cursor else []
        ran = cli(*APP, "list", "--json", "-n", str(size), *more)
        page = _ids(ran)
        fetched += 1
        assert 0 < len(page) <= size
        assert ran.json()["count"] == len(page)
        seen += page
        cursor = ran.json()["cursor"]
        if cursor is None:
            break
        assert fetched < 20
    assert seen == expected
    assert fetched == pages  # no empty page at the end, even when the last one is full


def test_list_human_output_shows_the_next_cursor(cli: Cli, dlq: DeadLetterQueue) -> None:
    for n in range(3):
        enqueue(dlq, f"t-{n}")
    ran = cli(*APP, "list", "-n", "2")
    assert ran.code == 0
    cursor = re.search(r"next page: add --cursor (\S+)", ran.out)
    assert cursor is not None
    assert "2 tasks" in ran.out
    assert _ids(cli(*APP, "list", "--json", "--cursor", cursor.group(1))) == ["t-2"]


@pytest.mark.parametrize("cursor", ["not-a-cursor", "eyJ4IjoxfQ", "!!!"])
def test_list_invalid_cursor_is_exit_2(cli: Cli, dlq: DeadLetterQueue, cursor: str) -> None:
    ran = cli(*APP, "list", "--cursor", cursor)
    assert ran.code == 2
    line = ran.one_error_line()
    assert "--cursor" in line
    assert "malformed cursor" in line


# -- show ------------------------------------------------------------------------------


def test_show_unknown_id_is_exit_1(cli: Cli, dlq: DeadLetterQueue) -> None:
    ran = cli(*APP, "show", "nope")
    assert ran.code == 1
    assert ran.one_error_line() == (
        "mahavishnu-dlq: no task with id 'nope' in the dead-letter queue"
    )
    assert ran.out == ""


def test_show_detail(cli: Cli, dlq: DeadLetterQueue, clock: FakeClock) -> None:
    call = partial(
        dlq.enqueue,
        "order-7",
        {"order": 7, "sku": "ABC-1"},
        ["repo-a", "repo-b"],
        raised(ConnectionError("connection reset by peer")),
        workflow="ok",
        metadata={"customer": "acme"},
    )
    anyio.run(call)
    clock.advance(15)
    ran = cli(*APP, "show", "order-7")
    assert ran.code == 0, ran.err
    out = ran.out
    assert "order-7" in out
    assert re.search(r"status\s+│?\s*pending", out) or re.search(r"status\s+pending", out)
    assert re.search(r"workflow\s+ok", out)
    assert re.search(r"category\s+network", out)
    assert "ConnectionError: connection reset by peer" in out
    assert "2026-01-01 00:01:00.000 UTC (in 45.0 s)" in out  # next retry, relative
    assert "(15.0 s ago)" in out  # failed at
    assert "repo-a, repo-b" in out
    assert "Traceback (most recent call last)" in out
    assert "raise error" in out
    assert '"order": 7' in out
    assert '"sku": "ABC-1"' in out
    assert '"customer": "acme"' in out
    assert "failure_context" in out
    assert "no retry attempts yet" in out


def test_show_names_the_lease_of_a_task_being_retried(cli: Cli, dlq: DeadLetterQueue) -> None:
    enqueue(dlq, "t-1")
    lease(dlq, "t-1")
    ran = cli(*APP, "show", "t-1")
    assert ran.code == 0, ran.err
    assert re.search(r"status\s+retrying", ran.out)
    assert re.search(r"next retry\s+none: being retried by other-worker", ran.out)
    assert re.search(r"lease\s+other-worker until 2026-01-01 00:10:00.000 UTC", ran.out)
    assert re.search(r"1\s+manual\s+00:00:00.000\s+-\s+running", ran.out)  # the attempt


def test_show_json_is_the_whole_record(cli: Cli, mixed: DeadLetterQueue) -> None:
    ran = cli(*APP, "show", "done-1", "--json")
    assert ran.code == 0, ran.err
    data = ran.json()
    assert set(data) == TASK_KEYS
    assert data == record(mixed, "done-1").model_dump(mode="json")
    assert data["status"] == "completed"
    assert data["attempts"][0]["outcome"] == "success"


def test_show_text_failure_says_there_is_no_traceback(cli: Cli, dlq: DeadLetterQueue) -> None:
    enqueue(dlq, "t-1", error="disk quota exceeded")
    ran = cli(*APP, "show", "t-1")
    assert ran.code == 0
    assert "no traceback" in ran.out
