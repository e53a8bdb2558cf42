"""What every command shares: global state, exit codes, input parsing, opening the queue.

A command parses and checks its options here (a bad value is a
:class:`typer.BadParameter`, reported as one line, exit status 2), then runs its
async body with :func:`run`, which opens the queue — from ``--app`` or from the
settings — and turns the library's errors into one line on stderr and an exit
status: 1 for "not found" or a failed operation (an unreachable store included),
2 for usage and configuration problems. No command prints a traceback.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import json
import os
import re
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from enum import Enum
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import anyio
import typer

from mahavishnu_dlq.errors import (
    ConfigurationError,
    DLQError,
    StoreUnavailableError,
    TaskBusyError,
    TaskNotFoundError,
)
from mahavishnu_dlq.queue import DeadLetterQueue
from mahavishnu_dlq.settings import DLQSettings

__all__ = [
    "APP_ENV_VAR",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "PROG",
    "CliError",
    "CliState",
    "emit_json",
    "fail",
    "one_line",
    "parse_choices",
    "parse_duration",
    "parse_moment",
    "parse_rate",
    "run",
]

PROG = "mahavishnu-dlq"
APP_ENV_VAR = "MAHAVISHNU_DLQ_APP"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

T = TypeVar("T")
E = TypeVar("E", bound=Enum)


class CliError(Exception):
    """A problem a command reports as one line on stderr, with an exit status."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


def one_line(message: str) -> str:
    """A (possibly multi-line) error message as one line: header, then problems by '; '."""
    head, *rest = [line.strip() for line in message.splitlines() if line.strip()] or [""]
    return " ".join([head, "; ".join(line.removeprefix("- ") for line in rest)]).strip()


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Report ``message`` on one line of stderr and exit with ``code``."""
    sys.stderr.write(f"{PROG}: {one_line(message)}\n")
    raise typer.Exit(code)


def emit_json(data: Any) -> None:
    """Print ``data`` as indented JSON on stdout (values JSON lacks become strings)."""
    sys.stdout.write(json.dumps(data, indent=2, default=str, ensure_ascii=False) + "\n")


# -- parsing options --------------------------------------------------------------------

_UNITS = {
    "ms": 0.001,
    "s": 1,
    "sec": 1,
    "m": 60,
    "min": 60,
    "h": 3600,
    "d": 86400,
    "w": 604800,
}
_DURATION_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|sec|min|s|m|h|d|w)", re.IGNORECASE)
_DURATION_HELP = "a number and a unit (s, m, h, d, w), e.g. 90s, 15m, 12h, 30d or 1h30m"


def parse_duration(text: str, *, option: str = "duration") -> timedelta:
    """``30d``, ``12h``, ``1h30m``, ``90s`` … as a timedelta; BadParameter otherwise."""
    seconds, position, stripped = 0.0, 0, text.strip()
    while position < len(stripped):
        match = _DURATION_PART.match(stripped, position)
        if match is None:
            break
        seconds += float(match.group(1)) * _UNITS[match.group(2).lower()]
        position = match.end()
    if not stripped or position < len(stripped):
        raise typer.BadParameter(
            f"{text!r} is not a duration: use {_DURATION_HELP}", param_hint=option
        )
    return timedelta(seconds=seconds)


def parse_moment(text: str, now: datetime, *, option: str) -> datetime:
    """An ISO 8601 date/time (UTC unless it names a zone) or a duration meaning "ago"."""
    stripped = text.strip()
    if stripped[:1].isdigit() and ("-" in stripped[:5] or "T" in stripped):
        try:
            moment = datetime.fromisoformat(stripped.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    try:
        return now - parse_duration(stripped, option=option)
    except typer.BadParameter:
        raise typer.BadParameter(
            f"{text!r} is neither a time (ISO 8601, e.g. 2026-11-26 or 2026-11-26T14:30:00Z)"
            f" nor an age ({_DURATION_HELP})",
            param_hint=option,
        ) from None


def parse_choices(values: Iterable[str] | None, enum: type[E], *, option: str) -> tuple[E, ...]:
    """Repeated and/or comma-separated enum values; BadParameter naming the allowed ones."""
    chosen: list[E] = []
    for value in values or ():
        for name in filter(None, (part.strip().lower() for part in value.split(","))):
            try:
                member = enum(name)
            except ValueError:
                allowed = ", ".join(str(m.value) for m in enum)
                raise typer.BadParameter(
                    f"unknown value {name!r}; allowed: {allowed}", param_hint=option
                ) from None
            if member not in chosen:
                chosen.append(member)
    return tuple(chosen)


_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:/\s*(s|sec|m|min|h))?\s*$", re.IGNORECASE)


def parse_rate(text: str, *, option: str = "--rate") -> float:
    """``10``, ``10/s``, ``600/min``, ``3600/h`` as tasks per second (> 0)."""
    match = _RATE.match(text)
    rate = 0.0
    if match is not None:
        rate = float(match.group(1)) / _UNITS[(match.group(2) or "s").lower()]
    if rate <= 0:
        raise typer.BadParameter(
            f"{text!r} is not a rate: use a positive number per second, minute or hour,"
            " e.g. 10/s, 600/min",
            param_hint=option,
        )
    return rate


# -- --app: the user's queue or handlers --------------------------------------------------


def import_target(spec: str) -> Any:
    """The object ``module:attribute`` names (the current directory is importable)."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise CliError(f"--app must look like module:attribute, got {spec!r}", EXIT_USAGE)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        target: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise CliError(f"--app {spec}: no module named {exc.name!r}", EXIT_USAGE) from exc
        raise CliError(f"--app {spec}: importing {module_name} failed: {exc}", EXIT_USAGE) from exc
    except Exception as exc:
        raise CliError(
            f"--app {spec}: importing {module_name} failed: {type(exc).__name__}: {exc}",
            EXIT_USAGE,
        ) from exc
    for name in attribute.split("."):
        try:
            target = getattr(target, name)
        except AttributeError:
            raise CliError(
                f"--app {spec}: {module_name} has no attribute {attribute!r}", EXIT_USAGE
            ) from None
    return target


