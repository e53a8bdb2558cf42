"""Hostile task inputs, metadata and repository lists: JSON payloads, values that make
one unstorable wherever they sit (NaN, sets, bytes, cycles, integers past 1000 digits,
nesting past the depth bound, lone surrogates), mappings that are not dicts or cannot
be read — and the oracles saying which of them the queue refuses, how it measures the
payload bound, and which repository names it keeps.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict, UserDict
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Any, Final

from hypothesis import strategies as st

from mahavishnu_dlq.limits import MAX_NUMBER_DIGITS
from tests.hostile.text import (
    SURROGATES,
    HostileStr,
    PrintsHostileStr,
    Unprintable,
    holding,
    hostile_text,
    is_valid,
    text_of,
    valid_text,
)

#: The smallest integer a payload may not hold: one digit more than the node parses.
HUGE: Final = 10**MAX_NUMBER_DIGITS

json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(1, MAX_NUMBER_DIGITS).map(lambda digits: -(10**digits - 1)),  # up to 1000 digits
    st.floats(allow_nan=False, allow_infinity=False),
    valid_text,
)
json_values = st.recursive(
    json_leaves,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(valid_text, inner, max_size=3),
    max_leaves=10,
)
#: JSON-native task inputs and metadata (tuples would come back as lists).
payloads = st.dictionaries(valid_text, json_values, max_size=4)


def nested(depth: int, leaf: object, shape: int) -> dict[str, Any]:
    """A task input ``depth`` levels deep (the top-level object is level 1), its
    levels dicts or lists as the bits of ``shape`` say."""
    value: Any = leaf
    for level in range(depth - 1):
        value = [value] if (shape >> (level % 30)) & 1 else {"n": value}
    return {"deep": value}


def deep_payloads(low: int, high: int) -> st.SearchStrategy[dict[str, Any]]:
    return st.builds(nested, st.integers(low, high), json_leaves, st.integers(0, 2**30))


def _cycle(kind: bool) -> object:
    if kind:
        looped: list[Any] = []
        looped.append(looped)
        return looped
    itself: dict[str, Any] = {}
    itself["self"] = itself
    return itself


#: One value that makes a payload unstorable, wherever it sits.
poisons = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf]),
    st.builds(set),
    st.builds(lambda: frozenset({1})),
    st.binary(max_size=3),
    st.builds(bytearray, st.binary(max_size=2)),
    st.builds(object),
    st.builds(Unprintable),
    st.builds(complex, st.integers(-3, 3), st.integers(1, 3)),
    st.builds(lambda: datetime(2026, 1, 1, tzinfo=timezone.utc)),
    st.builds(  # 1001 digits and more: OpenSearch's JSON parser refuses them
        lambda more, sign: sign * HUGE * 10**more, st.integers(0, 50), st.sampled_from([1, -1])
    ),
    st.builds(lambda: 10**4300),  # 4301 digits: past int's string conversion limit
    st.builds(UserDict),
    st.builds(
        lambda key: {key: 1},
        st.one_of(
            st.integers(),
            st.none(),
            st.booleans(),
            st.floats(),
            st.tuples(st.integers()),
            st.binary(max_size=2),
        ),
    ),
    st.sampled_from(SURROGATES).map(lambda surrogate: {f"key{surrogate}": 1}),
    holding(SURROGATES),
    deep_payloads(101, 130),
    st.builds(_cycle, st.booleans()),
)


def _wrap(value: object, shape: list[bool]) -> object:
    for as_dict in shape:
        value = {"w": value} if as_dict else [value]
    return value


poisoned_payloads = st.builds(
    lambda payload, poison, shape: {**payload, "poison": _wrap(poison, shape)},
    payloads,
    poisons,
    st.lists(st.booleans(), max_size=3),
)


class ReadOnlyMapping(Mapping[str, Any]):
    """A mapping that is not a dict."""

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


class UnreadableMapping(Mapping[str, Any]):
    """A mapping whose items cannot be read."""

    def __getitem__(self, key: str) -> Any:
        raise RuntimeError("UnreadableMapping.__getitem__")

    def __iter__(self) -> Iterator[str]:
        return iter(["a"])

    def __len__(self) -> int:
        return 1


def tupled(value: object) -> object:
    """``value`` with every list a tuple (JSON encodes both as arrays)."""
    if isinstance(value, list):
        return tuple(tupled(item) for item in value)
    if isinstance(value, dict):
        return {key: tupled(item) for key, item in value.items()}
    return value


def mapping_shapes(inner: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[object]:
    """``inner`` as a dict, an OrderedDict, a read-only proxy or another Mapping, or
    with tuples for lists."""
    return st.one_of(
        inner,
        inner.map(OrderedDict),
        inner.map(MappingProxyType),
        inner.map(ReadOnlyMapping),
        inner.map(tupled),
    )


#: Any task input a caller could pass.
hostile_tasks = st.one_of(
    mapping_shapes(payloads),
    deep_payloads(90, 100),
    poisoned_payloads,
    st.builds(UnreadableMapping),
    st.one_of(st.none(), st.integers(), valid_text, st.lists(st.integers(), max_size=2)),
)
#: Any metadata a caller could pass (a ``failure_context`` of its own is replaced).
hostile_metadata = st.one_of(
    st.none(),
    mapping_shapes(payloads),
    payloads.map(lambda payload: {**payload, "failure_context": "mine"}),
    poisoned_payloads,
    st.builds(UnreadableMapping),
    st.one_of(st.integers(), valid_text),
)


def _json_leaf(value: object) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


def _too_many_digits(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) >= HUGE


def tree_refused(value: object, max_depth: int) -> bool:
    """Whether a task input or metadata dict is refused: keys not strings, nested too
    deeply (or holding itself), lone surrogates, an integer of more than 1000 digits,
    or a value JSON cannot encode."""
    stack: list[tuple[object, int, frozenset[int]]] = [(value, 1, frozenset())]
    while stack:
        node, depth, path = stack.pop()
        if isinstance(node, (dict, list, tuple)):
            if depth > max_depth or id(node) in path:
                return True
            inner = path | {id(node)}
            if isinstance(node, dict):
                for key, item in node.items():
                    if not isinstance(key, str) or not is_valid(key):
                        return True
                    stack.append((item, depth + 1, inner))
            else:
                stack.extend((item, depth + 1, inner) for item in node)
        elif isinstance(node, str):
            if not is_valid(node):
                return True
        elif _too_many_digits(node) or not _json_leaf(node):
            return True
    return False


def containers(value: object) -> Iterator[object]:
    """Every container reachable from ``value`` (mappings, lists, tuples), itself too."""
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, Mapping):
            stack.extend(node.values())
        elif isinstance(node, (list, tuple)):
            stack.extend(node)
        else:
            continue
        yield node


def as_dict(value: object) -> dict[str, Any] | None:
    """``dict(value)`` for a readable mapping, else None."""
    if not isinstance(value, Mapping):
        return None
    try:
        return dict(value)
    except Exception:
        return None


def compact(value: object) -> str:
    """The compact UTF-8 JSON the payload bound measures."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def payload_size(
    task: Mapping[str, Any], metadata: Mapping[str, Any] | None, repos: list[str]
) -> int:
    """What ``max_payload_bytes`` bounds: input, metadata and repos as UTF-8 JSON."""
    size = len(compact(dict(task)).encode())
    if metadata:
        size += len(compact(dict(metadata)).encode())
    if repos:
        size += len(compact(repos).encode())
    return size


