"""What an operator does to tasks from the pages, and who may: forms, CSRF, confirmations.

Each action is a POST form as the page writes it (with the session's CSRF token,
from the console's own origin), answered with a redirect or a page of outcomes.
Bulk jobs are in ``test_pages_jobs``.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from mahavishnu_dlq import DeadLetterQueue, Dispatched
from mahavishnu_dlq.jobs.model import JobState
from mahavishnu_dlq.models import DeadLetterStatus, FailedTask
from mahavishnu_dlq.web.ids import task_url

from .conftest import OPERATOR_TOKEN, VIEWER_TOKEN
from .pages_support import (
    AWKWARD_IDS,
    ORIGIN,
    Page,
    client,
    csrf_of,
    failure,
    post_form,
    seed,
    session,
)

pytestmark = pytest.mark.anyio

PENDING = DeadLetterStatus.PENDING
ARCHIVED = DeadLetterStatus.ARCHIVED
COMPLETED = DeadLetterStatus.COMPLETED


async def succeed(task: dict[str, Any], repos: list[str]) -> str:
    return "ok"


async def csrf_for(browser: httpx.AsyncClient, path: str = "/tasks") -> str:
    return csrf_of((await browser.get(path)).text)


async def status_of(dlq: DeadLetterQueue, task_id: str) -> DeadLetterStatus | None:
    task = await dlq.get_task(task_id)
    return None if task is None else task.status


async def test_selected_rows_are_retried_or_archived_with_one_outcome_each(
    app: FastAPI, dlq: DeadLetterQueue
) -> None:
    ids = await seed(dlq, 3, workflow="sync")
    dlq.register_handler("sync", succeed)
    async with session(app, OPERATOR_TOKEN) as browser:
        listing = Page((await browser.get("/tasks", params={"workflow": "sync"})).text)
        form = listing.one("form", data_action="selection")
        assert form.attrs["method"] == "post"
        assert form.attrs["action"] == "/tasks"
        boxes = listing.find_all("input", name="task_id")
        assert [b.attrs["value"] for b in boxes] == ids  # one failure time: by id
        back = listing.one("input", name="back").attrs["value"]
        assert back == "workflow=sync"
        answer = await post_form(
            browser,
            "/tasks",
            [
                ("csrf", csrf_of(listing.html)),
                ("action", "retry"),
                ("task_id", ids[0]),
                ("task_id", ids[1]),
                ("task_id", "ghost"),
                ("back", back),
            ],
        )
        assert answer.status_code == 200
        page = Page(answer.text)
        outcomes = {
            row.text.split()[0]: row.attrs["data-outcome"]
            for row in page.find_all("tr", data_outcome=None)
        }
        assert outcomes == {ids[0]: "succeeded", ids[1]: "succeeded", "ghost": "not_found"}
        assert page.one(data_outcome_count="succeeded").attrs["data-value"] == "2"
        back_link = [a for a in page.find_all("a") if a.text == "Back to the list"]
        assert back_link[0].attrs["href"] == "/tasks?workflow=sync"
        assert await status_of(dlq, ids[0]) is COMPLETED
        archived = await post_form(
            browser,
            "/tasks",
            {"csrf": csrf_of(listing.html), "action": "archive", "task_id": ids[2]},
        )
        assert archived.status_code == 200
        assert Page(archived.text).one("tr", data_outcome="archived")
        assert await status_of(dlq, ids[2]) is ARCHIVED
        nothing = await post_form(
            browser, "/tasks", {"csrf": csrf_of(listing.html), "action": "retry"}
        )
        assert nothing.status_code == 400
        unknown = await post_form(
            browser,
            "/tasks",
            {"csrf": csrf_of(listing.html), "action": "delete", "task_id": ids[0]},
        )
        assert unknown.status_code == 400


async def test_a_back_link_can_only_lead_to_the_task_list(
    app: FastAPI, dlq: DeadLetterQueue
) -> None:
    ids = await seed(dlq, 1)
    async with session(app, OPERATOR_TOKEN) as browser:
        answer = await post_form(
            browser,
            "/tasks",
            {
                "csrf": await csrf_for(browser),
                "action": "archive",
                "task_id": ids[0],
                "back": 'x=1&/../../evil"><script>',
            },
        )
    links = [
        a.attrs["href"] for a in Page(answer.text).find_all("a") if a.text == "Back to the list"
    ]
    assert links[0].startswith("/tasks?")
    assert "<script>" not in answer.text


async def test_one_task_is_retried_after_a_confirmation(app: FastAPI, dlq: DeadLetterQueue) -> None:
    await seed(dlq, 1, workflow="sync")
    dlq.register_handler("sync", succeed)
    async with session(app, OPERATOR_TOKEN) as browser:
        page = Page((await browser.get("/tasks/task-000")).text)
        link = page.one("a", data_action="retry-link")
        assert link.attrs["href"] == "/tasks/task-000?confirm=retry"
        assert link.attrs["data-dialog"] == "confirm-retry"
        dialog = page.one("dialog", id="confirm-retry")
        assert dialog.attrs["aria-labelledby"] == "confirm-retry-h"
        confirm = Page((await browser.get(link.attrs["href"])).text)
        form = confirm.one("form", data_action="retry")
        assert form.attrs["action"] == "/tasks/task-000"
        assert confirm.one("input", name="action").attrs["value"] == "retry"
        assert await status_of(dlq, "task-000") is PENDING  # the confirmation changed nothing
        answer = await post_form(
            browser, "/tasks/task-000", {"csrf": csrf_of(confirm.html), "action": "retry"}
        )
        assert answer.status_code == 303
        assert answer.headers["location"] == "/tasks/task-000?done=retry-succeeded"
        assert await status_of(dlq, "task-000") is COMPLETED
        shown = Page((await browser.get(answer.headers["location"])).text)
    assert "succeeded" in shown.one(data_flash=None).text
    assert not shown.find_all(data_action="retry-link")  # completed: nothing to retry


def _send_to_celery(record: FailedTask) -> None:
    raise Dispatched("queued")


async def test_retry_outcomes_are_told_apart(app: FastAPI, dlq: DeadLetterQueue) -> None:
    async def fail(task: dict[str, Any], repos: list[str]) -> None:
        raise ConnectionError("still down")

    await seed(dlq, 1, workflow="sync")
    await seed(dlq, 1, prefix="lonely", workflow="nobody-handles-this")
    dlq.register_handler("sync", fail)
    async with session(app, OPERATOR_TOKEN) as browser:
        csrf = await csrf_for(browser)
        failed = await post_form(browser, "/tasks/task-000", {"csrf": csrf, "action": "retry"})
        assert failed.headers["location"].endswith("?done=retry-failed")
        orphan = await post_form(browser, "/tasks/lonely-000", {"csrf": csrf, "action": "retry"})
        assert orphan.headers["location"].endswith("?done=retry-no-handler")
        await dlq.archive_task("lonely-000")
        refused = await post_form(browser, "/tasks/lonely-000", {"csrf": csrf, "action": "retry"})
        assert refused.headers["location"].endswith("?done=retry-refused")
        bad = await post_form(browser, "/tasks/task-000", {"csrf": csrf, "action": "explode"})
        assert bad.status_code == 400
        ghost = await post_form(browser, "/tasks/ghost", {"csrf": csrf, "action": "archive"})
        assert ghost.status_code == 404
        flash = Page((await browser.get("/tasks/task-000?done=retry-failed")).text)
        assert "failed again" in flash.one(data_flash=None).text
        dlq.register_engine("celery", _send_to_celery)
        await dlq.enqueue("c-1", {}, error=failure(), metadata={"engine": "celery"})
        sent = await post_form(browser, "/tasks/c-1", {"csrf": csrf, "action": "retry"})
        assert sent.headers["location"].endswith("?done=retry-dispatched")
        told = Page((await browser.get("/tasks/c-1?done=retry-dispatched")).text)
        assert "Sent to its engine" in told.one(data_flash=None).text
        invented = Page((await browser.get("/tasks/task-000?done=<b>hacked</b>")).text)
        assert not invented.find_all(data_flash=None)  # only known codes show a message


@pytest.mark.parametrize("task_id", AWKWARD_IDS)
async def test_any_id_is_archived_from_its_page(
    app: FastAPI, dlq: DeadLetterQueue, task_id: str
) -> None:
    await dlq.enqueue(task_id, {}, error=failure())
    page_url = task_url("/tasks/", task_id)
    async with session(app, OPERATOR_TOKEN) as browser:
        confirm = Page((await browser.get(f"{page_url}?confirm=archive")).text)
        form = confirm.one("form", data_action="archive")
        assert form.attrs["action"] == page_url
        answer = await post_form(
            browser, form.attrs["action"], {"csrf": csrf_of(confirm.html), "action": "archive"}
        )
    assert answer.status_code == 303
    assert answer.headers["location"] == f"{page_url}?done=archived"
    assert await status_of(dlq, task_id) is ARCHIVED


async def action_requests(dlq: DeadLetterQueue) -> list[tuple[str, dict[str, Any]]]:
    """One request of each kind of action, on fresh records."""
    await seed(dlq, 2)
    queued = await dlq.start_job("replay", None)
    dry = await dlq.start_job("archive", None, dry_run=True)
    return [
        ("/tasks", {"action": "archive", "task_id": "task-000"}),
        ("/tasks/task-001", {"action": "archive"}),
        ("/jobs/preview", {"kind": "archive"}),
        (f"/jobs/{dry.job_id}/start", {"rate": ""}),
        (f"/jobs/{queued.job_id}/cancel", {}),
    ]


async def nothing_changed(dlq: DeadLetterQueue, jobs_before: int) -> None:
    assert await status_of(dlq, "task-000") is PENDING
    assert await status_of(dlq, "task-001") is PENDING
    jobs = await dlq.list_jobs()
    assert len(jobs) == jobs_before
    assert all(job.state in (JobState.QUEUED, JobState.DONE) for job in jobs)


async def test_a_viewers_forged_forms_are_403(app: FastAPI, dlq: DeadLetterQueue) -> None:
    requests = await action_requests(dlq)
    async with session(app, VIEWER_TOKEN) as browser:
        csrf = await csrf_for(browser)  # the viewer's own, valid token
        for path, data in requests:
            answer = await post_form(browser, path, {**data, "csrf": csrf})
            assert answer.status_code == 403, path
            assert Page(answer.text).one(data_error_status="403")
    await nothing_changed(dlq, 2)


async def test_csrf_missing_wrong_or_cross_site_is_403(app: FastAPI, dlq: DeadLetterQueue) -> None:
    requests = await action_requests(dlq)
    async with session(app, OPERATOR_TOKEN) as browser:
        csrf = await csrf_for(browser)
        for path, data in requests:
            assert (await post_form(browser, path, data)).status_code == 403, path
            wrong = await post_form(browser, path, {**data, "csrf": csrf[:-2] + "xx"})
            assert wrong.status_code == 403, path
            other = await browser.post(
                path, data={**data, "csrf": csrf}, headers={"Origin": "https://evil.example"}
            )
            assert other.status_code == 403, path
            fetched = await browser.post(
                path, data={**data, "csrf": csrf}, headers={"Sec-Fetch-Site": "cross-site"}
            )
            assert fetched.status_code == 403, path
    await nothing_changed(dlq, 2)


async def test_an_anonymous_form_goes_to_sign_in(app: FastAPI, dlq: DeadLetterQueue) -> None:
    requests = await action_requests(dlq)
    async with client(app) as browser:
        for path, data in requests:
            answer = await browser.post(path, data=data, headers={"Origin": ORIGIN})
            assert answer.status_code == 303, path
            assert answer.headers["location"].startswith("/login?next=")
    await nothing_changed(dlq, 2)
