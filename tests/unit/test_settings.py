"""DLQSettings: sources and their precedence, validation messages, and the bridges."""

from __future__ import annotations

import json
import os
import re
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

import mahavishnu_dlq.settings as package
from mahavishnu_dlq.classifier import ErrorClassifier
from mahavishnu_dlq.errors import ConfigurationError
from mahavishnu_dlq.models import ErrorCategory, RetryPolicy
from mahavishnu_dlq.policy import Jitter, PolicyBook, PolicyParams
from mahavishnu_dlq.settings import (
    CONFIG_ENV_VAR,
    ClassifierRuleSettings,
    DLQSettings,
    PolicySettings,
    ProcessorSettings,
    SQLiteSettings,
    state_dir,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "settings" / "mahavishnu_dlq.yaml"
HIDDEN = "s3cr3t-Value-4711"  # stands for a real password: must never be shown
MASK = "**********"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No MAHAVISHNU_DLQ_* variable of the machine running the tests leaks in."""
    for name in list(os.environ):
        if name.upper().startswith("MAHAVISHNU_DLQ_"):
            monkeypatch.delenv(name)


def write(tmp_path: Path, text: str, name: str = "dlq.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def config_error(path: Path | None = None, **overrides: Any) -> ConfigurationError:
    with pytest.raises(ConfigurationError) as info:
        DLQSettings.load(path, **overrides)
    return info.value


# --- defaults and the example file -------------------------------------------------


def test_defaults() -> None:
    settings = DLQSettings()
    assert settings.enabled is True
    assert settings.max_size == 10000
    assert settings.default_retry_policy is RetryPolicy.EXPONENTIAL
    assert settings.default_max_retries == 3
    assert settings.retry_processor_enabled is True
    assert settings.retry_interval_seconds == 60
    assert settings.store == "sqlite"
    assert settings.sqlite.path is None  # the per-user default file
    assert settings.sqlite.file() == state_dir() / "dlq.sqlite3"
    assert settings.max_payload_bytes == 1_048_576
    assert settings.attempts_kept == 20
    assert settings.processor == ProcessorSettings()
    assert settings.processor.concurrency == 10
    assert settings.processor.attempt_timeout_seconds == 300
    assert settings.processor.lease_seconds == 600
    assert settings.processor.batch_size == 100
    assert settings.processor.worker_id is None
    assert settings.policies.linear_step_seconds == 300
    assert settings.policies.exponential_base_seconds == 60
    assert settings.policies.exponential_cap_seconds == 3600
    assert settings.policies.jitter is Jitter.NONE
    assert settings.policies.deadline_seconds is None
    assert settings.policies.category_policies == {}
    assert settings.policies.by_category == {}
    assert settings.policies.by_workflow == {}
    assert settings.classifier.use_keywords is True
    assert settings.classifier.rules == []
    assert settings.opensearch.hosts == ["http://127.0.0.1:9200"]
    assert settings.opensearch.username is None
    assert settings.opensearch.password is None
    assert settings.opensearch.verify_certs is True
    assert settings.opensearch.ca_certs is None
    assert settings.opensearch.timeout_seconds == 10
    assert settings.opensearch.index == "mahavishnu-dlq-tasks"
    assert settings.opensearch.refresh == "false"
    assert settings.failover.fallback == "sqlite"
    assert settings.failover.path is None
    assert settings.failover.directory("dlq") == state_dir() / "failover" / "dlq"
    assert settings.failover.failure_threshold == 3
    assert settings.failover.probe_interval_seconds == 5
    assert settings.failover.store_timeout_seconds == 5


def test_example_yaml_loads_and_equals_the_defaults() -> None:
    assert DLQSettings.from_yaml(EXAMPLE) == DLQSettings()
    assert DLQSettings.load(EXAMPLE) == DLQSettings()


def test_example_yaml_lists_every_field() -> None:
    document = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    settings = DLQSettings()
    assert set(document) == set(DLQSettings.model_fields)
    for group in ("processor", "policies", "classifier", "sqlite", "opensearch", "failover"):
        assert set(document[group]) == set(type(getattr(settings, group)).model_fields), group


def _commented_examples() -> list[str]:
    """The commented-out blocks after each ``# Example:`` line, uncommented."""
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    blocks = []
    for number, line in enumerate(lines):
        if line.strip() != "# Example:":
            continue
        indent = line[: len(line) - len(line.lstrip())]
        block = []
        for following in lines[number + 1 :]:
            if not following.startswith(indent + "# "):
                break
            block.append(following[len(indent) + 2 :])
        blocks.append("\n".join(block))
    return blocks


def test_example_yaml_commented_examples_are_valid(tmp_path: Path) -> None:
    blocks = dict(zip(("policies", "classifier"), _commented_examples(), strict=True))
    text = "".join(f"{group}:\n{textwrap.indent(block, '  ')}\n" for group, block in blocks.items())
    settings = DLQSettings.from_yaml(write(tmp_path, text))
    assert settings.policies.by_workflow["nightly-report"].categories
    assert len(settings.classifier.rules) == 3


def test_the_default_sqlite_file_follows_the_xdg_state_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert SQLiteSettings().file() == tmp_path / "mahavishnu-dlq" / "dlq.sqlite3"
    for unusable in ("", "relative/dir"):  # the XDG rule: only an absolute path counts
        monkeypatch.setenv("XDG_STATE_HOME", unusable)
        assert state_dir() == Path.home() / ".local" / "state" / "mahavishnu-dlq"
    monkeypatch.delenv("XDG_STATE_HOME")
    assert state_dir() == Path.home() / ".local" / "state" / "mahavishnu-dlq"
    given = SQLiteSettings(path="~/queues/dlq.sqlite3")
    assert given.file() == Path.home() / "queues" / "dlq.sqlite3"
    monkeypatch.setenv("MAHAVISHNU_DLQ_SQLITE__PATH", str(tmp_path / "from-env.sqlite3"))
    assert DLQSettings().sqlite.file() == tmp_path / "from-env.sqlite3"
    with pytest.raises(ConfigurationError, match=r"sqlite\.path"):
        DLQSettings.load(sqlite={"path": ""})


def test_the_settings_package_keeps_its_public_names() -> None:
    assert package.__all__ == [
        "CONFIG_ENV_VAR",
        "ENV_PREFIX",
        "ClassifierRuleSettings",
        "ClassifierSettings",
        "DLQSettings",
        "FailoverSettings",
        "OpenSearchSettings",
        "PolicyOverrideSettings",
        "PolicySettings",
        "ProcessorSettings",
        "SQLiteSettings",
        "WorkflowPolicySettings",
        "state_dir",
    ]
    missing = [name for name in package.__all__ if not hasattr(package, name)]
    assert missing == []
    assert (package.ENV_PREFIX, package.CONFIG_ENV_VAR) == (
        "MAHAVISHNU_DLQ_",
        "MAHAVISHNU_DLQ_CONFIG",
    )


# --- sources and precedence -----------------------------------------------------------


def test_env_overrides_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "max_size: 500\ndefault_max_retries: 5\n")
    monkeypatch.setenv("MAHAVISHNU_DLQ_MAX_SIZE", "700")
    settings = DLQSettings.from_yaml(path)
    assert settings.max_size == 700
    assert settings.default_max_retries == 5


