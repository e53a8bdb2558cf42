"""How the durable stores keep a bulk job, and what they do with one they cannot read.

The SQLite and OpenSearch job stores (:mod:`.sqlite_jobs`, :mod:`.opensearch_jobs`)
keep a :class:`~mahavishnu_dlq.jobs.model.Job` as its JSON (``job.to_dict()``, the
persisted format the model defines) beside a few columns or fields a listing needs.
Decoding is shared here so both treat a stored job they cannot read the same way as
they treat a task: a listing skips it (logged once per process), and a read of that
very id raises :class:`UnreadableJobError` with the stored form — a job written by a
newer version must not be overwritten by one that does not understand it.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import TypeAdapter

from mahavishnu_dlq.errors import UnreadableRecordError
from mahavishnu_dlq.jobs.model import Job
from mahavishnu_dlq.storage.base import report_unreadable
from mahavishnu_dlq.storage.opensearch_query import unreadable_reason

__all__ = ["UnreadableJobError", "decode_job", "read_job"]

#: The times of a job's filter. ``TaskFilter`` takes only datetime objects there (its
#: validator refuses strings, so that a caller's "2024-01-01" is not guessed at), which
#: makes its own JSON form unreadable to it: they are parsed here, strictly (ISO 8601).
_FILTER_TIMES = ("since", "until", "updated_before")
_DATETIME = TypeAdapter(datetime)


class UnreadableJobError(UnreadableRecordError):
    """A job is stored under this id but cannot be read (an
    :class:`~mahavishnu_dlq.errors.UnreadableRecordError`, so whoever shows those
    shows this one too; ``task_id`` holds the job's id)."""

    def __init__(self, job_id: str, reason: str, source: str | None = None) -> None:
        super().__init__(job_id, reason, source)
        self.job_id = job_id
        self.args = (f"job {job_id!r} is stored but cannot be read: {reason}",)

    def __str__(self) -> str:
        return str(self.args[0])


def decode_job(job_id: str, source: Any) -> Job:
    """The job in ``source`` (its JSON text, or the decoded dict) stored as ``job_id``;
    ``ValueError`` or ``TypeError`` when it is not a job this version reads, or the
    job of another id (a row written by hand: mutating it would write a wrong id)."""
    if isinstance(source, str):
        try:
            source = json.loads(source)
        except RecursionError as exc:
            raise ValueError("the stored text is not JSON: nested too deeply") from exc
        except ValueError as exc:  # JSONDecodeError
            raise ValueError(f"the stored text is not JSON: {exc}") from exc
    if not isinstance(source, dict):
        raise TypeError(f"the stored job is a {type(source).__name__}, not an object")
    flt = source.get("filter")
    if isinstance(flt, dict) and any(isinstance(flt.get(k), str) for k in _FILTER_TIMES):
        times = {k: _DATETIME.validate_python(flt[k]) for k in _FILTER_TIMES if flt.get(k)}
        source = {**source, "filter": {**flt, **times}}
    job = Job.model_validate(source)
    if job.job_id != job_id:
        raise ValueError(f"the stored job is {job.job_id!r}, kept as {job_id!r}")
    return job


def read_job(where: str, job_id: str, source: Any, *, strict: bool) -> Job | None:
    """:func:`decode_job`, for a store at ``where`` (as messages name it). A job that
    cannot be decoded is reported once (``dlq.unreadable``), then: ``strict`` (a read
    of that id) raises :class:`UnreadableJobError`; otherwise (a listing) None."""
    try:
        return decode_job(job_id, source)
    except (ValueError, TypeError, KeyError) as exc:
        why = unreadable_reason(exc)
        report_unreadable(f"{where} (jobs)", job_id, why)
        if not strict:
            return None
        raw = source if isinstance(source, str) else _shown(source)
        raise UnreadableJobError(job_id, why, raw) from exc


def _shown(source: Any) -> str:
    try:
        return json.dumps(source, ensure_ascii=False, sort_keys=True)
    except (TypeError, ValueError):
        return repr(source)
