"""Capturing failures: the record a failure becomes, and storing it.

:meth:`DeadLetterQueue.enqueue` and :meth:`DeadLetterQueue.enqueue_many` run
here. Capturing is on the failure path of every workflow, so it is built to be
cheap: the payload is encoded once (the size check and the memory store share
the encoding), classification and policy resolution are cached, the first
retry decision is computed once per policy, and the failure context has its
static part encoded once per process. ``enqueue_many`` shares the clock
reading, the failure context, the ``max_size`` estimate and the store call
among a batch. The ``max_size`` check and the ``on_full`` policy are
:class:`~mahavishnu_dlq.room.Room`'s.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from mahavishnu_dlq import lifecycle
from mahavishnu_dlq.classifier import error_type_name
from mahavishnu_dlq.clock import EPOCH
from mahavishnu_dlq.context import exception_message, failure_context_json, format_traceback
from mahavishnu_dlq.errors import (
    DLQError,
    InvalidPayloadError,
    PayloadTooLargeError,
)
from mahavishnu_dlq.limits import (
    MAX_TYPE_CHARS,
    bound_text,
    check_id,
    check_name,
    check_numbers,
    check_tree,
    clean_text,
    find_invalid_text,
    shown,
)
from mahavishnu_dlq.models import (
    DeadLetterStatus,
    ErrorCategory,
    FailedTask,
    RetryPolicy,
    encode_json,
)
from mahavishnu_dlq.policy import (
    Jitter,
    PolicyParams,
    RetryState,
    decide,
    retry_after_hint,
)
from mahavishnu_dlq.printable import library_logger
from mahavishnu_dlq.storage.base import Mutation

if TYPE_CHECKING:
    from mahavishnu_dlq.queue import DeadLetterQueue

__all__ = ["Capture", "Failure"]

_log = library_logger("mahavishnu_dlq.queue")

T = TypeVar("T")
_FirstPlan = tuple[PolicyParams, DeadLetterStatus, "timedelta | None"]
_CACHE_LIMIT = 4096


@dataclass(frozen=True, slots=True)
class Failure:
    """One failure for :meth:`DeadLetterQueue.enqueue_many`: the arguments of
    :meth:`DeadLetterQueue.enqueue`, with the same meaning and defaults."""

    task_id: str
    task: Mapping[str, Any]
    repos: Iterable[str] | None = None
    error: BaseException | str = ""
    retry_policy: RetryPolicy | str | None = None
    max_retries: int | None = None
    metadata: Mapping[str, Any] | None = None
    error_category: ErrorCategory | str | None = None
    workflow: str | None = None


class Capture:
    """Builds and stores the records of one queue's failures (with its caches)."""

    def __init__(self, dlq: DeadLetterQueue) -> None:
        self._dlq = dlq
        self._text_errors: dict[str, tuple[ErrorCategory, str]] = {}
        self._first_plans: dict[int, _FirstPlan] = {}
        self._room = dlq._room  # the max_size estimate and on_full (mahavishnu_dlq.room)

    # -- building ----------------------------------------------------------------------

    def build(
        self,
        task_id: str,
        task: Mapping[str, Any],
        repos: Iterable[str] | None,
        error: BaseException | str,
        *,
        retry_policy: RetryPolicy | str | None = None,
        max_retries: int | None = None,
        metadata: Mapping[str, Any] | None = None,
        error_category: ErrorCategory | str | None = None,
        workflow: str | None = None,
        now: datetime | None = None,
        context: tuple[dict[str, Any], str] | None = None,
    ) -> FailedTask:
        """The record a failure becomes, scheduled by its policy (nothing is stored).

        ``now`` and ``context`` (the failure context and its JSON) default to fresh
        ones; a batch passes its own.
        """
        dlq = self._dlq
        limits = dlq.limits
        task_id = check_id(task_id)
        if max_retries is not None and (
            isinstance(max_retries, bool) or not isinstance(max_retries, int)
        ):
            raise TypeError(f"max_retries must be an int, got {type(max_retries).__name__}")
        if max_retries is not None and not 0 <= max_retries <= 1000:
            raise ValueError(f"max_retries must be between 0 and 1000, got {max_retries}")
        workflow = check_name(task_id, "workflow", "" if workflow is None else workflow)
        repo_list = _repos(task_id, repos)
        task_copy, meta, payload_json = self._payload(task_id, task, metadata, context, repo_list)
        if now is None:
            now = dlq.clock.now()
        hint: float | None = None
        if isinstance(error, BaseException):
            error_type, message, category, fingerprint, trace, hint = self._read_exception(
                error, error_category
            )
        else:
            error_type = ""
            message = error if error.__class__ is str else _text_of(error)
            known = self._text_errors.get(message)
            if known is None:
                if len(self._text_errors) >= _CACHE_LIMIT:
                    self._text_errors.clear()
                known = (dlq.classifier.classify(message), dlq.classifier.fingerprint(message))
                self._text_errors[message] = known
            category = ErrorCategory(error_category) if error_category else known[0]
            fingerprint = known[1]
            trace = None
        limit = limits.max_error_bytes
        message = bound_text(message, limit)
        if trace is not None:
            trace = bound_text(trace, limit)
        params = dlq.policies.resolve(
            workflow=workflow,
            category=category,
            policy=RetryPolicy(retry_policy) if retry_policy else None,
            max_retries=max_retries,
        )
        status, next_retry_at = self._schedule(params, now, hint)
        return FailedTask.trusted(
            {
                "task_id": task_id,
                "workflow": workflow,
                "task": task_copy,
                "repos": repo_list,
                "error": message,
                "error_type": error_type,
                "error_category": category,
                "error_fingerprint": fingerprint,
                "traceback": trace,
                "last_error": message,
                "last_error_type": error_type,
                "attempts": [],
                "retry_count": 0,
                "max_retries": params.max_retries,
                "total_attempts": 1,
                "retry_policy": params.policy,
                "next_retry_at": next_retry_at,
                "status": status,
                "lease_owner": None,
                "lease_expires_at": None,
                "metadata": meta,
                "failed_at": now,
                "created_at": now,
                "updated_at": now,
                "completed_at": None,
                "archived_at": None,
                "last_job_id": None,
            },
            payload_json,
        )

    def _schedule(
        self, params: PolicyParams, now: datetime, hint: float | None
    ) -> tuple[DeadLetterStatus, datetime | None]:
        """Status and first retry time of a new failure under ``params``."""
        dlq = self._dlq
        if hint is None and params.jitter is Jitter.NONE:
            # The first decision depends only on the params then: computed once each
            # (params are cached by the policy book, so they are known by identity).
            plan = self._first_plans.get(id(params))
            if plan is None or plan[0] is not params:
                plan = first_plan(params)
                if len(self._first_plans) >= 256:
                    self._first_plans.clear()
                self._first_plans[id(params)] = plan
            if plan[2] is None:
                return plan[1], None
            try:
                return plan[1], now + plan[2]
            except OverflowError:  # past the year 9999: as good as never
                return DeadLetterStatus.EXHAUSTED, None
        state = RetryState(retry_count=0, first_failed_at=now, now=now, retry_after=hint)
        schedule = lifecycle.schedule(decide(params, state, dlq.rng))
        return schedule["status"], schedule["next_retry_at"]

    def _read_exception(
        self, error: BaseException, error_category: ErrorCategory | str | None
    ) -> tuple[str, str, ErrorCategory, str, str | None, float | None]:
        """(error type, message, category, fingerprint, traceback, delay hint) of ``error``.

        An exception is whatever the workflow raised: one whose attributes, ``str``
        or ``__getattribute__`` raise is still captured, each part that can be read
        kept (the rest replaced by what stands in for it)."""
        classifier = self._dlq.classifier
        given = ErrorCategory(error_category) if error_category else None
        error_type = error_type_name(error)[:MAX_TYPE_CHARS]
        message = exception_message(error) or error_type
        category = given or _guarded(classifier.classify, error, ErrorCategory.PERMANENT)
        fingerprint = _guarded(classifier.fingerprint, error, None)
        if fingerprint is None:  # its traceback or chain cannot be walked: type and text
            fingerprint = classifier.fingerprint(message, error_type=error_type)
        trace = _guarded(format_traceback, error, None)
        return error_type, message, category, fingerprint, trace, retry_after_hint(error)

    def _payload(
        self,
        task_id: str,
        task: Any,
        metadata: Mapping[str, Any] | None,
        context: tuple[dict[str, Any], str] | None,
        repos: list[str],
    ) -> tuple[dict[str, Any], dict[str, Any], tuple[str, str]]:
        """Copies of ``task`` and ``metadata`` (the failure context added) and their
        compact JSON, encoded once: the checks and the store both use it.

        Checked (:mod:`mahavishnu_dlq.limits`): both are JSON objects with string keys,
        nested at most ``max_payload_depth`` levels, holding valid Unicode only, and
        with ``repos`` at most ``max_payload_bytes`` of UTF-8 JSON."""
        task, meta = _copies(task_id, task, metadata)
        limits = self._dlq.limits
        task_nested = check_tree(task_id, "task", task, limits.max_payload_depth)
        meta_nested = bool(meta) and check_tree(task_id, "metadata", meta, limits.max_payload_depth)
        try:
            task_json = encode_json(task)
            user_json = encode_json(meta) if meta else ""
        except (TypeError, ValueError, RecursionError) as exc:
            raise InvalidPayloadError(task_id, f"task/metadata is not JSON: {exc}") from exc
        check_numbers(task_id, "task", task, task_json)
        check_numbers(task_id, "metadata", meta, user_json)
        size = _utf8_size(task_id, "task", task, task_json) + _utf8_size(
            task_id, "metadata", meta, user_json
        )
        if repos:
            size += len(encode_json(repos).encode())  # each name is valid Unicode already
        limit = limits.max_payload_bytes
        if size > limit:
            raise PayloadTooLargeError(task_id, size, limit, what="input, metadata and repos")
        # what the record holds is what is stored: a nested payload is decoded from its
        # JSON (tuples become lists), so the caller's containers are never shared
        if task_nested:
            task = json.loads(task_json)
        if meta_nested:
            meta = json.loads(user_json)
        if context is None:
            ctx, ctx_json = failure_context_json()
        else:
            ctx, ctx_json = context[0].copy(), context[1]
        if "failure_context" in meta:  # ours replaces a caller's, last like in the JSON
            del meta["failure_context"]
            user_json = encode_json(meta) if meta else ""
        meta["failure_context"] = ctx
        if user_json:
            meta_json = f'{user_json[:-1]},"failure_context":{ctx_json}}}'
        else:
            meta_json = f'{{"failure_context":{ctx_json}}}'
        return task, meta, (task_json, meta_json)

    # -- storing -----------------------------------------------------------------------

    async def enqueue(self, record: FailedTask) -> FailedTask:
        """Store one built record (see :meth:`DeadLetterQueue.enqueue`)."""
        dlq = self._dlq
        room = self._room
        open_now = room.fresh()  # no coroutine on the common path
        if open_now is None:
            open_now = await room.estimate()
        if open_now >= dlq.max_size and dlq.on_full == "archive_oldest":
            open_now = await room.make_room(open_now)
        full = open_now >= dlq.max_size
        duplicate = False

        def enqueue_into(current: FailedTask | None) -> FailedTask:
            nonlocal duplicate
            duplicate = current is not None and current.is_open
            if full and not duplicate:
                raise room.full_error(open_now)
            return lifecycle.merge_failure(current, record)

        task_id = record.task_id
        tracer = dlq.telemetry.tracer()
        if not full:
            room.reserve()  # counted until stored: concurrent enqueues see it
        try:
            if tracer is None:
                stored = await dlq.store.mutate(task_id, enqueue_into)
            else:
                attributes = {
                    "dlq.task_id": task_id,
                    "dlq.workflow": record.workflow,
                    "dlq.category": record.error_category.value,
                    "dlq.backend": dlq.store.backend,
                }
                with tracer.start_as_current_span("dlq.enqueue", attributes=attributes) as span:
                    stored = await dlq.traced_store.mutate(task_id, enqueue_into)
                    span.set_attribute("dlq.status", stored.status.value)
        finally:
            if not full:
                room.release()
        if self._stored(stored, duplicate=duplicate):
            await dlq.exhausted(stored)
        if stored.next_retry_at is not None and dlq._wakeup is not None:
            dlq._wakeup()
        return stored

    async def enqueue_many(self, failures: Iterable[Failure]) -> list[FailedTask | DLQError]:
        """Store a batch (see :meth:`DeadLetterQueue.enqueue_many`)."""
        dlq = self._dlq
        items = list(failures)
        results: list[FailedTask | DLQError | None] = [None] * len(items)
        now = dlq.clock.now()
        context = failure_context_json()
        records: list[tuple[int, FailedTask]] = []
        for index, failure in enumerate(items):
            if not isinstance(failure, Failure):
                raise TypeError(
                    f"enqueue_many takes Failure items; item {index} is {type(failure).__name__}"
                )
            try:
                record = self.build(
                    failure.task_id,
                    failure.task,
                    failure.repos,
                    failure.error,
                    retry_policy=failure.retry_policy,
                    max_retries=failure.max_retries,
                    metadata=failure.metadata,
                    error_category=failure.error_category,
                    workflow=failure.workflow,
                    now=now,
                    context=context,
                )
            except DLQError as exc:
                results[index] = exc
            except (ValueError, TypeError) as exc:  # an unknown policy or category, a
                # max_retries out of range, an id that is not a string: this item only
                task_id = failure.task_id
                name = clean_text(task_id) if isinstance(task_id, str) else shown(task_id)
                results[index] = InvalidPayloadError(name, str(exc))
            else:
                records.append((index, record))
        if records:
            await self._store_batch(records, results)
        done: list[FailedTask | DLQError] = []
        for result in results:
            assert result is not None  # every slot is filled by now  # noqa: S101
            done.append(result)
        return done

    async def _store_batch(
        self,
        records: list[tuple[int, FailedTask]],
        results: list[FailedTask | DLQError | None],
    ) -> None:
        dlq = self._dlq
        estimate = self._room
        open_now = await estimate.estimate()
        if open_now + len(records) > dlq.max_size and dlq.on_full == "archive_oldest":
            open_now = await estimate.make_room(open_now, len(records))
        room = max(0, dlq.max_size - open_now)
        taken: set[int] = set()  # items counted as new against ``room``
        duplicate: dict[int, bool] = {}

        def into(index: int, record: FailedTask) -> Mutation:
            def enqueue_into(current: FailedTask | None) -> FailedTask:
                duplicate[index] = is_open = current is not None and current.is_open
                if not is_open and index not in taken:
                    if len(taken) >= room:
                        raise estimate.full_error(dlq.max_size - room + len(taken))
                    taken.add(index)
                return lifecycle.merge_failure(current, record)

            return enqueue_into

        items = [(record.task_id, into(index, record)) for index, record in records]
        tracer = dlq.telemetry.tracer()
        reserved = min(room, len(items))  # counted until stored, like enqueue's
        estimate.reserve(reserved)
        try:
            if tracer is None:
                outcomes = await dlq.store.mutate_many(items)
            else:
                attributes = {"dlq.items": len(items), "dlq.backend": dlq.store.backend}
                with tracer.start_as_current_span("dlq.enqueue_many", attributes=attributes):
                    outcomes = await dlq.traced_store.mutate_many(items)
        finally:
            estimate.release(reserved)
        wake = False
        for (index, _), outcome in zip(records, outcomes, strict=True):
            if isinstance(outcome, DLQError):
                results[index] = outcome
            elif isinstance(outcome, Exception):
                raise outcome
            else:
                results[index] = outcome
                if self._stored(outcome, duplicate=duplicate.get(index, False)):
                    await dlq.exhausted(outcome)
                wake = wake or outcome.next_retry_at is not None
        if wake and dlq._wakeup is not None:
            dlq._wakeup()

    def _stored(self, stored: FailedTask, *, duplicate: bool) -> bool:
        """Counters, metrics and the log line of one stored failure; True when it ran
        out of retries at once (the caller then runs the ``on_exhausted`` hooks)."""
        dlq = self._dlq
        exhausted = False
        # Decided by what was stored before, not by comparing timestamps: under a
        # coarse (or fake) clock a duplicate has the same timestamps as the original.
        if duplicate:
            dlq.lifetime["deduplicated"] += 1
        else:
            dlq.lifetime["enqueued_total"] += 1
            self._room.added()
            dlq.telemetry.count("enqueued", stored)
            if stored.status is DeadLetterStatus.EXHAUSTED:
                dlq.lifetime["exhausted"] += 1
                dlq.telemetry.count("exhausted", stored)
                exhausted = True
        if _log.isEnabledFor(logging.INFO):
            _log.info(
                "dlq.enqueue %s (%s, %s)",
                stored.task_id,
                stored.error_category.value,
                stored.status.value,
                extra={
                    "action": "dlq.enqueue",
                    "task_id": stored.task_id,
                    "workflow": stored.workflow,
                    "error_category": stored.error_category.value,
                    "status": stored.status.value,
                },
            )
        return exhausted


