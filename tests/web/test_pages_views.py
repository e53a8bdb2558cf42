"""The overview's numbers and chart, and what every page shares: the CSP and its
own assets only, no action for a viewer, links under the mount point, the API docs.

Every page is read as a signed-in browser would (a session from ``POST /login``);
the numbers are compared with the queue's own answers, and the markup through the
``data-*`` hooks the browser tests use as well.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.routing import Mount

from mahavishnu_dlq import DeadLetterQueue
from mahavishnu_dlq.testing import FakeClock
from mahavishnu_dlq.web import create_app
from mahavishnu_dlq.web.app import CONTENT_SECURITY_POLICY
from mahavishnu_dlq.web.ids import task_url

from .conftest import OPERATOR_TOKEN, VIEWER_TOKEN, web_settings
from .pages_support import Page, bad_input, client, failure, seed, session

pytestmark = pytest.mark.anyio


async def spread(dlq: DeadLetterQueue, clock: FakeClock) -> None:
    """Failures over the last days: network ones every 5 hours, validation ones daily."""
    for hour in range(0, 150, 5):
        await dlq.enqueue(f"net-{hour:03d}", {"h": hour}, error=failure(), workflow="sync")
        if hour % 24 == 0:
            await dlq.enqueue(f"val-{hour:03d}", {}, error=bad_input(), workflow="signup")
        clock.advance(timedelta(hours=5))


async def test_the_overview_counts_are_the_queues(
    app: FastAPI, dlq: DeadLetterQueue, clock: FakeClock
) -> None:
    await spread(dlq, clock)
    await dlq.archive_task("net-000")
    async with session(app, VIEWER_TOKEN) as browser:
        answer = await browser.get("/")
    assert answer.status_code == 200
    page = Page(answer.text)
    stats = await dlq.get_statistics()
    for status, count in stats["status_breakdown"].items():
        assert page.stat(status) == str(count)
    for key in ("queue_size", "max_size", "total_stored", "unreadable", "utilization_percent"):
        assert page.stat(key) == str(stats[key])
    assert float(page.stat("oldest_pending_age_seconds")) == stats["oldest_pending_age_seconds"]
    for key, value in stats["lifetime_stats"].items():
        assert page.stat(f"lifetime.{key}") == str(value)
    assert page.stat("backend") == "memory"
    assert page.stat("is_processor_running") == "false"
    meter = page.one("meter")
    assert meter.attrs["value"] == str(stats["queue_size"])
    assert meter.attrs["max"] == str(stats["max_size"])
    assert page.one("main").attrs["data-refresh-seconds"] == "10"
    assert page.one("a", data_nav="overview").attrs["aria-current"] == "page"


async def test_the_overview_charts_have_one_bar_group_per_bucket(
    app: FastAPI, dlq: DeadLetterQueue, clock: FakeClock
) -> None:
    await spread(dlq, clock)
    async with session(app, VIEWER_TOKEN) as browser:
        page = Page((await browser.get("/")).text)
    for key, hours, buckets in (("24h", 24, 24), ("7d", 168, 28)):
        figure = page.one("figure", data_chart=key)
        assert figure.attrs["data-buckets"] == str(buckets)
        svg = [e for e in page.find_all("svg", role="img") if "chart-svg" in e.attrs["class"]]
        assert all(e.attrs["aria-label"].startswith("Failures over the last") for e in svg)
        expected = await dlq.failure_histogram(hours=hours, buckets=buckets)
        totals = [sum(b.by_category.values()) for b in expected]
        assert figure.attrs["data-total"] == str(sum(totals))
    bars = page.find_all("g", data_bucket=None)
    assert len(bars) == 24 + 28
    day = bars[:24]
    week = bars[24:]
    day_expected = await dlq.failure_histogram(hours=24, buckets=24)
    assert [b.attrs["data-total"] for b in day] == [
        str(sum(bucket.by_category.values())) for bucket in day_expected
    ]
    assert sum(int(b.attrs["data-total"]) for b in week) == 30 + 2  # every one of 150 hours
    segments = page.find_all("rect", data_category=None)
    assert {s.attrs["data-category"] for s in segments} == {"network", "validation"}
    assert all(f"cat-{s.attrs['data-category']}" in s.attrs["class"] for s in segments)
    assert page.find_all("title")  # tooltips
    legend = [e.text for e in page.find_all("ul", **{"class": "legend"})]
    assert all("network" in text and "permanent" in text for text in legend)


async def test_the_overview_lists_top_groups_and_open_breakers(
    app: FastAPI, dlq: DeadLetterQueue
) -> None:
    await seed(dlq, 3, workflow="sync")
    await dlq.enqueue("v", {}, error=bad_input(), workflow="signup")
    await dlq.open_breaker("sync", reason="down")
    async with session(app, VIEWER_TOKEN) as browser:
        page = Page((await browser.get("/")).text)
    groups = await dlq.fingerprint_groups(limit=5)
    rows = page.find_all("tr", data_group_row=None)
    assert len(rows) == len(groups) == 2
    hrefs = [link for link in page.links() if link.startswith("/groups/")]
    assert hrefs == [task_url("/groups/", group.fingerprint) for group in groups]
    breaker = page.one("tr", data_breaker="sync")
    assert "open" in breaker.text


async def test_every_page_carries_the_csp_and_loads_only_its_own_assets(
    app: FastAPI, dlq: DeadLetterQueue
) -> None:
    ids = await seed(dlq, 2)
    job = await dlq.start_job("replay", None, dry_run=True)
    real = await dlq.start_job("archive", None)
    group = (await dlq.fingerprint_groups())[0].fingerprint
    paths = [
        "/",
        "/tasks",
        f"/tasks/{ids[0]}",
        f"/tasks/{ids[0]}?confirm=retry",
        "/groups",
        f"/groups/{group}",
        "/jobs",
        f"/jobs/{job.job_id}",
        f"/jobs/{real.job_id}",
        "/api/v1/docs",
        "/tasks/nope",
    ]
    async with session(app, OPERATOR_TOKEN) as browser:
        for path in paths:
            answer = await browser.get(path)
            assert answer.status_code == (404 if path == "/tasks/nope" else 200), path
            assert answer.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
            assert answer.headers["content-type"].startswith("text/html")
            assert answer.headers["cache-control"] == "no-store"
            page = Page(answer.text)
            assert not [e for e in page.elements if "style" in e.attrs], path
            assert not [e for e in page.elements if any(a.startswith("on") for a in e.attrs)]
            scripts = page.find_all("script")
            assert scripts
            assert all(s.attrs.get("src", "").startswith("/static/") for s in scripts), path
            assert "<style" not in answer.text
            sheets = page.find_all("link", rel="stylesheet")
            assert all(s.attrs["href"].startswith("/static/") for s in sheets)
            assert all("?v=" in s.attrs["href"] for s in sheets)
        for asset in ("app.css", "app.js", "docs.js", "vendor/swagger-ui/swagger-ui-bundle.js"):
            served = await browser.get(f"/static/{asset}")
            assert served.status_code == 200, asset
            assert "no-store" not in served.headers.get("cache-control", "")


async def test_a_viewer_sees_no_action_anywhere(app: FastAPI, dlq: DeadLetterQueue) -> None:
    ids = await seed(dlq, 2)
    job = await dlq.start_job("replay", None)
    dry = await dlq.start_job("replay", None, dry_run=True)
    group = (await dlq.fingerprint_groups())[0].fingerprint
    paths = ["/", "/tasks", f"/tasks/{ids[0]}", "/groups", f"/groups/{group}", "/jobs"]
    paths += [f"/jobs/{job.job_id}", f"/jobs/{dry.job_id}"]
    async with session(app, VIEWER_TOKEN) as browser:
        for path in paths:
            page = Page((await browser.get(path)).text)
            assert not page.find_all(data_action=None), path
            posts = [f for f in page.find_all("form") if f.attrs.get("method") == "post"]
            assert [f.attrs["action"] for f in posts] == ["/logout"], path
            assert not page.find_all("dialog"), path
            assert not page.find_all("input", type="checkbox", name="task_id"), path
        confirm = await browser.get(f"/tasks/{ids[0]}?confirm=archive")
        assert confirm.status_code == 403
    async with session(app, OPERATOR_TOKEN) as browser:
        page = Page((await browser.get(f"/tasks/{ids[0]}")).text)
        assert {e.attrs["data-action"] for e in page.find_all(data_action=None)} >= {
            "retry",
            "archive",
            "retry-link",
            "archive-link",
        }


async def test_a_mounted_console_writes_every_link_under_its_prefix(dlq: DeadLetterQueue) -> None:
    ids = await seed(dlq, 3)
    await dlq.enqueue("with/slash", {}, error=failure())
    job = await dlq.start_job("replay", None)
    group = (await dlq.fingerprint_groups())[0].fingerprint
    host = Starlette(routes=[Mount("/dlq", create_app(dlq))])
    paths = ["/", "/tasks", f"/tasks/{ids[0]}", "/groups", f"/groups/{group}", "/jobs"]
    paths += [f"/jobs/{job.job_id}", "/api/v1/docs", f"/tasks/{ids[0]}?confirm=retry"]
    async with session(host, OPERATOR_TOKEN, root="/dlq") as browser:
        for path in paths:
            answer = await browser.get(f"/dlq{path}")
            assert answer.status_code == 200, path
            page = Page(answer.text)
            links = [link for link in page.links() if link.startswith("/")]
            assert links, path
            assert all(link.startswith("/dlq/") or link == "/dlq" for link in links), (path, links)
            for asset in page.find_all("script") + page.find_all("link", rel="stylesheet"):
                href = asset.attrs.get("src") or asset.attrs["href"]
                assert (await browser.get(href)).status_code == 200, href
        tasks = Page((await browser.get("/dlq/tasks")).text)
        assert "/dlq/tasks/with%2Fslash" in tasks.links()
        slash = await browser.get("/dlq/tasks/with%2Fslash")
        assert Page(slash.text).one(data_task_id=None).text == "with/slash"
        job_page = Page((await browser.get(f"/dlq/jobs/{job.job_id}")).text)
        assert job_page.one(data_job_api=None).attrs["data-job-api"] == (
            f"/dlq/api/v1/jobs/{job.job_id}"
        )
        docs = Page((await browser.get("/dlq/api/v1/docs")).text)
        assert docs.one(id="swagger-ui").attrs["data-openapi-url"] == "/dlq/api/v1/openapi.json"


async def test_the_api_docs_page_loads_the_shipped_swagger_ui(app: FastAPI) -> None:
    async with client(app) as browser:
        answer = await browser.get("/api/v1/docs")
    assert answer.status_code == 200
    page = Page(answer.text)
    sources = [s.attrs["src"].split("?")[0] for s in page.find_all("script")]
    assert sources == ["/static/vendor/swagger-ui/swagger-ui-bundle.js", "/static/docs.js"]
    box = page.one(id="swagger-ui")
    assert box.attrs["data-openapi-url"] == "/api/v1/openapi.json"
    assert box.attrs["data-csrf"] == ""  # nobody signed in


async def test_refresh_can_be_turned_off(dlq: DeadLetterQueue) -> None:
    dlq.settings = web_settings(refresh_seconds=0)
    app = create_app(dlq)
    async with session(app, VIEWER_TOKEN) as browser:
        page = Page((await browser.get("/")).text)
    assert page.one("main").attrs["data-refresh-seconds"] == "0"
    assert not page.find_all(data_refresh_control=None)
