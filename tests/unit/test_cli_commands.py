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

import io
import json
import logging
import os
import re
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import anyio
import pytest
import typer
from typer.testing import CliRunner, Result

from mahavishnu_dlq import lifecycle
from mahavishnu_dlq.cli import build_app
from mahavishnu_dlq.cli.app import run_cli
from mahavishnu_dlq.cli.common import parse_choices, parse_duration, parse_moment, parse_rate
from mahavishnu_dlq.errors import StoreUnavailableError
from mahavishnu_dlq.models import DeadLetterStatus, ErrorCategory, FailedTask, TaskFilter, TaskPage
from mahavishnu_dlq.queue import DeadLetterQueue
from mahavishnu_dlq.settings import state_dir
from mahavishnu_dlq.storage import build as build_module
from mahavishnu_dlq.storage.failover import FailoverStore
from mahavishnu_dlq.storage.journal import JournalStore
from mahavishnu_dlq.storage.memory import MemoryStore
from mahavishnu_dlq.testing import FakeClock, FlakyHandler
from tests.unit import cli_fixtures as fx

MODULE = "tests.unit.cli_fixtures"
SPEC = f"{MODULE}:holder.dlq"
APP = ("--app", SPEC)
WORKER = "cli-test"
START = datetime(2026, 1, 1, tzinfo=timezone.utc)
MASK = "**********"
STATUSES = [s.value for s in DeadLetterStatus]
TASK_KEYS = set(FailedTask.model_fields)
STATS_KEYS = {
    "queue_size",
    "max_size",
    "utilization_percent",
    "status_breakdown",
    "error_categories",
    "retry_policies",
    "lifetime_stats",
    "is_processor_running",
    "retry_interval_seconds",
    "backend",
    "degraded",
    "failover",
    "total_stored",
    "unreadable",
    "location",
    "oldest_pending_age_seconds",
    "top_fingerprints",
}
REPLAY_KEYS = {"dry_run", "matched", "replayed", "succeeded", "failed", "skipped", "items"}


# -- running the CLI ---------------------------------------------------------------------


