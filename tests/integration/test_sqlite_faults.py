"""The SQLite store against faults: a file that is not a database, one cut in half, a
newer schema, a directory that cannot be made, a read-only directory, a full disk, and
rows it cannot read — through the library and through the CLI. (The module docstring of
``test_sqlite_store`` says what each test checks and why the tests confine children.)"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from mahavishnu_dlq import DeadLetterQueue, RetryProcessor
from mahavishnu_dlq.errors import (
    ConfigurationError,
    DLQError,
    StoreUnavailableError,
    UnreadableRecordError,
)
from mahavishnu_dlq.models import DeadLetterStatus
from mahavishnu_dlq.settings import DLQSettings, SQLiteSettings
from mahavishnu_dlq.storage import sqlite_schema
from mahavishnu_dlq.storage.sqlite import SQLiteStore
from tests.integration._sqlite_files import (
    KEPT,
    assert_kept,
    cli,
    cli_many,
    describe,
    fill,
    python,
    read_all,
    refused,
    set_user_version,
)

# -- 3. faults, through the library --------------------------------------------------------


async def open_store(path: Path) -> None:
    store = SQLiteStore(path)
    try:
        await store.open()
        await store.count()
    finally:
        await store.close()


async def open_queue(path: Path) -> None:
    settings = DLQSettings(store="sqlite", sqlite=SQLiteSettings(path=str(path)))
    async with DeadLetterQueue.from_settings(settings) as dlq:
        await dlq.count_tasks()


Opener = Callable[[Path], Awaitable[None]]
openers = pytest.mark.parametrize("opener", [open_store, open_queue], ids=["store", "settings"])


async def refused_open(opener: Opener, path: Path, kind: type[DLQError], *needles: str) -> str:
    """The error ``opener`` raises on ``path``: of ``kind``, naming the file and ``needles``."""
    with pytest.raises(kind) as caught:
        await opener(path)
    message = str(caught.value)
    assert f"sqlite file {str(path)!r}" in message
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    assert "\n" not in message
    return message


@pytest.mark.anyio
@openers
async def test_a_file_that_is_not_a_database_is_refused_and_left_alone(
    tmp_path: Path, opener: Opener
) -> None:
    path = tmp_path / "dlq.sqlite3"
    garbage = os.urandom(64 * 1024)
    path.write_bytes(garbage)
    message = await refused_open(opener, path, StoreUnavailableError, "not a database")
    assert "move it aside" in message
    assert path.read_bytes() == garbage
    await refused_open(opener, path, StoreUnavailableError)  # again: the same, no leak
    assert path.read_bytes() == garbage


def cut_in_half(path: Path) -> bytes:
    """The database at ``path`` (filled, closed) cut to half its size: what is left."""
    whole = path.read_bytes()  # the store checkpointed its log when it closed
    assert len(whole) > 64 * 1024
    path.write_bytes(whole[: len(whole) // 2])
    return path.read_bytes()


@pytest.mark.anyio
@openers
async def test_a_truncated_database_is_refused_and_left_alone(
    tmp_path: Path, opener: Opener
) -> None:
    path = tmp_path / "dlq.sqlite3"
    await fill(path)
    half = cut_in_half(path)
    message = await refused_open(opener, path, StoreUnavailableError, "malformed")
    assert "damaged" in message
    assert "move it aside" in message
    assert path.read_bytes() == half  # what is left of it, left for a recovery tool


@pytest.mark.anyio
@openers
async def test_a_directory_that_cannot_be_created_is_named(tmp_path: Path, opener: Opener) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a regular file\n")
    path = blocker / "state" / "dlq.sqlite3"  # even root cannot create a directory in a file
    await refused_open(
        opener, path, StoreUnavailableError, "its directory cannot be created", "sqlite.path"
    )
    assert blocker.read_text() == "a regular file\n"


@pytest.mark.anyio
@openers
async def test_a_file_of_a_newer_schema_is_refused_untouched(
    tmp_path: Path, opener: Opener
) -> None:
    path = tmp_path / "dlq.sqlite3"
    await fill(path)
    newer = sqlite_schema.SCHEMA_VERSION + 1
    set_user_version(path, newer)
    before = path.read_bytes()
    with pytest.raises(ConfigurationError) as caught:
        await opener(path)
    message = str(caught.value)
    assert caught.value.field == "sqlite.path"
    assert f"sqlite file {str(path)!r} has schema version {newer}" in message
    assert "upgrade mahavishnu-dlq" in message
    assert path.read_bytes() == before  # not migrated, not written
    set_user_version(path, sqlite_schema.SCHEMA_VERSION)  # what that version would read
    assert sorted(await read_all(path)) == sorted(KEPT)


# -- 4. faults, through the CLI --------------------------------------------------------------


def test_the_cli_refuses_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "dlq.sqlite3"
    garbage = os.urandom(64 * 1024)
    path.write_bytes(garbage)
    refused(cli(path, "status"), 1, repr(str(path)), "not a database", "move it aside")
    assert path.read_bytes() == garbage


def test_the_cli_refuses_a_truncated_database(tmp_path: Path) -> None:
    path = tmp_path / "dlq.sqlite3"
    anyio.run(fill, path)
    half = cut_in_half(path)
    refused(cli(path, "list"), 1, repr(str(path)), "damaged", "move it aside")
    assert path.read_bytes() == half


def test_the_cli_names_a_directory_that_cannot_be_created(tmp_path: Path) -> None:
    path = tmp_path / "not-a-directory" / "dlq.sqlite3"
    path.parent.write_text("a regular file\n")
    refused(cli(path, "status"), 1, repr(str(path)), "its directory cannot be created")


def test_the_cli_refuses_a_file_of_a_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "dlq.sqlite3"
    anyio.run(fill, path)
    set_user_version(path, sqlite_schema.SCHEMA_VERSION + 1)
    before = path.read_bytes()
    refused(cli(path, "list"), 2, repr(str(path)), "newer mahavishnu-dlq", "upgrade")
    assert path.read_bytes() == before
    set_user_version(path, sqlite_schema.SCHEMA_VERSION)
    assert_kept(path)


# -- 5. a read-only directory and a full disk (confined child processes) ----------------------

OPENERS = """
import json, sys, anyio
from mahavishnu_dlq import DeadLetterQueue, DLQSettings
from mahavishnu_dlq.settings import SQLiteSettings
from mahavishnu_dlq.storage.sqlite import SQLiteStore

