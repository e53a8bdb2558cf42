"""A Dramatiq project with the dead-letter queue: messages Dramatiq gives up on are
stored, and a retry from the queue enqueues them again to their actor's queue.

- :mod:`examples.dramatiq_project.tasks`: the broker, three lines of set-up
  (``DeadLetterMiddleware``) and one actor, ``reserve_stock``, that calls a warehouse
  API (simulated by a flag in Redis) and lets Dramatiq retry it twice.
- :mod:`examples.dramatiq_project.run`: the story end to end: the warehouse API goes
  down, a reservation fails for good and is stored (and lands in Dramatiq's
  ``default.XQ`` as usual); the API comes back, one retry from the queue enqueues
  the message again, the worker runs it and the record completes.

Run it from the repository root with a Redis on localhost and a store both
processes share (the extras ``dramatiq`` and ``cli``)::

    export DRAMATIQ_REDIS_URL=redis://localhost:6379/0
    export MAHAVISHNU_DLQ_STORE=sqlite MAHAVISHNU_DLQ_SQLITE__PATH=/tmp/warehouse-dlq.db

    # terminal 1: the worker (captures the failures, reports on the replays)
    dramatiq examples.dramatiq_project.tasks

    # terminal 2: the story, or the processor that replays by policy
    python -m examples.dramatiq_project.run
    mahavishnu-dlq processor run --app examples.dramatiq_project.tasks:dlq
"""
