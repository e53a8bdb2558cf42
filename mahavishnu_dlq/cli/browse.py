"""The reading commands: status, list, show (``--json`` shapes: docs/cli.md).

``show`` of a record the store holds but cannot decode (written by a newer version,
or damaged) prints its stored form on stdout — escaped, indented if it is JSON —
and why it cannot be read on stderr, exit status 1.
"""

from __future__ import annotations

import json
import logging
import sys
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.text import Text

from mahavishnu_dlq.cli.arguments import count_parser, parse_task_id
from mahavishnu_dlq.cli.common import (
    EXIT_FAILED,
    emit_json,
    fail,
    run,
)
from mahavishnu_dlq.cli.options import (
    CategoryOption,
    FingerprintOption,
    JsonOption,
    SinceOption,
    StatusOption,
    TextOption,
    UntilOption,
    WorkflowOption,
    state_of,
    task_filter,
    task_json,
)
from mahavishnu_dlq.cli.render import (
    render_source,
    render_statistics,
    render_task_detail,
    render_task_list,
)
from mahavishnu_dlq.cli.terminal import escape_line
from mahavishnu_dlq.errors import UnreadableRecordError
from mahavishnu_dlq.states import DeadLetterStatus

if TYPE_CHECKING:
    from mahavishnu_dlq.models import FailedTask
    from mahavishnu_dlq.queue import DeadLetterQueue

__all__ = ["list_tasks", "show", "status"]

#: Most retrying tasks ``status`` reads to find the live leases (and their workers).
MAX_LEASES_READ = 10_000


# -- status, list, show -----------------------------------------------------------------


def status(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Statistics: counts by status, category and policy, backend and degraded
    state, oldest pending age, the processors at work elsewhere (from their live
    leases), circuit breakers not closed and the most frequent failures.

    Lifetime counters count what this process did: shown only while a processor
    runs in it (--json always has them)."""

    async def body(dlq: DeadLetterQueue) -> tuple[dict[str, Any], datetime, dict[str, int]]:
        stats = await dlq.get_statistics()
        now = dlq.clock.now()
        return stats, now, await _leases_elsewhere(dlq, stats, now)

    stats, now, leases = run(state_of(ctx), body, degraded_ok=True, create=False)
    if as_json:
        emit_json(stats)
    else:
        console = Console()
        console.print(render_statistics(stats, now, width=console.width, leases=leases))


async def _leases_elsewhere(
    dlq: DeadLetterQueue, stats: Mapping[str, Any], now: datetime
) -> dict[str, int]:
    """``{worker: tasks}`` of the live leases held outside this process's processor:
    the processors at work elsewhere (an idle one holds no lease, so is not seen)."""
    if not stats["status_breakdown"].get(DeadLetterStatus.RETRYING.value):
        return {}
    here = dlq.worker_id if stats.get("is_processor_running") else None
    page = await dlq.list_tasks(DeadLetterStatus.RETRYING, MAX_LEASES_READ)
    owners = Counter(
        task.lease_owner or "?"
        for task in page
        if task.lease_active(now) and task.lease_owner != here
    )
    return dict(owners)


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
        int,
        typer.Option(
            "--limit",
            "-n",
            metavar="N",
            parser=count_parser("--limit"),
            help="Tasks per page (1-1000).",
        ),
    ] = 20,
    cursor: Annotated[
        str | None,
        typer.Option("--cursor", metavar="CURSOR", help="Continue after the page that printed it."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Failed tasks, newest failure first, one page at a time.

    Columns: id, status, category, retries n/max, next retry, failed at (UTC, to
    the second) and the error (its first 200 characters). Ids and errors wrap in
    their columns; a terminal narrower than 140 columns puts category under status
    and the time under the date (show and --json have everything).
    """
    selection = task_filter(status, category, workflow, since, until, text, fingerprint)
    if cursor is not None:
        try:
            from mahavishnu_dlq.models import decode_cursor  # noqa: PLC0415 - not for --help

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

    tasks, next_cursor, now = run(state_of(ctx), body, create=False)
    if as_json:
        emit_json(
            {"tasks": [task_json(t) for t in tasks], "count": len(tasks), "cursor": next_cursor}
        )
        return
    console = Console()
    if not tasks:
        console.print(Text("no tasks match", style="bright_black"))
        return
    console.print(render_task_list(tasks, now, width=console.width))
    footer = f"{len(tasks)} task{'s' if len(tasks) != 1 else ''}"
    if next_cursor:
        footer += f"; next page: add --cursor {escape_line(next_cursor)}"
    console.print(Text(footer, style="bright_black"))


def show(
    ctx: typer.Context,
    task_id: Annotated[str, typer.Argument(metavar="TASK_ID", help="The task's id.")],
    as_json: JsonOption = False,
) -> None:
    """Everything about one task: error and traceback, attempts, input and metadata.

    A record stored but unreadable is printed as stored; exit status 1.
    """
    parse_task_id(task_id)

    async def body(
        dlq: DeadLetterQueue,
    ) -> tuple[FailedTask | UnreadableRecordError | None, datetime]:
        try:
            with _reported_here():
                return await dlq.get_task(task_id), dlq.clock.now()
        except UnreadableRecordError as exc:
            return exc, dlq.clock.now()

    task, now = run(state_of(ctx), body, create=False)
    if task is None:
        fail(f"no task with id {task_id!r} in the dead-letter queue", EXIT_FAILED)
    if isinstance(task, UnreadableRecordError):
        _show_unreadable(task, as_json=as_json)
    if as_json:
        emit_json(task_json(task))
    else:
        Console().print(render_task_detail(task, now))


@contextmanager
def _reported_here() -> Iterator[None]:
    """``show`` reports an unreadable record itself, in its one line: the library's
    ``dlq.unreadable`` warning would say it twice."""
    logger = logging.getLogger("mahavishnu_dlq.storage")

    def keep(record: logging.LogRecord) -> bool:
        return getattr(record, "action", None) != "dlq.unreadable"

    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)


def _show_unreadable(error: UnreadableRecordError, *, as_json: bool) -> NoReturn:
    """The stored form on stdout, why it cannot be read on stderr; exit status 1."""
    source = error.source
    if as_json:
        parsed: Any = source
        if source is not None:
            try:
                parsed = json.loads(source)
            except (ValueError, RecursionError):
                parsed = source
        emit_json(
            {"task_id": error.task_id, "unreadable": True, "reason": error.reason, "source": parsed}
        )
    elif source is not None:
        sys.stdout.write(render_source(source).rstrip("\n") + "\n")
    where = "; its stored form is on stdout" if source is not None else ""
    fail(f"{error}{where}", EXIT_FAILED)
