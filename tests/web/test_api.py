"""The JSON API's routes on a memory-store queue: shapes, status codes, ids, jobs.

Authentication and roles are tested in ``test_api_auth``; here every client is
the operator's unless the test says otherwise.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fastapi import FastAPI

from mahavishnu_dlq import DeadLetterQueue, Dispatched, RetryProcessor
from mahavishnu_dlq.errors import StoreUnavailableError
from mahavishnu_dlq.models import DeadLetterStatus, FailedTask, TaskFilter
from mahavishnu_dlq.storage.base import StoreStatistics
from mahavishnu_dlq.storage.memory import MemoryStore
from mahavishnu_dlq.testing import FakeClock
from mahavishnu_dlq.web import create_app
from mahavishnu_dlq.web.ids import task_url

from .conftest import OPERATOR_TOKEN, web_settings

pytestmark = pytest.mark.anyio

HOSTILE_IDS = [
    "plain",
    "with/slash",
    "a/b/../c",
    "50% off",
    "what?x=1#frag",
    "  spaced  ",
    "ünïcödé-任务-🙂",
    "<img src=x onerror=alert(1)>",
    "</script><script>alert(2)</script>",
    "..",
    ".",
    "back\\slash",
    "semi;colon&amp=1+plus",
]


def refused(error: str = "boom") -> BaseException:
    try:
        raise ConnectionError(error)
    except ConnectionError as caught:
        return caught


async def seed(dlq: DeadLetterQueue, count: int, **fields: Any) -> list[str]:
    ids = [f"task-{n:03d}" for n in range(count)]
    for task_id in ids:
        await dlq.enqueue(task_id, {"n": task_id}, error=refused(), **fields)
    return ids


def url(task_id: str, suffix: str = "") -> str:
    return task_url("/api/v1/tasks/", task_id, suffix)


async def test_health_needs_no_token(anonymous: httpx.AsyncClient) -> None:
    answer = await anonymous.get("/api/v1/health")
    assert answer.status_code == 200
    assert answer.json()["status"] == "ok"
    assert answer.json()["backend"] == "memory"


async def test_stats_is_the_get_statistics_shape(
    operator: httpx.AsyncClient, dlq: DeadLetterQueue
) -> None:
    await seed(dlq, 3, workflow="billing")
    answer = await operator.get("/api/v1/stats")
    assert answer.status_code == 200
    expected = await dlq.get_statistics()
    assert answer.json() == expected
    assert answer.json()["status_breakdown"]["pending"] == 3


@pytest.mark.parametrize("task_id", HOSTILE_IDS)
async def test_any_enqueued_id_round_trips(
    operator: httpx.AsyncClient, dlq: DeadLetterQueue, task_id: str
) -> None:
    await dlq.enqueue(task_id, {"k": 1}, error=refused())
    await dlq.enqueue("with", {"decoy": True}, error=refused())  # a prefix of "with/slash"
    answer = await operator.get(url(task_id))
    assert answer.status_code == 200, answer.text
    assert answer.json()["task_id"] == task_id
    archived = await operator.post(url(task_id, "/archive"))
    assert archived.status_code == 200, archived.text
    assert archived.json()["task"]["task_id"] == task_id
    stored = await dlq.get_task(task_id)
    assert stored is not None
    assert stored.status is DeadLetterStatus.ARCHIVED
    decoy = await dlq.get_task("with")
    assert decoy is not None
    assert decoy.status is DeadLetterStatus.PENDING


async def test_unknown_ids_are_404_json(operator: httpx.AsyncClient) -> None:
    for method, path in (
        ("GET", url("nope")),
        ("POST", url("nope", "/retry")),
        ("POST", url("nope", "/archive")),
        ("GET", "/api/v1/jobs/job-nope"),
        ("POST", "/api/v1/jobs/job-nope/cancel"),
        ("GET", "/api/v1/no-such-route"),
    ):
        answer = await operator.request(method, path)
        assert answer.status_code == 404, (method, path)
        assert answer.json()["error"]["type"] == "not_found"
        assert "Traceback" not in answer.text


async def test_list_takes_every_filter_and_pages_with_a_cursor(
    operator: httpx.AsyncClient, dlq: DeadLetterQueue, clock: FakeClock
) -> None:
    await seed(dlq, 5, workflow="billing")
    clock.advance(3600)
    await dlq.enqueue("other", {}, error=ValueError("bad email"), workflow="signup")
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"workflow": "billing", "limit": 2, "status": "pending"}
        if cursor:
            params["cursor"] = cursor
        answer = await operator.get("/api/v1/tasks", params=params)
        assert answer.status_code == 200
        seen += [task["task_id"] for task in answer.json()["tasks"]]
        cursor = answer.json()["cursor"]
        if cursor is None:
            break
    assert sorted(seen) == [f"task-{n:03d}" for n in range(5)]
    since = (clock.now()).isoformat()
    recent = await operator.get("/api/v1/tasks", params={"since": since})
    assert [task["task_id"] for task in recent.json()["tasks"]] == ["other"]
    naive = clock.now().replace(tzinfo=None).isoformat()  # taken as UTC
    assert (await operator.get("/api/v1/tasks", params={"since": naive})).json()["tasks"]
    until = await operator.get("/api/v1/tasks", params={"until": since, "limit": 100})
    assert len(until.json()["tasks"]) == 5
    by_category = await operator.get(
        "/api/v1/tasks", params=[("error_category", "validation"), ("error_category", "permanent")]
    )
    assert [task["task_id"] for task in by_category.json()["tasks"]] == ["other"]
    text = await operator.get("/api/v1/tasks", params={"text": "BAD EMAIL"})
    assert [task["task_id"] for task in text.json()["tasks"]] == ["other"]
    fingerprint = (await dlq.get_task("other")).error_fingerprint  # type: ignore[union-attr]
    by_print = await operator.get("/api/v1/tasks", params={"fingerprint": fingerprint})
    assert [task["task_id"] for task in by_print.json()["tasks"]] == ["other"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"status": "lost"}, "status"),
        ({"error_category": "cosmic"}, "error_category"),
        ({"since": "yesterday"}, "since"),
        ({"text": "x" * 1001}, "text"),
    ],
)
async def test_bad_list_arguments_are_400_naming_the_field(
    operator: httpx.AsyncClient, params: dict[str, Any], field: str
) -> None:
    answer = await operator.get("/api/v1/tasks", params=params)
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["type"] == "invalid"
    assert error["field"] == field
    assert field in error["message"]


async def test_a_malformed_cursor_is_400(operator: httpx.AsyncClient) -> None:
    answer = await operator.get("/api/v1/tasks", params={"cursor": "not-a-cursor"})
    assert answer.status_code == 400
    assert "cursor" in answer.json()["error"]["message"]


async def test_retry_runs_the_handler(operator: httpx.AsyncClient, dlq: DeadLetterQueue) -> None:
    calls: list[str] = []

    async def handler(task: dict[str, Any], repos: list[str]) -> str:
        calls.append(task["n"])
        return "fine"

    dlq.register_handler("billing", handler)
    await seed(dlq, 1, workflow="billing")
    answer = await operator.post(url("task-000", "/retry"))
    assert answer.status_code == 200
    assert answer.json()["success"] is True
    assert calls == ["task-000"]
    stored = await dlq.get_task("task-000")
    assert stored is not None
    assert stored.status is DeadLetterStatus.COMPLETED


async def test_a_failing_retry_is_reported_not_raised(
    operator: httpx.AsyncClient, dlq: DeadLetterQueue
) -> None:
    async def handler(task: dict[str, Any], repos: list[str]) -> None:
        raise ConnectionError("still down")

    dlq.register_handler("billing", handler)
    await seed(dlq, 1, workflow="billing")
    answer = await operator.post(url("task-000", "/retry"))
    assert answer.status_code == 200
    assert answer.json()["success"] is False
    assert "still down" in answer.json()["error"]


async def test_a_retry_sent_to_an_engine_says_so(
    operator: httpx.AsyncClient, dlq: DeadLetterQueue
) -> None:
    sent: list[str | None] = []

    def send(record: FailedTask) -> None:
        sent.append(record.lease_owner)
        raise Dispatched("queued")

    dlq.register_engine("celery", send)
    await dlq.enqueue(
        "c-1", {"args": []}, error=ConnectionError("x"), metadata={"engine": "celery"}
    )
    answer = await operator.post(url("c-1", "/retry"))
    assert answer.status_code == 200
    body = answer.json()
    assert body["success"] is False
    assert body["dispatched"] == "celery:c-1:1"
    assert "its engine reports the outcome" in body["message"]
    assert sent == ["celery:c-1:1"]
    again = await operator.post(url("c-1", "/retry"))
    assert again.status_code == 409  # held under the token until the engine reports


async def test_a_task_being_retried_elsewhere_is_409(
    operator: httpx.AsyncClient, dlq: DeadLetterQueue, clock: FakeClock
) -> None:
    async def succeed(task: dict[str, Any], repos: list[str]) -> None:
        return None

    dlq.default_callback = succeed  # the processor claims only what it can retry
    await dlq.enqueue("busy", {}, error=refused(), retry_policy="immediate")
    clock.advance(60)
    (claimed,) = await RetryProcessor(dlq).claim(1)
    assert claimed.task_id == "busy"
    for suffix in ("/retry", "/archive"):
        answer = await operator.post(url("busy", suffix))
        assert answer.status_code == 409, suffix
        assert answer.json()["error"]["type"] == "task_busy"


async def test_selected_tasks_each_get_an_outcome(
    operator: httpx.AsyncClient, dlq: DeadLetterQueue
) -> None:
    ids = await seed(dlq, 3)
    answer = await operator.post(
        "/api/v1/tasks/actions", json={"action": "archive", "task_ids": [*ids, "ghost"]}
    )
    assert answer.status_code == 200
    outcomes = {item["task_id"]: item["outcome"] for item in answer.json()["results"]}
    assert outcomes == {**dict.fromkeys(ids, "archived"), "ghost": "not_found"}
    too_many = await operator.post(
        "/api/v1/tasks/actions",
        json={"action": "archive", "task_ids": [f"t{n}" for n in range(501)]},
    )
    assert too_many.status_code == 400
    assert too_many.json()["error"]["field"] == "task_ids"


async def test_payload_secrets_are_masked_at_any_depth(
    operator: httpx.AsyncClient, dlq: DeadLetterQueue
) -> None:
    payload = {
        "user": "ada",
        "PassWord": "hunter2",
        "nested": {"api_key": "k-123", "items": [{"Token": "t-1", "keep": 1}]},
        "client_secret": "cs-9",
        "X-Access-Token": "at-7",
        "count": 3,
    }
    await dlq.enqueue("secretive", payload, error=refused(), metadata={"Authorization": "B x"})
    for answer in (
        await operator.get(url("secretive")),
        await operator.get("/api/v1/tasks"),
    ):
        body = answer.json()
        task = body if "task_id" in body else body["tasks"][0]
        assert task["task"] == {
            "user": "ada",
            "PassWord": "••••",
            "nested": {"api_key": "••••", "items": [{"Token": "••••", "keep": 1}]},
            "client_secret": "••••",
            "X-Access-Token": "••••",
            "count": 3,
        }
        assert task["metadata"]["Authorization"] == "••••"
        assert "hunter2" not in answer.text
        assert "k-123" not in answer.text
        assert "at-7" not in answer.text


async def test_redact_keys_come_from_the_settings(dlq: DeadLetterQueue) -> None:
    app = create_app(dlq, settings=web_settings(redact_keys=["ssn"]))
    await dlq.enqueue("p", {"ssn": "123", "password": "visible"}, error=refused())
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://testserver",
        headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"},
    ) as client:
        task = (await client.get(url("p"))).json()
    assert task["task"] == {"ssn": "••••", "password": "visible"}


async def test_fingerprint_groups(operator: httpx.AsyncClient, dlq: DeadLetterQueue) -> None:
    await seed(dlq, 3, workflow="billing")
    await dlq.enqueue("v1", {}, error=ValueError("invalid email"), workflow="signup")
    await dlq.archive_task("task-002")
    answer = await operator.get("/api/v1/fingerprints")
    assert answer.status_code == 200
    groups = answer.json()["groups"]
    assert [(g["count"], g["error_type"], g["workflows"]) for g in groups] == [
        (2, "ConnectionError", {"billing": 2}),
        (1, "ValueError", {"signup": 1}),
    ]
    assert groups[0]["example_error"] == "boom"
    assert groups[0]["first_seen"] <= groups[0]["last_seen"]
    everything = await operator.get(
        "/api/v1/fingerprints", params=[("status", "pending"), ("status", "archived")]
    )
    assert everything.json()["groups"][0]["count"] == 3
    limited = await operator.get("/api/v1/fingerprints", params={"limit": 1})
    assert len(limited.json()["groups"]) == 1


async def test_failures_histogram(
    operator: httpx.AsyncClient, dlq: DeadLetterQueue, clock: FakeClock
) -> None:
    await seed(dlq, 2)
    clock.advance(3 * 3600)
    await dlq.enqueue("late", {}, error=ValueError("invalid email"))
    clock.advance(1)  # the window ends now: "late" failed a second ago
    answer = await operator.get("/api/v1/failures", params={"hours": 4, "buckets": 4})
    assert answer.status_code == 200
    buckets = answer.json()["buckets"]
    assert len(buckets) == 4
    counts = [sum(bucket["by_category"].values()) for bucket in buckets]
    assert counts == [2, 0, 0, 1]  # buckets of 1 h ending now: T0 is in the first
    assert buckets[0]["by_category"] == {"network": 2}
    assert buckets[3]["by_category"] == {"validation": 1}
    bad = await operator.get("/api/v1/failures", params={"hours": 0})
    assert bad.status_code == 400


async def test_a_replay_job_runs_to_the_end(
    operator: httpx.AsyncClient, dlq: DeadLetterQueue
) -> None:
    ids = await seed(dlq, 4, workflow="billing")
    for task_id in ids[:2]:
        await dlq.archive_task(task_id)
    preview = await operator.post(
        "/api/v1/jobs",
        json={"kind": "replay", "filter": {"workflow": ["billing"]}, "dry_run": True},
    )
    assert preview.status_code == 201
    summary = preview.json()["summary"]
    assert (preview.json()["state"], summary["total"]) == ("done", 2)
    assert sorted(summary["sample"]) == ids[2:]
    started = await operator.post(
        "/api/v1/jobs", json={"kind": "archive", "filter": {"workflow": ["billing"]}, "rate": 1000}
    )
    assert started.status_code == 201
    job_id = started.json()["job_id"]
    # no processor in this process: the console ran the job after answering
    job = (await operator.get(f"/api/v1/jobs/{job_id}")).json()
    assert (job["state"], job["matched"], job["done"], job["progress"]) == ("done", 2, 2, 1.0)
    assert await dlq.count_tasks(TaskFilter(status=DeadLetterStatus.ARCHIVED)) == 4
    listed = (await operator.get("/api/v1/jobs")).json()["jobs"]
    assert job_id in [item["job_id"] for item in listed]
    assert job["created_by"] == "web:alice"


async def test_jobs_are_paused_resumed_and_cancelled(
    operator: httpx.AsyncClient, dlq: DeadLetterQueue
) -> None:
    await seed(dlq, 3)
    job = await dlq.start_job("archive")
    paused = await operator.post(f"/api/v1/jobs/{job.job_id}/pause")
    assert (paused.status_code, paused.json()["state"]) == (200, "paused")
    resumed = await operator.post(f"/api/v1/jobs/{job.job_id}/resume")
    assert resumed.status_code == 200
    assert (await dlq.get_job(job.job_id)).state.value == "done"  # run after the answer
    finished = await operator.post(f"/api/v1/jobs/{job.job_id}/resume")
    assert finished.status_code == 409
    assert finished.json()["error"]["type"] == "conflict"
    other = await dlq.start_job("purge")
    cancelled = await operator.post(f"/api/v1/jobs/{other.job_id}/cancel")
    assert cancelled.json()["state"] == "cancelled"
    wrong = await operator.post(f"/api/v1/jobs/{other.job_id}/explode")
    assert wrong.status_code == 400


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "detonate"},
        {"kind": "replay", "rate": 0},
        {"kind": "replay", "filter": {"status": ["nope"]}},
        {"kind": "replay", "filter": {"colour": "red"}},
        {"kind": "replay", "unknown": 1},
        {"kind": "purge", "older_than_seconds": -1},
    ],
)
async def test_bad_job_requests_are_400(operator: httpx.AsyncClient, body: dict[str, Any]) -> None:
    answer = await operator.post("/api/v1/jobs", json=body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["type"] == "invalid"


async def test_a_body_that_is_not_json_is_400(operator: httpx.AsyncClient) -> None:
    answer = await operator.post(
        "/api/v1/jobs", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert answer.status_code == 400


async def test_a_body_past_the_limit_is_413(operator: httpx.AsyncClient) -> None:
    big = {"kind": "replay", "filter": {"text": "x" * 70_000}}
    answer = await operator.post("/api/v1/jobs", json=big)
    assert answer.status_code == 413
    assert "web.max_body_bytes" in answer.json()["error"]["message"]

    async def chunks() -> Any:  # no Content-Length: counted while read
        for _ in range(80):
            yield b"x" * 1000

    streamed = await operator.post(
        "/api/v1/jobs", content=chunks(), headers={"content-type": "application/json"}
    )
    assert streamed.status_code == 413


class DownStore(MemoryStore):
    """A memory store whose reads fail as an unreachable OpenSearch's do."""

    down = False

    async def statistics(self, *, top_fingerprints: int = 5) -> StoreStatistics:
        if self.down:
            raise StoreUnavailableError("OpenSearch at http://127.0.0.1:1 is unreachable")
        return await super().statistics(top_fingerprints=top_fingerprints)

    async def count(self, flt: TaskFilter | None = None) -> int:
        if self.down:
            raise StoreUnavailableError("OpenSearch at http://127.0.0.1:1 is unreachable")
        return await super().count(flt)


