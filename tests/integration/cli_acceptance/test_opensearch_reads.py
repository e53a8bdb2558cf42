"""The CLI as an operator meets it, against a real OpenSearch node: list, status and
show (how these tests run: ``conftest``)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

import pytest

from mahavishnu_dlq.models import (
    DeadLetterStatus,
    ErrorCategory,
    FailedTask,
    RetryPolicy,
)
from tests.integration.cli_acceptance.conftest import (
    ARCHIVED,
    COMPLETED,
    EXHAUSTED,
    NETWORK,
    PENDING,
    PERMANENT,
    VALIDATION,
    Failure,
    Node,
    data,
    describe,
    ids_of,
    ok,
    refused,
)

# -- OpenSearch: list, status, show ------------------------------------------------------------

QUOTA = "Quota-Exceeded for tenant zebra"

#: Enqueued first; then the --since boundary; then NEWER.
OLDER = (
    *(Failure(f"old-{i}", "billing") for i in range(4)),
    Failure("old-4", "shipping", ARCHIVED, VALIDATION, "order total is negative"),
    Failure("old-5", "shipping", PENDING, VALIDATION, "order total is negative"),
    Failure("old-6", "shipping", EXHAUSTED, PERMANENT, "no such customer"),
    Failure("old-7", "shipping", EXHAUSTED, PERMANENT, "no such customer"),
    Failure("old-8", "billing", PENDING, NETWORK, QUOTA),
    Failure("old-9", "billing", COMPLETED, NETWORK, QUOTA),
)
NEWER = (
    *(Failure(f"new-{i}", "shipping") for i in range(5)),
    Failure("new-5", "billing", PENDING, VALIDATION, "order total is negative"),
    Failure("new-6", "billing", ARCHIVED, VALIDATION, "order total is negative"),
    Failure("new-7", "billing", EXHAUSTED, PERMANENT, "no such customer"),
    Failure("new-8", "shipping", PENDING, NETWORK, QUOTA.upper()),
    Failure("new-9", "billing", COMPLETED, NETWORK, "connection refused"),
)


def _ids(failures: Sequence[Failure], **where: Any) -> set[str]:
    def wanted(f: Failure) -> bool:
        return all(
            getattr(f, key) in value if isinstance(value, tuple) else getattr(f, key) == value
            for key, value in where.items()
        )

    return {f.task_id for f in failures if wanted(f)}


@pytest.mark.opensearch
def test_list_filters_pages_and_status_see_what_another_process_enqueued(node: Node) -> None:
    node.enqueue(*OLDER)
    boundary = datetime.now(timezone.utc)
    node.enqueue(*NEWER)
    every = (*OLDER, *NEWER)
    records = node.records(*_ids(every))
    assert all(records[f.task_id].status is f.status for f in every)

    runs = node.cli.many(
        ["list", "--status", "exhausted,archived", "--limit", "100", "--json"],
        ["list", "--category", "validation", "--json"],
        ["list", "--workflow", "shipping", "--status", "pending", "--json"],
        ["list", "--text", "quota-exceeded FOR", "--json"],
        ["list", "--since", boundary.isoformat(), "--json"],
        ["list", "--since", "1h", "--limit", "100", "--json"],
        ["list", "--limit", "15"],
        ["status", "--json"],
        ["status"],
    )
    by_status, by_category, shipping_pending, text, since_iso, since_age = map(data, runs[:6])
    assert set(ids_of(by_status)) == _ids(every, status=(EXHAUSTED, ARCHIVED))
    assert by_status["count"] == 5
    assert by_status["cursor"] is None
    assert set(ids_of(by_category)) == _ids(every, category=VALIDATION)
    assert set(ids_of(shipping_pending)) == _ids(every, workflow="shipping", status=PENDING)
    assert set(ids_of(text)) == {"old-8", "old-9", "new-8"}
    assert set(ids_of(since_iso)) == _ids(NEWER)
    assert set(ids_of(since_age)) == _ids(every)
    for listing in (by_status, by_category, since_age):  # the records, as stored
        for task in listing["tasks"]:
            assert task == records[task["task_id"]].model_dump(mode="json")

    table = ok(runs[6])
    assert "15 tasks; next page: add --cursor " in table
    newest_first = sorted(every, key=lambda f: records[f.task_id].failed_at, reverse=True)
    assert all(f.task_id in table for f in newest_first[:15])
    assert not any(f.task_id in table for f in newest_first[15:])

    stats = data(runs[7])
    assert stats["backend"] == "opensearch"
    assert stats["total_stored"] == 20
    assert stats["status_breakdown"] == {
        s.value: len(_ids(every, status=s)) for s in DeadLetterStatus
    }
    assert stats["queue_size"] == len(_ids(every, status=(PENDING, EXHAUSTED)))
    assert stats["error_categories"] == {
        c.value: len(_ids(every, category=c)) for c in ErrorCategory
    }
    policies = Counter("exponential" if f.status is EXHAUSTED else f.policy.value for f in every)
    assert stats["retry_policies"] == {p.value: policies[p.value] for p in RetryPolicy}
    assert "opensearch" in ok(runs[8])

    # every page of 8 until the cursor runs out: each task exactly once, newest first
    seen: list[str] = []
    cursor: list[str] = []
    for _ in range(10):
        page = data(node.cli("list", "--limit", "8", "--json", *cursor))
        assert page["count"] == len(page["tasks"]) <= 8
        seen += ids_of(page)
        if page["cursor"] is None:
            break
        cursor = ["--cursor", page["cursor"]]
    else:
        pytest.fail(f"the cursor never ran out; seen {seen}")
    assert Counter(seen) == Counter(_ids(every))
    assert seen == [f.task_id for f in newest_first]


@pytest.mark.opensearch
def test_show_prints_the_record_as_json_and_its_details_for_people(node: Node) -> None:
    failure = Failure(
        "order-1234",
        "billing",
        error="card declined for order 1234",
        task={"order": 1234, "customer": "Zoë Ångström", "lines": [{"sku": "A-1", "qty": 2}]},
    )
    node.enqueue(failure)
    record = node.records("order-1234")["order-1234"]
    assert record.traceback is not None

    as_json, for_people, unknown = node.cli.many(
        ["show", "order-1234", "--json"], ["show", "order-1234"], ["show", "nope"]
    )
    shown = data(as_json)
    assert shown == record.model_dump(mode="json")
    assert FailedTask.model_validate(shown) == record
    text = ok(for_people)
    for part in (
        "order-1234",
        "billing",
        "RuntimeError: card declined for order 1234",  # the error
        "traceback (first failure)",
        "in charge_card",  # the traceback's innermost frame
        "Zoë Ångström",  # the input, not escaped
        '"sku": "A-1"',
        "repo-a, repo-b",
        record.error_fingerprint,
    ):
        assert part in text, f"{part!r} missing\n{describe(for_people)}"
    refused(unknown, 1, "'nope'")
