"""Building the store that settings describe (``store: sqlite | memory | opensearch | failover``).

The bridge from :class:`~mahavishnu_dlq.settings.DLQSettings` to a
:class:`~mahavishnu_dlq.storage.base.Store`; the OpenSearch backends are imported
only when asked for, since they need the ``opensearch`` extra.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mahavishnu_dlq.storage.base import Store
from mahavishnu_dlq.storage.failover import FailoverStore
from mahavishnu_dlq.storage.journal import JournalStore
from mahavishnu_dlq.storage.memory import MemoryStore
from mahavishnu_dlq.storage.sqlite import SQLiteStore

if TYPE_CHECKING:
    from mahavishnu_dlq.settings import DLQSettings

__all__ = ["store_from_settings"]


def store_from_settings(settings: DLQSettings) -> Store:
    """The (unopened) store ``settings.store`` names, configured by its settings group."""
    if settings.store == "memory":
        return MemoryStore()
    if settings.store == "sqlite":
        return SQLiteStore(
            settings.sqlite.file(), busy_timeout=settings.sqlite.busy_timeout_seconds
        )
    from mahavishnu_dlq.storage.opensearch import OpenSearchStore  # noqa: PLC0415 - extra

    search = OpenSearchStore.from_settings(settings.opensearch)
    if settings.store == "opensearch":
        return search
    failover = settings.failover
    fallback: Store | None = None
    if failover.fallback == "sqlite":
        fallback = JournalStore(
            failover.directory(settings.opensearch.index),
            busy_timeout=settings.sqlite.busy_timeout_seconds,
        )
    return FailoverStore(
        search,
        fallback,
        fail_closed=failover.fallback == "none",
        failure_threshold=failover.failure_threshold,
        probe_interval=failover.probe_interval_seconds,
        timeout=failover.store_timeout_seconds,
    )
