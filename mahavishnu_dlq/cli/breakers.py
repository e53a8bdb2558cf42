"""``breaker list|open|close``: each workflow's circuit breaker, and forcing one.

The breakers are records in the store that every processor reads before it claims
(:mod:`mahavishnu_dlq.downstream`), so these work from any shell: a breaker opened
here stops every processor sharing the store from claiming the workflow's tasks at
its next claim, until ``breaker close``. Opening and closing print one line saying
what changed and who did it (``user@host``, as the library records it); the library
logs the change too (``dlq.breaker.open``/``close``, with ``by``), shown with ``-v``.
A workflow name is checked before anything opens: 1-512 printable characters (exit
status 2 otherwise).
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from mahavishnu_dlq.cli.arguments import MAX_REASON_CHARS, parse_text, parse_workflow
from mahavishnu_dlq.cli.common import PROG, emit_json, run
from mahavishnu_dlq.cli.options import JsonOption, iso, state_of
from mahavishnu_dlq.cli.render import breaker_until, render_breakers
from mahavishnu_dlq.cli.terminal import EscapingRichHandler, say
from mahavishnu_dlq.downstream import Breaker, BreakerPolicy, BreakerState

if TYPE_CHECKING:
    from mahavishnu_dlq.queue import DeadLetterQueue

__all__ = ["breaker_close", "breaker_json", "breaker_list", "breaker_open", "register"]

WorkflowArgument = Annotated[
    str, typer.Argument(metavar="WORKFLOW", help="The workflow's name, as its tasks carry it.")
]
ReasonOption = Annotated[
    str | None,
    typer.Option(
        "--reason", "-r", metavar="TEXT", help="Why: stored with the breaker (breaker list)."
    ),
]


def breaker_json(breaker: Breaker, now: datetime, policy: BreakerPolicy) -> dict[str, Any]:
    """A breaker as ``--json`` prints it: the keys of ``get_statistics()["breakers"]``
    values, plus ``workflow`` and ``reason``."""
    return {
        "workflow": breaker.workflow,
        "state": breaker.state.value,
        "since": iso(breaker.since),
        "open_until": iso(breaker.open_until),
        "failure_ratio": round(breaker.failure_ratio(now, policy), 4),
        "trips": breaker.trips,
        "by": breaker.by,
        "reason": breaker.reason,
        "enabled": policy.enabled,
    }


def breaker_list(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Every stored circuit breaker: state, until when, who forced it.

    Columns: workflow, state, since, until ("until closed": an operator opened it),
    failures (the share of sick outcomes in its window), trips in a row, and who
    opened or closed it by hand, with the reason given. A workflow without one is
    closed.
    """

    async def body(dlq: DeadLetterQueue) -> tuple[list[dict[str, Any]], datetime]:
        now = dlq.clock.now()
        found = await dlq.list_breakers()
        return [breaker_json(b, now, dlq.downstream.policy(b.workflow)) for b in found], now

    rows, now = run(state_of(ctx), body, create=False)
    if as_json:
        emit_json({"breakers": rows, "count": len(rows)})
    elif not rows:
        say("no circuit breakers stored: every workflow's is closed")
    else:
        console = Console()
        console.print(render_breakers(rows, now, reasons=True, width=console.width))
        console.print(f"{len(rows)} breaker(s)")


def _was(before: Mapping[str, Any] | None, now: datetime) -> str:
    """The state a breaker was in, in words."""
    if before is None:
        return "closed"
    state = str(before["state"]).replace("_", "-")
    if before["state"] != BreakerState.OPEN.value:
        return state
    until = breaker_until(before, now)
    if until == "until closed":
        return f"open until closed, by {before.get('by') or '?'}"
    return f"open after {before['trips']} trip(s), half-open {'now' if until == 'due' else until}"


def _argv_word(workflow: str) -> str:
    """``workflow`` as a shell word after the command (``--`` first if it looks like an
    option)."""
    return ("-- " if workflow.startswith("-") else "") + shlex.quote(workflow)


_FORCED = ("dlq.breaker.open", "dlq.breaker.close")


@contextmanager
def _reported_here(verbose: int) -> Iterator[None]:
    """The command's line says what changed and who did it: without ``-v``, the
    library's ``dlq.breaker.open``/``close`` record is kept off the terminal, which it
    would tell twice. Only the CLI's own log handler skips it: any other (a host's,
    shipping the log) still gets the record, ``by`` and all."""
    handlers = [h for h in logging.getLogger().handlers if isinstance(h, EscapingRichHandler)]

    def keep(record: logging.LogRecord) -> bool:
        return getattr(record, "action", None) not in _FORCED

    if verbose:
        handlers = []
    for handler in handlers:
        handler.addFilter(keep)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(keep)


def _force(
    ctx: typer.Context, workflow: str, reason: str | None, as_json: bool, to: BreakerState
) -> None:
    parse_workflow(workflow)
    why = parse_text(reason or "", option="--reason", max_chars=MAX_REASON_CHARS) or None
    state = state_of(ctx)

    async def body(
        dlq: DeadLetterQueue,
    ) -> tuple[dict[str, Any] | None, dict[str, Any], datetime]:
        now = dlq.clock.now()
        policy = dlq.downstream.policy(workflow)
        before = next((b for b in await dlq.list_breakers() if b.workflow == workflow), None)
        change = dlq.open_breaker if to is BreakerState.OPEN else dlq.close_breaker
        with _reported_here(state.verbose):
            after = await change(workflow, reason=why)
        shown = None if before is None else breaker_json(before, now, policy)
        return shown, breaker_json(after, now, policy), now

    before, after, now = run(state, body)
    if as_json:
        emit_json({**after, "was": "closed" if before is None else before["state"]})
        return
    was = _was(before, now)
    name, by = repr(workflow), after["by"]
    if to is BreakerState.OPEN:
        say(
            f"opened the circuit breaker of workflow {name} (was {was}) by {by}: no processor "
            f"claims its tasks until {PROG} breaker close {_argv_word(workflow)}"
        )
    elif before is None or before["state"] == BreakerState.CLOSED.value:
        say(f"the circuit breaker of workflow {name} was closed already; closed again by {by}")
    else:
        say(
            f"closed the circuit breaker of workflow {name} (was {was}) by {by}: "
            "processors claim its tasks again"
        )


def breaker_open(
    ctx: typer.Context,
    workflow: WorkflowArgument,
    reason: ReasonOption = None,
    as_json: JsonOption = False,
) -> None:
    """Open a workflow's breaker: processors leave its tasks alone.

    No processor claims them until breaker close (a breaker the failures tripped closes by itself).
    The tasks' retries wait, untouched; an attempt already running finishes.
    """
    _force(ctx, workflow, reason, as_json, BreakerState.OPEN)


def breaker_close(
    ctx: typer.Context,
    workflow: WorkflowArgument,
    reason: ReasonOption = None,
    as_json: JsonOption = False,
) -> None:
    """Close a workflow's breaker now: processors claim its tasks again.

    Its window of attempt outcomes starts empty, and its trip count at zero.
    """
    _force(ctx, workflow, reason, as_json, BreakerState.CLOSED)


def register(app: typer.Typer, *, context_settings: Mapping[str, Any]) -> None:
    """Add the ``breaker`` group to ``app``."""
    group = typer.Typer(
        name="breaker",
        help="List, open and close the circuit breaker of each workflow.",
        no_args_is_help=True,
        context_settings=dict(context_settings),
    )
    for name, function in (
        ("list", breaker_list),
        ("open", breaker_open),
        ("close", breaker_close),
    ):
        group.command(name)(function)
    app.add_typer(group)