def test_nested_env_with_double_underscore(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAHAVISHNU_DLQ_PROCESSOR__CONCURRENCY", "4")
    monkeypatch.setenv("MAHAVISHNU_DLQ_POLICIES__JITTER", "full")
    monkeypatch.setenv("MAHAVISHNU_DLQ_OPENSEARCH__HOSTS", '["http://a:9200", "http://b:9200"]')
    monkeypatch.setenv("MAHAVISHNU_DLQ_POLICIES__BY_WORKFLOW__NIGHTLY__MAX_RETRIES", "7")
    settings = DLQSettings()
    assert settings.processor.concurrency == 4
    assert settings.processor.batch_size == 100
    assert settings.policies.jitter is Jitter.FULL
    assert settings.opensearch.hosts == ["http://a:9200", "http://b:9200"]
    assert settings.policies.by_workflow["nightly"].max_retries == 7


def test_nested_groups_merge_across_sources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, "processor:\n  concurrency: 5\n  batch_size: 50\n")
    monkeypatch.setenv("MAHAVISHNU_DLQ_PROCESSOR__BATCH_SIZE", "60")
    settings = DLQSettings.from_yaml(path, processor={"lease_seconds": 30})
    assert settings.processor.concurrency == 5
    assert settings.processor.batch_size == 60
    assert settings.processor.lease_seconds == 30


def test_kwargs_override_env_and_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "max_size: 500\nstore: opensearch\n")
    monkeypatch.setenv("MAHAVISHNU_DLQ_MAX_SIZE", "700")
    settings = DLQSettings.from_yaml(path, max_size=900)
    assert settings.max_size == 900
    assert settings.store == "opensearch"
    assert DLQSettings.load(max_size=900).max_size == 900
    assert DLQSettings(max_size=900).max_size == 900


def test_config_env_var_names_the_yaml_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CONFIG_ENV_VAR, str(write(tmp_path, "max_size: 500\n")))
    assert DLQSettings().max_size == 500
    assert DLQSettings.load().max_size == 500
    other = write(tmp_path, "max_size: 600\n", name="other.yaml")
    assert DLQSettings.from_yaml(other).max_size == 600  # an explicit path wins


