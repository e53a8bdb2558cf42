"""An operator's day in a real browser, and a viewer's, on each store.

A real console (uvicorn on a loopback port) over a memory store and over a fresh
OpenSearch index, driven by Chromium: sign in, read the overview, filter, open a
task and retry it, replay a failure group after its dry run at a rate and follow
the job to its end, sign out. A viewer sees no action at all, and what it forges
by hand is refused with nothing changed. Each test seeds tasks of its own
workflows, so the two share one console per store in any order.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from mahavishnu_dlq import DeadLetterQueue
from mahavishnu_dlq.jobs.model import JobKind, JobState
from mahavishnu_dlq.models import DeadLetterStatus, TaskFilter
from mahavishnu_dlq.web.ids import task_url

from .browser_support import STORES, WAIT, LiveConsole, chromium, served, signed_in
from .conftest import OPERATOR_TOKEN, VIEWER_TOKEN

BILLING = [f"bill-{n:03d}" for n in range(30)]
SIGNUPS = [f"signup-{n:03d}" for n in range(5)]
REPORTS = [f"report-{n:03d}" for n in range(3)]
STATUSES = [status.value for status in DeadLetterStatus]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    yield from chromium()


@pytest.fixture(scope="module", params=STORES)
def console(request: pytest.FixtureRequest) -> Iterator[LiveConsole]:
    yield from served(request)


def ledger_down() -> BaseException:
    try:
        raise ConnectionError("ledger at 10.0.4.17:5432 refused the connection")
    except ConnectionError as caught:
        return caught


def bad_email(address: str) -> BaseException:
    try:
        raise ValueError(f"invalid email address {address!r}")
    except ValueError as caught:
        return caught


def render_timeout() -> BaseException:
    try:
        raise TimeoutError("report renderer did not answer within 30 s")
    except TimeoutError as caught:
        return caught


async def welcome(task: dict[str, Any], repos: list[str]) -> str:
    return "sent"


async def seed_journey(dlq: DeadLetterQueue) -> None:
    """30 billing tasks of one failure group; 5 sign-ups (one archived) whose handler
    now works."""
    for n, task_id in enumerate(BILLING):
        await dlq.enqueue(task_id, {"invoice": n}, ["billing"], ledger_down(), workflow="billing")
    for n, task_id in enumerate(SIGNUPS):
        address = f"user{n}@example"
        await dlq.enqueue(task_id, {"email": address}, error=bad_email(address), workflow="signup")
    await dlq.archive_task(SIGNUPS[-1])
    dlq.register_handler("signup", welcome)


def stat(page: Page, key: str) -> str | None:
    return page.locator(f"[data-stat='{key}']").get_attribute("data-value")


def test_an_operator_signs_in_filters_retries_replays_a_group_and_signs_out(
    browser: Browser, console: LiveConsole
) -> None:
    console.call(seed_journey)
    with signed_in(browser, console, None) as (page, watched):
        page.goto("/")
        expect(page).to_have_url(re.compile(r"/login\?next="))
        page.locator("#token").fill(OPERATOR_TOKEN)
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator("main[data-page=overview]")).to_be_visible()
        expect(page.locator("[data-principal]")).to_have_attribute("data-role", "operator")

        stats = console.call(lambda dlq: dlq.get_statistics())
        for status in STATUSES:
            assert stat(page, status) == str(stats["status_breakdown"][status]), status
        for key in ("queue_size", "max_size", "total_stored", "unreadable"):
            assert stat(page, key) == str(stats[key]), key
        for key in ("enqueued_total", "archived"):
            assert stat(page, f"lifetime.{key}") == str(stats["lifetime_stats"][key]), key
        assert stat(page, "backend") == stats["backend"]

        # the task list, filtered by workflow and status
        page.locator("a[data-nav=tasks]").click()
        expect(page.locator("a[data-nav=tasks]")).to_have_attribute("aria-current", "page")
        page.locator("#f-workflow").fill("signup")
        page.locator("input[name=status][value=pending]").check()
        page.get_by_role("button", name="Apply filters").click()
        expect(page.locator("[data-stat=matching]")).to_have_attribute("data-value", "4")
        links = page.locator("tr[data-task-row] a[data-task-link]")
        expect(links).to_have_count(4)
        assert sorted(links.all_text_contents()) == SIGNUPS[:4]

        # one task, retried through its confirmation dialog
        page.locator("a[data-task-link]", has_text=SIGNUPS[0]).click()
        expect(page.locator("[data-task-id]")).to_have_text(SIGNUPS[0])
        page.get_by_role("link", name="Retry now").click()
        dialog = page.locator("dialog#confirm-retry")
        expect(dialog).to_be_visible()
        dialog.get_by_role("button", name="Yes, retry now").click()
        expect(page.locator("[data-flash]")).to_contain_text("the handler succeeded")
        expect(page.locator(".badges [data-status]")).to_have_attribute("data-status", "completed")
        retried = console.call(lambda dlq: dlq.get_task(SIGNUPS[0]))
        assert retried is not None
        assert retried.status is DeadLetterStatus.COMPLETED

        # a failure group: dry run first, then the job at 20 tasks a second
        page.goto(task_url("/tasks/", BILLING[7]))
        page.locator("a[data-fingerprint-link]").click()
        expect(page.locator("main[data-page=group]")).to_be_visible()
        page.get_by_role("button", name="Replay this group…").click()
        expect(page.locator("main[data-page=preview]")).to_be_visible()
        assert stat(page, "matched") == str(len(BILLING))
        expect(page.locator("[data-summary]")).to_contain_text("billing")
        sample = page.locator("ul[data-sample] a").all_text_contents()
        assert sample
        assert set(sample) <= set(BILLING)
        page.locator("#rate").fill("20")
        page.get_by_role("button", name=f"Start replay of {len(BILLING)} tasks").click()

        job_box = page.locator("[data-job-api]")
        expect(page.locator("[data-flash]")).to_have_text("Job started.")
        assert job_box.get_attribute("data-job-final") == "false"  # 30 at 20/s: 1.5 s
        expect(page.locator("[data-job-live]")).to_be_visible()  # the page follows it
        expect(job_box).to_have_attribute("data-job-state", "done", timeout=WAIT)
        expect(job_box).to_have_attribute("data-job-final", "true")  # reloaded when done
        expect(page.locator("[data-job-field=state]")).to_have_text("done")
        expect(page.locator("[data-job-field=done]")).to_have_text(str(len(BILLING)))
        expect(page.locator("[data-job-field=matched]")).to_have_text(str(len(BILLING)))
        expect(page.locator("[data-job-field=percent]")).to_have_text("100.0%")
        job_id = job_box.get_attribute("data-job-id")
        assert job_id is not None
        job = console.call(lambda dlq: dlq.get_job(job_id))
        assert (job.kind, job.state, job.rate) == (JobKind.REPLAY, JobState.DONE, 20)
        assert job.done == job.matched == len(BILLING)

        # signed out, every page leads to the sign-in form again
        page.locator("form[data-form=sign-out] button").click()
        expect(page.locator("main[data-page=login]")).to_be_visible()
        expect(page.locator("[data-flash]")).to_have_text("Signed out.")
        page.goto("/tasks")
        expect(page).to_have_url(re.compile(r"/login\?next=%2Ftasks$"))
        expect(page.locator("[data-principal]")).to_have_count(0)
        watched.assert_clean()


async def seed_reports(dlq: DeadLetterQueue) -> tuple[str, str, str]:
    """Three report tasks, a dry run and a queued job (that nobody runs) over them:
    (fingerprint, dry run id, job id)."""
    for n, task_id in enumerate(REPORTS):
        await dlq.enqueue(task_id, {"report": n}, error=render_timeout(), workflow="reports")
    task = await dlq.get_task(REPORTS[0])
    assert task is not None
    assert task.error_fingerprint is not None
    reports = TaskFilter(workflow=["reports"])
    dry = await dlq.start_job("archive", reports, dry_run=True)
    queued = await dlq.start_job("replay", reports, rate=1)
    return task.error_fingerprint, dry.job_id, queued.job_id


async def snapshot(dlq: DeadLetterQueue) -> tuple[list[Any], list[Any], int]:
    """The reports as stored, every job's state, the lifetime count of archives."""
    tasks = [await dlq.get_task(task_id) for task_id in REPORTS]
    jobs = [(job.job_id, job.state, job.done) for job in await dlq.list_jobs(limit=1000)]
    stats = await dlq.get_statistics()
    return tasks, sorted(jobs), stats["lifetime_stats"]["archived"]


