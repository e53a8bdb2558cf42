"""DLQSettings: ranges, choices and validators, files that cannot be read, and secrets —
each problem one clear ConfigurationError."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from mahavishnu_dlq.errors import ConfigurationError
from mahavishnu_dlq.models import ErrorCategory
from mahavishnu_dlq.settings import (
    ClassifierRuleSettings,
    DLQSettings,
    PolicySettings,
)
from tests.unit.settings_support import (  # clean_environment: an autouse fixture
    HIDDEN,
    MASK,
    clean_environment,  # noqa: F401
    config_error,
    write,
)

# --- range boundaries ---------------------------------------------------------------

TOP_LEVEL_RANGES = [
    ("max_size", 100, 100000, 1),
    ("default_max_retries", 0, 10, 1),
    ("retry_interval_seconds", 10, 3600, 0.5),
    ("max_payload_bytes", 1024, 67_108_864, 1),
    ("attempts_kept", 1, 1000, 1),
]


@pytest.mark.parametrize(("name", "low", "high"), [case[:3] for case in TOP_LEVEL_RANGES])
def test_top_level_range_inside_is_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, low: float, high: float
) -> None:
    for value in (low, high):
        overrides: dict[str, Any] = {name: value}
        assert getattr(DLQSettings.load(**overrides), name) == value
        assert getattr(DLQSettings.load(write(tmp_path, f"{name}: {value}\n")), name) == value
    monkeypatch.setenv(f"MAHAVISHNU_DLQ_{name.upper()}", str(low))
    assert getattr(DLQSettings.load(), name) == low


@pytest.mark.parametrize(("name", "low", "high", "step"), TOP_LEVEL_RANGES)
@pytest.mark.parametrize("side", ["below", "above"])
def test_top_level_range_outside_is_rejected(
    name: str, low: float, high: float, step: float, side: str
) -> None:
    bad = low - step if side == "below" else high + step
    overrides: dict[str, Any] = {name: bad}
    error = config_error(**overrides)
    assert error.field == name
    message = str(error)
    assert f"{name}: must be between {low} and {high}, got {bad}" in message
    assert f"keyword argument {name}" in message


@pytest.mark.parametrize(
    ("variable", "value", "field", "allowed"),
    [
        ("PROCESSOR__CONCURRENCY", "0", "processor.concurrency", "between 1 and 1000"),
        ("PROCESSOR__BATCH_SIZE", "10001", "processor.batch_size", "between 1 and 10000"),
        ("PROCESSOR__LEASE_SECONDS", "0.5", "processor.lease_seconds", "between 1 and 86400"),
        (
            "POLICIES__EXPONENTIAL_BASE_SECONDS",
            "0",
            "policies.exponential_base_seconds",
            "greater than 0 and at most 86400",
        ),
        ("OPENSEARCH__TIMEOUT_SECONDS", "301", "opensearch.timeout_seconds", "between 0.1 and 300"),
        ("FAILOVER__FAILURE_THRESHOLD", "101", "failover.failure_threshold", "between 1 and 100"),
        (
            "FAILOVER__STORE_TIMEOUT_SECONDS",
            "0.01",
            "failover.store_timeout_seconds",
            "between 0.05 and 300",
        ),
    ],
)
def test_nested_range_from_env_is_rejected(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, field: str, allowed: str
) -> None:
    monkeypatch.setenv(f"MAHAVISHNU_DLQ_{variable}", value)
    error = config_error()
    assert error.field == field
    assert f"{field}: must be {allowed}, got '{value}'" in str(error)
    assert f"environment variable MAHAVISHNU_DLQ_{variable}" in str(error)


def test_env_var_source_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAHAVISHNU_DLQ_MAX_SIZE", "50")
    error = config_error()
    assert error.field == "max_size"
    assert str(error).endswith(
        "max_size: must be between 100 and 100000, got '50' "
        "(from environment variable MAHAVISHNU_DLQ_MAX_SIZE)"
    )


def test_yaml_source_is_named_with_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, "enabled: true\nprocessor:\n  concurrency: 2000\n")
    message = str(config_error(path))
    assert f"processor.concurrency: must be between 1 and 1000, got 2000 (from {path}, line 3)" in (
        message
    )


def test_bad_type_message_keeps_the_range(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAHAVISHNU_DLQ_MAX_SIZE", "lots")
    assert "max_size: must be a whole number between 100 and 100000, got 'lots'" in str(
        config_error()
    )


def test_every_problem_gets_its_own_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "store: redis\nattempts_kept: 0\n")
    monkeypatch.setenv("MAHAVISHNU_DLQ_ENABLED", "maybe")
    error = config_error(path, max_size=1)
    lines = str(error).splitlines()
    assert lines[0] == "invalid mahavishnu-dlq configuration (4 problems):"
    assert len(lines) == 5
    assert error.field == "enabled"  # field order, not source order
    assert any(line.startswith("  - enabled: must be true or false") for line in lines)
    assert any(line.startswith("  - store: must be one of: ") for line in lines)


def test_from_yaml_raises_configuration_error_not_validation_error(tmp_path: Path) -> None:
    path = write(tmp_path, "max_size: 5\n")
    with pytest.raises(ConfigurationError):
        DLQSettings.from_yaml(path)
    with pytest.raises(ValidationError):
        DLQSettings(max_size=5)


# --- choices and validators -----------------------------------------------------------


def test_bad_enum_value_lists_the_allowed_values() -> None:
    error = config_error(default_retry_policy="sometimes")
    assert error.field == "default_retry_policy"
    assert (
        "default_retry_policy: must be one of: never, linear, exponential, immediate, "
        "got 'sometimes'"
    ) in str(error)


def test_bad_literal_value_lists_the_allowed_values() -> None:
    assert "store: must be one of: sqlite, memory, opensearch, failover, got 'redis'" in str(
        config_error(store="redis")
    )
    message = str(config_error(opensearch={"refresh": "always"}))
    assert "opensearch.refresh: must be one of: false, wait_for, true" in message


def test_bad_category_key_lists_the_categories(tmp_path: Path) -> None:
    path = write(tmp_path, "policies:\n  by_category:\n    flaky:\n      max_retries: 2\n")
    error = config_error(path)
    assert error.field == "policies.by_category.flaky"
    assert "key 'flaky' must be one of: transient, network, resource, permission" in str(error)


def test_cap_below_base_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, "policies:\n  exponential_cap_seconds: 30\n")
    error = config_error(path)
    assert error.field == "policies"
    assert "exponential_cap_seconds (30) must be >= exponential_base_seconds (60)" in str(error)
    with pytest.raises(ValidationError):
        PolicySettings(exponential_base_seconds=10, exponential_cap_seconds=5)


def test_classifier_rule_needs_a_type_or_a_pattern() -> None:
    error = config_error(classifier={"rules": [{"category": "network"}]})
    assert error.field == "classifier.rules[0]"
    assert "needs an exception_type, a pattern or both" in str(error)


def test_classifier_rule_pattern_must_compile() -> None:
    error = config_error(classifier={"rules": [{"category": "network", "pattern": "(oops"}]})
    assert error.field == "classifier.rules[0].pattern"
    assert "pattern '(oops' is not a valid regular expression" in str(error)
    assert ClassifierRuleSettings(category=ErrorCategory.NETWORK, pattern="ok").pattern == "ok"


@pytest.mark.parametrize("index", ["Tasks", "_tasks", "a b", "a*b", "..", "a:b"])
def test_opensearch_index_must_be_a_valid_name(index: str) -> None:
    error = config_error(opensearch={"index": index})
    assert error.field == "opensearch.index"
    assert f"index name {index!r}" in str(error)


def test_per_workflow_override_bounds(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        policies:
          by_workflow:
            nightly:
              categories:
                network:
                  max_retries: 11
        """,
    )
    error = config_error(path)
    assert error.field == "policies.by_workflow.nightly.categories.network.max_retries"
    assert "must be between 0 and 10, got 11" in str(error)


