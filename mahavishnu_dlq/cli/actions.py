"""The commands that change things: retry, replay, archive, purge, clear.

Each checks its options first (a bad value exits 2 before anything is opened),
then runs one async body on the opened queue. Destructive ones ask on stderr.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Annotated, Any

import anyio
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from mahavishnu_dlq.cli.arguments import parse_choices, parse_duration, parse_rate, parse_task_id
from mahavishnu_dlq.cli.common import EXIT_FAILED, PROG, emit_json, run
from mahavishnu_dlq.cli.options import (
    FINISHED,
    AppOption,
    CategoryOption,
    FingerprintOption,
    JsonOption,
    SinceOption,
    StatusOption,
    TextOption,
    UntilOption,
    WorkflowOption,
    YesOption,
    confirm,
    iso,
    needs_app,
    state_of,
    task_filter,
)
from mahavishnu_dlq.cli.render import (
    render_replay,
    when,
)
from mahavishnu_dlq.cli.terminal import escape_line, say, text_of
from mahavishnu_dlq.errors import DLQError, UnreadableRecordError
from mahavishnu_dlq.models import (
    DeadLetterStatus,
    FailedTask,
    ReplayItem,
    TaskFilter,
)
from mahavishnu_dlq.queue import DeadLetterQueue

__all__ = ["archive", "clear", "purge", "replay", "retry"]


# -- retry and replay ----------------------------------------------------------------------


def retry(
    ctx: typer.Context,
    task_id: Annotated[str, typer.Argument(metavar="TASK_ID", help="The task's id.")],
    app: AppOption = None,
    as_json: JsonOption = False,
) -> None:
    """Retry one task now through its registered handler and print the outcome.

    The task is claimed exactly as the processor claims it, so it never runs twice
    at once; a failure counts toward exhaustion. Exit status 1 when it fails.
    """
    parse_task_id(task_id)
    state = state_of(ctx)
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
        mark, style = ("✓", "green") if result["success"] else ("✗", "red")
        console.print(Text(escape_line(f"{mark} {result['message']}"), style=style))
        if not result["success"] and result.get("error"):
            console.print(Text(escape_line(f"  error: {result['error']}")))
        if task is not None and task.next_retry_at is not None:
            console.print(Text(f"  next automatic retry: {when(task.next_retry_at)}"))
    if not result["success"]:
        raise typer.Exit(EXIT_FAILED)


def replay(
    ctx: typer.Context,
    status: StatusOption = None,
    category: CategoryOption = None,
    workflow: WorkflowOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    text: TextOption = None,
    fingerprint: FingerprintOption = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be replayed; change nothing.")
    ] = False,
    rate: Annotated[
        str | None,
        typer.Option(
            "--rate", metavar="N/s", help="At most this many tasks per second (10/s, 600/min)."
        ),
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option("--limit", "-n", metavar="N", min=1, help="Replay at most this many."),
    ] = None,
    run_inline: Annotated[
        bool,
        typer.Option(
            "--run",
            help="Retry each task here and now (needs --app) instead of "
            "making it due for the processors.",
        ),
    ] = False,
    app: AppOption = None,
    as_json: JsonOption = False,
) -> None:
    """Make matching tasks due now (or, with --run, retry them inline), paced by --rate.

    Without --status, pending, exhausted and stranded retrying tasks are selected;
    an exhausted task gets one more retry. Exit status 1 when any task failed or
    was skipped (listed in the report).
    """
    state = state_of(ctx)
    selection = task_filter(status, category, workflow, since, until, text, fingerprint)
    per_second = None if rate is None else parse_rate(rate)
    spec = needs_app(state, app, "--run retries through the handlers") if run_inline else None

    async def body(dlq: DeadLetterQueue) -> Any:
        flt = selection(dlq.clock.now())
        total = await dlq.count_tasks(dlq.replay_filter(flt))
        if limit is not None:
            total = min(total, limit)
        console = Console(stderr=True)
        progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=30),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=as_json or not console.is_terminal,
        )
        verb = "checking" if dry_run else "retrying" if run_inline else "replaying"
        bar = progress.add_task(verb, total=total)
        on_item: Callable[[ReplayItem], object] = lambda _item: progress.advance(bar)  # noqa: E731
        with progress:
            return await dlq.replay(
                flt,
                dry_run=dry_run,
                rate_per_second=per_second,
                limit=limit,
                run=run_inline,
                on_item=on_item,
            )

    report = run(state, body, app=spec)
    if as_json:
        data = report.model_dump(mode="json")
        data["failures"] = [item.model_dump(mode="json") for item in report.failures]
        emit_json(data)
    else:
        Console().print(render_replay(report))
    if report.failures:
        raise typer.Exit(EXIT_FAILED)


# -- archive, purge, clear -------------------------------------------------------------------


def archive(
    ctx: typer.Context,
    task_ids: Annotated[list[str], typer.Argument(metavar="TASK_ID", help="One or more task ids.")],
    as_json: JsonOption = False,
) -> None:
    """Set tasks aside for audit (kept until purged). Exit status 1 if any id is unknown."""
    for task_id in task_ids:
        parse_task_id(task_id)

    async def body(dlq: DeadLetterQueue) -> dict[str, str]:
        outcome: dict[str, str] = {}
        for task_id in task_ids:
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


def _describe_purge(flt: TaskFilter) -> str:
    statuses = ", ".join(s.value for s in flt.status or ())
    cut = "" if flt.updated_before is None else f", last updated before {when(flt.updated_before)}"
    still_open = [s.value for s in flt.status or () if s not in FINISHED]
    warning = f"; {', '.join(still_open)} tasks still need handling" if still_open else ""
    return f"{statuses}{cut}{warning}"


def purge(
    ctx: typer.Context,
    older_than: Annotated[
        str | None,
        typer.Option(
            "--older-than",
            metavar="AGE",
            help="Only records last updated at least this long ago (30d, 12h).",
        ),
    ] = None,
    status: Annotated[
        list[str] | None,
        typer.Option(
            "--status",
            "-s",
            metavar="STATUS[,STATUS]",
            help="Which records (default: completed,archived).",
        ),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only count; delete nothing.")] = False,
    yes: YesOption = False,
    as_json: JsonOption = False,
) -> None:
    """Delete records for good: completed and archived ones unless --status says otherwise.

    Shows how many match and asks before deleting unless --yes.
    """
    statuses = parse_choices(status, DeadLetterStatus, option="--status") or None
    age = None if older_than is None else parse_duration(older_than, option="--older-than")
    state = state_of(ctx)

    async def body(dlq: DeadLetterQueue) -> dict[str, Any]:
        flt = dlq.purge_filter(older_than=age, status=statuses)
        matched = await dlq.count_tasks(flt)
        cutoff = flt.updated_before
        purged = 0
        if matched and not dry_run:
            if not yes:
                question = f"Delete {matched} task(s) ({_describe_purge(flt)}) for good?"
                await anyio.to_thread.run_sync(partial(confirm, question))
            purged = await dlq.purge(older_than=cutoff, status=flt.status)
        return {
            "matched": matched,
            "purged": purged,
            "dry_run": dry_run,
            "statuses": [s.value for s in flt.status or ()],
            "updated_before": iso(cutoff),
        }

    result = run(state, body)
    if as_json:
        emit_json(result)
    elif dry_run:
        say(f"would purge {result['matched']} task(s); nothing was deleted")
    else:
        say(f"purged {result['purged']} task(s)")


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