@dataclass(frozen=True)
class Ran:
    """What one command did: exit status and the captured streams."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    def one_error_line(self) -> str:
        """The single stderr line of a failed command (and no traceback)."""
        lines = self.err.splitlines()
        assert len(lines) == 1, self.err
        assert "Traceback" not in self.err
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


def prompted(argv: list[str], answer: str) -> Result:
    """Run through CliRunner, answering prompts with ``answer``."""
    return CliRunner().invoke(build_app(), argv, input=answer)


# -- isolation and the queue under test -------------------------------------------------------


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No MAHAVISHNU_DLQ_* from the machine, a wide console, fresh handlers, logging restored."""
    for name in list(os.environ):
        if name.upper().startswith("MAHAVISHNU_DLQ_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setattr(fx, "holder", fx.Holder())
    monkeypatch.setattr(fx, "handlers", {"ok": FlakyHandler(), "bad": FlakyHandler(failures=10**6)})
    monkeypatch.setattr(fx, "single_handler", FlakyHandler(result="single"))
    root = logging.getLogger()
    loggers = [logging.getLogger(name) for name in ("mahavishnu_dlq", "opensearch")]
    levels = (root.level, [logger.level for logger in loggers])
    before = set(root.handlers)
    yield
    for handler in [h for h in root.handlers if h not in before]:
        if type(handler).__name__ == "RichHandler":  # what the CLI's basicConfig installed
            root.removeHandler(handler)
    root.setLevel(levels[0])
    for logger, level in zip(loggers, levels[1], strict=True):
        logger.setLevel(level)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def dlq(clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> DeadLetterQueue:
    """The queue ``--app tests.unit.cli_fixtures:holder.dlq`` names; the CLI's now is its clock."""
    queue = DeadLetterQueue(MemoryStore(), clock=clock, worker_id=WORKER)
    for workflow, handler in fx.handlers.items():
        queue.register_handler(workflow, handler)
    fx.holder.dlq = queue
    return queue


def flaky(workflow: str) -> FlakyHandler:
    """The handler ``tests.unit.cli_fixtures:handlers`` maps ``workflow`` to."""
    handler = fx.handlers[workflow]
    assert isinstance(handler, FlakyHandler)
    return handler


def raised(error: BaseException) -> BaseException:
    """``error`` with a traceback, as a workflow would have raised it."""
    try:
        raise error
    except BaseException as exc:
        return exc


def enqueue(
    dlq: DeadLetterQueue,
    task_id: str,
    *,
    workflow: str = "ok",
    error: BaseException | str | None = None,
    **options: Any,
) -> FailedTask:
    failure = ConnectionError("connection reset by peer") if error is None else error
    call = partial(
        dlq.enqueue, task_id, {"id": task_id}, ["repo-a"], failure, workflow=workflow, **options
    )
    return anyio.run(call)


def record(dlq: DeadLetterQueue, task_id: str) -> FailedTask:
    task = anyio.run(dlq.get_task, task_id)
    assert task is not None, task_id
    return task


def records(dlq: DeadLetterQueue) -> dict[str, FailedTask]:
    return {task.task_id: task for task in anyio.run(partial(dlq.list_tasks, limit=10000))}


def complete(dlq: DeadLetterQueue, task_id: str) -> None:
    assert anyio.run(dlq.retry_task, task_id)["success"]


def archive(dlq: DeadLetterQueue, task_id: str) -> None:
    assert anyio.run(dlq.archive_task, task_id)


def lease(dlq: DeadLetterQueue, task_id: str, owner: str = "other-worker") -> None:
    """Another worker is retrying ``task_id`` right now (a live lease)."""

    def claim(current: FailedTask | None) -> FailedTask:
        assert current is not None
        return lifecycle.claim(
            current,
            now=dlq.clock.now(),
            owner=owner,
            lease_seconds=600,
            trigger="manual",
            attempts_kept=20,
        )

    anyio.run(dlq.store.mutate, task_id, claim)


def snapshot(dlq: DeadLetterQueue) -> dict[str, dict[str, Any]]:
    return {task_id: task.model_dump() for task_id, task in records(dlq).items()}


@pytest.fixture
def mixed(dlq: DeadLetterQueue, clock: FakeClock) -> DeadLetterQueue:
    """net-1/net-2 pending (network), val-1 pending (validation, awaiting an operator),
    exh-1 exhausted, done-1 completed, arch-1 archived — one second apart."""
    enqueue(dlq, "net-1")
    clock.advance(1)
    enqueue(dlq, "net-2", workflow="bad")
    clock.advance(1)
    enqueue(dlq, "val-1", workflow="imports", error=ValueError("invalid row 7"))
    clock.advance(1)
    enqueue(dlq, "exh-1", error=TimeoutError("upstream timed out"), max_retries=0)
    clock.advance(1)
    enqueue(dlq, "done-1")
    complete(dlq, "done-1")
    clock.advance(1)
    enqueue(dlq, "arch-1", workflow="bad")
    archive(dlq, "arch-1")
    statuses = {task_id: task.status.value for task_id, task in records(dlq).items()}
    assert statuses == {
        "net-1": "pending",
        "net-2": "pending",
        "val-1": "pending",
        "exh-1": "exhausted",
        "done-1": "completed",
        "arch-1": "archived",
    }
    return dlq


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
        (["archive"], "Missing argument 'TASK_ID'"),
        (["--app"], "--app"),
        (["list", "--limit", "many"], "--limit"),
        (["list", "--limit", "0"], "--limit"),
        (["list", "--status", "nope"], "unknown value 'nope'"),
        (["list", "--category", "cosmic"], "unknown value 'cosmic'"),
        (["list", "--since", "last tuesday"], "--since"),
        (["purge", "--older-than", "30", "--yes"], "--older-than"),
        (["replay", "--rate", "fast"], "--rate"),
        (["processor", "bogus"], "No such command 'bogus'"),
        (["processor", "run", "--concurrency", "0"], "--concurrency"),
        (["replay", "--limit", "0"], "--limit"),
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


# -- --app resolution ------------------------------------------------------------------


@pytest.mark.parametrize(
    "attribute", ["holder.dlq", "queue_factory", "async_queue_factory"], ids=str
)
def test_app_names_the_queue_itself_or_a_factory(
    cli: Cli, dlq: DeadLetterQueue, attribute: str
) -> None:
    enqueue(dlq, "t-1")
    enqueue(dlq, "t-2")
    ran = cli("--app", f"{MODULE}:{attribute}", "status", "--json")
    assert ran.code == 0, ran.err
    assert ran.json()["total_stored"] == 2  # the very queue the test seeded
    assert ran.json()["lifetime_stats"]["enqueued_total"] == 2


@pytest.fixture
def shared_store(dlq: DeadLetterQueue, monkeypatch: pytest.MonkeyPatch) -> MemoryStore:
    """A queue --app builds from settings (handlers) gets the seeded queue's memory store."""
    store = dlq.store
    assert isinstance(store, MemoryStore)
    monkeypatch.setenv("MAHAVISHNU_DLQ_STORE", "memory")
    monkeypatch.setattr(build_module, "MemoryStore", lambda: store)
    return store


def test_app_names_a_mapping_of_handlers(
    cli: Cli, dlq: DeadLetterQueue, shared_store: MemoryStore
) -> None:
    enqueue(dlq, "t-ok", workflow="ok")
    enqueue(dlq, "t-bad", workflow="bad")
    spec = f"{MODULE}:handlers"

    ran = cli("--app", spec, "retry", "t-ok", "--json")
    assert ran.code == 0, ran.err
    assert ran.json()["success"] is True
    assert flaky("ok").calls == [({"id": "t-ok"}, ["repo-a"])]
    assert record(dlq, "t-ok").status is DeadLetterStatus.COMPLETED

    ran = cli("--app", spec, "retry", "t-bad", "--json")
    assert ran.code == 1
    assert ran.json()["success"] is False
    assert record(dlq, "t-bad").retry_count == 1


def test_app_names_one_handler_for_every_workflow(
    cli: Cli, dlq: DeadLetterQueue, shared_store: MemoryStore
) -> None:
    enqueue(dlq, "t-1", workflow="anything")
    ran = cli("--app", f"{MODULE}:single_handler", "retry", "t-1", "--json")
    assert ran.code == 0, ran.err
    assert ran.json()["result"] == "single"
    assert fx.single_handler.calls == [({"id": "t-1"}, ["repo-a"])]
    assert record(dlq, "t-1").status is DeadLetterStatus.COMPLETED


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (f"{MODULE}:not_a_queue", "is a int; expected a DeadLetterQueue"),
        (f"{MODULE}:empty_mapping", "is a dict; expected a DeadLetterQueue"),
        (f"{MODULE}:bad_mapping", "'ok' maps to str"),
        (f"{MODULE}:none_factory", "is a NoneType; expected a DeadLetterQueue"),
        (f"{MODULE}:raising_factory", "the factory raised RuntimeError: no database today"),
        (f"{MODULE}:nope", "has no attribute 'nope'"),
        (f"{MODULE}:holder.nope", "has no attribute 'holder.nope'"),
        ("no_such_module_for_cli_tests:app", "no module named 'no_such_module_for_cli_tests'"),
        ("tests.unit.no_such_module:app", "no module named 'tests.unit.no_such_module'"),
        ("no_colon_here", "--app must look like module:attribute, got 'no_colon_here'"),
        (":queue", "--app must look like module:attribute"),
        (f"{MODULE}:", "--app must look like module:attribute"),
    ],
)
def test_a_bad_app_is_one_line_naming_the_spec_and_exit_2(
    cli: Cli, dlq: DeadLetterQueue, spec: str, expected: str
) -> None:
    ran = cli("--app", spec, "status")
    assert ran.code == 2
    line = ran.one_error_line()
    assert line.startswith("mahavishnu-dlq: ")
    assert spec in line
    assert expected in line
    assert ran.out == ""


