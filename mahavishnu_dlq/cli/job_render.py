"""How the CLI shows bulk jobs: a dry run's summary, a job's report, ``jobs show`` and
``jobs list``.

Pure functions of a :class:`~mahavishnu_dlq.jobs.Job` (like :mod:`.render`, whose
pieces they use). Every text that comes from a job — its id, the filter as given,
a failure's task id and error, the creator's name — is escaped as one line.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich import box
from rich.columns import Columns
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from mahavishnu_dlq.cli.common import PROG
from mahavishnu_dlq.cli.render import (
    STATUS_STYLE,
    age,
    count_table,
    plain_row,
    titled_table,
    when,
)
from mahavishnu_dlq.cli.terminal import escape_line
from mahavishnu_dlq.states import JobKind, JobState

if TYPE_CHECKING:
    from mahavishnu_dlq.jobs import Job, TaskSummary
    from mahavishnu_dlq.models import TaskFilter

__all__ = [
    "DONE_WORD",
    "JOB_STATE_STYLE",
    "WIDE_LIST",
    "describe_filter",
    "describe_rate",
    "job_counts",
    "render_dry_run",
    "render_job_detail",
    "render_job_list",
    "render_report",
]

JOB_STATE_STYLE = {
    "queued": "yellow",
    "running": "cyan",
    "paused": "magenta",
    "done": "green",
    "cancelled": "bright_black",
    "failed": "red",
}
#: What ``done`` counts, per kind: tasks replayed, retried with success, archived, purged.
DONE_WORD = {
    JobKind.REPLAY: "replayed",
    JobKind.RETRY: "succeeded",
    JobKind.ARCHIVE: "archived",
    JobKind.PURGE: "purged",
}
_WOULD = {
    JobKind.REPLAY: "would replay",
    JobKind.RETRY: "would retry",
    JobKind.ARCHIVE: "would archive",
    JobKind.PURGE: "would purge",
}
#: Terminal columns from which ``jobs list`` shows when and by whom a job was created.
WIDE_LIST = 120
_FAILURES_SHOWN = 20  # failures a report lists (--json has every one the job kept)
_OUTCOME_STYLE = {"failed": "red", "skipped": "yellow"}


# -- small pieces -------------------------------------------------------------------------


def describe_filter(flt: TaskFilter) -> str:
    """A job's filter in words, one line (unescaped: callers escape it)."""
    parts: list[str] = []
    if flt.status:
        parts.append("status " + ", ".join(s.value for s in flt.status))
    if flt.error_category:
        parts.append("category " + ", ".join(c.value for c in flt.error_category))
    if flt.workflow:
        parts.append("workflow " + ", ".join(flt.workflow))
    if flt.since is not None:
        parts.append(f"failed at or after {when(flt.since)}")
    if flt.until is not None:
        parts.append(f"failed before {when(flt.until)}")
    if flt.updated_before is not None:
        parts.append(f"last updated before {when(flt.updated_before)}")
    if flt.text:
        parts.append(f"text {flt.text!r}")
    if flt.fingerprint:
        parts.append(f"fingerprint {flt.fingerprint}")
    return "; ".join(parts) or "every task"


def describe_rate(rate: float | None) -> str:
    """Tasks per second as given: 10/s, 30/min, 2/h; "unlimited" for None."""
    if rate is None:
        return "unlimited"
    for unit, per in (("s", 1), ("min", 60), ("h", 3600)):
        if rate * per >= 1 or unit == "h":
            return f"{rate * per:g}/{unit}"
    return f"{rate:g}/s"  # pragma: no cover - the loop returns at "h"


def job_counts(job: Job) -> str:
    """``4 matched, 3 replayed, 1 skipped, 0 failed`` (and what is left, if any)."""
    if job.dry_run:
        return f"{job.matched} matched (dry run: nothing was changed)"
    text = (
        f"{job.matched} matched, {job.done} {DONE_WORD[job.kind]}, "
        f"{job.skipped} skipped, {job.failed} failed"
    )
    left = job.matched - job.processed
    if left > 0 and job.state is not JobState.DONE:
        text += f", {left} not processed"
    return text


def _state(job: Job) -> Text:
    return Text(job.state.value, style=JOB_STATE_STYLE.get(job.state.value, ""))


def _failures(job: Job, shown: int = _FAILURES_SHOWN) -> RenderableType | None:
    if not job.failures:
        return None
    table = titled_table("not done", "task id", "outcome", "reason")
    for failure in job.failures[:shown]:
        outcome = Text(failure.outcome, _OUTCOME_STYLE.get(failure.outcome, ""))
        plain_row(table, failure.task_id, outcome, failure.error)
    more = job.failed + job.skipped - min(shown, len(job.failures))
    if more <= 0:
        return table
    kept = len(job.failures) > shown
    where = f" ({PROG} jobs show {job.job_id} --json lists them)" if kept else ""
    return Group(table, Text(escape_line(f"… and {more} more{where}"), style="bright_black"))


def _summary_tables(summary: TaskSummary) -> RenderableType:
    tables = [
        count_table("status", summary.by_status, STATUS_STYLE, min_width=8),
        count_table("category", summary.by_category, min_width=10),
        count_table("workflow", summary.by_workflow, min_width=10),
    ]
    return Columns(tables, padding=(1, 3))


