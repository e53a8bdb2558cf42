"""Where each effective setting came from, for ``config show --origin``.

The settings are built from three sources, highest first: the ``MAHAVISHNU_DLQ_*``
environment, the YAML file, the defaults. For each leaf of the settings (a
dotted key such as ``processor.concurrency``; a list is one leaf) this module
names the source that set it: the environment variable (``MAHAVISHNU_DLQ_STORE``,
or a group variable whose JSON holds the key), the file and line, or "default".
It reads the same inputs the settings read, through the settings' own YAML
reader, and never a value: only whether a key is there.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT", "leaves", "origins"]

#: The origin of a value no source set.
DEFAULT = "default"


def leaves(data: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """The path of every leaf of ``data`` (a mapping is walked; anything else is a leaf)."""
    for key, value in data.items():
        path = (*prefix, str(key))
        if isinstance(value, Mapping) and value:
            yield from leaves(value, path)
        else:
            yield path


def origins(
    data: Mapping[str, Any],
    yaml_file: Path | None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """``{dotted key: origin}`` for every leaf of the settings ``data``."""
    from mahavishnu_dlq.settings import ENV_PREFIX  # noqa: PLC0415 - not for --help
    from mahavishnu_dlq.settings.yamlfile import compose_settings_file  # noqa: PLC0415

    environ = os.environ if environ is None else environ
    upper = {name.upper(): name for name in environ if name.upper().startswith(ENV_PREFIX)}
    root = None if yaml_file is None else compose_settings_file(yaml_file)
    found: dict[str, str] = {}
    for path in leaves(data):
        found[".".join(path)] = (
            _from_environment(path, upper, environ, ENV_PREFIX)
            or _from_file(path, root, yaml_file)
            or DEFAULT
        )
    return found


def _from_environment(
    path: tuple[str, ...], upper: Mapping[str, str], environ: Mapping[str, str], prefix: str
) -> str | None:
    """The variable that sets ``path``: its own, or a group's whose JSON has the key."""
    for depth in range(len(path), 0, -1):
        name = upper.get(prefix + "__".join(part.upper() for part in path[:depth]))
        if name is None:
            continue
        if depth == len(path) or _json_has(environ[name], path[depth:]):
            return f"environment {name}"
    return None


def _json_has(text: str, rest: tuple[str, ...]) -> bool:
    try:
        node: Any = json.loads(text)
    except ValueError:
        return False
    for part in rest:
        if not isinstance(node, dict):
            return False
        key = next((k for k in node if str(k).casefold() == part.casefold()), None)
        if key is None:
            return False
        node = node[key]
    return True


def _from_file(path: tuple[str, ...], root: Any, yaml_file: Path | None) -> str | None:
    """``file NAME, line N`` when the YAML file sets ``path``."""
    import yaml  # noqa: PLC0415 - not for --help

    node = root
    line = None
    for part in path:
        if not isinstance(node, yaml.MappingNode):
            return None
        pair = next(
            (
                (key, value)
                for key, value in node.value
                if isinstance(key, yaml.ScalarNode) and str(key.value).casefold() == part.casefold()
            ),
            None,
        )
        if pair is None:
            return None
        line = pair[0].start_mark.line + 1
        node = pair[1]
    return None if line is None else f"file {yaml_file}, line {line}"