def _repos(task_id: str, repos: Iterable[str] | None) -> list[str]:
    """The repository names as a new list of valid Unicode strings (a lone string would
    be split into letters; other values are taken by their ``str``)."""
    if repos is None:
        return []
    if isinstance(repos, (str, bytes)) or not isinstance(repos, Iterable):
        raise InvalidPayloadError(
            task_id, f"'repos' must be a list of names, got {type(repos).__name__}"
        )
    try:
        names = [
            name if name.__class__ is str else "None" if name is None else _text_of(name)
            for name in repos
        ]
    except Exception as exc:
        raise InvalidPayloadError(
            task_id, f"'repos' could not be read: {type(exc).__name__}: {exc}"
        ) from exc
    for index, name in enumerate(names):
        if not name.isascii():
            check_name(task_id, f"repos[{index}]", name, max_chars=len(name))
    return names


def _copies(
    task_id: str, task: Any, metadata: Mapping[str, Any] | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Plain-dict copies of ``task`` and ``metadata`` (mappings, or refused)."""
    if not isinstance(task, Mapping):
        raise InvalidPayloadError(
            task_id, f"'task' must be a JSON object (a mapping), got {type(task).__name__}"
        )
    if metadata is not None and not isinstance(metadata, Mapping):
        raise InvalidPayloadError(
            task_id,
            f"'metadata' must be a JSON object (a mapping), got {type(metadata).__name__}",
        )
    try:
        task = dict(task)
        meta = dict(metadata) if metadata else {}
    except Exception as exc:
        raise InvalidPayloadError(
            task_id, f"task/metadata could not be read: {type(exc).__name__}: {exc}"
        ) from exc
    return task, meta


def _text_of(value: object) -> str:
    """``value`` as a plain string: a string's own characters (a subclass's ``__str__``
    is not asked), else ``str(value)``, else a stand-in when that raises."""
    if isinstance(value, str):
        return str.__str__(value)
    if value is None:
        return ""
    try:
        text = str(value)
    except Exception:  # noqa: BLE001 - a hostile __str__ must not lose the failure
        return f"<{type(value).__name__} str() failed>"
    return text if text.__class__ is str else str.__str__(text)


def _guarded(read: Callable[[BaseException], T], error: BaseException, default: T) -> T:
    """``read(error)``, or ``default`` when a hostile exception makes it raise."""
    try:
        return read(error)
    except Exception:  # noqa: BLE001 - a part that cannot be read stands in, no more
        _log.debug("dlq.enqueue: part of a %s could not be read", type(error).__name__)
        return default


def _utf8_size(task_id: str, field: str, value: Any, text: str) -> int:
    """The UTF-8 size of ``text`` (the JSON of ``value``); ``InvalidPayloadError`` naming
    where a lone surrogate sits, which UTF-8 cannot encode."""
    if text.isascii():
        return len(text)
    try:
        return len(text.encode())
    except UnicodeEncodeError:
        raise find_invalid_text(task_id, field, value) or InvalidPayloadError(
            task_id, f"{field} is not valid Unicode (a lone surrogate)"
        ) from None


def first_plan(params: PolicyParams) -> _FirstPlan:
    """What :func:`decide` says right after the first failure, without jitter or hint:
    the status and how long until the first retry (None: no automatic retry).

    Then it depends on ``params`` alone (no time has passed since the failure), so
    the hot path of :meth:`DeadLetterQueue.enqueue` computes it once per params.
    """
    decision = decide(params, RetryState(retry_count=0, first_failed_at=EPOCH, now=EPOCH))
    schedule = lifecycle.schedule_action(decision.action, EPOCH)
    wait = None
    if schedule["next_retry_at"] is not None and decision.delay is not None:
        wait = timedelta(seconds=decision.delay)
    return params, schedule["status"], wait
