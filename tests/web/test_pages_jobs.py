"""Bulk jobs from the pages: a dry run first, then a rate and the real job; its page
follows and steers it.

Jobs started from a page run in the request's background task, which the
in-process transport runs before it returns: nothing waits.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi import FastAPI

from mahavishnu_dlq import DeadLetterQueue
from mahavishnu_dlq.jobs.model import JobState
from mahavishnu_dlq.models import DeadLetterStatus
from mahavishnu_dlq.testing import FakeClock
from mahavishnu_dlq.web.ids import task_url

from .conftest import OPERATOR_TOKEN
from .pages_support import Page, bad_input, csrf_of, post_form, seed, session

pytestmark = pytest.mark.anyio

PENDING = DeadLetterStatus.PENDING
ARCHIVED = DeadLetterStatus.ARCHIVED


async def status_of(dlq: DeadLetterQueue, task_id: str) -> DeadLetterStatus | None:
    task = await dlq.get_task(task_id)
    return None if task is None else task.status


async def csrf_for(browser: httpx.AsyncClient, path: str = "/tasks") -> str:
    return csrf_of((await browser.get(path)).text)


async def test_a_filter_is_dry_run_then_confirmed_as_a_job(
    app: FastAPI, dlq: DeadLetterQueue
) -> None:
    await seed(dlq, 4, workflow="sync")
    await seed(dlq, 2, prefix="other", workflow="billing")
    async with session(app, OPERATOR_TOKEN) as browser:
        listing = Page((await browser.get("/tasks", params={"workflow": "sync"})).text)
        form = listing.one("form", data_action="job-preview")
        assert form.attrs["action"] == "/jobs/preview"
        hidden = {
            e.attrs["name"]: e.attrs["value"] for e in listing.find_all("input", type="hidden")
        }
        assert hidden["workflow"] == "sync"
        kinds = [e.attrs["value"] for e in listing.find_all("input", name="kind")]
        assert kinds == ["replay", "retry", "archive", "purge"]
        preview = await post_form(
            browser,
            "/jobs/preview",
            {"csrf": hidden["csrf"], "kind": "archive", "workflow": "sync"},
        )
        assert preview.status_code == 303
        dry_id = preview.headers["location"].rsplit("/", 1)[1]
        dry = await dlq.get_job(dry_id)
        assert dry.dry_run
        assert dry.state is JobState.DONE
        assert [await status_of(dlq, f"task-{n:03d}") for n in range(4)] == [PENDING] * 4
        page = Page((await browser.get(preview.headers["location"])).text)
        assert page.stat("matched") == "4"
        summary = page.one(data_summary=None).text
        assert "pending" in summary
        assert "network" in summary
        assert "sync" in summary
        assert "billing" not in summary
        sample = [a.text for a in page.find_all("a") if a.attrs["href"].startswith("/tasks/")]
        assert sorted(sample) == [f"task-{n:03d}" for n in range(4)]
        start = page.one("form", data_action="job-start")
        assert start.attrs["action"] == f"/jobs/{dry_id}/start"
        assert page.one("input", name="rate").attrs["type"] == "number"
        button = [b for b in page.find_all("button") if b.text.startswith("Start ")]
        assert button[0].text == "Start archive of 4 tasks"
        started = await post_form(
            browser, start.attrs["action"], {"csrf": csrf_of(page.html), "rate": "500"}
        )
        assert started.status_code == 303
        location = urlsplit(started.headers["location"])
        assert parse_qs(location.query) == {"done": ["started"]}
        job_id = location.path.rsplit("/", 1)[1]
        job = await dlq.get_job(job_id)  # run in the answer's background task
        assert job.state is JobState.DONE
        assert job.rate == 500
        assert (job.matched, job.done) == (4, 4)
        assert [await status_of(dlq, f"task-{n:03d}") for n in range(4)] == [ARCHIVED] * 4
        assert await status_of(dlq, "other-000") is PENDING
        shown = Page((await browser.get(started.headers["location"])).text)
    assert shown.one(data_flash=None).text == "Job started."
    assert shown.one(data_job_api=None).attrs["data-job-final"] == "true"
    assert shown.one(data_job_field="done").text == "4"
    assert shown.one("progress", data_job_progress=None).attrs["value"] == "4"


async def test_a_purge_keeps_to_its_age(
    app: FastAPI, dlq: DeadLetterQueue, clock: FakeClock
) -> None:
    old = await seed(dlq, 2, prefix="old")
    for task_id in old:
        await dlq.archive_task(task_id)
    clock.advance(7200)
    await dlq.archive_task((await seed(dlq, 1, prefix="new"))[0])
    async with session(app, OPERATOR_TOKEN) as browser:
        csrf = await csrf_for(browser)
        preview = await post_form(
            browser, "/jobs/preview", {"csrf": csrf, "kind": "purge", "older_than": "1h"}
        )
        page = Page((await browser.get(preview.headers["location"])).text)
        assert page.stat("matched") == "2"
        start = page.one("form", data_action="job-start").attrs["action"]
        started = await post_form(browser, start, {"csrf": csrf, "rate": ""})
        assert started.status_code == 303
    assert await dlq.get_task("old-000") is None
    assert await dlq.get_task("old-001") is None
    assert await status_of(dlq, "new-000") is ARCHIVED


@pytest.mark.parametrize(
    "form",
    [
        {"kind": "explode"},
        {"kind": "replay", "older_than": "30d"},
        {"kind": "purge", "older_than": "soon"},
        {"kind": "replay", "since": "whenever"},
        {"kind": "replay", "status": "sleeping"},
    ],
)
async def test_a_bad_preview_is_400(
    app: FastAPI, dlq: DeadLetterQueue, form: dict[str, str]
) -> None:
    await seed(dlq, 1)
    async with session(app, OPERATOR_TOKEN) as browser:
        answer = await post_form(
            browser, "/jobs/preview", {**form, "csrf": await csrf_for(browser)}
        )
    assert answer.status_code == 400
    assert await dlq.list_jobs() == []


@pytest.mark.parametrize("rate", ["-1", "0", "abc", "1e9", "nan"])
async def test_a_bad_rate_is_400(app: FastAPI, dlq: DeadLetterQueue, rate: str) -> None:
    await seed(dlq, 1)
    dry = await dlq.start_job("replay", None, dry_run=True)
    async with session(app, OPERATOR_TOKEN) as browser:
        answer = await post_form(
            browser, f"/jobs/{dry.job_id}/start", {"rate": rate, "csrf": await csrf_for(browser)}
        )
    assert answer.status_code == 400
    assert len(await dlq.list_jobs()) == 1


async def test_only_a_dry_run_is_started_from_its_preview(
    app: FastAPI, dlq: DeadLetterQueue
) -> None:
    await seed(dlq, 1)
    real = await dlq.start_job("replay", None)
    async with session(app, OPERATOR_TOKEN) as browser:
        csrf = await csrf_for(browser)
        again = await post_form(browser, f"/jobs/{real.job_id}/start", {"csrf": csrf})
        assert again.status_code == 409
        nowhere = await post_form(browser, f"/jobs/{real.job_id}/explode", {"csrf": csrf})
        assert nowhere.status_code == 404


async def test_a_group_is_replayed_after_a_preview_and_a_rate(
    app: FastAPI, dlq: DeadLetterQueue, clock: FakeClock
) -> None:
    ids = await seed(dlq, 3, workflow="sync")
    await dlq.enqueue("unrelated", {}, error=bad_input(), workflow="signup")
    group = next(g for g in await dlq.fingerprint_groups() if g.count == 3)
    started_at = clock.advance(3600)
    async with session(app, OPERATOR_TOKEN) as browser:
        page = Page((await browser.get(task_url("/groups/", group.fingerprint))).text)
        form = page.one("form", data_action="group-replay")
        assert form.attrs["action"] == "/jobs/preview"
        fields = {e.attrs["name"]: e.attrs["value"] for e in page.find_all("input", type="hidden")}
        assert fields["kind"] == "replay"
        assert fields["fingerprint"] == group.fingerprint
        preview = await post_form(browser, "/jobs/preview", fields)
        shown = Page((await browser.get(preview.headers["location"])).text)
        assert shown.stat("matched") == "3"
        start = shown.one("form", data_action="job-start").attrs["action"]
        started = await post_form(browser, start, {"csrf": fields["csrf"], "rate": "2.5"})
    job = await dlq.get_job(urlsplit(started.headers["location"]).path.rsplit("/", 1)[1])
    assert job.kind.value == "replay"
    assert job.rate == 2.5
    assert job.state is JobState.DONE
    assert job.done == 3
    for task_id in ids:
        task = await dlq.get_task(task_id)
        assert task is not None
        assert task.next_retry_at is not None
        assert started_at <= task.next_retry_at <= clock.now()  # due: the processors retry it
    unrelated = await dlq.get_task("unrelated")
    assert unrelated is not None
    assert unrelated.next_retry_at is None  # validation: manual only, and not replayed


async def test_a_job_is_paused_resumed_and_cancelled_from_its_page(
    app: FastAPI, dlq: DeadLetterQueue
) -> None:
    await seed(dlq, 3)
    job = await dlq.start_job("archive", None)
    other = await dlq.start_job("replay", None)
    async with session(app, OPERATOR_TOKEN) as browser:
        page = Page((await browser.get(f"/jobs/{job.job_id}")).text)
        assert (
            page.one("form", data_action="job-pause").attrs["action"] == f"/jobs/{job.job_id}/pause"
        )
        assert page.one("form", data_action="job-cancel")
        assert not page.find_all("form", data_action="job-resume")
        csrf = csrf_of(page.html)
        paused = await post_form(browser, f"/jobs/{job.job_id}/pause", {"csrf": csrf})
        assert paused.status_code == 303
        assert paused.headers["location"] == f"/jobs/{job.job_id}?done=paused"
        assert (await dlq.get_job(job.job_id)).state is JobState.PAUSED
        page = Page((await browser.get(paused.headers["location"])).text)
        assert page.one(data_flash=None).text.startswith("Paused")
        resume = page.one("form", data_action="job-resume")
        resumed = await post_form(browser, resume.attrs["action"], {"csrf": csrf})
        assert resumed.headers["location"] == f"/jobs/{job.job_id}?done=resumed"
        finished = await dlq.get_job(job.job_id)  # resumed and run in the background
        assert finished.state is JobState.DONE
        assert finished.done == 3
        done_page = Page((await browser.get(f"/jobs/{job.job_id}")).text)
        assert not done_page.find_all(data_action=None)  # finished: nothing to steer
        cancelled = await post_form(browser, f"/jobs/{other.job_id}/cancel", {"csrf": csrf})
        assert cancelled.headers["location"] == f"/jobs/{other.job_id}?done=cancelled"
        assert (await dlq.get_job(other.job_id)).state is JobState.CANCELLED
        late = await post_form(browser, f"/jobs/{job.job_id}/pause", {"csrf": csrf})
        assert late.status_code == 409
