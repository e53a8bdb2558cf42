"""A Prefect project whose failed flow runs go to the dead-letter queue.

``flows.py`` is the whole set-up (the hook on the flow); ``__main__.py`` shows a run
failing, the record it leaves, and an operator's retry starting a new flow run.
Run it from the repository root (Prefect starts its local API by itself)::

    MAHAVISHNU_DLQ_STORE=sqlite MAHAVISHNU_DLQ_SQLITE__PATH=/tmp/prefect-dlq.db \\
        python -m examples.prefect_project

In production the flows run wherever Prefect runs them, and one process runs the
queue's processor, which retries the stored runs on their schedule::

    MAHAVISHNU_DLQ_STORE=sqlite MAHAVISHNU_DLQ_SQLITE__PATH=/tmp/prefect-dlq.db \\
        mahavishnu-dlq processor run \\
        --app mahavishnu_dlq.integrations.prefect:dead_letter_queue
"""
