"""``mahavishnu-dlq doctor`` against a real node, in a process of its own: a healthy
index (every line, exit 0), a missing one (exit 1, the near-miss name), an unreachable
host (exit 1 on its ``reachable`` line) — and in every case nothing made or written,
and no password shown."""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from opensearchpy import NotFoundError, OpenSearch

from mahavishnu_dlq.doctor import Check, diagnose
from mahavishnu_dlq.doctor_index import PROBE_ID
from mahavishnu_dlq.settings import DLQSettings
from mahavishnu_dlq.storage.opensearch import OpenSearchStore
from tests.integration.cli_acceptance.conftest import Cli, clean_env, describe
from tests.integration.test_read_only_open import _drop, _open_writing, state, typo_of
from tests.secured_node import PASSWORDS, SECURED_INDEX, SecuredNode

pytestmark = pytest.mark.opensearch

PASSWORD = "doctor-Secret-pw-42"  # noqa: S105 - a test password, never to be shown
#: the checks of an OpenSearch store, in their order, for one host
CHECKS = [
    "settings",
    "reachable",
    "tls",
    "authentication",
    "version",
    "cluster health",
    "index",
    "mapping",
    "template",
    "jobs index",
    "controls index",
    "read",
    "write",
    "refresh interval",
    "replicas",
]


@pytest.fixture
def index(opensearch_url: str) -> Iterator[str]:
    """An index made by a writing open, with its side indexes and templates; dropped after."""
    name = f"doc-{uuid.uuid4().hex[:8]}-tasks"
    anyio.run(_open_writing, opensearch_url, name, backend="asyncio")
    try:
        yield name
    finally:
        anyio.run(_drop, opensearch_url, name, backend="asyncio")


def doctor_cli(hosts: list[str], index: str, **extra: str) -> Cli:
    return Cli(
        clean_env(
            MAHAVISHNU_DLQ_STORE="opensearch",
            MAHAVISHNU_DLQ_OPENSEARCH__HOSTS=json.dumps(hosts),
            MAHAVISHNU_DLQ_OPENSEARCH__INDEX=index,
            MAHAVISHNU_DLQ_OPENSEARCH__USERNAME="dlq",
            MAHAVISHNU_DLQ_OPENSEARCH__PASSWORD=PASSWORD,
            MAHAVISHNU_DLQ_OPENSEARCH__TIMEOUT_SECONDS="5",
            **extra,
        )
    )


def lines_by_check(out: str) -> dict[str, tuple[str, str]]:
    """``{check name without its host: (status label, the line)}`` of the printed checks."""
    found: dict[str, tuple[str, str]] = {}
    for line in out.splitlines()[:-1]:  # the last one is the count
        label, rest = line.split(" ", 1)
        name = rest.strip().split(":", 1)[0]
        base = name.split(" ")[0] if name.startswith(("reachable ", "tls ")) else name
        found[base] = (label, line)
    return found


def count_of(url: str, index: str) -> int:
    raw = OpenSearch(hosts=[url])
    try:
        raw.indices.refresh(index=index)
        return int(raw.count(index=index)["count"])
    finally:
        raw.close()


def probe_absent(url: str, index: str) -> bool:
    raw = OpenSearch(hosts=[url])
    try:
        raw.get(index=index, id=PROBE_ID)
    except NotFoundError:
        return True
    finally:
        raw.close()
    return False


def test_a_healthy_plain_node_prints_every_check_exits_0_and_changes_nothing(
    opensearch_url: str, index: str
) -> None:
    before = state(opensearch_url)
    cli = doctor_cli([opensearch_url], index)
    run = cli("doctor")
    assert run.returncode == 0, describe(run)
    assert run.stderr == "", describe(run)
    checks = lines_by_check(run.stdout)
    assert list(checks) == CHECKS, describe(run)
    statuses = {name: label for name, (label, _) in checks.items()}
    assert statuses["tls"] == "warn"  # plain HTTP
    assert "plain HTTP: no TLS" in checks["tls"][1]
    assert statuses["authentication"] == "warn"  # the test node has no security plugin
    assert "no security plugin" in checks["authentication"][1]
    assert all(statuses[name] == "ok" for name in CHECKS if name not in ("tls", "authentication"))
    assert "nothing was written" in checks["write"][1]
    assert f"index {index!r}" in checks["settings"][1]
    assert run.stdout.splitlines()[-1].endswith("2 warning(s), 0 failed")

    data = json.loads(cli("doctor", "--json").stdout)
    assert data["ok"] is True
    assert data["counts"] == {"ok": 13, "warn": 2, "fail": 0, "skip": 0}
    assert [c["name"].split(" ")[0] for c in data["checks"]][:3] == ["settings", "reachable", "tls"]

    assert PASSWORD not in run.stdout + run.stderr
    assert state(opensearch_url) == before  # no index, no template made
    assert count_of(opensearch_url, index) == 0  # the write probe wrote nothing
    assert probe_absent(opensearch_url, index)


def test_a_missing_index_fails_with_the_near_miss_and_nothing_is_made(
    opensearch_url: str, index: str
) -> None:
    typo = typo_of(index)
    before = state(opensearch_url)
    run = doctor_cli([opensearch_url], typo)("doctor")
    assert run.returncode == 1, describe(run)
    checks = lines_by_check(run.stdout)
    label, line = checks["index"]
    assert label == "FAIL"
    assert f"index {typo!r} does not exist" in line
    assert f"did you mean {index!r}?" in line
    for name in ("mapping", "read", "write", "refresh interval", "replicas"):
        assert checks[name][0] == "skip", describe(run)
    for name in ("template", "jobs index", "controls index"):  # not there either: warnings
        assert checks[name][0] == "warn", describe(run)
    assert "created on the first write" in checks["jobs index"][1]
    assert PASSWORD not in run.stdout + run.stderr
    assert state(opensearch_url) == before  # the write probe was not sent: no index made


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # nothing listens there now


