"""Where settings come from, and the bounds their raw values keep before validation.

Three sources feed :class:`~mahavishnu_dlq.settings.DLQSettings`: keyword
arguments, the ``MAHAVISHNU_DLQ_*`` environment variables (a group or a list given
as one variable is JSON) and one YAML file, read through
:mod:`~mahavishnu_dlq.settings.yamlfile`. The file of the build in progress is a
context variable, so concurrent builds in other threads or tasks never see it.

Before pydantic sees them, :func:`screen_environment` and :func:`screen_overrides`
refuse what would otherwise end in a ``RecursionError`` or a long walk: a variable
longer than :data:`MAX_ENV_BYTES`, JSON nested deeper than
:data:`~mahavishnu_dlq.settings.yamlfile.MAX_DEPTH` levels, keyword arguments
nested as deep (or containing themselves). Each refusal names the variable or the
argument; so does :func:`source_error`, for a variable that is not JSON where JSON
is needed (for a bare URL in ``MAHAVISHNU_DLQ_OPENSEARCH__HOSTS``, it gives the
exact form to write: :func:`hosts_form`).
"""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from pydantic_settings import BaseSettings, SettingsError, YamlConfigSettingsSource
from pydantic_settings.sources import ConfigFileSourceType

from mahavishnu_dlq.credentials import mask_userinfo
from mahavishnu_dlq.errors import ConfigurationError

from .yamlfile import MAX_DEPTH, read_settings_file

__all__ = [
    "CONFIG_ENV_VAR",
    "ENV_PREFIX",
    "HOSTS_ENV_VAR",
    "MAX_ENV_BYTES",
    "YAML_FILE",
    "YamlFileSource",
    "hosts_form",
    "printable",
    "screen_environment",
    "screen_overrides",
    "source_error",
    "yaml_path",
]

#: Prefix of every environment variable read by ``DLQSettings``.
ENV_PREFIX = "MAHAVISHNU_DLQ_"
#: Environment variable naming a YAML file read when no path is given.
CONFIG_ENV_VAR = "MAHAVISHNU_DLQ_CONFIG"
#: The OpenSearch hosts: a JSON list, which people often write as a bare URL.
HOSTS_ENV_VAR = "MAHAVISHNU_DLQ_OPENSEARCH__HOSTS"
#: Longest value of a settings environment variable, in UTF-8 bytes (64 KiB).
MAX_ENV_BYTES = 65_536

#: The YAML file of the settings being built right now (set by from_yaml/load).
YAML_FILE: ContextVar[Path | None] = ContextVar("mahavishnu_dlq_yaml_file", default=None)

_CONTAINERS = (Mapping, list, tuple, set, frozenset)


def yaml_path() -> Path | None:
    """The YAML file of this build: the one given, else the one ``$MAHAVISHNU_DLQ_CONFIG``
    names, else None."""
    path = YAML_FILE.get()
    if path is not None:
        return path
    named = os.environ.get(CONFIG_ENV_VAR)
    return Path(named) if named else None


class YamlFileSource(YamlConfigSettingsSource):
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
        return read_settings_file(Path(str(file_path)))


def screen_environment(fields: Iterable[str], environ: Mapping[str, str] | None = None) -> None:
    """Refuse a settings variable (``MAHAVISHNU_DLQ_<FIELD>[__...]``) that is too long
    or, as JSON, nested too deep; pydantic-settings would hit the recursion limit."""
    environ = os.environ if environ is None else environ
    prefixes = tuple(f"{ENV_PREFIX}{name}".upper() for name in fields)
    for name, value in environ.items():
        upper = name.upper()
        if not any(upper == prefix or upper.startswith(prefix + "__") for prefix in prefixes):
            continue
        size = len(value.encode("utf-8", "surrogateescape"))
        if size > MAX_ENV_BYTES:
            raise _refused(name, f"is {size} bytes long; a setting takes at most {MAX_ENV_BYTES}")
        if value.lstrip()[:1] in ("[", "{") and _json_nests_deeper(value, MAX_DEPTH):
            raise _refused(name, f"holds JSON nested deeper than {MAX_DEPTH} levels")


