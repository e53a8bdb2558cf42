"""The OpenSearch store's reads of many records: listings, counts, summaries,
statistics and the console's aggregations (fingerprint groups, the failure histogram).

:class:`OpenSearchReads` is the part of
:class:`~mahavishnu_dlq.storage.opensearch.OpenSearchStore` that searches without
writing. Each read first makes this store's own writes searchable
(``_ensure_visible``). Counts and aggregations are size-0 searches (exact: the
index has one shard); listings decode each hit and skip documents that cannot be
read. A ``text`` filter too long for one regular expression selects a superset
(:func:`~mahavishnu_dlq.storage.opensearch_query.needs_post_filter`): then a
summary or a grouping reads the listing instead, each hit checked.

The aggregations leave out documents that cannot be read, as far as a query can
tell (:func:`~mahavishnu_dlq.storage.opensearch_query.readable_query`: values this
version does not know, a required field missing). Times are aggregated on
``failed_at_us`` (microseconds: a ``long`` below 2**53, exact as a double).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from mahavishnu_dlq.clock import from_micros
from mahavishnu_dlq.jobs.model import TaskSummary
from mahavishnu_dlq.models import (
    DeadLetterStatus,
    FailedTask,
    RetryPolicy,
    TaskFilter,
    TaskPage,
    decode_cursor,
    encode_cursor,
)
from mahavishnu_dlq.storage import opensearch_query as q
from mahavishnu_dlq.storage.aggregations import (
    EXAMPLE_CHARS,
    GROUP_WORKFLOWS,
    Buckets,
    GroupCounter,
    check_limit,
    histogram_buckets,
)
from mahavishnu_dlq.storage.base import (
    FingerprintGroup,
    HistogramBucket,
    StoreStatistics,
    UnreadableRecords,
)
from mahavishnu_dlq.storage.oldest import check_oldest_limit, policy_value
from mahavishnu_dlq.storage.opensearch_client import require_asyncio

__all__ = [
    "MAX_PAGE",
    "OpenSearchReads",
    "groups_body",
    "histogram_body",
    "read_groups",
    "read_histogram",
]

MAX_PAGE = 10_000  # index.max_result_window
_BY_COUNT = [{"_count": "desc"}, {"_key": "asc"}]  # biggest first, ties by key


def _readable(*clauses: dict[str, Any]) -> dict[str, Any]:
    return {"bool": {"filter": [*clauses, q.readable_query()]}}


def groups_body(flt: TaskFilter | None, limit: int) -> dict[str, Any]:
    """One size-0 search for :meth:`Store.fingerprint_groups`: the ``limit`` biggest
    fingerprints of what ``flt`` selects (no empty one), each with its first failure,
    its biggest workflows, its statuses, and its newest record as the example (whose
    sort value is the group's last failure: a ``max`` would cost a pass of its own)."""
    query = _readable(q.filter_query(flt))
    query["bool"]["must_not"] = [{"term": {"error_fingerprint": ""}}]
    example = {
        "size": 1,
        "sort": [{"failed_at_us": "desc"}, {"task_id": "asc"}],
        "_source": ["error", "error_type"],
    }
    return {
        "size": 0,
        "track_total_hits": False,
        "query": query,
        "aggs": {
            "fp": {
                "terms": {"field": "error_fingerprint", "size": limit, "order": _BY_COUNT},
                "aggs": {
                    "first": {"min": {"field": "failed_at_us"}},
                    "workflows": {
                        "terms": {"field": "workflow", "size": GROUP_WORKFLOWS, "order": _BY_COUNT}
                    },
                    "status": {"terms": {"field": "status", "size": 100}},
                    "example": {"top_hits": example},
                },
            }
        },
    }


def _text(source: Mapping[str, Any], name: str) -> str:
    value = source.get(name)
    return value if isinstance(value, str) else ""


def _micros(value: Any) -> int:
    """A time in microseconds as an aggregation gives it (a double: exact below 2**53)."""
    return round(float(value))


def read_groups(response: Mapping[str, Any]) -> list[FingerprintGroup]:
    """The groups in a response to :func:`groups_body`."""
    groups: list[FingerprintGroup] = []
    for bucket in response["aggregations"]["fp"]["buckets"]:
        [newest] = bucket["example"]["hits"]["hits"]  # every bucket has a record
        source = newest.get("_source") or {}
        groups.append(
            FingerprintGroup(
                fingerprint=str(bucket["key"]),
                count=bucket["doc_count"],
                error_type=_text(source, "error_type"),
                example_error=_text(source, "error")[:EXAMPLE_CHARS],
                first_seen=from_micros(_micros(bucket["first"]["value"])),
                last_seen=from_micros(_micros(newest["sort"][0])),
                workflows={str(b["key"]): b["doc_count"] for b in bucket["workflows"]["buckets"]},
                by_status={str(b["key"]): b["doc_count"] for b in bucket["status"]["buckets"]},
            )
        )
    return groups


def histogram_body(buckets: Buckets) -> dict[str, Any]:
    """One size-0 search for :meth:`Store.failure_histogram`: per category, a
    ``histogram`` of ``failed_at_us`` whose buckets are anchored at ``since`` by their
    ``offset`` (a ``date_histogram`` aligns its buckets to the epoch, and keeps
    milliseconds only). The category outside and the times inside is the cheaper
    order (one histogram per category rather than a terms aggregation per bucket).

    Exact: a bucket's index is ``floor((t - offset) / width)`` in doubles, and every
    operand is an integer below 2**53 (microseconds until the year 2255), so the
    quotient rounds to an integer only when it is one."""
    window = {"range": {"failed_at_us": {"gte": buckets.since_us, "lt": buckets.until_us}}}
    histogram = {
        "field": "failed_at_us",
        "interval": buckets.width_us,
        "offset": buckets.since_us % buckets.width_us,
    }
    return {
        "size": 0,
        "track_total_hits": False,
        "query": _readable(window),
        "aggs": {
            "category": {
                "terms": {"field": "error_category", "size": 100},
                "aggs": {"time": {"histogram": histogram}},
            }
        },
    }


def read_histogram(response: Mapping[str, Any], buckets: Buckets) -> list[HistogramBucket]:
    """The histogram in a response to :func:`histogram_body`."""
    counts: dict[int, dict[str, int]] = {}
    for category in response["aggregations"]["category"]["buckets"]:
        for bucket in category["time"]["buckets"]:
            index = buckets.index(_micros(bucket["key"]))
            if index is not None and bucket["doc_count"]:
                counts.setdefault(index, {})[str(category["key"])] = bucket["doc_count"]
    return buckets.histogram(counts)


class OpenSearchReads:
    """The reads of :class:`~mahavishnu_dlq.storage.opensearch.OpenSearchStore` (a mixin)."""

    _client: Any  # AsyncOpenSearch
    _index: str
    _unreadable: UnreadableRecords
    _translated: Callable[[str], AbstractContextManager[None]]

    if TYPE_CHECKING:  # OpenSearchStore's

        async def _search(self, body: dict[str, Any], action: str) -> list[dict[str, Any]]: ...

        async def _ensure_visible(self) -> None: ...

    async def _aggregate(self, body: dict[str, Any], action: str) -> Mapping[str, Any]:
        """The response to the search ``body``, after this store's writes are visible."""
        await self._ensure_visible()
        with self._translated(action):
            response: Mapping[str, Any] = await self._client.search(index=self._index, body=body)
        return response

    async def _count(self, query: dict[str, Any], action: str) -> int:
        await self._ensure_visible()
        with self._translated(action):
            response = await self._client.count(index=self._index, body={"query": query})
        return int(response["count"])

    async def query(
        self, flt: TaskFilter, *, limit: int, cursor: str | None = None
    ) -> TaskPage[FailedTask]:
        require_asyncio()
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        body: dict[str, Any] = {
            "query": q.filter_query(flt),
            "sort": q.LISTING_SORT,
            "track_total_hits": False,
        }
        if cursor is not None:
            key, last_id = decode_cursor(cursor)
            body["search_after"] = [-key, last_id]
        check = flt.matches if q.needs_post_filter(flt) else None
        await self._ensure_visible()
        page: list[FailedTask] = []
        last_sort: list[Any] | None = None
        more = False
        while not more:
            body["size"] = min(limit + 1 - len(page), MAX_PAGE)
            found = await self._search(body, "query")
            for hit in found:
                task = self._unreadable.read(hit["_id"], hit["_source"])
                if task is None or (check is not None and not check(task)):
                    continue  # unreadable (skipped, counted), or not matching a long text
                if len(page) == limit:
                    more = True
                    break
                page.append(task)
                last_sort = hit["sort"]
            if len(found) < body["size"]:
                break
            body["search_after"] = found[-1]["sort"]
        next_cursor = None
        if more and last_sort is not None:
            next_cursor = encode_cursor(-last_sort[0], last_sort[1])
        return TaskPage(page, next_cursor)

    async def oldest(
        self, status: DeadLetterStatus, *, limit: int, retry_policy: RetryPolicy | None = None
    ) -> list[FailedTask]:
        """See :mod:`mahavishnu_dlq.storage.oldest`: one search sorted by
        ``failed_at_us`` ascending (more only when some hits cannot be read)."""
        require_asyncio()
        check_oldest_limit(limit)
        clauses: list[dict[str, Any]] = [{"term": {"status": DeadLetterStatus(status).value}}]
        if retry_policy is not None:
            clauses.append({"term": {"retry_policy": policy_value(retry_policy)}})
        body: dict[str, Any] = {
            "query": {"bool": {"filter": clauses}},
            "sort": [{"failed_at_us": "asc"}, {"task_id": "asc"}],
            "track_total_hits": False,
        }
        await self._ensure_visible()
        found: list[FailedTask] = []
        while len(found) < limit:
            body["size"] = limit - len(found)
            hits = await self._search(body, "oldest")
            for hit in hits:
                task = self._unreadable.read(hit["_id"], hit["_source"])
                if task is not None:
                    found.append(task)
            if len(hits) < body["size"]:
                break
            body["search_after"] = hits[-1]["sort"]
        return found

    async def count(self, flt: TaskFilter | None = None) -> int:
        require_asyncio()
        if flt is not None and q.needs_post_filter(flt):  # a long text: check each match
            total, cursor = 0, None
            while True:
                page = await self.query(flt, limit=MAX_PAGE - 1, cursor=cursor)
                total += len(page)
                if page.cursor is None:
                    return total
                cursor = page.cursor
        return await self._count(q.filter_query(flt), "count")

    async def open_count(self) -> int:
        require_asyncio()
        return await self._count(q.OPEN_QUERY, "open_count")

    async def summarize(self, flt: TaskFilter, *, sample: int = 20) -> TaskSummary:
        """One search: the sample's ids, the exact total and three terms aggregations."""
        require_asyncio()
        sample = min(max(sample, 0), MAX_PAGE)
        if q.needs_post_filter(flt):  # a long text: the index selects a superset
            return await self._summary_of_listing(flt, sample)
        return q.read_summary(await self._aggregate(q.summary_body(flt, sample), "summarize"))

    async def _summary_of_listing(self, flt: TaskFilter, sample: int) -> TaskSummary:
        """:meth:`summarize` by reading every match, each checked by the listing."""
        counts: tuple[dict[str, int], ...] = ({}, {}, {})
        ids: list[str] = []
        cursor: str | None = None
        while True:
            page = await self.query(flt, limit=MAX_PAGE - 1, cursor=cursor)
            for task in page:
                keys = (task.status.value, task.error_category.value, task.workflow)
                for count, key in zip(counts, keys, strict=True):
                    count[key] = count.get(key, 0) + 1
                if len(ids) < sample:
                    ids.append(task.task_id)
            if page.cursor is None:
                break
            cursor = page.cursor
        by_status, by_category, by_workflow = counts
        return TaskSummary.of(by_status, by_category, by_workflow, ids)

    async def statistics(self, *, top_fingerprints: int = 5) -> StoreStatistics:
        require_asyncio()
        body = q.statistics_body(top_fingerprints, self._unreadable.keys)
        return q.read_statistics(await self._aggregate(body, "statistics"))

    async def fingerprint_groups(
        self, flt: TaskFilter | None = None, *, limit: int = 50
    ) -> list[FingerprintGroup]:
        """One size-0 search: a terms aggregation with its sub-aggregations
        (:func:`groups_body`)."""
        require_asyncio()
        limit = check_limit(limit)
        if flt is not None and q.needs_post_filter(flt):  # a long text: check each match
            return await self._groups_of_listing(flt, limit)
        return read_groups(await self._aggregate(groups_body(flt, limit), "fingerprint_groups"))

    async def _groups_of_listing(self, flt: TaskFilter, limit: int) -> list[FingerprintGroup]:
        """:meth:`fingerprint_groups` by reading every match, each checked by the listing."""
        counter = GroupCounter()
        cursor: str | None = None
        while True:
            page = await self.query(flt, limit=MAX_PAGE - 1, cursor=cursor)
            for task in page:
                if task.error_fingerprint:
                    counter.add(
                        task.error_fingerprint,
                        status=task.status.value,
                        workflow=task.workflow,
                        failed_at=task.failed_at,
                        task_id=task.task_id,
                        error_type=task.error_type,
                        error=task.error,
                    )
            if page.cursor is None:
                return counter.groups(limit)
            cursor = page.cursor

    async def failure_histogram(
        self, *, since: datetime, until: datetime, bucket: timedelta
    ) -> list[HistogramBucket]:
        """One size-0 search: a histogram per category (:func:`histogram_body`)."""
        require_asyncio()
        buckets = histogram_buckets(since, until, bucket)
        response = await self._aggregate(histogram_body(buckets), "failure_histogram")
        return read_histogram(response, buckets)
