"""The SQLite store's reads of many records: listings, counts, summaries, statistics
and the console's aggregations (fingerprint groups, the failure histogram).

:class:`SQLiteReads` is the part of :class:`~mahavishnu_dlq.storage.sqlite.SQLiteStore`
that reads without writing. Each read runs on a reader connection in a worker thread
(``SQLiteStore._read``); a read of several statements runs them in one read
transaction, so its parts describe the same file. Counts and groups are ``GROUP BY``
over the columns of :mod:`~mahavishnu_dlq.storage.sqlite_schema` (no record is
decoded); listings decode each row and skip those that cannot be read.

Rows the store cannot read are left out of the aggregations by their columns: a
status, category or policy this version does not know (the part of being readable a
query can check, as the OpenSearch store checks it); an example error is taken from
a row whose document is JSON.
"""

from __future__ import annotations

import heapq
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from mahavishnu_dlq.clock import from_micros, to_micros
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
from mahavishnu_dlq.storage import sqlite_schema as s
from mahavishnu_dlq.storage.aggregations import (
    EXAMPLE_CHARS,
    Buckets,
    check_limit,
    histogram_buckets,
    top_workflows,
)
from mahavishnu_dlq.storage.base import (
    FingerprintGroup,
    HistogramBucket,
    StoreStatistics,
    UnreadableRecords,
)
from mahavishnu_dlq.storage.oldest import check_oldest_limit, policy_value

__all__ = ["PAGE", "SQLiteReads", "read_groups", "read_histogram"]

#: Rows read at a time by claims and listings.
PAGE = 500
_LISTING = " ORDER BY failed_at_us DESC, task_id ASC LIMIT ?"  # newest first


def _marks(values: Sequence[Any]) -> str:
    return ", ".join("?" * len(values))


#: Rows whose values this version knows (the rest cannot be read).
_KNOWN = (
    f"status IN ({_marks(s.STATUS_VALUES)}) "
    f"AND error_category IN ({_marks(s.CATEGORY_VALUES)}) "
    f"AND retry_policy IN ({_marks(s.POLICY_VALUES)})"
)
_KNOWN_VALUES = (*s.STATUS_VALUES, *s.CATEGORY_VALUES, *s.POLICY_VALUES)


def _where(flt: TaskFilter | None, *clauses: tuple[str, Sequence[Any]]) -> tuple[str, list[Any]]:
    """The ``WHERE`` of ``flt`` (:func:`sqlite_schema.filter_sql`), of each ``(clause,
    its parameters)`` of ``clauses``, readable rows only; and all their parameters."""
    where, params = s.filter_sql(flt)
    parts = [where[len("WHERE ") :]] if where else []
    for clause, values in (*clauses, (_KNOWN, _KNOWN_VALUES)):
        parts.append(clause)
        params.extend(values)
    return "WHERE " + " AND ".join(parts), params


@contextmanager
def _snapshot(connection: sqlite3.Connection) -> Iterator[None]:
    """One read transaction: every statement inside sees the same file."""
    connection.execute("BEGIN")
    try:
        yield
    finally:
        if connection.in_transaction:
            connection.execute("COMMIT")


def _table(connection: sqlite3.Connection, flt: TaskFilter | None) -> str:
    """``tasks NOT INDEXED`` when ``flt`` selects most rows by status (or by nothing an
    index serves): reading the table in order is then about twice as fast as finding
    each row through an index. Otherwise ``tasks``, for the planner to choose. The
    share of each status is in ``counts``; the planner has no statistics to know it."""
    if flt is not None and flt.model_dump(exclude_none=True).keys() - {"status", "error_category"}:
        return "tasks"  # a workflow, fingerprint, time or text: an index may narrow it
    if flt is None or flt.status is None:
        return "tasks NOT INDEXED"
    counts = dict(connection.execute("SELECT key, n FROM counts WHERE kind = 'status'"))
    chosen = sum(counts.get(status.value, 0) for status in set(flt.status))
    return "tasks NOT INDEXED" if 2 * chosen > sum(counts.values()) else "tasks"


class _Group:
    __slots__ = ("by_status", "count", "first_us", "last_us", "workflows")

    def __init__(self, first_us: int, last_us: int) -> None:
        self.count = 0
        self.first_us, self.last_us = first_us, last_us
        self.workflows: dict[str, int] = {}
        self.by_status: dict[str, int] = {}


