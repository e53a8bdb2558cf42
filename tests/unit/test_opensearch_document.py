"""The OpenSearch document of a record: ``document_json`` (the write path's encoder)
is the same document as ``to_document`` (pydantic's serializer), for every kind of
record the store writes. No node needed: this is the persisted format only."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mahavishnu_dlq import DeadLetterQueue, lifecycle
from mahavishnu_dlq.models import FailedTask
from mahavishnu_dlq.storage import opensearch_query as q
from mahavishnu_dlq.testing import FakeClock, make_task

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)


def _enqueued(**options: Any) -> FailedTask:
    dlq = DeadLetterQueue(clock=FakeClock(T0))
    record = dlq.build_record(
        "t-1", {"n": 1, "ü": "é", "nested": [{"a": None}]}, ["r"], "reset", **options
    )
    assert record.payload_json() is not None  # the encoded payload travels with it
    return record


def _claimed_and_failed() -> FailedTask:
    claimed = lifecycle.claim(
        make_task(task_id="c", now=T0),
        now=T0 + timedelta(seconds=5),
        owner="w-1",
        lease_seconds=30,
        trigger="processor",
        attempts_kept=5,
    )
    assert claimed.lease_expires_at is not None
    return claimed


RECORDS = {
    "enqueued": _enqueued(),
    "enqueued, with metadata": _enqueued(metadata={"user": "alice", "run": {"n": [1, 2]}}),
    "exhausted at once": _enqueued(max_retries=0),
    "validated, no encoded payload": make_task(task_id="v", now=T0),
    "claimed (lease, attempt)": _claimed_and_failed(),
    "archived": lifecycle.archive(make_task(task_id="a", now=T0), now=T0 + timedelta(hours=1)),
    "not UTC, before 1970": make_task(
        task_id="old",
        now=datetime(1969, 7, 20, 20, 17, 40, tzinfo=timezone(timedelta(hours=-5))),
    ),
}


@pytest.mark.parametrize("name", list(RECORDS))
def test_document_json_is_to_document(name: str) -> None:
    record = RECORDS[name]
    text = q.document_json(record, "write-1")
    assert json.loads(text) == q.to_document(record, "write-1")
    assert "\n" not in text  # one NDJSON line
    assert q.from_document(json.loads(text)) == record


def test_a_record_changed_after_it_was_read_is_encoded_from_its_fields() -> None:
    record = _enqueued()
    changed = record.evolve(task={"n": 2}, metadata={"other": True})
    assert changed.payload_json() is None  # the encoding belonged to the old payload
    document = json.loads(q.document_json(changed, "w"))
    assert (document["task"], document["metadata"]) == ({"n": 2}, {"other": True})


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10,
)


@given(
    task=st.dictionaries(st.text(), _json_values, max_size=4),
    metadata=st.dictionaries(st.text(), _json_values, max_size=4),
    error=st.text(max_size=50),
)
def test_any_payload_round_trips(
    task: dict[str, Any], metadata: dict[str, Any], error: str
) -> None:
    dlq = DeadLetterQueue(clock=FakeClock(T0))
    record = dlq.build_record("t", task, None, error, metadata=metadata)
    document = json.loads(q.document_json(record, "w"))
    assert document == q.to_document(record, "w")
    assert document["task"] == task
