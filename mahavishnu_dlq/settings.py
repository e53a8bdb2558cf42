"""DLQSettings: the only place environment variables and YAML files are read.

Values come from, highest precedence first: keyword arguments, environment
variables ``MAHAVISHNU_DLQ_*`` (nested groups with ``__``, e.g.
``MAHAVISHNU_DLQ_PROCESSOR__CONCURRENCY=4``), a YAML file
(:meth:`DLQSettings.from_yaml`, or the file named by ``MAHAVISHNU_DLQ_CONFIG``),
then the defaults. :meth:`DLQSettings.load` is the entry point for hosts and the
CLI: every validation problem becomes one line of a
:class:`~mahavishnu_dlq.errors.ConfigurationError` naming the field, the bad
value, what is allowed and where the value came from. The core never reads
settings itself: :meth:`DLQSettings.policy_book` and
:meth:`DLQSettings.error_classifier` build the objects it takes.
"""

from __future__ import annotations

import os
import re
import types
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    YamlConfigSettingsSource,
)
from pydantic_settings.sources import ConfigFileSourceType

from .alerts import AlertRule, AlertRuleSettings, unique_rule_names
from .classifier import ClassifierRule, ErrorClassifier
from .errors import ConfigurationError
from .limits import Limits
from .models import ErrorCategory, RetryPolicy
from .policy import MAX_SECONDS, Jitter, PolicyBook, PolicyOverride, PolicyParams

__all__ = [
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
    "WorkflowPolicySettings",
]

#: Prefix of every environment variable read by :class:`DLQSettings`.
ENV_PREFIX = "MAHAVISHNU_DLQ_"
#: Environment variable naming a YAML file read when no path is given.
CONFIG_ENV_VAR = "MAHAVISHNU_DLQ_CONFIG"

_MASK = "**********"
_DAY = 86400.0
_INDEX_FORBIDDEN = frozenset('\\/*?"<>| ,#:')
_URL_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")
_SECRET_WORDS = ("password", "secret", "token", "api_key", "apikey")

#: The YAML file of the settings being built right now (set by from_yaml/load).
#: A context variable, so concurrent builds in other threads or tasks never see it.
_YAML_FILE: ContextVar[Path | None] = ContextVar("mahavishnu_dlq_yaml_file", default=None)


