"""Hostile text in a real browser: stored markup never runs, it only ever reads as text.

Tasks whose id, error, traceback, workflow, payload and metadata carry markup an
attacker would like to see run are shown on every page that can show them, by a
real Chromium, on each store. No dialog opens, no element of theirs exists, no
script but the console's own is on a page, the Content-Security-Policy is never
even tested (no violation is reported), and the text reads exactly as stored.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from playwright.sync_api import Browser, Page, expect

from mahavishnu_dlq import DeadLetterQueue
from mahavishnu_dlq.models import DeadLetterStatus, TaskFilter
from mahavishnu_dlq.web.ids import task_url

from .browser_support import STORES, LiveConsole, chromium, served, signed_in
from .conftest import OPERATOR_TOKEN
from .pages_support import XSS_IMG, XSS_SCRIPT

XSS_SVG = "\"'><svg onload=alert(3)>"
PAYLOADS = [XSS_IMG, XSS_SCRIPT, XSS_SVG]
IDS = [f"xss-{n} {payload}?n={n}#frag" for n, payload in enumerate(PAYLOADS)]
WORKFLOW = f"wf-{XSS_SVG}"

#: Everything an injection could have made, as the browser sees the document.
INJECTED = """() => ({
  img: document.querySelectorAll("img[src=x], img[onerror]").length,
  svg: document.querySelectorAll("svg[onload]").length,
  handlers: [...document.querySelectorAll("*")].flatMap((el) =>
    [...el.attributes].filter((a) => a.name.startsWith("on")).map((a) => `${el.tagName} ${a.name}`)
  ),
  scripts: [...document.scripts].map((s) => s.src || "inline: " + s.textContent.slice(0, 80)),
})"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    yield from chromium()


@pytest.fixture(scope="module", params=STORES)
def console(request: pytest.FixtureRequest) -> Iterator[LiveConsole]:
    yield from served(request)


def hostile_error(payload: str) -> BaseException:
    def deeper() -> None:
        raise ValueError(payload)

    try:
        deeper()
    except ValueError as caught:
        return caught
    raise AssertionError("unreachable")


async def seed_hostile(dlq: DeadLetterQueue) -> dict[str, Any]:
    """One task per payload, each retried once (an attempt failing with it too), a
    job that failed on them and a dry run listing them."""

    async def refuse(task: dict[str, Any], repos: list[str]) -> None:
        raise ValueError(task["why"])

    dlq.register_handler(WORKFLOW, refuse)
    for task_id, payload in zip(IDS, PAYLOADS, strict=True):
        await dlq.enqueue(
            task_id,
            {payload: payload, "why": payload},
            [payload],
            hostile_error(payload),
            workflow=WORKFLOW,
            metadata={"note": payload},
        )
        await dlq.retry_task(task_id)
    mine = TaskFilter(workflow=[WORKFLOW])
    job = await dlq.start_job("retry", mine)
    await dlq.run_job(job.job_id)
    dry = await dlq.start_job("archive", mine, dry_run=True)
    groups = await dlq.fingerprint_groups(workflow=[WORKFLOW], status=None)
    return {"job": job.job_id, "dry": dry.job_id, "groups": [g.fingerprint for g in groups]}


def assert_inert(page: Page, origin: str, where: str) -> None:
    found = page.evaluate(INJECTED)
    assert found["img"] == 0, where
    assert found["svg"] == 0, where
    assert found["handlers"] == [], where
    assert found["scripts"], where
    assert all(src.startswith(f"{origin}/static/") for src in found["scripts"]), (where, found)


def test_hostile_text_reads_as_text_and_never_runs(browser: Browser, console: LiveConsole) -> None:
    seeded = console.call(seed_hostile)
    assert len(seeded["groups"]) == len(PAYLOADS)
    with signed_in(browser, console, OPERATOR_TOKEN) as (page, watched):
        lists = [
            "/",
            "/tasks",
            f"/tasks?workflow={quote(WORKFLOW)}&text={quote(XSS_SCRIPT)}",
            "/groups",
            "/jobs",
            f"/jobs/{seeded['job']}",
            f"/jobs/{seeded['dry']}",
        ]
        for path in lists:
            page.goto(path)
            expect(page.locator("main[data-page]")).to_be_visible()
            assert_inert(page, console.url, path)
        page.goto(f"/tasks?workflow={quote(WORKFLOW)}")
        expect(page.locator("a[data-task-link]")).to_have_text(sorted(IDS, reverse=True))
        expect(page.locator("#f-workflow")).to_have_value(WORKFLOW)
        page.goto(f"/jobs/{seeded['dry']}")
        assert sorted(page.locator("ul[data-sample] a").all_text_contents()) == IDS

        for task_id, payload in zip(IDS, PAYLOADS, strict=True):
            page.goto(task_url("/tasks/", task_id))
            assert_inert(page, console.url, task_id)
            expect(page.locator("[data-task-id]")).to_have_text(task_id)
            expect(page.locator("pre[data-field=error]")).to_have_text(payload)
            expect(page.locator("pre[data-field=traceback]")).to_contain_text(
                f"ValueError: {payload}"
            )
            data = json.loads(page.locator("pre[data-field=task]").inner_text())
            assert data == {payload: payload, "why": payload}
            metadata = json.loads(page.locator("pre[data-field=metadata]").inner_text())
            assert metadata["note"] == payload
            expect(page.locator("tr[data-attempt='1']")).to_contain_text(payload)
            page.get_by_role("link", name="Archive", exact=True).click()  # the dialog shows the id
            expect(page.locator("dialog#confirm-archive .confirm-id")).to_have_text(task_id)
            page.locator("dialog#confirm-archive [data-dialog-close]").click()
            expect(page.locator("dialog#confirm-archive")).to_be_hidden()
            page.locator("a[data-fingerprint-link]").click()
            expect(page.locator("main[data-page=group]")).to_be_visible()
            assert_inert(page, console.url, f"group of {task_id}")
            expect(page.locator("pre[data-field=example_error]")).to_have_text(payload)
            expect(page.locator("a[data-task-link]")).to_have_text(task_id)

        # an action on a hostile id: its redirect leads back to the very task
        page.goto(task_url("/tasks/", IDS[-1]))
        page.get_by_role("link", name="Archive", exact=True).click()
        page.locator("dialog#confirm-archive").get_by_role("button", name="Yes, archive").click()
        expect(page.locator("[data-flash]")).to_have_text("Archived.")
        expect(page.locator("[data-task-id]")).to_have_text(IDS[-1])
        assert_inert(page, console.url, "after the redirect")
        watched.assert_clean()
    archived = console.call(lambda dlq: dlq.get_task(IDS[-1]))
    assert archived is not None
    assert archived.status is DeadLetterStatus.ARCHIVED
