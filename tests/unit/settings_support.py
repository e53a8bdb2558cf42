"""What the settings tests share: a clean environment, YAML files, the refused load, a
made-up password and the one-line refusal of the hostile-settings tests."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from mahavishnu_dlq.errors import ConfigurationError
from mahavishnu_dlq.settings import (
    DLQSettings,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "settings" / "mahavishnu_dlq.yaml"
HIDDEN = "s3cr3t-Value-4711"  # stands for a real password: must never be shown
MASK = "**********"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
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


PASSWORD = "p@ss:w/rd 50%"  # noqa: S105 - made up; '@', ':', '/', ' ', '%': never shown
ENCODED = quote(PASSWORD, safe="")  # p%40ss%3Aw%2Frd%2050%25


def refused(path: Path | None = None, **overrides: Any) -> str:
    """The message of the ConfigurationError ``load`` raises: it must be one line."""
    with pytest.raises(ConfigurationError) as info:
        DLQSettings.load(path, **overrides)
    return str(info.value)


def one_line(message: str) -> str:
    assert "\n" not in message, message
    return message


def nested_list(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


def nested_dict(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value
