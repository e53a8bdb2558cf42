"""The task list, a task, the groups and the jobs as the pages show them.

Every page is read as a signed-in browser would (a session from ``POST /login``)
and asserted through the ``data-*`` hooks the browser tests use as well.
"""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import quote

import pytest
from fastapi import FastAPI

from mahavishnu_dlq import DeadLetterQueue
from mahavishnu_dlq.testing import FakeClock
from mahavishnu_dlq.web.ids import task_url

from .conftest import VIEWER_TOKEN
from .pages_support import AWKWARD_IDS, Page, bad_input, failure, seed, session

pytestmark = pytest.mark.anyio


async def test_the_task_list_shows_each_column_and_pages_with_the_cursor(
    app: FastAPI, dlq: DeadLetterQueue, clock: FakeClock
) -> None:
    for n in range(60):
        await dlq.enqueue(f"t-{n:02d}", {}, error=failure("boom"), workflow="sync")
        clock.advance(1)
    async with session(app, VIEWER_TOKEN) as browser:
        first = Page((await browser.get("/tasks", params={"workflow": "sync"})).text)
        rows = first.find_all("tr", data_task_row=None)
        assert len(rows) == 50
        assert first.stat("matching") == "60"
        assert "t-59" in rows[0].text  # newest failure first
        assert "pending" in rows[0].text
        assert "network" in rows[0].text
        assert "ConnectionError" in rows[0].text
        assert "0/3" in rows[0].text
        assert first.find_all("time", datetime=None)
        following = first.one("a", data_page="next").attrs["href"]
        assert following.startswith("/tasks?workflow=sync&cursor=")
        second = Page((await browser.get(following)).text)
        more = second.find_all("tr", data_task_row=None)
        assert len(more) == 10
        assert "t-09" in more[0].text
        assert not second.find_all("a", data_page="next")
        assert second.one("a", data_page="first").attrs["href"] == "/tasks?workflow=sync"
        small = Page((await browser.get("/tasks?limit=25")).text)
        assert len(small.find_all("tr", data_task_row=None)) == 25
        assert "limit=25" in small.one("a", data_page="next").attrs["href"]


async def test_every_cli_filter_narrows_the_list(
    app: FastAPI, dlq: DeadLetterQueue, clock: FakeClock
) -> None:
    await dlq.enqueue("old-net", {}, error=failure(), workflow="sync")
    clock.advance(timedelta(hours=3))
    await dlq.enqueue("new-val", {}, error=bad_input("invalid zip code"), workflow="signup")
    await dlq.enqueue("new-net", {}, error=failure(), workflow="billing")
    await dlq.archive_task("new-net")
    fingerprint = (await dlq.get_task("old-net")).error_fingerprint  # type: ignore[union-attr]
    cases: list[tuple[dict[str, str | list[str]], list[str]]] = [
        ({"status": ["archived"]}, ["new-net"]),
        ({"status": ["pending", "archived"]}, ["new-val", "new-net", "old-net"]),
        ({"category": "validation"}, ["new-val"]),
        ({"workflow": "sync, signup"}, ["new-val", "old-net"]),
        ({"since": "2h"}, ["new-val", "new-net"]),
        ({"until": "2h"}, ["old-net"]),
        ({"since": (clock.now() - timedelta(hours=1)).isoformat()}, ["new-val", "new-net"]),
        ({"text": "ZIP"}, ["new-val"]),
        ({"fingerprint": fingerprint}, ["new-net", "old-net"]),
    ]
    async with session(app, VIEWER_TOKEN) as browser:
        for params, expected in cases:
            answer = await browser.get("/tasks", params=params)
            assert answer.status_code == 200, params
            page = Page(answer.text)
            shown = [a.text for a in page.find_all("a", data_task_link=None)]
            assert sorted(shown) == sorted(expected), params
        kept = Page((await browser.get("/tasks", params={"status": "pending", "text": "x"})).text)
        assert kept.one("input", name="status", value="pending").attrs.get("checked") == ""
        assert kept.one("input", name="text").attrs["value"] == "x"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"since": "yesterday-ish"}, "since"),
        ({"status": "sleeping"}, "status"),
        ({"category": "cosmic"}, "category"),
        ({"text": "x" * 1001}, "text"),
    ],
)
async def test_a_bad_filter_is_400_naming_the_field(
    app: FastAPI, params: dict[str, str], field: str
) -> None:
    async with session(app, VIEWER_TOKEN) as browser:
        answer = await browser.get("/tasks", params=params)
    assert answer.status_code == 400
    page = Page(answer.text)
    assert page.one("p", id=f"err-{field}").text
    assert not page.find_all("tr", data_task_row=None)


async def test_a_malformed_cursor_is_a_400_page(app: FastAPI) -> None:
    async with session(app, VIEWER_TOKEN) as browser:
        answer = await browser.get("/tasks", params={"cursor": "%%%"})
    assert answer.status_code == 400
    assert Page(answer.text).one(data_error_status="400")