# --- files that cannot be read --------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    for load in (DLQSettings.from_yaml, DLQSettings.load):
        with pytest.raises(ConfigurationError, match="does not exist") as info:
            load(missing)
        assert str(missing) in str(info.value)


def test_malformed_yaml_names_the_path_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "max_size: 500\nprocessor:\n  concurrency: [1\n  batch_size: 3\n")
    with pytest.raises(ConfigurationError) as info:
        DLQSettings.from_yaml(path)
    message = str(info.value)
    assert str(path) in message
    assert re.search(r"line \d+, column \d+", message)
    assert "line 3" in message  # where the unclosed sequence starts


def test_malformed_yaml_reports_the_failing_line(tmp_path: Path) -> None:
    path = write(tmp_path, "max_size: 500\nstore: [memory\n")
    assert "line 3" in str(config_error(path))
    path = write(tmp_path, "max_size: 500\n  store: memory\n", name="indent.yaml")
    assert "line 2" in str(config_error(path))


def test_unknown_key_is_an_error_naming_it(tmp_path: Path) -> None:
    error = config_error(write(tmp_path, "max_size: 500\nmax_sise: 600\n"))
    assert error.field == "max_sise"
    assert "max_sise: unknown setting" in str(error)
    error = config_error(write(tmp_path, "processor:\n  concurency: 4\n", name="nested.yaml"))
    assert error.field == "processor.concurency"
    assert "allowed here: concurrency, attempt_timeout_seconds" in str(error)


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="must hold a mapping") as info:
        DLQSettings.from_yaml(write(tmp_path, "- max_size\n- 500\n"))
    assert "list" in str(info.value)
    with pytest.raises(ConfigurationError, match="must hold a mapping"):
        DLQSettings.from_yaml(write(tmp_path, "just text\n", name="scalar.yaml"))


