"""What a failing SQLite file means and what to do about it: the SQLite stores' errors.

Every failure of a :class:`~mahavishnu_dlq.storage.sqlite.SQLiteStore` (and of a
failover journal, :class:`~mahavishnu_dlq.storage.journal.JournalStore`) reaches the
caller as one :class:`~mahavishnu_dlq.errors.StoreUnavailableError` naming the file,
SQLite's own words, and a hint: a full disk, a directory this process cannot write,
another process's write lock held too long, a file that is not a database. The hint
names the setting that moves the file (``sqlite.path`` or ``failover.path``).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from mahavishnu_dlq.errors import StoreUnavailableError

__all__ = ["failure", "hint", "unusable"]

_BACKEND = "sqlite"


def hint(exc: BaseException, *, busy_timeout: float, setting: str) -> str:
    """What to do about ``exc``, in a few words."""
    text = str(exc)
    if "disk is full" in text or "disk I/O error" in text:
        return (
            "the disk is full (or failing): free space where the file lives; "
            "what was written before is kept"
        )
    if "readonly" in text or "read-only" in text or "unable to open" in text:
        return (
            "this process cannot write the file or its directory (SQLite keeps -wal and "
            f"-shm files beside it): fix the permissions, or set {setting} elsewhere"
        )
    if "locked" in text or "busy" in text:
        return (
            f"another process held its write lock longer than {busy_timeout:g} s "
            "(sqlite.busy_timeout_seconds)"
        )
    if "malformed" in text or "not a database" in text:
        return (
            "it is not a mahavishnu-dlq database or it is damaged, and was left as it is: "
            "move it aside (a new file is then started) or restore a copy"
        )
    if isinstance(exc, OSError):
        return f"check the path and its permissions, or set {setting} elsewhere"
    return "see the SQLite error"


def unusable(
    path: Path, exc: BaseException, what: str, *, busy_timeout: float, setting: str
) -> StoreUnavailableError:
    """The file at ``path`` cannot be used at all (``what``: why, in words)."""
    detail = f"{type(exc).__name__}: {exc}"
    advice = hint(exc, busy_timeout=busy_timeout, setting=setting)
    return StoreUnavailableError(
        _BACKEND, f"sqlite file {str(path)!r}: {what} ({detail}); {advice}"
    )


def failure(
    path: Path, exc: sqlite3.Error, *, busy_timeout: float, setting: str
) -> StoreUnavailableError:
    """A read or a write of the file at ``path`` failed."""
    advice = hint(exc, busy_timeout=busy_timeout, setting=setting)
    return StoreUnavailableError(
        _BACKEND, f"sqlite file {str(path)!r}: {type(exc).__name__}: {exc}; {advice}"
    )
