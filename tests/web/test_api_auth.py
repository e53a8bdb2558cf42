"""Who may do what: bearer tokens, sessions, roles, CSRF and origin checks, the
action log, and the ``web`` settings that hold the tokens."""

from __future__ import annotations

import json
import logging
import time

import httpx
import pytest
from fastapi import FastAPI

from mahavishnu_dlq import DeadLetterQueue
from mahavishnu_dlq.errors import ConfigurationError
from mahavishnu_dlq.settings import DLQSettings
from mahavishnu_dlq.storage.memory import MemoryStore
from mahavishnu_dlq.web import create_app
from mahavishnu_dlq.web.auth import SESSION_COOKIE, TokenBook

from .conftest import OPERATOR_TOKEN, TOKENS, VIEWER_TOKEN, ClientFor, web_settings

pytestmark = pytest.mark.anyio

READS = [
    "/api/v1/stats",
    "/api/v1/tasks",
    "/api/v1/tasks/some-id",
    "/api/v1/fingerprints",
    "/api/v1/failures",
    "/api/v1/jobs",
    "/api/v1/jobs/job-1",
]
ACTIONS = [
    ("/api/v1/tasks/t1/retry", None),
    ("/api/v1/tasks/t1/archive", None),
    ("/api/v1/tasks/actions", {"action": "archive", "task_ids": ["t1"]}),
    ("/api/v1/jobs", {"kind": "archive"}),
    ("/api/v1/jobs/job-1/pause", None),
    ("/api/v1/jobs/job-1/resume", None),
    ("/api/v1/jobs/job-1/cancel", None),
]


def failure() -> BaseException:
    try:
        raise ConnectionError("refused")
    except ConnectionError as caught:
        return caught


def session_of(app: FastAPI, token: str) -> str:
    book: TokenBook = app.state.dlq_web.tokens
    entry = book.find(token)
    assert entry is not None
    return book.session_for(entry)


async def test_without_a_token_everything_but_health_is_401(
    anonymous: httpx.AsyncClient,
) -> None:
    for path in READS:
        answer = await anonymous.get(path)
        assert answer.status_code == 401, path
        assert answer.json()["error"]["type"] == "unauthorized"
        assert answer.headers["www-authenticate"] == "Bearer"
    for path, body in ACTIONS:
        assert (await anonymous.post(path, json=body)).status_code == 401, path
    assert (await anonymous.get("/api/v1/health")).status_code == 200


@pytest.mark.parametrize(
    "header", ["Bearer not-a-known-token-at-all", f"Basic {OPERATOR_TOKEN}", "Bearer", "token"]
)
async def test_unknown_or_malformed_credentials_are_401(client_for: ClientFor, header: str) -> None:
    client = client_for(None)
    answer = await client.get("/api/v1/stats", headers={"Authorization": header})
    assert answer.status_code == 401
    assert OPERATOR_TOKEN not in answer.text


async def test_a_viewer_reads_but_every_action_is_403(
    viewer: httpx.AsyncClient, dlq: DeadLetterQueue
) -> None:
    await dlq.enqueue("t1", {}, error=failure())
    for path in READS[:3]:
        assert (await viewer.get(path)).status_code in (200, 404), path
    for path, body in ACTIONS:
        answer = await viewer.post(path, json=body)
        assert answer.status_code == 403, path
        assert answer.json()["error"]["type"] == "forbidden"
        assert "viewer" in answer.json()["error"]["message"]
    task = await dlq.get_task("t1")
    assert task is not None
    assert task.status.value == "pending"  # nothing the viewer sent changed it


async def test_a_session_reads_and_acts_only_with_its_csrf_token(
    app: FastAPI, client_for: ClientFor, dlq: DeadLetterQueue
) -> None:
    await dlq.enqueue("t1", {}, error=failure())
    client = client_for(None)
    cookie = session_of(app, OPERATOR_TOKEN)
    client.cookies.set(SESSION_COOKIE, cookie)
    assert (await client.get("/api/v1/stats")).status_code == 200
    no_csrf = await client.post("/api/v1/tasks/t1/archive")
    assert no_csrf.status_code == 403
    assert no_csrf.json()["error"]["type"] == "csrf"
    wrong = await client.post("/api/v1/tasks/t1/archive", headers={"X-CSRF-Token": "guess"})
    assert wrong.status_code == 403
    principal = app.state.dlq_web.tokens.from_session(cookie)
    csrf = {"X-CSRF-Token": principal.csrf}
    other_origin = await client.post(
        "/api/v1/tasks/t1/archive", headers={**csrf, "Origin": "http://evil.example"}
    )
    assert other_origin.status_code == 403
    cross_site = await client.post(
        "/api/v1/tasks/t1/archive", headers={**csrf, "Sec-Fetch-Site": "cross-site"}
    )
    assert cross_site.status_code == 403
    other_referer = await client.post(
        "/api/v1/tasks/t1/archive", headers={**csrf, "Referer": "https://evil.example/x"}
    )
    assert other_referer.status_code == 403
    task = await dlq.get_task("t1")
    assert task is not None
    assert task.status.value == "pending"
    same_origin = await client.post(
        "/api/v1/tasks/t1/archive", headers={**csrf, "Origin": "http://testserver"}
    )
    assert same_origin.status_code == 200
    task = await dlq.get_task("t1")
    assert task is not None
    assert task.status.value == "archived"


