"""Targets for ``--app tests.unit.cli_fixtures:ATTR`` in the CLI unit tests.

The memory store lives in this process, so a test builds a queue (memory store,
fake clock), puts it in :data:`holder`, and every CLI command it runs then works
on that very queue: ``holder.dlq`` names the instance, :func:`queue_factory` and
:func:`async_queue_factory` return it. The other names are the shapes ``--app``
accepts (handlers) or refuses (anything else).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mahavishnu_dlq.queue import DeadLetterQueue, Handler
from mahavishnu_dlq.testing import FlakyHandler

__all__ = [
    "Holder",
    "async_queue_factory",
    "bad_mapping",
    "empty_mapping",
    "handlers",
    "holder",
    "none_factory",
    "not_a_queue",
    "queue_factory",
    "raising_factory",
    "single_handler",
]


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
