"""Reading the answers the OpenSearch store asks for with ``ignore=``: the error body
opensearch-py returns instead of raising (and logging a WARNING)."""

from __future__ import annotations

from typing import Any

import pytest

from mahavishnu_dlq.errors import ConfigurationError, StoreUnavailableError
from mahavishnu_dlq.storage.opensearch_client import Connection, refusal


def body(kind: str, status: int) -> dict[str, Any]:
    error = {"root_cause": [{"type": kind, "reason": "why"}], "type": kind, "reason": "why"}
    return {"error": error, "status": status}


@pytest.mark.parametrize(
    ("answer", "status"),
    [
        (body("index_not_found_exception", 404), 404),
        (body("version_conflict_engine_exception", 409), 409),
        ({"error": "no handler found for uri [/_plugins/_security/authinfo]"}, 400),
        ({"_index": "i", "_id": "x", "found": False}, None),  # a missing document: no error
        ({"_index": "i", "_id": "x", "result": "not_found"}, None),
        ({"error": {"mappings": {}}}, None),  # the mapping of an index named "error"
        ({"acknowledged": True}, None),
        ("plain text", None),
    ],
)
def test_refusal_is_the_status_of_an_error_body_only(answer: Any, status: int | None) -> None:
    assert refusal(answer) == status


def test_an_index_that_exists_is_not_created_and_any_other_refusal_is_raised() -> None:
    conn = Connection("http://127.0.0.1:9", index="dlq")
    assert conn.created({"acknowledged": True, "index": "dlq"}, "open") is True
    assert conn.created(body("resource_already_exists_exception", 400), "open") is False
    with pytest.raises(ConfigurationError, match="mapper_parsing_exception: why"):
        conn.created(body("mapper_parsing_exception", 400), "open")
    with pytest.raises(StoreUnavailableError, match="HTTP 503"):
        conn.created(body("cluster_block_exception", 503), "open")
