"""Helpers of the SQLite integration tests: child processes on a store file, and the
file's content read back, checked and damaged."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest

from mahavishnu_dlq import DeadLetterQueue
from mahavishnu_dlq.models import TaskFilter
from mahavishnu_dlq.storage.sqlite import SQLiteStore
from tests.integration._children import side_by_side
from tests.integration._confined import CANNOT_CONFINE

ROOT = Path(__file__).resolve().parents[2]
PROG = "mahavishnu-dlq"
TIMEOUT = 60.0  # for one child process; they take about half a second

Run = subprocess.CompletedProcess[str]

#: What each faulty file held before the fault, read back after it.
KEPT = [f"kept-{i}" for i in range(20)]


# -- processes ----------------------------------------------------------------------------


def env_for(path: Path) -> dict[str, str]:
    """This environment without ``MAHAVISHNU_DLQ_*``, with the SQLite store at ``path``."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("MAHAVISHNU_DLQ_")}
    env.update(MAHAVISHNU_DLQ_STORE="sqlite", MAHAVISHNU_DLQ_SQLITE__PATH=str(path), COLUMNS="200")
    return env


def python(path: Path, *args: str, confine: Sequence[str] = ()) -> Run:
    """``python ARGS`` on the store at ``path``, confined (see ``_confined``) when asked."""
    wrapper = ["-m", "tests.integration._confined", *confine, "--"] if confine else []
    run = subprocess.run(  # noqa: S603 - our own interpreter
        [sys.executable, *wrapper, *args],
        cwd=ROOT,
        env=env_for(path),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    if run.returncode == CANNOT_CONFINE:
        pytest.skip(f"this process cannot confine a child: {run.stderr.strip()}")
    return run


def cli(path: Path, *args: str, confine: Sequence[str] = ()) -> Run:
    """``mahavishnu-dlq ARGS`` on the store at ``path``."""
    return python(path, "-m", "mahavishnu_dlq", *args, confine=confine)


def cli_many(path: Path, *commands: Sequence[str]) -> list[Run]:
    """Independent ``mahavishnu-dlq`` commands on ``path``, run side by side; in order."""
    argvs = [[sys.executable, "-m", "mahavishnu_dlq", *command] for command in commands]
    return side_by_side(argvs, env_for(path), TIMEOUT)


def describe(run: Run) -> str:
    return (
        f"$ {' '.join(map(str, run.args))}\nexit status {run.returncode}\n"
        f"--- stdout ---\n{run.stdout}\n--- stderr ---\n{run.stderr}"
    )


def refused(run: Run, code: int, *needles: str) -> str:
    """One line on stderr, starting with the program and naming ``needles``; exit ``code``."""
    line = run.stderr.strip()
    assert run.returncode == code, describe(run)
    assert "Traceback" not in run.stderr + run.stdout, describe(run)
    assert len(line.splitlines()) == 1, describe(run)
    assert line.startswith(f"{PROG}: "), describe(run)
    for needle in needles:
        assert needle in line, f"{needle!r} not named\n{describe(run)}"
    return line


# -- files -------------------------------------------------------------------------------


async def fill(path: Path, ids: Sequence[str] = KEPT, pad: int = 2000) -> None:
    """A real database at ``path`` holding ``ids`` (each with ``pad`` bytes of input), due."""
    async with DeadLetterQueue(SQLiteStore(path)) as dlq:
        for task_id in ids:
            await dlq.enqueue(
                task_id,
                {"id": task_id, "pad": "x" * pad},
                error="refused",
                retry_policy="immediate",
            )


async def read_all(path: Path) -> dict[str, dict[str, Any]]:
    """Every record in the file at ``path``, re-opened: ``{task_id: its input}``."""
    store = SQLiteStore(path)
    try:
        page = await store.query(TaskFilter(), limit=10_000)
        assert page.cursor is None
        return {task.task_id: task.task for task in page}
    finally:
        await store.close()


def integrity(path: Path) -> str:
    connection = sqlite3.connect(path)
    try:
        return str(connection.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        connection.close()


def set_user_version(path: Path, version: int) -> None:
    connection = sqlite3.connect(path)
    try:
        connection.execute(f"PRAGMA user_version = {version}")
    finally:
        connection.close()


def assert_kept(path: Path, ids: Sequence[str] = KEPT) -> None:
    """The file at ``path`` passes its integrity check and holds ``ids`` as written."""
    assert integrity(path) == "ok"
    stored = anyio.run(read_all, path)
    assert sorted(stored) == sorted(ids)
    for task_id in ids:
        assert stored[task_id]["id"] == task_id