def test_env_value_that_is_not_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAHAVISHNU_DLQ_OPENSEARCH__HOSTS", "[http://a:9200]")
    error = config_error()
    assert error.field == "opensearch"
    assert "MAHAVISHNU_DLQ_OPENSEARCH__HOSTS" in str(error)
    assert "groups and lists take JSON" in str(error)


@pytest.mark.parametrize(
    ("value", "form"),
    [
        ("http://a:9200", """'["http://a:9200"]'"""),
        ("a:9200", """'["a:9200"]'"""),
        (" http://a:9200 , https://b:9200,", """'["http://a:9200", "https://b:9200"]'"""),
        ("https://admin:hunter2@a:9200", """'["https://**********@a:9200"]'"""),
        ("http://o'brien:9200", """'["http://o'"'"'brien:9200"]'"""),
    ],
)
def test_a_bare_url_in_the_hosts_variable_is_answered_with_the_form_to_write(
    monkeypatch: pytest.MonkeyPatch, value: str, form: str
) -> None:
    monkeypatch.setenv("MAHAVISHNU_DLQ_OPENSEARCH__HOSTS", value)
    error = config_error()
    assert error.field == "opensearch.hosts"
    message = str(error)
    assert message.endswith(
        "environment variable MAHAVISHNU_DLQ_OPENSEARCH__HOSTS is a list, written as JSON: "
        f"MAHAVISHNU_DLQ_OPENSEARCH__HOSTS={form}"
    )
    assert "hunter2" not in message
    written = form[1:-1].replace("""'"'"'""", "'")
    if not set("*'") & set(written):  # what it says to write loads (these hosts are valid)
        monkeypatch.setenv("MAHAVISHNU_DLQ_OPENSEARCH__HOSTS", written)
        assert DLQSettings().opensearch.hosts == json.loads(written)


# --- secrets ------------------------------------------------------------------------


def test_password_is_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAHAVISHNU_DLQ_OPENSEARCH__PASSWORD", HIDDEN)
    settings = DLQSettings()
    assert settings.opensearch.password is not None
    assert settings.opensearch.password.get_secret_value() == HIDDEN
    assert HIDDEN not in repr(settings)
    assert HIDDEN not in str(settings)
    assert HIDDEN not in repr(settings.opensearch)
    redacted = settings.redacted()
    assert redacted["opensearch"]["password"] == MASK
    assert HIDDEN not in json.dumps(redacted)


def test_password_is_never_in_error_messages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAHAVISHNU_DLQ_OPENSEARCH__PASSWORD", HIDDEN)
    error = config_error(opensearch={"timeout_seconds": 0})
    assert HIDDEN not in str(error)
    assert HIDDEN not in str(error.__cause__)
    # a password of the wrong type: the message names the field but masks the value
    path = write(tmp_path, "opensearch:\n  password: 123456789\n")
    monkeypatch.delenv("MAHAVISHNU_DLQ_OPENSEARCH__PASSWORD")
    error = config_error(path)
    assert error.field == "opensearch.password"
    assert f"got {MASK}" in str(error)
    assert "123456789" not in str(error)
    assert "123456789" not in str(error.__cause__)


def test_redacted_is_json_and_credentials_leave_host_urls() -> None:
    settings = DLQSettings(opensearch={"hosts": [f"https://admin:{HIDDEN}@node:9200"]})
    redacted = settings.redacted()
    assert redacted["opensearch"]["hosts"] == ["https://node:9200"]
    assert redacted["opensearch"]["username"] == "admin"
    assert redacted["opensearch"]["password"] == MASK
    assert json.loads(json.dumps(redacted))["max_size"] == 10000
    assert redacted["default_retry_policy"] == "exponential"
    assert HIDDEN not in str(config_error(opensearch={"hosts": [f"https://a:{HIDDEN}@n", ""]}))
