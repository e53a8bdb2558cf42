"""What replay, retry, archive and purge share: a stored bulk job, started and shown.

:func:`bulk_request` checks the options a bulk command takes (a bad value exits 2
before anything opens); :func:`run_bulk` starts the job
(``DeadLetterQueue.start_job``) and then, by mode:

- ``--dry-run``: the job is stored done at once with a summary of what matched;
  the summary is printed and nothing changes;
- ``--background``: the job's id is printed (stdout, alone, for scripts) and the
  processors run it;
- otherwise the job is followed to its end (:mod:`.follow`), run here if no
  processor takes it, and its report printed: exit status 1 when a task failed or
  was skipped, or the job did not finish (paused, cancelled, failed); 130 after
  Ctrl-C.

``--json`` prints the job (``Job.to_dict()``) in every mode.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING

import anyio
import typer
from rich.console import Console

from mahavishnu_dlq.cli.arguments import parse_duration, parse_rate
from mahavishnu_dlq.cli.common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    PROG,
    CliError,
    CliState,
    emit_json,
    run,
)
from mahavishnu_dlq.cli.follow import Followed, follow
from mahavishnu_dlq.cli.job_render import describe_filter, job_counts, render_dry_run, render_report
from mahavishnu_dlq.cli.options import FINISHED, confirm, task_filter
from mahavishnu_dlq.cli.render import when
from mahavishnu_dlq.cli.terminal import say, text_of
from mahavishnu_dlq.states import JobKind, JobState

if TYPE_CHECKING:
    from mahavishnu_dlq.jobs import Job
    from mahavishnu_dlq.models import TaskFilter
    from mahavishnu_dlq.queue import DeadLetterQueue

__all__ = ["DEFAULT_WAIT", "BulkRequest", "FilterArgs", "bulk_request", "run_bulk"]

#: Seconds a followed job waits for a processor before the command runs it itself.
DEFAULT_WAIT = 3.0


@dataclass(frozen=True)
class FilterArgs:
    """The filter options as given (checked by :func:`bulk_request`)."""

    status: list[str] | None = None
    category: list[str] | None = None
    workflow: list[str] | None = None
    since: str | None = None
    until: str | None = None
    text: str | None = None
    fingerprint: str | None = None
    older_than: str | None = None

    @property
    def given(self) -> bool:
        """True when at least one filter option was given."""
        return any(value is not None for value in self.__dict__.values())


@dataclass(frozen=True)
class BulkRequest:
    """A bulk command's checked options."""

    kind: JobKind
    selection: Callable[[datetime], TaskFilter]
    older_than: timedelta | None
    rate: float | None
    dry_run: bool
    background: bool
    wait: float
    as_json: bool
    #: ask before deleting (purge without --yes)
    confirm: bool = False

    def filter_at(self, now: datetime) -> TaskFilter:
        """The job's filter as of ``now``: for all but purge, ``--older-than D`` is
        "failed before now - D" (with ``--until``, the earlier of the two)."""
        flt = self.selection(now)
        if self.older_than is None:
            return flt
        try:
            cutoff = now - self.older_than
        except OverflowError:  # a clock near year 1
            raise typer.BadParameter(
                "that long ago is before the year 1", param_hint="--older-than"
            ) from None
        if self.kind is JobKind.PURGE:  # start_job makes it the last update's cut-off
            return flt
        until = cutoff if flt.until is None or flt.until > cutoff else flt.until
        return flt.model_copy(update={"until": until})


def bulk_request(
    kind: JobKind,
    filters: FilterArgs,
    *,
    rate: str | None,
    dry_run: bool,
    background: bool,
    wait: float | None,
    as_json: bool,
    confirm: bool = False,
) -> BulkRequest:
    """The checked options of a bulk command (BadParameter: exit 2, nothing opened)."""
    if dry_run and background:
        raise typer.BadParameter(
            "a dry run is done at once: leave out --background", param_hint="--dry-run"
        )
    selection = task_filter(
        filters.status,
        filters.category,
        filters.workflow,
        filters.since,
        filters.until,
        filters.text,
        filters.fingerprint,
    )
    age = None
    if filters.older_than is not None:
        age = parse_duration(filters.older_than, option="--older-than")
    return BulkRequest(
        kind=kind,
        selection=selection,
        older_than=age,
        rate=None if rate is None else parse_rate(rate),
        dry_run=dry_run,
        background=background,
        wait=DEFAULT_WAIT if wait is None else wait,
        as_json=as_json,
        confirm=confirm and not dry_run,
    )