async def main(path):
    errors = {}
    store = SQLiteStore(path)
    try:
        await store.open()
        await store.mutate("new", lambda current: current)
    except Exception as exc:
        errors["store"] = [type(exc).__name__, str(exc)]
    settings = DLQSettings(store="sqlite", sqlite=SQLiteSettings(path=path))
    try:
        async with DeadLetterQueue.from_settings(settings) as dlq:
            await dlq.enqueue("new", {}, error="boom")
    except Exception as exc:
        errors["settings"] = [type(exc).__name__, str(exc)]
    print(json.dumps(errors))

anyio.run(main, sys.argv[1], backend=sys.argv[2])
"""


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
def test_a_read_only_directory_is_named_and_nothing_is_lost(tmp_path: Path, loop: str) -> None:
    directory = tmp_path / "state"
    directory.mkdir()
    path = directory / "dlq.sqlite3"
    anyio.run(fill, path)
    contents = sorted(p.name for p in directory.iterdir())
    assert contents == ["dlq.sqlite3"]  # closed cleanly: no -wal or -shm file
    directory.chmod(0o555)
    try:
        library = python(path, "-c", OPENERS, str(path), loop, confine=["--no-dac-override"])
        assert library.returncode == 0, describe(library)
        errors = json.loads(library.stdout)
        assert sorted(errors) == ["settings", "store"]
        for kind, message in errors.values():
            assert kind == "StoreUnavailableError"
            assert f"sqlite file {str(path)!r}" in message
            assert "cannot write the file or its directory" in message
            assert "fix the permissions, or set sqlite.path elsewhere" in message
        refused(
            cli(path, "status", confine=["--no-dac-override"]),
            1,
            repr(str(path)),
            "cannot write the file or its directory",
        )
        assert sorted(p.name for p in directory.iterdir()) == contents
    finally:
        directory.chmod(0o755)
    assert_kept(path)


FILLER = """
import json, sys, anyio
from mahavishnu_dlq import DeadLetterQueue, DLQSettings
from mahavishnu_dlq.settings import SQLiteSettings
from mahavishnu_dlq.storage.sqlite import SQLiteStore
from mahavishnu_dlq.testing import make_task

