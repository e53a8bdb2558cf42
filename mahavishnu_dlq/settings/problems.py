"""Validation problems: pydantic's ``ValidationError`` as one readable ConfigurationError.

Each problem becomes one line naming the field (``processor.concurrency``,
``opensearch.hosts[0]``), what is allowed there (the range of the field, the
choices of an enum), the value given, and where it came from: a keyword
argument, an environment variable, or the line of the YAML file
(:class:`_Origins`, which composes the file again through the same hardened
loader to find the line).

Nothing hostile reaches the message: secrets are masked (a field holding a
secret, the credentials of a host URL), values are shown through a bounded
``repr`` (no deep or shared structure is walked, no 5000-digit integer
converted), and field names are escaped (a key holding ``\\x1b[2J`` is shown as
such, never sent to a terminal raw).
"""

from __future__ import annotations

import os
import re
import reprlib
import types
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, SecretStr, ValidationError
from pydantic.fields import FieldInfo

from mahavishnu_dlq.credentials import MASK, mask_credentials, mask_userinfo
from mahavishnu_dlq.errors import ConfigurationError

from .sources import ENV_PREFIX, printable
from .yamlfile import compose_settings_file

__all__ = ["configuration_error", "number", "show"]

_SECRET_WORDS = ("password", "secret", "token", "api_key", "apikey")
_BIG_INT_BITS = 3000  # about 900 digits: shown by size, not digit by digit

_Loc = tuple[str | int, ...]


def number(value: Any) -> str:
    """A number as a message shows it: ``60``, not ``60.0``."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class _Repr(reprlib.Repr):
    """A bounded repr: a few levels, a few items, and huge integers by their size."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel = 3
        self.maxstring = 100
        self.maxother = 100

    def repr_int(self, x: int, level: int) -> str:
        if abs(x).bit_length() > _BIG_INT_BITS:
            return f"<a whole number of {int(abs(x).bit_length() * 0.30103) + 1} digits>"
        return super().repr_int(x, level)

    def repr_str(self, x: str, level: int) -> str:
        return super().repr_str(_masked(x), level)


_repr = _Repr()


def _masked(text: str) -> str:
    """``text`` with any credentials in it masked, read as a host entry or as free text."""
    return mask_credentials(mask_userinfo(text)) if "@" in text else text


def show(value: Any) -> str:
    """``value`` as a message shows it: bounded, credentials masked, at most 120 chars."""
    text = _repr.repr(value.value if isinstance(value, Enum) else value)
    text = mask_credentials(text)
    return text if len(text) <= 120 else text[:117] + "..."


# --- where a value came from -------------------------------------------------------


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
                root = compose_settings_file(yaml_path)
            except ConfigurationError:  # changed since it was read: no lines, then
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
        return printable(", ".join(found) if merged else found[0])

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


# --- what a field allows -----------------------------------------------------------


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
        return f"between {number(limits['ge'])} and {number(limits['le'])}"
    words = [
        f"{_LIMIT_WORDS[name]} {number(limits[name])}" for name in _LIMIT_WORDS if name in limits
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


def _dotted(loc: _Loc) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return printable(mask_credentials(text)) or "(settings)"


# --- one problem, one line ---------------------------------------------------------


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
        allowed = printable(_allowed(error, info))
        if is_key:
            allowed = f"key {show(value)} {allowed}"
        text = f"{path}: {allowed}"
        if kind != "missing" and not is_key and not isinstance(value, Mapping):
            shown = MASK if _is_secret(loc, info) else show(value)
            if not (kind == "value_error" and shown in allowed):  # already names the value
                text += f", got {shown}"
    merged = isinstance(value, Mapping) or kind == "missing"
    origin = origins.describe(loc, merged=merged)
    if origin:
        text += f" (from {origin})"
    return path, text


def _bare_problem(error: Any) -> tuple[str, str]:
    """A problem when its full description could not be made: field and kind only."""
    path = _dotted(tuple(error["loc"]))
    return path, f"{path}: {printable(str(error['msg']))}"


def configuration_error(
    exc: ValidationError,
    model: type[BaseModel],
    overrides: Mapping[str, Any],
    yaml_path: Path | None,
) -> ConfigurationError:
    """``exc`` as one ConfigurationError: a header, then one line per problem.

    ``overrides`` and ``yaml_path`` are the inputs of the build, to say where each
    bad value came from.
    """
    origins = _Origins.collect(overrides, yaml_path)
    problems = []
    for error in exc.errors(include_url=False):
        try:
            problems.append(_problem(error, model, origins))
        except (RecursionError, ValueError, OverflowError):  # never lose the problem itself
            problems.append(_bare_problem(error))
    count = len(problems)
    header = f"invalid mahavishnu-dlq configuration ({count} problem{'s' if count != 1 else ''})"
    lines = "\n".join(f"  - {text}" for _, text in problems)
    return ConfigurationError(f"{header}:\n{lines}", field=problems[0][0] if problems else None)
