"""How the CLI shows things: Rich renderables built from records and statistics.

Pure functions of their input (and ``now`` where a time is shown relative to it),
shared by the commands, the demo and the tests. Times are shown in UTC, with a
relative hint where it helps ("in 4 min", "3.0 h ago"). Every text that comes from
a record, the statistics or the user is escaped (:mod:`.terminal`): one line in a
cell or a fact, a block for a traceback, JSON escapes in the JSON blocks.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from rich import box
from rich.columns import Columns
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from mahavishnu_dlq.cli.terminal import dumps, escape_block, escape_json, escape_line
from mahavishnu_dlq.states import DeadLetterStatus

if TYPE_CHECKING:
    from mahavishnu_dlq.models import FailedTask

__all__ = [
    "BREAKER_STYLE",
    "STATUS_STYLE",
    "age",
    "breaker_until",
    "count_table",
    "plain_row",
    "relative",
    "render_breakers",
    "render_source",
    "render_statistics",
    "render_task",
    "render_task_detail",
    "render_task_list",
    "titled_table",
    "when",
]

STATUS_STYLE = {
    "pending": "yellow",
    "retrying": "cyan",
    "exhausted": "red",
    "completed": "green",
    "archived": "bright_black",
}
NARROW = 100  # terminal columns below which ``breaker list`` leaves out since
STACKED = 140  # terminal columns below which ``list`` stacks status/category, date/time
#: What ``status`` says instead of lifetime counters that count nothing.
NO_COUNTERS = "not shown: they count this process, and no processor runs in it"
ERROR_CELL = 200  # characters of an error ``list`` shows (``show`` has all of it)
OUTCOME_STYLE = {"success": "green", "running": "cyan", "deferred": "yellow"}
BREAKER_STYLE = {"closed": "green", "open": "bold red", "half_open": "yellow"}


# -- small pieces -------------------------------------------------------------------------


def when(value: datetime | None, *, date: bool = True) -> str:
    """A UTC time to the millisecond ("-" for None); ``date=False`` gives the time only."""
    if value is None:
        return "-"
    text = value.strftime("%Y-%m-%d %H:%M:%S.%f" if date else "%H:%M:%S.%f")[:-3]
    return text + (" UTC" if date else "")


def age(seconds: float | None) -> str:
    """A duration for people: 12.0 s, 4.5 min, 3.0 h, 2.0 d."""
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.1f} s"


def relative(value: datetime, now: datetime) -> str:
    """``value`` relative to ``now``: "in 4.0 min", "3.0 h ago", "now"."""
    seconds = (value - now).total_seconds()
    if abs(seconds) < 0.5:
        return "now"
    return f"in {age(seconds)}" if seconds > 0 else f"{age(-seconds)} ago"


def titled_table(title: str | None, *columns: str, **options: Any) -> Table:
    """A table with a bold title; ``columns`` named "+name" are right-aligned."""
    options = {"box": box.SIMPLE_HEAD, "title_style": "bold", "title_justify": "left", **options}
    table = Table(title=title, **options)
    for name in columns:
        table.add_column(name.lstrip("+"), justify="right" if name[0] == "+" else "left")
    return table


def plain_row(table: Table, *cells: str | RenderableType) -> None:
    """Add a row whose strings are shown as they are (task data is never Rich markup),
    each escaped as one line."""
    table.add_row(*(Text(escape_line(cell)) if isinstance(cell, str) else cell for cell in cells))


def count_table(
    title: str,
    counts: Mapping[str, int],
    styles: Mapping[str, str] | None = None,
    *,
    min_width: int | None = None,
) -> Table:
    """A titled two-column table of names and counts (a zero count greyed)."""
    table = titled_table(
        title,
        "name",
        "+count",
        box=None,
        show_header=False,
        title_justify="center",
        min_width=min_width,
    )
    for name, count in counts.items():
        style = (styles or {}).get(name, "") if count else "bright_black"
        table.add_row(Text(escape_line(str(name)), style=style), Text(str(count), style=style))
    return table


def _short_type(error_type: str) -> str:
    return error_type.rsplit(".", 1)[-1]


# -- statistics ---------------------------------------------------------------------------


def render_statistics(
    stats: Mapping[str, Any],
    now: datetime | None = None,
    *,
    width: int = 120,
    counters: bool | None = None,
    leases: Mapping[str, int] | None = None,
) -> RenderableType:
    """``DeadLetterQueue.get_statistics()`` as tables: counts, queue health, the circuit
    breakers not closed, top fingerprints (``now``: when an open breaker closes, relative).

    The lifetime counters are shown when they mean something (``counters``; by
    default while a processor runs in this process); otherwise a line says why not.
    ``leases`` (the live leases by the worker holding them, outside this process)
    says which processors are at work elsewhere."""
    if counters is None:
        counters = bool(stats.get("is_processor_running"))
    queue = titled_table(
        "queue", "name", "value", box=None, show_header=False, title_justify="center"
    )
    running = "running" if stats.get("is_processor_running") else "stopped"
    degraded = stats.get("degraded", False)
    failover = stats.get("failover")
    backend = str(stats.get("backend", "-"))
    if failover:
        backend += f" (serving: {failover['serving']}; primary {failover['primary']})"
    plain_row(queue, "backend", backend)
    if stats.get("location"):
        plain_row(queue, "where", str(stats["location"]))
    plain_row(
        queue,
        "degraded",
        Text("yes", "bold red") if degraded else Text("no", "green"),
    )
    if failover:
        plain_row(queue, "awaiting re-sync", str(failover["pending_resync"]))
        plain_row(queue, "last failover", when(failover["failed_over_at"]))
        plain_row(queue, "last recovery", when(failover["recovered_at"]))
        if failover["last_error"]:
            plain_row(queue, "last store error", str(failover["last_error"]))
    plain_row(
        queue,
        "open tasks",
        f"{stats['queue_size']} / {stats['max_size']} ({stats['utilization_percent']}%)",
    )
    plain_row(queue, "stored", str(stats.get("total_stored", "-")))
    unreadable = stats.get("unreadable") or 0
    if unreadable:
        plain_row(
            queue,
            "unreadable",
            Text.assemble(
                (str(unreadable), "bold red"),
                (" stored but cannot be read: list, replay and the processor skip them", "red"),
            ),
        )
    plain_row(queue, "oldest pending", age(stats.get("oldest_pending_age_seconds")))
    interval = stats.get("retry_interval_seconds")
    every = "" if interval is None else f", every {interval:g} s"
    plain_row(queue, "processor", f"{running} here{every}")
    if leases is not None:
        plain_row(queue, "elsewhere", _elsewhere(leases))
    tables = [
        count_table("status", stats["status_breakdown"], STATUS_STYLE),
        count_table("error categories", stats["error_categories"]),
        count_table("retry policies", stats["retry_policies"]),
    ]
    if counters:
        tables.append(count_table("lifetime counters (this process)", stats["lifetime_stats"]))
    else:
        plain_row(queue, "lifetime counters", Text(NO_COUNTERS, "bright_black"))
    fingerprints = titled_table(
        "top fingerprints (open tasks)", "+tasks", "error type", "example error", "fingerprint"
    )
    for fp in stats.get("top_fingerprints", []):
        plain_row(
            fingerprints,
            str(fp["count"]),
            _short_type(str(fp["error_type"])),
            str(fp["example_error"]),
            str(fp["fingerprint"]),
        )
    if not stats.get("top_fingerprints"):
        plain_row(fingerprints, "0", "-", "no open tasks", "-")
    parts: list[RenderableType] = [Columns(tables, padding=(1, 3)), Text(), queue, Text()]
    breakers = _status_breakers(stats.get("breakers"), now, width)
    if breakers is not None:
        parts += [breakers, Text()]
    return Group(*parts, fingerprints)


def _elsewhere(leases: Mapping[str, int]) -> Text:
    """The processors holding live leases: how many, on how many tasks, which."""
    if not leases:
        return Text("no processor at work (no live leases; an idle one holds none)", "bright_black")
    owners = sorted(leases, key=lambda owner: (-leases[owner], owner))
    named = ", ".join(f"{escape_line(owner)} ({leases[owner]})" for owner in owners[:5])
    more = f" and {len(owners) - 5} more" if len(owners) > 5 else ""
    total = sum(leases.values())
    count = f"{len(owners)} processor{'s' if len(owners) != 1 else ''}"
    return Text(f"{count} at work on {total} task{'s' if total != 1 else ''}: {named}{more}")


# -- circuit breakers -------------------------------------------------------------------------


def _moment(value: Any) -> datetime | None:
    """A time of a breaker row: a datetime, or its ISO 8601 text (None if neither)."""
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    return None


def breaker_until(row: Mapping[str, Any], now: datetime | None = None) -> str:
    """Until when an open breaker stays open: "in 25.0 s", "until closed" (forced open
    by an operator), "due" (it goes half-open at the next claim); "-" when not open."""
    if row.get("state") != "open":
        return "-"
    until = _moment(row.get("open_until"))
    if until is None:
        return "until closed"
    if now is None:
        return when(until)
    return "due" if until <= now else relative(until, now)


def render_breakers(
    rows: Sequence[Mapping[str, Any]],
    now: datetime | None = None,
    *,
    title: str | None = None,
    reasons: bool = False,
    width: int = 120,
) -> Table:
    """Circuit breakers as a table: workflow, state, since, until, failures (the share
    of sick outcomes in the window), trips, by (and the operator's reason, with
    ``reasons``). Below ``NARROW`` columns (the terminal's ``width``) since is left
    out (``--json`` has it). ``rows`` have the keys of
    ``get_statistics()["breakers"]`` values, plus ``workflow`` (and ``reason``)."""
    wide = width >= NARROW
    since_column = ["since (UTC)"] if wide else []
    by_column = "by: reason" if reasons else "by"
    table = titled_table(
        title, "workflow", "state", *since_column, "until", "+failures", "+trips", by_column
    )
    for column in table.columns[1:-1]:
        column.no_wrap = True
    table.columns[0].overflow, table.columns[0].min_width = "fold", 12
    table.columns[-1].overflow, table.columns[-1].min_width = "fold", 10
    for row in rows:
        state = str(row.get("state", "?"))
        shown = Text(state.replace("_", "-"), BREAKER_STYLE.get(state, ""))
        forced = state == "open" and row.get("open_until") is None
        if row.get("enabled") is False and not forced:
            shown.append(" (breakers off)", "bright_black")
        since = _moment(row.get("since"))
        ratio = row.get("failure_ratio")
        by = str(row.get("by") or "-")
        if reasons and row.get("reason"):
            by += f": {row['reason']}"
        cells: list[str | RenderableType] = [str(row.get("workflow", "?")), shown]
        if wide:
            cells.append("-" if since is None else since.strftime("%m-%d %H:%M:%S"))
        cells += [
            breaker_until(row, now),
            f"{ratio:.0%}" if isinstance(ratio, (int, float)) else "-",
            str(row.get("trips", "-")),
            by,
        ]
        plain_row(table, *cells)
    return table


def _status_breakers(
    breakers: Mapping[str, Mapping[str, Any]] | None, now: datetime | None, width: int
) -> RenderableType | None:
    """What ``status`` shows of the breakers: those not closed, and how many are."""
    if not breakers:
        return None
    rows = [{"workflow": workflow, **row} for workflow, row in breakers.items()]
    not_closed = [row for row in rows if row.get("state") != "closed"]
    closed = len(rows) - len(not_closed)
    if not not_closed:
        return Text(f"circuit breakers: {closed} stored, all closed", style="bright_black")
    table = render_breakers(not_closed, now, title="circuit breakers (not closed)", width=width)
    if not closed:
        return table
    return Group(table, Text(f"and {closed} closed (breaker list shows every one)", "bright_black"))


# -- one task -----------------------------------------------------------------------------


def _next_retry(task: FailedTask, now: datetime | None = None) -> Text:
    if task.status is DeadLetterStatus.RETRYING:
        owner = escape_line(task.lease_owner or "?")
        return Text(f"none: being retried by {owner}", style="cyan")
    if task.next_retry_at is not None:
        hint = "" if now is None else f" ({relative(task.next_retry_at, now)})"
        return Text(when(task.next_retry_at) + hint)
    reason = {
        DeadLetterStatus.PENDING: f"none: awaiting an operator (policy {task.retry_policy.value})",
        DeadLetterStatus.EXHAUSTED: "none: retries exhausted",
        DeadLetterStatus.COMPLETED: f"none: completed {when(task.completed_at)}",
        DeadLetterStatus.ARCHIVED: f"none: archived {when(task.archived_at)}",
    }.get(task.status, "none")
    return Text(reason, style="bright_black")


def _error(error_type: str, error: str) -> Text:
    """``Type: message`` on one line, the type in colour."""
    return Text.assemble(
        (escape_line(_short_type(error_type)), "magenta"), ": ", escape_line(error)
    )


def _facts(task: FailedTask, now: datetime | None) -> Table:
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold", no_wrap=True)
    facts.add_column(overflow="fold")
    plain_row(facts, "id", task.task_id)
    plain_row(facts, "workflow", task.workflow or "-")
    plain_row(facts, "status", Text(task.status.value, style=STATUS_STYLE[task.status.value]))
    plain_row(facts, "category", task.error_category.value)
    plain_row(facts, "policy", task.retry_policy.value)
    plain_row(
        facts,
        "retries",
        f"{task.retry_count}/{task.max_retries}"
        f" ({task.total_attempts} run{'s' if task.total_attempts != 1 else ''} in all)",
    )
    plain_row(facts, "error", _error(task.error_type, task.error))
    if task.last_error and task.last_error != task.error:
        plain_row(facts, "last error", _error(task.last_error_type or "", task.last_error))
    failed = when(task.failed_at) + ("" if now is None else f" ({relative(task.failed_at, now)})")
    plain_row(facts, "failed at", failed)
    plain_row(facts, "next retry", _next_retry(task, now))
    return facts


def _history(task: FailedTask) -> RenderableType:
    if not task.attempts:
        return Text("no retry attempts yet", style="bright_black")
    history = titled_table("attempts", "+#", "trigger", "started", "+took", "outcome", expand=True)
    history.add_column("error", no_wrap=True, overflow="ellipsis", ratio=1)
    for attempt in task.attempts:
        took = "-"
        if attempt.finished_at is not None:
            took = f"{(attempt.finished_at - attempt.started_at).total_seconds() * 1000:.0f} ms"
        outcome = attempt.outcome.value
        plain_row(
            history,
            str(attempt.number),
            attempt.trigger,
            when(attempt.started_at, date=False),
            took,
            Text(outcome, style=OUTCOME_STYLE.get(outcome, "red")),
            attempt.error or "",
        )
    return history


def render_task(task: FailedTask, title: str | None = None) -> Panel:
    """One failed task in brief: what failed, how it is classified and scheduled, attempts."""
    style = STATUS_STYLE.get(task.status.value, "")
    return Panel(
        Group(_facts(task, None), _history(task)),
        title=Text(escape_line(title or task.task_id)),
        title_align="left",
        border_style=style,
    )


def _json_block(title: str, data: Any) -> RenderableType:
    return Group(Text(title, style="bold"), Syntax(dumps(data), "json", word_wrap=True))


def render_task_detail(task: FailedTask, now: datetime) -> RenderableType:
    """Everything about one task (``show``): facts, lease, history, traceback, input, metadata."""
    facts = _facts(task, now)
    plain_row(facts, "fingerprint", task.error_fingerprint)
    if task.repos:
        plain_row(facts, "repos", ", ".join(task.repos))
    if task.lease_owner:
        expires = "" if task.lease_expires_at is None else f" until {when(task.lease_expires_at)}"
        plain_row(facts, "lease", f"{task.lease_owner}{expires}")
    plain_row(facts, "created / updated", f"{when(task.created_at)} / {when(task.updated_at)}")
    parts: list[RenderableType] = [facts, Text(), _history(task), Text()]
    if task.traceback:
        traceback = Text(escape_block(task.traceback.rstrip()))
        parts += [Text("traceback (first failure)", style="bold"), traceback]
    else:
        parts.append(Text("no traceback recorded", style="bright_black"))
    parts += [Text(), _json_block("task input", task.task), Text()]
    parts.append(_json_block("metadata", task.metadata))
    style = STATUS_STYLE.get(task.status.value, "")
    title = Text(escape_line(task.task_id))
    return Panel(Group(*parts), title=title, title_align="left", border_style=style)


def render_source(source: str | None) -> str:
    """The stored form of a record that cannot be read (``show``), for stdout: indented
    if it is JSON (its unsafe characters as JSON escapes), else the text escaped."""
    if source is None:
        return ""
    try:
        data = json.loads(source)
    except (ValueError, RecursionError):  # not JSON, or nested beyond the parser
        return escape_block(source)
    try:
        return dumps(data)
    except (ValueError, RecursionError):  # NaN is JSON to Python; deep nesting is not
        return escape_json(source)


# -- many tasks ---------------------------------------------------------------------------


def render_task_list(tasks: Sequence[FailedTask], now: datetime, *, width: int = 120) -> Table:
    """The ``list`` table: id, status, category, retries, next retry, failed at, error.

    Every column is always there. Below ``STACKED`` columns (the terminal's ``width``)
    status and category share a column on two lines, as do the failed-at date and
    time, and ids and errors wrap rather than lose their ends; ``show`` and ``--json``
    have everything."""
    stacked = width < STACKED
    table = Table(box=box.SIMPLE_HEAD, expand=True, pad_edge=False, padding=(0, 1))
    longest = max((len(escape_line(task.task_id)) for task in tasks), default=8)
    room = width - (47 if stacked else 78)  # what the fixed columns and gaps leave
    table.add_column("id", overflow="fold", width=max(8, min(longest, 36, room // 2)))
    table.add_column("status\ncategory" if stacked else "status", no_wrap=True)
    if not stacked:
        table.add_column("category", no_wrap=True)
    table.add_column("retries", justify="right", no_wrap=True)
    table.add_column("next retry", no_wrap=True)
    table.add_column("failed at", no_wrap=True)
    table.add_column("error", overflow="fold", min_width=16, ratio=1)
    for task in tasks:
        next_retry = "-"
        if task.next_retry_at is not None:
            next_retry = "due" if task.next_retry_at <= now else relative(task.next_retry_at, now)
        status = Text(task.status.value, STATUS_STYLE[task.status.value])
        category = task.error_category.value
        failed_at = task.failed_at.strftime("%Y-%m-%d %H:%M:%S")
        cells: list[str | RenderableType] = [task.task_id]
        if stacked:
            cells.append(Text.assemble(status, "\n", category))
        else:
            cells += [status, category]
        cells += [f"{task.retry_count}/{task.max_retries}", next_retry]
        cells.append(Text(failed_at.replace(" ", "\n")) if stacked else failed_at)
        error_type = _short_type(task.last_error_type or task.error_type)
        error = f"{error_type}: {task.last_error or task.error}"
        if len(error) > ERROR_CELL:
            error = error[: ERROR_CELL - 1] + "…"
        cells.append(error)
        plain_row(table, *cells)
    return table
