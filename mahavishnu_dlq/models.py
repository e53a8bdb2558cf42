"""The data model: failed tasks, their attempts and the enums that describe them.

Data only, no I/O. The string values of the enums and the field names of
:class:`FailedTask` are the persisted format: changing them is a migration.
A :class:`FailedTask` is immutable; the queue makes a new one for every change
(``evolve(...)``), so a record handed to a caller can never be
changed behind its back.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from enum import Enum
from typing import Any, Generic, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mahavishnu_dlq.limits import is_valid_unicode
from mahavishnu_dlq.states import (
    AttemptOutcome,
    DeadLetterStatus,
    DLQIntegrationStrategy,
    ErrorCategory,
    RetryPolicy,
)

M = TypeVar("M", bound=BaseModel)

__all__ = [
    "OPEN_STATUSES",
    "Attempt",
    "AttemptOutcome",
    "DLQIntegrationStrategy",
    "DeadLetterStatus",
    "ErrorCategory",
    "FailedTask",
    "ReplayItem",
    "ReplayReport",
    "RetryPolicy",
    "TaskFilter",
    "TaskPage",
    "decode_cursor",
    "encode_cursor",
    "encode_json",
]


def _make_encoder() -> Callable[[Any], str]:
    plain = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
    if c_make_encoder is None:  # pragma: no cover - interpreters without the C accelerator
        return plain.encode
    # One C encoder made once: JSONEncoder.encode builds a new one on every call.
    # No circular-reference bookkeeping: a cycle ends in RecursionError instead.
    fast = c_make_encoder(
        None, plain.default, json.encoder.encode_basestring, None, ":", ",", False, False, False
    )

    def encode(value: Any) -> str:
        if isinstance(value, str):
            return plain.encode(value)
        return "".join(fast(value, 0))

    return encode


#: Compact JSON (no spaces, UTF-8 kept, NaN refused) — the stored form of payloads.
encode_json: Callable[[Any], str] = _make_encoder()


#: Statuses that count toward ``max_size``: the task still needs something done.
OPEN_STATUSES = frozenset(
    {DeadLetterStatus.PENDING, DeadLetterStatus.RETRYING, DeadLetterStatus.EXHAUSTED}
)


class Attempt(BaseModel):
    """One retry attempt of a task."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    number: int = Field(ge=1, description="1 for the first retry, 2 for the second …")
    started_at: datetime
    finished_at: datetime | None = None
    outcome: AttemptOutcome = AttemptOutcome.RUNNING
    error: str | None = None
    error_type: str | None = None
    worker: str = ""
    trigger: str = Field(default="processor", description="'processor' or 'manual'")

    @classmethod
    def trusted(cls, values: dict[str, Any]) -> Attempt:
        """Build from values the library produced itself: every field, right types."""
        return _trusted(cls, values, _ALL_ATTEMPT_FIELDS)

    def evolve(self, **changes: Any) -> Attempt:
        """A copy with ``changes`` applied (trusted values; no validation)."""
        values = self.__dict__.copy()
        values.update(changes)
        return _trusted(Attempt, values, _ALL_ATTEMPT_FIELDS)


_ALL_ATTEMPT_FIELDS = set(Attempt.model_fields)


def _trusted(cls: type[M], values: dict[str, Any], fields_set: set[str]) -> M:
    """What ``model_construct`` does, without its per-field bookkeeping."""
    model = cls.__new__(cls)
    _set = object.__setattr__
    _set(model, "__dict__", values)
    _set(model, "__pydantic_fields_set__", fields_set)
    _set(model, "__pydantic_extra__", None)
    _set(model, "__pydantic_private__", None)
    return model


