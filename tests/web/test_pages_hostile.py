"""Stored text is data: hostile ids, errors, tracebacks, payload keys and names only
ever reach a page escaped — on every page that can show them."""

from __future__ import annotations

from urllib.parse import quote

import httpx
import pytest
from fastapi import FastAPI

from mahavishnu_dlq import DeadLetterQueue
from mahavishnu_dlq.web.ids import task_url

from .conftest import OPERATOR_TOKEN
from .pages_support import HOSTILE, XSS_IMG, XSS_SCRIPT, Page, csrf_of, post_form, session

pytestmark = pytest.mark.anyio

RAW = [XSS_IMG, XSS_SCRIPT, "<script>alert(2)", "onerror=alert(1)>"]


def hostile_error() -> BaseException:
    try:
        raise ValueError(HOSTILE)
    except ValueError as caught:
        return caught


def assert_inert(answer: httpx.Response, where: str) -> Page:
    """No hostile markup is live: none of it appears raw, no element it would make."""
    for raw in RAW:
        assert raw not in answer.text, (where, raw)
    page = Page(answer.text)
    assert not [e for e in page.elements if any(a.startswith("on") for a in e.attrs)], where
    assert not page.find_all("img"), where
    assert all("src" in s.attrs for s in page.find_all("script")), where
    return page


async def seed_hostile(dlq: DeadLetterQueue) -> None:
    async def handler(task: dict[str, object], repos: list[str]) -> None:
        raise ValueError(HOSTILE)

    dlq.register_handler(HOSTILE, handler)
    await dlq.enqueue(
        HOSTILE,
        {HOSTILE: HOSTILE, "nested": [{HOSTILE: 1}]},
        [HOSTILE],
        hostile_error(),
        workflow=HOSTILE,
        metadata={HOSTILE: HOSTILE},
    )
    await dlq.retry_task(HOSTILE)  # an attempt whose error is hostile too
    await dlq.open_breaker(HOSTILE, reason=HOSTILE)


async def test_hostile_text_is_escaped_on_every_page(app: FastAPI, dlq: DeadLetterQueue) -> None:
    await seed_hostile(dlq)
    task = await dlq.get_task(HOSTILE)
    assert task is not None
    fingerprint = task.error_fingerprint
    job = await dlq.start_job("retry", None, rate=None)
    await dlq.run_job(job.job_id)  # fails on the hostile handler: a hostile failure line
    assert (await dlq.get_job(job.job_id)).failures
    dry = await dlq.start_job("archive", None, dry_run=True)
    encoded = task_url("/tasks/", HOSTILE)
    pages = [
        "/",
        "/tasks",
        f"/tasks?text={quote(HOSTILE)}&workflow={quote(HOSTILE)}",
        f"/tasks?since={quote(HOSTILE)}",
        encoded,
        f"{encoded}?confirm=retry",
        f"{encoded}?confirm=archive",
        "/groups",
        f"/groups?workflow={quote(HOSTILE)}",
        task_url("/groups/", fingerprint),
        "/jobs",
        f"/jobs/{job.job_id}",
        f"/jobs/{dry.job_id}",
        task_url("/tasks/", HOSTILE + "-missing"),
        task_url("/groups/", HOSTILE),
        f"/jobs/{quote(HOSTILE, safe='')}",
        f"/login?next={quote(HOSTILE)}",
        "/api/v1/docs",
    ]
    async with session(app, OPERATOR_TOKEN) as browser:
        for path in pages:
            answer = await browser.get(path)
            assert answer.status_code in (200, 303, 400, 404), path
            assert_inert(answer, path)
        shown = await browser.get(encoded)
        page = assert_inert(shown, "task")
        assert page.one(data_task_id=None).text == HOSTILE
        assert page.one("pre", data_field="error").text == HOSTILE
        assert HOSTILE in page.one("pre", data_field="traceback").text
        assert HOSTILE in page.one("pre", data_field="task").text  # the key, as text
        assert HOSTILE in page.one("pre", data_field="metadata").text
        assert "&lt;img src=x onerror=alert(1)&gt;" in shown.text
        listing = Page((await browser.get("/tasks")).text)
        assert listing.one("a", data_task_link=None).attrs["href"] == encoded
        overview = Page((await browser.get("/")).text)
        assert overview.one("tr", data_breaker=HOSTILE)
        outcome = await post_form(
            browser,
            "/tasks",
            [
                ("csrf", csrf_of(shown.text)),
                ("action", "archive"),
                ("task_id", HOSTILE),
                ("task_id", HOSTILE + "-ghost"),
            ],
        )
        assert outcome.status_code == 200
        assert_inert(outcome, "selection outcome")
        assert len(Page(outcome.text).find_all("tr", data_outcome=None)) == 2
        preview = await post_form(
            browser,
            "/jobs/preview",
            {"csrf": csrf_of(shown.text), "kind": "purge", "workflow": HOSTILE, "text": HOSTILE},
        )
        assert preview.status_code == 303
        assert_inert(await browser.get(preview.headers["location"]), "hostile preview")
