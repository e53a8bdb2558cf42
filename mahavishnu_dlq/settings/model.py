"""DLQSettings: the model of all settings, how one build reads them, and the bridges.

:meth:`DLQSettings.load` and :meth:`DLQSettings.from_yaml` build the settings from
keyword arguments, the environment and a YAML file
(:mod:`~mahavishnu_dlq.settings.sources`), screen what is too big or too deep
first, and turn every failure into one
:class:`~mahavishnu_dlq.errors.ConfigurationError`
(:mod:`~mahavishnu_dlq.settings.problems`) -- never a ``RecursionError`` or a raw
``ValueError``. :meth:`DLQSettings.policy_book`, :meth:`DLQSettings.error_classifier`,
:meth:`DLQSettings.limits` and :meth:`DLQSettings.alert_rules` build the objects
the core takes; :meth:`DLQSettings.redacted` is what may be shown.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from mahavishnu_dlq.alerts import AlertRule, AlertRuleSettings, unique_rule_names
from mahavishnu_dlq.classifier import ClassifierRule, ErrorClassifier
from mahavishnu_dlq.credentials import mask_userinfo
from mahavishnu_dlq.errors import ConfigurationError
from mahavishnu_dlq.limits import Limits
from mahavishnu_dlq.models import ErrorCategory, RetryPolicy
from mahavishnu_dlq.policy import PolicyBook, PolicyParams

from .groups import (
    ClassifierSettings,
    FailoverSettings,
    JobSettings,
    PolicySettings,
    ProcessorSettings,
    SQLiteSettings,
)
from .opensearch import OpenSearchSettings
from .problems import configuration_error
from .retention import RetentionSettings
from .sources import (
    ENV_PREFIX,
    YAML_FILE,
    YamlFileSource,
    printable,
    screen_environment,
    screen_overrides,
    source_error,
    yaml_path,
)
from .web import WebSettings

__all__ = ["DLQSettings"]


class DLQSettings(BaseSettings):
    """All the settings of mahavishnu-dlq. See ``settings/mahavishnu_dlq.yaml``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        case_sensitive=False,
        extra="forbid",
        hide_input_in_errors=True,
        validate_default=True,
    )

    enabled: bool = Field(default=True, description="capture failures at all")
    max_size: int = Field(
        default=10000, ge=100, le=100000, description="most open tasks the queue holds"
    )
    on_full: Literal["reject", "archive_oldest"] = Field(
        default="reject",
        description="when max_size open tasks are stored: refuse a new failure (reject), "
        "or archive the oldest exhausted tasks to make room (archive_oldest)",
    )
    default_retry_policy: RetryPolicy = Field(
        default=RetryPolicy.EXPONENTIAL, description="policy when nothing more specific applies"
    )
    default_max_retries: int = Field(
        default=3, ge=0, le=10, description="automatic retries before a task is exhausted"
    )
    retry_processor_enabled: bool = Field(
        default=True, description="run the background retry processor"
    )
    retry_interval_seconds: float = Field(
        default=60, ge=10, le=3600, description="how often the processor polls for due tasks"
    )
    store: Literal["sqlite", "memory", "opensearch", "failover"] = Field(
        default="sqlite",
        description="storage backend: sqlite (a durable file on this host), memory (this "
        "process only), opensearch, or failover (OpenSearch with a fallback)",
    )
    max_payload_bytes: int = Field(
        default=1_048_576,
        ge=1024,
        le=67_108_864,
        description="largest UTF-8 JSON size of a task's input, metadata and repos together",
    )
    max_payload_depth: int = Field(
        default=100, ge=1, le=200, description="deepest nesting of a task's input or metadata"
    )
    max_error_bytes: int = Field(
        default=65_536,
        ge=1024,
        le=67_108_864,
        description="error, last_error and traceback are each cut to this many bytes",
    )
    attempts_kept: int = Field(
        default=20, ge=1, le=1000, description="attempt history entries kept per task"
    )

    processor: ProcessorSettings = Field(default_factory=ProcessorSettings)
    jobs: JobSettings = Field(default_factory=JobSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    policies: PolicySettings = Field(default_factory=PolicySettings)
    classifier: ClassifierSettings = Field(default_factory=ClassifierSettings)
    sqlite: SQLiteSettings = Field(default_factory=SQLiteSettings)
    opensearch: OpenSearchSettings = Field(default_factory=OpenSearchSettings)
    failover: FailoverSettings = Field(default_factory=FailoverSettings)
    alerts: list[AlertRuleSettings] = Field(
        default_factory=list, description="alert rules evaluated by the retry processor"
    )
    web: WebSettings = Field(default_factory=WebSettings)

    @field_validator("alerts")
    @classmethod
    def _unique_alert_names(cls, value: list[AlertRuleSettings]) -> list[AlertRuleSettings]:
        return unique_rule_names(value)

    def alert_rules(self) -> list[AlertRule]:
        """The alert rules (see :mod:`mahavishnu_dlq.alerts`)."""
        return [rule.to_rule() for rule in self.alerts]

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Keyword arguments > environment > YAML file (per build) > defaults.

        The environment is screened first (every build, the plain constructor's too):
        a variable too long or nested too deep is a ConfigurationError naming it.
        """
        screen_environment(settings_cls.model_fields)
        path = yaml_path()
        if path is None:
            return init_settings, env_settings
        return init_settings, env_settings, YamlFileSource(settings_cls, path)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str], **overrides: Any) -> DLQSettings:
        """Settings from the YAML file at ``path``; environment and ``overrides`` win over it.

        Raises :class:`ConfigurationError` for a missing or malformed file and for
        every invalid value.
        """
        return cls._build(Path(path), overrides)

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None, **overrides: Any) -> DLQSettings:
        """Validated settings for a host or the CLI; problems raise :class:`ConfigurationError`.

        Reads the YAML file at ``path`` (or the one named by ``MAHAVISHNU_DLQ_CONFIG``
        when ``path`` is None), the environment and ``overrides``.
        """
        return cls._build(None if path is None else Path(path), overrides)

    @classmethod
    def _build(cls, path: Path | None, overrides: dict[str, Any]) -> DLQSettings:
        token = YAML_FILE.set(path)
        try:
            screen_overrides(overrides)
            return cls(**overrides)
        except ConfigurationError:
            raise
        except ValidationError as exc:
            raise configuration_error(exc, cls, overrides, yaml_path()) from exc
        except SettingsError as exc:  # an environment variable that is not valid JSON
            raise source_error(exc) from exc
        except (RecursionError, ValueError, OverflowError) as exc:  # past every bound
            raise _unreadable(exc, overrides) from exc
        finally:
            YAML_FILE.reset(token)

    def policy_book(self) -> PolicyBook:
        """The :class:`~mahavishnu_dlq.policy.PolicyBook` these settings describe.

        ``default_retry_policy`` is the policy of the retryable categories
        (transient and network); resource failures stay linear and permission,
        validation and permanent ones never, unless ``policies.category_policies``
        says otherwise.
        """
        policies = self.policies
        default = PolicyParams(
            policy=self.default_retry_policy,
            max_retries=self.default_max_retries,
            linear_step=policies.linear_step_seconds,
            exponential_base=policies.exponential_base_seconds,
            exponential_cap=policies.exponential_cap_seconds,
            jitter=policies.jitter,
            deadline=policies.deadline_seconds,
            immediate_min_delay=policies.immediate_min_delay_seconds,
        )
        return PolicyBook(
            default,
            category_policies={
                ErrorCategory.TRANSIENT: self.default_retry_policy,
                ErrorCategory.NETWORK: self.default_retry_policy,
                **policies.category_policies,
            },
            by_category={
                category: override.to_override()
                for category, override in policies.by_category.items()
            },
            by_workflow={
                workflow: override.to_override()
                for workflow, override in policies.by_workflow.items()
            },
            by_workflow_category={
                (workflow, category): override.to_override()
                for workflow, workflow_settings in policies.by_workflow.items()
                for category, override in workflow_settings.categories.items()
            },
        )

    def limits(self) -> Limits:
        """The :class:`~mahavishnu_dlq.limits.Limits` these settings describe."""
        return Limits(
            max_payload_bytes=self.max_payload_bytes,
            max_payload_depth=self.max_payload_depth,
            max_error_bytes=self.max_error_bytes,
        )

    def error_classifier(self) -> ErrorClassifier:
        """The :class:`~mahavishnu_dlq.classifier.ErrorClassifier` these settings describe."""
        rules = [
            ClassifierRule(
                category=rule.category, exception_type=rule.exception_type, pattern=rule.pattern
            )
            for rule in self.classifier.rules
        ]
        return ErrorClassifier(rules, use_keywords=self.classifier.use_keywords)

    def redacted(self) -> dict[str, Any]:
        """A JSON-compatible dump with secrets masked (for ``config show`` and logs).

        The password and the web tokens are ``**********``; the hosts hold no
        credentials once validated (they moved to username and password), and any
        left there (an instance built with ``model_construct``) are masked too.
        """
        data = self.model_dump(mode="json")
        opensearch = data["opensearch"]
        opensearch["hosts"] = [mask_userinfo(host) for host in opensearch["hosts"]]
        return data


def _unreadable(exc: BaseException, overrides: Mapping[str, Any]) -> ConfigurationError:
    """A failure past every bound: the inputs that may hold it, and what happened."""
    inputs = [f"keyword argument {name}" for name in overrides]
    inputs += [
        f"environment variable {name}"
        for name in sorted(os.environ)
        if name.upper().startswith(ENV_PREFIX)
    ]
    if (path := yaml_path()) is not None:
        inputs.append(str(path))
    detail = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
    return ConfigurationError(
        printable(
            "invalid mahavishnu-dlq configuration: the settings could not be read "
            f"({detail}); check {', '.join(inputs) or 'the defaults'}"
        )
    )
