"""Bulk operations as durable jobs: replay, retry, archive and purge by filter.

A job is a stored record (:mod:`.model`) that any retry processor sharing the
store picks up with a lease and works through page by page (:mod:`.runner`),
recording its progress after each page, so it survives its runner. The queue's
``start_job``/``pause_job``/``resume_job``/``cancel_job`` (:mod:`.control`) are
how callers make and steer them; the "Bulk operations" page of the docs says
when to use which.
"""

from __future__ import annotations

from mahavishnu_dlq.jobs.model import (
    FAILURES_KEPT,
    FINAL_JOB_STATES,
    Job,
    JobFailure,
    JobKind,
    JobState,
    TaskSummary,
)

__all__ = [
    "FAILURES_KEPT",
    "FINAL_JOB_STATES",
    "Job",
    "JobFailure",
    "JobKind",
    "JobState",
    "TaskSummary",
]
