"""A read-only operator on the secured node: ``status``, ``list`` and ``show`` work with
only :func:`~mahavishnu_dlq.storage.opensearch_role.reader_role`; every action fails with
one clear line and exit 1, and changes nothing.

The tasks are enqueued here as ``dlq`` (the writer role); the operator's commands are
``python -m mahavishnu_dlq`` processes of their own, configured by the environment.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from mahavishnu_dlq import DeadLetterQueue
from mahavishnu_dlq.models import DeadLetterStatus
from mahavishnu_dlq.settings import DLQSettings
from tests.secured_node import PASSWORDS, SECURED_INDEX, SecuredNode

pytestmark = [pytest.mark.opensearch]

ROOT = Path(__file__).resolve().parents[2]
IDS = ("op-1", "op-2", "op-3")


def _settings(node: SecuredNode, index: str, user: str) -> dict[str, str]:
    """The environment of a CLI process that logs in as ``user``."""
    return {
        "MAHAVISHNU_DLQ_STORE": "opensearch",
        "MAHAVISHNU_DLQ_OPENSEARCH__HOSTS": json.dumps([node.url]),
        "MAHAVISHNU_DLQ_OPENSEARCH__USERNAME": user,
        "MAHAVISHNU_DLQ_OPENSEARCH__PASSWORD": PASSWORDS[user],
        "MAHAVISHNU_DLQ_OPENSEARCH__CA_CERTS": node.ca_file,
        "MAHAVISHNU_DLQ_OPENSEARCH__INDEX": index,
    }


def _cli(env: dict[str, str], tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MAHAVISHNU_DLQ_")}
    clean.update(env, HOME=str(tmp_path), XDG_STATE_HOME=str(tmp_path / "state"), COLUMNS="200")
    return subprocess.run(  # noqa: S603 - fixed argv
        [sys.executable, "-m", "mahavishnu_dlq", *argv],
        capture_output=True,
        text=True,
        env=clean,
        cwd=ROOT,
        timeout=60,
        check=False,
    )


@pytest.fixture
def index(secured_opensearch: SecuredNode) -> Iterator[str]:
    """An index holding three failed tasks, enqueued by the writer ``dlq``."""
    name = f"{SECURED_INDEX}-operator-{uuid.uuid4().hex[:10]}"
    settings = DLQSettings.model_validate(
        {
            "store": "opensearch",
            "opensearch": {
                "hosts": [secured_opensearch.url],
                "username": "dlq",
                "password": PASSWORDS["dlq"],
                "ca_certs": secured_opensearch.ca_file,
                "index": name,
                "refresh": "wait_for",
            },
        }
    )

    async def enqueue() -> None:
        async with DeadLetterQueue.from_settings(settings) as dlq:
            for task_id in IDS:
                await dlq.enqueue(task_id, {"n": task_id}, ["repo"], ConnectionError("reset"))

    anyio.run(enqueue, backend="asyncio")
    yield name
    secured_opensearch.admin("DELETE", f"/{name}*")
    secured_opensearch.admin("DELETE", f"/_index_template/mahavishnu-dlq-{name}*")


def _stored(node: SecuredNode, index: str) -> dict[str, str]:
    """task id -> status, read as admin."""
    status, body = node.admin(
        "POST", f"/{index}/_search", {"size": 100, "_source": ["task_id", "status"]}
    )
    assert status == 200, body
    return {hit["_source"]["task_id"]: hit["_source"]["status"] for hit in body["hits"]["hits"]}


def test_the_operator_reads_status_list_show_and_breakers(
    secured_opensearch: SecuredNode, index: str, tmp_path: Path
) -> None:
    env = _settings(secured_opensearch, index, "operator")
    status = _cli(env, tmp_path, "status", "--json")
    assert status.returncode == 0, status.stderr
    stats = json.loads(status.stdout)
    assert stats["total_stored"] == len(IDS)
    assert stats["breakers"] == {}  # read without the refresh a reader may not make
    breakers = _cli(env, tmp_path, "breaker", "list", "--json")
    assert breakers.returncode == 0, breakers.stderr
    listed = _cli(env, tmp_path, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert {task["task_id"] for task in json.loads(listed.stdout)["tasks"]} == set(IDS)
    shown = _cli(env, tmp_path, "show", "op-2", "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["task_id"] == "op-2"


@pytest.mark.parametrize(
    "action",
    [
        ("--app", "tests.integration.cli_app:handlers", "retry", "op-1"),
        ("archive", "op-1"),
        ("replay", "--workflow", "unknown"),
        ("purge", "--status", "pending", "--yes"),
        ("clear", "--yes"),
    ],
    ids=["retry", "archive", "replay", "purge", "clear"],
)
def test_every_action_of_the_operator_fails_in_one_line_and_changes_nothing(
    secured_opensearch: SecuredNode, index: str, tmp_path: Path, action: tuple[str, ...]
) -> None:
    before = _stored(secured_opensearch, index)
    result = _cli(_settings(secured_opensearch, index, "operator"), tmp_path, *action)
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "refusing access" in lines[0]
    assert "user 'operator' lacks a permission" in lines[0]
    assert "Traceback" not in result.stderr
    assert PASSWORDS["operator"] not in result.stdout + result.stderr
    assert _stored(secured_opensearch, index) == before
    assert set(before.values()) == {DeadLetterStatus.PENDING.value}