def _sample(summary: TaskSummary) -> Text | None:
    if not summary.sample:
        return None
    more = summary.total - len(summary.sample)
    ids = ", ".join(escape_line(task_id) for task_id in summary.sample)
    return Text(f"first: {ids}" + (f" … and {more} more" if more > 0 else ""))


# -- what the bulk commands print ------------------------------------------------------------


def render_dry_run(job: Job) -> RenderableType:
    """A dry run's report: how many tasks, by status, category and workflow, the first ids."""
    from mahavishnu_dlq.jobs import TaskSummary  # noqa: PLC0415 - not for --help

    summary = job.summary or TaskSummary(total=job.matched)
    head = Text.assemble(
        (f"{_WOULD[job.kind]} {summary.total} task(s)", "bold"),
        (escape_line(f"; nothing was changed (dry run {job.job_id})"), "bright_black"),
    )
    parts: list[RenderableType] = [head]
    if summary.total:
        parts.append(_summary_tables(summary))
    sample = _sample(summary)
    if sample is not None:
        parts.append(sample)
    return Group(*parts)


def render_report(job: Job) -> RenderableType:
    """A followed job's report: its state and counts, then what was not done."""
    head = Text.assemble(
        (escape_line(f"{job.kind.value} {job.job_id} "), "bold"),
        _state(job),
        ": ",
        job_counts(job),
    )
    parts: list[RenderableType] = [head]
    hint = {
        JobState.PAUSED: f"resume it with: {PROG} jobs resume {job.job_id}",
        JobState.QUEUED: f"the processors go on with it: {PROG} jobs show {job.job_id}",
        JobState.RUNNING: f"the processors go on with it: {PROG} jobs show {job.job_id}",
    }.get(job.state)
    if hint is not None:
        parts.append(Text(escape_line(hint), style="bright_black"))
    if job.error:
        parts.append(Text(escape_line(f"error: {job.error}"), style="red"))
    failures = _failures(job)
    if failures is not None:
        parts.append(failures)
    return Group(*parts)


# -- jobs show / jobs list ---------------------------------------------------------------------


def _progress(job: Job) -> str:
    share = f" ({100 * job.processed / job.matched:.0f}%)" if job.matched else ""
    where = "not started" if job.pages == 0 else "at the end" if job.cursor is None else "mid-way"
    return f"{job.processed} of {job.matched} processed{share}; {job.pages} page(s), {where}"


def render_job_detail(job: Job) -> RenderableType:
    """Everything about one job (``jobs show``): what, how, where it got to, what failed."""
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold", no_wrap=True)
    facts.add_column(overflow="fold")
    plain_row(facts, "id", job.job_id)
    plain_row(facts, "kind", job.kind.value + (" (dry run)" if job.dry_run else ""))
    plain_row(facts, "state", _state(job))
    plain_row(facts, "progress", _progress(job))
    plain_row(facts, "counts", job_counts(job))
    plain_row(facts, "filter", describe_filter(job.filter))
    if job.older_than_seconds is not None:
        plain_row(facts, "older than", age(job.older_than_seconds))
    plain_row(facts, "rate", describe_rate(job.rate))
    plain_row(facts, "snapshot", f"{when(job.snapshot_at)} (tasks that failed later are left out)")
    plain_row(facts, "created", f"{when(job.created_at)} by {job.created_by or '-'}")
    plain_row(facts, "started / finished", f"{when(job.started_at)} / {when(job.finished_at)}")
    plain_row(facts, "updated", when(job.updated_at))
    if job.runner is not None:
        plain_row(facts, "runner", f"{job.runner}, lease until {when(job.lease_expires_at)}")
    plain_row(facts, "runs", str(job.runs))
    if job.cursor is not None:
        plain_row(facts, "cursor", job.cursor)
    if job.error:
        plain_row(facts, "error", Text(escape_line(job.error), style="red"))
    parts: list[RenderableType] = [facts]
    if job.summary is not None:
        parts += [Text(), Text("selected at the start", style="bold")]
        parts.append(_summary_tables(job.summary))
        sample = _sample(job.summary)
        if sample is not None:
            parts.append(sample)
    failures = _failures(job)
    if failures is not None:
        parts += [Text(), failures]
    style = JOB_STATE_STYLE.get(job.state.value, "")
    title = Text(escape_line(job.job_id))
    return Panel(Group(*parts), title=title, title_align="left", border_style=style)


def render_job_list(jobs: Sequence[Job], *, width: int = 120) -> Table:
    """The ``jobs list`` table: id, kind, state, done/matched, skipped, failed, created, by.

    Below :data:`WIDE_LIST` columns (the terminal's ``width``) created and by are left
    out (``jobs show`` and ``--json`` have them)."""
    wide = width >= WIDE_LIST
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1))
    table.add_column("id", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("state", no_wrap=True)
    for name in ("done/matched", "skipped", "failed"):
        table.add_column(name, justify="right", no_wrap=True)
    if wide:
        table.add_column("created", no_wrap=True)
        table.add_column("by", no_wrap=True, overflow="ellipsis", max_width=40)
    for job in jobs:
        cells: list[str | RenderableType] = [
            job.job_id,
            job.kind.value + (" (dry)" if job.dry_run else ""),
            _state(job),
            f"{job.done}/{job.matched}",
            str(job.skipped),
            str(job.failed),
        ]
        if wide:
            cells += [job.created_at.strftime("%Y-%m-%d %H:%M"), job.created_by]
        plain_row(table, *cells)
    return table