class FailedTask(BaseModel):
    """A failed workflow execution held by the dead-letter queue."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=False)

    # Not a field: the compact JSON of ``task`` and of ``metadata`` when the record
    # was built from them (enqueue encodes them once to measure the payload), so a
    # store that keeps payloads encoded need not encode them again. Never compared,
    # copied or serialised; None when unknown.
    # (No annotation: pydantic would make it a private attribute, which is compared.)
    __slots__ = ("_payload_json",)

    task_id: str = Field(min_length=1, max_length=512)
    workflow: str = ""
    task: dict[str, Any] = Field(default_factory=dict)
    repos: list[str] = Field(default_factory=list)

    error: str = ""
    error_type: str = ""
    error_category: ErrorCategory = ErrorCategory.PERMANENT
    error_fingerprint: str = ""
    traceback: str | None = None
    last_error: str | None = None
    last_error_type: str | None = None

    attempts: list[Attempt] = Field(default_factory=list)
    retry_count: int = Field(default=0, ge=0)
    max_retries: int = Field(default=3, ge=0)
    total_attempts: int = Field(default=1, ge=0)
    retry_policy: RetryPolicy = RetryPolicy.EXPONENTIAL
    next_retry_at: datetime | None = None
    status: DeadLetterStatus = DeadLetterStatus.PENDING
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None

    metadata: dict[str, Any] = Field(default_factory=dict)

    failed_at: datetime
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None = None
    archived_at: datetime | None = None
    #: the bulk job (:mod:`mahavishnu_dlq.jobs`) that last acted on this task: a job
    #: taken over after a crash knows what it already did
    last_job_id: str | None = None

    @field_validator(
        "failed_at",
        "created_at",
        "updated_at",
        "completed_at",
        "archived_at",
        "next_retry_at",
        "lease_expires_at",
    )
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("timestamps must be timezone-aware (UTC)")
        return value.astimezone(timezone.utc)

    @property
    def retries_left(self) -> int:
        """How many automatic retries remain."""
        return max(0, self.max_retries - self.retry_count)

    @property
    def is_open(self) -> bool:
        """True while the task still needs something done (counts toward ``max_size``)."""
        return self.status in OPEN_STATUSES

    def lease_active(self, now: datetime) -> bool:
        """True while a worker holds an unexpired lease on this task."""
        return (
            self.status is DeadLetterStatus.RETRYING
            and self.lease_expires_at is not None
            and self.lease_expires_at > now
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible dict (timestamps as ISO 8601 strings)."""
        return self.model_dump(mode="json")

    @classmethod
    def trusted(
        cls, values: dict[str, Any], payload_json: tuple[str, str] | None = None
    ) -> FailedTask:
        """Build from values the library produced itself: every field, right types.

        What ``model_construct`` does, without its per-field bookkeeping: the hot
        paths (enqueue, store reads, claims) build several records per operation.
        ``values`` is taken over, not copied. ``payload_json`` is the compact JSON
        of ``values["task"]`` and ``values["metadata"]`` when the caller has it.
        """
        model = _trusted(cls, values, _ALL_FIELDS_SET)
        object.__setattr__(model, "_payload_json", payload_json)
        return model

    def payload_json(self) -> tuple[str, str] | None:
        """The compact JSON of ``task`` and ``metadata`` if known when built, else None."""
        known: tuple[str, str] | None = getattr(self, "_payload_json", None)
        return known

    def keep_payload_json(self, payload_json: tuple[str, str]) -> FailedTask:
        """Remember the JSON text of ``task`` and ``metadata`` (as read from a stored
        document: the same values), so writing this record does not encode them again;
        ``self``."""
        object.__setattr__(self, "_payload_json", payload_json)
        return self

    def evolve(self, **changes: Any) -> FailedTask:
        """A copy with ``changes`` applied (trusted values; no validation); the JSON of
        ``task`` and ``metadata`` is kept when neither changes."""
        values = self.__dict__.copy()
        values.update(changes)
        kept = None if "task" in changes or "metadata" in changes else self.payload_json()
        return FailedTask.trusted(values, kept)


#: Every record built by :meth:`FailedTask.trusted` has all fields set; they share
#: this one set (pydantic copies it before any change, in ``model_copy``).
_ALL_FIELDS_SET = set(FailedTask.model_fields)


def _as_tuple(value: Any) -> tuple[Any, ...] | None:
    if value is None:
        return None
    if isinstance(value, (str, Enum)):
        return (value,)
    if isinstance(value, (bytes, bytearray, Mapping)) or not isinstance(value, Iterable):
        raise ValueError(f"must be one value or a list of values, got {type(value).__name__}")  # noqa: TRY004 - pydantic reports ValueError as a validation error
    return tuple(value)


