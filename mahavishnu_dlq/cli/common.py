"""What every command shares: global state, exit codes, input parsing, opening the queue.

A command parses and checks its options here (a bad value is a
:class:`typer.BadParameter`, reported as one line, exit status 2), then runs its
async body with :func:`run`, which opens the queue — from ``--app`` or from the
settings — and turns the library's errors into one line on stderr and an exit
status: 1 for "not found" or a failed operation (an unreachable store included),
2 for usage and configuration problems. No command prints a traceback, and every
line goes through :mod:`.terminal`, so no stored or given text reaches the terminal
raw.
The parsers of option values live in :mod:`.arguments` (re-exported here).
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import anyio
import typer

from mahavishnu_dlq.cli.arguments import (
    parse_choices,
    parse_duration,
    parse_moment,
    parse_rate,
    quoted,
)
from mahavishnu_dlq.cli.terminal import dumps, escape_line, text_of
from mahavishnu_dlq.errors import (
    ConfigurationError,
    DLQError,
    StoreNotFoundError,
    StoreUnavailableError,
    TaskBusyError,
    TaskNotFoundError,
)

if TYPE_CHECKING:  # imported where used: ``--help`` opens no queue, settings or store
    from mahavishnu_dlq.queue import DeadLetterQueue
    from mahavishnu_dlq.settings import DLQSettings

__all__ = [
    "APP_ENV_VAR",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "MAX_ERROR_CHARS",
    "PROG",
    "CliError",
    "CliState",
    "emit_json",
    "error_line",
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
#: Longest error line (characters, after escaping).
MAX_ERROR_CHARS = 4096

T = TypeVar("T")


class CliError(Exception):
    """A problem a command reports as one line on stderr, with an exit status."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


def one_line(message: str) -> str:
    """A (possibly multi-line) error message as one line: header, then problems by '; '."""
    head, *rest = [line.strip() for line in message.splitlines() if line.strip()] or [""]
    return " ".join([head, "; ".join(line.removeprefix("- ") for line in rest)]).strip()


def error_line(message: str) -> str:
    """``message`` as one escaped line of at most :data:`MAX_ERROR_CHARS` (a message
    quoting a 100,000-character argument is cut, saying how much)."""
    line = escape_line(one_line(message))
    if len(line) > MAX_ERROR_CHARS:
        line = f"{line[:MAX_ERROR_CHARS]}… ({len(line) - MAX_ERROR_CHARS} more characters)"
    return line


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Report ``message`` on one line of stderr, escaped, and exit with ``code``."""
    sys.stderr.write(f"{PROG}: {error_line(message)}\n")
    raise typer.Exit(code)


def emit_json(data: Any) -> None:
    """Print ``data`` as indented JSON on stdout (values JSON lacks become strings).

    Exact JSON: what the terminal output escapes is written as JSON escapes
    (``\\u001b``, ``\\udcff``), so a lone surrogate cannot stop the write."""
    sys.stdout.write(dumps(data) + "\n")


# -- --app: the user's queue or handlers --------------------------------------------------


def _raised(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {text_of(exc)}"


def import_target(spec: str) -> Any:
    """The object ``module:attribute`` names (the current directory is importable)."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise CliError(f"--app must look like module:attribute, got {quoted(spec)}", EXIT_USAGE)
    shown = spec if len(spec) <= 200 else spec[:200] + "…"
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        target: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise CliError(f"--app {shown}: no module named {exc.name!r}", EXIT_USAGE) from exc
        raise CliError(
            f"--app {shown}: importing {module_name} failed: {text_of(exc)}", EXIT_USAGE
        ) from exc
    except (Exception, SystemExit) as exc:  # a module may even call sys.exit()
        raise CliError(
            f"--app {shown}: importing {module_name} failed: {_raised(exc)}", EXIT_USAGE
        ) from exc
    for name in attribute.split("."):
        try:
            target = getattr(target, name)
        except AttributeError:
            raise CliError(
                f"--app {shown}: {module_name} has no attribute {attribute!r}", EXIT_USAGE
            ) from None
        except Exception as exc:  # a property or __getattr__ that raises
            raise CliError(
                f"--app {shown}: getting {attribute} raised {_raised(exc)}", EXIT_USAGE
            ) from exc
    return target


def _is_factory(target: Any) -> bool:
    """A callable whose every parameter has a default (a handler takes the task and its
    repos; one taking ``*args`` is a handler too)."""
    try:
        signature = inspect.signature(target)
    except Exception:  # noqa: BLE001 - TypeError, ValueError, or a hostile __signature__
        return False
    return all(
        p.default is not p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        for p in signature.parameters.values()
    )


