"""The ``mahavishnu-dlq`` command line: Typer commands, Rich output (the ``cli`` extra).

:func:`main` is the console script (and ``python -m mahavishnu_dlq``). Global
options come before the command: ``--config FILE`` names the YAML settings
(otherwise ``$MAHAVISHNU_DLQ_CONFIG``, then ``MAHAVISHNU_DLQ_*`` variables and the
defaults), ``--app MODULE:ATTR`` names the host's queue or handlers, and ``-v``
raises the log level. The modules:

- :mod:`.common`: global state, exit codes, error lines, opening the queue;
- :mod:`.arguments`: what an option's value may be (parsed and bounded);
- :mod:`.terminal`: escaping what is printed, so stored text never reaches the
  terminal raw;
- :mod:`.render`: Rich renderables for statistics, tasks, lists and reports;
  :mod:`.job_render`: the same for bulk jobs;
- :mod:`.options`: the option types and filter the commands share;
- :mod:`.browse`: status, list, show; :mod:`.actions`: retry, replay, archive, purge, clear;
- :mod:`.bulk`: replay, retry, archive and purge by filter as stored jobs, and
  :mod:`.follow`: following one (progress, running it here, Ctrl-C);
- :mod:`.jobs`: jobs list, show, pause, resume, cancel;
- :mod:`.breakers`: breaker list, open, close (each workflow's circuit breaker);
- :mod:`.operate`: processor run, config show/validate, demo;
- :mod:`.app`: the command tree and :func:`main`'s error handling.

Nothing here is imported by the library itself: without the extra, :func:`main`
says which extra to install.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import typer

__all__ = ["MISSING_EXTRA_MESSAGE", "build_app", "main"]

MISSING_EXTRA_MESSAGE = "the CLI needs the 'cli' extra: pip install 'mahavishnu-dlq[cli]'"
_EXTRA_MODULES = ("typer", "rich", "click")


def build_app() -> typer.Typer:
    """The Typer application (see :mod:`mahavishnu_dlq.cli.app`)."""
    from mahavishnu_dlq.cli.app import build_app as build  # noqa: PLC0415 - the extra

    return build()


def main(argv: Sequence[str] | None = None) -> None:
    """The ``mahavishnu-dlq`` console script; exits with the command's status."""
    try:
        from mahavishnu_dlq.cli.app import run_cli  # noqa: PLC0415 - the extra
    except ImportError as exc:
        if getattr(exc, "name", None) in _EXTRA_MODULES or "typer" in str(exc):
            sys.stderr.write(MISSING_EXTRA_MESSAGE + "\n")
            raise SystemExit(2) from None
        raise
    raise SystemExit(run_cli(argv))