def screen_overrides(overrides: Mapping[str, Any]) -> None:
    """Refuse a keyword argument nested deeper than the bound (or containing itself)."""
    for name, value in overrides.items():
        if _nests_deeper(value, MAX_DEPTH):
            raise ConfigurationError(
                "invalid mahavishnu-dlq configuration (1 problem):\n"
                f"  - {printable(name)}: keyword argument {printable(name)} is nested deeper "
                f"than {MAX_DEPTH} levels (or contains itself)",
                field=printable(name),
            )


def source_error(exc: SettingsError) -> ConfigurationError:
    """The variable pydantic-settings could not read (not JSON where JSON is needed)."""
    found = re.search(r'field "([^"]+)"', str(exc))
    name = found.group(1) if found else None
    cause = str(exc.__cause__).split("; use sys.set_int_max_str_digits", 1)[0]
    detail = f": {' '.join(cause.split())}" if exc.__cause__ is not None else ""
    if name is None:
        return ConfigurationError(printable(f"invalid mahavishnu-dlq configuration: {exc}{detail}"))
    prefix = (ENV_PREFIX + name).upper()
    variables = sorted(
        var for var in os.environ if var.upper() == prefix or var.upper().startswith(prefix + "__")
    )
    where = printable(" or ".join(variables) or f"{prefix}*")
    hosts = next((var for var in variables if var.upper() == HOSTS_ENV_VAR), None)
    if hosts is not None and os.environ[hosts].lstrip()[:1] not in ("[", "{"):
        return ConfigurationError(
            "invalid mahavishnu-dlq configuration (1 problem):\n  - opensearch.hosts: "
            f"environment variable {printable(hosts)} is a list, written as JSON: "
            f"{printable(hosts)}={hosts_form(os.environ[hosts])}",
            field="opensearch.hosts",
        )
    return ConfigurationError(
        f"invalid mahavishnu-dlq configuration (1 problem):\n  - {name}: could not read the "
        f"value of environment variable {where}; groups and lists take JSON{printable(detail)}",
        field=name,
    )


def hosts_form(value: str) -> str:
    """What to write for ``$MAHAVISHNU_DLQ_OPENSEARCH__HOSTS`` given a bare URL or a
    comma-separated list of them: the JSON list, quoted for a POSIX shell, with any
    password masked (the message quoting it must not show one)."""
    entries = [mask_userinfo(part.strip()) for part in value.split(",") if part.strip()]
    return shlex.quote(json.dumps(entries or ["http://localhost:9200"], ensure_ascii=False))


def _refused(variable: str, problem: str) -> ConfigurationError:
    setting = variable[len(ENV_PREFIX) :].lower().replace("__", ".")
    return ConfigurationError(
        "invalid mahavishnu-dlq configuration (1 problem):\n"
        f"  - {printable(setting)}: environment variable {printable(variable)} {problem}",
        field=printable(setting),
    )


def _json_nests_deeper(text: str, limit: int) -> bool:
    """True when the brackets of ``text`` (outside JSON strings) nest deeper than ``limit``."""
    if text.count("[") + text.count("{") <= limit:
        return False
    depth = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


def _nests_deeper(value: Any, limit: int) -> bool:
    """True when containers in ``value`` nest deeper than ``limit`` (a cycle always does).

    Iterative, and a container met again no deeper than before is not walked again,
    so shared structure is never expanded.
    """
    deepest: dict[int, int] = {}
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if not isinstance(item, _CONTAINERS):
            continue
        if depth > limit:
            return True
        if deepest.get(id(item), 0) >= depth:
            continue
        deepest[id(item)] = depth
        children = (
            [part for pair in item.items() for part in pair]
            if isinstance(item, Mapping)
            else list(item)
        )
        stack.extend((child, depth + 1) for child in children)
    return False


def printable(text: str) -> str:
    """``text`` with control and other unprintable characters escaped (``\\x1b``), so a
    name or a value never reaches a terminal raw."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)
