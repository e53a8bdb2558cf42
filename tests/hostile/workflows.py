"""Hostile wrapped workflows: functions (async, sync, callable objects, nested
``execute_with_dlq``) that raise a hostile exception through ``execute_with_dlq``, and
the check that the very exception comes back, stored once with what can be read of it,
and marked (or, when the failure could not be stored, noted as such).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any, cast

from hypothesis import strategies as st

from mahavishnu_dlq import DeadLetterQueue, DLQError
from tests.hostile.checks import assert_exact, assert_own_copy, canonical
from tests.hostile.exceptions import ExcSpec, assert_exception_kept, assert_traceback_kept
from tests.hostile.payloads import (
    UnreadableMapping,
    as_dict,
    payload_size,
    payloads,
    poisoned_payloads,
    tree_refused,
)

Workflow = Callable[[dict[str, Any], list[str]], Any]

#: What a failing workflow was given: payloads, poisoned ones, unreadable ones, None.
workflow_tasks = st.one_of(payloads, poisoned_payloads, st.builds(UnreadableMapping), st.none())
#: How the failing workflow is written: async, sync (run in a thread), an object with an
#: async ``__call__``, or wrapped by ``execute_with_dlq`` twice.
how_called = st.sampled_from(["async", "sync", "object", "nested"])


def raising(exc: BaseException, how: str) -> Workflow:
    """A workflow function that raises ``exc``: async, sync (in a thread), or an
    object with an async ``__call__``."""
    if how == "sync":

        def sync_workflow(task: dict[str, Any], repos: list[str]) -> None:
            raise exc

        return sync_workflow
    if how == "object":

        class AsyncCallable:
            async def __call__(self, task: dict[str, Any], repos: list[str]) -> None:
                raise exc

        return AsyncCallable()

    async def async_workflow(task: dict[str, Any], repos: list[str]) -> None:
        raise exc

    return async_workflow


def wrapped_workflow(
    dlq: DeadLetterQueue, exc: BaseException, how: str, task_id: str | None
) -> Workflow:
    """:func:`raising`, or (``nested``) a workflow that runs an async one raising ``exc``
    through ``execute_with_dlq`` itself: the outer wrapper must see it stored already."""
    if how != "nested":
        return raising(exc, how)
    inner = raising(exc, "async")

    async def outer_workflow(task: dict[str, Any], repos: list[str]) -> None:
        await dlq.execute_with_dlq(inner, task, repos, task_id=task_id)

    return outer_workflow


async def run_wrapped(
    dlq: DeadLetterQueue, fn: Workflow, task: object, task_id: str | None, **options: Any
) -> BaseException:
    """What ``execute_with_dlq`` raised (it must raise)."""
    try:
        await dlq.execute_with_dlq(fn, cast(Any, task), task_id=task_id, **options)
    except BaseException as exc:
        return exc
    raise AssertionError("execute_with_dlq returned although the workflow raised")


async def check_wrapped_failure(
    dlq: DeadLetterQueue, spec: ExcSpec, task: object, task_id: str | None, how: str
) -> None:
    """The very exception comes back; it is stored once (or, refused, it says why)."""
    exc = spec.build()
    caught = await run_wrapped(dlq, wrapped_workflow(dlq, exc, how, task_id), task, task_id)
    assert caught is exc
    assert type(caught) is type(exc)
    given = as_dict(task)
    refused = given is None or tree_refused(given, dlq.limits.max_payload_depth)
    if not refused and given is not None:
        refused = payload_size(given, None, []) > dlq.limits.max_payload_bytes
    stored = await dlq.list_tasks(limit=10)
    if refused:
        assert stored == []
        if spec.markable:
            assert getattr(caught, "dlq_task_id", "unset") is None
            assert isinstance(getattr(caught, "dlq_error", None), DLQError)
            assert_noted(spec, caught, "mahavishnu-dlq could not store this failure")
        return
    # an exception that refuses marks cannot tell the outer wrapper it was stored: under
    # two generated ids it is stored twice (under one id, the second merges)
    twice = how == "nested" and not spec.markable and task_id is None
    assert len(stored) == (2 if twice else 1), [record.task_id for record in stored]
    limit = dlq.limits.max_error_bytes
    for record in stored:
        if task_id is not None:
            assert record.task_id == task_id
        assert_exact(record, await dlq.get_task(record.task_id))
        assert canonical(record.task) == canonical(given)
        assert_own_copy(record.task, task)
        assert_exception_kept(spec, exc, record.error, record.error_type, limit)
        assert_traceback_kept(replace(spec, raised=True), record.traceback, limit)
    if spec.markable:
        [record] = stored
        assert getattr(caught, "dlq_task_id", None) == record.task_id
        assert getattr(caught, "dlq_error", "unset") is None
        assert_noted(spec, caught, f"stored in the dead-letter queue as task {record.task_id}")


def assert_noted(spec: ExcSpec, exc: BaseException, text: str) -> None:
    """``exc`` carries a note starting with ``text`` (unless its ``__notes__`` is not a
    list, which refuses notes)."""
    if spec.kind in ("any_attribute", "getattribute_raises"):
        return  # its __notes__ reads as a string, or cannot be read: no note can be added
    notes = getattr(exc, "__notes__", None)
    if spec.kind == "notes" and not isinstance(spec.extra, list):
        assert notes is spec.extra  # left as it was
        return
    assert isinstance(notes, list)
    assert any(isinstance(note, str) and note.startswith(text) for note in notes), notes
