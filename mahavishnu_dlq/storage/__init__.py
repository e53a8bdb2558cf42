"""Storage backends behind one contract (:class:`~mahavishnu_dlq.storage.base.Store`).

``OpenSearchStore`` is imported lazily: it needs the ``opensearch`` extra.
"""

from __future__ import annotations

from typing import Any

from mahavishnu_dlq.storage.base import (
    FingerprintCount,
    FingerprintGroup,
    HistogramBucket,
    Mutation,
    Store,
    StoreStatistics,
)
from mahavishnu_dlq.storage.failover import FailoverStore
from mahavishnu_dlq.storage.journal import JournalStore
from mahavishnu_dlq.storage.memory import MemoryStore
from mahavishnu_dlq.storage.sqlite import SQLiteStore

__all__ = [
    "FailoverStore",
    "FingerprintCount",
    "FingerprintGroup",
    "HistogramBucket",
    "JournalStore",
    "MemoryStore",
    "Mutation",
    "OpenSearchStore",
    "SQLiteStore",
    "Store",
    "StoreStatistics",
]


def __getattr__(name: str) -> Any:
    """Import ``OpenSearchStore`` only when asked for, naming the extra it needs."""
    if name == "OpenSearchStore":
        try:
            from mahavishnu_dlq.storage.opensearch import OpenSearchStore  # noqa: PLC0415
        except ImportError as exc:
            raise ImportError(
                "OpenSearchStore needs the 'opensearch' extra: "
                f"pip install 'mahavishnu-dlq[opensearch]' ({exc})"
            ) from exc
        return OpenSearchStore
    raise AttributeError(f"module 'mahavishnu_dlq.storage' has no attribute {name!r}")
