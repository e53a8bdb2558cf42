"""What the CLI acceptance tests hand to ``--app tests.integration.cli_app:<attr>``.

- :data:`handlers`: a ``{workflow: handler}`` mapping; the CLI builds the queue
  from the settings (the environment of the test) and registers them. Tasks of
  :data:`OK_WORKFLOW` succeed on retry, tasks of :data:`FAIL_WORKFLOW` always fail,
  tasks of :data:`SLOW_WORKFLOW` run until the processor is stopped.
- :func:`memory_queue`: an async factory returning a queue on the in-memory store
  that already holds the failures of :data:`MEMORY_TASKS`, so every command of one
  CLI process sees them.
"""

from __future__ import annotations

from typing import Any

import anyio

from mahavishnu_dlq import DeadLetterQueue
from mahavishnu_dlq.queue import Handler
from mahavishnu_dlq.settings import DLQSettings

__all__ = [
    "FAIL_WORKFLOW",
    "HANDLER_ERROR",
    "MEMORY_TASKS",
    "OK_WORKFLOW",
    "SLOW_WORKFLOW",
    "handlers",
    "memory_queue",
]

OK_WORKFLOW = "cli-ok"
FAIL_WORKFLOW = "cli-fail"
SLOW_WORKFLOW = "cli-slow"
HANDLER_ERROR = "handler refused the task"


async def succeed(task: dict[str, Any], repos: list[str]) -> dict[str, Any]:
    """The retry of an :data:`OK_WORKFLOW` task: always works."""
    return {"handled": task.get("id"), "repos": repos}


def refuse(task: dict[str, Any], repos: list[str]) -> None:
    """The retry of a :data:`FAIL_WORKFLOW` task: always fails (a sync handler)."""
    raise RuntimeError(f"{HANDLER_ERROR} {task.get('id')}")


async def linger(task: dict[str, Any], repos: list[str]) -> None:
    """The retry of a :data:`SLOW_WORKFLOW` task: outlasts any test (it is stopped)."""
    await anyio.sleep(600)


handlers: dict[str, Handler] = {OK_WORKFLOW: succeed, FAIL_WORKFLOW: refuse, SLOW_WORKFLOW: linger}

#: (task_id, workflow, error) of the failures :func:`memory_queue` holds, all
#: awaiting an operator (policy "never"): nothing retries them on its own.
MEMORY_TASKS: tuple[tuple[str, str, str], ...] = (
    ("mem-ok-1", OK_WORKFLOW, "connection reset by peer"),
    ("mem-ok-2", OK_WORKFLOW, "upstream timed out"),
    ("mem-fail-1", FAIL_WORKFLOW, "invalid order total"),
)


async def memory_queue() -> DeadLetterQueue:
    """A queue on the memory store with :data:`handlers` and :data:`MEMORY_TASKS` in it."""
    dlq = DeadLetterQueue.from_settings(DLQSettings.load(store="memory"))
    for workflow, handler in handlers.items():
        dlq.register_handler(workflow, handler)
    await dlq.connect()
    for task_id, workflow, error in MEMORY_TASKS:
        await dlq.enqueue(
            task_id,
            {"id": task_id, "amount": 42},
            ["repo-mem"],
            RuntimeError(error),
            retry_policy="never",
            max_retries=2,
            workflow=workflow,
        )
    return dlq
