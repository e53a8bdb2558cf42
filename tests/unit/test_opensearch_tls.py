"""The store's TLS context: what the settings point at is checked when the store is built,
each problem named by its setting; ``verify_certs: false`` warns once per process."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import pytest

from mahavishnu_dlq.errors import ConfigurationError
from mahavishnu_dlq.storage import opensearch_tls
from mahavishnu_dlq.storage.opensearch_tls import tls_context
from tests.conftest import load_node_script


@pytest.fixture
def pki(tmp_path: Path) -> Any:
    load_node_script()
    from osnode.security import make_pki  # noqa: PLC0415 - on sys.path once the script loads

    return make_pki(tmp_path / "pki", clients=("one", "two"))


def test_a_ca_and_a_matching_client_pair_make_a_context(pki: Any) -> None:
    cert, key = pki.files["one"]
    context = tls_context(ca_certs=str(pki.ca_file), client_cert=str(cert), client_key=str(key))
    assert context.check_hostname
    subjects = [str(ca["subject"]) for ca in context.get_ca_certs()]
    assert any("mahavishnu-dlq test CA" in subject for subject in subjects)


@pytest.mark.parametrize(
    ("case", "setting"),
    [
        ("ca missing", "opensearch.ca_certs"),
        ("ca not pem", "opensearch.ca_certs"),
        ("key of another", "opensearch.client_cert"),
        ("cert missing", "opensearch.client_cert"),
        ("key without cert", "opensearch.client_cert"),
    ],
)
def test_each_problem_names_its_setting(pki: Any, tmp_path: Path, case: str, setting: str) -> None:
    one_cert, _ = pki.files["one"]
    _, two_key = pki.files["two"]
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("not a certificate\n")
    arguments: dict[str, Any] = {
        "ca missing": {"ca_certs": str(tmp_path / "absent.pem")},
        "ca not pem": {"ca_certs": str(not_pem)},
        "key of another": {"client_cert": str(one_cert), "client_key": str(two_key)},
        "cert missing": {"client_cert": str(tmp_path / "absent.pem"), "client_key": str(two_key)},
        "key without cert": {"client_key": str(two_key)},
    }[case]
    with pytest.raises(ConfigurationError) as caught:
        tls_context(**arguments)
    assert caught.value.field == setting
    assert setting in str(caught.value)


def test_turning_verification_off_warns_once_per_process(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(opensearch_tls, "_warned", threading.Event())
    caplog.set_level(logging.WARNING, logger="mahavishnu_dlq")
    tls_context(verify_certs=False, hosts=["http://a:9200"])  # plain HTTP: nothing to say
    assert not caplog.records
    for hosts in (["https://a:9200", "https://b:9200"], ["https://c:9200"]):
        context = tls_context(verify_certs=False, hosts=hosts)
        assert not context.check_hostname
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["dlq.opensearch.insecure"]
    assert "https://a:9200, https://b:9200" in caplog.records[0].getMessage()
