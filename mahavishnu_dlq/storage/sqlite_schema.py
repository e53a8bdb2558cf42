"""The SQLite store's file layout and statements.

Kept apart from :mod:`mahavishnu_dlq.storage.sqlite` so the store reads as its
algorithms (group commit, claims, readers) and this module as the persisted
format: the schema and its versions, how a record becomes a row and back, and
how a :class:`TaskFilter` becomes a ``WHERE`` clause.

Rows
    ``tasks`` holds one row per task: ``doc``, the record as JSON — the very
    document the OpenSearch store writes (:func:`opensearch_query.document_json`),
    so the two stores hold the same thing — and the columns a query needs:
    ``status``, ``error_category``, ``retry_policy``, ``workflow``,
    ``fingerprint``, and the microsecond times ``failed_at_us`` (listing order),
    ``updated_at_us`` (purge) and ``due_us`` (when the task becomes claimable:
    ``next_retry_at`` while pending, ``lease_expires_at`` while retrying, NULL
    otherwise). Indexes serve listing, claims, purges and fingerprints (one, on
    open rows only, finds a fingerprint's oldest open task however many closed
    ones came before it). It is a rowid table with ``task_id`` UNIQUE rather than
    keyed by the id: rows are appended in the order they are written, so a
    transaction of 100 new tasks dirties a few table pages instead of one per task
    (twice the commit rate of a ``WITHOUT ROWID`` table, measured).

Counts
    ``counts`` keeps how many rows have each status, category and policy, and how
    many open rows share each fingerprint, maintained by triggers in the same
    transaction as the row, so statistics never scan the table. An update moves
    only the counts of the columns it changed (a claim: two, not eight).

Tombstones
    ``tombstones`` records deletions a failover journal must carry to its primary
    (unused by a plain store).

Jobs
    ``jobs`` (version 2) holds the bulk jobs (:mod:`mahavishnu_dlq.jobs`), one row
    each: ``doc``, the job's JSON (``Job.to_dict()``), with its ``state`` and
    ``created_at_us`` for listings and ``version``, the number of writes it had.
    See :mod:`~mahavishnu_dlq.storage.sqlite_jobs`.

Controls
    ``controls`` (version 3) holds the records the processors of every process share
    (a circuit breaker, a token bucket per workflow), one row each: ``doc``, the
    record's JSON, under its ``key``, and ``version``, the number of writes it had.
    See :mod:`~mahavishnu_dlq.storage.sqlite_controls`.

Versions
    ``PRAGMA user_version`` holds :data:`SCHEMA_VERSION`. A file of an older
    version is migrated in place by :data:`MIGRATIONS` (each step adds, never
    removes); a file of a newer version is refused: the store would not know
    what that version means.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from mahavishnu_dlq.clock import from_micros, to_micros
from mahavishnu_dlq.jobs.model import TaskSummary
from mahavishnu_dlq.models import (
    OPEN_STATUSES,
    DeadLetterStatus,
    ErrorCategory,
    FailedTask,
    RetryPolicy,
    TaskFilter,
)
from mahavishnu_dlq.storage.base import FingerprintCount, StoreStatistics

__all__ = [
    "MIGRATIONS",
    "PRAGMAS",
    "SCHEMA_VERSION",
    "STATUS_VALUES",
    "TEXT_FUNCTION",
    "filter_sql",
    "ordered_arms",
    "read_statistics",
    "read_summary",
    "row_values",
    "text_matches",
]

#: Set on every connection: each acknowledged commit is on disk (``synchronous=FULL``;
#: the file is in WAL mode); statement journals and sorts stay in memory (written to a
#: temporary file they cost a third of an insert, and they are never needed after a crash).
PRAGMAS = ("synchronous = FULL", "temp_store = MEMORY")

#: The schema version this code writes (``PRAGMA user_version``).
SCHEMA_VERSION = 3

STATUS_VALUES = tuple(status.value for status in DeadLetterStatus)
CATEGORY_VALUES = tuple(category.value for category in ErrorCategory)
POLICY_VALUES = tuple(policy.value for policy in RetryPolicy)
OPEN_VALUES = tuple(sorted(status.value for status in OPEN_STATUSES))
_OPEN_SQL = "(" + ", ".join(f"'{value}'" for value in OPEN_VALUES) + ")"


_KINDS = (("status", "status"), ("category", "error_category"), ("policy", "retry_policy"))
_UPSERT_COUNTS = "ON CONFLICT(kind, key) DO UPDATE SET n = n + excluded.n;"


def _counted(row: str) -> str:
    """Whether ``row`` (NEW or OLD) counts toward its fingerprint: open, with one."""
    return f"({row}.status IN {_OPEN_SQL} AND {row}.fingerprint != '')"


def _count_row(sign: str, row: str) -> str:
    """Statements adding ``sign`` 1 to every count of the ``row`` (NEW or OLD)."""
    values = ", ".join(f"('{kind}', {row}.{column}, {sign}1)" for kind, column in _KINDS)
    return (
        f"INSERT INTO counts(kind, key, n) VALUES {values} {_UPSERT_COUNTS}\n    "
        f"INSERT INTO counts(kind, key, n) SELECT 'fingerprint', {row}.fingerprint, {sign}1 "
        f"WHERE {_counted(row)} {_UPSERT_COUNTS}"
    )


def _count_update(kind: str, column: str) -> str:
    """A trigger moving one count from the old value of ``column`` to the new one,
    only when that column changed (a claim changes the status alone: two counts
    change, not eight)."""
    return f"""CREATE TRIGGER tasks_counted_{kind} AFTER UPDATE OF {column} ON tasks
