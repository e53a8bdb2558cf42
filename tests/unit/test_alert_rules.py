"""Alert rules as values and as configuration: defaults, validation that names the
field, value and range, the documented sample, and settings' unique names."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from mahavishnu_dlq.alerts import (
    AlertKind,
    AlertRule,
    AlertRuleSettings,
    alert_rules_from_config,
    unique_rule_names,
)
from mahavishnu_dlq.errors import ConfigurationError

#: The sample configuration shown in the docs; test_docs_sample_is_valid keeps it valid.
DOCS_SAMPLE = """\
alerts:
  # More than 1000 open tasks (pending, retrying, exhausted).
  - name: dlq-backlog
    kind: depth
    threshold: 1000
    cooldown_seconds: 1800      # repeat at most every 30 min while still true
  # A task has waited more than an hour for its retry.
  - name: dlq-stale
    kind: oldest_pending
    threshold: 3600             # seconds
  # More than 10 tasks ran out of retries in the last 5 minutes.
  - name: dlq-exhaustion-burst
    kind: exhausted_rate
    threshold: 10
    window_seconds: 300
    cooldown_seconds: 900
"""


# --- rules and configuration ------------------------------------------------------------


def test_rule_defaults() -> None:
    rule = AlertRule("r", "exhausted_rate", 3)
    assert (rule.window_seconds, rule.cooldown_seconds) == (300.0, 600.0)
    assert isinstance(rule.threshold, float)


@pytest.mark.parametrize(
    ("kwargs", "field", "text"),
    [
        ({"threshold": -1}, "threshold", "threshold must be at least 0, got -1"),
        ({"threshold": float("nan")}, "threshold", "threshold must be at least 0, got nan"),
        (
            {"kind": "size"},
            "kind",
            "must be one of: depth, oldest_pending, exhausted_rate, breaker_open",
        ),
        ({"name": " "}, "name", "non-empty string"),
        ({"window_seconds": 0}, "window_seconds", "greater than 0 and at most 86400, got 0"),
        ({"cooldown_seconds": -5}, "cooldown_seconds", "between 0 and 604800, got -5"),
    ],
)
def test_rule_validation_names_field_value_and_range(
    kwargs: dict[str, Any], field: str, text: str
) -> None:
    fields: dict[str, Any] = {"name": "r", "kind": "depth", "threshold": 1, **kwargs}
    with pytest.raises(ConfigurationError) as info:
        AlertRule(**fields)
    assert info.value.field == field
    assert text in str(info.value)


def test_config_builds_rules() -> None:
    kind: AlertKind = "exhausted_rate"
    rules = alert_rules_from_config(
        [{"name": "burst", "kind": kind, "threshold": 10, "window_seconds": 60}]
    )
    assert rules == [AlertRule("burst", kind, 10, window_seconds=60)]
    assert alert_rules_from_config(None) == []
    assert alert_rules_from_config([]) == []


def test_docs_sample_is_valid() -> None:
    rules = alert_rules_from_config(yaml.safe_load(DOCS_SAMPLE)["alerts"])
    assert [(r.name, r.kind) for r in rules] == [
        ("dlq-backlog", "depth"),
        ("dlq-stale", "oldest_pending"),
        ("dlq-exhaustion-burst", "exhausted_rate"),
    ]
    assert rules[1].cooldown_seconds == 600


OK_RULE = {"name": "ok", "kind": "depth", "threshold": 1}


@pytest.mark.parametrize(
    ("bad", "line"),
    [
        ({"threshold": -5}, "alerts[1].threshold: must be at least 0, got -5"),
        ({"threshold": "lots"}, "alerts[1].threshold: must be a number at least 0, got 'lots'"),
        ({"threshold": ".inf"}, "alerts[1].threshold: must be a finite number at least 0"),
        (
            {"kind": "size"},
            (
                "alerts[1].kind: must be one of: depth, oldest_pending, exhausted_rate, "
                "breaker_open, got 'size'"
            ),
        ),
        (
            {"kind": "exhausted_rate", "window_seconds": 0},
            "alerts[1].window_seconds: must be greater than 0 and at most 86400, got 0",
        ),
        (
            {"kind": "exhausted_rate", "window_seconds": 90000},
            "alerts[1].window_seconds: must be greater than 0 and at most 86400, got 90000",
        ),
        (
            {"window_seconds": 60},
            (
                "alerts[1].window_seconds: only exhausted_rate rules have a window, "
                "this rule is depth, got 60"
            ),
        ),
        (
            {"cooldown_seconds": -1},
            "alerts[1].cooldown_seconds: must be between 0 and 604800, got -1",
        ),
        ({"name": ""}, "alerts[1].name: must not be empty, got ''"),
        ({"name": "ok"}, "alerts[1].name: 'ok' is used by alerts[0] too"),
        (
            {"cooldown": 60},
            (
                "alerts[1].cooldown: unknown setting; allowed here: name, kind, threshold, "
                "window_seconds, cooldown_seconds"
            ),
        ),
    ],
)
def test_config_errors_name_index_field_value_and_range(bad: dict[str, Any], line: str) -> None:
    second: dict[str, Any] = {"name": "second", "kind": "depth", "threshold": 5, **bad}
    if second.get("threshold") == ".inf":
        second["threshold"] = float("inf")
    with pytest.raises(ConfigurationError) as info:
        alert_rules_from_config([OK_RULE, second])
    message = str(info.value)
    assert message.startswith("invalid mahavishnu-dlq configuration (1 problem):\n")
    assert f"  - {line}" in message
    assert info.value.field == line.split(":", 1)[0]


def test_config_reports_every_problem_and_shape_errors() -> None:
    with pytest.raises(ConfigurationError) as info:
        alert_rules_from_config([{"kind": "depth", "threshold": -1}, "depth > 5"])
    message = str(info.value)
    assert "(3 problems)" in message
    assert "alerts[0].name: is required" in message
    assert "alerts[0].threshold: must be at least 0, got -1" in message
    assert "alerts[1]: must be a mapping of settings, got 'depth > 5'" in message
    with pytest.raises(ConfigurationError, match="alerts: must be a list of alert rules"):
        alert_rules_from_config({"name": "x"})


def test_unique_rule_names_as_a_settings_validator() -> None:
    rules = [AlertRuleSettings(name="a", kind="depth", threshold=1)] * 2
    with pytest.raises(ValueError, match=r"'a' is used twice: \[0\] and \[1\]"):
        unique_rule_names(rules)
    assert unique_rule_names(rules[:1]) == rules[:1]
