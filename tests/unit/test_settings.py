"""DLQSettings: defaults and the example file, sources and their precedence, and the
bridges to the core (validation messages: ``test_settings_validation``)."""

from __future__ import annotations

import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

import mahavishnu_dlq.settings as package
from mahavishnu_dlq.classifier import ErrorClassifier
from mahavishnu_dlq.errors import ConfigurationError
from mahavishnu_dlq.models import ErrorCategory, RetryPolicy
from mahavishnu_dlq.policy import Jitter, PolicyBook, PolicyParams
from mahavishnu_dlq.settings import (
    CONFIG_ENV_VAR,
    DLQSettings,
    ProcessorSettings,
    SQLiteSettings,
    state_dir,
)
from tests.unit.settings_support import (  # clean_environment: an autouse fixture
    EXAMPLE,
    clean_environment,  # noqa: F401
    config_error,
    write,
)

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
    for group in (
        "processor",
        "jobs",
        "retention",
        "policies",
        "classifier",
        "sqlite",
        "opensearch",
        "failover",
        "web",
    ):
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
    blocks = dict(zip(("policies", "classifier", "web"), _commented_examples(), strict=True))
    text = "".join(f"{group}:\n{textwrap.indent(block, '  ')}\n" for group, block in blocks.items())
    settings = DLQSettings.from_yaml(write(tmp_path, text))
    assert settings.policies.by_workflow["nightly-report"].categories
    assert len(settings.classifier.rules) == 3
    assert [(t.name, t.role) for t in settings.web.tokens] == [
        ("alice", "operator"),
        ("dashboards", "viewer"),
    ]


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
        "JobSettings",
        "OpenSearchSettings",
        "PolicyOverrideSettings",
        "PolicySettings",
        "ProcessorSettings",
        "RetentionSettings",
        "SQLiteSettings",
        "WebSettings",
        "WebToken",
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
