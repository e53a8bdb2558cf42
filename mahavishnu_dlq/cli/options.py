"""What the operator's commands share: option types, the filter they build, small helpers.

The filter options (``--status``, ``--category``, ``--workflow``, ``--since``,
``--until``, ``--text``, ``--fingerprint``) are declared once here and used by
``list`` and the bulk commands alike (``replay``, ``retry``, ``archive``, ``purge``,
which also share ``--older-than``, ``--rate``, ``--dry-run``, ``--background`` and
``--wait``); :func:`task_filter` turns them into a
:class:`~mahavishnu_dlq.models.TaskFilter`, checking them before anything opens.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mahavishnu_dlq.cli.arguments import parse_choices, parse_moment, parse_text
from mahavishnu_dlq.cli.common import APP_ENV_VAR, EXIT_FAILED, CliState, fail
from mahavishnu_dlq.cli.terminal import escape_line
from mahavishnu_dlq.limits import MAX_NAME_CHARS
from mahavishnu_dlq.states import DeadLetterStatus, ErrorCategory

if TYPE_CHECKING:
    from mahavishnu_dlq.models import FailedTask, TaskFilter

__all__ = [
    "FINISHED",
    "REPLAYABLE",
    "AppOption",
    "BackgroundOption",
    "CategoryOption",
    "DryRunOption",
    "FingerprintOption",
    "JsonOption",
    "OlderThanOption",
    "RateOption",
    "ReplayStatusOption",
    "SinceOption",
    "StatusOption",
    "TextOption",
    "UntilOption",
    "WaitOption",
    "WorkflowOption",
    "YesOption",
    "completer",
    "confirm",
    "iso",
    "names",
    "needs_app",
    "state_of",
    "task_filter",
    "task_json",
]

FINISHED = (DeadLetterStatus.COMPLETED, DeadLetterStatus.ARCHIVED)
#: What ``replay --status`` takes: a completed or archived task is never made due again.
REPLAYABLE = (DeadLetterStatus.PENDING, DeadLetterStatus.RETRYING, DeadLetterStatus.EXHAUSTED)


def state_of(ctx: typer.Context) -> CliState:
    """The global options' state (a fresh default one when a command runs alone)."""
    state = ctx.find_object(CliState)
    return state if state is not None else CliState()


def task_json(task: FailedTask) -> dict[str, Any]:
    return task.model_dump(mode="json")


# -- shared options ----------------------------------------------------------------------


def completer(values: Sequence[str]) -> Callable[[str], list[str]]:
    """Shell completion of a comma-separated choice: the values that start the last
    part, after the parts already given (``pending,ex`` -> ``pending,exhausted``)."""

    def complete(incomplete: str) -> list[str]:
        *given, last = incomplete.split(",")
        head = "".join(f"{part}," for part in given)
        return [head + value for value in values if value.startswith(last.lower())]

    return complete


JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON (shape: docs/cli.md).")]
StatusOption = Annotated[
    list[str] | None,
    typer.Option(
        "--status",
        "-s",
        metavar="STATUS[,STATUS]",
        help="pending, retrying, exhausted, completed, archived (repeat or comma-separate).",
        autocompletion=completer([status.value for status in DeadLetterStatus]),
    ),
]
ReplayStatusOption = Annotated[
    list[str] | None,
    typer.Option(
        "--status",
        "-s",
        metavar="STATUS[,STATUS]",
        help="pending, retrying, exhausted: the replayable ones (repeat or comma-separate).",
        autocompletion=completer([status.value for status in REPLAYABLE]),
    ),
]
CategoryOption = Annotated[
    list[str] | None,
    typer.Option(
        "--category",
        metavar="CATEGORY[,CATEGORY]",
        help="transient, network, resource, permission, validation, permanent.",
        autocompletion=completer([category.value for category in ErrorCategory]),
    ),
]
WorkflowOption = Annotated[
    list[str] | None,
    typer.Option(
        "--workflow", "-w", metavar="NAME[,NAME]", help="Workflow name (repeat or comma-separate)."
    ),
]
SinceOption = Annotated[
    str | None,
    typer.Option(
        "--since",
        metavar="TIME|AGE",
        help="Failed at or after: an ISO time (UTC unless it has a zone) or an age (2h, 7d).",
    ),
]
UntilOption = Annotated[
    str | None,
    typer.Option("--until", metavar="TIME|AGE", help="Failed before: an ISO time or an age."),
]
TextOption = Annotated[
    str | None,
    typer.Option(
        "--text",
        "-t",
        metavar="TEXT",
        help="Case-insensitive substring of the id, workflow, first or last error, error type "
        "or fingerprint.",
    ),
]
FingerprintOption = Annotated[
    str | None,
    typer.Option("--fingerprint", metavar="FINGERPRINT", help="Exactly this error fingerprint."),
]
AppOption = Annotated[
    str | None,
    typer.Option(
        "--app",
        "-A",
        metavar="MODULE:ATTR",
        help="Your queue or handlers (overrides the global --app and $MAHAVISHNU_DLQ_APP).",
    ),
]
YesOption = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
OlderThanOption = Annotated[
    str | None,
    typer.Option(
        "--older-than",
        metavar="AGE",
        help="Failed at least this long ago (30d, 12h).",
    ),
]
RateOption = Annotated[
    str | None,
    typer.Option(
        "--rate", metavar="N/s", help="At most this many tasks per second (10/s, 600/min)."
    ),
]
DryRunOption = Annotated[
    bool,
    typer.Option("--dry-run", help="Count what would be done, by status, category and workflow."),
]
BackgroundOption = Annotated[
    bool,
    typer.Option(
        "--background", help="Start the job, print its id and exit; the processors run it."
    ),
]
WaitOption = Annotated[
    float | None,
    typer.Option(
        "--wait",
        metavar="SECONDS",
        min=0,
        max=3600,
        help="Run the job here if no processor took it within this time (default: 3).",
    ),
]


def task_filter(
    status: list[str] | None,
    category: list[str] | None,
    workflow: list[str] | None,
    since: str | None,
    until: str | None,
    text: str | None,
    fingerprint: str | None,
) -> Callable[[datetime], TaskFilter]:
    """The TaskFilter the filter options describe, as of a given "now" (ages count back
    from the queue's clock). Checked at once: a bad value exits 2 before anything opens."""

    def build(now: datetime) -> TaskFilter:
        from mahavishnu_dlq.models import TaskFilter  # noqa: PLC0415 - not for --help

        return TaskFilter(
            status=parse_choices(status, DeadLetterStatus, option="--status") or None,
            error_category=parse_choices(category, ErrorCategory, option="--category") or None,
            workflow=names(workflow, option="--workflow"),
            since=None if since is None else parse_moment(since, now, option="--since"),
            until=None if until is None else parse_moment(until, now, option="--until"),
            text=None if not text else parse_text(text, option="--text"),
            fingerprint=(
                None if fingerprint is None else parse_text(fingerprint, option="--fingerprint")
            ),
        )

    build(datetime.now(timezone.utc))
    return build


def names(values: list[str] | None, *, option: str = "--workflow") -> tuple[str, ...] | None:
    """Repeated and/or comma-separated names, in order, without repeats; each at most
    512 characters of valid Unicode (BadParameter otherwise)."""
    names = [n.strip() for value in values or () for n in value.split(",") if n.strip()]
    for name in names:
        parse_text(name, option=option, max_chars=MAX_NAME_CHARS)
    return tuple(dict.fromkeys(names)) or None


def iso(value: datetime | None) -> str | None:
    """A time as the records' JSON has it (ISO 8601, UTC as 'Z')."""
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def confirm(question: str) -> None:
    """Ask on stderr (stdout stays data); anything but yes ends the command (exit 1)."""
    sys.stderr.write(f"{escape_line(question)} [y/N]: ")
    sys.stderr.flush()
    try:
        answer = sys.stdin.readline()
    except (OSError, UnicodeDecodeError, ValueError):  # unreadable input is no "yes"
        answer = ""
    if not sys.stdin.isatty():
        sys.stderr.write("\n")  # the answer was not echoed: end the question's line
    if answer.strip().lower() not in ("y", "yes"):
        fail("aborted: nothing was changed (pass --yes to skip this question)", EXIT_FAILED)


def needs_app(state: CliState, app: str | None, why: str) -> str:
    spec = state.app_spec(app)
    if spec is None:
        fail(f"{why}: name your queue or handlers with --app MODULE:ATTR (or ${APP_ENV_VAR})")
    return spec
