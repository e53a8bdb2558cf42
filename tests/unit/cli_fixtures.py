"""Targets for ``--app tests.unit.cli_fixtures:ATTR`` in the CLI unit tests.

The memory store lives in this process, so a test builds a queue (memory store,
fake clock), puts it in :data:`holder`, and every CLI command it runs then works
on that very queue: ``holder.dlq`` names the instance, :func:`queue_factory` and
:func:`async_queue_factory` return it. The other names are the shapes ``--app``
accepts (handlers) or refuses (anything else), and hostile objects: ones that raise
from an attribute, ``__str__``, ``__len__`` or the store's ``open``, with escape
sequences in what they say.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from mahavishnu_dlq.queue import DeadLetterQueue, Handler
from mahavishnu_dlq.storage.memory import MemoryStore
from mahavishnu_dlq.testing import FlakyHandler

__all__ = [
    "Holder",
    "async_queue_factory",
    "bad_mapping",
    "broken_store_factory",
    "empty_mapping",
    "exploding",
    "handlers",
    "holder",
    "hostile_mapping",
    "hostile_name",
    "logging_factory",
    "none_factory",
    "not_a_queue",
    "queue_factory",
    "raising_factory",
    "single_handler",
    "unprintable_factory",
]

#: What hostile objects say: clear the screen, set the window title.
HOSTILE = "\x1b[2J\x1b]0;pwned\x07"


@dataclass
class Holder:
    """The queue the current test drives (``None`` outside a test)."""

    dlq: DeadLetterQueue | None = None


holder = Holder()


def _current() -> DeadLetterQueue:
    if holder.dlq is None:
        raise RuntimeError("no queue in tests.unit.cli_fixtures.holder")
    return holder.dlq


def queue_factory() -> DeadLetterQueue:
    """A sync zero-argument factory."""
    return _current()


async def async_queue_factory() -> DeadLetterQueue:
    """An async zero-argument factory."""
    return _current()


def raising_factory() -> DeadLetterQueue:
    """A factory that fails."""
    raise RuntimeError("no database today")


def none_factory() -> Any:
    """A factory that returns nothing usable."""
    return None


#: ``{workflow: handler}``: "ok" succeeds, "bad" always fails. Tests may swap them.
handlers: dict[str, Handler] = {
    "ok": FlakyHandler(),
    "bad": FlakyHandler(failures=1_000_000),
}

#: One handler for every workflow (a callable taking the task and its repos).
single_handler = FlakyHandler(result="single")

not_a_queue = 42
empty_mapping: dict[str, Handler] = {}
bad_mapping: dict[str, Any] = {"ok": "not callable"}


class _Exploding:
    """Every attribute raises (not AttributeError): ``--app ...:exploding.queue``."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"no {name} today {HOSTILE}")


exploding = _Exploding()


class _UnprintableError(Exception):
    def __str__(self) -> str:
        raise RuntimeError("this error cannot be shown")


def unprintable_factory() -> DeadLetterQueue:
    """A factory whose error raises again when shown."""
    raise _UnprintableError


class _HostileMapping(Mapping[str, Any]):
    def __getitem__(self, key: str) -> Any:
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError(f"cannot iterate {HOSTILE}")

    def __len__(self) -> int:
        return 1


#: A mapping that raises when its handlers are read.
hostile_mapping = _HostileMapping()

#: An object whose type's name is an escape sequence.
hostile_name = type(HOSTILE, (), {})()


class _BrokenStore(MemoryStore):
    async def open(self, *, create: bool = True) -> None:
        raise RuntimeError(f"disk on fire {HOSTILE}")


def broken_store_factory() -> DeadLetterQueue:
    """A queue whose store fails to open with an error that is no DLQError."""
    return DeadLetterQueue(_BrokenStore())


def logging_factory() -> DeadLetterQueue:
    """The current queue, after logging a warning and its traceback that say HOSTILE."""
    try:
        raise ValueError(f"inner {HOSTILE}")
    except ValueError:
        logging.getLogger(__name__).warning("loaded %s", HOSTILE, exc_info=True)
    return _current()
