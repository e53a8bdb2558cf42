"""The CLI in-process: user data printed verbatim, the config commands, and a failover
store that opens degraded (how these tests work: ``test_cli_commands``)."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import anyio
import pytest

from mahavishnu_dlq.queue import DeadLetterQueue
from mahavishnu_dlq.storage.failover import FailoverStore
from mahavishnu_dlq.storage.journal import JournalStore
from mahavishnu_dlq.testing import FlakyHandler
from tests.unit import cli_fixtures as fx
from tests.unit.cli.conftest import (
    APP,
    MASK,
    MODULE,
    Cli,
    enqueue,
)

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
    ran = cli(*APP, "retry", "--workflow", "strict")
    assert ran.code == 1
    assert "1 failed" in ran.out
    assert message in ran.out


@pytest.mark.parametrize("command", ["list", "show", "retry"])
def test_ids_and_workflow_names_with_brackets(cli: Cli, dlq: DeadLetterQueue, command: str) -> None:
    enqueue(dlq, "order[/]7", workflow="[bold]billing")
    argv = {
        "list": ["list"],
        "show": ["show", "order[/]7"],
        "retry": ["retry", "--workflow", "[bold]billing"],
    }
    ran = cli(*APP, *argv[command])
    assert ran.code == (1 if command == "retry" else 0), ran.err  # retry: no handler
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


def test_config_show_origin_says_where_each_value_came_from(
    cli: Cli, secret_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAHAVISHNU_DLQ_STORE", "memory")
    monkeypatch.setenv("MAHAVISHNU_DLQ_PROCESSOR", '{"batch_size": 50}')  # a group, as JSON
    ran = cli("--config", str(secret_config), "config", "show", "--origin")
    assert ran.code == 0, ran.err
    assert "s3cret" not in ran.out
    lines = {line.split()[0]: line for line in ran.out.splitlines()[1:]}
    assert lines["max_size"].endswith(f"500  # file {secret_config}, line 1")
    assert lines["opensearch.hosts"].endswith(f"# file {secret_config}, line 3")
    assert '"https://search.example:9200"' in lines["opensearch.hosts"]
    assert lines["store"].endswith('"memory"  # environment MAHAVISHNU_DLQ_STORE')
    assert lines["processor.batch_size"].endswith("50  # environment MAHAVISHNU_DLQ_PROCESSOR")
    assert lines["processor.concurrency"].endswith("# default")  # the group does not set it
    assert lines["enabled"].endswith("true  # default")
    assert MASK in lines["opensearch.password"]

    data = cli("--config", str(secret_config), "config", "show", "--origin", "--json").json()
    assert data["max_size"] == {"value": 500, "origin": f"file {secret_config}, line 1"}
    assert data["store"] == {"value": "memory", "origin": "environment MAHAVISHNU_DLQ_STORE"}
    assert data["processor.concurrency"]["origin"] == "default"
    assert data["processor.breaker.trip_on"]["origin"] == "default"  # a list is one value


def test_config_show_origin_without_a_file(cli: Cli) -> None:
    ran = cli("config", "show", "--origin")
    assert ran.code == 0, ran.err
    assert "(file: none)" in ran.out.splitlines()[0]
    assert all(line.endswith("# default") for line in ran.out.splitlines()[1:])


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


def test_config_validate_prints_one_problem_per_line(cli: Cli, tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("max_size: 5\nstore: nope\nretry_interval_seconds: abc\n")
    ran = cli("config", "validate", str(config))
    assert ran.code == 2
    assert ran.out == ""
    header, *problems = ran.err.splitlines()
    assert header == "mahavishnu-dlq: invalid mahavishnu-dlq configuration (3 problems):"
    assert [problem.split(":")[0] for problem in problems] == [
        "  - max_size",
        "  - retry_interval_seconds",
        "  - store",
    ]
    assert f"{config}, line 1" in problems[0]

    data = cli("config", "validate", str(config), "--json").json()
    assert data["valid"] is False
    assert [problem.split(":")[0] for problem in data["problems"]] == [
        "max_size",
        "retry_interval_seconds",
        "store",
    ]


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
