"""Storage backends behind one contract (:class:`~mahavishnu_dlq.storage.base.Store`)."""

from mahavishnu_dlq.storage.base import FingerprintCount, Mutation, Store, StoreStatistics
from mahavishnu_dlq.storage.memory import MemoryStore

__all__ = ["FingerprintCount", "MemoryStore", "Mutation", "Store", "StoreStatistics"]
