"""examples/dramatiq_project runs end to end against a real Dramatiq worker and Redis:
the story script, then the CLI's processor replaying a stored message by policy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import redis

from mahavishnu_dlq.blocking import BlockingDLQ
from mahavishnu_dlq.models import DeadLetterStatus, FailedTask
from mahavishnu_dlq.queue import DeadLetterQueue
from mahavishnu_dlq.settings import DLQSettings

from .test_dramatiq import ROOT, dramatiq_worker
from .waiting import wait_until


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MAHAVISHNU_DLQ_")}
    return subprocess.run(  # noqa: S603 - our own arguments
        [sys.executable, *args],
        cwd=ROOT,
        env={**full_env, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_example_project_runs_end_to_end(redis_url: str, tmp_path: Path) -> None:
    db = tmp_path / "dlq.db"
    env = {
        "DRAMATIQ_REDIS_URL": redis_url,
        "MAHAVISHNU_DLQ_STORE": "sqlite",
        "MAHAVISHNU_DLQ_SQLITE__PATH": str(db),
        # due at once, so the processor below has something to replay
        "MAHAVISHNU_DLQ_POLICIES__BY_WORKFLOW": json.dumps(
            {"reserve_stock": {"policy": "immediate"}}
        ),
    }
    flags = redis.Redis.from_url(redis_url, decode_responses=True)
    flags.delete("warehouse-api:down", "warehouse-api:reserved")
    settings = DLQSettings.load(
        store="sqlite", sqlite={"path": str(db)}, retry_processor_enabled=False
    )
    with (
        flags,
        dramatiq_worker("examples.dramatiq_project.tasks", env, tmp_path / "worker.log"),
        BlockingDLQ(DeadLetterQueue.from_settings(settings)) as queue,
    ):
        story = _run(["-m", "examples.dramatiq_project.run"], env)
        assert story.returncode == 0, story.stdout + story.stderr
        assert story.stdout.splitlines() == [
            (
                "stored: reserve_stock ['order-1042', 'sku-7'] -> network ConnectionError:"
                " warehouse API: connection refused (Dramatiq tried 3 times)"
            ),
            "replayed to queue 'default': sent; the worker reports how it ends",
            "completed after 1 attempt from the queue",
            "reserved: True",
        ]

        # the module docstring's other way: the CLI's processor, by policy
        flags.set("warehouse-api:down", 1)
        send = "from examples.dramatiq_project.tasks import reserve_stock as r; "
        send += "print(r.send('order-1043', 'sku-8').message_id)"
        sent = _run(["-c", send], env)
        assert sent.returncode == 0, sent.stderr
        task_id = sent.stdout.strip()
        wait_until("the stored failure", lambda: queue.get_task(task_id))
        flags.delete("warehouse-api:down")
        app = "examples.dramatiq_project.tasks:dlq"
        drained = _run(["-m", "mahavishnu_dlq", "processor", "run", "--drain", "--app", app], env)
        assert drained.returncode == 0, drained.stdout + drained.stderr

        def completed() -> FailedTask | None:
            task = queue.get_task(task_id)
            return task if task is not None and task.status is DeadLetterStatus.COMPLETED else None

        done = wait_until("the replay to complete the record", completed)
        assert done.metadata["queue"] == "default"
        assert flags.sismember("warehouse-api:reserved", "order-1043") == 1
