"""Signing in and out of the console, and who may see and do what on its pages."""

from __future__ import annotations

import logging

import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.routing import Mount

from mahavishnu_dlq import DeadLetterQueue
from mahavishnu_dlq.web import create_app
from mahavishnu_dlq.web.auth import SESSION_COOKIE
from mahavishnu_dlq.web.pages import local_target

from .conftest import OPERATOR_TOKEN, VIEWER_TOKEN
from .pages_support import ORIGIN, Page, client, csrf_of, post_form, seed, session

pytestmark = pytest.mark.anyio

PAGES = ["/", "/tasks", "/groups", "/jobs", "/tasks/task-000", "/jobs/job-x"]


async def test_the_sign_in_form_is_a_labelled_form_keeping_next(app: FastAPI) -> None:
    async with client(app) as browser:
        answer = await browser.get("/login", params={"next": "/tasks?status=pending"})
    assert answer.status_code == 200
    page = Page(answer.text)
    form = page.one("form", data_form="sign-in")
    assert form.attrs["method"] == "post"
    assert form.attrs["action"] == "/login"
    assert page.one("label", **{"for": "token"}).text == "Token"
    assert page.one("input", id="token").attrs["type"] == "password"
    assert page.one("input", name="next").attrs["value"] == "/tasks?status=pending"
    assert not page.find_all(data_nav=None)  # no navigation before signing in


@pytest.mark.parametrize("path", PAGES)
async def test_a_page_without_a_session_redirects_to_sign_in(app: FastAPI, path: str) -> None:
    async with client(app) as browser:
        answer = await browser.get(path, params={"x": "1"})
        assert answer.status_code == 303
        assert answer.headers["location"].startswith("/login?next=")
        follow = await browser.get(answer.headers["location"])
    assert Page(follow.text).one("input", name="next").attrs["value"] == f"{path}?x=1"


async def test_signing_in_sets_a_strict_http_only_session_and_goes_to_next(
    app: FastAPI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mahavishnu_dlq.web")
    async with client(app) as browser:
        answer = await browser.post(
            "/login",
            data={"token": OPERATOR_TOKEN, "next": "/tasks?status=pending"},
            headers={"Origin": ORIGIN},
        )
        assert answer.status_code == 303
        assert answer.headers["location"] == "/tasks?status=pending"
        cookie = answer.headers["set-cookie"]
        assert cookie.startswith(f"{SESSION_COOKIE}=")
        for part in ("HttpOnly", "SameSite=strict", "Path=/", "Max-Age=43200"):
            assert part in cookie
        assert "Secure" not in cookie  # plain http here
        overview = await browser.get("/")
    assert overview.status_code == 200
    who = Page(overview.text).one(data_principal="alice")
    assert who.attrs["data-role"] == "operator"
    signed_in = [r for r in caplog.records if getattr(r, "web_action", None) == "sign-in"]
    assert [r.token_name for r in signed_in] == ["alice"]  # type: ignore[attr-defined]
    assert OPERATOR_TOKEN not in caplog.text


async def test_over_https_the_cookie_is_secure(app: FastAPI) -> None:
    async with client(app, "https://console.example") as browser:
        answer = await browser.post(
            "/login", data={"token": VIEWER_TOKEN}, headers={"Origin": "https://console.example"}
        )
    assert answer.status_code == 303
    assert "Secure" in answer.headers["set-cookie"]


async def test_a_wrong_token_shows_the_form_again_with_one_message(
    app: FastAPI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mahavishnu_dlq.web")
    async with client(app) as browser:
        answer = await browser.post(
            "/login", data={"token": "not-a-token-at-all-x", "next": "/jobs"}, headers={}
        )
    assert answer.status_code == 401
    assert "set-cookie" not in answer.headers
    page = Page(answer.text)
    assert len(page.find_all(role="alert")) == 1
    assert "not known" in page.one(data_error="sign-in").text
    assert page.one("input", name="next").attrs["value"] == "/jobs"
    assert page.one("input", id="token").attrs["aria-invalid"] == "true"
    assert "not-a-token-at-all-x" not in answer.text
    assert any(getattr(r, "outcome", None) == "refused" for r in caplog.records)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/tasks?status=pending", "/tasks?status=pending"),
        ("/", "/"),
        ("//evil.example/x", "/"),
        ("http://evil.example/", "/"),
        ("https:/evil.example", "/"),
        ("/\\evil.example", "/"),
        ("\\\\evil.example", "/"),
        ("javascript:alert(1)", "/"),
        ("/ok\r\nSet-Cookie: x=1", "/"),
        ("", "/"),
        ("tasks", "/"),
    ],
)
def test_next_is_a_local_path_only(target: str, expected: str) -> None:
    assert local_target(target) == expected


