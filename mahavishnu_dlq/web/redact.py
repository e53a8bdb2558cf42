"""Secrets in payloads, masked: the keys of ``web.redact_keys`` at any depth.

A task's input and metadata are shown to operators as stored, except the values
under a key that contains one of the words of ``web.redact_keys``
(case-insensitive, in any nested object or object inside a list), which become
``••••`` — in pages and in API answers. Containing, not equal: with the default
``token``, ``access_token`` and ``X-Api-Token`` are masked too (and so is
``tokens_left``: a number hidden is a smaller harm than a secret shown).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["MASK", "Redactor"]

#: What a redacted value is shown as.
MASK = "••••"


class Redactor:
    """Masks the values under the configured keys."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._keys = tuple(dict.fromkeys(key.casefold() for key in keys if key))

    def masks(self, key: str) -> bool:
        """Whether the value under ``key`` is shown as :data:`MASK`."""
        folded = key.casefold()
        return any(word in folded for word in self._keys)

    def __call__(self, value: Any) -> Any:
        """A copy of ``value`` (JSON-like) with the configured keys' values masked."""
        if not self._keys:
            return value
        # iterative: stored payloads may be nested up to max_payload_depth (200)
        root: list[Any] = [None]
        stack: list[tuple[Any, Any, Any]] = [(value, root, 0)]
        while stack:
            item, parent, slot = stack.pop()
            if isinstance(item, dict):
                copy: dict[Any, Any] = {}
                parent[slot] = copy
                for key, child in item.items():
                    if isinstance(key, str) and self.masks(key):
                        copy[key] = MASK
                    else:
                        copy[key] = None
                        stack.append((child, copy, key))
            elif isinstance(item, list):
                items: list[Any] = [None] * len(item)
                parent[slot] = items
                stack.extend((child, items, index) for index, child in enumerate(item))
            else:
                parent[slot] = item
        return root[0]
