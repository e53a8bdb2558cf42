"""What an operator does from the console, shared by the API and the pages.

Each function calls the queue method the CLI calls, and logs the action with the
token's name (``dlq.web.action``). Bulk work is a job (:mod:`mahavishnu_dlq.jobs`):
the console stores it and, when no retry processor runs in this process, runs it
itself after answering (a processor elsewhere may take it first: the lease
decides, and the loser lets it be). A selection of rows (at most
:data:`MAX_SELECTED` ids) is acted on here and now, one id at a time, each with its
own outcome.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

from mahavishnu_dlq.errors import (
    DLQError,
    JobStateError,
    TaskBusyError,
    TaskNotFoundError,
)
from mahavishnu_dlq.jobs.model import Job, JobKind
from mahavishnu_dlq.models import TaskFilter

from .auth import Principal, audit
from .errors import WebError

if TYPE_CHECKING:
    from mahavishnu_dlq.queue import DeadLetterQueue

__all__ = [
    "MAX_SELECTED",
    "Outcome",
    "act_on_selection",
    "archive_one",
    "job_action",
    "retry_one",
    "start_job",
]

#: The most ids one selection may act on.
MAX_SELECTED = 500

Background = Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one selected task."""

    task_id: str
    outcome: Literal["succeeded", "failed", "archived", "not_found", "busy", "error"]
    message: str = ""

    def json(self) -> dict[str, Any]:
        """As the API answers it."""
        return {"task_id": self.task_id, "outcome": self.outcome, "message": self.message}


async def retry_one(dlq: DeadLetterQueue, who: Principal, task_id: str) -> dict[str, Any]:
    """Retry one task now through its handler (``DeadLetterQueue.retry_task``)."""
    try:
        result = await dlq.retry_task(task_id)
    except DLQError as exc:
        audit(who, "retry", type(exc).__name__, task_id=task_id)
        raise
    outcome = (
        "succeeded"
        if result.get("success")
        else "dispatched"
        if result.get("dispatched")
        else "failed"
    )
    audit(who, "retry", outcome, task_id=task_id)
    return result


async def archive_one(dlq: DeadLetterQueue, who: Principal, task_id: str) -> bool:
    """Archive one task; 404 when it does not exist."""
    archived = await dlq.archive_task(task_id)
    audit(who, "archive", "archived" if archived else "not_found", task_id=task_id)
    if not archived:
        raise TaskNotFoundError(task_id)
    return archived


async def act_on_selection(
    dlq: DeadLetterQueue, who: Principal, action: str, task_ids: Sequence[str]
) -> list[Outcome]:
    """Retry or archive each selected task; one outcome per id, in order."""
    if action not in ("retry", "archive"):
        raise WebError(400, "invalid", "action must be 'retry' or 'archive'", field="action")
    ids = list(dict.fromkeys(task_ids))
    if not ids:
        raise WebError(400, "invalid", "select at least one task", field="task_ids")
    if len(ids) > MAX_SELECTED:
        raise WebError(
            400, "invalid", f"at most {MAX_SELECTED} tasks at once; use a job", field="task_ids"
        )
    outcomes: list[Outcome] = []
    for task_id in ids:
        try:
            if action == "archive":
                done = await dlq.archive_task(task_id)
                outcome = Outcome(task_id, "archived" if done else "not_found")
            else:
                result = await dlq.retry_task(task_id)
                outcome = Outcome(
                    task_id,
                    "succeeded" if result.get("success") else "failed",
                    str(result.get("message", "")),
                )
        except TaskNotFoundError as exc:
            outcome = Outcome(task_id, "not_found", str(exc))
        except TaskBusyError as exc:
            outcome = Outcome(task_id, "busy", str(exc))
        except DLQError as exc:
            outcome = Outcome(task_id, "error", str(exc))
        outcomes.append(outcome)
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome.outcome] = counts.get(outcome.outcome, 0) + 1
    audit(who, f"{action}-selected", "done", count=len(ids), outcomes=counts)
    return outcomes


async def start_job(
    dlq: DeadLetterQueue,
    who: Principal,
    kind: JobKind | str,
    flt: TaskFilter | None,
    *,
    rate: float | None = None,
    dry_run: bool = False,
    older_than: timedelta | None = None,
) -> tuple[Job, Background | None]:
    """Store a job; with it, the work to run after answering when this process has no
    retry processor to run it (None otherwise, and for a dry run)."""
    job = await dlq.start_job(
        kind, flt, rate=rate, dry_run=dry_run, older_than=older_than, created_by=f"web:{who.name}"
    )
    audit(
        who,
        f"job-{job.kind.value}",
        "dry-run" if dry_run else "started",
        job_id=job.job_id,
        matched=job.matched,
    )
    return job, None if dry_run else _runner(dlq, job.job_id)


def _runner(dlq: DeadLetterQueue, job_id: str) -> Background | None:
    """Running the job here, when no retry processor of this process will."""
    if dlq.is_processor_running:
        return None

    async def run() -> None:
        with contextlib.suppress(JobStateError):  # a processor elsewhere took it first
            await dlq.run_job(job_id)

    return run


async def job_action(
    dlq: DeadLetterQueue, who: Principal, job_id: str, action: str
) -> tuple[Job, Background | None]:
    """Pause, resume or cancel a job (a resumed one is run as :func:`start_job` does)."""
    steps = {"pause": dlq.pause_job, "resume": dlq.resume_job, "cancel": dlq.cancel_job}
    if action not in steps:
        raise WebError(400, "invalid", "action must be pause, resume or cancel", field="action")
    job = await steps[action](job_id)
    audit(who, f"job-{action}", job.state.value, job_id=job_id)
    return job, _runner(dlq, job_id) if action == "resume" else None
