"""EngineBridge: capturing and reporting from an engine's threads never breaks them."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace

from mahavishnu_dlq import DeadLetterQueue, Dispatched, MemoryStore
from mahavishnu_dlq.integrations.bridge import EngineBridge
from mahavishnu_dlq.models import DeadLetterStatus, ErrorCategory, FailedTask
from mahavishnu_dlq.settings import DLQSettings

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def bridge() -> Iterator[EngineBridge]:
    made = EngineBridge("fake", DeadLetterQueue(MemoryStore()))
    yield made
    made.close()


def test_capture_stores_the_failure_with_its_engine(bridge: EngineBridge) -> None:
    stored = bridge.capture(
        "m-1",
        {"args": [1], "kwargs": {}},
        ConnectionError("broker reset"),
        workflow="proj.add",
        metadata={"queue": "default"},
    )
    assert stored is not None
    assert stored.metadata["queue"] == "default"
    assert stored.metadata["engine"] == "fake"
    assert stored.workflow == "proj.add"
    assert stored.error_category is ErrorCategory.NETWORK
    assert stored.error_fingerprint
    assert bridge.counters["captured"] == 1
    again = bridge.capture("m-1", {"args": [2]}, ConnectionError("again"), workflow="proj.add")
    assert again is not None  # idempotent by the engine's id: the same record, updated
    assert again.created_at == stored.created_at
    assert again.last_error == "again"
    page = bridge.blocking().list_tasks()
    assert [t.task_id for t in page] == ["m-1"]


def test_a_traceparent_links_the_failure_to_the_engine_trace(bridge: EngineBridge) -> None:
    stored = bridge.capture("m-2", {}, ValueError("x"), workflow="w", traceparent=TRACEPARENT)
    assert stored is not None
    assert stored.metadata["failure_context"]["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert stored.metadata["failure_context"]["span_id"] == "b7ad6b7169203331"
    for bad in ("junk", "00-" + "0" * 32 + "-" + "0" * 16 + "-01", None):
        plain = bridge.capture(f"m-{bad}", {}, ValueError("x"), workflow="w", traceparent=bad)
        assert plain is not None
        assert "trace_id" not in plain.metadata["failure_context"]


def test_the_current_span_wins_over_the_traceparent(bridge: EngineBridge) -> None:
    current = trace.SpanContext(int("1" * 32, 16), int("2" * 16, 16), is_remote=False)
    with trace.use_span(trace.NonRecordingSpan(current)):
        stored = bridge.capture("m-3", {}, ValueError("x"), workflow="w", traceparent=TRACEPARENT)
    assert stored is not None
    assert stored.metadata["failure_context"]["trace_id"] == "1" * 32


def test_a_capture_that_fails_is_logged_and_counted_not_raised(
    bridge: EngineBridge, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="mahavishnu_dlq.integrations"):
        assert bridge.capture("m-4", {"x": object()}, ValueError("x"), workflow="w") is None
        assert bridge.capture("", {}, ValueError("x"), workflow="w") is None
    assert bridge.counters["capture_failed"] == 2
    assert "InvalidPayloadError" in caplog.text
    assert "m-4" in caplog.text


def test_report_completes_a_dispatched_attempt(bridge: EngineBridge) -> None:
    dlq = bridge.blocking().dlq

    def send(record: FailedTask) -> None:
        raise Dispatched

    dlq.register_engine("fake", send)
    bridge.capture("m-5", {}, ConnectionError("x"), workflow="w")
    reply = bridge.blocking().retry_task("m-5")
    assert reply["dispatched"] == "fake:m-5:1"
    done = bridge.report("m-5", "fake:m-5:1")
    assert done is not None
    assert done.status is DeadLetterStatus.COMPLETED
    assert bridge.report("m-5", "fake:m-5:1") is None  # repeated: ignored
    assert bridge.counters["reported"] == 1
    assert bridge.counters["report_ignored"] == 1
    not_an_id: Any = 5
    assert bridge.report(not_an_id, "fake:m-5:1") is None  # bad input: counted, not raised
    assert bridge.counters["report_failed"] == 1


def test_settings_give_each_process_its_own_capturing_queue(
    tmp_path: Path,
) -> None:
    settings = DLQSettings.load(store="sqlite", sqlite={"path": f"{tmp_path}/dlq.db"})
    host = DeadLetterQueue.from_settings(settings)
    bridge = EngineBridge("fake", host)
    try:
        stored = bridge.capture("m-6", {}, ConnectionError("x"), workflow="w")
        assert stored is not None
        capturing = bridge.blocking().dlq
        assert capturing is not host
        assert capturing.settings is not None
        assert capturing.settings.retry_processor_enabled is False
        assert bridge.blocking().get_task("m-6") is not None
    finally:
        bridge.close()


def test_a_worker_keeps_capturing_while_opensearch_is_down(tmp_path: Path) -> None:
    """``store: failover``: with OpenSearch unreachable, an engine's failures go to the
    durable local journal (and re-sync later), not to the floor."""
    settings = DLQSettings.load(
        store="failover",
        opensearch={"hosts": ["http://127.0.0.1:9"], "timeout_seconds": 0.5},
        failover={"fallback": "sqlite", "path": str(tmp_path), "store_timeout_seconds": 0.5},
    )
    bridge = EngineBridge("fake", DeadLetterQueue.from_settings(settings))
    try:
        stored = bridge.capture("m-7", {"args": [7]}, ConnectionError("x"), workflow="w")
        assert stored is not None
        assert bridge.counters == {**bridge.counters, "captured": 1, "capture_failed": 0}
        assert bridge.blocking().get_task("m-7") is not None  # read back from the journal
        assert list(tmp_path.iterdir())  # the journal file
    finally:
        bridge.close()