async def test_the_task_page_shows_everything_about_a_task(
    app: FastAPI, dlq: DeadLetterQueue
) -> None:
    async def handler(task: dict[str, object], repos: list[str]) -> None:
        raise TimeoutError("still timing out")

    dlq.register_handler("sync", handler)
    await dlq.enqueue(
        "order-7",
        {"order": 7, "card": {"password": "hunter2", "last4": "4242"}},
        ["acme/shop"],
        failure(),
        workflow="sync",
        metadata={"user": "ops", "API_KEY": "k-123"},
    )
    await dlq.retry_task("order-7")
    task = await dlq.get_task("order-7")
    assert task is not None
    async with session(app, VIEWER_TOKEN) as browser:
        answer = await browser.get("/tasks/order-7")
    assert answer.status_code == 200
    page = Page(answer.text)
    assert page.one(data_task_id=None).text == "order-7"
    assert page.one("pre", data_field="error").text == "connection to shard 3 refused"
    assert "TimeoutError" in page.one(
        "pre", data_field="last_error"
    ).text or "still timing out" in (page.one("pre", data_field="last_error").text)
    assert "Traceback (most recent call last)" in page.one("pre", data_field="traceback").text
    link = page.one("a", data_fingerprint_link=None)
    assert link.attrs["href"] == task_url("/groups/", task.error_fingerprint)
    attempt = page.one("tr", data_attempt="1")
    for expected in ("manual", "failure", "still timing out"):
        assert expected in attempt.text
    shown_input = page.one("pre", data_field="task").text
    assert '"last4": "4242"' in shown_input
    assert "hunter2" not in answer.text
    assert "k-123" not in answer.text
    assert "••••" in shown_input
    assert '"user": "ops"' in page.one("pre", data_field="metadata").text
    assert "acme/shop" in answer.text


@pytest.mark.parametrize("task_id", AWKWARD_IDS)
async def test_the_task_page_takes_any_id(app: FastAPI, dlq: DeadLetterQueue, task_id: str) -> None:
    await dlq.enqueue(task_id, {"id": task_id}, error=failure())
    async with session(app, VIEWER_TOKEN) as browser:
        listed = Page((await browser.get("/tasks")).text)
        href = listed.one("a", data_task_link=None).attrs["href"]
        assert href == task_url("/tasks/", task_id)
        answer = await browser.get(href)
    assert answer.status_code == 200
    assert Page(answer.text).one(data_task_id=None).text == " ".join(task_id.split())


async def test_an_unknown_task_is_a_404_page(app: FastAPI) -> None:
    async with session(app, VIEWER_TOKEN) as browser:
        answer = await browser.get(f"/tasks/{quote('no/such task', safe='')}")
    assert answer.status_code == 404
    page = Page(answer.text)
    assert page.one(data_error_status="404").attrs["data-error-type"] == "not_found"
    assert "no/such task" in page.one("p", **{"class": "error-message"}).text
    assert page.one(data_principal="dashboards")  # the header still knows who is there


async def test_the_groups_pages(app: FastAPI, dlq: DeadLetterQueue, clock: FakeClock) -> None:
    await seed(dlq, 3, workflow="sync")
    await seed(dlq, 2, prefix="other", workflow="billing")
    await dlq.enqueue("v", {}, error=bad_input(), workflow="signup")
    await dlq.archive_task("task-000")
    groups = await dlq.fingerprint_groups()
    network = next(g for g in groups if g.error_type == "ConnectionError")
    async with session(app, VIEWER_TOKEN) as browser:
        listing = Page((await browser.get("/groups")).text)
        assert len(listing.find_all("tr", data_group_row=None)) == 2
        only = Page((await browser.get("/groups", params={"category": "validation"})).text)
        assert len(only.find_all("tr", data_group_row=None)) == 1
        archived = Page((await browser.get("/groups", params={"status": "archived"})).text)
        assert "1" in archived.one("tr", data_group_row=None).text
        answer = await browser.get(task_url("/groups/", network.fingerprint))
        assert answer.status_code == 200
        page = Page(answer.text)
        assert page.one(data_fingerprint=None).text == network.fingerprint
        assert page.stat("count") == "5"  # every status, the archived one too
        assert page.stat("pending") == "4"
        assert page.stat("archived") == "1"
        assert len(page.find_all("tr", data_task_row=None)) == 5
        assert "connection to shard 3 refused" in page.one("pre", data_field="example_error").text
        assert not page.find_all(data_action=None)  # a viewer: no replay form
        missing = await browser.get("/groups/0000000000000000")
        assert missing.status_code == 404


async def test_the_jobs_pages(app: FastAPI, dlq: DeadLetterQueue, clock: FakeClock) -> None:
    await seed(dlq, 3)
    dry = await dlq.start_job("archive", None, dry_run=True)
    clock.advance(1)
    job = await dlq.start_job("replay", None, rate=5)
    async with session(app, VIEWER_TOKEN) as browser:
        listing = Page((await browser.get("/jobs")).text)
        rows = listing.find_all("tr", data_job_row=None)
        assert [r.attrs["data-job-row"] for r in rows] == [job.job_id, dry.job_id]
        assert "dry run" in rows[1].text
        queued = Page((await browser.get("/jobs", params={"state": "queued"})).text)
        assert len(queued.find_all("tr", data_job_row=None)) == 1
        bad = await browser.get("/jobs", params={"state": "sleeping"})
        assert bad.status_code == 400
        page = Page((await browser.get(f"/jobs/{job.job_id}")).text)
        box = page.one(data_job_api=None)
        assert box.attrs["data-job-api"] == f"/api/v1/jobs/{job.job_id}"
        assert box.attrs["data-job-state"] == "queued"
        assert box.attrs["data-job-final"] == "false"
        for name, value in (("matched", "3"), ("done", "0"), ("skipped", "0"), ("failed", "0")):
            assert page.one(data_job_field=name).text == value
        assert page.one("progress", data_job_progress=None).attrs["max"] == "3"
        assert not page.find_all(data_action=None)  # a viewer: no pause or cancel
        preview = Page((await browser.get(f"/jobs/{dry.job_id}")).text)
        assert preview.stat("matched") == "3"
        sample = [a.text for a in preview.find_all("a") if a.attrs["href"].startswith("/tasks/")]
        assert sorted(sample) == ["task-000", "task-001", "task-002"]
        assert not preview.find_all(data_action=None)
        missing = await browser.get("/jobs/job-nope")
        assert missing.status_code == 404