FETCH = """async ([url, csrf]) => {
  const headers = {"Content-Type": "application/x-www-form-urlencoded"};
  if (csrf) headers["X-CSRF-Token"] = csrf;
  const body = new URLSearchParams({action: "archive", kind: "archive", workflow: "reports"});
  if (csrf) body.set("csrf", csrf);
  const answer = await fetch(url, {method: "POST", headers, body, credentials: "same-origin"});
  return answer.status;
}"""


def test_a_viewer_sees_no_action_and_its_forged_posts_are_refused(
    browser: Browser, console: LiveConsole
) -> None:
    fingerprint, dry_id, job_id = console.call(seed_reports)
    before = console.call(snapshot)
    task_path = task_url("/tasks/", REPORTS[0])
    with signed_in(browser, console, VIEWER_TOKEN) as (page, watched):
        expect(page.locator("[data-principal]")).to_have_attribute("data-role", "viewer")
        pages = {
            "/": "overview",
            "/tasks": "tasks",
            task_path: "task",
            "/groups": "groups",
            task_url("/groups/", fingerprint): "group",
            "/jobs": "jobs",
            f"/jobs/{dry_id}": "preview",
            f"/jobs/{job_id}": "job",
        }
        for path, name in pages.items():
            page.goto(path)
            expect(page.locator(f"main[data-page={name}]")).to_be_visible()
            assert page.locator("[data-action]").count() == 0, path
            posting = page.eval_on_selector_all(
                "form", "forms => forms.filter(f => f.method === 'post').map(f => f.dataset.form)"
            )
            assert posting == ["sign-out"], path
        for label in ("Pause", "Resume", "Cancel"):  # the queued job's page, last
            assert page.get_by_role("button", name=label).count() == 0

        csrf = page.locator("form[data-form=sign-out] input[name=csrf]").input_value()
        targets = [task_path, "/jobs/preview", f"/api/v1{task_path}/archive"]
        for target in targets:
            for token in (None, csrf):
                form: dict[str, str | float | bool] = {
                    "action": "archive",
                    "kind": "archive",
                    "workflow": "reports",
                }
                if token is not None:
                    form["csrf"] = token
                headers = {} if token is None else {"X-CSRF-Token": token}
                answer = page.request.post(target, form=form, headers=headers)
                assert answer.status == 403, (target, token, answer.status)
                assert page.evaluate(FETCH, [target, token]) == 403, (target, token)
        watched.assert_clean()
    assert console.call(snapshot) == before
    statuses = {task.status for task in before[0] if task is not None}
    assert statuses == {DeadLetterStatus.PENDING}
