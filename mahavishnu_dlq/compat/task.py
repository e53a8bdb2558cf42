"""The original's ``FailedTask``: the native record with the original's constructor.

It *is* a :class:`mahavishnu_dlq.models.FailedTask` (every native field, ``to_dict``),
built as the original's dataclass was — ``FailedTask(task_id, task, repos, error,
failed_at, retry_count=0, ...)`` positionally or by keyword — and read back from the
original's dicts with :meth:`FailedTask.from_dict`: ``created_at`` / ``updated_at``
default to ``failed_at``, ``error_category=None`` means permanent (the native default),
and timestamps may be ISO strings.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from mahavishnu_dlq import models

__all__ = ["FailedTask"]

#: The original dataclass's fields, in its positional order.
POSITIONAL = (
    "task_id",
    "task",
    "repos",
    "error",
    "failed_at",
    "retry_count",
    "max_retries",
    "retry_policy",
    "next_retry_at",
    "status",
    "metadata",
    "error_category",
    "last_error",
    "total_attempts",
)


class FailedTask(models.FailedTask):
    """A failed task, constructible as the original's ``FailedTask`` dataclass."""

    def __init__(self, *args: Any, **data: Any) -> None:
        if len(args) > len(POSITIONAL):
            raise TypeError(
                f"FailedTask takes at most {len(POSITIONAL)} positional arguments, got {len(args)}"
            )
        for name, value in zip(POSITIONAL, args, strict=False):
            if name in data:
                raise TypeError(f"FailedTask got multiple values for argument {name!r}")
            data[name] = value
        super().__init__(**_original_defaults(data))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FailedTask:
        """Build from a dict as the original's ``to_dict`` (or the native one) wrote it."""
        return cls(**dict(data))

    @classmethod
    def of(cls, record: models.FailedTask) -> FailedTask:
        """``record`` (a native record, as the store returns it) as this class."""
        if isinstance(record, cls):
            return record
        found = cls.trusted(record.__dict__.copy(), record.payload_json())
        assert isinstance(found, cls)  # noqa: S101 - trusted builds ``cls``
        return found


def _original_defaults(data: dict[str, Any]) -> dict[str, Any]:
    """Fill what the original's records lack: timestamps, a category for None."""
    values = {name: value for name, value in data.items() if name in models.FailedTask.model_fields}
    if values.get("failed_at") is None:  # the original's from_dict: now
        values["failed_at"] = datetime.now(timezone.utc)
    for name in ("created_at", "updated_at"):
        if values.get(name) is None:
            values[name] = values["failed_at"]
    if values.get("error_category") is None:
        values.pop("error_category", None)
    if values.get("metadata") is None:
        values.pop("metadata", None)
    for name in ("task", "repos", "error"):  # required by the original; defaulted natively
        if values.get(name) is None:
            values.pop(name, None)
    return values
