"""The ``mahavishnu_dlq`` logger: stable action names, structured extras, no payloads."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from mahavishnu_dlq import DeadLetterQueue, MemoryStore, RetryProcessor
from mahavishnu_dlq.testing import FakeClock

pytestmark = pytest.mark.anyio

SECRET = "card-4242-4242-secret"  # noqa: S105 - a made-up value to look for


async def test_actions_are_logged_with_stable_names_and_without_payloads(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dlq = DeadLetterQueue(MemoryStore(), clock=FakeClock())

    async def handler(task: dict[str, Any], repos: list[str]) -> None:
        if task["fail"]:
            raise ConnectionError("still down")

    dlq.register_handler("pay", handler)
    with caplog.at_level(logging.INFO, logger="mahavishnu_dlq"):
        for n in range(3):
            await dlq.enqueue(
                f"t{n}",
                {"card": SECRET, "fail": n == 2},
                error=ConnectionError("reset"),
                workflow="pay",
                retry_policy="immediate",
                max_retries=1,
                metadata={"token": SECRET},
            )
        await RetryProcessor(dlq).drain()  # t0, t1 succeed; t2 fails and is exhausted
        await dlq.retry_task("t2")
        await dlq.archive_task("t2")
        await dlq.replay(dry_run=True)
        await dlq.purge()
        await dlq.clear_all()

    records = [r for r in caplog.records if r.name.startswith("mahavishnu_dlq")]
    actions = [getattr(r, "action", None) for r in records]
    assert None not in actions, [r.getMessage() for r in records if not hasattr(r, "action")]
    assert set(actions) == {
        "dlq.enqueue",
        "dlq.retry",
        "dlq.manual_retry",
        "dlq.archive",
        "dlq.replay",
        "dlq.purge",
        "dlq.clear",
    }
    exhausted = [r for r in records if getattr(r, "status", None) == "exhausted"]
    assert exhausted
    assert all(r.levelno == logging.WARNING for r in exhausted if r.action == "dlq.retry")  # type: ignore[attr-defined]
    for record in records:
        assert SECRET not in record.getMessage()
        assert SECRET not in repr(record.__dict__)
        if getattr(record, "task_id", None) is not None:
            assert record.task_id.startswith("t")  # type: ignore[attr-defined]


async def test_an_exhausted_retry_warns_at_the_default_warning_level(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dlq = DeadLetterQueue(MemoryStore(), clock=FakeClock())

    async def handler(task: dict[str, Any], repos: list[str]) -> None:
        raise ConnectionError("still down")

    dlq.register_handler("pay", handler)
    with caplog.at_level(logging.WARNING, logger="mahavishnu_dlq"):
        for n in range(2):
            await dlq.enqueue(
                f"t{n}",
                {},
                error=ConnectionError("reset"),
                workflow="pay",
                retry_policy="immediate",
                max_retries=1 + n,
            )
        await RetryProcessor(dlq).run_once()  # t0 is exhausted, t1 has a retry left
    retries = [r for r in caplog.records if getattr(r, "action", None) == "dlq.retry"]
    assert [(r.task_id, r.levelno) for r in retries] == [("t0", logging.WARNING)]  # type: ignore[attr-defined]