# -- running ------------------------------------------------------------------------------------


def _purge_question(matched: int, flt: TaskFilter) -> str:
    statuses = ", ".join(s.value for s in flt.status or ())
    cut = "" if flt.updated_before is None else f", last updated before {when(flt.updated_before)}"
    still_open = [s.value for s in flt.status or () if s not in FINISHED]
    warning = f"; {', '.join(still_open)} tasks still need handling" if still_open else ""
    return f"Delete {matched} task(s) ({statuses}{cut}{warning}) for good?"


async def _ask_before_purging(dlq: DeadLetterQueue, request: BulkRequest, flt: TaskFilter) -> None:
    """Count what the purge would delete (as ``start_job`` resolves it) and ask."""
    now = dlq.clock.now()
    changes: dict[str, object] = {}
    if flt.status is None:
        from mahavishnu_dlq.jobs import Job  # noqa: PLC0415 - not for --help

        changes["status"] = Job.default_statuses(JobKind.PURGE)
    if request.older_than is not None:
        cutoff = now - request.older_than  # checked by filter_at
        before = flt.updated_before
        changes["updated_before"] = cutoff if before is None or before > cutoff else before
    counted = flt.model_copy(update=changes) if changes else flt
    matched = await dlq.count_tasks(counted)
    if matched:
        await anyio.to_thread.run_sync(partial(confirm, _purge_question(matched, counted)))


def _waiting_hint(job: Job) -> str:
    return (
        f"{PROG}: job {job.job_id} waits for a processor: a retry job runs your handlers, "
        f"so run '{PROG} processor run --app MODULE:ATTR' (or pass --app here); "
        "Ctrl-C stops following"
    )


def _in_this_process_only(dlq: DeadLetterQueue) -> bool:
    """A memory store is this process's own: no processor elsewhere can take a job."""
    return dlq.store.backend == "memory" and not dlq.is_processor_running


def run_bulk(state: CliState, request: BulkRequest, *, app: str | None = None) -> None:
    """Start the job ``request`` describes, show it, and exit with its status."""
    has_handlers = state.app_spec(app) is not None

    async def body(dlq: DeadLetterQueue) -> Followed:
        flt = request.filter_at(dlq.clock.now())
        if request.confirm:
            await _ask_before_purging(dlq, request, flt)
        older_than = request.older_than if request.kind is JobKind.PURGE else None
        try:
            job = await dlq.start_job(
                request.kind, flt, rate=request.rate, dry_run=request.dry_run, older_than=older_than
            )
        except (TypeError, ValueError) as exc:  # what the options' checks let through
            raise CliError(text_of(exc), EXIT_USAGE) from exc
        if request.dry_run or request.background:
            return Followed(job)
        say(
            f"{PROG}: {job.kind.value} job {job.job_id}: {job.matched} task(s) "
            f"({describe_filter(job.filter)}); Ctrl-C stops following",
            err=True,
        )
        return await follow(
            dlq,
            job,
            can_run=request.kind is not JobKind.RETRY or has_handlers or job.matched == 0,
            # nothing to wait for: no other runner can see the job, or it has nothing to do
            wait=0.0 if _in_this_process_only(dlq) or job.matched == 0 else request.wait,
            show_progress=not request.as_json,
            waiting_hint=_waiting_hint(job),
        )

    # a dry run reads (its report is stored as a job: the jobs index is made if need be)
    followed = run(state, body, app=app, create=not request.dry_run)
    _show(request, followed)


def _show(request: BulkRequest, followed: Followed) -> None:
    job = followed.job
    if request.as_json:
        emit_json(job.to_dict())
    elif request.dry_run:
        Console().print(render_dry_run(job))
    elif request.background:
        say(job.job_id)
        say(
            f"{PROG}: {job.kind.value} job {job.job_id} of {job.matched} task(s) queued for "
            f"the processors; see it with: {PROG} jobs show {job.job_id}",
            err=True,
        )
    elif followed.interrupted:
        if followed.cancelled or job.finished:  # it may have ended before the question
            verb = job.state.value
        else:
            verb = f"left running ({job.state.value})"
        say(f"job {job.job_id} {verb}: {job_counts(job)}")
        if not followed.cancelled and not job.finished:
            say(f"see it with: {PROG} jobs show {job.job_id}")
    else:
        Console().print(render_report(job))
    if followed.interrupted:
        raise typer.Exit(EXIT_INTERRUPTED)
    if request.dry_run or request.background:
        return
    if job.state is not JobState.DONE or job.failed or job.skipped:
        raise typer.Exit(EXIT_FAILED)