def test_an_unreachable_host_fails_its_reachable_line(opensearch_url: str) -> None:
    port = _closed_port()
    host = f"http://127.0.0.1:{port}"
    run = doctor_cli([host], "mahavishnu-dlq-tasks")("doctor")
    assert run.returncode == 1, describe(run)
    lines = run.stdout.splitlines()
    failing = [line for line in lines if line.startswith("FAIL")]
    assert failing == [
        line for line in lines if line.startswith(f"FAIL reachable 127.0.0.1:{port}")
    ]
    assert len(failing) == 1, describe(run)
    assert f"cannot connect to {host}" in failing[0]
    assert "opensearch.hosts" in failing[0]  # what to fix
    skipped = [line for line in lines if line.startswith("skip")]
    assert len(skipped) == len(CHECKS) - 3  # all but settings, reachable and tls
    assert all("no host can be reached" in line for line in skipped)
    assert PASSWORD not in run.stdout + run.stderr


def test_one_host_down_of_two_fails_its_line_and_the_rest_is_checked(
    opensearch_url: str, index: str
) -> None:
    down = f"http://127.0.0.1:{_closed_port()}"
    run = doctor_cli([down, opensearch_url], index)("doctor")
    assert run.returncode == 1, describe(run)
    labels = [line.split(" ", 1)[0] for line in run.stdout.splitlines()[:-1]]
    assert labels.count("FAIL") == 1
    assert "skip" not in labels
    assert "Unclosed" not in run.stderr, describe(run)


def test_failover_checks_the_journal_directory_without_making_it(
    opensearch_url: str, index: str, tmp_path: Path
) -> None:
    journal = tmp_path / "journals"
    settings: Any = DLQSettings(
        store="failover",
        opensearch={"hosts": [opensearch_url], "index": index},
        failover={"path": str(journal)},
    )
    checks = anyio.run(diagnose, settings, backend="asyncio")
    assert checks[-1].name == "journal"
    assert checks[-1].status == "ok"
    assert "created at the first write" in checks[-1].detail
    assert not journal.exists()
    memory = DLQSettings(
        store="failover",
        opensearch={"hosts": [opensearch_url], "index": index},
        failover={"fallback": "memory"},
    )
    last = anyio.run(diagnose, memory, backend="asyncio")[-1]
    assert (last.name, last.status) == ("fallback", "warn")


# -- a secured node: who may do what ------------------------------------------------------------


@pytest.fixture
def secured_index(secured_opensearch: SecuredNode) -> Iterator[str]:
    """An index the roles cover, made by the writer; deleted (as admin) after."""
    node = secured_opensearch
    name = f"{SECURED_INDEX}-doctor-{uuid.uuid4().hex[:8]}"

    async def make() -> None:
        store = OpenSearchStore(
            hosts=[node.url],
            index=name,
            username="dlq",
            password=PASSWORDS["dlq"],
            ca_certs=node.ca_file,
        )
        await store.open()
        await store.close()

    anyio.run(make, backend="asyncio")
    try:
        yield name
    finally:
        node.admin("DELETE", f"/{name}*")
        node.admin("DELETE", f"/_index_template/mahavishnu-dlq-{name}*")


def _diagnose_as(node: SecuredNode, index: str, user: str) -> dict[str, Check]:
    settings = DLQSettings.model_validate(
        {
            "store": "opensearch",
            "opensearch": {
                "hosts": [node.url],
                "index": index,
                "username": user,
                "password": PASSWORDS[user],
                "ca_certs": node.ca_file,
            },
        }
    )
    checks = anyio.run(diagnose, settings, backend="asyncio")
    shown = json.dumps([check.to_dict() for check in checks])
    assert PASSWORDS[user] not in shown
    return {check.name.split(" ")[0]: check for check in checks}


def test_a_reader_may_read_and_the_write_probe_is_refused_without_writing(
    secured_opensearch: SecuredNode, secured_index: str
) -> None:
    checks = _diagnose_as(secured_opensearch, secured_index, "operator")
    assert checks["tls"].status == "ok"
    assert "'operator'" in checks["authentication"].detail
    assert checks["read"].status == "ok"
    assert checks["write"].status == "fail"
    assert "HTTP 403" in checks["write"].detail
    assert "indices:data/write" in checks["write"].detail  # the permission it lacks
    status, found = secured_opensearch.admin("GET", f"/{secured_index}/_doc/{PROBE_ID}")
    assert status == 404, found  # nothing written by either probe
    status, counted = secured_opensearch.admin("GET", f"/{secured_index}/_count")
    assert counted["count"] == 0


def test_a_user_without_a_role_is_warned_and_fails_on_the_index(
    secured_opensearch: SecuredNode, secured_index: str
) -> None:
    checks = _diagnose_as(secured_opensearch, secured_index, "nobody")
    assert checks["authentication"].status == "warn"
    assert "no role" in checks["authentication"].detail
    assert checks["index"].status == "fail"
    assert "HTTP 403" in checks["index"].detail
    assert checks["write"].status == "skip"
