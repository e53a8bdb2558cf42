"""``mahavishnu-dlq doctor``: check the configuration end to end, changing nothing.

The checks are :func:`mahavishnu_dlq.doctor.diagnose`'s; this prints one line per
check — its outcome, name, what it saw and what to fix — then a count. Exit status 0
when nothing failed (warnings allowed), 1 when a check failed, 2 when the settings
cannot be loaded (as every command).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import typer
from rich.console import Console
from rich.text import Text

from mahavishnu_dlq.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, emit_json, fail
from mahavishnu_dlq.cli.options import JsonOption, state_of
from mahavishnu_dlq.cli.terminal import escape_line, text_of
from mahavishnu_dlq.errors import DLQError

if TYPE_CHECKING:
    from mahavishnu_dlq.doctor import Check

__all__ = ["doctor", "render_check"]

_LABEL = {"ok": ("ok", "green"), "warn": ("warn", "yellow"), "fail": ("FAIL", "bold red")}
_LABEL["skip"] = ("skip", "bright_black")


def render_check(check: Check) -> Text:
    """One check as one line: ``ok   name: what it saw (fix: what to do)``."""
    label, style = _LABEL[check.status]
    line = Text(f"{label:<5}", style=style)
    line.append(escape_line(f"{check.name}: {check.detail}"))
    if check.fix:
        line.append(escape_line(f" (fix: {check.fix})"), style="bold")
    return line


def doctor(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Check the configuration end to end without changing anything: one line per check.

    OpenSearch: each host reachable, TLS, authentication, version, cluster health, the
    index (exists, mapping, template, jobs and controls indexes), read and write
    permissions (probed without writing), refresh interval and replicas. SQLite: the
    file, its permissions, schema, journal mode and free disk. Exit status 0 when no
    check failed (warnings allowed), 1 when one did.
    """
    from mahavishnu_dlq.doctor import diagnose, failed  # noqa: PLC0415 - not for --help

    settings = state_of(ctx).settings()  # unusable settings: one line, exit 2
    try:
        checks = anyio.run(diagnose, settings)
    except ModuleNotFoundError as exc:  # store: opensearch without the extra
        fail(
            f"store {settings.store!r} needs the 'opensearch' extra ({exc}): "
            "pip install 'mahavishnu-dlq[opensearch]'",
            EXIT_USAGE,
        )
    except DLQError as exc:  # pragma: no cover - every check reports its own failure
        fail(text_of(exc), EXIT_FAILED)
    code = EXIT_FAILED if failed(checks) else EXIT_OK
    counts = {status: sum(c.status == status for c in checks) for status in _LABEL}
    if as_json:
        emit_json(
            {
                "store": settings.store,
                "ok": code == EXIT_OK,
                "counts": counts,
                "checks": [check.to_dict() for check in checks],
            }
        )
    else:
        console = Console(highlight=False)
        for check in checks:
            console.print(render_check(check), soft_wrap=True)
        summary = f"{counts['ok']} ok, {counts['warn']} warning(s), {counts['fail']} failed" + (
            f", {counts['skip']} not checked" if counts["skip"] else ""
        )
        console.print(Text(summary, style="bold"), soft_wrap=True)
    raise typer.Exit(code)