async def test_a_bearer_request_needs_no_csrf_token(
    operator: httpx.AsyncClient, dlq: DeadLetterQueue
) -> None:
    await dlq.enqueue("t1", {}, error=failure())
    answer = await operator.post("/api/v1/tasks/t1/archive", headers={"Origin": "null"})
    assert answer.status_code == 200


async def test_forged_expired_and_revoked_sessions_are_refused(
    app: FastAPI, client_for: ClientFor, dlq: DeadLetterQueue
) -> None:
    book: TokenBook = app.state.dlq_web.tokens
    entry = book.find(OPERATOR_TOKEN)
    assert entry is not None
    good = book.session_for(entry)
    name, expires, nonce, signature = good.split(".")
    viewer_entry = book.find(VIEWER_TOKEN)
    assert viewer_entry is not None
    viewer_name = book.session_for(viewer_entry).split(".")[0]
    forged = [
        f"{viewer_name}.{expires}.{nonce}.{signature}",  # another name, same signature
        f"{name}.{int(expires) + 10**6}.{nonce}.{signature}",  # a later expiry
        f"{name}.{expires}.{nonce}.{signature[:-2]}xx",
        "garbage",
        "a.b.c.d",
        "x" * 600,
        book.session_for(entry, now=time.time() - 13 * 3600),  # expired (12 h sessions)
    ]
    client = client_for(None)
    for value in forged:
        client.cookies.set(SESSION_COOKIE, value)
        assert (await client.get("/api/v1/stats")).status_code == 401, value
    revoked = create_app(
        dlq, settings=web_settings(tokens=[t for t in TOKENS if t["name"] != "alice"])
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=revoked), base_url="http://testserver"
    ) as other:
        other.cookies.set(SESSION_COOKIE, good)
        assert (await other.get("/api/v1/stats")).status_code == 401


async def test_with_no_tokens_configured_only_health_answers() -> None:
    dlq = DeadLetterQueue(MemoryStore(), settings=DLQSettings(store="memory"))
    await dlq.connect()
    try:
        app = create_app(dlq)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://testserver",
            headers={"Authorization": "Bearer anything-at-all-long-enough"},
        ) as client:
            assert (await client.get("/api/v1/health")).status_code == 200
            assert (await client.get("/api/v1/stats")).status_code == 401
    finally:
        await dlq.stop()


async def test_every_action_is_logged_with_the_token_name(
    operator: httpx.AsyncClient, dlq: DeadLetterQueue, caplog: pytest.LogCaptureFixture
) -> None:
    await dlq.enqueue("t1", {}, error=failure())
    with caplog.at_level(logging.INFO, logger="mahavishnu_dlq.web"):
        await operator.post("/api/v1/tasks/t1/archive")
        await operator.post("/api/v1/jobs", json={"kind": "purge", "dry_run": True})
    actions = [r for r in caplog.records if getattr(r, "action", None) == "dlq.web.action"]
    assert [(r.web_action, r.token_name) for r in actions] == [  # type: ignore[attr-defined]
        ("archive", "alice"),
        ("job-purge", "alice"),
    ]
    assert actions[0].task_id == "t1"  # type: ignore[attr-defined]
    assert OPERATOR_TOKEN not in caplog.text


def test_tokens_come_from_the_environment_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAHAVISHNU_DLQ_WEB__TOKENS", json.dumps(TOKENS))
    settings = DLQSettings.load()
    assert [(t.name, t.role) for t in settings.web.tokens] == [
        ("alice", "operator"),
        ("dashboards", "viewer"),
    ]
    assert settings.redacted()["web"]["tokens"][0]["token"] == "*" * 10  # masked
    assert OPERATOR_TOKEN not in repr(settings)


@pytest.mark.parametrize(
    ("tokens", "words"),
    [
        ([{"name": "a", "token": "short", "role": "operator"}], "16 to 512"),
        ([{"name": "a", "token": "x" * 20, "role": "admin"}], "role"),
        ([{"name": "bad name", "token": "x" * 20}], "letters"),
        ([{"name": "a", "token": "x" * 20}, {"name": "a", "token": "y" * 20}], "unique"),
        ([{"name": "a", "token": "x" * 20}, {"name": "b", "token": "x" * 20}], "share"),
        ([{"name": "a", "token": "has space in it 123", "role": "viewer"}], "spaces"),
    ],
)
def test_bad_tokens_are_a_configuration_error(tokens: list[dict[str, str]], words: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        DLQSettings.load(store="memory", web={"tokens": tokens})
    assert "web.tokens" in str(raised.value)
    assert words in str(raised.value)
    for entry in tokens:
        assert entry["token"] not in str(raised.value)
