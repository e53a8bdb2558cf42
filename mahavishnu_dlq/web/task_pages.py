"""The task pages: the filtered list, one task, and what an operator does to them.

``GET /tasks`` lists tasks by the CLI's filters (query fields, see
:class:`~.page_data.FilterForm`) with cursor paging; ``POST /tasks`` retries or
archives the selected rows and shows one outcome per id. ``GET /tasks/<id>``
shows one task (the id percent-encoded, see :mod:`.ids`); ``?confirm=retry``
or ``?confirm=archive`` is the confirmation page of an action (the page's
``<dialog>`` does the same with JavaScript), and ``POST /tasks/<id>`` with
``action`` does it, then redirects back to the task with a flash.
"""

from __future__ import annotations

from collections import Counter
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, Depends, Request
from starlette.responses import RedirectResponse, Response

from mahavishnu_dlq.errors import TaskNotFoundError
from mahavishnu_dlq.models import DeadLetterStatus, ErrorCategory
from mahavishnu_dlq.queue import DeadLetterQueue

from . import actions
from .app import Console, queue
from .auth import Principal, operator, read_form, viewer
from .errors import WebError
from .ids import task_id_of, task_url
from .page_data import KIND_VERBS, PAGE_SIZES, FilterForm, attempt_rows, flash_message
from .present import task_json
from .render import page, root_of

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
Queue = Annotated[DeadLetterQueue, Depends(queue)]
Viewer = Annotated[Principal, Depends(viewer)]
Operator = Annotated[Principal, Depends(operator)]

_FINISHED = (DeadLetterStatus.COMPLETED, DeadLetterStatus.ARCHIVED)
_BACK_CHARS = 16_384


def _console(request: Request) -> Console:
    console: Console = request.app.state.dlq_web
    return console


def page_size(text: str | None) -> int:
    """The rows per page asked for, when the list offers it (else the default)."""
    try:
        size = int(text or "")
    except ValueError:
        return PAGE_SIZES[0]
    return size if size in PAGE_SIZES else PAGE_SIZES[0]


def back_href(request: Request, query: str) -> str:
    """The task list with ``query`` — re-encoded, so it can only ever be a query."""
    pairs = parse_qsl(query[:_BACK_CHARS], keep_blank_values=False)
    encoded = urlencode(pairs)
    return f"{root_of(request)}/tasks" + (f"?{encoded}" if encoded else "")


@router.get("/tasks")
async def task_list(request: Request, who: Viewer, dlq: Queue) -> Response:
    """Tasks by filter, newest failure first, a page at a time."""
    params = request.query_params
    form = FilterForm.of({name: params.getlist(name) for name in params})
    flt = form.to_filter(dlq.clock.now())
    limit = page_size(params.get("limit"))
    cursor = params.get("cursor") or None
    query = form.items() + ([("limit", str(limit))] if limit != PAGE_SIZES[0] else [])
    context: dict[str, Any] = {
        "active": "tasks",
        "now": dlq.clock.now(),
        "form": form,
        "errors": form.errors,
        "all_statuses": [s.value for s in DeadLetterStatus],
        "all_categories": [c.value for c in ErrorCategory],
        "page_sizes": PAGE_SIZES,
        "limit": limit,
        "query": query,
        "cursor": cursor,
        "back": urlencode(query + ([("cursor", cursor)] if cursor else [])),
        "kind_verbs": [(kind.value, verb) for kind, verb in KIND_VERBS.items()],
        "tasks": [],
        "next_cursor": None,
        "total": None,
    }
    if flt is None:
        return page(request, "tasks.html", who, status=400, **context)
    found = await dlq.list_tasks(
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
    context.update(tasks=found, next_cursor=found.cursor, total=await dlq.count_tasks(flt))
    return page(request, "tasks.html", who, **context)


@router.post("/tasks")
async def act_on_selection(request: Request, who: Operator, dlq: Queue) -> Response:
    """Retry or archive the selected tasks now; a page with each one's outcome."""
    form = await read_form(request)
    action = (form.get("action") or [""])[0]
    ids = [task_id for task_id in form.get("task_id", []) if task_id]
    outcomes = await actions.act_on_selection(dlq, who, action, ids)
    return page(
        request,
        "selection.html",
        who,
        active="tasks",
        action=action,
        outcomes=outcomes,
        counts=dict(Counter(outcome.outcome for outcome in outcomes)),
        back_href=back_href(request, (form.get("back") or [""])[0]),
    )


@router.get("/tasks/{task_id:path}")
async def task_page(
    request: Request,
    who: Viewer,
    dlq: Queue,
    confirm: str | None = None,
    done: str | None = None,
) -> Response:
    """One task: its error, traceback, attempts, input and metadata (secrets masked)."""
    task_id = task_id_of(request, "/tasks/")
    task = await dlq.get_task(task_id)
    if task is None:
        raise TaskNotFoundError(task_id)
    if confirm is not None:
        if not who.can_act:
            raise WebError(403, "forbidden", f"token {who.name!r} is a viewer: it cannot act")
        if confirm not in ("retry", "archive"):
            raise WebError(400, "invalid", "confirm must be 'retry' or 'archive'", field="confirm")
        return page(request, "confirm.html", who, active="tasks", action=confirm, task=task)
    return page(
        request,
        "task.html",
        who,
        active="tasks",
        flash=flash_message(done),
        now=dlq.clock.now(),
        task=task,
        data=task_json(task, _console(request).redact),
        attempts=attempt_rows(task),
        can_retry=task.status not in _FINISHED,
        can_archive=task.status is not DeadLetterStatus.ARCHIVED,
    )


@router.post("/tasks/{task_id:path}")
async def act_on_task(request: Request, who: Operator, dlq: Queue) -> Response:
    """Retry (``action=retry``) or archive (``action=archive``) one task; back to its page."""
    task_id = task_id_of(request, "/tasks/")
    action = ((await read_form(request)).get("action") or [""])[0]
    if action == "retry":
        result = await actions.retry_one(dlq, who, task_id)
        if result.get("success"):
            code = "retry-succeeded"
        elif result.get("dispatched"):
            code = "retry-dispatched"
        elif result.get("error") == "not retryable":
            code = "retry-refused"
        elif result.get("error") == "no handler":
            code = "retry-no-handler"
        else:
            code = "retry-failed"
    elif action == "archive":
        await actions.archive_one(dlq, who, task_id)
        code = "archived"
    else:
        raise WebError(400, "invalid", "action must be 'retry' or 'archive'", field="action")
    target = task_url(f"{root_of(request)}/tasks/", task_id, f"?done={code}")
    return RedirectResponse(target, status_code=303)
