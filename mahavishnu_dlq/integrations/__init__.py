"""Integrations with the workflow engines people already run.

- :mod:`mahavishnu_dlq.integrations.celery` (extra ``celery``): ``install(app)``.
- :mod:`mahavishnu_dlq.integrations.dramatiq` (extra ``dramatiq``):
  ``DeadLetterMiddleware``.
- :mod:`mahavishnu_dlq.integrations.prefect` (extra ``prefect``):
  ``dead_letter_hook``.

Each stores a run that failed for good with ``metadata["engine"]`` naming its
engine and registers an engine handler (:mod:`mahavishnu_dlq.engines`) that
retries it through the engine. :class:`~mahavishnu_dlq.integrations.bridge.EngineBridge`
is what they share: capturing from the engine's worker threads and processes
without ever breaking them.
"""
