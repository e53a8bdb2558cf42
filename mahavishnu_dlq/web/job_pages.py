"""The failure groups and the bulk jobs: list, preview, start, follow, steer.

A bulk action is two steps, both stored as jobs. ``POST /jobs/preview`` (a
filter and a kind, from the task list or a group) makes a *dry run*: a job
stored done whose summary counts what would be done, by status, category and
workflow, with sample ids; its page (``GET /jobs/<id>``) shows that and, to an
operator, a rate field and the button that starts the real job
(``POST /jobs/<id>/start``: the same kind and filter, a new snapshot). The job's
page follows its progress (the page's script polls ``api/v1/jobs/<id>``) and
offers pause, resume and cancel (``POST /jobs/<id>/<action>``). When no retry
processor runs in this process the job runs here, after the answer is sent.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Request
from starlette.background import BackgroundTask
from starlette.responses import RedirectResponse, Response

from mahavishnu_dlq.insights import OPEN
from mahavishnu_dlq.jobs.control import job_kind, job_states
from mahavishnu_dlq.jobs.model import JobKind, JobState
from mahavishnu_dlq.models import DeadLetterStatus, ErrorCategory
from mahavishnu_dlq.queue import DeadLetterQueue

from . import actions
from .actions import Background
from .app import queue
from .auth import Principal, operator, read_form, viewer
from .errors import WebError
from .ids import task_id_of, task_url
from .page_data import (
    KIND_VERBS,
    FilterForm,
    JobView,
    flash_message,
    parse_age,
    parse_rate,
)
from .render import page, root_of

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
Queue = Annotated[DeadLetterQueue, Depends(queue)]
Viewer = Annotated[Principal, Depends(viewer)]
Operator = Annotated[Principal, Depends(operator)]

_GROUPS_SHOWN = 100
_JOBS_SHOWN = 100
_GROUP_TASKS = 50
_DONE = {"pause": "paused", "resume": "resumed", "cancel": "cancelled"}


def _first(form: dict[str, list[str]], name: str) -> str:
    return (form.get(name) or [""])[0].strip()


def _job_href(request: Request, job_id: str, done: str | None = None) -> str:
    href = f"{root_of(request)}/jobs/{quote(job_id, safe='')}"
    return href + (f"?done={done}" if done else "")


def _redirect(href: str, run: Background | None) -> RedirectResponse:
    """A redirect that runs the job after the answer is sent, when this process must."""
    background = None if run is None else BackgroundTask(run)
    return RedirectResponse(href, status_code=303, background=background)


# -- failure groups ------------------------------------------------------------------------


@router.get("/groups")
async def group_list(request: Request, who: Viewer, dlq: Queue) -> Response:
    """Groups of tasks sharing a fingerprint, biggest first (open tasks by default)."""
    params = request.query_params
    typed = FilterForm.of({name: params.getlist(name) for name in params})
    form = FilterForm(status=typed.status, category=typed.category, workflow=typed.workflow)
    flt = form.to_filter(dlq.clock.now())
    groups = []
    if flt is not None:
        groups = await dlq.fingerprint_groups(
            status=list(flt.status or OPEN),
            error_category=None if flt.error_category is None else list(flt.error_category),
            workflow=None if flt.workflow is None else list(flt.workflow),
            limit=_GROUPS_SHOWN,
        )
    return page(
        request,
        "groups.html",
        who,
        status=400 if flt is None else 200,
        active="groups",
        now=dlq.clock.now(),
        form=form,
        errors=form.errors,
        all_statuses=[s.value for s in DeadLetterStatus],
        all_categories=[c.value for c in ErrorCategory],
        groups=groups,
    )


@router.get("/groups/{fingerprint:path}")
async def group_page(
    request: Request, who: Viewer, dlq: Queue, cursor: str | None = None
) -> Response:
    """One group (every status): its failure, counts, workflows and tasks, paged."""
    fingerprint = task_id_of(request, "/groups/")
    found = await dlq.fingerprint_groups(status=None, fingerprint=fingerprint, limit=1)
    if not found:
        raise WebError(404, "not_found", f"no failure group with fingerprint {fingerprint!r}")
    tasks = await dlq.list_tasks(None, _GROUP_TASKS, fingerprint=fingerprint, cursor=cursor)
    return page(
        request,
        "group.html",
        who,
        active="groups",
        now=dlq.clock.now(),
        group=found[0],
        statuses=[status.value for status in DeadLetterStatus],  # the life order
        tasks=tasks,
        path=task_url("/groups/", fingerprint),
        cursor=cursor,
        next_cursor=tasks.cursor,
    )


# -- jobs ------------------------------------------------------------------------------------


@router.post("/jobs/preview")
async def preview_job(request: Request, who: Operator, dlq: Queue) -> Response:
    """A dry run of a bulk action on a filter; redirects to its preview page."""
    form = await read_form(request)
    kind = job_kind(_first(form, "kind") or JobKind.REPLAY.value)  # a bad one: 400
    typed = FilterForm.of(form)
    flt = typed.to_filter(dlq.clock.now())
    if flt is None:
        field, message = next(iter(typed.errors.items()))
        raise WebError(400, "invalid", f"{field}: {message}", field=field)
    older_text = _first(form, "older_than")
    older_than = parse_age(older_text) if older_text else None
    if older_text and older_than is None:
        raise WebError(400, "invalid", "older than: use an age like 12h or 30d", field="older_than")
    if older_than is not None and kind is not JobKind.PURGE:
        raise WebError(
            400,
            "invalid",
            "'last updated at least … ago' selects what a purge deletes; "
            "use 'failed before' to narrow other actions",
            field="older_than",
        )
    job, _ = await actions.start_job(dlq, who, kind, flt, dry_run=True, older_than=older_than)
    return RedirectResponse(_job_href(request, job.job_id), status_code=303)


@router.get("/jobs")
async def job_list(request: Request, who: Viewer, dlq: Queue, state: str | None = None) -> Response:
    """Bulk jobs (and dry runs), newest first."""
    chosen = job_states(state) if state else None  # a bad state: 400
    jobs = await dlq.list_jobs(state=chosen, limit=_JOBS_SHOWN)
    return page(
        request,
        "jobs.html",
        who,
        active="jobs",
        now=dlq.clock.now(),
        jobs=[JobView.of(job) for job in jobs],
        all_states=[s.value for s in JobState],
        chosen_state=state or "",
    )


@router.get("/jobs/{job_id}")
async def job_page(
    request: Request, job_id: str, who: Viewer, dlq: Queue, done: str | None = None
) -> Response:
    """A job's progress and failures; a dry run's preview with the button to start it."""
    job = await dlq.get_job(job_id)
    view = JobView.of(job)
    context: dict[str, Any] = {
        "active": "jobs",
        "now": dlq.clock.now(),
        "flash": flash_message(done),
        "view": view,
        "kind_verb": KIND_VERBS[job.kind],
    }
    if job.dry_run:
        back = urlencode(view.selection.items())
        context.update(
            rate="", back_href=f"{root_of(request)}/tasks" + (f"?{back}" if back else "")
        )
        return page(request, "preview.html", who, **context)
    job_api = f"{root_of(request)}/api/v1/jobs/{quote(job.job_id, safe='')}"
    return page(request, "job.html", who, job_api=job_api, **context)


@router.post("/jobs/{job_id}/{action}")
async def steer_job(
    request: Request, job_id: str, action: str, who: Operator, dlq: Queue
) -> Response:
    """``start`` (the real job of a dry run, at the form's rate), ``pause``, ``resume``
    or ``cancel``; redirects to the job's page."""
    if action == "start":
        rate_text = _first(await read_form(request), "rate")
        try:
            rate = parse_rate(rate_text)
        except ValueError as exc:
            raise WebError(400, "invalid", str(exc), field="rate") from None
        dry = await dlq.get_job(job_id)
        if not dry.dry_run:
            raise WebError(409, "conflict", f"job {job_id} is not a dry run: it runs already")
        older = (
            None if dry.older_than_seconds is None else timedelta(seconds=dry.older_than_seconds)
        )
        job, run = await actions.start_job(
            dlq, who, dry.kind, dry.filter, rate=rate, older_than=older
        )
        return _redirect(_job_href(request, job.job_id, "started"), run)
    if action not in _DONE:
        raise WebError(404, "not_found", "no such job action")
    job, run = await actions.job_action(dlq, who, job_id, action)
    return _redirect(_job_href(request, job.job_id, _DONE[action]), run)