def test_an_app_module_that_fails_to_import_is_exit_2(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "cli_exploding_app.py").write_text('raise ValueError("kaboom at import")\n')
    (tmp_path / "cli_missing_dep_app.py").write_text("import no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    ran = cli("--app", "cli_exploding_app:app", "status")
    assert ran.code == 2
    line = ran.one_error_line()
    assert "cli_exploding_app:app" in line
    assert "importing cli_exploding_app failed: ValueError: kaboom at import" in line

    ran = cli("--app", "cli_missing_dep_app:app", "status")
    assert ran.code == 2
    line = ran.one_error_line()
    assert "cli_missing_dep_app:app" in line
    assert "importing cli_missing_dep_app failed" in line
    assert "no_such_dependency_xyz" in line


def test_the_command_app_overrides_the_global_one_and_the_environment(
    cli: Cli, dlq: DeadLetterQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    enqueue(dlq, "t-1")
    monkeypatch.setenv("MAHAVISHNU_DLQ_APP", f"{MODULE}:raising_factory")
    ran = cli("--app", f"{MODULE}:not_a_queue", "retry", "t-1", "--app", SPEC)
    assert ran.code == 0, ran.err
    assert record(dlq, "t-1").status is DeadLetterStatus.COMPLETED


def test_the_global_app_overrides_the_environment(
    cli: Cli, dlq: DeadLetterQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    enqueue(dlq, "t-1")
    monkeypatch.setenv("MAHAVISHNU_DLQ_APP", f"{MODULE}:not_a_queue")
    ran = cli(*APP, "retry", "t-1")
    assert ran.code == 0, ran.err


def test_the_environment_names_the_app_when_no_option_does(
    cli: Cli, dlq: DeadLetterQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    enqueue(dlq, "t-1")
    monkeypatch.setenv("MAHAVISHNU_DLQ_APP", SPEC)
    assert cli("status", "--json").json()["total_stored"] == 1
    ran = cli("retry", "t-1")
    assert ran.code == 0, ran.err
    assert record(dlq, "t-1").status is DeadLetterStatus.COMPLETED


def test_without_app_a_command_uses_a_queue_from_the_settings(cli: Cli, tmp_path: Path) -> None:
    config = tmp_path / "dlq.yaml"
    config.write_text("max_size: 250\n")
    ran = cli("--config", str(config), "status", "--json")
    assert ran.code == 0, ran.err
    assert ran.json()["max_size"] == 250
    assert ran.json()["backend"] == "sqlite"  # the default: the per-user file
    assert ran.json()["location"] == str(state_dir() / "dlq.sqlite3")
    assert ran.json()["total_stored"] == 0
    human = cli("--config", str(config), "status")
    assert str(state_dir() / "dlq.sqlite3") in human.out.replace("\n", "")  # names the file


def test_a_bad_config_ends_any_command_with_exit_2(cli: Cli, tmp_path: Path) -> None:
    config = tmp_path / "dlq.yaml"
    config.write_text("max_size: 5\n")
    ran = cli("--config", str(config), "list")
    assert ran.code == 2
    line = ran.one_error_line()
    assert "max_size" in line
    assert "between 100 and 100000" in line


def test_the_store_can_be_reopened_after_a_command_stopped_the_queue(
    cli: Cli, dlq: DeadLetterQueue
) -> None:
    enqueue(dlq, "t-1")
    for _ in range(3):
        assert cli(*APP, "show", "t-1", "--json").json()["task_id"] == "t-1"
    enqueue(dlq, "t-2")  # the queue works in-process after the CLI stopped it
    assert cli(*APP, "status", "--json").json()["total_stored"] == 2


class _DownStore(MemoryStore):
    """A store whose backend cannot be reached."""

    async def open(self) -> None:
        raise StoreUnavailableError("opensearch", "connection refused")


class _FailingQueryStore(MemoryStore):
    """A store that opens, then loses its backend."""

    async def query(
        self, flt: TaskFilter | None = None, *, limit: int = 100, cursor: str | None = None
    ) -> TaskPage[FailedTask]:
        raise StoreUnavailableError("opensearch", "node went away")


@pytest.mark.parametrize(
    ("store", "expected"),
    [
        (_DownStore, "opensearch store is unavailable: connection refused"),
        (_FailingQueryStore, "opensearch store is unavailable: node went away"),
    ],
    ids=["open", "query"],
)
def test_an_unreachable_store_is_one_line_and_exit_1(
    cli: Cli, store: type[MemoryStore], expected: str
) -> None:
    fx.holder.dlq = DeadLetterQueue(store(), clock=FakeClock(START))
    ran = cli(*APP, "list")
    assert ran.code == 1
    assert ran.one_error_line() == f"mahavishnu-dlq: {expected}"
    assert ran.out == ""


def test_a_bad_config_with_handlers_is_exit_2(cli: Cli, tmp_path: Path) -> None:
    config = tmp_path / "dlq.yaml"
    config.write_text("retry_interval_seconds: 1\n")
    ran = cli("--config", str(config), "--app", f"{MODULE}:handlers", "processor", "run", "--drain")
    assert ran.code == 2
    line = ran.one_error_line()
    assert "retry_interval_seconds" in line
    assert "between 10 and 3600" in line


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


# -- retry ------------------------------------------------------------------------------


def test_retry_success(cli: Cli, dlq: DeadLetterQueue) -> None:
    enqueue(dlq, "t-1")
    ran = cli(*APP, "retry", "t-1")
    assert ran.code == 0, ran.err
    assert "✓ task t-1 succeeded on retry 1" in ran.out
    task = record(dlq, "t-1")
    assert task.status is DeadLetterStatus.COMPLETED
    assert task.retry_count == 1
    assert task.attempts[-1].trigger == "manual"
    assert flaky("ok").calls == [({"id": "t-1"}, ["repo-a"])]


def test_retry_success_json(cli: Cli, dlq: DeadLetterQueue) -> None:
    enqueue(dlq, "t-1")
    data = cli(*APP, "retry", "t-1", "--json").json()
    assert set(data) == {"success", "task_id", "result", "message", "status", "next_retry_at"}
    assert data["success"] is True
    assert data["task_id"] == "t-1"
    assert data["result"] == "ok"
    assert data["status"] == "completed"
    assert data["next_retry_at"] is None


def test_retry_failure_counts_and_is_exit_1(
    cli: Cli, dlq: DeadLetterQueue, clock: FakeClock
) -> None:
    enqueue(dlq, "t-1", workflow="bad")
    ran = cli(*APP, "retry", "t-1")
    assert ran.code == 1
    assert "✗ retry 1 of task t-1 failed; task is now pending" in ran.out
    assert "error: " in ran.out
    assert "connection reset by peer" in ran.out
    assert "next automatic retry: 2026-01-01" in ran.out
    task = record(dlq, "t-1")
    assert task.retry_count == 1
    assert task.status is DeadLetterStatus.PENDING
    assert task.next_retry_at is not None
    assert task.next_retry_at > clock.now()

    data = cli(*APP, "retry", "t-1", "--json").json()
    assert set(data) == {"success", "task_id", "error", "message", "status", "next_retry_at"}
    assert data["success"] is False
    assert isinstance(data["error"], str)
    assert data["status"] == "pending"
    assert isinstance(data["next_retry_at"], str)
    assert record(dlq, "t-1").retry_count == 2


def test_retry_without_app_is_exit_2(cli: Cli, dlq: DeadLetterQueue) -> None:
    enqueue(dlq, "t-1")
    ran = cli("retry", "t-1")
    assert ran.code == 2
    line = ran.one_error_line()
    assert "--app MODULE:ATTR" in line
    assert "$MAHAVISHNU_DLQ_APP" in line
    assert record(dlq, "t-1").retry_count == 0


def test_retry_unknown_id_is_exit_1(cli: Cli, dlq: DeadLetterQueue) -> None:
    ran = cli(*APP, "retry", "nope")
    assert ran.code == 1
    assert "no task with id 'nope'" in ran.one_error_line()


def test_retry_of_a_task_being_retried_is_busy(cli: Cli, dlq: DeadLetterQueue) -> None:
    enqueue(dlq, "t-1")
    lease(dlq, "t-1")
    before = record(dlq, "t-1")
    ran = cli(*APP, "retry", "t-1")
    assert ran.code == 1
    line = ran.one_error_line()
    assert "busy" in line
    assert "other-worker" in line
    assert record(dlq, "t-1") == before
    assert flaky("ok").calls == []


def test_retry_after_the_lease_expired_records_the_lost_attempt(
    cli: Cli, dlq: DeadLetterQueue, clock: FakeClock
) -> None:
    enqueue(dlq, "t-1")
    lease(dlq, "t-1")
    clock.advance(601)  # the other worker vanished: its lease ran out
    ran = cli(*APP, "retry", "t-1")
    assert ran.code == 0, ran.err
    task = record(dlq, "t-1")
    assert task.status is DeadLetterStatus.COMPLETED
    assert [a.outcome.value for a in task.attempts] == ["lost", "success"]


def test_retry_of_a_completed_task_is_exit_1(cli: Cli, mixed: DeadLetterQueue) -> None:
    ran = cli(*APP, "retry", "done-1", "--json")
    assert ran.code == 1
    assert ran.json()["success"] is False
    assert "nothing to retry" in ran.json()["message"]


def test_retry_without_a_handler_for_the_workflow_is_exit_1(cli: Cli, dlq: DeadLetterQueue) -> None:
    enqueue(dlq, "t-1", workflow="orphan")
    ran = cli(*APP, "retry", "t-1")
    assert ran.code == 1
    assert "no handler registered for workflow 'orphan'" in ran.out
    assert record(dlq, "t-1").retry_count == 0


# -- replay ------------------------------------------------------------------------------


def test_replay_dry_run_changes_nothing(cli: Cli, mixed: DeadLetterQueue) -> None:
    before = snapshot(mixed)
    ran = cli(*APP, "replay", "--dry-run", "--json")
    assert ran.code == 0, ran.err
    data = ran.json()
    assert set(data) == REPLAY_KEYS | {"failures"}
    assert data["dry_run"] is True
    assert data["matched"] == data["replayed"] == 4  # pending and exhausted
    assert {item["outcome"] for item in data["items"]} == {"would_replay"}
    assert {item["task_id"] for item in data["items"]} == {"net-1", "net-2", "val-1", "exh-1"}
    assert data["failures"] == []
    assert snapshot(mixed) == before

    ran = cli(*APP, "replay", "--dry-run")
    assert ran.code == 0
    assert "4 matched, 4 would replay" in ran.out
    assert "dry run: nothing was changed" in ran.out
    assert re.search(r"would replay: .*exh-1", ran.out)
    assert snapshot(mixed) == before


def test_replay_makes_tasks_due_now(cli: Cli, mixed: DeadLetterQueue, clock: FakeClock) -> None:
    clock.advance(30)
    untouched = {k: v for k, v in snapshot(mixed).items() if k in {"done-1", "arch-1"}}
    ran = cli(*APP, "replay", "--json")
    assert ran.code == 0, ran.err
    data = ran.json()
    assert data["dry_run"] is False
    assert data["matched"] == data["replayed"] == 4
    assert data["succeeded"] == data["failed"] == data["skipped"] == 0
    now = clock.now()
    after = records(mixed)
    for task_id in ("net-1", "net-2", "val-1", "exh-1"):
        assert after[task_id].status is DeadLetterStatus.PENDING
        assert after[task_id].next_retry_at == now
        assert after[task_id].updated_at == now
    assert after["exh-1"].max_retries == 1  # one more retry for the exhausted task
    assert {k: v.model_dump() for k, v in after.items() if k in untouched} == untouched


def test_replay_human_output(cli: Cli, mixed: DeadLetterQueue) -> None:
    ran = cli(*APP, "replay")
    assert ran.code == 0, ran.err
    assert "4 matched, 4 replayed" in ran.out
    assert "0 skipped" in ran.out
    assert ran.err.strip() == ""  # the progress bar leaves nothing behind


def test_replay_is_paced_by_the_queue_clock(
    cli: Cli, dlq: DeadLetterQueue, clock: FakeClock
) -> None:
    for n in range(5):
        enqueue(dlq, f"t-{n}")
    start = clock.now()
    ran = cli(*APP, "replay", "--rate", "2/s", "--json")
    assert ran.code == 0, ran.err
    assert ran.json()["replayed"] == 5
    assert clock.now() - start == timedelta(seconds=2)
    assert sum(clock.slept) == pytest.approx(2.0)
    due = sorted(task.next_retry_at - start for task in records(dlq).values() if task.next_retry_at)
    assert due == [timedelta(seconds=s) for s in (0, 0.5, 1.0, 1.5, 2.0)]


def test_a_dry_run_is_not_paced(cli: Cli, dlq: DeadLetterQueue, clock: FakeClock) -> None:
    for n in range(5):
        enqueue(dlq, f"t-{n}")
    start = clock.now()
    ran = cli(*APP, "replay", "--rate", "1/min", "--dry-run", "--json")
    assert ran.code == 0, ran.err
    assert ran.json()["replayed"] == 5
    assert clock.now() == start
    assert clock.slept == []


def test_replay_limit(cli: Cli, dlq: DeadLetterQueue, clock: FakeClock) -> None:
    for n in range(5):
        enqueue(dlq, f"t-{n}")
    clock.advance(5)
    data = cli(*APP, "replay", "--limit", "2", "--json").json()
    assert data["matched"] == data["replayed"] == 2
    due_now = [t for t in records(dlq).values() if t.next_retry_at == clock.now()]
    assert len(due_now) == 2


def test_replay_run_retries_inline_and_counts(cli: Cli, mixed: DeadLetterQueue) -> None:
    ran = cli(*APP, "replay", "--run", "--workflow", "ok", "--json")
    assert ran.code == 0, ran.err
    data = ran.json()
    assert data["matched"] == data["succeeded"] == data["replayed"] == 2  # net-1, exh-1
    assert data["failed"] == 0
    after = records(mixed)
    assert after["net-1"].status is DeadLetterStatus.COMPLETED
    assert after["exh-1"].status is DeadLetterStatus.COMPLETED


def test_replay_run_with_a_failure_is_exit_1(cli: Cli, mixed: DeadLetterQueue) -> None:
    ran = cli(*APP, "replay", "--run", "--status", "pending", "--json")
    assert ran.code == 1
    data = ran.json()
    assert data["matched"] == 3  # net-1 (ok), net-2 (bad), val-1 (no handler)
    assert data["succeeded"] == 1
    assert data["failed"] == 2
    failures = {item["task_id"]: item for item in data["failures"]}
    assert set(failures) == {"net-2", "val-1"}
    assert all(item["outcome"] == "failed" for item in failures.values())
    assert failures["val-1"]["detail"] == "no handler"
    after = records(mixed)
    assert after["net-1"].status is DeadLetterStatus.COMPLETED
    assert after["net-2"].retry_count == 1
    assert after["net-2"].status is DeadLetterStatus.PENDING


def test_replay_run_human_output_lists_what_failed(cli: Cli, mixed: DeadLetterQueue) -> None:
    ran = cli(*APP, "replay", "--run", "--status", "pending")
    assert ran.code == 1
    assert "3 matched, 1 replayed, 1 succeeded, 2 failed, 0 skipped" in ran.out
    assert "not replayed" in ran.out
    row = next(line for line in ran.out.splitlines() if "net-2" in line)
    assert "failed" in row


def test_replay_run_without_app_is_exit_2(cli: Cli, mixed: DeadLetterQueue) -> None:
    before = snapshot(mixed)
    ran = cli("replay", "--run")
    assert ran.code == 2
    assert "--app" in ran.one_error_line()
    assert snapshot(mixed) == before


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--status", "exhausted"], {"exh-1"}),
        (["--category", "validation"], {"val-1"}),
        (["--category", "network,transient"], {"net-1", "net-2", "exh-1"}),
        (["--workflow", "bad"], {"net-2"}),  # arch-1 is bad's too, but archived
        (["--text", "timed out"], {"exh-1"}),
        (
            ["--since", "2026-01-01T00:00:01Z", "--until", "2026-01-01T00:00:03Z"],
            {"net-2", "val-1"},
        ),
    ],
)
def test_replay_filters(
    cli: Cli, mixed: DeadLetterQueue, clock: FakeClock, options: list[str], expected: set[str]
) -> None:
    clock.advance(60)
    before = snapshot(mixed)
    data = cli(*APP, "replay", "--json", *options).json()
    assert {item["task_id"] for item in data["items"]} == expected
    assert data["replayed"] == len(expected)
    after = snapshot(mixed)
    changed = {task_id for task_id in before if after[task_id] != before[task_id]}
    assert changed == expected
    assert all(records(mixed)[task_id].next_retry_at == clock.now() for task_id in expected)


def test_replay_skips_what_it_cannot_replay_and_is_exit_1(cli: Cli, mixed: DeadLetterQueue) -> None:
    lease(mixed, "net-1")
    ran = cli(*APP, "replay", "--status", "completed,retrying", "--json")
    assert ran.code == 1
    data = ran.json()
    assert data["matched"] == data["skipped"] == 2
    reasons = {item["task_id"]: item["detail"] for item in data["failures"]}
    assert set(reasons) == {"done-1", "net-1"}
    assert "completed" in reasons["done-1"]
    assert "other-worker" in reasons["net-1"]


# -- archive -------------------------------------------------------------------------------


def test_archive_several_with_one_unknown(cli: Cli, mixed: DeadLetterQueue) -> None:
    ran = cli(*APP, "archive", "net-1", "nope", "val-1")
    assert ran.code == 1
    assert ran.out.splitlines() == ["archived net-1", "archived val-1"]
    assert ran.one_error_line() == "mahavishnu-dlq: nope: not found"
    after = records(mixed)
    assert after["net-1"].status is DeadLetterStatus.ARCHIVED
    assert after["val-1"].status is DeadLetterStatus.ARCHIVED
    assert after["net-2"].status is DeadLetterStatus.PENDING


def test_archive_json(cli: Cli, mixed: DeadLetterQueue) -> None:
    lease(mixed, "net-2")
    ran = cli(*APP, "archive", "net-1", "nope", "net-2", "--json")
    assert ran.code == 1
    data = ran.json()
    assert data["archived"] == ["net-1"]
    reasons = {item["task_id"]: item["reason"] for item in data["failed"]}
    assert reasons["nope"] == "not found"
    assert "busy" in reasons["net-2"]
    assert records(mixed)["net-2"].status is DeadLetterStatus.RETRYING


def test_archive_all_known_is_exit_0(cli: Cli, mixed: DeadLetterQueue) -> None:
    ran = cli(*APP, "archive", "exh-1", "arch-1", "--json")
    assert ran.code == 0, ran.err
    assert ran.json() == {"archived": ["exh-1", "arch-1"], "failed": []}


# -- purge -------------------------------------------------------------------------------------


def test_purge_deletes_completed_and_archived_by_default(cli: Cli, mixed: DeadLetterQueue) -> None:
    ran = cli(*APP, "purge", "--yes", "--json")
    assert ran.code == 0, ran.err
    assert ran.json() == {
        "matched": 2,
        "purged": 2,
        "dry_run": False,
        "statuses": ["completed", "archived"],
        "updated_before": None,
    }
    assert set(records(mixed)) == {"net-1", "net-2", "val-1", "exh-1"}
    assert "Delete" not in ran.err  # --yes: no question


def test_purge_human_output(cli: Cli, mixed: DeadLetterQueue) -> None:
    ran = cli(*APP, "purge", "-y")
    assert ran.code == 0, ran.err
    assert ran.out == "purged 2 task(s)\n"


def test_purge_older_than_uses_the_queue_clock(
    cli: Cli, dlq: DeadLetterQueue, clock: FakeClock
) -> None:
    enqueue(dlq, "old")
    complete(dlq, "old")
    clock.advance(timedelta(days=10))
    enqueue(dlq, "new")
    complete(dlq, "new")
    clock.advance(timedelta(days=1))
    ran = cli(*APP, "purge", "--older-than", "5d", "--yes", "--json")
    assert ran.code == 0, ran.err
    data = ran.json()
    assert data["matched"] == data["purged"] == 1
    cutoff = clock.now() - timedelta(days=5)
    assert data["updated_before"] == cutoff.isoformat().replace("+00:00", "Z")
    assert set(records(dlq)) == {"new"}


def test_purge_dry_run_deletes_nothing(cli: Cli, mixed: DeadLetterQueue) -> None:
    before = snapshot(mixed)
    ran = cli(*APP, "purge", "--dry-run")
    assert ran.code == 0, ran.err
    assert ran.out == "would purge 2 task(s); nothing was deleted\n"
    data = cli(*APP, "purge", "--dry-run", "--json").json()
    assert data["matched"] == 2
    assert data["purged"] == 0
    assert data["dry_run"] is True
    assert snapshot(mixed) == before


def test_purge_asks_and_no_keeps_everything(mixed: DeadLetterQueue) -> None:
    before = snapshot(mixed)
    result = prompted([*APP, "purge"], "n\n")
    assert result.exit_code == 1
    assert "Delete 2 task(s) (completed, archived) for good?" in result.stderr
    assert "aborted: nothing was changed" in result.stderr
    assert "purged" not in result.stdout
    assert snapshot(mixed) == before


def test_purge_asks_and_yes_deletes(mixed: DeadLetterQueue) -> None:
    result = prompted([*APP, "purge"], "y\n")
    assert result.exit_code == 0, result.output
    assert "Delete 2 task(s)" in result.stderr
    assert result.stdout.strip().endswith("purged 2 task(s)")
    assert set(records(mixed)) == {"net-1", "net-2", "val-1", "exh-1"}


def test_purge_of_open_statuses_warns_in_the_question(mixed: DeadLetterQueue) -> None:
    result = prompted([*APP, "purge", "--status", "pending"], "n\n")
    assert result.exit_code == 1
    assert "Delete 3 task(s) (pending; pending tasks still need handling) for good?" in (
        result.stderr
    )
    assert len(records(mixed)) == 6


def test_purge_question_names_the_cutoff(mixed: DeadLetterQueue, clock: FakeClock) -> None:
    clock.advance(timedelta(days=2))
    result = prompted([*APP, "purge", "--older-than", "1d"], "n\n")
    assert result.exit_code == 1
    assert "last updated before 2026-01-02 00:00:05.000 UTC" in result.stderr


def test_purge_with_no_answer_on_stdin_aborts(
    cli: Cli, mixed: DeadLetterQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # end of input: no
    ran = cli(*APP, "purge")
    assert ran.code == 1
    assert "aborted: nothing was changed (pass --yes to skip this question)" in ran.err
    assert "Traceback" not in ran.err
    assert len(records(mixed)) == 6


def test_purge_with_nothing_to_delete_does_not_ask(cli: Cli, dlq: DeadLetterQueue) -> None:
    enqueue(dlq, "t-1")
    ran = cli(*APP, "purge")
    assert ran.code == 0, ran.err
    assert ran.out == "purged 0 task(s)\n"
    assert ran.err == ""


# -- clear --------------------------------------------------------------------------------------


def test_clear_asks_first(mixed: DeadLetterQueue) -> None:
    result = prompted([*APP, "clear"], "n\n")
    assert result.exit_code == 1
    assert "Delete all 6 task(s) in the dead-letter queue?" in result.stderr
    assert len(records(mixed)) == 6

    result = prompted([*APP, "clear"], "y\n")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().endswith("cleared 6 task(s)")
    assert records(mixed) == {}


def test_clear_yes(cli: Cli, mixed: DeadLetterQueue) -> None:
    ran = cli(*APP, "clear", "--yes", "--json")
    assert ran.code == 0, ran.err
    assert ran.json() == {"matched": 6, "purged": 6}
    assert records(mixed) == {}
    ran = cli(*APP, "clear")  # empty: nothing to ask
    assert ran.code == 0
    assert ran.out == "cleared 0 task(s)\n"
    assert ran.err == ""


# -- processor run ----------------------------------------------------------------------------


def test_processor_drain_completes_what_was_made_due(
    cli: Cli, mixed: DeadLetterQueue, clock: FakeClock
) -> None:
    # the summary counts this run only: done-1 succeeded and exh-1 was exhausted
    # while the fixture seeded the queue, before the command
    assert (mixed.lifetime["retry_success"], mixed.lifetime["exhausted"]) == (1, 1)
    ran = cli(*APP, "replay", "--workflow", "bad", "--text", "net-")  # net-2 only
    assert ran.code == 0, ran.err
    clock.advance(1)  # net-1's own retry (one minute after it failed) is not due yet
    ran = cli(*APP, "processor", "run", "--drain", "--json")
    assert ran.code == 0, ran.err
    assert ran.json() == {
        "worker_id": WORKER,
        "attempts": 1,
        "retry_success": 0,
        "retry_failed": 1,
        "exhausted": 0,
    }
    assert records(mixed)["net-2"].retry_count == 1

    assert cli(*APP, "replay", "--workflow", "ok").code == 0  # net-1 and exh-1
    ran = cli(*APP, "processor", "run", "--drain", "--json")
    assert ran.code == 0, ran.err
    assert ran.json()["attempts"] == 2
    assert ran.json()["retry_success"] == 2
    after = records(mixed)
    assert after["net-1"].status is DeadLetterStatus.COMPLETED
    assert after["exh-1"].status is DeadLetterStatus.COMPLETED
    assert after["net-2"].status is DeadLetterStatus.PENDING  # its next retry is not due
    assert after["net-2"].retry_count == 1
    assert after["val-1"].retry_count == 0  # never policy: awaiting an operator


def test_processor_drain_human_output(cli: Cli, dlq: DeadLetterQueue) -> None:
    enqueue(dlq, "t-1", retry_policy="immediate")
    ran = cli(*APP, "processor", "run", "--drain")
    assert ran.code == 0, ran.err
    assert ran.out == (
        f"processor {WORKER} stopped; 1 attempts: 1 retry success, 0 retry failed, 0 exhausted\n"
    )
    assert record(dlq, "t-1").status is DeadLetterStatus.COMPLETED


def test_processor_drain_with_a_mapping_of_handlers(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A mapping gets a queue from the settings (system clock); tasks failed "in the
    # future" are not due for it until replay makes them due at its now.
    future = FakeClock(datetime(2100, 1, 1, tzinfo=timezone.utc))
    seeded = DeadLetterQueue(MemoryStore(), clock=future)
    store = seeded.store
    monkeypatch.setenv("MAHAVISHNU_DLQ_STORE", "memory")
    monkeypatch.setattr(build_module, "MemoryStore", lambda: store)
    for task_id, workflow in [("a", "ok"), ("b", "ok"), ("c", "bad")]:
        enqueue(seeded, task_id, workflow=workflow)
    spec = f"{MODULE}:handlers"
    assert cli("--app", spec, "processor", "run", "--drain", "--json").json()["attempts"] == 0
    assert cli("--app", spec, "replay", "--workflow", "ok").code == 0
    ran = cli("--app", spec, "processor", "run", "--drain", "--json")
    assert ran.code == 0, ran.err
    assert ran.json()["attempts"] == 2
    assert ran.json()["retry_success"] == 2
    after = records(seeded)
    assert after["a"].status is after["b"].status is DeadLetterStatus.COMPLETED
    assert after["c"].status is DeadLetterStatus.PENDING
    assert after["c"].retry_count == 0
    assert len(flaky("bad").calls) == 0


def test_processor_without_app_is_exit_2(cli: Cli) -> None:
    ran = cli("processor", "run", "--drain")
    assert ran.code == 2
    line = ran.one_error_line()
    assert "--app MODULE:ATTR" in line
    assert "$MAHAVISHNU_DLQ_APP" in line


# -- user data is printed verbatim, never read as Rich markup -------------------------------

#: What pydantic puts in every validation error: "[type=...]" looks like a Rich style tag.
PYDANTIC_ERROR = "Field required [type=missing, input_value={'sku': 'A'}, input_type=dict]"
#: A closing tag with nothing to close: Rich's markup parser raises on it.
CLOSING_TAG_ERROR = "template error near [/] in 'items[/i]'"
MARKUP_ERRORS = pytest.mark.parametrize(
    "message", [PYDANTIC_ERROR, CLOSING_TAG_ERROR], ids=["pydantic", "closing-tag"]
)


@MARKUP_ERRORS
def test_list_prints_error_text_verbatim(cli: Cli, dlq: DeadLetterQueue, message: str) -> None:
    enqueue(dlq, "t-1", error=ValueError(message))
    ran = cli(*APP, "list")
    assert ran.code == 0, ran.err
    assert f"ValueError: {message}" in ran.out


@MARKUP_ERRORS
def test_status_prints_example_errors_verbatim(
    cli: Cli, dlq: DeadLetterQueue, message: str
) -> None:
    enqueue(dlq, "t-1", error=ValueError(message))
    ran = cli(*APP, "status")
    assert ran.code == 0, ran.err
    assert message in ran.out


@MARKUP_ERRORS
def test_show_prints_attempt_errors_verbatim(cli: Cli, dlq: DeadLetterQueue, message: str) -> None:
    dlq.register_handler("strict", FlakyHandler(failures=1, make_error=lambda: ValueError(message)))
    enqueue(dlq, "t-1", workflow="strict")
    assert cli(*APP, "retry", "t-1").code == 1  # the attempt fails with ``message``
    ran = cli(*APP, "show", "t-1")
    assert ran.code == 0, ran.err
    assert f"ValueError: {message}" in ran.out  # the "last error" row
    attempt = next(line for line in ran.out.splitlines() if re.search(r"manual .* failure", line))
    assert message in attempt  # the attempts table


@MARKUP_ERRORS
def test_replay_report_prints_failure_details_verbatim(
    cli: Cli, dlq: DeadLetterQueue, message: str
) -> None:
    dlq.register_handler("strict", FlakyHandler(failures=1, make_error=lambda: ValueError(message)))
    enqueue(dlq, "t-1", workflow="strict")
    ran = cli(*APP, "replay", "--run")
    assert ran.code == 1
    assert "1 failed" in ran.out
    assert message in ran.out


@pytest.mark.parametrize("command", ["list", "show", "replay"])
def test_ids_and_workflow_names_with_brackets(cli: Cli, dlq: DeadLetterQueue, command: str) -> None:
    enqueue(dlq, "order[/]7", workflow="[bold]billing")
    argv = {"list": ["list"], "show": ["show", "order[/]7"], "replay": ["replay", "--run"]}
    ran = cli(*APP, *argv[command])
    assert ran.code == (1 if command == "replay" else 0), ran.err  # replay: no handler
    assert "order[/]7" in ran.out
    if command == "show":
        assert "[bold]billing" in ran.out


# -- config ---------------------------------------------------------------------------------


@pytest.fixture
def secret_config(tmp_path: Path) -> Path:
    """Credentials in a host URL: they move to username and password when settings load."""
    config = tmp_path / "dlq.yaml"
    config.write_text(
        "max_size: 500\n"
        "opensearch:\n"
        "  hosts: ['https://admin:s3cret@search.example:9200', 'http://plain:9200']\n"
        "  username: admin\n"
    )
    return config


def test_config_show_masks_secrets(cli: Cli, secret_config: Path) -> None:
    ran = cli("--config", str(secret_config), "config", "show")
    assert ran.code == 0, ran.err
    out = ran.out
    assert "s3cret" not in out
    assert "- https://search.example:9200" in out
    assert re.search(rf"password: '?{re.escape(MASK)}'?", out)
    assert "username: admin" in out
    assert "max_size: 500" in out
    assert str(secret_config) in out.splitlines()[0]
    assert ran.err == ""


def test_config_show_json_masks_secrets(
    cli: Cli, secret_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAHAVISHNU_DLQ_OPENSEARCH__PASSWORD", "s3cret")  # the same: no conflict
    ran = cli("--config", str(secret_config), "config", "show", "--json")
    assert ran.code == 0, ran.err
    assert "s3cret" not in ran.out
    data = ran.json()
    assert data["max_size"] == 500
    assert data["opensearch"]["password"] == MASK
    assert data["opensearch"]["username"] == "admin"
    assert data["opensearch"]["hosts"] == ["https://search.example:9200", "http://plain:9200"]


def test_config_show_with_conflicting_passwords_is_exit_2(
    cli: Cli, secret_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAHAVISHNU_DLQ_OPENSEARCH__PASSWORD", "hunter2")
    ran = cli("--config", str(secret_config), "config", "show")
    assert ran.code == 2
    line = ran.one_error_line()
    assert "the password in hosts[0] differs from password" in line
    assert "MAHAVISHNU_DLQ_OPENSEARCH__PASSWORD" in line
    assert "hunter2" not in ran.err
    assert "s3cret" not in ran.err
    assert ran.out == ""


def test_config_show_reads_the_file_the_environment_names(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "env.yaml"
    config.write_text("max_size: 700\n")
    monkeypatch.setenv("MAHAVISHNU_DLQ_CONFIG", str(config))
    monkeypatch.setenv("MAHAVISHNU_DLQ_DEFAULT_MAX_RETRIES", "5")
    data = cli("config", "show", "--json").json()
    assert data["max_size"] == 700
    assert data["default_max_retries"] == 5
    ran = cli("config", "show")
    assert ran.code == 0
    assert str(config) in ran.out.splitlines()[0]  # the file the variable names


def test_config_show_with_a_missing_file_is_exit_2(cli: Cli, tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    ran = cli("--config", str(missing), "config", "show")
    assert ran.code == 2
    assert "does not exist" in ran.one_error_line()
    assert ran.out == ""


def test_config_validate_a_good_file(cli: Cli, tmp_path: Path) -> None:
    config = tmp_path / "good.yaml"
    config.write_text("max_size: 500\nstore: memory\n")
    ran = cli("config", "validate", str(config))
    assert ran.code == 0, ran.err
    assert ran.out == f"{config}: valid (store memory, max_size 500)\n"
    data = cli("config", "validate", str(config), "--json").json()
    assert data == {"file": str(config), "valid": True, "store": "memory"}


def test_config_validate_malformed_yaml(cli: Cli, tmp_path: Path) -> None:
    config = tmp_path / "broken.yaml"
    config.write_text("enabled: true\nmax_size: [1000\nstore: memory\n")
    ran = cli("config", "validate", str(config))
    assert ran.code == 2
    line = ran.one_error_line()
    assert "malformed YAML" in line
    assert str(config) in line
    assert re.search(r"line \d+", line)
    assert ran.out == ""


def test_config_validate_out_of_range_value(cli: Cli, tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("enabled: true\nmax_size: 5\n")
    ran = cli("config", "validate", str(config))
    assert ran.code == 2
    line = ran.one_error_line()
    assert "max_size" in line
    assert "between 100 and 100000" in line
    assert "got 5" in line
    assert f"{config}, line 2" in line

    ran = cli("config", "validate", str(config), "--json")
    assert ran.code == 2
    data = ran.json()
    assert data["valid"] is False
    assert "max_size" in data["error"]


def test_config_validate_missing_file(cli: Cli, tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    ran = cli("config", "validate", str(missing))
    assert ran.code == 2
    line = ran.one_error_line()
    assert str(missing) in line
    assert "does not exist" in line


# -- a failover store that opens degraded ------------------------------------------------------


def test_a_degraded_failover_store_shows_in_status_and_stops_other_commands(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("MAHAVISHNU_DLQ_STORE", "failover")
    monkeypatch.setenv(
        "MAHAVISHNU_DLQ_OPENSEARCH__HOSTS", f'["http://user:pw-secret@127.0.0.1:{port}"]'
    )
    ran = cli("status", "--json")
    assert ran.code == 0, ran.err
    stats = ran.json()
    assert stats["degraded"] is True
    assert stats["failover"]["serving"] == "fallback"
    assert ran.err == ""  # the failover warning is the command's to report, not the log's
    ran = cli("status")
    assert "failover (serving: fallback; primary opensearch)" in ran.out
    for argv in (["list"], ["show", "x"], ["purge", "--yes"], ["clear", "--yes"]):
        ran = cli(*argv)
        assert ran.code == 1, argv
        line = ran.one_error_line()
        assert "the store is degraded (serving: fallback" in line
        assert f"127.0.0.1:{port}" in line
        assert "pw-secret" not in line


def test_a_journal_left_by_a_dead_process_is_resynced_before_a_command(
    cli: Cli, tmp_path: Path
) -> None:
    """OpenSearch answers, but the journal holds what a process that died during an
    outage acknowledged: the command re-syncs it first instead of refusing."""
    from tests.unit.test_journal import outage_then_death  # noqa: PLC0415

    primary = anyio.run(outage_then_death, tmp_path, 3)
    primary.down = False
    fx.holder.dlq = DeadLetterQueue(
        FailoverStore(primary, JournalStore(tmp_path), probe_interval=3600)
    )
    ran = cli("--app", f"{MODULE}:holder.dlq", "list", "--json")
    assert ran.code == 0, ran.err
    assert sorted(t["task_id"] for t in ran.json()["tasks"]) == ["t0", "t1", "t2"]
    assert anyio.run(primary.count) == 3
    assert anyio.run(primary.get, "old") is None  # the deletion it journaled, too
