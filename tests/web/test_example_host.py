"""examples/fastapi_host.py runs: a host app, its workflow, the console mounted at /dlq,
the queue started by the host's lifespan; docs/web-console.md shows the same code."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from mahavishnu_dlq.web.ids import task_url

from .conftest import OPERATOR_TOKEN, TOKENS

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "fastapi_host.py"

pytestmark = pytest.mark.anyio


def load_example(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.setenv("MAHAVISHNU_DLQ_STORE", "memory")
    monkeypatch.setenv("MAHAVISHNU_DLQ_WEB__TOKENS", json.dumps(TOKENS))
    spec = importlib.util.spec_from_file_location("fastapi_host_example", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


async def test_the_example_host_serves_the_console_under_dlq(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    example = load_example(monkeypatch)
    app = example.app
    async with app.router.lifespan_context(app):
        assert example.dlq.is_processor_running  # the host's lifespan started it
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        ) as client:
            ok = await client.post("/provision/web-1")
            assert ok.json() == {"provisioned": "web-1"}
            failed = await client.post("/provision/web-2", params={"fail": "true"})
            assert failed.json() == {"queued_as": "web-2"}
            auth = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
            listed = await client.get("/dlq/api/v1/tasks", headers=auth)
            assert [t["task_id"] for t in listed.json()["tasks"]] == ["web-2"]
            retried = await client.post(
                task_url("/dlq/api/v1/tasks/", "web-2", "/retry"), headers=auth
            )
            assert retried.status_code == 200
            assert retried.json()["success"] is False  # its input still says fail
            assert "connection refused" in retried.json()["error"]
            page = await client.get("/dlq/login")
            assert page.status_code == 200
    assert not example.dlq.is_processor_running


def test_the_web_console_page_shows_the_example() -> None:
    doc = (ROOT / "docs" / "web-console.md").read_text(encoding="utf-8")
    code = EXAMPLE.read_text(encoding="utf-8")
    body = code[code.index("from __future__") :]
    assert body.strip() in doc
