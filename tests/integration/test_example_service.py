"""examples/asyncio_service.py runs as its README says: a plain asyncio service whose
failures are stored and retried by the processor in its own loop, on the default
SQLite store, leaving completed records behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mahavishnu_dlq import DeadLetterQueue, DLQSettings
from mahavishnu_dlq.models import AttemptOutcome, DeadLetterStatus

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "asyncio_service.py"

pytestmark = pytest.mark.anyio


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    """The example as a user runs it; its SQLite file lands under this test's own
    ``$XDG_STATE_HOME`` (set by the autouse fixture of tests/conftest.py)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAHAVISHNU_DLQ_")}
    return subprocess.run(  # noqa: S603 - our own example
        [sys.executable, str(EXAMPLE), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )


async def test_the_asyncio_service_retries_its_failures() -> None:
    done = _run("9")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "6 charged at once, 3 queued, 3 charged on retry"
    assert "Traceback" not in done.stderr

    settings = DLQSettings.load()  # the same default file the example used
    async with DeadLetterQueue.from_settings(settings) as dlq:
        records = sorted(await dlq.list_tasks("completed"), key=lambda task: task.task_id)
    assert [task.task_id for task in records] == ["order-3", "order-6", "order-9"]
    for task in records:
        assert task.status is DeadLetterStatus.COMPLETED
        assert task.workflow == "charge"
        assert task.error_category.value == "network"
        assert task.last_error_type == "ConnectionResetError"
        assert [a.outcome for a in task.attempts] == [AttemptOutcome.SUCCESS]