async def main(path):
    settings = DLQSettings(store="sqlite", sqlite=SQLiteSettings(path=path))
    async with DeadLetterQueue.from_settings(settings) as dlq:
        for i in range(10_000):
            task_id = f"fill-{i:05d}"
            try:
                await dlq.enqueue(task_id, {"id": task_id, "pad": "y" * 8000}, error="boom")
            except Exception as exc:
                failed = {"id": task_id, "queue": [type(exc).__name__, str(exc)]}
                break
            print(json.dumps({"acknowledged": task_id}), flush=True)
        else:
            raise SystemExit("the disk never filled")
        store = SQLiteStore(path)  # another store on the file: its writes fail too ...
        bigger = make_task(task_id="bigger", task={"pad": "z" * 64_000})
        try:
            await store.mutate(bigger.task_id, lambda current: bigger)
        except Exception as exc:
            failed["store"] = [type(exc).__name__, str(exc)]
        failed["count"] = await store.count()  # ... and it still reads
        await store.close()
    print(json.dumps(failed), flush=True)

anyio.run(main, sys.argv[1], backend=sys.argv[2])
"""

#: The file-size limit of the full-disk tests: room for the shared-memory index (32 KiB)
#: and a few transactions of the write-ahead log.
LIMIT = 256 * 1024


def assert_disk_full(message: str, path: Path) -> None:
    assert f"sqlite file {str(path)!r}" in message
    assert "disk I/O error" in message or "database or disk is full" in message, message
    assert "free space where the file lives" in message
    assert "what was written before is kept" in message


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
def test_a_full_disk_fails_the_write_and_keeps_what_was_acknowledged(
    tmp_path: Path, loop: str
) -> None:
    path = tmp_path / "dlq.sqlite3"
    anyio.run(fill, path)
    run = python(path, "-c", FILLER, str(path), loop, confine=[f"--file-size-limit={LIMIT}"])
    assert run.returncode == 0, describe(run)
    *acks, last = [json.loads(line) for line in run.stdout.splitlines()]
    acknowledged = [ack["acknowledged"] for ack in acks]
    assert acknowledged, "the first write already failed: raise LIMIT"
    for kind, message in (last["queue"], last["store"]):
        assert kind == "StoreUnavailableError"
        assert_disk_full(message, path)
    assert last["count"] == len(KEPT) + len(acknowledged)
    assert_kept(path, [*KEPT, *acknowledged])  # and the refused write is not there


CLAIMER = """
import sys, anyio
from datetime import datetime, timedelta, timezone
from mahavishnu_dlq.storage.sqlite import SQLiteStore

async def main(path):
    store = SQLiteStore(path)
    try:
        later = datetime.now(timezone.utc) + timedelta(days=1)
        await store.claim_due(later, 10, lambda task: task.evolve(metadata={"claimed": 1}))
    except Exception as exc:
        print(type(exc).__name__, exc)
    finally:
        await store.close()

