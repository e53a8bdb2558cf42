"""The commands that change things: retry, replay, archive, purge, clear.

Each checks its options first (a bad value exits 2 before anything is opened),
then runs one async body on the opened queue. Destructive ones ask on stderr.
``replay``, ``retry``, ``archive`` and ``purge`` by filter are stored bulk jobs
(:mod:`.bulk`); ``retry TASK_ID`` and ``archive TASK_ID...`` act on those tasks
at once.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Annotated, Any

import anyio
import typer
from rich.console import Console
from rich.text import Text

from mahavishnu_dlq.cli.arguments import parse_choices, parse_task_id
from mahavishnu_dlq.cli.bulk import FilterArgs, bulk_request, run_bulk
from mahavishnu_dlq.cli.common import EXIT_FAILED, PROG, emit_json, run
from mahavishnu_dlq.cli.options import (
    REPLAYABLE,
    AppOption,
    BackgroundOption,
    CategoryOption,
    DryRunOption,
    FingerprintOption,
    JsonOption,
    OlderThanOption,
    RateOption,
    ReplayStatusOption,
    SinceOption,
    StatusOption,
    TextOption,
    UntilOption,
    WaitOption,
    WorkflowOption,
    YesOption,
    confirm,
    iso,
    needs_app,
    state_of,
)
from mahavishnu_dlq.cli.render import when
from mahavishnu_dlq.cli.terminal import escape_line, say, text_of
from mahavishnu_dlq.errors import DLQError, UnreadableRecordError
from mahavishnu_dlq.states import DeadLetterStatus, JobKind

if TYPE_CHECKING:
    from mahavishnu_dlq.models import FailedTask
    from mahavishnu_dlq.queue import DeadLetterQueue

__all__ = ["archive", "clear", "purge", "replay", "retry"]

_FINISHED = "a completed or archived task is not replayed"
_SELECT = "--status, --category, --workflow, --fingerprint, --text, --since, --until, --older-than"


def _ids_or_filters(ids_given: bool, filters: FilterArgs, job_options: bool, what: str) -> None:
    """Ids and filter options do not go together; one of them is needed."""
    if ids_given and (filters.given or job_options):
        raise typer.BadParameter(
            f"give {what} or filter options (with --rate, --dry-run, --background, --wait), "
            "not both",
            param_hint=what,
        )
    if not ids_given and not filters.given:
        raise typer.BadParameter(
            f"name {what}, or select tasks with filter options ({_SELECT})", param_hint=what
        )


# -- retry and replay ----------------------------------------------------------------------


def retry(
    ctx: typer.Context,
    task_id: Annotated[
        str | None,
        typer.Argument(
            metavar="TASK_ID", help="One task's id; without it, filter options select tasks."
        ),
    ] = None,
    status: StatusOption = None,
    category: CategoryOption = None,
    workflow: WorkflowOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    text: TextOption = None,
    fingerprint: FingerprintOption = None,
    older_than: OlderThanOption = None,
    rate: RateOption = None,
    dry_run: DryRunOption = False,
    background: BackgroundOption = False,
    wait: WaitOption = None,
    app: AppOption = None,
    as_json: JsonOption = False,
) -> None:
    """Retry one task now, or the tasks filters select (a job).

    TASK_ID: the task is claimed exactly as the processor claims it, so it never
    runs twice at once; a failure counts toward exhaustion. Filter options: a retry
    job runs each task's handler in the processor that runs it (here only with
    --app). Exit status 1 when a retry fails.
    """
    filters = FilterArgs(status, category, workflow, since, until, text, fingerprint, older_than)
    job_options = rate is not None or dry_run or background or wait is not None
    _ids_or_filters(task_id is not None, filters, job_options, "TASK_ID")
    state = state_of(ctx)
    if task_id is None:
        request = bulk_request(
            JobKind.RETRY,
            filters,
            rate=rate,
            dry_run=dry_run,
            background=background,
            wait=wait,
            as_json=as_json,
        )
        run_bulk(state, request, app=app)
        return
    parse_task_id(task_id)
    spec = needs_app(state, app, "retry runs the task's handler")

    async def body(dlq: DeadLetterQueue) -> tuple[dict[str, Any], FailedTask | None]:
        result = await dlq.retry_task(task_id)  # UnreadableRecordError: one line, exit 1
        try:
            return result, await dlq.get_task(task_id)
        except UnreadableRecordError:  # the result is what matters now
            return result, None

    result, task = run(state, body, app=spec)
    if task is not None:
        result = {
            **result,
            "status": task.status.value,
            "next_retry_at": iso(task.next_retry_at),
        }
    if as_json:
        emit_json(result)
    else:
        console = Console()
        mark, style = (
            ("✓", "green")
            if result["success"]
            else ("→", "yellow")
            if result.get("dispatched")
            else ("✗", "red")
        )
        console.print(Text(escape_line(f"{mark} {result['message']}"), style=style))
        if not result["success"] and result.get("error"):
            console.print(Text(escape_line(f"  error: {result['error']}")))
        if task is not None and task.next_retry_at is not None:
            console.print(Text(f"  next automatic retry: {when(task.next_retry_at)}"))
    if not result["success"] and not result.get("dispatched"):
        raise typer.Exit(EXIT_FAILED)


def replay(
    ctx: typer.Context,
    status: ReplayStatusOption = None,
    category: CategoryOption = None,
    workflow: WorkflowOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    text: TextOption = None,
    fingerprint: FingerprintOption = None,
    older_than: OlderThanOption = None,
    rate: RateOption = None,
    dry_run: DryRunOption = False,
    background: BackgroundOption = False,
    wait: WaitOption = None,
    app: AppOption = None,
    as_json: JsonOption = False,
) -> None:
    """Make matching tasks due now (a job); processors retry them.

    Without --status, pending, exhausted and stranded retrying tasks are selected;
    an exhausted task gets one more retry. The job is followed with a progress bar
    (and run here when no processor takes it within --wait); --background only
    starts it. Exit status 1 when any task failed or was skipped (listed).
    """
    parse_choices(status, DeadLetterStatus, option="--status", only=REPLAYABLE, refused=_FINISHED)
    filters = FilterArgs(status, category, workflow, since, until, text, fingerprint, older_than)
    request = bulk_request(
        JobKind.REPLAY,
        filters,
        rate=rate,
        dry_run=dry_run,
        background=background,
        wait=wait,
        as_json=as_json,
    )
    run_bulk(state_of(ctx), request, app=app)


# -- archive, purge, clear -------------------------------------------------------------------


def archive(
    ctx: typer.Context,
    task_ids: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="TASK_ID", help="Task ids; without them, filter options select tasks."
        ),
    ] = None,
    status: StatusOption = None,
    category: CategoryOption = None,
    workflow: WorkflowOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    text: TextOption = None,
    fingerprint: FingerprintOption = None,
    older_than: OlderThanOption = None,
    rate: RateOption = None,
    dry_run: DryRunOption = False,
    background: BackgroundOption = False,
    wait: WaitOption = None,
    as_json: JsonOption = False,
) -> None:
    """Set tasks aside for audit: ids, or by filter (a job).

    Archived tasks are kept until purged. Exit status 1 if any id is unknown or
    any selected task was not archived.
    """
    filters = FilterArgs(status, category, workflow, since, until, text, fingerprint, older_than)
    job_options = rate is not None or dry_run or background or wait is not None
    _ids_or_filters(bool(task_ids), filters, job_options, "TASK_ID")
    if not task_ids:
        request = bulk_request(
            JobKind.ARCHIVE,
            filters,
            rate=rate,
            dry_run=dry_run,
            background=background,
            wait=wait,
            as_json=as_json,
        )
        run_bulk(state_of(ctx), request)
        return
    ids = list(task_ids)
    for task_id in ids:
        parse_task_id(task_id)

    async def body(dlq: DeadLetterQueue) -> dict[str, str]:
        outcome: dict[str, str] = {}
        for task_id in ids:
            try:
                outcome[task_id] = "archived" if await dlq.archive_task(task_id) else "not found"
            except DLQError as exc:  # busy (being retried right now), unreadable …
                outcome[task_id] = text_of(exc)
        return outcome

    outcome = run(state_of(ctx), body)
    failed = {task_id: why for task_id, why in outcome.items() if why != "archived"}
    if as_json:
        emit_json(
            {
                "archived": [t for t, why in outcome.items() if why == "archived"],
                "failed": [{"task_id": t, "reason": why} for t, why in failed.items()],
            }
        )
    else:
        for task_id, why in outcome.items():
            if why == "archived":
                say(f"archived {task_id}")
            else:
                say(f"{PROG}: {task_id}: {why}", err=True)
    if failed:
        raise typer.Exit(EXIT_FAILED)


def purge(
    ctx: typer.Context,
    status: Annotated[
        list[str] | None,
        typer.Option(
            "--status",
            "-s",
            metavar="STATUS[,STATUS]",
            help="Which records (default: completed,archived).",
        ),
    ] = None,
    category: CategoryOption = None,
    workflow: WorkflowOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    text: TextOption = None,
    fingerprint: FingerprintOption = None,
    older_than: Annotated[
        str | None,
        typer.Option(
            "--older-than",
            metavar="AGE",
            help="Only records last updated at least this long ago (30d, 12h).",
        ),
    ] = None,
    rate: RateOption = None,
    dry_run: DryRunOption = False,
    background: BackgroundOption = False,
    wait: WaitOption = None,
    yes: YesOption = False,
    as_json: JsonOption = False,
) -> None:
    """Delete records for good, by filter (a job).

    Completed and archived records unless --status says otherwise. Shows how many
    match and asks before deleting unless --yes; --dry-run only counts. Exit
    status 1 when a record could not be deleted.
    """
    filters = FilterArgs(status, category, workflow, since, until, text, fingerprint, older_than)
    request = bulk_request(
        JobKind.PURGE,
        filters,
        rate=rate,
        dry_run=dry_run,
        background=background,
        wait=wait,
        as_json=as_json,
        confirm=not yes,
    )
    run_bulk(state_of(ctx), request)


def clear(ctx: typer.Context, yes: YesOption = False, as_json: JsonOption = False) -> None:
    """Delete every record, whatever its status. Asks first unless --yes."""

    async def body(dlq: DeadLetterQueue) -> dict[str, int]:
        matched = await dlq.count_tasks()
        if matched and not yes:
            await anyio.to_thread.run_sync(
                partial(confirm, f"Delete all {matched} task(s) in the dead-letter queue?")
            )
        return {"matched": matched, "purged": await dlq.clear_all() if matched else 0}

    result = run(state_of(ctx), body)
    if as_json:
        emit_json(result)
    else:
        say(f"cleared {result['purged']} task(s)")