async def test_an_unreachable_store_is_503() -> None:
    store = DownStore()
    dlq = DeadLetterQueue(store, settings=web_settings())
    await dlq.connect()
    app = create_app(dlq)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://testserver",
            headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"},
        ) as client:
            assert (await client.get("/api/v1/health")).status_code == 200
            store.down = True
            health = await client.get("/api/v1/health")
            assert health.status_code == 503
            assert health.json()["status"] == "unavailable"
            stats = await client.get("/api/v1/stats")
            assert stats.status_code == 503
            assert stats.json()["error"]["type"] == "store_unavailable"
            assert stats.headers["retry-after"] == "5"
            overview = await client.get("/")  # its reads run side by side: still a 503
            assert overview.status_code == 503
            assert overview.headers["content-type"].startswith("text/html")
    finally:
        await dlq.stop()


async def test_a_bug_is_a_500_with_a_reference_and_no_trace(
    app: FastAPI,
    operator: httpx.AsyncClient,
    dlq: DeadLetterQueue,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken() -> dict[str, Any]:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(dlq, "get_statistics", broken)
    with caplog.at_level(logging.ERROR, logger="mahavishnu_dlq.web"):
        answer = await operator.get("/api/v1/stats")
    assert answer.status_code == 500
    error = answer.json()["error"]
    assert error["type"] == "internal"
    assert "secret internal detail" not in answer.text
    assert "Traceback" not in answer.text
    ref = error["message"].split("ref ")[1].split(")")[0]
    logged = [r for r in caplog.records if getattr(r, "ref", None) == ref]
    assert logged
    assert logged[0].exc_info is not None


async def test_the_openapi_document_lists_every_route(anonymous: httpx.AsyncClient) -> None:
    answer = await anonymous.get("/api/v1/openapi.json")
    assert answer.status_code == 200
    document = answer.json()
    paths = set(document["paths"])
    assert paths >= {
        "/api/v1/health",
        "/api/v1/stats",
        "/api/v1/tasks",
        "/api/v1/tasks/{task_id}",
        "/api/v1/tasks/{task_id}/retry",
        "/api/v1/tasks/{task_id}/archive",
        "/api/v1/tasks/actions",
        "/api/v1/fingerprints",
        "/api/v1/failures",
        "/api/v1/jobs",
        "/api/v1/jobs/{job_id}",
        "/api/v1/jobs/{job_id}/{action}",
    }
    assert all(path.startswith("/api/v1/") for path in paths)
    assert "HTTPBearer" in document["components"]["securitySchemes"]


async def test_api_answers_carry_the_security_headers(operator: httpx.AsyncClient) -> None:
    for path in ("/api/v1/stats", "/api/v1/tasks/nope", "/api/v1/health"):
        answer = await operator.get(path)
        assert "script-src 'self'" in answer.headers["content-security-policy"]
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["cache-control"] == "no-store"


async def test_a_mounted_console_serves_the_api_under_its_prefix(dlq: DeadLetterQueue) -> None:
    host = FastAPI()
    host.mount("/dlq", create_app(dlq))
    await dlq.enqueue("a/b", {}, error=refused())
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=host),
        base_url="http://testserver",
        headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"},
    ) as client:
        task = await client.get(task_url("/dlq/api/v1/tasks/", "a/b"))
        assert task.status_code == 200
        assert task.json()["task_id"] == "a/b"
        archived = await client.post(task_url("/dlq/api/v1/tasks/", "a/b", "/archive"))
        assert archived.status_code == 200
        assert (await client.get("/dlq/api/v1/health")).json()["status"] == "ok"


def test_task_urls_encode_every_reserved_character() -> None:
    assert task_url("/t/", "a/b?c#d e%") == "/t/a%2Fb%3Fc%23d%20e%25"
    assert task_url("/t/", "..", "/retry") == "/t/%2E%2E/retry"
    assert quote("ü", safe="") in task_url("/t/", "ü")