# -- repos ------------------------------------------------------------------------------


class UnreadableIterable:
    """An iterable whose iteration raises."""

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("UnreadableIterable.__iter__")


hostile_repos = st.one_of(
    st.none(),
    st.lists(valid_text, max_size=4),
    st.lists(valid_text, max_size=3).map(tuple),
    st.lists(st.one_of(valid_text, st.integers(), st.none(), st.floats()), max_size=4),
    st.lists(st.one_of(valid_text, hostile_text), min_size=1, max_size=3),
    st.lists(
        st.one_of(st.builds(Unprintable), st.builds(PrintsHostileStr), valid_text.map(HostileStr)),
        min_size=1,
        max_size=3,
    ),
    st.builds(UnreadableIterable),
    valid_text,  # a lone string would be split into letters
    st.binary(max_size=3),
    st.integers(),
)


def expected_repos(repos: object) -> list[str] | None:
    """The names stored for ``repos`` (each by :func:`text_of`: None is ``"None"``), or
    None when refused: not a list of names, unreadable, or a lone surrogate in one."""
    if repos is None:
        return []
    if isinstance(repos, (str, bytes)) or not isinstance(repos, Iterable):
        return None
    try:
        names = [text_of(name) for name in repos]
    except Exception:
        return None
    return names if all(is_valid(name) for name in names) else None