def read_groups(
    connection: sqlite3.Connection, flt: TaskFilter | None, limit: int
) -> list[FingerprintGroup]:
    """:meth:`Store.fingerprint_groups`: one ``GROUP BY`` fingerprint, workflow and
    status over the matching rows (one pass over them), summed per fingerprint here;
    then each chosen group's example, its newest row, through the
    ``tasks_fingerprint`` index."""
    where, params = _where(flt, ("fingerprint != ''", ()))
    found: dict[str, _Group] = {}
    with _snapshot(connection):
        for fingerprint, workflow, status, n, first_us, last_us in connection.execute(
            "SELECT fingerprint, workflow, status, COUNT(*), MIN(failed_at_us), "
            f"MAX(failed_at_us) FROM {_table(connection, flt)} {where} "
            "GROUP BY fingerprint, workflow, status",
            params,
        ):
            group = found.get(fingerprint)
            if group is None:
                group = found[fingerprint] = _Group(first_us, last_us)
            group.count += n
            group.first_us = min(group.first_us, first_us)
            group.last_us = max(group.last_us, last_us)
            group.workflows[workflow] = group.workflows.get(workflow, 0) + n
            group.by_status[status] = group.by_status.get(status, 0) + n
        chosen = heapq.nsmallest(limit, found.items(), key=lambda item: (-item[1].count, item[0]))
        return [
            FingerprintGroup(
                fingerprint,
                group.count,
                *_example(connection, flt, fingerprint),
                first_seen=from_micros(group.first_us),
                last_seen=from_micros(group.last_us),
                workflows=top_workflows(group.workflows),
                by_status=group.by_status,
            )
            for fingerprint, group in chosen
        ]


def _example(
    connection: sqlite3.Connection, flt: TaskFilter | None, fingerprint: str
) -> tuple[str, str]:
    """``(error_type, error)`` of the newest row of ``fingerprint`` that ``flt`` selects
    and whose document is JSON (``json_extract`` fails on one that is not); ``""`` for
    a value that is not a string."""
    where, params = _where(flt, ("fingerprint = ?", (fingerprint,)), ("json_valid(doc)", ()))
    row = connection.execute(
        "SELECT json_extract(doc, '$.error_type'), json_extract(doc, '$.error') "
        f"FROM tasks {where} ORDER BY failed_at_us DESC, task_id LIMIT 1",
        params,
    ).fetchone()
    if row is None:
        return "", ""
    error_type, error = (value if isinstance(value, str) else "" for value in row)
    return error_type, error[:EXAMPLE_CHARS]


def read_histogram(connection: sqlite3.Connection, buckets: Buckets) -> list[HistogramBucket]:
    """:meth:`Store.failure_histogram`: one ``GROUP BY`` bucket index and category over
    the range of ``failed_at_us`` (read through the ``tasks_listing`` index)."""
    where, params = _where(
        None, ("failed_at_us >= ?", (buckets.since_us,)), ("failed_at_us < ?", (buckets.until_us,))
    )
    counts: dict[int, dict[str, int]] = {}
    for index, category, n in connection.execute(
        f"SELECT (failed_at_us - ?) / ? AS bucket, error_category, COUNT(*) FROM tasks {where} "
        "GROUP BY bucket, error_category",
        [buckets.since_us, buckets.width_us, *params],
    ):
        counts.setdefault(index, {})[category] = n
    return buckets.histogram(counts)