@pytest.mark.parametrize("target", ["//evil.example/", "http://evil.example/x", "/\\evil"])
async def test_sign_in_never_redirects_to_another_site(app: FastAPI, target: str) -> None:
    async with client(app) as browser:
        answer = await browser.post("/login", data={"token": OPERATOR_TOKEN, "next": target})
    assert answer.status_code == 303
    assert answer.headers["location"] == "/"


async def test_the_sign_in_url_with_a_token_signs_in_and_drops_the_token(app: FastAPI) -> None:
    async with client(app) as browser:
        answer = await browser.get("/login", params={"token": OPERATOR_TOKEN})
        assert answer.status_code == 303
        assert answer.headers["location"] == "/"
        assert SESSION_COOKIE in answer.headers["set-cookie"]
        assert (await browser.get("/")).status_code == 200
        again = await browser.get("/login")  # signed in: the form is not needed
    assert again.status_code == 303
    async with client(app) as other:
        wrong = await other.get("/login", params={"token": "wrong-token-0123456789"})
    assert wrong.status_code == 401
    assert "set-cookie" not in wrong.headers


async def test_a_sign_in_link_on_another_site_is_refused(app: FastAPI) -> None:
    async with client(app) as browser:
        answer = await browser.get(
            "/login",
            params={"token": OPERATOR_TOKEN},
            headers={"Sec-Fetch-Site": "cross-site", "Referer": "https://evil.example/"},
        )
    assert answer.status_code == 403
    assert "set-cookie" not in answer.headers


async def test_a_sign_in_post_from_another_origin_is_refused(app: FastAPI) -> None:
    async with client(app) as browser:
        answer = await browser.post(
            "/login", data={"token": OPERATOR_TOKEN}, headers={"Origin": "https://evil.example"}
        )
    assert answer.status_code == 403
    assert "set-cookie" not in answer.headers


async def test_signing_out_needs_the_csrf_token_and_clears_the_cookie(
    app: FastAPI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mahavishnu_dlq.web")
    async with session(app, VIEWER_TOKEN) as browser:
        overview = await browser.get("/")
        form = Page(overview.text).one("form", data_form="sign-out")
        assert form.attrs["action"] == "/logout"
        refused = await post_form(browser, "/logout", {})
        assert refused.status_code == 403
        wrong = await post_form(browser, "/logout", {"csrf": "nope"})
        assert wrong.status_code == 403
        answer = await post_form(browser, "/logout", {"csrf": csrf_of(overview.text)})
        assert answer.status_code == 303
        assert answer.headers["location"] == "/login?done=signed-out"
        assert "Max-Age=0" in answer.headers["set-cookie"]
        assert SESSION_COOKIE not in browser.cookies
        after = await browser.get("/")
        assert after.status_code == 303
        shown = await browser.get("/login?done=signed-out")
    assert Page(shown.text).one(data_flash=None).text == "Signed out."
    actions = [getattr(r, "web_action", None) for r in caplog.records]
    assert "sign-out" in actions


async def test_a_mounted_console_signs_in_under_its_prefix(dlq: DeadLetterQueue) -> None:
    host = Starlette(routes=[Mount("/dlq", create_app(dlq))])
    async with client(host) as browser:
        anonymous = await browser.get("/dlq/tasks")
        assert anonymous.status_code == 303
        assert anonymous.headers["location"] == "/dlq/login?next=%2Ftasks"
        form = await browser.get(anonymous.headers["location"])
        assert Page(form.text).one("form", data_form="sign-in").attrs["action"] == "/dlq/login"
        answer = await browser.post(
            "/dlq/login",
            data={"token": OPERATOR_TOKEN, "next": "/tasks"},
            headers={"Origin": ORIGIN},
        )
        assert answer.status_code == 303
        assert answer.headers["location"] == "/dlq/tasks"
        assert "Path=/dlq" in answer.headers["set-cookie"]
        assert (await browser.get("/dlq/tasks")).status_code == 200


async def test_a_bearer_token_reads_pages_too(
    viewer: httpx.AsyncClient, dlq: DeadLetterQueue
) -> None:
    await seed(dlq, 1)
    answer = await viewer.get("/tasks")
    assert answer.status_code == 200
    page = Page(answer.text)
    assert page.one(data_principal="dashboards").attrs["data-role"] == "viewer"
    assert not page.find_all("form", data_form="sign-out")  # nothing to sign out of