def _is_factory(target: Any) -> bool:
    """A callable whose every parameter has a default (a handler takes the task and its
    repos; one taking ``*args`` is a handler too)."""
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return False
    return all(
        p.default is not p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        for p in signature.parameters.values()
    )


async def resolve_app(
    spec: str, target: Any, settings: Callable[[], DLQSettings]
) -> DeadLetterQueue:
    """A queue from what ``--app`` named: a queue, a factory, handlers, or one handler."""
    if callable(target) and not isinstance(target, DeadLetterQueue) and _is_factory(target):
        try:
            target = target()
            if inspect.isawaitable(target):
                target = await target
        except Exception as exc:
            raise CliError(
                f"--app {spec}: the factory raised {type(exc).__name__}: {exc}", EXIT_USAGE
            ) from exc
    if isinstance(target, DeadLetterQueue):
        return target
    if isinstance(target, Mapping) and target:
        dlq = DeadLetterQueue.from_settings(settings())
        for workflow, handler in target.items():
            if not isinstance(workflow, str) or not callable(handler):
                raise CliError(
                    f"--app {spec}: a handler mapping needs workflow names mapped to "
                    f"callables; {workflow!r} maps to {type(handler).__name__}",
                    EXIT_USAGE,
                )
            dlq.register_handler(workflow, handler)
        return dlq
    if callable(target):
        dlq = DeadLetterQueue.from_settings(settings())
        dlq.default_callback = target
        return dlq
    raise CliError(
        f"--app {spec} is a {type(target).__name__}; expected a DeadLetterQueue, a function "
        "returning one, a mapping of workflow names to handlers, or a handler",
        EXIT_USAGE,
    )


# -- global state and running a command -----------------------------------------------------


@dataclass
class CliState:
    """What the global options decided; settings are loaded on first use."""

    config: Path | None = None
    verbose: int = 0
    app: str | None = None
    _settings: DLQSettings | None = field(default=None, repr=False)

    def settings(self) -> DLQSettings:
        """The validated settings; a configuration problem ends the command (exit 2)."""
        if self._settings is None:
            try:
                self._settings = DLQSettings.load(self.config)
            except ConfigurationError as exc:
                fail(str(exc))
        return self._settings

    def app_spec(self, override: str | None = None) -> str | None:
        """``--app`` of the command, else the global one, else ``$MAHAVISHNU_DLQ_APP``."""
        return override or self.app or os.environ.get(APP_ENV_VAR) or None

    async def build_queue(self, app: str | None = None) -> DeadLetterQueue:
        """The queue a command works on: the ``--app`` one, else one built from settings."""
        spec = self.app_spec(app)
        if spec is None:
            try:
                return DeadLetterQueue.from_settings(self.settings())
            except ModuleNotFoundError as exc:  # store: opensearch without the extra
                raise CliError(
                    f"store 'opensearch' needs the 'opensearch' extra ({exc}): "
                    "pip install 'mahavishnu-dlq[opensearch]'",
                    EXIT_USAGE,
                ) from exc
        return await resolve_app(spec, import_target(spec), self.settings)


@asynccontextmanager
async def opened(state: CliState, app: str | None = None) -> AsyncIterator[DeadLetterQueue]:
    """The command's queue with its store connected; stopped (processor, store) on exit."""
    dlq = await state.build_queue(app)
    try:
        await dlq.connect()
    except BaseException:
        with anyio.CancelScope(shield=True):
            with contextlib.suppress(DLQError):  # never opened: report the first error
                await dlq.store.close()
        raise
    try:
        yield dlq
    finally:  # not in a scope of ours: stop() ends task groups connect() entered here
        await dlq.stop()


def run(
    state: CliState,
    body: Callable[[DeadLetterQueue], Awaitable[T]],
    *,
    app: str | None = None,
    degraded_ok: bool = False,
) -> T:
    """Run ``body`` on the opened queue; library errors become one line and an exit status.

    A failover store that opened degraded serves from this process's own, empty,
    fallback: only commands that say so (``degraded_ok``: status, the processor)
    run then; the others stop with exit status 1 rather than show or change nothing.
    """

    async def main() -> T:
        async with opened(state, app) as dlq:
            if not degraded_ok and getattr(dlq.store, "degraded", False):
                health = getattr(dlq.store, "health", {})
                raise CliError(
                    f"the store is degraded (serving: {health.get('serving')}; last error: "
                    f"{health.get('last_error')}); only status and processor run work now"
                )
            return await body(dlq)

    try:
        return anyio.run(main)
    except CliError as exc:
        fail(str(exc), exc.code)
    except StoreUnavailableError as exc:
        fail(f"{exc}", EXIT_FAILED)
    except ConfigurationError as exc:
        fail(str(exc), EXIT_USAGE)
    except (TaskNotFoundError, TaskBusyError, DLQError) as exc:
        fail(str(exc), EXIT_FAILED)