class SQLiteReads:
    """The reads of :class:`~mahavishnu_dlq.storage.sqlite.SQLiteStore` (a mixin)."""

    _unreadable: UnreadableRecords

    if TYPE_CHECKING:  # SQLiteStore's

        async def _read(self, read: Callable[[sqlite3.Connection], Any]) -> Any: ...

        def _decode(self, task_id: str, doc: str) -> FailedTask | None: ...

    async def query(
        self, flt: TaskFilter, *, limit: int, cursor: str | None = None
    ) -> TaskPage[FailedTask]:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        after = decode_cursor(cursor) if cursor is not None else None
        arms = s.ordered_arms(flt)

        def select(
            where: str, params: list[Any], position: tuple[int, str] | None, fetch: int
        ) -> tuple[str, list[Any]]:
            clauses, values = ([where[len("WHERE ") :]] if where else []), list(params)
            if position is not None:
                clauses.append("(failed_at_us < ? OR (failed_at_us = ? AND task_id > ?))")
                values += [-position[0], -position[0], position[1]]
            sql = "SELECT task_id, doc, failed_at_us FROM tasks"
            if clauses:
                sql += " WHERE " + " AND ".join(clauses)
            return sql + _LISTING, [*values, fetch]

        def read(connection: sqlite3.Connection) -> TaskPage[FailedTask]:
            page: list[FailedTask] = []
            position = after
            more = False
            while not more:
                fetch = min(PAGE, limit + 1 - len(page))  # the page and one to tell "more"
                parts = [select(where, params, position, fetch) for where, params in arms]
                if len(parts) == 1:
                    sql, values = parts[0]
                else:  # each arm in its index order, merged
                    union = " UNION ALL ".join(f"SELECT * FROM ({part})" for part, _ in parts)
                    sql = f"SELECT task_id, doc, failed_at_us FROM ({union}){_LISTING}"
                    values = [value for _, part_values in parts for value in part_values]
                    values.append(fetch)
                rows = connection.execute(sql, values).fetchall()
                for task_id, doc, failed_at_us in rows:
                    position = (-failed_at_us, task_id)
                    task = self._decode(task_id, doc)
                    if task is None:
                        continue  # unreadable: skipped (and counted)
                    if len(page) == limit:
                        more = True
                        break
                    page.append(task)
                if len(rows) < fetch:
                    break
            next_cursor = None
            if more:
                last = page[-1]
                next_cursor = encode_cursor(-to_micros(last.failed_at), last.task_id)
            return TaskPage(page, next_cursor)

        result: TaskPage[FailedTask] = await self._read(read)
        return result

    async def count(self, flt: TaskFilter | None = None) -> int:
        where, params = s.filter_sql(flt)

        def read(connection: sqlite3.Connection) -> int:
            if not where:
                row = connection.execute(
                    "SELECT COALESCE(SUM(n), 0) FROM counts WHERE kind = 'status'"
                ).fetchone()
            else:
                row = connection.execute(f"SELECT COUNT(*) FROM tasks {where}", params).fetchone()
            return int(row[0])

        result: int = await self._read(read)
        return result

    async def open_count(self) -> int:
        def read(connection: sqlite3.Connection) -> int:
            marks = ", ".join("?" * len(s.OPEN_VALUES))
            row = connection.execute(
                "SELECT COALESCE(SUM(n), 0) FROM counts "
                f"WHERE kind = 'status' AND key IN ({marks})",
                s.OPEN_VALUES,
            ).fetchone()
            return int(row[0])

        result: int = await self._read(read)
        return result

    async def oldest(
        self, status: DeadLetterStatus, *, limit: int, retry_policy: RetryPolicy | None = None
    ) -> list[FailedTask]:
        """See :mod:`mahavishnu_dlq.storage.oldest` (through the ``tasks_status`` index,
        read backwards)."""
        check_oldest_limit(limit)
        sql = "SELECT task_id, doc FROM tasks WHERE status = ?"
        values: list[Any] = [DeadLetterStatus(status).value]
        if retry_policy is not None:
            sql += " AND retry_policy = ?"
            values.append(policy_value(retry_policy))
        sql += " ORDER BY failed_at_us ASC, task_id ASC LIMIT ?"

        def read(connection: sqlite3.Connection) -> list[FailedTask]:
            found: list[FailedTask] = []
            offset = 0
            while len(found) < limit:  # more pages only when some rows cannot be read
                fetch = limit - len(found)
                rows = connection.execute(sql + " OFFSET ?", [*values, fetch, offset]).fetchall()
                offset += len(rows)
                found.extend(t for t in (self._decode(i, doc) for i, doc in rows) if t)
                if len(rows) < fetch:
                    break
            return found

        result: list[FailedTask] = await self._read(read)
        return result

    async def summarize(self, flt: TaskFilter, *, sample: int = 20) -> TaskSummary:
        """Counts by one ``GROUP BY``, the sample through the listing indexes."""
        result: TaskSummary = await self._read(lambda c: s.read_summary(c, flt, sample))
        return result

    async def statistics(self, *, top_fingerprints: int = 5) -> StoreStatistics:
        seen = sorted(self._unreadable.keys)

        def read(connection: sqlite3.Connection) -> StoreStatistics:
            return s.read_statistics(connection, top_fingerprints, seen)

        result: StoreStatistics = await self._read(read)
        return result

    async def fingerprint_groups(
        self, flt: TaskFilter | None = None, *, limit: int = 50
    ) -> list[FingerprintGroup]:
        """One ``GROUP BY`` and an indexed look-up per group (:func:`read_groups`)."""
        limit = check_limit(limit)
        result: list[FingerprintGroup] = await self._read(lambda c: read_groups(c, flt, limit))
        return result

    async def failure_histogram(
        self, *, since: datetime, until: datetime, bucket: timedelta
    ) -> list[HistogramBucket]:
        """One ``GROUP BY`` over the time range (:func:`read_histogram`)."""
        buckets = histogram_buckets(since, until, bucket)
        result: list[HistogramBucket] = await self._read(lambda c: read_histogram(c, buckets))
        return result
