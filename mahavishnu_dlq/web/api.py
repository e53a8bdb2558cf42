"""The JSON API under `/api/v1` (its OpenAPI document: `/api/v1/openapi.json`).

Reads need a viewer's token, actions an operator's (see :mod:`.auth`); health
needs none. Errors are `{"error": {"type", "message", "field"}}` (see
:mod:`.errors`). Task ids in paths are percent-encoded (see :mod:`.ids`).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Annotated, Any, Literal

from fastapi import APIRouter, BackgroundTasks, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import JSONResponse

from mahavishnu_dlq import __version__
from mahavishnu_dlq.errors import StoreNotFoundError, StoreUnavailableError, TaskNotFoundError
from mahavishnu_dlq.jobs.model import JobKind, JobState
from mahavishnu_dlq.models import DeadLetterStatus, ErrorCategory, TaskFilter
from mahavishnu_dlq.operations import make_filter
from mahavishnu_dlq.queue import DeadLetterQueue

from . import actions
from .app import Console, queue
from .auth import Principal, operator, viewer
from .errors import error_body
from .ids import task_id_of
from .present import bucket_json, group_json, job_json, task_json

__all__ = ["ErrorBody", "FilterBody", "JobRequest", "SelectionRequest", "document", "router"]

_TEXT_CHARS = 1000
_OPEN = (DeadLetterStatus.PENDING, DeadLetterStatus.RETRYING, DeadLetterStatus.EXHAUSTED)

router = APIRouter(prefix="/api/v1", tags=["api"])
#: who may call a route, in its OpenAPI operation (`x-role`; see :func:`document`)
VIEWER: dict[str, Any] = {"x-role": "viewer"}
OPERATOR: dict[str, Any] = {"x-role": "operator"}
_ERRORS = {
    400: "a bad argument (`field` names it)",
    401: "no token, or an unknown one",
    403: "a viewer's token, or a session request without its CSRF token or from another site",
    404: "no such task, job or route",
    409: "the task is being retried elsewhere, or the job cannot do that now",
    413: "the body is larger than `web.max_body_bytes`",
    503: "the store cannot be reached (`Retry-After` says when to try again)",
}
_ERRORS_OF = {
    "none": (503,),
    "viewer": (400, 401, 404, 503),
    "operator": (400, 401, 403, 404, 409, 413, 503),
}
Queue = Annotated[DeadLetterQueue, Depends(queue)]
TaskIdPath = Annotated[
    str,
    Path(
        description="the task id, percent-encoded: every character but letters, digits and "
        "-._~ (`/` as %2F; an id of dots with each dot as %2E)"
    ),
]
Viewer = Annotated[Principal, Depends(viewer)]
StatusQuery = Annotated[
    list[DeadLetterStatus] | None, Query(max_length=10, description="any of these statuses")
]
CategoryQuery = Annotated[
    list[ErrorCategory] | None, Query(max_length=10, description="any of these categories")
]
WorkflowQuery = Annotated[
    list[str] | None, Query(max_length=100, description="any of these workflows")
]
Operator = Annotated[Principal, Depends(operator)]


def _aware(value: datetime | None) -> datetime | None:
    """A time without an offset is taken as UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


def _console(request: Request) -> Console:
    console: Console = request.app.state.dlq_web
    return console


class ErrorDetail(BaseModel):
    """What went wrong."""

    type: str = Field(description="not_found, invalid, unauthorized, forbidden, csrf, …")
    message: str
    field: str | None = Field(default=None, description="the argument at fault, if one is")


class ErrorBody(BaseModel):
    """Every error answer of the API."""

    error: ErrorDetail


