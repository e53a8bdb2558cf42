"""The JSON shapes the API answers and the pages render: one place, redaction applied.

A task is its stored record (``FailedTask.model_dump(mode="json")``) with the
values under ``web.redact_keys`` in its input and metadata masked; a job is its
stored record; a fingerprint group and a histogram bucket are flat objects with
ISO-8601 times.
"""

from __future__ import annotations

from typing import Any

from mahavishnu_dlq.jobs.model import Job
from mahavishnu_dlq.models import FailedTask
from mahavishnu_dlq.storage.base import FingerprintGroup, HistogramBucket

from .redact import Redactor

__all__ = ["bucket_json", "group_json", "job_json", "task_json"]


def task_json(task: FailedTask, redact: Redactor) -> dict[str, Any]:
    """A task as the API shows it (payload secrets masked)."""
    data = task.model_dump(mode="json")
    data["task"] = redact(data["task"])
    data["metadata"] = redact(data["metadata"])
    return data


def job_json(job: Job) -> dict[str, Any]:
    """A job as the API shows it, with its progress as a fraction (None while unknown)."""
    data = job.model_dump(mode="json")
    settled = job.done + job.skipped + job.failed
    data["progress"] = None if job.matched == 0 else round(min(1.0, settled / job.matched), 4)
    return data


def group_json(group: FingerprintGroup) -> dict[str, Any]:
    """A fingerprint group: fingerprint, count, error type, example, first/last seen."""
    return {
        "fingerprint": group.fingerprint,
        "count": group.count,
        "error_type": group.error_type,
        "example_error": group.example_error,
        "first_seen": group.first_seen.isoformat(),
        "last_seen": group.last_seen.isoformat(),
        "workflows": dict(group.workflows),
        "by_status": dict(group.by_status),
    }


def bucket_json(bucket: HistogramBucket) -> dict[str, Any]:
    """One bucket of the failure histogram."""
    return {"start": bucket.start.isoformat(), "by_category": dict(bucket.by_category)}
