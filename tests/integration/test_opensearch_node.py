"""The session's OpenSearch node is real: it answers, and has the core APIs the store needs."""

from __future__ import annotations

import json
import urllib.request

import pytest

pytestmark = pytest.mark.opensearch


def _get(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - loopback test node
        data = json.load(response)
    assert isinstance(data, dict)
    return data


def test_the_node_answers_with_a_2x_version(opensearch_url: str) -> None:
    info = _get(opensearch_url)
    version = info["version"]
    assert isinstance(version, dict)
    assert str(version["number"]).startswith("2.")
    health = _get(f"{opensearch_url}/_cluster/health")
    assert health["status"] in {"green", "yellow"}
