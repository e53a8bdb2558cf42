"""A FastAPI application with the dead-letter queue's web console mounted at /dlq.

Run it (the extras ``web`` and ``cli`` installed; uvicorn comes with ``web``)::

    export MAHAVISHNU_DLQ_WEB__TOKENS='[{"name": "me", "token": "a-long-random-secret-1234",
                                         "role": "operator"}]'
    uvicorn examples.fastapi_host:app

then open http://127.0.0.1:8000/dlq/ and sign in with the token, or call the API:
``curl -H "Authorization: Bearer a-long-random-secret-1234"
http://127.0.0.1:8000/dlq/api/v1/stats``.
``POST /provision/web-2?fail=true`` puts a failure in the queue to look at.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from mahavishnu_dlq import DeadLetterQueue, DLQSettings
from mahavishnu_dlq.web import create_app

dlq = DeadLetterQueue.from_settings(DLQSettings.load())


@dlq.workflow("provision")
async def provision(task: dict[str, Any], repos: list[str]) -> dict[str, Any]:
    if task.get("fail"):
        raise ConnectionError("cloud API connection refused")
    return {"provisioned": task["name"]}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # a mounted app's own lifespan does not run: the host starts and stops the queue
    await dlq.start()
    try:
        yield
    finally:
        await dlq.stop()


app = FastAPI(lifespan=lifespan)
app.mount("/dlq", create_app(dlq))  # tokens, roles and redaction from dlq's settings


@app.post("/provision/{name}")
async def provision_endpoint(name: str, fail: bool = False) -> dict[str, Any]:
    try:
        done: dict[str, Any] = await provision({"name": name, "fail": fail}, task_id=name)
    except ConnectionError as exc:
        return {"queued_as": exc.dlq_task_id}  # type: ignore[attr-defined]
    return done
