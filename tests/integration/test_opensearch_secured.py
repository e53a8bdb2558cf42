"""The OpenSearch store against a secured node: TLS, passwords, client certificates and
least privilege, for real (the session's secured node, :mod:`tests.secured_node`).

- the CA of ``opensearch.ca_certs`` works; without it, a certificate error names the host
  and the setting to fix; ``verify_certs: false`` works and warns once per process;
- a wrong password is an authentication error naming the user, never the password, and
  the CLI says it in one line with exit 1;
- a client certificate logs in as its CN; one the node maps to no role is refused access;
- an expired certificate and one for another host (served by a TLS listener of the test's
  own, signed by a CA of its own) are errors saying so;
- the documented writer role runs the store (the contract suite runs as it too, see
  ``tests/contract/conftest.py``); a user without it is refused, naming the permission.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import socket
import ssl
import subprocess
import sys
import threading
import traceback
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from mahavishnu_dlq.doctor import diagnose
from mahavishnu_dlq.errors import (
    StoreAccessError,
    StoreAuthenticationError,
    StoreTLSError,
    StoreUnavailableError,
)
from mahavishnu_dlq.settings import DLQSettings
from mahavishnu_dlq.storage import opensearch_tls
from mahavishnu_dlq.storage.opensearch import OpenSearchStore
from mahavishnu_dlq.testing import make_task
from tests.conftest import load_node_script
from tests.secured_node import PASSWORDS, SECURED_INDEX, SecuredNode

pytestmark = [pytest.mark.anyio, pytest.mark.opensearch]

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def anyio_backend() -> str:
    """AsyncOpenSearch runs on asyncio only."""
    return "asyncio"


@pytest.fixture
def index(secured_opensearch: SecuredNode) -> Iterator[str]:
    """A fresh index name the roles cover; deleted (as admin) afterwards."""
    name = f"{SECURED_INDEX}-tls-{uuid.uuid4().hex[:10]}"
    yield name
    secured_opensearch.admin("DELETE", f"/{name}*")
    secured_opensearch.admin("DELETE", f"/_index_template/mahavishnu-dlq-{name}*")


def _store(node: SecuredNode, index: str, **options: Any) -> OpenSearchStore:
    options.setdefault("timeout", 10.0)
    return OpenSearchStore(hosts=[node.url], index=index, **options)


async def _round_trip(store: OpenSearchStore) -> None:
    """Open, write one task, read it back, close."""
    await store.open()
    try:
        task = make_task(task_id=f"t-{uuid.uuid4().hex[:8]}")
        await store.mutate(task.task_id, lambda _current: task)
        stored = await store.get(task.task_id)
        assert stored is not None
        assert stored.task_id == task.task_id
    finally:
        await store.close()


def _whole(exc: BaseException) -> str:
    """Everything a traceback of ``exc`` would show, causes included."""
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


# -- server certificates ------------------------------------------------------------------


async def test_the_ca_of_the_node_is_trusted_with_ca_certs(
    secured_opensearch: SecuredNode, index: str
) -> None:
    store = _store(
        secured_opensearch,
        index,
        username="dlq",
        password=PASSWORDS["dlq"],
        ca_certs=secured_opensearch.ca_file,
    )
    await _round_trip(store)


async def test_without_the_ca_the_error_names_the_host_and_the_setting(
    secured_opensearch: SecuredNode, index: str
) -> None:
    store = _store(secured_opensearch, index, username="dlq", password=PASSWORDS["dlq"])
    with pytest.raises(StoreTLSError) as caught:
        await store.open()
    message = str(caught.value)
    assert secured_opensearch.url in message
    assert "opensearch.ca_certs" in message
    assert "certificate verify failed" in message
    assert PASSWORDS["dlq"] not in _whole(caught.value)
    await store.close()


async def test_verify_certs_false_works_and_warns_once_per_process(
    secured_opensearch: SecuredNode,
    index: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(opensearch_tls, "_warned", threading.Event())  # as in a new process
    caplog.set_level(logging.WARNING, logger="mahavishnu_dlq")
    for _ in range(3):
        store = _store(
            secured_opensearch,
            index,
            username="dlq",
            password=PASSWORDS["dlq"],
            verify_certs=False,
        )
        await _round_trip(store)
    warnings = [r for r in caplog.records if "dlq.opensearch.insecure" in r.getMessage()]
    assert len(warnings) == 1
    assert secured_opensearch.url in warnings[0].getMessage()
    assert "opensearch.ca_certs" in warnings[0].getMessage()


# -- passwords ----------------------------------------------------------------------------


async def test_a_wrong_password_is_an_authentication_error_without_the_password(
    secured_opensearch: SecuredNode, index: str
) -> None:
    wrong = "Not-The-Password-42"
    store = _store(
        secured_opensearch,
        index,
        username="dlq",
        password=wrong,
        ca_certs=secured_opensearch.ca_file,
    )
    with pytest.raises(StoreAuthenticationError) as caught:
        await store.open()
    message = str(caught.value)
    assert "authentication failed for user 'dlq'" in message
    assert "opensearch.password" in message
    assert "unavailable" not in message
    assert isinstance(caught.value, StoreUnavailableError)  # a failover store keeps tasks
    assert wrong not in _whole(caught.value)
    await store.close()


def test_the_cli_says_a_wrong_password_in_one_line_with_exit_1(
    secured_opensearch: SecuredNode, tmp_path: Path
) -> None:
    wrong = "Cli-Wrong-Password-7"
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "MAHAVISHNU_DLQ_STORE": "opensearch",
        "MAHAVISHNU_DLQ_OPENSEARCH__HOSTS": json.dumps([secured_opensearch.url]),
        "MAHAVISHNU_DLQ_OPENSEARCH__USERNAME": "dlq",
        "MAHAVISHNU_DLQ_OPENSEARCH__PASSWORD": wrong,
        "MAHAVISHNU_DLQ_OPENSEARCH__CA_CERTS": secured_opensearch.ca_file,
        "MAHAVISHNU_DLQ_OPENSEARCH__INDEX": f"{SECURED_INDEX}-cli-{uuid.uuid4().hex[:8]}",
    }
    for command in (["status"], ["list"], ["-v", "status"]):
        result = subprocess.run(  # noqa: S603 - fixed argv
            [sys.executable, "-m", "mahavishnu_dlq", *command],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=60,
            check=False,
        )
        assert result.returncode == 1, result
        assert wrong not in result.stdout + result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert "authentication failed for user 'dlq'" in lines[0]
        assert "Traceback" not in result.stderr


# -- client certificates ------------------------------------------------------------------


def _cert_store(node: SecuredNode, index: str, user: str) -> OpenSearchStore:
    """A store that logs in with the client certificate of ``user`` (no password)."""
    cert, key = node.cert(user)
    return _store(node, index, ca_certs=node.ca_file, client_cert=cert, client_key=key)


async def test_a_client_certificate_logs_in_as_its_common_name(
    secured_opensearch: SecuredNode, index: str
) -> None:
    await _round_trip(_cert_store(secured_opensearch, index, "dlq"))


async def test_a_certificate_of_a_user_without_the_role_is_refused_access(
    secured_opensearch: SecuredNode, index: str
) -> None:
    store = _cert_store(secured_opensearch, index, "nobody")
    with pytest.raises(StoreAccessError) as caught:
        await store.open()
    assert "user [name=nobody" in str(caught.value).lower()
    await store.close()


async def test_a_user_without_the_role_is_refused_naming_the_permission(
    secured_opensearch: SecuredNode, index: str
) -> None:
    store = _store(
        secured_opensearch,
        index,
        username="nobody",
        password=PASSWORDS["nobody"],
        ca_certs=secured_opensearch.ca_file,
    )
    with pytest.raises(StoreAccessError) as caught:
        await store.open()
    message = str(caught.value)
    assert "user 'nobody' lacks a permission" in message
    assert "indices:admin/index_template/put" in message or "no permissions for" in message
    await store.close()


# -- an expired certificate, a certificate for another host -------------------------------


class _TLSListener:
    """A TLS listener on 127.0.0.1 that presents one certificate and hangs up."""

    def __init__(self, cert: Path, key: Path) -> None:
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(cert, key)
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.url = f"https://127.0.0.1:{self._socket.getsockname()[1]}"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._socket.accept()
            except OSError:  # closed: the test is over
                return
            try:
                with self._context.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (OSError, ssl.SSLError):
                pass
            finally:
                conn.close()

    def close(self) -> None:
        self._socket.close()
        self._thread.join(timeout=5)


@pytest.fixture
def own_pki(tmp_path: Path) -> Any:
    """A CA of the test's own (the node script's PKI code), to sign bad certificates."""
    load_node_script()
    from osnode.security import make_pki  # noqa: PLC0415 - on sys.path once the script loads

    return make_pki(tmp_path / "pki")


@pytest.fixture
async def listener(request: pytest.FixtureRequest, own_pki: Any) -> AsyncIterator[_TLSListener]:
    now = dt.datetime.now(dt.timezone.utc)
    if request.param == "expired":
        cert, key = own_pki.issue(
            "expired",
            "expired",
            hosts=("127.0.0.1",),
            not_before=now - dt.timedelta(days=30),
            not_after=now - dt.timedelta(days=1),
            server=True,
        )
    else:
        cert, key = own_pki.issue("elsewhere", "db", hosts=("db.example.net",), server=True)
    served = _TLSListener(cert, key)
    yield served
    served.close()


@pytest.mark.parametrize(
    ("listener", "said"),
    [("expired", "has expired"), ("wrong-host", "for another name")],
    indirect=["listener"],
)
async def test_an_expired_or_wrong_host_certificate_is_a_clear_error(
    listener: _TLSListener, own_pki: Any, said: str
) -> None:
    store = OpenSearchStore(
        hosts=[listener.url], index="any-index", ca_certs=str(own_pki.ca_file), timeout=5
    )
    with pytest.raises(StoreTLSError) as caught:
        await store.open()
    message = str(caught.value)
    assert said in message
    assert listener.url in message
    await store.close()


# -- doctor on the secured node -------------------------------------------------------------


def _doctor_settings(node: SecuredNode, index: str, **opensearch: Any) -> DLQSettings:
    return DLQSettings.model_validate(
        {"store": "opensearch", "opensearch": {"hosts": [node.url], "index": index, **opensearch}}
    )


async def test_doctor_passes_for_the_writer_and_names_its_user_and_role(
    secured_opensearch: SecuredNode, index: str
) -> None:
    creds = {
        "username": "dlq",
        "password": PASSWORDS["dlq"],
        "ca_certs": secured_opensearch.ca_file,
    }
    await _round_trip(_store(secured_opensearch, index, **creds))  # the index exists
    checks = {
        check.name: check
        for check in await diagnose(_doctor_settings(secured_opensearch, index, **creds))
    }
    assert not [check for check in checks.values() if check.status == "fail"], checks
    assert (
        "certificate verified"
        in checks["tls 127.0.0.1:" + secured_opensearch.url.rsplit(":", 1)[1]].detail
    )
    assert "'dlq'" in checks["authentication"].detail
    assert "mahavishnu_dlq" in checks["authentication"].detail
    assert checks["write"].status == "ok"
    assert checks["version"].status == "warn"  # cluster:monitor/main is not in the role


@pytest.mark.parametrize(
    ("options", "failing", "fix"),
    [
        (
            {"username": "dlq", "password": "Doctor-Wrong-pw-9"},
            "authentication",
            "opensearch.password",
        ),
        (
            {"username": "dlq", "password": PASSWORDS["dlq"], "ca": False},
            "tls",
            "opensearch.ca_certs",
        ),
    ],
    ids=["wrong-password", "no-ca"],
)
async def test_doctor_fails_on_the_check_at_fault_and_never_shows_the_password(
    secured_opensearch: SecuredNode, index: str, options: dict[str, Any], failing: str, fix: str
) -> None:
    given = dict(options)
    if given.pop("ca", True):
        given["ca_certs"] = secured_opensearch.ca_file
    checks = await diagnose(_doctor_settings(secured_opensearch, index, **given))
    bad = [check for check in checks if check.status == "fail"]
    assert bad
    assert bad[0].name.startswith(failing), checks
    assert fix in f"{bad[0].detail} {bad[0].fix}"
    shown = json.dumps([check.to_dict() for check in checks])
    assert str(given["password"]) not in shown