def test_config_env_var_naming_a_missing_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "absent.yaml"
    monkeypatch.setenv(CONFIG_ENV_VAR, str(missing))
    assert str(missing) in str(config_error())


def test_yaml_file_does_not_leak_into_later_builds(tmp_path: Path) -> None:
    assert DLQSettings.from_yaml(write(tmp_path, "max_size: 500\n")).max_size == 500
    assert DLQSettings().max_size == 10000
    with pytest.raises(ConfigurationError):
        DLQSettings.from_yaml(write(tmp_path, "max_size: 5\n", name="bad.yaml"))
    assert DLQSettings().max_size == 10000


def test_concurrent_builds_each_read_their_own_file(tmp_path: Path) -> None:
    paths = {
        size: write(tmp_path, f"max_size: {size}\n", name=f"{size}.yaml")
        for size in range(100, 140)
    }

    def build(size: int) -> int:
        return DLQSettings.from_yaml(paths[size]).max_size

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(build, [size for size in paths for _ in range(5)]))
    assert results == [size for size in paths for _ in range(5)]
    assert DLQSettings().max_size == 10000


def test_empty_yaml_file_means_defaults(tmp_path: Path) -> None:
    assert DLQSettings.from_yaml(write(tmp_path, "# nothing set\n")) == DLQSettings()


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
    monkeypatch.setenv("MAHAVISHNU_DLQ_OPENSEARCH__HOSTS", "http://a:9200")
    error = config_error()
    assert error.field == "opensearch"
    assert "MAHAVISHNU_DLQ_OPENSEARCH__HOSTS" in str(error)


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


# --- bridges to the core --------------------------------------------------------------


def test_policy_book_defaults() -> None:
    book = DLQSettings().policy_book()
    assert isinstance(book, PolicyBook)
    assert book.default == PolicyParams()


def test_policy_book_reflects_settings(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        default_retry_policy: linear
        default_max_retries: 4
        policies:
          linear_step_seconds: 120
          exponential_base_seconds: 30
          exponential_cap_seconds: 900
          jitter: equal
          deadline_seconds: 86400
          category_policies:
            validation: immediate
          by_category:
            network:
              max_retries: 6
          by_workflow:
            nightly:
              policy: never
              max_retries: 1
              categories:
                resource:
                  policy: exponential
                  max_retries: 9
                  jitter: full
        """,
    )
    book = DLQSettings.from_yaml(path).policy_book()
    assert book.default == PolicyParams(
        policy=RetryPolicy.LINEAR,
        max_retries=4,
        linear_step=120,
        exponential_base=30,
        exponential_cap=900,
        jitter=Jitter.EQUAL,
        deadline=86400,
    )
    assert book.resolve().policy is RetryPolicy.LINEAR
    assert book.resolve(category=ErrorCategory.VALIDATION).policy is RetryPolicy.IMMEDIATE
    # default_retry_policy is the policy of the retryable categories
    network = book.resolve(category=ErrorCategory.NETWORK)
    assert (network.policy, network.max_retries) == (RetryPolicy.LINEAR, 6)
    assert book.resolve(category=ErrorCategory.TRANSIENT).policy is RetryPolicy.LINEAR
    assert book.resolve(category=ErrorCategory.PERMANENT).policy is RetryPolicy.NEVER
    nightly = book.resolve(workflow="nightly")
    assert (nightly.policy, nightly.max_retries) == (RetryPolicy.NEVER, 1)
    assert nightly.deadline == 86400
    nightly_resource = book.resolve(workflow="nightly", category=ErrorCategory.RESOURCE)
    assert nightly_resource.policy is RetryPolicy.EXPONENTIAL
    assert nightly_resource.max_retries == 9
    assert nightly_resource.jitter is Jitter.FULL
    other_resource = book.resolve(workflow="other", category=ErrorCategory.RESOURCE)
    assert other_resource.policy is RetryPolicy.LINEAR


def test_error_classifier_uses_rules_from_yaml(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        classifier:
          use_keywords: false
          rules:
            - category: resource
              pattern: "bucket .* is over budget"
            - category: transient
              exception_type: LookupError
        """,
    )
    classifier = DLQSettings.from_yaml(path).error_classifier()
    assert isinstance(classifier, ErrorClassifier)
    assert classifier.classify(RuntimeError("bucket b-17 is over budget")) is ErrorCategory.RESOURCE
    assert classifier.classify(LookupError("no such row")) is ErrorCategory.TRANSIENT
    # without keyword matching an unknown failure type is permanent
    assert classifier.classify(RuntimeError("rate limit hit")) is ErrorCategory.PERMANENT


def test_error_classifier_keywords_by_default() -> None:
    classifier = DLQSettings().error_classifier()
    assert classifier.classify(RuntimeError("rate limit exceeded")) is not ErrorCategory.PERMANENT