def _classify(spec: str, target: Any) -> list[tuple[str, Any]] | None:
    """A handler mapping's items, or None for one handler; CliError for anything else."""
    try:
        if isinstance(target, Mapping) and target:
            items = list(target.items())
        elif callable(target):
            return None
        else:
            items = []
    except Exception as exc:  # a hostile __len__, __iter__ or __class__
        raise CliError(
            f"--app {spec}: inspecting the {type(target).__name__} raised {_raised(exc)}",
            EXIT_USAGE,
        ) from exc
    if not items:
        raise CliError(
            f"--app {spec} is a {type(target).__name__}; expected a DeadLetterQueue, a "
            "function returning one, a mapping of workflow names to handlers, or a handler",
            EXIT_USAGE,
        )
    for workflow, handler in items:
        if not isinstance(workflow, str) or not callable(handler):
            key = quoted(workflow) if isinstance(workflow, str) else f"a {type(workflow).__name__}"
            raise CliError(
                f"--app {spec}: a handler mapping needs workflow names mapped to "
                f"callables; {key} maps to {type(handler).__name__}",
                EXIT_USAGE,
            )
    return items


async def resolve_app(
    spec: str, target: Any, settings: Callable[[], DLQSettings]
) -> DeadLetterQueue:
    """A queue from what ``--app`` named: a queue, a factory, handlers, or one handler."""
    from mahavishnu_dlq.queue import DeadLetterQueue  # noqa: PLC0415 - not for --help

    spec = spec if len(spec) <= 200 else spec[:200] + "…"
    if callable(target) and not isinstance(target, DeadLetterQueue) and _is_factory(target):
        try:
            target = target()
            if inspect.isawaitable(target):
                target = await target
        except (Exception, SystemExit) as exc:  # exit() is a factory too
            raise CliError(f"--app {spec}: the factory raised {_raised(exc)}", EXIT_USAGE) from exc
    if isinstance(target, DeadLetterQueue):
        return target
    items = _classify(spec, target)
    dlq = DeadLetterQueue.from_settings(settings())
    if items is None:
        dlq.default_callback = target
    for workflow, handler in items or ():
        dlq.register_handler(workflow, handler)
    return dlq


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
            from mahavishnu_dlq.settings import DLQSettings  # noqa: PLC0415 - not for --help

            try:
                self._settings = DLQSettings.load(self.config)
            except ConfigurationError as exc:
                fail(text_of(exc))
            except Exception as exc:  # noqa: BLE001 - whatever a hostile file makes it raise
                fail(f"cannot load the settings: {_raised(exc)}")
        return self._settings

    def app_spec(self, override: str | None = None) -> str | None:
        """``--app`` of the command, else the global one, else ``$MAHAVISHNU_DLQ_APP``."""
        return override or self.app or os.environ.get(APP_ENV_VAR) or None

    async def build_queue(self, app: str | None = None) -> DeadLetterQueue:
        """The queue a command works on: the ``--app`` one, else one built from settings."""
        spec = self.app_spec(app)
        if spec is None:
            from mahavishnu_dlq.queue import DeadLetterQueue  # noqa: PLC0415 - not for --help

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
async def opened(
    state: CliState, app: str | None = None, *, create: bool = True
) -> AsyncIterator[DeadLetterQueue]:
    """The command's queue with its store connected; stopped (processor, store) on exit.

    ``create=False`` for the commands that only read: their store creates nothing
    (a missing OpenSearch index is an error, not an empty queue)."""
    dlq = await state.build_queue(app)
    try:
        await dlq.connect(create=create)
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
    create: bool = True,
) -> T:
    """Run ``body`` on the opened queue; library errors become one line and an exit status.

    Commands that only read pass ``create=False``: opening their store creates
    nothing, and a missing index (a misspelt ``opensearch.index``) is one line naming
    it, exit status 1 (:class:`~mahavishnu_dlq.errors.StoreNotFoundError`).

    A failover store that opened degraded serves from this process's fallback: only
    commands that say so (``degraded_ok``: status, the processor) run then; the
    others stop with exit status 1 rather than show or change a part of the queue.
    A store degraded only because its journal holds changes a process that ended
    left (OpenSearch answers) is re-synced first, and the command runs.
    """

    from mahavishnu_dlq.storage import FailoverStore  # noqa: PLC0415 - not for --help

    async def main() -> T:
        async with opened(state, app, create=create) as dlq:
            store = dlq.store
            if not degraded_ok and getattr(store, "degraded", False):
                health = getattr(store, "health", {})
                if not health.get("circuit_open") and isinstance(store, FailoverStore):
                    await store.probe()  # a failure leaves it degraded: refused below
            if not degraded_ok and getattr(store, "degraded", False):
                health = getattr(store, "health", {})
                raise CliError(
                    f"the store is degraded (serving: {health.get('serving')}; last error: "
                    f"{health.get('last_error')}); only status and processor run work now"
                )
            return await body(dlq)

    try:
        return anyio.run(main)
    except CliError as exc:
        fail(text_of(exc), exc.code)
    except (StoreUnavailableError, StoreNotFoundError) as exc:
        fail(text_of(exc), EXIT_FAILED)
    except ConfigurationError as exc:
        fail(text_of(exc), EXIT_USAGE)
    except (TaskNotFoundError, TaskBusyError, DLQError) as exc:  # UnreadableRecordError too
        fail(text_of(exc), EXIT_FAILED)