WHEN OLD.{column} IS NOT NEW.{column} BEGIN
    INSERT INTO counts(kind, key, n) VALUES ('{kind}', OLD.{column}, -1),
        ('{kind}', NEW.{column}, 1) {_UPSERT_COUNTS}
END"""


_FINGERPRINT_UPDATE = f"""CREATE TRIGGER tasks_counted_fingerprint
AFTER UPDATE OF status, fingerprint ON tasks
WHEN {_counted("OLD")} IS NOT {_counted("NEW")}
    OR ({_counted("NEW")} AND OLD.fingerprint IS NOT NEW.fingerprint) BEGIN
    INSERT INTO counts(kind, key, n) SELECT 'fingerprint', OLD.fingerprint, -1
        WHERE {_counted("OLD")} {_UPSERT_COUNTS}
    INSERT INTO counts(kind, key, n) SELECT 'fingerprint', NEW.fingerprint, 1
        WHERE {_counted("NEW")} {_UPSERT_COUNTS}
END"""

#: Statements of each schema version, from the one before it (version 0: an empty file).
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """CREATE TABLE tasks (
            task_id TEXT NOT NULL UNIQUE,
            doc TEXT NOT NULL,
            status TEXT NOT NULL,
            error_category TEXT NOT NULL,
            retry_policy TEXT NOT NULL,
            workflow TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            failed_at_us INTEGER NOT NULL,
            updated_at_us INTEGER NOT NULL,
            due_us INTEGER
        )""",
        "CREATE INDEX tasks_listing ON tasks (failed_at_us DESC, task_id)",
        "CREATE INDEX tasks_status ON tasks (status, failed_at_us DESC, task_id)",
        "CREATE INDEX tasks_due ON tasks (due_us, task_id) WHERE due_us IS NOT NULL",
        "CREATE INDEX tasks_updated ON tasks (status, updated_at_us)",
        "CREATE INDEX tasks_fingerprint ON tasks (fingerprint, failed_at_us)",
        # the oldest open task of a fingerprint (statistics), however many closed ones
        # came before it: through tasks_fingerprint that is a walk over all of them
        (
            "CREATE INDEX tasks_open_fingerprint ON tasks (fingerprint, failed_at_us, task_id) "
            f"WHERE status IN {_OPEN_SQL}"
        ),
        "CREATE INDEX tasks_workflow ON tasks (workflow, failed_at_us DESC, task_id)",
        """CREATE TABLE counts (
            kind TEXT NOT NULL,
            key TEXT NOT NULL,
            n INTEGER NOT NULL,
            PRIMARY KEY (kind, key)
        ) WITHOUT ROWID""",
        "CREATE TABLE tombstones (task_id TEXT PRIMARY KEY, deleted_us INTEGER NOT NULL)",
        f"""CREATE TRIGGER tasks_counted_in AFTER INSERT ON tasks BEGIN
    {_count_row("+", "NEW")}
