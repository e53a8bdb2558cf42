"""A Celery project with the dead-letter queue: tasks that fail for good are stored,
and a retry from the queue re-sends them to their Celery queue.

- :mod:`examples.celery_project.tasks`: the Celery app, three lines of set-up
  (``dlq = install(app)``) and one task, ``sync_invoice``, that calls a billing API
  (simulated by a flag in Redis) and lets Celery retry dropped connections twice.
- :mod:`examples.celery_project.run`: the story end to end: the billing API goes
  down, an invoice fails for good and is stored; the API comes back, one retry
  from the queue re-sends the task to its queue, the worker runs it and the
  record completes.

Run it from the repository root with a Redis on localhost and a store both
processes share (the extras ``celery`` and ``cli``)::

    export CELERY_BROKER_URL=redis://localhost:6379/0
    export MAHAVISHNU_DLQ_STORE=sqlite MAHAVISHNU_DLQ_SQLITE__PATH=/tmp/billing-dlq.db

    # terminal 1: the worker (captures the failures)
    celery -A examples.celery_project.tasks worker -l info

    # terminal 2: the story, or the processor that re-sends by policy
    python -m examples.celery_project.run
    mahavishnu-dlq processor run --app examples.celery_project.tasks:dlq
"""