class _Group(BaseModel):
    """A nested settings group: unknown keys are errors, inputs never shown in errors."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)


class ProcessorSettings(_Group):
    """The background retry processor."""

    concurrency: int = Field(
        default=10, ge=1, le=1000, description="tasks retried at the same time"
    )
    attempt_timeout_seconds: float = Field(
        default=300, ge=0.1, le=_DAY, description="one retry attempt is cancelled after this"
    )
    lease_seconds: float = Field(
        default=600,
        ge=1,
        le=_DAY,
        description="how long a claimed task stays reserved for its worker (crash recovery)",
    )
    batch_size: int = Field(
        default=100, ge=1, le=10000, description="due tasks claimed per processor cycle"
    )
    worker_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description="name of this worker in leases and attempts; host:pid:random when unset",
    )


class PolicyOverrideSettings(_Group):
    """Partial retry policy: unset fields inherit from the less specific level."""

    policy: RetryPolicy | None = Field(default=None, description="retry policy")
    max_retries: int | None = Field(default=None, ge=0, le=10, description="automatic retries")
    deadline_seconds: float | None = Field(
        default=None,
        gt=0,
        le=MAX_SECONDS,
        description="give up this long after the first failure",
    )
    jitter: Jitter | None = Field(default=None, description="randomisation of the delay")

    def to_override(self) -> PolicyOverride:
        """The :class:`~mahavishnu_dlq.policy.PolicyOverride` these settings describe."""
        return PolicyOverride(
            policy=self.policy,
            max_retries=self.max_retries,
            deadline=self.deadline_seconds,
            jitter=self.jitter,
        )


class WorkflowPolicySettings(PolicyOverrideSettings):
    """Policy override of one workflow, optionally refined per error category."""

    categories: dict[ErrorCategory, PolicyOverrideSettings] = Field(
        default_factory=dict,
        description="overrides for this workflow's failures of one error category",
    )


class PolicySettings(_Group):
    """Retry policy parameters and their per-category / per-workflow overrides."""

    linear_step_seconds: float = Field(
        default=300, gt=0, le=_DAY, description="LINEAR: delay grows by this each retry"
    )
    exponential_base_seconds: float = Field(
        default=60, gt=0, le=_DAY, description="EXPONENTIAL: delay of the first retry"
    )
    exponential_cap_seconds: float = Field(
        default=3600, gt=0, le=7 * _DAY, description="the longest computed delay"
    )
    jitter: Jitter = Field(default=Jitter.NONE, description="none, full or equal")
    immediate_min_delay_seconds: float = Field(
        default=1,
        ge=0,
        le=3600,
        description="IMMEDIATE: the first retry is at once, later ones at least this late",
    )
    deadline_seconds: float | None = Field(
        default=None,
        gt=0,
        le=MAX_SECONDS,
        description="give up this long after the first failure (none: no deadline)",
    )
    category_policies: dict[ErrorCategory, RetryPolicy] = Field(
        default_factory=dict,
        description="retry policy per error category, over the built-in mapping",
    )
    by_category: dict[ErrorCategory, PolicyOverrideSettings] = Field(
        default_factory=dict, description="overrides per error category"
    )
    by_workflow: dict[str, WorkflowPolicySettings] = Field(
        default_factory=dict, description="overrides per workflow name (most specific wins)"
    )

    @model_validator(mode="after")
    def _cap_not_below_base(self) -> PolicySettings:
        if self.exponential_cap_seconds < self.exponential_base_seconds:
            raise ValueError(
                f"exponential_cap_seconds ({_number(self.exponential_cap_seconds)}) must be "
                f">= exponential_base_seconds ({_number(self.exponential_base_seconds)})"
            )
        return self

    @field_validator("by_workflow")
    @classmethod
    def _workflow_names(
        cls, value: dict[str, WorkflowPolicySettings]
    ) -> dict[str, WorkflowPolicySettings]:
        for name in value:
            if not name.strip():
                raise ValueError("workflow names in by_workflow must not be empty")
        return value


class ClassifierRuleSettings(_Group):
    """One explicit classification rule: exception type and/or message regex -> category."""

    category: ErrorCategory = Field(description="the category a matching failure gets")
    exception_type: str | None = Field(
        default=None,
        min_length=1,
        description="exception class name, plain (TimeoutError) or dotted (httpx.ReadTimeout)",
    )
    pattern: str | None = Field(
        default=None, min_length=1, description="regular expression searched in the message"
    )

    @field_validator("exception_type")
    @classmethod
    def _dotted_name(cls, value: str | None) -> str | None:
        if value is not None and not all(part.isidentifier() for part in value.split(".")):
            raise ValueError(f"exception_type {value!r} is not a (dotted) class name")
        return value

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(
                    f"pattern {value!r} is not a valid regular expression: {exc}"
                ) from exc
        return value

    @model_validator(mode="after")
    def _something_to_match(self) -> ClassifierRuleSettings:
        if self.exception_type is None and self.pattern is None:
            raise ValueError("a classifier rule needs an exception_type, a pattern or both")
        return self


class ClassifierSettings(_Group):
    """How failures are sorted into error categories."""

    use_keywords: bool = Field(
        default=True, description="fall back to message keywords (timeout, rate limit …)"
    )
    rules: list[ClassifierRuleSettings] = Field(
        default_factory=list, description="explicit rules, checked first, in order"
    )


class OpenSearchSettings(_Group):
    """Connection to OpenSearch (store ``opensearch`` or ``failover``)."""

    hosts: list[str] = Field(
        default_factory=lambda: ["http://127.0.0.1:9200"],
        min_length=1,
        description="node URLs",
    )
    username: str | None = Field(default=None, description="basic-auth user")
    password: SecretStr | None = Field(default=None, description="basic-auth password")
    verify_certs: bool = Field(default=True, description="verify TLS certificates")
    ca_certs: str | None = Field(default=None, description="CA bundle file for TLS")
    timeout_seconds: float = Field(default=10, ge=0.1, le=300, description="per-request timeout")
    index: str = Field(
        default="mahavishnu-dlq-tasks", min_length=1, max_length=255, description="index name"
    )
    refresh: Literal["false", "wait_for", "true"] = Field(
        default="false", description="refresh after writes (tests: wait_for)"
    )
    bulk_max_bytes: int = Field(
        default=8_388_608,
        ge=65_536,
        le=104_857_600,
        description="largest bulk request (below the node's http.max_content_length); "
        "a bigger record is refused",
    )
    backpressure_seconds: float = Field(
        default=30,
        ge=0,
        le=600,
        description="how long writes the node refuses with HTTP 429 are retried, with backoff",
    )

    @field_validator("hosts")
    @classmethod
    def _hosts_not_blank(cls, value: list[str]) -> list[str]:
        if any(not host.strip() for host in value):
            raise ValueError("hosts must not contain empty entries")
        return value

    @field_validator("index")
    @classmethod
    def _index_name(cls, value: str) -> str:
        problem = None
        if value != value.lower():
            problem = "must be lowercase"
        elif value in {".", ".."}:
            problem = "must not be '.' or '..'"
        elif value[0] in "-_+":
            problem = "must not start with '-', '_' or '+'"
        elif bad := sorted(_INDEX_FORBIDDEN.intersection(value)):
            problem = "must not contain " + " ".join(repr(char) for char in bad)
        if problem:
            raise ValueError(f"index name {value!r} {problem}")
        return value


class FailoverSettings(_Group):
    """The failover store: OpenSearch first, a fallback while it is down."""

    fallback: Literal["memory", "none"] = Field(
        default="memory", description="where writes go while OpenSearch is down"
    )
    failure_threshold: int = Field(
        default=3, ge=1, le=100, description="consecutive failures that open the circuit"
    )
    probe_interval_seconds: float = Field(
        default=5, ge=0.1, le=3600, description="how often recovery is probed"
    )
    store_timeout_seconds: float = Field(
        default=5, ge=0.05, le=300, description="an OpenSearch call slower than this fails over"
    )


class _YamlFileSource(YamlConfigSettingsSource):
    """The YAML source of one build: the file must exist and hold a mapping."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path) -> None:
        self._path = path
        super().__init__(settings_cls, yaml_file=path, yaml_file_encoding="utf-8")

    def _read_files(
        self, files: ConfigFileSourceType | None, deep_merge: bool = False
    ) -> dict[str, Any]:
        if not self._path.is_file():
            what = "is not a file" if self._path.exists() else "does not exist"
            raise ConfigurationError(f"configuration file {str(self._path)!r} {what}")
        return self._read_file(self._path)

    def _read_file(self, file_path: Any) -> dict[str, Any]:
        return _read_yaml(Path(str(file_path)))


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"cannot read configuration file {str(path)!r}: {exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigurationError(
            f"malformed YAML in configuration file {str(path)!r}{_yaml_problem(exc)}"
        ) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigurationError(
            f"configuration file {str(path)!r} must hold a mapping of settings at the top "
            f"level, not a {type(data).__name__}"
        )
    for key in data:
        if not isinstance(key, str):
            raise ConfigurationError(
                f"configuration file {str(path)!r}: setting names must be strings, got {key!r}"
            )
    return data


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
    store: Literal["memory", "opensearch", "failover"] = Field(
        default="memory", description="storage backend"
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
    policies: PolicySettings = Field(default_factory=PolicySettings)
    classifier: ClassifierSettings = Field(default_factory=ClassifierSettings)
    opensearch: OpenSearchSettings = Field(default_factory=OpenSearchSettings)
    failover: FailoverSettings = Field(default_factory=FailoverSettings)
    alerts: list[AlertRuleSettings] = Field(
        default_factory=list, description="alert rules evaluated by the retry processor"
    )

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
        """Keyword arguments > environment > YAML file (per build) > defaults."""
        path = _yaml_path()
        if path is None:
            return init_settings, env_settings
        return init_settings, env_settings, _YamlFileSource(settings_cls, path)

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
        token = _YAML_FILE.set(path)
        try:
            return cls(**overrides)
        except ValidationError as exc:
            origins = _Origins.collect(overrides, _yaml_path())
            raise _configuration_error(exc, cls, origins) from exc
        except SettingsError as exc:  # an environment variable that is not valid JSON
            raise _source_error(exc) from exc
        finally:
            _YAML_FILE.reset(token)

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
        """A JSON-compatible dump with secrets masked (for ``config show`` and logs)."""
        data = self.model_dump(mode="json")
        opensearch = data["opensearch"]
        opensearch["hosts"] = [_URL_USERINFO.sub(_MASK + "@", host) for host in opensearch["hosts"]]
        return data


def _at(mark: Any) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}"


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """``, line L, column C: problem (while ... at line L, column C)``."""
    problem_mark = getattr(exc, "problem_mark", None)
    context_mark = getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None)
    context = getattr(exc, "context", None)
    if problem_mark is None and context_mark is None:
        return f": {exc}"
    text = f", {_at(problem_mark or context_mark)}: {problem or context or exc}"
    if context and problem and context_mark is not None:
        text += f" ({context} at {_at(context_mark)})"
    return text


