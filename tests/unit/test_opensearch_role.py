"""The roles ``docs/opensearch.md`` prints are the ones the secured test node runs with
(:mod:`mahavishnu_dlq.storage.opensearch_role`), and they grant nothing beyond the index."""

from __future__ import annotations

import json
import re
from pathlib import Path

from mahavishnu_dlq.storage.opensearch_role import reader_role, writer_role

DOC = Path(__file__).resolve().parents[2] / "docs" / "opensearch.md"


def _json_blocks() -> list[object]:
    return [
        json.loads(block) for block in re.findall(r"```json\n(.*?)\n```", DOC.read_text(), re.S)
    ]


def test_the_docs_print_both_roles_exactly() -> None:
    blocks = _json_blocks()
    assert {"mahavishnu_dlq": writer_role("mahavishnu-dlq-tasks")} in blocks
    assert {"mahavishnu_dlq_reader": reader_role("mahavishnu-dlq-tasks")} in blocks


def test_the_roles_cover_the_index_and_its_side_indexes_only() -> None:
    for role in (writer_role("orders-dlq"), reader_role("orders-dlq")):
        patterns = [p for grant in role["index_permissions"] for p in grant["index_patterns"]]
        assert patterns == ["orders-dlq*"]  # orders-dlq, orders-dlq-jobs, orders-dlq-controls


def test_the_reader_can_only_read_and_the_writer_cannot_delete_an_index() -> None:
    reader = reader_role("x")
    granted = [*reader["cluster_permissions"]]
    granted += [a for grant in reader["index_permissions"] for a in grant["allowed_actions"]]
    assert granted
    assert all(
        action.startswith(("indices:data/read/", "indices:admin/get", "indices:admin/mappings/get"))
        or action in {"cluster:monitor/health", "indices:monitor/settings/get"}
        for action in granted
    ), granted
    writer = writer_role("x")
    actions = [a for grant in writer["index_permissions"] for a in grant["allowed_actions"]]
    assert "indices:admin/delete" not in actions
    assert not any(a.startswith("cluster:admin") for a in writer["cluster_permissions"])
