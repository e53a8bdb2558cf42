"""Set-up and bare-client baselines for ``benchmarks.bench_jobs``.

* :class:`Corpus`: N exhausted tasks (20 workflows, every error category) as ready
  ``_bulk`` bodies, so an index is filled — and reset to "all exhausted" between
  runs — by plain bulk writes of the same documents, a few seconds per 100k.
* The bare dependency doing what a job does, with the opensearch-py client only:
  :func:`raw_summary` (one ``_search``: the sample, the total and three terms
  aggregations) and :func:`raw_replay` (``search_after`` pages and one conditional
  ``_bulk`` per page).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from mahavishnu_dlq.clock import to_micros, utcnow
from mahavishnu_dlq.jobs import Job, JobKind
from mahavishnu_dlq.models import DeadLetterStatus, ErrorCategory, RetryPolicy
from mahavishnu_dlq.storage import opensearch_query as q
from mahavishnu_dlq.storage.opensearch import OpenSearchStore
from mahavishnu_dlq.testing import make_task

__all__ = [
    "REPLAY_STATUSES",
    "WORKFLOWS",
    "Corpus",
    "raw_replay",
    "raw_summary",
    "replay_query",
    "summary_aggs",
]

WORKFLOWS = 20  # wf-0 … wf-19: two of them are a tenth of the tasks
_CHUNK = 5000  # documents per bulk request when filling

#: the statuses a replay selects by default (pending, exhausted, retrying)
REPLAY_STATUSES = [s.value for s in Job.default_statuses(JobKind.REPLAY)]


def replay_query(until: datetime) -> dict[str, Any]:
    """What a replay job with no filter selects, written out by hand: its default
    statuses, failed before the snapshot."""
    return {
        "bool": {
            "filter": [
                {"terms": {"status": REPLAY_STATUSES}},
                {"range": {"failed_at_us": {"lt": to_micros(until) + 1}}},
            ]
        }
    }


def summary_aggs() -> dict[str, Any]:
    return {
        "status": {"terms": {"field": "status", "size": 100}},
        "category": {"terms": {"field": "error_category", "size": 100}},
        "workflow": {"terms": {"field": "workflow", "size": 100}},
    }


@dataclass
class Corpus:
    """``count`` exhausted tasks, as ``_bulk`` bodies of :data:`_CHUNK` documents."""

    count: int
    bodies: list[str]

    @classmethod
    def make(cls, count: int) -> Corpus:
        now = utcnow()
        categories = list(ErrorCategory)
        bodies = []
        for start in range(0, count, _CHUNK):
            lines = []
            for i in range(start, min(count, start + _CHUNK)):
                failed = now - timedelta(milliseconds=10 * (i + 1))
                task = make_task(
                    task_id=f"job-task-{i}",
                    workflow=f"wf-{i % WORKFLOWS}",
                    task={"order": i, "customer": f"c-{i % 997}", "lines": [1, 2, 3]},
                    now=failed,
                    error=f"connection reset by peer ({i % 7})",
                    error_category=categories[i % len(categories)],
                    error_fingerprint=f"fp-{i % 50}",
                    status=DeadLetterStatus.EXHAUSTED,
                    retry_policy=RetryPolicy.EXPONENTIAL,
                    retry_count=3,
                    max_retries=3,
                )
                lines.append(json.dumps({"index": {"_id": q.doc_id(task.task_id)}}))
                lines.append(q.document_json(task, "bench-fill"))
            lines.append("")
            bodies.append("\n".join(lines))
        return cls(count, bodies)

    async def fill(self, store: OpenSearchStore) -> float:
        """Write every document (over what is there: a reset to "all exhausted"),
        then refresh; the seconds it took."""
        started = time.perf_counter()
        client = store._client
        for body in self.bodies:
            answer = await client.bulk(
                body=body, index=store._index, params={"filter_path": "errors"}
            )
            assert not answer["errors"], "bulk fill failed"
        await client.indices.refresh(index=store._index)
        return time.perf_counter() - started


async def raw_summary(store: OpenSearchStore, until: datetime) -> dict[str, Any]:
    """One ``_search``: the first 20 ids, the exact total, terms aggregations on
    status, error_category and workflow."""
    body = {
        "query": replay_query(until),
        "sort": [{"failed_at_us": "desc"}, {"task_id": "asc"}],
        "size": 20,
        "_source": ["task_id"],
        "track_total_hits": True,
        "aggs": summary_aggs(),
    }
    answer: dict[str, Any] = await store._client.search(index=store._index, body=body)
    return answer


def _replayed(source: dict[str, Any], now_iso: str, now_us: int, marker: str) -> dict[str, Any]:
    """What a replay makes of an exhausted document: pending, due now, one more retry."""
    source.update(
        status="pending",
        next_retry_at=now_iso,
        due_us=now_us,
        max_retries=max(source["max_retries"], source["retry_count"] + 1),
        lease_owner=None,
        lease_expires_at=None,
        updated_at=now_iso,
        updated_at_us=now_us,
        last_job_id=marker,
        write_id=uuid.uuid4().hex,
    )
    return source


async def raw_replay(store: OpenSearchStore, until: datetime, page: int) -> int:
    """The bare client doing a replay's work: ``search_after`` pages of ``page`` hits
    (with ``_seq_no``/``_primary_term``), each hit changed as a replay changes it and
    written back by one conditional ``_bulk`` per page. No ``_mget`` (the search gave
    the versions), no job record, no refresh. The documents replayed."""
    client = store._client
    body: dict[str, Any] = {
        "query": replay_query(until),
        "sort": [{"failed_at_us": "desc"}, {"task_id": "asc"}],
        "size": page,
        "seq_no_primary_term": True,
        "track_total_hits": False,
    }
    marker = f"raw-{uuid.uuid4().hex[:8]}"
    done = 0
    while True:
        answer = await client.search(index=store._index, body=body)
        hits: Sequence[dict[str, Any]] = answer["hits"]["hits"]
        if not hits:
            return done
        now = utcnow()
        now_iso = now.isoformat().replace("+00:00", "Z")
        now_us = to_micros(now)
        lines = []
        for hit in hits:
            meta = {
                "_id": hit["_id"],
                "if_seq_no": hit["_seq_no"],
                "if_primary_term": hit["_primary_term"],
            }
            lines.append(json.dumps({"index": meta}))
            lines.append(json.dumps(_replayed(hit["_source"], now_iso, now_us, marker)))
        lines.append("")
        written = await client.bulk(
            body="\n".join(lines), index=store._index, params={"filter_path": "errors"}
        )
        assert not written["errors"], "raw replay: a conditional write was refused"
        done += len(hits)
        if len(hits) < page:
            return done
        body["search_after"] = hits[-1]["sort"]