def document(openapi: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI document as the API behaves: a bad argument is 400 (not FastAPI's
    422), and each operation lists the errors its role can meet, in one shape."""
    schemas = openapi.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    for model in (ErrorBody, ErrorDetail):
        schemas[model.__name__] = model.model_json_schema(
            ref_template="#/components/schemas/{model}"
        )
    schemas["ErrorBody"].pop("$defs", None)
    for operations in openapi.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            for status in _ERRORS_OF[operation.get("x-role", "viewer")]:
                responses[str(status)] = {
                    "description": _ERRORS[status],
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}
                    },
                }
    return openapi


class FilterBody(BaseModel):
    """Which tasks: every field narrows the selection (the `list_tasks` filters)."""

    model_config = ConfigDict(extra="forbid")

    status: list[DeadLetterStatus] | None = Field(default=None, max_length=10)
    error_category: list[ErrorCategory] | None = Field(default=None, max_length=10)
    workflow: list[str] | None = Field(default=None, max_length=100)
    since: datetime | None = None
    until: datetime | None = None
    text: str | None = Field(default=None, max_length=_TEXT_CHARS)
    fingerprint: str | None = Field(default=None, max_length=_TEXT_CHARS)

    def to_filter(self) -> TaskFilter:
        """The store's filter (a bad value: 400 naming it)."""
        return make_filter(
            status=None if self.status is None else tuple(self.status),
            error_category=None if self.error_category is None else tuple(self.error_category),
            workflow=None if self.workflow is None else tuple(self.workflow),
            since=_aware(self.since),
            until=_aware(self.until),
            text=self.text,
            fingerprint=self.fingerprint,
        )


class JobRequest(BaseModel):
    """A bulk job: what to do to the tasks a filter selects."""

    model_config = ConfigDict(extra="forbid")

    kind: JobKind
    filter: FilterBody = Field(default_factory=FilterBody)
    rate: float | None = Field(default=None, gt=0, le=100_000, description="tasks per second")
    dry_run: bool = False
    older_than_seconds: float | None = Field(
        default=None, ge=0, le=3650 * 86400, description="purge: last updated that long ago"
    )


class SelectionRequest(BaseModel):
    """Retry or archive the listed tasks now."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["retry", "archive"]
    task_ids: list[Annotated[str, Field(min_length=1, max_length=512)]] = Field(
        min_length=1, max_length=actions.MAX_SELECTED
    )


@router.get(
    "/health",
    openapi_extra={"x-role": "none"},
    summary="Store reachable? Degraded? (no authentication)",
)
async def health(request: Request) -> JSONResponse:
    """200 when the store answers (`status` ok, or degraded while a failover store
    serves from its fallback), 503 when it does not."""
    console = _console(request)
    body: dict[str, Any] = {"version": __version__, "backend": None}
    try:
        dlq = await console.queue()
        body["backend"] = dlq.store.backend
        await dlq.count_tasks(TaskFilter(status=(DeadLetterStatus.PENDING,)))
    except StoreUnavailableError as exc:
        body.update(status="unavailable", **error_body("store_unavailable", str(exc)))
        return JSONResponse(body, status_code=503, headers={"Retry-After": "5"})
    except StoreNotFoundError as exc:  # the console reads only: a missing index stays missing
        body.update(status="not_found", **error_body("store_not_found", str(exc)))
        return JSONResponse(body, status_code=503, headers={"Retry-After": "30"})
    degraded = bool(getattr(dlq.store, "degraded", False))
    body.update(
        status="degraded" if degraded else "ok",
        degraded=degraded,
        failover=getattr(dlq.store, "health", None),
    )
    return JSONResponse(body)


@router.get(
    "/stats", openapi_extra=VIEWER, summary="Counts, lifetime counters, health (get_statistics)"
)
async def stats(dlq: Queue, _: Viewer) -> dict[str, Any]:
    """The `get_statistics()` shape."""
    return await dlq.get_statistics()


@router.get("/tasks", openapi_extra=VIEWER, summary="Tasks, newest failure first, with a cursor")
async def list_tasks(
    dlq: Queue,
    request: Request,
    _: Viewer,
    status: StatusQuery = None,
    error_category: CategoryQuery = None,
    workflow: WorkflowQuery = None,
    since: Annotated[datetime | None, Query(description="failed at or after")] = None,
    until: Annotated[datetime | None, Query(description="failed before")] = None,
    text: Annotated[
        str | None,
        Query(
            max_length=_TEXT_CHARS,
            description="case-insensitive part of the id, workflow, error, error type or "
            "fingerprint",
        ),
    ] = None,
    fingerprint: Annotated[
        str | None, Query(max_length=_TEXT_CHARS, description="exactly this fingerprint")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="tasks per page")] = 50,
    cursor: Annotated[
        str | None, Query(max_length=4096, description="the `cursor` of the previous page")
    ] = None,
) -> dict[str, Any]:
    """`tasks` (payload secrets masked) and `cursor` (null on the last page)."""
    page = await dlq.list_tasks(
        status,
        limit,
        error_category=error_category,
        workflow=workflow,
        since=_aware(since),
        until=_aware(until),
        text=text,
        fingerprint=fingerprint,
        cursor=cursor,
    )
    redact = _console(request).redact
    return {"tasks": [task_json(task, redact) for task in page], "cursor": page.cursor}


@router.post(
    "/tasks/actions", openapi_extra=OPERATOR, summary="Retry or archive the selected tasks now"
)
async def act_on_selection(body: SelectionRequest, dlq: Queue, who: Operator) -> dict[str, Any]:
    """One outcome per id: succeeded, failed, archived, not_found, busy or error."""
    outcomes = await actions.act_on_selection(dlq, who, body.action, body.task_ids)
    return {"results": [outcome.json() for outcome in outcomes]}


@router.get("/tasks/{task_id:path}", openapi_extra=VIEWER, summary="One task (id percent-encoded)")
async def get_task(task_id: TaskIdPath, request: Request, dlq: Queue, _: Viewer) -> dict[str, Any]:
    """The stored record, payload secrets masked; 404 for an unknown id."""
    task_id = task_id_of(request, "/api/v1/tasks/")
    task = await dlq.get_task(task_id)
    if task is None:
        raise TaskNotFoundError(task_id)
    return task_json(task, _console(request).redact)


@router.post(
    "/tasks/{task_id:path}/retry",
    openapi_extra=OPERATOR,
    summary="Retry one task now through its handler",
)
async def retry_task(
    task_id: TaskIdPath, request: Request, dlq: Queue, who: Operator
) -> dict[str, Any]:
    """`{success, task_id, result | error | dispatched, message}` (`dispatched`: the token
    a task sent to its engine is held under); 404 unknown, 409 busy elsewhere."""
    task_id = task_id_of(request, "/api/v1/tasks/", "/retry")
    return await actions.retry_one(dlq, who, task_id)


@router.post(
    "/tasks/{task_id:path}/archive", openapi_extra=OPERATOR, summary="Set one task aside for audit"
)
async def archive_task(
    task_id: TaskIdPath, request: Request, dlq: Queue, who: Operator
) -> dict[str, Any]:
    """`{archived: true, task}`; 404 for an unknown id."""
    task_id = task_id_of(request, "/api/v1/tasks/", "/archive")
    await actions.archive_one(dlq, who, task_id)
    task = await dlq.get_task(task_id)
    return {
        "archived": True,
        "task": None if task is None else task_json(task, _console(request).redact),
    }


@router.get("/fingerprints", openapi_extra=VIEWER, summary="Groups of tasks sharing one failure")
async def fingerprints(
    dlq: Queue,
    _: Viewer,
    status: StatusQuery = None,
    error_category: CategoryQuery = None,
    workflow: WorkflowQuery = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="groups at most")] = 50,
) -> dict[str, Any]:
    """Biggest group first; open tasks (pending, retrying, exhausted) unless `status`."""
    groups = await dlq.fingerprint_groups(
        status=status or list(_OPEN),
        error_category=error_category,
        workflow=workflow,
        limit=limit,
    )
    return {"groups": [group_json(group) for group in groups]}


@router.get("/failures", openapi_extra=VIEWER, summary="Failures over time by category")
async def failures(
    dlq: Queue,
    _: Viewer,
    hours: Annotated[int, Query(ge=1, le=24 * 90)] = 24,
    buckets: Annotated[int, Query(ge=1, le=500)] = 24,
) -> dict[str, Any]:
    """Stored tasks by the time they failed, in `buckets` over the last `hours`."""
    found = await dlq.failure_histogram(hours=hours, buckets=buckets)
    return {"hours": hours, "buckets": [bucket_json(bucket) for bucket in found]}


@router.get("/jobs", openapi_extra=VIEWER, summary="Bulk jobs, newest first")
async def list_jobs(
    dlq: Queue,
    _: Viewer,
    state: Annotated[list[JobState] | None, Query(max_length=10)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> dict[str, Any]:
    """`jobs` with their progress."""
    jobs = await dlq.list_jobs(state=state, limit=limit)
    return {"jobs": [job_json(job) for job in jobs]}


@router.post(
    "/jobs", status_code=201, openapi_extra=OPERATOR, summary="Start a bulk job (or a dry run)"
)
async def start_job(
    body: JobRequest, dlq: Queue, who: Operator, background: BackgroundTasks
) -> dict[str, Any]:
    """The stored job; a dry run is stored done, its `summary` saying what would be done."""
    older = None if body.older_than_seconds is None else timedelta(seconds=body.older_than_seconds)
    job, run = await actions.start_job(
        dlq,
        who,
        body.kind,
        body.filter.to_filter(),
        rate=body.rate,
        dry_run=body.dry_run,
        older_than=older,
    )
    if run is not None:
        background.add_task(run)
    return job_json(job)


@router.get("/jobs/{job_id}", openapi_extra=VIEWER, summary="One job and its progress")
async def get_job(job_id: str, dlq: Queue, _: Viewer) -> dict[str, Any]:
    """404 for an unknown id."""
    return job_json(await dlq.get_job(job_id))


@router.post(
    "/jobs/{job_id}/{action}", openapi_extra=OPERATOR, summary="Pause, resume or cancel a job"
)
async def steer_job(
    job_id: str,
    action: Literal["pause", "resume", "cancel"],
    dlq: Queue,
    who: Operator,
    background: BackgroundTasks,
) -> dict[str, Any]:
    """The job after the change; 409 when it is finished."""
    job, run = await actions.job_action(dlq, who, job_id, action)
    if run is not None:
        background.add_task(run)
    return job_json(job)
