"""What every hostile-input property asserts, and the queue it asserts it on: the
Hypothesis settings, a queue with small bounds on a fake clock, documented errors in
one line, error texts bounded as documented, records read back exactly and holding
their own copies, the store holding what was accepted, log lines printable, and a
healthy task still processed afterwards.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Awaitable, Mapping
from datetime import datetime, timezone
from typing import Any, Final, TypeVar

from hypothesis import HealthCheck, settings

from mahavishnu_dlq import DeadLetterQueue, DeadLetterStatus, FailedTask, Limits, RetryProcessor
from mahavishnu_dlq.printable import UNSAFE
from mahavishnu_dlq.storage import MemoryStore, Store
from mahavishnu_dlq.testing import FakeClock
from tests.hostile.payloads import containers
from tests.hostile.text import is_valid, written_out

T = TypeVar("T")

T0: Final = datetime(2026, 1, 1, tzinfo=timezone.utc)
PENDING: Final = DeadLetterStatus.PENDING
EXHAUSTED: Final = DeadLetterStatus.EXHAUSTED
COMPLETED: Final = DeadLetterStatus.COMPLETED

#: Small bounds, so that generated examples cross them often.
LIMITS: Final = Limits(max_payload_bytes=4096, max_error_bytes=1024)

#: Derandomized (the same examples on every run), no example database, no deadline
#: (a first example pays for imports and an event loop). ``anyio_backend`` is a
#: stateless parameter, so sharing it between examples is harmless.
PROPERTY: Final = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=120,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)


def new_dlq(
    store: Store | None = None, *, limits: Limits = LIMITS, **options: Any
) -> DeadLetterQueue:
    """A queue on ``store`` (a new memory store by default) with a fake clock at
    :data:`T0`, a seeded random generator and small ``limits``."""
    return DeadLetterQueue(
        store if store is not None else MemoryStore(),
        clock=FakeClock(T0),
        limits=limits,
        rng=random.Random(0),
        worker_id="worker",
        **options,
    )


async def outcome(awaitable: Awaitable[T]) -> T | Exception:
    """What ``awaitable`` returned, or the exception it raised."""
    try:
        return await awaitable
    except Exception as exc:
        return exc


def one_line(exc: BaseException) -> str:
    """The message of a documented error: one line of valid Unicode."""
    text = str(exc)
    assert "\n" not in text, text
    assert is_valid(text), text.encode("utf-8", "backslashreplace")
    return text


def assert_printable_line(text: str) -> None:
    """``text`` is one line with nothing a terminal or a log reader would obey: no
    control, bidi control, line separator or lone surrogate left raw."""
    raw = sorted({f"U+{ord(char):04X}" for char in text if ord(char) in UNSAFE})
    assert not raw, (raw, text[:300].encode("utf-8", "backslashreplace"))


_CUT = re.compile(
    r"\n\[\.\.\. (\d+) bytes cut by mahavishnu-dlq \(max_error_bytes (\d+)\) \.\.\.\]\n"
)


def assert_bounded(stored: str | None, original: str | None, limit: int) -> None:
    """An error text as kept: valid Unicode, at most ``limit`` bytes, and — when the
    original is known — exactly it (surrogates written out), or its start and its end
    around a marker saying how much was cut."""
    assert stored is not None
    assert is_valid(stored), stored.encode("utf-8", "backslashreplace")
    size = len(stored.encode())
    assert size <= limit, (size, limit)
    if original is None:
        return
    cleaned = written_out(original)
    whole = len(cleaned.encode())
    if whole <= limit:
        assert stored == cleaned
        return
    marker = _CUT.search(stored)
    assert marker is not None, stored[:200]
    head, tail = stored[: marker.start()], stored[marker.end() :]
    assert cleaned.startswith(head)
    assert cleaned.endswith(tail)
    kept = len(head.encode()) + len(tail.encode())
    assert kept + int(marker[1]) == whole
    assert int(marker[2]) == limit
    assert kept >= limit - len(marker[0]) - 8  # all it could keep, less a split character


def canonical(value: object) -> str:
    """JSON that tells ``True`` from ``1``, ``1`` from ``1.0`` and ``0.0`` from ``-0.0``."""
    return json.dumps(value, sort_keys=True, allow_nan=False)


def assert_exact(returned: FailedTask, stored: FailedTask | None) -> None:
    """``stored`` is ``returned``, every JSON type kept; it encodes as UTF-8 JSON and
    validates back into the same record."""
    assert stored is not None
    assert stored == returned
    assert canonical(stored.to_dict()) == canonical(returned.to_dict())
    text = json.dumps(stored.to_dict(), ensure_ascii=False, allow_nan=False)
    text.encode("utf-8")  # no lone surrogate anywhere
    assert FailedTask.model_validate_json(text) == stored


def assert_own_copy(kept: object, given: object) -> None:
    """``kept`` (a record's input or metadata) is what the store holds: no tuple in it,
    and no container shared with ``given`` (what the caller passed, and may change)."""
    theirs = {id(node) for node in containers(given)}
    for node in containers(kept):
        assert not isinstance(node, tuple), kept
        assert id(node) not in theirs, "the record shares a container with the caller"


async def assert_store_holds(dlq: DeadLetterQueue, accepted: Mapping[str, FailedTask]) -> None:
    """The store holds exactly the accepted records: counted, listed and read back."""
    assert await dlq.count_tasks() == len(accepted)
    listed = await dlq.list_tasks(limit=10000)
    assert sorted(task.task_id for task in listed) == sorted(accepted)
    for task in listed:
        assert_exact(accepted[task.task_id], task)
        assert_exact(accepted[task.task_id], await dlq.get_task(task.task_id))
    statistics = await dlq.get_statistics()
    assert statistics["total_stored"] == len(accepted)
    assert statistics["unreadable"] == 0


HEALTHY_ID: Final = "healthy task, enqueued after the hostile ones"
HEALTHY_WORKFLOW: Final = "healthy-workflow"


async def assert_healthy(dlq: DeadLetterQueue) -> None:
    """A healthy task enqueued now is claimed and completed by one ``run_once()``."""
    seen: list[tuple[dict[str, Any], list[str]]] = []

    async def healthy(task: dict[str, Any], repos: list[str]) -> str:
        seen.append((task, repos))
        return "done"

    dlq.register_handler(HEALTHY_WORKFLOW, healthy)
    record = await dlq.enqueue(
        HEALTHY_ID,
        {"n": 1},
        ["repo"],
        error=ConnectionError("connection reset"),
        workflow=HEALTHY_WORKFLOW,
        retry_policy="immediate",
        max_retries=3,
    )
    assert record.status is PENDING
    assert await RetryProcessor(dlq).run_once() >= 1
    done = await dlq.get_task(HEALTHY_ID)
    assert done is not None
    assert done.status is COMPLETED
    assert seen == [({"n": 1}, ["repo"])]
