"""The original's FailedTask through the compat names: its constructor, to_dict and
from_dict (the original's records, without created_at/updated_at)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from mahavishnu_dlq import models
from mahavishnu_dlq.compat import DeadLetterStatus, ErrorCategory, FailedTask, RetryPolicy

FAILED_AT = datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc)

#: A record as the original's ``FailedTask.to_dict`` wrote it.
ORIGINAL = {
    "task_id": "wf_abc123",
    "task": {"type": "code_sweep"},
    "repos": ["/path/to/repo"],
    "error": "Connection timeout",
    "failed_at": FAILED_AT.isoformat(),
    "retry_count": 1,
    "max_retries": 3,
    "retry_policy": "linear",
    "next_retry_at": None,
    "status": "pending",
    "metadata": {"source": "test"},
    "error_category": None,
    "last_error": "Connection timeout",
    "total_attempts": 2,
    "updated_at": FAILED_AT.isoformat(),
}


def test_the_original_positional_constructor() -> None:
    task = FailedTask("t1", {"type": "x"}, ["/r"], "boom", FAILED_AT, 2, 5, RetryPolicy.NEVER)
    assert (task.task_id, task.task, task.repos, task.error) == (
        "t1",
        {"type": "x"},
        ["/r"],
        "boom",
    )
    assert (task.failed_at, task.retry_count, task.max_retries) == (FAILED_AT, 2, 5)
    assert task.retry_policy is RetryPolicy.NEVER
    assert task.created_at == task.updated_at == FAILED_AT
    assert isinstance(task, models.FailedTask)


def test_defaults_are_the_originals() -> None:
    task = FailedTask(task_id="t", task={}, repos=[], error="e", failed_at=FAILED_AT)
    assert (task.retry_count, task.max_retries, task.total_attempts) == (0, 3, 1)
    assert task.retry_policy is RetryPolicy.EXPONENTIAL
    assert task.status is DeadLetterStatus.PENDING
    assert task.metadata == {}
    assert task.next_retry_at is None


def test_argument_errors_are_type_errors() -> None:
    with pytest.raises(TypeError, match="multiple values"):
        FailedTask("t", {}, [], "e", FAILED_AT, task_id="u")
    with pytest.raises(TypeError, match="at most 14"):
        FailedTask(*range(15))


def test_from_dict_reads_an_original_record() -> None:
    task = FailedTask.from_dict(ORIGINAL)
    assert task.task_id == "wf_abc123"
    assert task.failed_at == task.created_at == FAILED_AT
    assert task.retry_policy is RetryPolicy.LINEAR
    assert task.error_category is ErrorCategory.PERMANENT  # None: the native default
    assert (task.retry_count, task.total_attempts) == (1, 2)
    assert task.metadata == {"source": "test"}


def test_from_dict_without_failed_at_is_now() -> None:
    record = {k: v for k, v in ORIGINAL.items() if k not in ("failed_at", "updated_at")}
    before = datetime.now(timezone.utc)
    task = FailedTask.from_dict(record)
    assert task.failed_at >= before


def test_to_dict_has_the_original_keys_and_round_trips() -> None:
    task = FailedTask.from_dict(ORIGINAL)
    data = task.to_dict()
    assert set(ORIGINAL) <= set(data)
    assert data["retry_policy"] == "linear"
    assert data["status"] == "pending"
    assert FailedTask.from_dict(data) == task
