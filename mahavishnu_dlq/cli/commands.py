"""The operator's commands: status, list, show, retry, replay, archive, purge, clear.

Each command checks its options first (a bad value exits 2 before anything is
opened), then runs one async body on the opened queue with
:func:`~mahavishnu_dlq.cli.common.run`. Every command that prints data has
``--json``; the shapes are documented in ``docs/cli.md`` and pinned by tests.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import datetime, timezone
from functools import partial
from typing import Annotated, Any

import anyio
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from mahavishnu_dlq.cli.common import (
    APP_ENV_VAR,
    EXIT_FAILED,
    PROG,
    CliState,
    emit_json,
    fail,
    parse_choices,
    parse_duration,
    parse_moment,
    parse_rate,
    run,
)
from mahavishnu_dlq.cli.render import (
    render_replay,
    render_statistics,
    render_task_detail,
    render_task_list,
    when,
)
from mahavishnu_dlq.errors import DLQError
from mahavishnu_dlq.models import (
    DeadLetterStatus,
    ErrorCategory,
    FailedTask,
    ReplayItem,
    TaskFilter,
    decode_cursor,
)
from mahavishnu_dlq.queue import DeadLetterQueue

__all__ = ["register", "state_of"]


_FINISHED = (DeadLetterStatus.COMPLETED, DeadLetterStatus.ARCHIVED)


def state_of(ctx: typer.Context) -> CliState:
    """The global options' state (a fresh default one when a command runs alone)."""
    state = ctx.find_object(CliState)
    return state if state is not None else CliState()


def _task_json(task: FailedTask) -> dict[str, Any]:
    return task.model_dump(mode="json")


# -- shared options ----------------------------------------------------------------------

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON (shape: docs/cli.md).")]
StatusOption = Annotated[
    list[str] | None,
    typer.Option(
        "--status",
        "-s",
        metavar="STATUS[,STATUS]",
        help="pending, retrying, exhausted, completed, archived (repeat or comma-separate).",
    ),
]
CategoryOption = Annotated[
    list[str] | None,
    typer.Option(
        "--category",
        metavar="CATEGORY[,CATEGORY]",
        help="transient, network, resource, permission, validation, permanent.",
    ),
]
WorkflowOption = Annotated[
    list[str] | None,
    typer.Option(
        "--workflow", "-w", metavar="NAME[,NAME]", help="Workflow name (repeat or comma-separate)."
    ),
]
SinceOption = Annotated[
    str | None,
    typer.Option(
        "--since",
        metavar="TIME|AGE",
        help="Failed at or after: an ISO time (UTC unless it has a zone) or an age (2h, 7d).",
    ),
]
UntilOption = Annotated[
    str | None,
    typer.Option("--until", metavar="TIME|AGE", help="Failed before: an ISO time or an age."),
]
TextOption = Annotated[
    str | None,
    typer.Option(
        "--text",
        "-t",
        metavar="TEXT",
        help="Case-insensitive substring of the id, workflow, first or last error, error type "
        "or fingerprint.",
    ),
]
FingerprintOption = Annotated[
    str | None,
    typer.Option("--fingerprint", metavar="FINGERPRINT", help="Exactly this error fingerprint."),
]
AppOption = Annotated[
    str | None,
    typer.Option(
        "--app",
        "-A",
        metavar="MODULE:ATTR",
        help="Your queue or handlers (overrides the global --app and $MAHAVISHNU_DLQ_APP).",
    ),
]
YesOption = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]


def _filter(
    status: list[str] | None,
    category: list[str] | None,
    workflow: list[str] | None,
    since: str | None,
    until: str | None,
    text: str | None,
    fingerprint: str | None,
) -> Callable[[datetime], TaskFilter]:
    """The TaskFilter the filter options describe, as of a given "now" (ages count back
    from the queue's clock). Checked at once: a bad value exits 2 before anything opens."""

    def build(now: datetime) -> TaskFilter:
        return TaskFilter(
            status=parse_choices(status, DeadLetterStatus, option="--status") or None,
            error_category=parse_choices(category, ErrorCategory, option="--category") or None,
            workflow=_names(workflow),
            since=None if since is None else parse_moment(since, now, option="--since"),
            until=None if until is None else parse_moment(until, now, option="--until"),
            text=text or None,
            fingerprint=fingerprint,
        )

    build(datetime.now(timezone.utc))
    return build


