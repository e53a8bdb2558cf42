"""Hostile settings: credentials in host URLs (moved to username/password when settings
load, never shown) and the credentials module (see ``test_settings_hostile``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from pydantic import SecretStr

from mahavishnu_dlq.credentials import MASK, mask_credentials, mask_userinfo, split_credentials
from mahavishnu_dlq.errors import ConfigurationError
from mahavishnu_dlq.settings import DLQSettings, OpenSearchSettings
from tests.unit.settings_support import (  # noqa: F401 - an autouse fixture
    ENCODED,
    PASSWORD,
    clean_environment,
    write,
)

# --- credentials in host URLs -------------------------------------------------------------

CREDENTIAL_FORMS = [
    (f"https://admin:{ENCODED}@node:9200", "https://node:9200", "admin", PASSWORD),
    (f"http://admin:{PASSWORD}@node:9200/prefix", "http://node:9200/prefix", "admin", PASSWORD),
    (f"admin:{ENCODED}@node:9200", "node:9200", "admin", PASSWORD),
    ("admin:a@b@node:9200", "node:9200", "admin", "a@b"),
    ("https://admin:with space@node", "https://node", "admin", "with space"),
    ("https://ad%3Amin:x%2Fy@[::1]:9200", "https://[::1]:9200", "ad:min", "x/y"),
    ("https://admin@node:9200", "https://node:9200", "admin", None),
]


@pytest.mark.parametrize(("entry", "host", "username", "password"), CREDENTIAL_FORMS)
def test_credentials_move_out_of_host_urls(
    entry: str, host: str, username: str, password: str | None
) -> None:
    settings = DLQSettings.load(opensearch={"hosts": [entry, "http://plain:9200"]})
    opensearch = settings.opensearch
    assert opensearch.hosts == [host, "http://plain:9200"]
    assert opensearch.username == username
    secret = None if opensearch.password is None else opensearch.password.get_secret_value()
    assert secret == password
    if password is not None:
        shown = [repr(settings), str(settings), repr(opensearch), settings.model_dump_json()]
        shown += [json.dumps(settings.redacted()), str(settings.model_dump())]
        for text in shown:
            assert password not in text
            assert quote(password, safe="") not in text


def test_credentials_in_yaml_and_environment_hosts_move_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, f"opensearch:\n  hosts: ['https://admin:{ENCODED}@a:9200']\n")
    assert DLQSettings.load(path).opensearch.hosts == ["https://a:9200"]
    monkeypatch.setenv("MAHAVISHNU_DLQ_OPENSEARCH__HOSTS", json.dumps([f"u:{PASSWORD}@b:9200"]))
    settings = DLQSettings.load()
    assert settings.opensearch.hosts == ["b:9200"]
    assert settings.opensearch.password == SecretStr(PASSWORD)
    assert settings.redacted()["opensearch"]["password"] == MASK


def test_the_same_credentials_given_twice_are_accepted() -> None:
    settings = DLQSettings.load(
        opensearch={
            "hosts": [f"https://admin:{ENCODED}@a:9200", f"https://admin:{ENCODED}@b:9200"],
            "username": "admin",
            "password": PASSWORD,
        }
    )
    assert settings.opensearch.hosts == ["https://a:9200", "https://b:9200"]
    assert settings.opensearch.password == SecretStr(PASSWORD)


@pytest.mark.parametrize(
    ("opensearch", "problem"),
    [
        (
            {"hosts": [f"https://admin:{ENCODED}@a", f"https://admin:other{ENCODED}@b"]},
            "hosts[1] carries different credentials from hosts[0]",
        ),
        (
            {"hosts": ["http://plain", f"https://admin:{ENCODED}@a", "https://root:x@b"]},
            "hosts[2] carries different credentials from hosts[1]",
        ),
        (
            {"hosts": [f"https://admin:{ENCODED}@a"], "username": "root"},
            "the user name in hosts[0] differs from username",
        ),
        (
            {"hosts": [f"https://admin:{ENCODED}@a"], "password": "other" + PASSWORD},
            "the password in hosts[0] differs from password",
        ),
    ],
    ids=["hosts", "hosts-later", "username", "password"],
)
def test_conflicting_credentials_are_refused_without_showing_them(
    opensearch: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        DLQSettings.load(opensearch=opensearch)
    error = info.value
    assert error.field == "opensearch"
    assert f"opensearch: {problem}" in str(error)
    for text in (str(error), str(error.__cause__), repr(error.__cause__)):
        assert PASSWORD not in text
        assert ENCODED not in text


@pytest.mark.parametrize(
    ("host", "problem"),
    [
        ("http://h:99999", "port must be a whole number between 1 and 65535"),
        ("http://h:0", "port must be a whole number between 1 and 65535"),
        ("http://h:abc", "port must be a whole number between 1 and 65535"),
        ("http://h:", "port must be a whole number between 1 and 65535"),
        ("h:" + "9" * 5000, "port must be a whole number between 1 and 65535"),
        ("ftp://h:21", "scheme must be http or https, not 'ftp'"),
        ("http://h:9200?x=1", "must not have a query or a fragment"),
        ("http://h h:9200", "must not contain blanks"),
        ("http://:9200", "the host name is missing"),
        ("::1", "an IPv6 address goes in brackets: [::1]:9200"),
        ("[::1:9200", "an IPv6 address needs its closing ']'"),
        ("[zz::1]:9200", "'zz::1' is not an IPv6 address"),
        ("[::1]9200", "only ':port' may follow an IPv6 address"),
        ("https://:secret@h", "the credentials before '@' have no user name"),
        ("   ", "must not be empty"),
    ],
)
def test_a_bad_host_names_the_entry(host: str, problem: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        DLQSettings.load(opensearch={"hosts": ["http://ok:9200", host]})
    assert info.value.field == "opensearch.hosts[1]"
    assert f"opensearch.hosts[1]: {problem}" in str(info.value)
    assert "secret" not in str(info.value)


@pytest.mark.parametrize(
    "entry", [f"https://admin:{PASSWORD}@node:99999", f"admin:{ENCODED}@node:abc"]
)
def test_a_bad_port_with_credentials_shows_the_host_without_them(entry: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        DLQSettings.load(opensearch={"hosts": [entry]})
    message = str(info.value)
    assert "opensearch.hosts[0]: port must be a whole number between 1 and 65535" in message
    assert f"{MASK}@node:" in message
    for text in (message, str(info.value.__cause__)):
        assert PASSWORD not in text
        assert ENCODED not in text
        assert "admin" not in text


@pytest.mark.parametrize(
    "host",
    [
        "[::1]:9200",
        "http://[::1]:9200",
        "https://[2001:db8::1]:443/prefix",
        "http://[fe80::1%eth0]:9200",
        "http://127.0.0.1:1",
        "https://search.example:65535",
        "search.example",
        "http://node_1.internal/",
    ],
)
def test_good_hosts_are_kept_as_given(host: str) -> None:
    settings = DLQSettings.load(opensearch={"hosts": [f" {host} "]})
    assert settings.opensearch.hosts == [host]
    assert settings.opensearch.username is None


def test_opensearch_settings_built_directly_take_credentials_out() -> None:
    opensearch = OpenSearchSettings(hosts=[f"https://admin:{ENCODED}@node:9200"])
    assert opensearch.hosts == ["https://node:9200"]
    assert PASSWORD not in repr(opensearch)
    settings = DLQSettings.load(opensearch=opensearch)
    assert settings.opensearch.password == SecretStr(PASSWORD)


# --- the credentials module ---------------------------------------------------------------

USERS = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=20)
PASSWORDS = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
SCHEMES = st.sampled_from(["", "http://", "https://"])
HOSTS = st.sampled_from(["node:9200", "search.example", "[::1]:9200/prefix", "10.0.0.1:1"])


@given(SCHEMES, USERS, PASSWORDS, HOSTS)
def test_any_percent_encoded_credentials_round_trip(
    scheme: str, user: str, password: str, host: str
) -> None:
    """Printable ASCII user and password, '@', ':', '/', ' ', '%' included, percent-encoded."""
    entry = f"{scheme}{quote(user, safe='')}:{quote(password, safe='')}@{host}"
    assert split_credentials(entry) == (scheme + host, user, password)


@given(SCHEMES, USERS, PASSWORDS, HOSTS)
def test_raw_credentials_round_trip_when_unambiguous(
    scheme: str, user: str, password: str, host: str
) -> None:
    """Written raw, a password may hold '@', ':', '/' and spaces; only '%' is decoded, and
    the user name ends at its first ':' (so a raw user holds neither ':' nor '@')."""
    assume("%" not in user + password and ":" not in user and "@" not in user)
    assume(scheme or "://" not in f"{user}:{password}")  # else it reads as a scheme
    entry = f"{scheme}{user}:{password}@{host}"
    assert split_credentials(entry) == (scheme + host, user, password)
    assert mask_userinfo(entry) == f"{scheme}{MASK}@{host}"


@given(PASSWORDS, st.sampled_from(["", "http://", "https://"]))
def test_a_given_secret_never_survives_masking(password: str, scheme: str) -> None:
    assume(password.strip() and "*" not in password)
    text = f"GET {scheme}admin:{password}@node:9200/_bulk failed ({quote(password)}) for {password}"
    masked = mask_credentials(text, [password])
    assert password not in masked
    assert quote(password, safe="") not in masked
    assert quote(password) not in masked


@given(
    st.text(st.sampled_from("abcXYZ019@:/%!$&*+,;=.~-"), min_size=1, max_size=30),
    st.sampled_from(["http://", "https://", ""]),
)
def test_userinfo_is_masked_in_free_text_without_the_secret(password: str, scheme: str) -> None:
    """No secret given: a URL's userinfo (a password with '@', ':', '/' …) is still masked."""
    assume("://" not in password and not password.startswith("//"))
    text = f"refused by {scheme}admin:{password}@search.example:9200/x, retrying"
    assert mask_credentials(text) == f"refused by {scheme}{MASK}@search.example:9200/x, retrying"


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        (
            "['https://u:p@h:9200', 'http://plain:9200']",
            f"['https://{MASK}@h:9200', 'http://plain:9200']",
        ),
        ("at https://u:pass word@h:9200 refused", f"at https://{MASK}@h:9200 refused"),
        ("http://u:p@[::1]:9200/", f"http://{MASK}@[::1]:9200/"),
        ("http://a:1@h1:1, http://b:2@h2:2", f"http://{MASK}@h1:1, http://{MASK}@h2:2"),
        ("at http://h:9200: failed to parse [@timestamp]", None),
        ("field @timestamp of http://h:9200", None),
        ("write to ops@example.com", None),
    ],
)
def test_mask_credentials_examples(text: str, masked: str | None) -> None:
    assert mask_credentials(text) == (text if masked is None else masked)
