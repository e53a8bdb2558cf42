"""The doctor: a configuration checked end to end, without changing anything.

:func:`diagnose` takes :class:`~mahavishnu_dlq.settings.DLQSettings` and returns one
:class:`Check` per thing it looked at, in order, each ``ok``, ``warn``, ``fail`` or
``skip`` (not looked at, because something it needs failed first) with what it saw
and, when something is wrong, what to fix. ``mahavishnu-dlq doctor`` prints them.

- ``memory``: one line; nothing persists.
- ``sqlite``: the file (there, or its directory creatable), writable, its schema
  version and journal mode read from the file's header (no connection is opened: a
  connection could make the ``-wal`` and ``-shm`` files), the free disk space.
- ``opensearch``: the checks of :mod:`~mahavishnu_dlq.doctor_opensearch` (reachable,
  TLS, authentication, version, health) and :mod:`~mahavishnu_dlq.doctor_index` (the
  index, its mapping and template, the side indexes, the read and write permissions,
  refresh interval and replicas).
- ``failover``: those, and the journal directory of ``failover.fallback: sqlite``.

Nothing is created, written or migrated: a missing file or index is reported, the
write permission is probed with an update that cannot apply (see
:mod:`~mahavishnu_dlq.doctor_index`). No password is ever part of a line.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from mahavishnu_dlq.storage.sqlite_schema import SCHEMA_VERSION

if TYPE_CHECKING:
    from mahavishnu_dlq.settings import DLQSettings

__all__ = ["Check", "Status", "diagnose", "failed", "local_directory", "size_text"]

#: ``skip``: not looked at, because a check it depends on failed first.
Status = Literal["ok", "warn", "fail", "skip"]

_HEADER = b"SQLite format 3\x00"
_LOW_DISK = 1 << 30  # free bytes under which a warning is given
_NO_DISK = 100 << 20  # ... and under which the check fails


@dataclass(frozen=True)
class Check:
    """One thing the doctor looked at: its name, the outcome, what it saw, what to fix."""

    name: str
    status: Status
    detail: str
    fix: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The check as JSON."""
        return asdict(self)


def failed(checks: list[Check]) -> bool:
    """Whether any check failed (warnings and skips do not count)."""
    return any(check.status == "fail" for check in checks)


async def diagnose(settings: DLQSettings) -> list[Check]:
    """Every check of the store ``settings`` describe (see the module); changes nothing.

    The OpenSearch checks run on asyncio only (the store's client); the others on any
    event loop."""
    store = settings.store
    if store == "memory":
        return [
            Check(
                "store",
                "warn",
                "memory store: nothing persists (each process has its own, empty queue)",
                "set store: sqlite or opensearch to keep failed tasks",
            )
        ]
    if store == "sqlite":
        path = settings.sqlite.file()
        return [Check("settings", "ok", f"store sqlite, file {path}"), *sqlite_checks(path)]
    from mahavishnu_dlq.doctor_opensearch import opensearch_checks  # noqa: PLC0415 - extra

    checks = await opensearch_checks(settings.opensearch, store=store)
    if store == "failover":
        checks.append(_fallback_check(settings))
    return checks


# -- local files ------------------------------------------------------------------------------


