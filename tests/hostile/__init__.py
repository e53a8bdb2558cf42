"""Hostile input for the property suites that run on the memory store
(tests/unit/test_hostile_properties.py) and on a real node
(tests/integration/test_hostile_properties_opensearch.py). Each module holds the
strategies that generate one kind of input, the hostile objects it is made of, the
oracles that say what the queue must do with it and the checks that assert it did:

- :mod:`~tests.hostile.text`: text pieces, ids, ``str`` look-alikes whose methods raise;
- :mod:`~tests.hostile.payloads`: task inputs, metadata, repository lists;
- :mod:`~tests.hostile.exceptions`: exceptions whose every part may refuse or mislead;
- :mod:`~tests.hostile.checks`: the settings, the queue, and the checks every property
  shares (one-line errors, bounded texts, exact records, a healthy queue afterwards);
- :mod:`~tests.hostile.calls`: ``enqueue`` calls, and the regressions pinned as examples;
- :mod:`~tests.hostile.workflows`: failing workflows wrapped by ``execute_with_dlq``;
- :mod:`~tests.hostile.handlers`: retry handlers, delays and the end of the calendar;
- :mod:`~tests.hostile.schedule`: when the retry policy makes a task due again;
- :mod:`~tests.hostile.listings`: ``list_tasks`` filters, good and bad.

Their asserts are rewritten by pytest (see tests/conftest.py), so a failing check
shows its values.
"""
