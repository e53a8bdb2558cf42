"""The OpenSearch store's index layout and request bodies (no I/O).

Kept apart from :mod:`mahavishnu_dlq.storage.opensearch` so the store reads as
its algorithms (compare-and-set, claims, group commit) and this module as the
persisted format: the mapping, how a :class:`FailedTask` becomes a document and
back, and how a :class:`TaskFilter` becomes a query.

Mapping: ``dynamic: strict``; keywords for ids, status, category, policy,
fingerprint, workflow and worker; the error texts as keywords too (up to 8191
characters; longer values are stored but not searchable) so the case-insensitive
substring filter is a ``regexp`` query with explicit case classes
(``case_insensitive`` only folds ASCII), a long needle searched by its longest
prefix that fits and checked with :meth:`TaskFilter.matches`; ``task``,
``metadata`` and ``attempts`` stored but not indexed.

Document layout: every field of :class:`FailedTask` in its JSON form
(``model_dump(mode="json")``: ISO 8601 timestamps with microseconds, enum
values as strings), plus three derived ``long`` fields in microseconds since
the epoch, which is what sorting and range filters use (``date`` keeps only
milliseconds, ``date_nanos`` cannot hold dates before 1970):

- ``failed_at_us``: listing order and ``since``/``until``;
- ``updated_at_us``: ``purge(older_than=...)`` and ``updated_before``;
- ``due_us``: when the task becomes claimable — ``next_retry_at`` while
  pending, ``lease_expires_at`` while retrying, null otherwise — so "due at
  ``now``" is one range query and "oldest due first" one sort.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from mahavishnu_dlq.clock import from_micros, to_micros
from mahavishnu_dlq.jobs.model import TaskSummary
from mahavishnu_dlq.models import (
    OPEN_STATUSES,
    DeadLetterStatus,
    ErrorCategory,
    FailedTask,
    RetryPolicy,
    TaskFilter,
    encode_json,
)
from mahavishnu_dlq.storage.base import FingerprintCount, StoreStatistics

__all__ = [
    "DERIVED_FIELDS",
    "DUE_SORT",
    "LISTING_SORT",
    "MAPPING_VERSION",
    "MAX_NEEDLE_CHARS",
    "MAX_PATTERN_CHARS",
    "OPEN_QUERY",
    "doc_id",
    "document_json",
    "due_query",
    "filter_query",
    "from_document",
    "index_body",
    "mapping_problems",
    "needs_post_filter",
    "purge_query",
    "read_statistics",
    "read_summary",
    "readable_query",
    "shard_settings",
    "statistics_body",
    "summary_body",
    "template_body",
    "text_pattern",
    "to_document",
    "unreadable_query",
    "unreadable_reason",
    "update_body",
]

#: Bumped when the mapping changes; kept in the index's ``_meta``. Versions only
#: ever add fields, so an index of an older version is upgraded in place.
MAPPING_VERSION = 2

#: Longest keyword indexed (Lucene's term limit is 32766 bytes; 4 bytes a char).
#: Longer values are stored but neither searchable nor aggregatable.
_KEYWORD_LIMIT = 8191

_KEYWORD = {"type": "keyword"}
_TEXT_KEYWORD = {"type": "keyword", "ignore_above": _KEYWORD_LIMIT}
_DATE = {"type": "date"}
_LONG = {"type": "long"}
_OPAQUE = {"type": "object", "enabled": False}  # stored in _source, never indexed

_PROPERTIES: dict[str, dict[str, Any]] = {
    "task_id": _KEYWORD,
    "workflow": _TEXT_KEYWORD,
    "task": _OPAQUE,
    "repos": _TEXT_KEYWORD,
    "error": _TEXT_KEYWORD,
    "error_type": _TEXT_KEYWORD,
    "error_category": _KEYWORD,
    "error_fingerprint": _TEXT_KEYWORD,
    "traceback": {"type": "text", "index": False},
    "last_error": _TEXT_KEYWORD,
    "last_error_type": _TEXT_KEYWORD,
    "attempts": _OPAQUE,
    "retry_count": _LONG,
    "max_retries": _LONG,
    "total_attempts": _LONG,
    "retry_policy": _KEYWORD,
    "next_retry_at": _DATE,
    "status": _KEYWORD,
    "lease_owner": _TEXT_KEYWORD,
    "lease_expires_at": _DATE,
    "metadata": _OPAQUE,
    "failed_at": _DATE,
    "created_at": _DATE,
    "updated_at": _DATE,
    "completed_at": _DATE,
    "archived_at": _DATE,
    "last_job_id": _KEYWORD,
    "failed_at_us": _LONG,
    "updated_at_us": _LONG,
    "due_us": _LONG,
    "write_id": {"type": "keyword", "index": False, "doc_values": False},
}

#: Fields of the document that are not fields of :class:`FailedTask`.
DERIVED_FIELDS = ("failed_at_us", "updated_at_us", "due_us", "write_id")

_unmapped = set(FailedTask.model_fields).symmetric_difference(
    set(_PROPERTIES).difference(DERIVED_FIELDS)
)
if _unmapped:  # pragma: no cover - a model change without a mapping change
    raise RuntimeError(f"OpenSearch mapping and FailedTask disagree on {sorted(_unmapped)}")

#: Fields the case-insensitive ``text`` filter searches (as TaskFilter.matches does).
_TEXT_FIELDS = ("task_id", "workflow", "error", "error_type", "last_error", "error_fingerprint")

#: Records that still need something done (pending, retrying, exhausted).
OPEN_QUERY = {"terms": {"status": sorted(status.value for status in OPEN_STATUSES)}}

#: Listing order: newest failure first, then by id (keyword order = code point order).
LISTING_SORT: list[dict[str, Any]] = [{"failed_at_us": "desc"}, {"task_id": "asc"}]
#: Claim order: oldest due first, then by id.
DUE_SORT: list[dict[str, Any]] = [{"due_us": "asc"}, {"task_id": "asc"}]


def _mappings() -> dict[str, Any]:
    return {
        "dynamic": "strict",
        "_meta": {"mahavishnu_dlq_mapping_version": MAPPING_VERSION},
        "properties": _PROPERTIES,
    }


def shard_settings(shards: int = 1, replicas: int | None = None) -> dict[str, Any]:
    """The index's shards and replicas (``opensearch.number_of_shards`` / ``_replicas``).

    One shard by default: a dead-letter queue is small, and exact terms aggregations
    need it. Replicas None: one replica once a second node is there
    (``auto_expand_replicas: 0-1``), none on a single node (which stays green).
    """
    copies: dict[str, Any] = (
        {"auto_expand_replicas": "0-1"} if replicas is None else {"number_of_replicas": replicas}
    )
    return {"number_of_shards": shards, **copies}


def index_body(
    refresh_interval: str = "1s", *, shards: int = 1, replicas: int | None = None
) -> dict[str, Any]:
    """Body of the create-index request."""
    settings = {**shard_settings(shards, replicas), "refresh_interval": refresh_interval}
    return {"settings": settings, "mappings": _mappings()}


def template_body(
    index: str, refresh_interval: str = "1s", *, shards: int = 1, replicas: int | None = None
) -> dict[str, Any]:
    """A composable template matching exactly ``index``, so an index re-created by
    a write (after someone deleted it) gets the strict mapping too."""
    return {
        "index_patterns": [index],
        "priority": 200,
        "template": index_body(refresh_interval, shards=shards, replicas=replicas),
        "_meta": {"managed_by": "mahavishnu-dlq", "mapping_version": MAPPING_VERSION},
    }


def mapping_problems(mappings: Mapping[str, Any]) -> tuple[list[str], bool]:
    """Check an existing index's mappings against ours.

    Returns the conflicts (one line per field whose type differs: the index
    cannot be used) and whether a compatible mapping needs an in-place update
    (fields missing, not strict, or an older mapping version).
    """
    properties: Mapping[str, Any] = mappings.get("properties") or {}
    conflicts: list[str] = []
    missing = False
    for name, wanted in _PROPERTIES.items():
        have = properties.get(name)
        if have is None:
            missing = True
            continue
        have_type = have.get("type", "object")
        if have_type != wanted["type"]:
            conflicts.append(
                f"field {name!r} is mapped as {have_type!r}, expected {wanted['type']!r}"
            )
        elif wanted.get("enabled") is False and have.get("enabled", True) is not False:
            conflicts.append(f"field {name!r} is an indexed object, expected 'enabled: false'")
    meta = mappings.get("_meta") or {}
    version = meta.get("mahavishnu_dlq_mapping_version")
    outdated = not isinstance(version, int) or version < MAPPING_VERSION
    return conflicts, missing or mappings.get("dynamic") != "strict" or outdated


def update_body() -> dict[str, Any]:
    """Body of the put-mapping request that upgrades a compatible index."""
    return _mappings()


def doc_id(task_id: str) -> str:
    """The document ``_id`` of a task: any id string (slashes, ``..``, 512 chars) maps
    to 64 safe hex characters. The task id itself is the ``task_id`` field."""
    return hashlib.sha256(task_id.encode("utf-8", "surrogatepass")).hexdigest()


def _due(task: FailedTask) -> Any:
    if task.status is DeadLetterStatus.PENDING:
        return task.next_retry_at
    if task.status is DeadLetterStatus.RETRYING:
        return task.lease_expires_at
    return None


def to_document(task: FailedTask, write_id: str) -> dict[str, Any]:
    """The stored form of ``task``, tagged with ``write_id`` (unique per write)."""
    doc = task.model_dump(mode="json")
    due = _due(task)
    doc["failed_at_us"] = to_micros(task.failed_at)
    doc["updated_at_us"] = to_micros(task.updated_at)
    doc["due_us"] = None if due is None else to_micros(due)
    doc["write_id"] = write_id
    return doc


def _iso(value: datetime | None) -> str | None:
    """A timestamp as ``model_dump(mode="json")`` writes it (UTC as ``Z``)."""
    if value is None:
        return None
    text = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def document_json(task: FailedTask, write_id: str) -> str:
    """:func:`to_document` as compact JSON text, built for the write path.

    The same document (``json.loads`` of it equals ``to_document``), without
    pydantic's serializer: the record's ``task`` and ``metadata`` are used as
    encoded when the record carries their JSON (every enqueued record does), so a
    payload is encoded once between the caller and the bulk request.
    """
    v = task.__dict__
    due = _due(task)
    failed_at, created_at, updated_at = v["failed_at"], v["created_at"], v["updated_at"]
    failed_iso = _iso(failed_at)  # a new record has one timestamp for all three
    doc = {
        "task_id": v["task_id"],
        "workflow": v["workflow"],
        "repos": v["repos"],
        "error": v["error"],
        "error_type": v["error_type"],
        "error_category": v["error_category"].value,
        "error_fingerprint": v["error_fingerprint"],
        "traceback": v["traceback"],
        "last_error": v["last_error"],
        "last_error_type": v["last_error_type"],
        "attempts": [attempt.model_dump(mode="json") for attempt in v["attempts"]],
        "retry_count": v["retry_count"],
        "max_retries": v["max_retries"],
        "total_attempts": v["total_attempts"],
        "retry_policy": v["retry_policy"].value,
        "next_retry_at": _iso(v["next_retry_at"]),
        "status": v["status"].value,
        "lease_owner": v["lease_owner"],
        "lease_expires_at": _iso(v["lease_expires_at"]),
        "failed_at": failed_iso,
        "created_at": failed_iso if created_at is failed_at else _iso(created_at),
        "updated_at": failed_iso if updated_at is failed_at else _iso(updated_at),
        "completed_at": _iso(v["completed_at"]),
        "archived_at": _iso(v["archived_at"]),
        "last_job_id": v["last_job_id"],
        "failed_at_us": to_micros(failed_at),
        "updated_at_us": to_micros(updated_at),
        "due_us": None if due is None else to_micros(due),
        "write_id": write_id,
    }
    known = task.payload_json()
    if known is None:  # kept: the next version of this record writes them as they are
        known = encode_json(v["task"]), encode_json(v["metadata"])
        task.keep_payload_json(known)
    return f'{encode_json(doc)[:-1]},"task":{known[0]},"metadata":{known[1]}}}'


def from_document(source: Mapping[str, Any]) -> FailedTask:
    """Inverse of :func:`to_document` (validated: the index may hold foreign writes).

    Raises ``ValueError`` (pydantic's ``ValidationError`` among them) or ``TypeError``
    for a document that is not a record this version can read; see
    :func:`unreadable_reason`."""
    if not isinstance(source, Mapping):
        raise TypeError(f"the document is a {type(source).__name__}, not an object")
    fields = {key: value for key, value in source.items() if key not in DERIVED_FIELDS}
    return FailedTask.model_validate(fields)


def unreadable_reason(exc: BaseException) -> str:
    """One line saying why :func:`from_document` refused a document."""
    if isinstance(exc, ValidationError):
        problems = []
        for error in exc.errors(include_url=False)[:3]:
            where = ".".join(str(part) for part in error["loc"]) or "document"
            problems.append(f"{where}: {error['msg']}")
        more = exc.error_count() - len(problems)
        return "; ".join(problems) + (f" (and {more} more)" if more > 0 else "")
    return f"{type(exc).__name__}: {exc}"


#: Fields a record cannot be read without (no default in :class:`FailedTask`).
_REQUIRED = ("task_id", "failed_at", "created_at", "updated_at", "failed_at_us")


def readable_query() -> dict[str, Any]:
    """Documents whose enum fields hold values this version knows and whose required
    fields are there: the part of being readable a query can check. Invalid text or
    a wrong shape inside a stored object is only seen when a document is read."""
    return {
        "bool": {
            "filter": [
                {"terms": {"status": sorted(s.value for s in DeadLetterStatus)}},
                {"terms": {"error_category": sorted(c.value for c in ErrorCategory)}},
                {"terms": {"retry_policy": sorted(p.value for p in RetryPolicy)}},
                *({"exists": {"field": name}} for name in _REQUIRED),
            ]
        }
    }


def unreadable_query(known: Collection[str] = ()) -> dict[str, Any]:
    """Documents that cannot be read: values this version does not know, or one of
    ``known`` (document ids a read of this process found undecodable)."""
    should: list[dict[str, Any]] = [{"bool": {"must_not": [readable_query()]}}]
    if known:
        should.append({"ids": {"values": sorted(known)}})
    return {"bool": {"should": should, "minimum_should_match": 1}}


@functools.cache
def _fold_table() -> dict[str, tuple[str, ...]]:
    """Case fold -> the characters folding to it (k -> K K; ss -> ß ẞ). Built once,
    on the first text filter, from the planes that hold cased letters."""
    table: dict[str, set[str]] = {}
    for code in range(0x20000):
        char = chr(code)
        fold = char.casefold()
        if fold != char:
            table.setdefault(fold, set()).add(char)
    return {fold: tuple(sorted(chars)) for fold, chars in table.items()}


def _literal(char: str) -> str:
    # Lucene RegExp: a backslash makes any character literal; letters and digits
    # stay bare (\d, \w … are classes)
    return char if char.isalnum() else "\\" + char


def _one_of(chars: list[str]) -> str:
    if len(chars) == 1:
        return _literal(chars[0])
    return "[" + "".join(_literal(char) for char in chars) + "]"


def _single_char_class(fold: str) -> str:
    return _one_of(sorted({fold, *_fold_table().get(fold, ())}))


def _char_pattern(char: str) -> str:
    fold = char.casefold()
    alternatives = {fold, *_fold_table().get(fold, ())}
    singles = sorted(a for a in alternatives if len(a) == 1)
    multi = sorted(a for a in alternatives if len(a) > 1)
    if not multi:
        return _one_of(singles)
    options = [_one_of(singles)] if singles else []
    options += ["".join(_single_char_class(c) for c in a) for a in multi]
    return "(" + "|".join(options) + ")"


#: Longest regular expression sent for the ``text`` filter: Lucene refuses patterns
#: longer than the index's ``max_regex_length`` (1000 by default).
MAX_PATTERN_CHARS = 900
#: Most characters of a ``text`` needle put in one regular expression: Lucene also
#: refuses a pattern whose automaton is too costly to determinize (``.*(ab){64}.*``
#: is), and 32 characters of any needle stay well below that while selecting few
#: records; a longer needle is searched by this prefix and each hit checked.
MAX_NEEDLE_CHARS = 32


def _searchable(needle: str) -> tuple[str, bool]:
    """The part of ``needle`` the query searches for, and whether it is all of it. A
    needle too long for one regular expression is searched by its longest prefix that
    fits; the caller then checks each hit with :meth:`TaskFilter.matches`."""
    length = 4  # the leading and trailing ".*"
    for index, char in enumerate(needle):
        length += len(_char_pattern(char))
        if length > MAX_PATTERN_CHARS or index >= MAX_NEEDLE_CHARS:
            return needle[:index], False
    return needle, True


def needs_post_filter(flt: TaskFilter | None) -> bool:
    """Whether :func:`filter_query` selects more than ``flt.matches`` (a long ``text``):
    then every hit must be checked with :meth:`TaskFilter.matches`."""
    return flt is not None and bool(flt.text) and not _searchable(flt.text or "")[1]


def text_pattern(needle: str) -> str:
    """A Lucene regular expression for values containing ``needle`` under Unicode case
    folding, as :meth:`TaskFilter.matches` compares (``case_insensitive`` of
    wildcard/regexp queries folds ASCII only). One difference remains: a needle that
    is part of a multi-character fold (``s`` against ``ß`` → ``ss``) does not match."""
    return ".*" + "".join(_char_pattern(char) for char in needle) + ".*"


def filter_query(flt: TaskFilter | None) -> dict[str, Any]:
    """The query selecting what ``flt.matches`` selects — or, for a ``text`` too long
    for one regular expression (:func:`needs_post_filter`), a superset of it."""
    if flt is None:
        return {"match_all": {}}
    clauses: list[dict[str, Any]] = []
    if flt.status is not None:
        clauses.append({"terms": {"status": [s.value for s in flt.status]}})
    if flt.error_category is not None:
        clauses.append({"terms": {"error_category": [c.value for c in flt.error_category]}})
    if flt.workflow is not None:
        clauses.append({"terms": {"workflow": list(flt.workflow)}})
    if flt.since is not None or flt.until is not None:
        bounds: dict[str, int] = {}
        if flt.since is not None:
            bounds["gte"] = to_micros(flt.since)
        if flt.until is not None:
            bounds["lt"] = to_micros(flt.until)
        clauses.append({"range": {"failed_at_us": bounds}})
    if flt.updated_before is not None:
        clauses.append({"range": {"updated_at_us": {"lt": to_micros(flt.updated_before)}}})
    if flt.fingerprint is not None:
        clauses.append({"term": {"error_fingerprint": flt.fingerprint}})
    searched = _searchable(flt.text)[0] if flt.text else ""
    if searched:
        pattern = text_pattern(searched)
        clauses.append(
            {
                "bool": {
                    "should": [
                        {"regexp": {name: {"value": pattern, "flags": "NONE"}}}
                        for name in _TEXT_FIELDS
                    ],
                    "minimum_should_match": 1,
                }
            }
        )
    if not clauses:
        return {"match_all": {}}
    return {"bool": {"filter": clauses}}


def purge_query(older_than: datetime | None, statuses: Collection[DeadLetterStatus]) -> Any:
    """Records in ``statuses`` last updated before ``older_than``."""
    return filter_query(TaskFilter(status=tuple(statuses), updated_before=older_than))


def statistics_body(top_fingerprints: int, unreadable: Collection[str] = ()) -> dict[str, Any]:
    """One size-0 search: terms aggregations per status, category and policy, the
    oldest pending record, the most frequent fingerprints among open records
    (each with its oldest record's error as the example), and how many documents
    cannot be read (``unreadable``: ids already found undecodable)."""
    oldest = {"top_hits": {"size": 1, "sort": [{"failed_at_us": "asc"}], "_source": False}}
    aggs: dict[str, Any] = {
        "status": {"terms": {"field": "status", "size": 100}},
        "category": {"terms": {"field": "error_category", "size": 100}},
        "policy": {"terms": {"field": "retry_policy", "size": 100}},
        "pending": {"filter": {"term": {"status": "pending"}}, "aggs": {"oldest": oldest}},
        "unreadable": {"filter": unreadable_query(unreadable)},
    }
    if top_fingerprints > 0:
        example = {
            "size": 1,
            "sort": [{"failed_at_us": "asc"}, {"task_id": "asc"}],
            "_source": ["error", "error_type"],
        }
        fingerprints = {"field": "error_fingerprint", "size": top_fingerprints, "exclude": [""]}
        aggs["open"] = {
            "filter": OPEN_QUERY,
            "aggs": {"fp": {"terms": fingerprints, "aggs": {"example": {"top_hits": example}}}},
        }
    return {"size": 0, "track_total_hits": True, "aggs": aggs}


def read_statistics(response: Mapping[str, Any]) -> StoreStatistics:
    """The :class:`StoreStatistics` in a response to :func:`statistics_body`."""
    found = response["aggregations"]

    def counts(name: str) -> dict[str, int]:
        return {bucket["key"]: bucket["doc_count"] for bucket in found[name]["buckets"]}

    statuses = counts("status")
    pending = found["pending"]["oldest"]["hits"]["hits"]
    top: list[FingerprintCount] = []
    for bucket in found["open"]["fp"]["buckets"] if "open" in found else ():
        source = bucket["example"]["hits"]["hits"][0]["_source"]
        error_type, error = source.get("error_type", ""), source.get("error", "")
        top.append(FingerprintCount(bucket["key"], bucket["doc_count"], error_type, error[:200]))
    return StoreStatistics(
        total=response["hits"]["total"]["value"],
        by_status={status: statuses.get(status.value, 0) for status in DeadLetterStatus},
        by_category=counts("category"),
        by_policy=counts("policy"),
        oldest_pending_failed_at=from_micros(pending[0]["sort"][0]) if pending else None,
        top_fingerprints=top,
        unreadable=found["unreadable"]["doc_count"] if "unreadable" in found else 0,
    )


#: Most workflows a summary counts one by one: the largest (``total`` counts every task).
SUMMARY_WORKFLOWS = 1000


def summary_body(flt: TaskFilter, sample: int) -> dict[str, Any]:
    """One search for :class:`TaskSummary`: the first ``sample`` hits of the listing
    (ids only), the exact total, and terms aggregations per status, category and
    workflow (exact: the index has one shard). Not for a filter that needs a post
    filter (:func:`needs_post_filter`): its counts would be of the superset."""
    return {
        "query": filter_query(flt),
        "sort": LISTING_SORT,
        "size": sample,
        "_source": ["task_id"],
        "track_total_hits": True,
        "aggs": {
            "status": {"terms": {"field": "status", "size": 100}},
            "category": {"terms": {"field": "error_category", "size": 100}},
            "workflow": {"terms": {"field": "workflow", "size": SUMMARY_WORKFLOWS}},
        },
    }


def read_summary(response: Mapping[str, Any]) -> TaskSummary:
    """The :class:`TaskSummary` in a response to :func:`summary_body`."""
    found = response["aggregations"]

    def counts(name: str) -> dict[str, int]:
        return {str(bucket["key"]): bucket["doc_count"] for bucket in found[name]["buckets"]}

    ids = [hit.get("_source", {}).get("task_id") for hit in response["hits"]["hits"]]
    return TaskSummary(
        total=response["hits"]["total"]["value"],
        by_status=counts("status"),
        by_category=counts("category"),
        by_workflow=counts("workflow"),
        sample=[task_id for task_id in ids if isinstance(task_id, str)],
    )


def due_query(
    now_us: int, skip: Collection[str] = (), skip_workflows: Collection[str] = ()
) -> dict[str, Any]:
    """Tasks due at ``now_us``: pending past ``next_retry_at`` or retrying past their
    lease; documents whose ids are in ``skip`` (known to be unreadable) and tasks of
    ``skip_workflows`` (their breakers are open) left out."""
    due = {"range": {"due_us": {"lte": now_us}}}
    must_not: list[dict[str, Any]] = []
    if skip:
        must_not.append({"ids": {"values": list(skip)}})
    if skip_workflows:
        must_not.append({"terms": {"workflow": sorted(skip_workflows)}})
    if not must_not:
        return due
    return {"bool": {"filter": [due], "must_not": must_not}}
