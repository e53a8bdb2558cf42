"""A producer SIGKILLed during an OpenSearch outage: what its journal saves, and what memory loses.

The node is killed first. A child process (:mod:`tests.chaos._producer`) with
``store: failover`` runs 50 producers enqueueing up to 5,000 ids; each id it is
acknowledged is appended to a file at once. Mid-stream the child is SIGKILLed. The
node is started again on the same data, and a new process with the same settings
file starts and waits for its re-sync. Then OpenSearch is read as a third process
would: with ``failover.fallback: sqlite`` every acknowledged id is there, once; with
``fallback: memory`` the acknowledged ids are lost, and the test says how many.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from mahavishnu_dlq.models import DeadLetterStatus
from mahavishnu_dlq.storage.opensearch import OpenSearchStore
from mahavishnu_dlq.storage.sqlite import SQLiteStore
from tests.chaos.conftest import Record, everything
from tests.chaos.node import ChaosNode

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
PRODUCERS, EACH = 50, 100  # 5,000 ids
KILL_AFTER = 2_000  # acknowledged ids before the SIGKILL


def settings_file(tmp_path: Path, url: str, index: str, fallback: str) -> Path:
    path = tmp_path / "settings.yaml"
    path.write_text(
        json.dumps(  # JSON is YAML
            {
                "store": "failover",
                "opensearch": {"hosts": [url], "index": index, "timeout_seconds": 5},
                "failover": {
                    "fallback": fallback,
                    "path": str(tmp_path / "journals"),
                    "failure_threshold": 1,
                    "probe_interval_seconds": 0.5,
                    "store_timeout_seconds": 2,
                },
            }
        )
    )
    return path


def child(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "tests.chaos._producer", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def acknowledged(path: Path) -> list[str]:
    """The ids written down whole (a SIGKILL may cut the last line)."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    return [line for line in text.split("\n")[:-1] if line]


def produce_then_die(tmp_path: Path, settings: Path) -> list[str]:
    """Run the producer until ``KILL_AFTER`` ids are acknowledged, SIGKILL it; the ids."""
    acked = tmp_path / "acked.txt"
    producer = child(str(settings), "produce", str(acked), str(PRODUCERS), str(EACH))
    try:
        deadline = time.monotonic() + 120
        while len(acknowledged(acked)) < KILL_AFTER:
            assert producer.poll() is None, f"the producer exited ({producer.returncode})"
            assert time.monotonic() < deadline, "the producer acknowledged too few in 120 s"
            time.sleep(0.01)
    finally:
        producer.send_signal(signal.SIGKILL)
        producer.wait()
        assert producer.stdout is not None
        producer.stdout.close()
    ids = acknowledged(acked)
    assert len(ids) < PRODUCERS * EACH, "the producer finished before it was killed"
    return ids


def sync_in_a_new_process(settings: Path) -> dict[str, Any]:
    successor = child(str(settings), "sync")
    out, _ = successor.communicate(timeout=180)
    assert successor.returncode == 0, f"the new process failed ({successor.returncode})"
    report: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return report


async def killed_during_an_outage(
    node: ChaosNode, index: str, tmp_path: Path, fallback: str
) -> tuple[list[str], dict[str, Any]]:
    """The node killed, a producer SIGKILLed mid-stream, the node started again, a new
    process with the same settings until its re-sync is done: the ids the producer was
    acknowledged, and the new process's report."""
    settings = settings_file(tmp_path, node.url, index, fallback)
    await anyio.to_thread.run_sync(node.kill)
    acked = await anyio.to_thread.run_sync(produce_then_die, tmp_path, settings)
    await anyio.to_thread.run_sync(node.restart)
    report = await anyio.to_thread.run_sync(sync_in_a_new_process, settings)
    return acked, report


async def test_a_producer_killed_during_an_outage_loses_nothing_with_the_sqlite_journal(
    chaos_node: ChaosNode,
    index_name: str,
    reader: OpenSearchStore,
    tmp_path: Path,
    chaos_timing: Record,
) -> None:
    acked, report = await killed_during_an_outage(chaos_node, index_name, tmp_path, "sqlite")

    assert report["pending_at_start"] >= len(acked)  # found in the dead process's journal
    assert report["pending_resync"] == 0
    assert report["degraded"] is False
    stored = await everything(reader)
    ids = [t.task_id for t in stored]
    assert len(ids) == len(set(ids)), "a task id is stored twice"
    missing = set(acked) - set(ids)
    assert not missing, f"{len(missing)} acknowledged ids are not in OpenSearch"
    for task in stored:
        assert task.status is DeadLetterStatus.PENDING
        assert task.error == task.task_id  # each record whole
    journals = sorted(p.name for p in (tmp_path / "journals").glob("*.sqlite3"))
    assert journals == ["journal-1.sqlite3"]  # the dead one's slot, taken and emptied
    journal = SQLiteStore(tmp_path / "journals" / journals[0])
    try:
        assert await journal.count() == 0  # nothing left to re-sync
    finally:
        await journal.close()
    changes, seconds = report["last_resync_changes"], report["last_resync_seconds"]
    chaos_timing(f"acknowledged before the SIGKILL: {len(acked)}", 0.0)
    chaos_timing(f"re-sync of {changes} changes ({changes / seconds:.0f}/s)", seconds)


async def test_the_memory_fallback_loses_what_a_killed_producer_was_acknowledged(
    chaos_node: ChaosNode,
    index_name: str,
    reader: OpenSearchStore,
    tmp_path: Path,
    chaos_timing: Record,
) -> None:
    """The loss the journal prevents, asserted: the same run with ``fallback: memory``."""
    acked, report = await killed_during_an_outage(chaos_node, index_name, tmp_path, "memory")

    assert report["pending_at_start"] == 0  # nothing survived the process
    assert report["journal"] is None
    await reader.open()
    stored = {t.task_id for t in await everything(reader)}
    lost = set(acked) - stored
    assert lost == set(acked)  # every failure acknowledged during the outage is gone
    chaos_timing(f"memory fallback: acknowledged ids lost {len(lost)} of {len(acked)}", 0.0)