def _source_error(exc: SettingsError) -> ConfigurationError:
    found = re.search(r'field "([^"]+)"', str(exc))
    name = found.group(1) if found else None
    detail = f": {exc.__cause__}" if exc.__cause__ is not None else ""
    if name is None:
        return ConfigurationError(f"invalid mahavishnu-dlq configuration: {exc}{detail}")
    prefix = (ENV_PREFIX + name).upper()
    variables = sorted(
        var for var in os.environ if var.upper() == prefix or var.upper().startswith(prefix + "__")
    )
    where = " or ".join(variables) or f"{prefix}*"
    return ConfigurationError(
        f"invalid mahavishnu-dlq configuration (1 problem):\n  - {name}: could not read the "
        f"value of environment variable {where}; groups and lists take JSON{detail}",
        field=name,
    )


def _yaml_path() -> Path | None:
    path = _YAML_FILE.get()
    if path is not None:
        return path
    named = os.environ.get(CONFIG_ENV_VAR)
    return Path(named) if named else None


# --- turning a ValidationError into a ConfigurationError ---------------------------

_Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class _Origins:
    """Where the inputs of one build came from, to say where a bad value came from."""

    overrides: Mapping[str, Any]
    environ: Mapping[str, str]  # upper-cased names of the MAHAVISHNU_DLQ_* variables
    yaml_path: Path | None = None
    yaml_root: yaml.Node | None = field(default=None, repr=False)

    @classmethod
    def collect(cls, overrides: Mapping[str, Any], yaml_path: Path | None) -> _Origins:
        environ = {name.upper(): name for name in os.environ if name.upper().startswith(ENV_PREFIX)}
        root = None
        if yaml_path is not None:
            try:
                root = yaml.compose(yaml_path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
            except (OSError, UnicodeDecodeError, yaml.YAMLError):
                root = None
        return cls(overrides, environ, yaml_path, root)

    def describe(self, loc: _Loc, *, merged: bool) -> str | None:
        """Where the value at ``loc`` came from; every contributor when ``merged``."""
        found: list[str] = []
        if _tree_has(self.overrides, loc):
            found.append(f"keyword argument {loc[0]!s}")
        found.extend(self._env_names(loc, merged=merged))
        line = self._yaml_line(loc)
        if line is not None:
            found.append(f"{self.yaml_path}, line {line}")
        if not found:
            return None
        return ", ".join(found) if merged else found[0]

    def _env_names(self, loc: _Loc, *, merged: bool) -> list[str]:
        parts = [str(part).upper() for part in loc]
        for depth in range(len(parts), 0, -1):
            name = ENV_PREFIX + "__".join(parts[:depth])
            if name in self.environ:
                return [f"environment variable {self.environ[name]}"]
        if merged and parts:
            below = ENV_PREFIX + "__".join(parts) + "__"
            return [
                f"environment variable {real}"
                for upper, real in sorted(self.environ.items())
                if upper.startswith(below)
            ]
        return []

    def _yaml_line(self, loc: _Loc) -> int | None:
        node = self.yaml_root
        line = None
        for part in loc:
            if isinstance(node, yaml.MappingNode):
                pair = _yaml_entry(node, str(part))
                if pair is None:
                    return None
                line = pair[0].start_mark.line + 1
                node = pair[1]
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
                if not 0 <= part < len(node.value):
                    return None
                node = node.value[part]
                line = node.start_mark.line + 1
            else:
                return None
        return line


def _yaml_entry(node: yaml.MappingNode, key: str) -> tuple[yaml.Node, yaml.Node] | None:
    pairs: list[tuple[yaml.Node, yaml.Node]] = node.value
    for wanted in (key, key.casefold()):
        for key_node, value_node in pairs:
            if isinstance(key_node, yaml.ScalarNode) and (
                key_node.value == wanted or key_node.value.casefold() == wanted
            ):
                return key_node, value_node
    return None


def _key_text(key: Any) -> str:
    return str(key.value) if isinstance(key, Enum) else str(key)


def _tree_has(tree: Any, loc: _Loc) -> bool:
    node = tree
    for part in loc:
        if isinstance(node, Mapping):
            matches = [value for key, value in node.items() if _key_text(key) == str(part)]
            if not matches:
                return False
            node = matches[0]
        elif isinstance(node, BaseModel):
            if not isinstance(part, str) or part not in type(node).model_fields:
                return False
            node = getattr(node, part)
        elif isinstance(node, Sequence) and not isinstance(node, str) and isinstance(part, int):
            if not 0 <= part < len(node):
                return False
            node = node[part]
        else:
            return False
    return True


def _unwrap(annotation: Any) -> Any:
    """``X | None`` -> ``X``."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [arg for arg in get_args(annotation) if arg is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _walk(model: type[BaseModel], loc: _Loc) -> Iterator[tuple[Any, FieldInfo | None]]:
    """For each part of ``loc``: the type found there and its field (None for items)."""
    current: Any = model
    for part in loc:
        current = _unwrap(current)
        info: FieldInfo | None = None
        if isinstance(current, type) and issubclass(current, BaseModel):
            info = current.model_fields.get(str(part))
            if info is None:
                return
            current = info.annotation
        elif get_origin(current) is dict:
            current = get_args(current)[1]
        elif get_origin(current) is list:
            current = get_args(current)[0]
        else:
            return
        yield current, info


def _field_at(model: type[BaseModel], loc: _Loc) -> FieldInfo | None:
    steps = list(_walk(model, loc))
    if len(steps) != len(loc) or not steps:
        return None
    return steps[-1][1]


def _model_at(model: type[BaseModel], loc: _Loc) -> type[BaseModel] | None:
    if not loc:
        return model
    steps = list(_walk(model, loc))
    if len(steps) != len(loc):
        return None
    found = _unwrap(steps[-1][0])
    return found if isinstance(found, type) and issubclass(found, BaseModel) else None


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


_LIMIT_WORDS = {"gt": "greater than", "ge": "at least", "lt": "less than", "le": "at most"}
_LIMIT_ERRORS = frozenset({"greater_than", "greater_than_equal", "less_than", "less_than_equal"})
_KINDS = {
    "int_parsing": "a whole number",
    "int_type": "a whole number",
    "int_from_float": "a whole number",
    "float_parsing": "a number",
    "float_type": "a number",
    "finite_number": "a finite number",
    "bool_parsing": "true or false",
    "bool_type": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping of settings",
    "model_attributes_type": "a mapping of settings",
}
_FIXED = {"missing": "is required", "string_too_short": "must not be empty"}
_FIXED["too_short"] = _FIXED["string_too_short"]


def _limits(limits: Mapping[str, Any]) -> str:
    """``between 1 and 10`` or ``greater than 0 and at most 86400`` ('' without limits)."""
    if "ge" in limits and "le" in limits:
        return f"between {_number(limits['ge'])} and {_number(limits['le'])}"
    words = [
        f"{_LIMIT_WORDS[name]} {_number(limits[name])}" for name in _LIMIT_WORDS if name in limits
    ]
    return " and ".join(words)


def _field_limits(info: FieldInfo | None) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for item in info.metadata if info is not None else ():
        for name in _LIMIT_WORDS:
            if getattr(item, name, None) is not None:
                found[name] = getattr(item, name)
    return found


def _allowed(error: Any, info: FieldInfo | None) -> str:
    """What the field accepts, from the error type and the field's constraints."""
    kind: str = error["type"]
    ctx: dict[str, Any] = error.get("ctx") or {}
    bounds = _limits(_field_limits(info) or ctx)
    if kind in _LIMIT_ERRORS:
        text = f"must be {bounds}"
    elif kind in _KINDS:
        numeric = bounds and kind.startswith(("int", "float"))
        text = f"must be {_KINDS[kind]}" + (f" {bounds}" if numeric else "")
    elif kind in {"enum", "literal_error"}:
        expected = str(ctx.get("expected", ""))
        text = "must be one of: " + (", ".join(re.findall(r"'([^']*)'", expected)) or expected)
    elif kind in {"value_error", "assertion_error"}:
        text = str(ctx.get("error", error["msg"]))
    else:
        message = str(error["msg"])
        text = _FIXED.get(kind, message[:1].lower() + message[1:])
    return text


def _is_secret(loc: _Loc, info: FieldInfo | None) -> bool:
    if info is not None and _unwrap(info.annotation) is SecretStr:
        return True
    return bool(loc) and any(word in str(loc[-1]).lower() for word in _SECRET_WORDS)


def _show(value: Any) -> str:
    text = repr(value.value if isinstance(value, Enum) else value)
    text = _URL_USERINFO.sub(_MASK + "@", text)
    return text if len(text) <= 120 else text[:117] + "..."


def _dotted(loc: _Loc) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(settings)"


def _problem(error: Any, model: type[BaseModel], origins: _Origins) -> tuple[str, str]:
    raw: _Loc = tuple(error["loc"])
    is_key = bool(raw) and raw[-1] == "[key]"
    loc: _Loc = raw[:-1] if is_key else raw
    kind: str = error["type"]
    value = error.get("input")
    info = None if is_key else _field_at(model, loc)
    path = _dotted(loc)

    if kind == "extra_forbidden":
        parent = _model_at(model, loc[:-1])
        allowed = ", ".join(parent.model_fields) if parent is not None else ""
        text = f"{path}: unknown setting" + (f"; allowed here: {allowed}" if allowed else "")
    else:
        allowed = _allowed(error, info)
        if is_key:
            allowed = f"key {value!r} {allowed}"
        text = f"{path}: {allowed}"
        if kind != "missing" and not is_key and not isinstance(value, Mapping):
            shown = _MASK if _is_secret(loc, info) else _show(value)
            if not (kind == "value_error" and shown in allowed):  # already names the value
                text += f", got {shown}"
    merged = isinstance(value, Mapping) or kind == "missing"
    origin = origins.describe(loc, merged=merged)
    if origin:
        text += f" (from {origin})"
    return path, text


def _configuration_error(
    exc: ValidationError, model: type[BaseModel], origins: _Origins
) -> ConfigurationError:
    problems = [_problem(error, model, origins) for error in exc.errors(include_url=False)]
    count = len(problems)
    header = f"invalid mahavishnu-dlq configuration ({count} problem{'s' if count != 1 else ''})"
    lines = "\n".join(f"  - {text}" for _, text in problems)
    return ConfigurationError(f"{header}:\n{lines}", field=problems[0][0] if problems else None)
