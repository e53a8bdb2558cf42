"""The Typer application: global options, the command tree, and the console script.

:func:`main` runs the app in click's non-standalone mode so that *every* problem
— a usage error, a bad option value, an aborted prompt — ends as one line on
stderr with exit status 2 (usage) or 1 (aborted), never a traceback or a box. An
error nothing else caught (a hostile ``--app`` object, a bug) is one line too,
exit status 1; ``-vv`` logs its traceback. Log records are written by
:class:`~.terminal.EscapingRichHandler`, so they are escaped like every other line.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from mahavishnu_dlq import __version__
from mahavishnu_dlq.cli import actions, breakers, browse, doctor, jobs, operate, serve
from mahavishnu_dlq.cli.common import (
    APP_ENV_VAR,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    PROG,
    CliState,
    error_line,
)
from mahavishnu_dlq.cli.terminal import EscapingRichHandler, text_of

__all__ = ["build_app", "run_cli"]


def _show_version(value: bool) -> None:
    if value:
        sys.stdout.write(f"{PROG} {__version__}\n")
        raise typer.Exit


def _root(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            metavar="FILE",
            help="YAML settings file (default: $MAHAVISHNU_DLQ_CONFIG). "
            "MAHAVISHNU_DLQ_* environment variables override it.",
        ),
    ] = None,
    app: Annotated[
        str | None,
        typer.Option(
            "--app",
            "-A",
            metavar="MODULE:ATTR",
            help=f"Your queue or handlers (default: ${APP_ENV_VAR}): a DeadLetterQueue, a "
            "function returning one, a {workflow: handler} mapping, or one handler.",
        ),
    ] = None,
    verbose: Annotated[
        int,
        typer.Option(
            "--verbose", "-v", count=True, show_default=False, help="Log more: -v info, -vv debug."
        ),
    ] = 0,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    """Inspect and operate the mahavishnu dead-letter queue.

    Exit status: 0 success, 1 not found or the operation failed, 2 usage or
    configuration error, 130 interrupted (Ctrl-C).
    """
    ctx.obj = CliState(config=config, verbose=verbose, app=app)
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    handler = EscapingRichHandler(console=Console(stderr=True), show_path=False)
    logging.basicConfig(level=level, format="%(message)s", handlers=[handler], force=True)
    # the client logs every non-2xx answer (even an expected "index exists") as a warning
    logging.getLogger("opensearch").setLevel(logging.DEBUG if verbose >= 2 else logging.ERROR)
    # a failover is reported by the command itself (status shows it; others stop on it)
    failover = logging.getLogger("mahavishnu_dlq.storage.failover")
    failover.setLevel(logging.NOTSET if verbose else logging.ERROR)


def build_app() -> typer.Typer:
    """The Typer application: the global options and every command."""
    settings = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
    app = typer.Typer(
        name=PROG,
        no_args_is_help=True,
        add_completion=True,  # --install-completion, --show-completion
        rich_markup_mode=None,
        pretty_exceptions_show_locals=False,  # locals may hold secrets
        context_settings=settings,
    )
    app.callback()(_root)
    for name, command in (
        ("status", browse.status),
        ("list", browse.list_tasks),
        ("show", browse.show),
        ("retry", actions.retry),
        ("replay", actions.replay),
        ("archive", actions.archive),
        ("purge", actions.purge),
        ("clear", actions.clear),
        ("serve", serve.serve),
        ("doctor", doctor.doctor),
    ):
        app.command(name)(command)
    operate.register(app, context_settings=settings)
    jobs.register(app, context_settings=settings)
    breakers.register(app, context_settings=settings)
    return app


def run_cli(argv: Sequence[str] | None = None) -> int:
    """Run the CLI on ``argv`` (default: ``sys.argv[1:]``); the exit status."""
    command = typer.main.get_command(build_app())
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        code = command.main(args=args, prog_name=PROG, standalone_mode=False)
    except typer.TyperException as exc:  # click's ClickException and its usage errors
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
            sys.stdout.write(ctx.get_help() + "\n")
            return EXIT_USAGE
        where = ctx.command_path if ctx is not None else PROG
        hint = f" (see '{where} --help')" if ctx is not None else ""
        sys.stderr.write(f"{where}: {error_line(exc.format_message())}{hint}\n")
        return EXIT_USAGE if ctx is not None else int(getattr(exc, "exit_code", EXIT_FAILED))
    except typer.Abort:
        sys.stderr.write(f"{PROG}: aborted\n")
        return EXIT_FAILED
    except Exception as exc:  # the last safety net: still one line, never a traceback
        logging.getLogger(__name__).debug("unexpected error", exc_info=True)
        problem = error_line(f"{type(exc).__name__}: {text_of(exc)}")
        sys.stderr.write(f"{PROG}: unexpected error: {problem} (-vv logs the traceback)\n")
        return EXIT_FAILED
    if code == EXIT_INTERRUPTED:  # click turned a KeyboardInterrupt into this status
        sys.stderr.write(f"{PROG}: interrupted\n")
    return code if isinstance(code, int) else 0