def _names(values: list[str] | None) -> tuple[str, ...] | None:
    """Repeated and/or comma-separated names, in order, without repeats."""
    names = [n.strip() for value in values or () for n in value.split(",") if n.strip()]
    return tuple(dict.fromkeys(names)) or None


def _iso(value: datetime | None) -> str | None:
    """A time as the records' JSON has it (ISO 8601, UTC as 'Z')."""
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def _confirm(question: str) -> None:
    """Ask on stderr (stdout stays data); anything but yes ends the command (exit 1)."""
    sys.stderr.write(f"{question} [y/N]: ")
    sys.stderr.flush()
    answer = sys.stdin.readline()
    if not sys.stdin.isatty():
        sys.stderr.write("\n")  # the answer was not echoed: end the question's line
    if answer.strip().lower() not in ("y", "yes"):
        fail("aborted: nothing was changed (pass --yes to skip this question)", EXIT_FAILED)


# -- status, list, show -----------------------------------------------------------------


def status(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Statistics: counts by status, category and policy, lifetime counters, backend
    and degraded state, oldest pending age and the most frequent failures."""

    async def body(dlq: DeadLetterQueue) -> dict[str, Any]:
        return await dlq.get_statistics()

    stats = run(state_of(ctx), body, degraded_ok=True)
    if as_json:
        emit_json(stats)
    else:
        Console().print(render_statistics(stats))


def list_tasks(
    ctx: typer.Context,
    status: StatusOption = None,
    category: CategoryOption = None,
    workflow: WorkflowOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    text: TextOption = None,
    fingerprint: FingerprintOption = None,
    limit: Annotated[
        int, typer.Option("--limit", "-n", metavar="N", min=1, max=1000, help="Tasks per page.")
    ] = 20,
    cursor: Annotated[
        str | None,
        typer.Option("--cursor", metavar="CURSOR", help="Continue after the page that printed it."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Failed tasks, newest failure first, one page at a time.

    Columns: id, status, category, retries n/max, next retry, failed at (UTC) and
    the error, cut to fit; a terminal narrower than 100 columns leaves out category
    and failed at (show and --json have everything).
    """
    selection = _filter(status, category, workflow, since, until, text, fingerprint)
    if cursor is not None:
        try:
            decode_cursor(cursor)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--cursor") from None

    async def body(dlq: DeadLetterQueue) -> tuple[list[FailedTask], str | None, datetime]:
        now = dlq.clock.now()
        flt = selection(now)
        page = await dlq.list_tasks(
            flt.status,
            limit,
            error_category=flt.error_category,
            workflow=flt.workflow,
            since=flt.since,
            until=flt.until,
            text=flt.text,
            fingerprint=flt.fingerprint,
            cursor=cursor,
        )
        return list(page), page.cursor, now

    tasks, next_cursor, now = run(state_of(ctx), body)
    if as_json:
        emit_json(
            {"tasks": [_task_json(t) for t in tasks], "count": len(tasks), "cursor": next_cursor}
        )
        return
    console = Console()
    if not tasks:
        console.print(Text("no tasks match", style="bright_black"))
        return
    console.print(render_task_list(tasks, now, width=console.width))
    footer = f"{len(tasks)} task{'s' if len(tasks) != 1 else ''}"
    if next_cursor:
        footer += f"; next page: add --cursor {next_cursor}"
    console.print(Text(footer, style="bright_black"))


def show(
    ctx: typer.Context,
    task_id: Annotated[str, typer.Argument(metavar="TASK_ID", help="The task's id.")],
    as_json: JsonOption = False,
) -> None:
    """Everything about one task: error and traceback, attempts, input and metadata."""

    async def body(dlq: DeadLetterQueue) -> tuple[FailedTask | None, datetime]:
        return await dlq.get_task(task_id), dlq.clock.now()

    task, now = run(state_of(ctx), body)
    if task is None:
        fail(f"no task with id {task_id!r} in the dead-letter queue", EXIT_FAILED)
    if as_json:
        emit_json(_task_json(task))
    else:
        Console().print(render_task_detail(task, now))


# -- retry and replay ----------------------------------------------------------------------


def _needs_app(state: CliState, app: str | None, why: str) -> str:
    spec = state.app_spec(app)
    if spec is None:
        fail(f"{why}: name your queue or handlers with --app MODULE:ATTR (or ${APP_ENV_VAR})")
    return spec


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
    state = state_of(ctx)
    spec = _needs_app(state, app, "retry runs the task's handler")

    async def body(dlq: DeadLetterQueue) -> tuple[dict[str, Any], FailedTask | None]:
        result = await dlq.retry_task(task_id)
        return result, await dlq.get_task(task_id)

    result, task = run(state, body, app=spec)
    if task is not None:
        result = {
            **result,
            "status": task.status.value,
            "next_retry_at": _iso(task.next_retry_at),
        }
    if as_json:
        emit_json(result)
    else:
        console = Console()
        mark, style = ("✓", "green") if result["success"] else ("✗", "red")
        console.print(Text(f"{mark} {result['message']}", style=style))
        if not result["success"] and result.get("error"):
            console.print(Text(f"  error: {result['error']}"))
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
    selection = _filter(status, category, workflow, since, until, text, fingerprint)
    per_second = None if rate is None else parse_rate(rate)
    spec = _needs_app(state, app, "--run retries through the handlers") if run_inline else None

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

    async def body(dlq: DeadLetterQueue) -> dict[str, str]:
        outcome: dict[str, str] = {}
        for task_id in task_ids:
            try:
                outcome[task_id] = "archived" if await dlq.archive_task(task_id) else "not found"
            except DLQError as exc:  # e.g. busy: being retried right now
                outcome[task_id] = str(exc)
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
                sys.stdout.write(f"archived {task_id}\n")
            else:
                sys.stderr.write(f"{PROG}: {task_id}: {why}\n")
    if failed:
        raise typer.Exit(EXIT_FAILED)


def _describe_purge(flt: TaskFilter) -> str:
    statuses = ", ".join(s.value for s in flt.status or ())
    cut = "" if flt.updated_before is None else f", last updated before {when(flt.updated_before)}"
    still_open = [s.value for s in flt.status or () if s not in _FINISHED]
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
                await anyio.to_thread.run_sync(partial(_confirm, question))
            purged = await dlq.purge(older_than=cutoff, status=flt.status)
        return {
            "matched": matched,
            "purged": purged,
            "dry_run": dry_run,
            "statuses": [s.value for s in flt.status or ()],
            "updated_before": _iso(cutoff),
        }

    result = run(state, body)
    if as_json:
        emit_json(result)
    elif dry_run:
        sys.stdout.write(f"would purge {result['matched']} task(s); nothing was deleted\n")
    else:
        sys.stdout.write(f"purged {result['purged']} task(s)\n")


def clear(ctx: typer.Context, yes: YesOption = False, as_json: JsonOption = False) -> None:
    """Delete every record, whatever its status. Asks first unless --yes."""

    async def body(dlq: DeadLetterQueue) -> dict[str, int]:
        matched = await dlq.count_tasks()
        if matched and not yes:
            await anyio.to_thread.run_sync(
                partial(_confirm, f"Delete all {matched} task(s) in the dead-letter queue?")
            )
        return {"matched": matched, "purged": await dlq.clear_all() if matched else 0}

    result = run(state_of(ctx), body)
    if as_json:
        emit_json(result)
    else:
        sys.stdout.write(f"cleared {result['purged']} task(s)\n")


def register(app: typer.Typer) -> None:
    """Add these commands to ``app``."""
    app.command("status")(status)
    app.command("list")(list_tasks)
    app.command("show")(show)
    app.command("retry")(retry)
    app.command("replay")(replay)
    app.command("archive")(archive)
    app.command("purge")(purge)
    app.command("clear")(clear)