anyio.run(main, sys.argv[1], backend=sys.argv[2])
"""


def test_a_disk_filling_up_inside_a_transaction_is_named_too(tmp_path: Path) -> None:
    path = tmp_path / "dlq.sqlite3"
    big = ["big-0", "big-1"]
    anyio.run(fill, path, big, 900_000)
    # rewriting 1.8 MB overflows SQLite's page cache: pages go to the log in the middle
    # of the claim's statements, and that write fails (SQLite then rolls back it all)
    run = python(path, "-c", CLAIMER, str(path), "trio", confine=["--file-size-limit=1000000"])
    assert run.returncode == 0, describe(run)
    kind, _, message = run.stdout.strip().partition(" ")
    assert kind == "StoreUnavailableError", describe(run)
    assert_disk_full(message, path)
    assert_kept(path, big)

    async def unclaimed() -> None:
        store = SQLiteStore(path)
        try:
            for task_id in big:
                task = await store.get(task_id)
                assert task is not None
                assert task.status is DeadLetterStatus.PENDING
                assert "claimed" not in task.metadata
        finally:
            await store.close()

    anyio.run(unclaimed)


def test_the_cli_reports_a_full_disk_and_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "dlq.sqlite3"
    big = [f"big-{i}" for i in range(3)]
    anyio.run(fill, path, [*KEPT, *big], 300_000)  # archiving one rewrites 300 kB
    line = refused(
        cli(path, "archive", "big-0", confine=[f"--file-size-limit={LIMIT // 2}"]),
        1,
        repr(str(path)),
    )
    assert_disk_full(line, path)
    assert_kept(path, [*KEPT, *big])
    listed = cli(path, "list", "--status", "archived", "--json")
    assert listed.returncode == 0, describe(listed)
    assert json.loads(listed.stdout)["tasks"] == []  # the archive did not happen


# -- 6. rows the store cannot read ------------------------------------------------------------

#: Each bad row: the healthy row with these columns and document changes.
BAD_ROWS = ("bad-json", "bad-status", "bad-type", "bad-id")


def write_bad_rows(path: Path, healthy_id: str) -> dict[str, str]:
    """The bad rows, written with plain sqlite3 next to ``healthy_id``, all due now; their
    stored text by id. Two are the only (so the example) rows of their fingerprint."""
    connection = sqlite3.connect(path)
    try:
        columns = sqlite_schema.COLUMNS
        row = connection.execute(
            f"SELECT {', '.join(columns)} FROM tasks WHERE task_id = ?",  # noqa: S608
            (healthy_id,),
        ).fetchone()
        healthy = dict(zip(columns, row, strict=True))
        doc = json.loads(healthy["doc"])
        older = healthy["failed_at_us"] - 1_000_000
        rows: dict[str, dict[str, Any]] = {
            "bad-json": {"doc": '{"task_id": "bad-json", not json', "fingerprint": "fp-json"},
            "bad-status": {
                "doc": json.dumps({**doc, "task_id": "bad-status", "status": "frozen"}),
                "status": "frozen",  # as a newer version would write it
            },
            "bad-type": {
                "doc": json.dumps({**doc, "task_id": "bad-type", "error": 12345}),
                "fingerprint": "fp-type",
            },
            "bad-id": {"doc": json.dumps({**doc, "task_id": "someone-else"})},
        }
        marks = ", ".join("?" * len(columns))
        for task_id, changes in rows.items():
            values = {**healthy, "task_id": task_id, "failed_at_us": older, **changes}
            connection.execute(
                f"INSERT INTO tasks ({', '.join(columns)}) VALUES ({marks})",  # noqa: S608
                [values[column] for column in columns],
            )
        connection.commit()
        return {task_id: changes["doc"] for task_id, changes in rows.items()}
    finally:
        connection.close()


@pytest.mark.anyio
async def test_rows_it_cannot_read_never_stop_a_read_or_the_processor(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="mahavishnu_dlq")
    path = tmp_path / "dlq.sqlite3"
    store = SQLiteStore(path)
    dlq = DeadLetterQueue(store)
    done: list[Any] = []
    dlq.register_handler("wf", lambda task, repos: done.append(task["n"]))
    await dlq.enqueue("healthy", {"n": "h"}, error="boom", workflow="wf", retry_policy="immediate")
    stored = write_bad_rows(path, "healthy")

    assert await dlq.count_tasks() == 1 + len(BAD_ROWS)  # counting reads no document
    fresh = await dlq.get_statistics()  # nothing read yet: what the columns tell
    assert (fresh["total_stored"], fresh["unreadable"]) == (1 + len(BAD_ROWS), 1)
    assert [t.task_id for t in await dlq.list_tasks()] == ["healthy"]
    stats = await dlq.get_statistics()
    assert stats["unreadable"] == len(BAD_ROWS)
    examples = {f["fingerprint"]: f for f in stats["top_fingerprints"]}
    assert examples["fp-json"]["example_error"] == ""  # no error to show, and no failure
    assert examples["fp-type"]["example_error"] == ""

    for task_id, text in stored.items():
        with pytest.raises(UnreadableRecordError) as caught:
            await dlq.get_task(task_id)
        assert (caught.value.task_id, caught.value.source) == (task_id, text)
        with pytest.raises(UnreadableRecordError):
            await dlq.retry_task(task_id)
        with pytest.raises(UnreadableRecordError):
            await dlq.archive_task(task_id)
        with pytest.raises(UnreadableRecordError):  # nothing overwrites it
            await dlq.enqueue(task_id, {}, error="again")
    dry = await dlq.replay(dry_run=True)
    assert [item.task_id for item in dry.items] == ["healthy"]
    assert await RetryProcessor(dlq).run_once() == 1  # claims pass over the due bad rows
    assert done == ["h"]
    healthy = await dlq.get_task("healthy")
    assert healthy is not None
    assert healthy.status is DeadLetterStatus.COMPLETED
    assert await store.next_due_at() is not None  # the bad rows: still due, never claimed

    assert await dlq.purge(status="completed") == 1
    assert await dlq.count_tasks() == len(BAD_ROWS)
    await store.close()
    connection = sqlite3.connect(path)
    try:
        left = dict(connection.execute("SELECT task_id, doc FROM tasks").fetchall())
    finally:
        connection.close()
    assert left == stored  # kept as they were written

    reported = [r for r in caplog.records if getattr(r, "action", "") == "dlq.unreadable"]
    assert sorted(r.task_id for r in reported) == sorted(BAD_ROWS)  # type: ignore[attr-defined]
    assert all(str(path) in r.getMessage() for r in reported)


def test_the_cli_shows_a_row_it_cannot_read_as_stored(tmp_path: Path) -> None:
    path = tmp_path / "dlq.sqlite3"

    async def enqueue() -> None:
        async with DeadLetterQueue(SQLiteStore(path)) as dlq:
            await dlq.enqueue("healthy", {"n": 1}, error="boom")

    anyio.run(enqueue)
    stored = write_bad_rows(path, "healthy")
    listed, status, dry, shown, other = cli_many(
        path,
        ["list", "--json"],
        ["status", "--json"],
        ["replay", "--dry-run", "--json"],
        ["show", "bad-json"],
        ["show", "bad-id", "--json"],
    )
    assert listed.returncode == 0, describe(listed)
    assert [t["task_id"] for t in json.loads(listed.stdout)["tasks"]] == ["healthy"]
    assert status.returncode == 0, describe(status)
    counts = json.loads(status.stdout)
    # a process that read no row counts what the columns tell (the unknown status)
    assert (counts["total_stored"], counts["unreadable"]) == (1 + len(BAD_ROWS), 1)
    assert dry.returncode == 0, describe(dry)
    summary = json.loads(dry.stdout)["summary"]  # counted from the columns, as status is
    assert "healthy" in summary["sample"], describe(dry)
    assert summary["total"] == len(summary["sample"])

    line = refused(shown, 1, "'bad-json' is stored but cannot be read", "not JSON", "stdout")
    assert shown.stdout.strip() == stored["bad-json"]
    assert "\n" not in line
    refused(other, 1, "'bad-id'", "task 'someone-else'")
    shown_json = json.loads(other.stdout)
    assert (shown_json["task_id"], shown_json["unreadable"]) == ("bad-id", True)
    assert shown_json["source"] == json.loads(stored["bad-id"])
