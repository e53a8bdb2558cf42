"""The CLI in-process: how ``--app`` names the queue (the queue itself, a factory, a
mapping of handlers, a handler) and what it says when it cannot (how these tests work:
``test_cli_commands``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mahavishnu_dlq.errors import StoreUnavailableError
from mahavishnu_dlq.models import DeadLetterStatus, FailedTask, TaskFilter, TaskPage
from mahavishnu_dlq.queue import DeadLetterQueue
from mahavishnu_dlq.settings import state_dir
from mahavishnu_dlq.storage import build as build_module
from mahavishnu_dlq.storage.memory import MemoryStore
from mahavishnu_dlq.testing import FakeClock
from tests.unit import cli_fixtures as fx
from tests.unit.cli.conftest import (
    APP,
    MODULE,
    SPEC,
    START,
    Cli,
    enqueue,
    flaky,
    record,
)

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

    async def open(self, *, create: bool = True) -> None:
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
