"""The CLI as an operator meets it: the embedded default (a per-user SQLite file shared
with an application) and bad input (one line, the documented exit status, no
traceback) (how these tests run: ``conftest``)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.cli_acceptance.conftest import (
    FACTORY,
    HANDLERS,
    ROOT,
    Cli,
    clean_env,
    data,
    describe,
    ids_of,
    ok,
    refused,
)
from tests.integration.cli_app import (
    FAIL_WORKFLOW,
    MEMORY_TASKS,
)

# -- the embedded default: a per-user SQLite file, clean environment ------------------------


APP_PROCESS = """
import anyio
from mahavishnu_dlq import DeadLetterQueue, DLQSettings

async def main() -> None:
    async with DeadLetterQueue.from_settings(DLQSettings.load()) as dlq:
        await dlq.enqueue("from-the-app", {"order": 7}, error=ConnectionError("refused"))

anyio.run(main)
"""


def test_embedded_default_is_a_durable_file_the_app_and_the_cli_share() -> None:
    env = clean_env()
    cli = Cli(env)
    state = Path(env["XDG_STATE_HOME"]) / "mahavishnu-dlq" / "dlq.sqlite3"
    empty, config, config_json = cli.many(
        ["list"], ["config", "show"], ["config", "show", "--json"]
    )
    assert ok(empty).strip() == "no tasks match"
    assert "\nstore: sqlite\n" in ok(config)
    assert "secrets masked" in ok(config)
    settings = data(config_json)
    assert (settings["store"], settings["sqlite"]["path"], settings["max_size"]) == (
        "sqlite",
        None,  # the per-user default file
        10000,
    )
    app = subprocess.run(  # noqa: S603 - our own interpreter
        [sys.executable, "-c", APP_PROCESS],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert app.returncode == 0, app.stderr
    stats, table, listing, shown, unknown = cli.many(
        ["status", "--json"],
        ["status"],
        ["list", "--json"],
        ["show", "from-the-app", "--json"],
        ["show", "nope"],
    )
    counts = data(stats)
    assert (counts["backend"], counts["location"], counts["total_stored"]) == (
        "sqlite",
        str(state),
        1,
    )
    assert counts["degraded"] is False
    assert str(state) in ok(table).replace("\n", "")  # status names the file
    assert [task["task_id"] for task in data(listing)["tasks"]] == ["from-the-app"]
    assert data(shown)["task"] == {"order": 7}
    refused(unknown, 1, "no task with id 'nope'")


def test_app_factory_queue_serves_every_command_of_its_process() -> None:
    cli = Cli(clean_env())
    app = ["--app", FACTORY]
    listing, shown, success, failure, dry, inline, stats = cli.many(
        [*app, "list", "--json"],
        [*app, "show", "mem-fail-1", "--json"],
        [*app, "retry", "mem-ok-1"],
        [*app, "retry", "mem-fail-1", "--json"],
        [*app, "replay", "--dry-run", "--json"],
        [*app, "retry", "--status", "pending", "--json"],
        [*app, "status", "--json"],
    )
    names = {task_id for task_id, _, _ in MEMORY_TASKS}
    assert set(ids_of(data(listing))) == names
    task = data(shown)
    assert (task["task_id"], task["workflow"], task["status"]) == (
        "mem-fail-1",
        FAIL_WORKFLOW,
        "pending",
    )
    assert task["error"] == "invalid order total"
    assert task["task"] == {"id": "mem-fail-1", "amount": 42}
    assert ok(success).startswith("✓ task mem-ok-1 succeeded on retry 1")
    assert failure.returncode == 1, describe(failure)
    result = json.loads(failure.stdout)
    assert (result["success"], result["status"]) == (False, "pending")
    job = data(dry)
    assert (job["kind"], job["dry_run"], job["state"], job["matched"]) == (
        "replay",
        True,
        "done",
        3,
    )
    assert set(job["summary"]["sample"]) == names
    # a retry job, run in the command (a memory store has no other runner) through the
    # factory's handlers; one of them always fails
    assert inline.returncode == 1, describe(inline)
    job = json.loads(inline.stdout)
    assert (job["kind"], job["state"]) == ("retry", "done")
    assert (job["matched"], job["done"], job["failed"], job["skipped"]) == (3, 2, 1, 0)
    assert [item["task_id"] for item in job["failures"]] == ["mem-fail-1"]
    counts = data(stats)
    assert (counts["backend"], counts["total_stored"]) == ("memory", 3)
    assert counts["lifetime_stats"]["enqueued_total"] == 3


# -- bad input: one line, the right exit status, no traceback -------------------------------------

BAD_INPUT: list[tuple[str, list[str], dict[str, str], int, tuple[str, ...]]] = [
    ("unknown status", ["list", "--status", "bogus"], {}, 2, ("--status", "'bogus'")),
    ("unknown category", ["list", "--category", "bogus"], {}, 2, ("--category", "'bogus'")),
    ("bad duration", ["purge", "--older-than", "30x"], {}, 2, ("--older-than", "'30x'")),
    ("bad --since", ["list", "--since", "last-tuesday"], {}, 2, ("--since", "last-tuesday")),
    ("bad --since date", ["list", "--since", "2026-13-45"], {}, 2, ("--since", "2026-13-45")),
    ("bad --rate", ["replay", "--rate", "fast"], {}, 2, ("--rate", "'fast'")),
    ("zero --rate", ["replay", "--rate", "0/s"], {}, 2, ("--rate", "'0/s'")),
    ("bad --cursor", ["list", "--cursor", "zzz"], {}, 2, ("--cursor",)),
    ("missing config", ["--config", "{tmp}/missing.yaml", "status"], {}, 2, ("missing.yaml",)),
    ("malformed YAML", ["--config", "{tmp}/malformed.yaml", "status"], {}, 2, ("malformed",)),
    ("out of range", ["--config", "{tmp}/range.yaml", "status"], {}, 2, ("max_size", "5")),
    (
        "out of range in env",
        ["status"],
        {"MAHAVISHNU_DLQ_PROCESSOR__CONCURRENCY": "0"},
        2,
        ("processor.concurrency", "MAHAVISHNU_DLQ_PROCESSOR__CONCURRENCY"),
    ),
    (
        "missing config in env",
        ["status"],
        {"MAHAVISHNU_DLQ_CONFIG": "{tmp}/missing.yaml"},
        2,
        ("missing.yaml",),
    ),
    ("no such module", ["--app", "nosuchmodule:x", "status"], {}, 2, ("nosuchmodule",)),
    (
        "no such attribute",
        ["--app", "tests.integration.cli_app:nosuchattr", "status"],
        {},
        2,
        ("nosuchattr",),
    ),
    ("--app without colon", ["--app", "badformat", "status"], {}, 2, ("badformat",)),
    ("retry without --app", ["retry", "some-task"], {}, 2, ("--app",)),
    ("processor without --app", ["processor", "run", "--drain"], {}, 2, ("--app",)),
    ("show unknown id", ["show", "nope"], {}, 1, ("'nope'",)),
    ("retry unknown id", ["retry", "nope", "--app", HANDLERS], {}, 1, ("nope",)),
    ("archive unknown id", ["archive", "nope"], {}, 1, ("nope",)),
]


@pytest.mark.parametrize(
    ("args", "env", "code", "needles"),
    [pytest.param(*case[1:], id=case[0]) for case in BAD_INPUT],
)
def test_bad_input_is_one_line_and_the_right_exit_status(
    args: list[str], env: dict[str, str], code: int, needles: tuple[str, ...], tmp_path: Path
) -> None:
    (tmp_path / "malformed.yaml").write_text("max_size: [1, 2\n")
    (tmp_path / "range.yaml").write_text("max_size: 5\n")
    place = {"tmp": str(tmp_path)}
    cli = Cli(clean_env(**{k: v.format_map(place) for k, v in env.items()}))
    run = cli(*(arg.format_map(place) for arg in args))
    refused(run, code, *needles)
    assert run.stdout == "", describe(run)


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_unreachable_opensearch_is_one_line_without_credentials() -> None:
    port = _closed_port()
    secrets = ("s3cret-pass",)
    cli = Cli(
        clean_env(
            MAHAVISHNU_DLQ_STORE="opensearch",
            # the credentials move to username/password when settings load (the store
            # sends them, and masks the password in what it reports)
            MAHAVISHNU_DLQ_OPENSEARCH__HOSTS=json.dumps(
                [f"http://elastic:s3cret-pass@127.0.0.1:{port}"]
            ),
        )
    )
    *failed, config = cli.many(
        ["status"],
        ["list", "--json"],
        ["show", "some-task"],
        ["retry", "some-task", "--app", HANDLERS],
        ["purge", "--yes"],
        ["processor", "run", "--app", HANDLERS, "--drain"],
        ["config", "show", "--json"],
    )
    for run in failed:
        refused(run, 1, f"127.0.0.1:{port}")
        assert not any(secret in run.stderr + run.stdout for secret in secrets), describe(run)
    shown = data(config)
    assert shown["store"] == "opensearch"
    assert not any(secret in config.stdout for secret in secrets), describe(config)