def size_text(size: float) -> str:
    """``size`` bytes for people: ``812 B``, ``3.4 MiB``, ``12.0 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def local_directory(directory: Path, setting: str, *, what: str) -> Check:
    """Whether ``directory`` exists and is writable, or could be created (without
    creating it): the nearest existing parent must be writable."""
    if directory.is_dir():
        if os.access(directory, os.W_OK | os.X_OK):
            return Check(what, "ok", f"{directory} exists and is writable")
        return Check(
            what, "fail", f"{directory} is not writable by this user", _writable_fix(setting)
        )
    if directory.exists():
        return Check(what, "fail", f"{directory} exists but is not a directory", f"fix {setting}")
    parent = _existing_parent(directory)
    if parent is not None and parent.is_dir() and os.access(parent, os.W_OK | os.X_OK):
        return Check(
            what, "ok", f"{directory} does not exist yet: it is created at the first write"
        )
    return Check(
        what,
        "fail",
        f"{directory} does not exist and cannot be created ({parent or 'no parent'} is not a "
        "writable directory)",
        _writable_fix(setting),
    )


def _writable_fix(setting: str) -> str:
    return f"set {setting} to a place this user may write, or change the permissions"


def _existing_parent(path: Path) -> Path | None:
    for parent in path.parents:
        if parent.exists():
            return parent
    return None


def _header(path: Path) -> tuple[int, int] | None:
    """``(user_version, file format version)`` from an SQLite file's first 100 bytes
    (format 2 is WAL, 1 a rollback journal); None when the file is no SQLite database."""
    with path.open("rb") as file:
        head = file.read(100)
    if len(head) < 100 or not head.startswith(_HEADER):
        return None
    return int.from_bytes(head[60:64], "big"), head[18]


def sqlite_checks(path: Path, *, setting: str = "sqlite.path") -> list[Check]:
    """The file, its permissions, schema version, journal mode and the free disk."""
    checks: list[Check] = []
    if not path.exists():
        parent = local_directory(path.parent, setting, what="file")
        if parent.status != "ok":
            return [parent]
        checks.append(
            Check("file", "ok", f"{path} does not exist yet: it is created at the first use")
        )
        reason = "not checked: the file does not exist yet (it is made in WAL mode)"
        checks.append(Check("schema", "skip", reason))
        checks.append(Check("journal mode", "skip", reason))
        checks.append(_disk(path.parent))
        return checks
    if not path.is_file():
        return [Check("file", "fail", f"{path} exists but is not a file", f"fix {setting}")]
    checks.append(Check("file", "ok", f"{path} exists ({size_text(path.stat().st_size)})"))
    directory = path.parent
    if not os.access(path, os.R_OK | os.W_OK):
        checks.append(
            Check("writable", "fail", f"{path} is not readable and writable by this user")
        )
    elif not os.access(directory, os.W_OK | os.X_OK):
        checks.append(
            Check(
                "writable",
                "fail",
                f"{directory} is not writable: SQLite keeps the -wal and -shm files beside "
                "the database",
                _writable_fix(setting),
            )
        )
    else:
        checks.append(Check("writable", "ok", f"{path} and its directory are writable"))
    checks.extend(_file_format(path, setting))
    checks.append(_disk(directory))
    return checks


def _file_format(path: Path, setting: str) -> list[Check]:
    """The schema and journal mode checks of an existing file."""
    try:
        header = _header(path) if path.stat().st_size else None
    except OSError as exc:
        return [Check("schema", "fail", f"{path} cannot be read: {exc.strerror or exc}")]
    if header is not None:
        return _schema(*header)
    if path.stat().st_size:
        return [Check("schema", "fail", f"{path} is not an SQLite database", f"fix {setting}")]
    return [
        Check("schema", "ok", "an empty file: the schema is made at the first use"),
        Check("journal mode", "skip", "not checked: the empty file is made WAL at the first use"),
    ]


def _schema(version: int, file_format: int) -> list[Check]:
    if version == SCHEMA_VERSION:
        schema = Check("schema", "ok", f"version {version} (this version's)")
    elif version < SCHEMA_VERSION:
        schema = Check(
            "schema",
            "warn",
            f"version {version}, older than this version's {SCHEMA_VERSION}: the next "
            "command that opens it upgrades it in place",
        )
    else:
        schema = Check(
            "schema",
            "fail",
            f"version {version}, written by a newer mahavishnu-dlq (this one knows up to "
            f"{SCHEMA_VERSION})",
            "upgrade mahavishnu-dlq, or use another sqlite.path",
        )
    if file_format == 2:
        mode = Check("journal mode", "ok", "WAL (readers never wait for the writer)")
    else:
        mode = Check(
            "journal mode",
            "warn",
            "a rollback journal, not WAL: the next command that opens it switches it to WAL",
        )
    return [schema, mode]


def _disk(directory: Path) -> Check:
    where = directory if directory.exists() else _existing_parent(directory)
    if where is None:
        return Check("disk", "skip", "not checked: no existing directory to measure")
    try:
        free = shutil.disk_usage(where).free
    except OSError as exc:
        return Check("disk", "warn", f"free space of {where} unknown: {exc.strerror or exc}")
    detail = f"{size_text(free)} free on {where}"
    if free < _NO_DISK:
        return Check("disk", "fail", detail, "free disk space: writes fail when it runs out")
    if free < _LOW_DISK:
        return Check("disk", "warn", detail, "free disk space before it runs out")
    return Check("disk", "ok", detail)


def _fallback_check(settings: DLQSettings) -> Check:
    failover = settings.failover
    if failover.fallback == "none":
        return Check("fallback", "ok", "none: writes fail while OpenSearch is down (fail closed)")
    if failover.fallback == "memory":
        return Check(
            "fallback",
            "warn",
            "memory: what is written while OpenSearch is down lives in this process only",
            "set failover.fallback: sqlite to keep it in a journal file",
        )
    directory = failover.directory(settings.opensearch.index)
    check = local_directory(directory, "failover.path", what="journal")
    if check.status != "ok" or not directory.is_dir():
        return check
    journals = sorted(directory.glob("journal-*.sqlite3"))
    kept = sum(1 for file in journals if file.stat().st_size > 0)
    return Check("journal", "ok", f"{check.detail}; {kept} journal file(s) in it")