END""",
        f"""CREATE TRIGGER tasks_counted_out AFTER DELETE ON tasks BEGIN
    {_count_row("-", "OLD")}
END""",
        *(_count_update(kind, column) for kind, column in _KINDS),
        _FINGERPRINT_UPDATE,
    ),
    2: (
        """CREATE TABLE jobs (
            job_id TEXT PRIMARY KEY,
            state TEXT NOT NULL,
            created_at_us INTEGER NOT NULL,
            version INTEGER NOT NULL,
            doc TEXT NOT NULL
        )""",
        "CREATE INDEX jobs_listing ON jobs (created_at_us DESC, job_id)",
    ),
    3: (
        "CREATE TABLE controls (key TEXT PRIMARY KEY, version INTEGER NOT NULL, doc TEXT NOT NULL)",
    ),
}

if max(MIGRATIONS) != SCHEMA_VERSION:  # pragma: no cover - a version without its migration
    raise RuntimeError("SCHEMA_VERSION has no migration")

#: Columns of a row, in the order :func:`row_values` gives them.
COLUMNS = (
    "task_id",
    "doc",
    "status",
    "error_category",
    "retry_policy",
    "workflow",
    "fingerprint",
    "failed_at_us",
    "updated_at_us",
    "due_us",
)

UPSERT = (
    f"INSERT INTO tasks ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))}) "
    "ON CONFLICT(task_id) DO UPDATE SET "
    + ", ".join(f"{column} = excluded.{column}" for column in COLUMNS[1:])
)


def row_values(task: FailedTask, doc: str) -> tuple[Any, ...]:
    """The row of ``task`` (its document ``doc``), as :data:`COLUMNS` orders them."""
    status = task.status
    if status is DeadLetterStatus.PENDING:
        due = task.next_retry_at
    elif status is DeadLetterStatus.RETRYING:
        due = task.lease_expires_at
    else:
        due = None
    return (
        task.task_id,
        doc,
        status.value,
        task.error_category.value,
        task.retry_policy.value,
        task.workflow,
        task.error_fingerprint,
        to_micros(task.failed_at),
        to_micros(task.updated_at),
        None if due is None else to_micros(due),
    )


#: The SQL function the ``text`` filter calls (registered on every connection).
TEXT_FUNCTION = "dlq_text_matches"
TEXT_ARGUMENTS = 5
_TEXT_FIELDS_SQL = "task_id, workflow, fingerprint, doc"
_DOC_TEXT_FIELDS = ("error", "error_type", "last_error")


def text_matches(needle: str, *fields: str | None) -> int:
    """1 when ``needle`` (already case-folded) is in the id, workflow, fingerprint, or the
    error, error type or last error of ``doc`` (the last field) under Unicode case
    folding, as :meth:`TaskFilter.matches` compares; the body of :data:`TEXT_FUNCTION`.

    The error texts are read from the document in Python: SQLite's ``json_extract``
    stops a text at its first NUL character."""
    *columns, doc = fields
    for field in columns:
        if isinstance(field, str) and needle in field.casefold():
            return 1
    try:
        record = json.loads(doc) if isinstance(doc, str) else None
    except (ValueError, RecursionError):
        return 0
    if not isinstance(record, dict):
        return 0
    for name in _DOC_TEXT_FIELDS:
        field = record.get(name)
        if isinstance(field, str) and needle in field.casefold():
            return 1
    return 0


def _in(column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
    return f"{column} IN ({', '.join('?' * len(values))})", list(values)


def filter_sql(flt: TaskFilter | None) -> tuple[str, list[Any]]:
    """``(WHERE clause or "", parameters)`` selecting what ``flt.matches`` selects."""
    if flt is None:
        return "", []
    clauses: list[str] = []
    params: list[Any] = []

    def add(clause: str, values: Sequence[Any]) -> None:
        clauses.append(clause)
        params.extend(values)

    if flt.status is not None:
        add(*_in("status", [status.value for status in flt.status]))
    if flt.error_category is not None:
        add(*_in("error_category", [category.value for category in flt.error_category]))
    if flt.workflow is not None:
        add(*_in("workflow", list(flt.workflow)))
    if flt.since is not None:
        add("failed_at_us >= ?", [to_micros(flt.since)])
    if flt.until is not None:
        add("failed_at_us < ?", [to_micros(flt.until)])
    if flt.updated_before is not None:
        add("updated_at_us < ?", [to_micros(flt.updated_before)])
    if flt.fingerprint is not None:
        add("fingerprint = ?", [flt.fingerprint])
    if flt.text:
        add(f"{TEXT_FUNCTION}(?, {_TEXT_FIELDS_SQL})", [flt.text.casefold()])
    if not clauses:
        return "", []
    return "WHERE " + " AND ".join(clauses), params


def ordered_arms(flt: TaskFilter | None) -> list[tuple[str, list[Any]]]:
    """The ``filter_sql`` of ``flt`` split into arms that each read one ordered index
    range: one per status when it names several (else one per workflow when it names
    several), else ``flt`` whole. A page of a filter naming several statuses is then
    the merge of each arm's first rows, not a sort of every matching row (which is
    most of a large file: 1.1 s for two statuses at a million rows)."""
    for field in ("status", "workflow"):
        values = getattr(flt, field, None)
        if values is not None and len(values) > 1:
            assert flt is not None  # noqa: S101 - values come from it
            return [filter_sql(flt.model_copy(update={field: (value,)})) for value in values]
    return [filter_sql(flt)]


def _marks(values: Sequence[Any]) -> str:
    return ", ".join("?" * len(values))


def read_statistics(
    connection: sqlite3.Connection, top_fingerprints: int, undecodable: Sequence[str]
) -> StoreStatistics:
    """The :class:`StoreStatistics` of the file: counts from ``counts`` (no table scan),
    the oldest pending and each top fingerprint's example through their indexes.

    ``unreadable`` is what the values tell (statuses, categories and policies this
    version does not know) plus the ``undecodable`` ids a read of this process met
    whose values look known."""
    counts: dict[str, dict[str, int]] = {"status": {}, "category": {}, "policy": {}}
    for kind, key, n in connection.execute(
        "SELECT kind, key, n FROM counts WHERE kind != 'fingerprint' AND n > 0"
    ):
        counts[kind][key] = n
    by_status = counts["status"]
    unreadable = sum(n for key, n in by_status.items() if key not in STATUS_VALUES)
    unreadable += sum(n for key, n in counts["category"].items() if key not in CATEGORY_VALUES)
    unreadable += sum(n for key, n in counts["policy"].items() if key not in POLICY_VALUES)
    for start in range(0, len(undecodable), 500):
        chunk = undecodable[start : start + 500]
        unreadable += connection.execute(
            f"SELECT COUNT(*) FROM tasks WHERE task_id IN ({_marks(chunk)}) "
            f"AND status IN ({_marks(STATUS_VALUES)}) "
            f"AND error_category IN ({_marks(CATEGORY_VALUES)}) "
            f"AND retry_policy IN ({_marks(POLICY_VALUES)})",
            (*chunk, *STATUS_VALUES, *CATEGORY_VALUES, *POLICY_VALUES),
        ).fetchone()[0]
    oldest = connection.execute(
        "SELECT MIN(failed_at_us) FROM tasks WHERE status = 'pending'"
    ).fetchone()[0]
    top: list[FingerprintCount] = []
    if top_fingerprints > 0:
        rows = connection.execute(
            "SELECT key, n FROM counts WHERE kind = 'fingerprint' AND n > 0 "
            "ORDER BY n DESC, key LIMIT ?",
            (top_fingerprints,),
        ).fetchall()
        for fingerprint, n in rows:
            example = connection.execute(
                "SELECT json_extract(doc, '$.error_type'), json_extract(doc, '$.error') "
                # the same condition as tasks_open_fingerprint's: read through that index
                f"FROM tasks WHERE fingerprint = ? AND status IN {_OPEN_SQL} "
                "AND json_valid(doc) "  # json_extract fails on a row that is not JSON
                "ORDER BY failed_at_us, task_id LIMIT 1",
                (fingerprint,),
            ).fetchone()
            error_type, error = (
                (value if isinstance(value, str) else "" for value in example)
                if example is not None
                else ("", "")
            )
            top.append(FingerprintCount(fingerprint, n, error_type, error[:200]))
    return StoreStatistics(
        total=sum(by_status.values()),
        by_status={status: by_status.get(status.value, 0) for status in DeadLetterStatus},
        by_category=dict(counts["category"]),
        by_policy=dict(counts["policy"]),
        oldest_pending_failed_at=None if oldest is None else from_micros(oldest),
        top_fingerprints=top,
        unreadable=unreadable,
    )


def read_summary(connection: sqlite3.Connection, flt: TaskFilter, sample: int) -> TaskSummary:
    """The :class:`TaskSummary` of ``flt``: one ``GROUP BY`` over the matching rows for
    the counts, and the first ``sample`` ids in listing order (through the listing
    indexes, as ``SQLiteStore.query`` reads them), both in one read transaction so
    they describe the same file."""
    where, params = filter_sql(flt)
    by_status: dict[str, int] = {}
    by_category: dict[str, int] = {}
    by_workflow: dict[str, int] = {}
    connection.execute("BEGIN")
    try:
        groups = connection.execute(
            f"SELECT status, error_category, workflow, COUNT(*) FROM tasks {where} "
            "GROUP BY status, error_category, workflow",
            params,
        ).fetchall()
        ids = _first_ids(connection, flt, sample) if sample > 0 else []
    finally:
        if connection.in_transaction:
            connection.execute("COMMIT")
    for status, category, workflow, n in groups:
        by_status[status] = by_status.get(status, 0) + n
        by_category[category] = by_category.get(category, 0) + n
        by_workflow[workflow] = by_workflow.get(workflow, 0) + n
    return TaskSummary.of(by_status, by_category, by_workflow, ids)


def _first_ids(connection: sqlite3.Connection, flt: TaskFilter, limit: int) -> list[str]:
    """The first ``limit`` ids ``flt`` selects in listing order (newest failure first,
    then by id): each of :func:`ordered_arms` in its index order, merged."""
    order = " ORDER BY failed_at_us DESC, task_id ASC LIMIT ?"
    parts = [
        (f"SELECT task_id, failed_at_us FROM tasks {where}{order}", [*params, limit])
        for where, params in ordered_arms(flt)
    ]
    if len(parts) == 1:
        sql, values = parts[0]
    else:
        union = " UNION ALL ".join(f"SELECT * FROM ({part})" for part, _ in parts)
        sql = f"SELECT task_id, failed_at_us FROM ({union}){order}"
        values = [value for _, part_values in parts for value in part_values] + [limit]
    return [str(task_id) for task_id, _ in connection.execute(sql, values)]
