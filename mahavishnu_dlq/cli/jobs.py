"""``jobs list|show|pause|resume|cancel``: the stored bulk jobs, and steering them.

A job (``replay``, ``retry``, ``archive`` or ``purge`` by filter) is a record in the
store, so these work from any shell against a job any process started or runs:
pausing or cancelling reaches its runner at its next page. An unknown id, or a
change the job's state refuses (resuming a finished job), is one line and exit
status 1.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from mahavishnu_dlq.cli.arguments import count_parser, parse_choices, parse_job_id
from mahavishnu_dlq.cli.common import PROG, emit_json, run
from mahavishnu_dlq.cli.job_render import job_counts, render_job_detail, render_job_list
from mahavishnu_dlq.cli.options import JsonOption, state_of
from mahavishnu_dlq.cli.terminal import say
from mahavishnu_dlq.states import JobState

if TYPE_CHECKING:
    from mahavishnu_dlq.jobs import Job
    from mahavishnu_dlq.queue import DeadLetterQueue

__all__ = ["jobs_cancel", "jobs_list", "jobs_pause", "jobs_resume", "jobs_show", "register"]

JobIdArgument = Annotated[str, typer.Argument(metavar="JOB_ID", help="The job's id.")]


def jobs_list(
    ctx: typer.Context,
    state: Annotated[
        list[str] | None,
        typer.Option(
            "--state",
            metavar="STATE[,STATE]",
            help="queued, running, paused, done, cancelled, failed (repeat or comma-separate).",
        ),
    ] = None,
    limit: Annotated[
        int,
        typer.Option(
            "--limit",
            "-n",
            metavar="N",
            parser=count_parser("--limit"),
            help="Jobs at most (1-1000).",
        ),
    ] = 20,
    as_json: JsonOption = False,
) -> None:
    """Bulk jobs, newest first, with their state and counts."""
    states = parse_choices(state, JobState, option="--state") or None

    async def body(dlq: DeadLetterQueue) -> list[Job]:
        return await dlq.list_jobs(state=states, limit=limit)

    jobs = run(state_of(ctx), body, create=False)
    if as_json:
        emit_json({"jobs": [job.to_dict() for job in jobs], "count": len(jobs)})
    elif not jobs:
        say("no jobs" + ("" if states is None else " in that state"))
    else:
        console = Console()
        console.print(render_job_list(jobs, width=console.width))
        console.print(f"{len(jobs)} job(s)")


def jobs_show(ctx: typer.Context, job_id: JobIdArgument, as_json: JsonOption = False) -> None:
    """Everything about one job: filter, progress, summary, failures."""
    parse_job_id(job_id)

    async def body(dlq: DeadLetterQueue) -> Job:
        return await dlq.get_job(job_id)  # JobNotFoundError: one line, exit 1

    job = run(state_of(ctx), body, create=False)
    if as_json:
        emit_json(job.to_dict())
    else:
        Console().print(render_job_detail(job))


def _steer(
    ctx: typer.Context,
    job_id: str,
    as_json: bool,
    change: Callable[[DeadLetterQueue], Callable[[str], Awaitable[Job]]],
    said: Callable[[Job, Job], str],
) -> None:
    parse_job_id(job_id)

    async def body(dlq: DeadLetterQueue) -> tuple[Job, Job]:
        before = await dlq.get_job(job_id)
        return before, await change(dlq)(job_id)  # JobStateError: one line, exit 1

    before, after = run(state_of(ctx), body)
    if as_json:
        emit_json(after.to_dict())
    else:
        say(said(before, after))


def _unchanged(before: Job, after: Job) -> str | None:
    if before.state is after.state:
        return f"job {after.job_id} is {after.state.value} already: nothing changed"
    return None


def jobs_pause(ctx: typer.Context, job_id: JobIdArgument, as_json: JsonOption = False) -> None:
    """Pause a job at its next page (resume goes on from there)."""

    def said(before: Job, after: Job) -> str:
        return _unchanged(before, after) or (
            f"paused job {after.job_id} ({job_counts(after)}); "
            f"resume it with: {PROG} jobs resume {after.job_id}"
        )

    _steer(ctx, job_id, as_json, lambda dlq: dlq.pause_job, said)


def jobs_resume(ctx: typer.Context, job_id: JobIdArgument, as_json: JsonOption = False) -> None:
    """Let a paused job go on (a processor takes it)."""

    def said(before: Job, after: Job) -> str:
        return _unchanged(before, after) or (
            f"resumed job {after.job_id}: {after.state.value} ({job_counts(after)})"
        )

    _steer(ctx, job_id, as_json, lambda dlq: dlq.resume_job, said)


def jobs_cancel(ctx: typer.Context, job_id: JobIdArgument, as_json: JsonOption = False) -> None:
    """End a job for good (what it did stays done)."""

    def said(before: Job, after: Job) -> str:
        if before.finished:
            return f"job {after.job_id} is {after.state.value} already: nothing changed"
        return f"cancelled job {after.job_id} ({job_counts(after)})"

    _steer(ctx, job_id, as_json, lambda dlq: dlq.cancel_job, said)


def register(app: typer.Typer, *, context_settings: Mapping[str, Any]) -> None:
    """Add the ``jobs`` group to ``app``."""
    group = typer.Typer(
        name="jobs",
        help="List and steer bulk jobs: replay, retry, archive, purge.",
        no_args_is_help=True,
        context_settings=dict(context_settings),
    )
    for name, function in (
        ("list", jobs_list),
        ("show", jobs_show),
        ("pause", jobs_pause),
        ("resume", jobs_resume),
        ("cancel", jobs_cancel),
    ):
        group.command(name)(function)
    app.add_typer(group)
