"""Settings files: YAML read by one hardened loader, or refused with the file and line.

A settings file is small and written by a person, so anything else is refused
before it can cost time, memory or a traceback:

- a file larger than :data:`MAX_FILE_BYTES` (1 MiB), or not UTF-8 text;
- a key repeated in a mapping (YAML would silently keep the last one), and at the
  top level two setting names that differ only in case (they name one setting);
- nesting deeper than :data:`MAX_DEPTH` levels, refused while composing, long
  before Python's recursion limit;
- a document larger than :data:`MAX_NODES` nodes once its aliases are expanded:
  each alias counts what its anchor holds, computed from sizes already known, so a
  "billion laughs" bomb is refused after a few lines, never expanded. Ordinary
  anchors, aliases and merge keys (``<<: *defaults``) work;
- a value the constructor cannot build (a 5000-digit integer, a date that does
  not exist): its ``ValueError`` or ``OverflowError`` names the line.

Every refusal is a :class:`~mahavishnu_dlq.errors.ConfigurationError` whose message
is one line naming the file and the line. :func:`read_settings_file` gives the
mapping of settings; :func:`compose_settings_file` the node tree (with marks), which
the validation messages use to name the line of a bad value.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import GeneratorType
from typing import Any

import yaml

from mahavishnu_dlq.errors import ConfigurationError

__all__ = [
    "MAX_DEPTH",
    "MAX_FILE_BYTES",
    "MAX_NODES",
    "SettingsLoader",
    "compose_settings_file",
    "read_settings_file",
]

#: Largest settings file, in bytes.
MAX_FILE_BYTES = 1_048_576
#: Deepest nesting of a settings file (the settings themselves nest about six levels).
MAX_DEPTH = 64
#: Most YAML nodes in a settings file, counting every alias as what its anchor holds.
MAX_NODES = 10_000

_MERGE_TAG = "tag:yaml.org,2002:merge"
_Measure = tuple[int, int]  # (size in nodes, height in levels) of a composed node


class _Refused(yaml.MarkedYAMLError):
    """A well-formed document this loader does not load (a bound, a duplicate key)."""


class SettingsLoader(yaml.SafeLoader):
    """:class:`yaml.SafeLoader` with the bounds of a settings file (pure Python).

    The size and height of every composed collection are kept, so an alias costs
    one lookup; the bounds are checked while the document is composed, before
    anything is constructed.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._measures: dict[yaml.Node, _Measure] = {}

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self._peek()
            anchor = self.anchors.get(event.anchor)
            if anchor is not None:  # an undefined alias is the composer's to refuse
                measure = self._measure(anchor)
                if measure is None:
                    raise _Refused(
                        None,
                        None,
                        f"alias *{event.anchor} is used inside its own anchor",
                        event.start_mark,
                    )
                self._check_depth(self._depth + measure[1], event.start_mark)
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            self._check_depth(self._depth, self._peek().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_sequence_node(self, anchor: Any) -> yaml.SequenceNode:
        node = super().compose_sequence_node(anchor)
        self._measured(node, node.value)
        return node

    def compose_mapping_node(self, anchor: Any) -> yaml.MappingNode:
        node = super().compose_mapping_node(anchor)
        self._refuse_duplicate_keys(node)
        self._measured(node, [part for pair in node.value for part in pair])
        return node

    def construct_object(self, node: Any, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError) as exc:
            problem = str(exc).split("; use sys.set_int_max_str_digits", 1)[0]
            raise _Refused(
                None, None, f"cannot read this value: {problem}", node.start_mark
            ) from exc

    # -- the bounds ----------------------------------------------------------------

    def _peek(self) -> Any:
        return self.peek_event()  # type: ignore[no-untyped-call]  # untyped in types-PyYAML

    def _measure(self, node: yaml.Node) -> _Measure | None:
        """Size and height of a composed node; None for a collection still composing."""
        if isinstance(node, yaml.ScalarNode):
            return 1, 1
        return self._measures.get(node)

    def _measured(self, node: yaml.Node, children: list[yaml.Node]) -> None:
        size, height = 1, 0
        for child in children:
            child_size, child_height = self._measure(child) or (1, 1)
            size += child_size
            height = max(height, child_height)
        if size > MAX_NODES:
            raise _Refused(
                None,
                None,
                f"more than {MAX_NODES} YAML nodes once aliases are expanded "
                "(a settings file is far smaller)",
                node.start_mark,
            )
        self._measures[node] = size, height + 1

    def _check_depth(self, depth: int, mark: yaml.Mark) -> None:
        if depth > MAX_DEPTH:
            raise _Refused(None, None, f"nested deeper than {MAX_DEPTH} levels", mark)

    def _refuse_duplicate_keys(self, node: yaml.MappingNode) -> None:
        top = self._depth == 1  # setting names are case-insensitive
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            key = self._key(key_node)
            if top and isinstance(key, str):
                key = key.casefold()
            first = seen.setdefault(key, key_node)
            if first is key_node:
                continue
            named = _shown(key_node)
            if top and first.value != key_node.value:
                named += f", the same setting as {_shown(first)}"
            raise _Refused(
                None,
                None,
                f"duplicate key {named} (first at {_at(first.start_mark)})",
                key_node.start_mark,
            )

    def _key(self, node: yaml.Node) -> Any:
        """A key as the mapping will hold it (``1`` and ``0x1`` are one key, ``1`` and
        ``"1"`` two); a merge key by its text, a collection by its identity."""
        if not isinstance(node, yaml.ScalarNode):
            return id(node)  # refused as unhashable when the mapping is constructed
        constructor = self.yaml_constructors.get(node.tag)
        if node.tag != _MERGE_TAG and constructor is not None:
            try:  # the scalar constructors are plain functions of the node
                key = constructor(self, node)
                hash(key)
            except (yaml.YAMLError, ValueError, OverflowError, TypeError):
                pass  # refused with its own message when the mapping is constructed
            else:
                if not isinstance(key, GeneratorType):
                    return key
        return node.tag, node.value


def _shown(key: yaml.Node) -> str:
    """A key as a message names it: its text as written (cut), or its kind."""
    if isinstance(key, yaml.ScalarNode):
        text = repr(key.value)
        return text if len(text) <= 80 else text[:77] + "..."
    return "(a list)" if isinstance(key, yaml.SequenceNode) else "(a mapping)"


# -- reading a file --------------------------------------------------------------------


def read_settings_file(path: Path) -> dict[str, Any]:
    """The mapping of settings in the YAML file at ``path`` (``{}`` when it is empty)."""
    data = _load(path, SettingsLoader.get_single_data)
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


def compose_settings_file(path: Path) -> yaml.Node | None:
    """The node tree of the YAML file at ``path`` (None when it is empty)."""
    node: yaml.Node | None = _load(path, SettingsLoader.get_single_node)
    return node


def _read_text(path: Path) -> str:
    try:
        with path.open("rb") as stream:
            data = stream.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigurationError(f"cannot read configuration file {str(path)!r}: {exc}") from exc
    if len(data) > MAX_FILE_BYTES:
        raise ConfigurationError(
            f"configuration file {str(path)!r} is larger than {MAX_FILE_BYTES} bytes (1 MiB); "
            "a settings file is far smaller"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - data.rfind(b"\n", 0, exc.start)
        raise ConfigurationError(
            f"cannot read configuration file {str(path)!r}: not UTF-8 text, byte "
            f"0x{data[exc.start]:02x} at line {line}, column {column} ({exc.reason})"
        ) from exc


def _load(path: Path, load: Callable[[SettingsLoader], Any]) -> Any:
    """``load(loader)`` on the text of ``path``; every failure a ConfigurationError."""
    text = _read_text(path)
    where = f"configuration file {str(path)!r}"
    loader = None
    try:
        loader = SettingsLoader(text)
        return load(loader)
    except _Refused as exc:
        raise ConfigurationError(f"{where}{_yaml_problem(exc)}") from exc
    except yaml.reader.ReaderError as exc:  # raised as the loader starts: no marks
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - text.rfind("\n", 0, exc.position)
        raise ConfigurationError(
            f"malformed YAML in {where}, line {line}, column {column}: unacceptable "
            f"character #x{exc.character:04x} (special characters are not allowed)"
        ) from exc
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"malformed YAML in {where}{_yaml_problem(exc)}") from exc
    except (RecursionError, ValueError, OverflowError) as exc:  # the bounds should come first
        line = loader.line + 1 if loader is not None else 1
        raise ConfigurationError(
            f"{where}, near line {line}: cannot read it ({type(exc).__name__}: {exc})"
        ) from exc
    finally:
        if loader is not None:
            loader.dispose()


def _at(mark: Any) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}"


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """``, line L, column C: problem (context at line L, column C)``."""
    problem_mark = getattr(exc, "problem_mark", None)
    context_mark = getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None)
    context = getattr(exc, "context", None)
    if problem_mark is None and context_mark is None:
        return ": " + " ".join(str(exc).split())
    text = f", {_at(problem_mark or context_mark)}: {problem or context or exc}"
    if context and problem and context_mark is not None:
        text += f" ({context} at {_at(context_mark)})"
    return text
