"""Protecting the services workflows call: a circuit breaker per workflow, shared by
every processor through the store (:mod:`.breaker` the state machine, :mod:`.shared`
the processors' view of it)."""

from __future__ import annotations

from mahavishnu_dlq.downstream.breaker import (
    Breaker,
    BreakerBook,
    BreakerPolicy,
    BreakerState,
)

__all__ = ["Breaker", "BreakerBook", "BreakerPolicy", "BreakerState"]