class FilterableTask(Protocol):
    """The fields :meth:`TaskFilter.matches` reads (records and store rows have them;
    a row may hold a status or category as its string value, which compares equal)."""

    @property
    def task_id(self) -> str: ...
    @property
    def workflow(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def error_category(self) -> str: ...
    @property
    def error(self) -> str: ...
    @property
    def error_type(self) -> str: ...
    @property
    def last_error(self) -> str | None: ...
    @property
    def error_fingerprint(self) -> str: ...
    @property
    def failed_at(self) -> datetime: ...
    @property
    def updated_at(self) -> datetime: ...


class TaskFilter(BaseModel):
    """Which tasks to list, replay or purge. Every field narrows the selection."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    status: tuple[DeadLetterStatus, ...] | None = None
    error_category: tuple[ErrorCategory, ...] | None = None
    workflow: tuple[str, ...] | None = None
    since: datetime | None = Field(default=None, description="failed_at >= since")
    until: datetime | None = Field(default=None, description="failed_at < until")
    updated_before: datetime | None = Field(
        default=None, description="updated_at < updated_before (what purge selects by age)"
    )
    text: str | None = Field(
        default=None,
        description="case-insensitive substring of the id, workflow, error, error type "
        "or fingerprint",
    )
    fingerprint: str | None = None

    @field_validator("status", "error_category", "workflow", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> tuple[Any, ...] | None:
        return _as_tuple(value)

    @field_validator("text", "fingerprint", mode="before")
    @classmethod
    def _a_string(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, str):
            raise ValueError(f"must be a string, got {type(value).__name__}")
        return value

    @field_validator("since", "until", "updated_before", mode="before")
    @classmethod
    def _a_datetime(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, datetime):
            raise ValueError(f"must be a timezone-aware datetime, got {type(value).__name__}")
        return value

    @field_validator("workflow", "text", "fingerprint")
    @classmethod
    def _valid_text(cls, value: Any) -> Any:
        texts = value if isinstance(value, tuple) else (value,)
        for text in texts:
            if isinstance(text, str) and not is_valid_unicode(text):
                raise ValueError(f"{text!r} is not valid Unicode (a lone surrogate)")
        return value

    @field_validator("since", "until", "updated_before")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("since/until/updated_before must be timezone-aware (UTC)")
        return value

    def matches(self, task: FilterableTask) -> bool:
        """True when ``task`` (a record, or anything with its fields) is selected."""
        if self.status is not None and task.status not in self.status:
            return False
        if self.error_category is not None and task.error_category not in self.error_category:
            return False
        if self.workflow is not None and task.workflow not in self.workflow:
            return False
        if self.since is not None and task.failed_at < self.since:
            return False
        if self.until is not None and task.failed_at >= self.until:
            return False
        if self.updated_before is not None and task.updated_at >= self.updated_before:
            return False
        if self.fingerprint is not None and task.error_fingerprint != self.fingerprint:
            return False
        if self.text:
            needle = self.text.casefold()
            haystack = (
                task.task_id,
                task.workflow,
                task.error,
                task.error_type,
                task.last_error or "",
                task.error_fingerprint,
            )
            if not any(needle in field.casefold() for field in haystack):
                return False
        return True


T = TypeVar("T")


class TaskPage(list[T], Generic[T]):
    """A page of results: a plain list plus ``cursor`` for the next page (None at the end)."""

    def __init__(self, items: Iterable[T] = (), cursor: str | None = None) -> None:
        super().__init__(items)
        self.cursor = cursor


def encode_cursor(sort_key: int, task_id: str) -> str:
    """An opaque, URL-safe cursor for listing order (failed_at desc, task_id asc)."""
    raw = json.dumps([sort_key, task_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


#: Longest cursor :func:`decode_cursor` reads: the cursor of the longest id (512
#: astral characters, each 12 characters of ASCII JSON) is 8,226 characters.
MAX_CURSOR_CHARS = 10_000
_SORT_KEY_LIMIT = 2**63 - 1  # a sort key is a long (microseconds) to OpenSearch


def decode_cursor(cursor: str) -> tuple[int, str]:
    """Inverse of :func:`encode_cursor`; ``ValueError`` names a malformed cursor.

    A cursor comes from outside (a command line, a URL), so it is checked before it
    is decoded: ASCII, at most :data:`MAX_CURSOR_CHARS` characters, and JSON of an
    integer sort key (64-bit) and a string; deep nesting is refused, not recursed.
    """
    shown = repr(cursor) if len(cursor) <= 80 else f"{cursor[:60]!r}… ({len(cursor)} chars)"
    if len(cursor) > MAX_CURSOR_CHARS:
        raise ValueError(f"malformed cursor {shown}: longer than {MAX_CURSOR_CHARS} characters")
    if not cursor.isascii():
        raise ValueError(f"malformed cursor {shown}: a cursor is ASCII")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        key, task_id = json.loads(raw)
    except (binascii.Error, ValueError, TypeError, RecursionError) as exc:
        raise ValueError(f"malformed cursor {shown}") from exc
    if (
        type(key) is not int
        or not isinstance(task_id, str)
        or not -_SORT_KEY_LIMIT <= key <= _SORT_KEY_LIMIT
    ):
        raise ValueError(f"malformed cursor {shown}")
    return key, task_id


class ReplayItem(BaseModel):
    """What replay did with one task."""

    model_config = ConfigDict(frozen=True)

    task_id: str
    outcome: str = Field(
        description="'replayed', 'would_replay', 'succeeded', 'failed', 'dispatched' or 'skipped'"
    )
    detail: str = ""


class ReplayReport(BaseModel):
    """The result of :meth:`DeadLetterQueue.replay`."""

    dry_run: bool
    matched: int = 0
    replayed: int = 0
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    items: list[ReplayItem] = Field(default_factory=list)

    @property
    def failures(self) -> list[ReplayItem]:
        """The items that could not be replayed, with their reason."""
        return [item for item in self.items if item.outcome in {"failed", "skipped"}]
