"""The ``mahavishnu-dlq`` command line: Typer commands, Rich output (the ``cli`` extra).

:func:`main` is the console script (and ``python -m mahavishnu_dlq``). Global
options come before the command: ``--config FILE`` names the YAML settings
(otherwise ``$MAHAVISHNU_DLQ_CONFIG``, then ``MAHAVISHNU_DLQ_*`` variables and the
defaults) and ``-v`` raises the log level. Settings are loaded when a command
first needs them; a configuration problem is one line on stderr and exit status 2,
never a traceback. Commands are plain functions registered in :func:`build_app`;
the renderers (:func:`render_statistics`, :func:`render_task`) are shared by them.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Annotated, Any, NoReturn

import anyio

from mahavishnu_dlq import __version__
from mahavishnu_dlq.demo import DemoResult, run_demo
from mahavishnu_dlq.errors import ConfigurationError
from mahavishnu_dlq.models import DeadLetterStatus, FailedTask
from mahavishnu_dlq.settings import DLQSettings

try:
    import typer
    from rich import box, progress
    from rich.columns import Columns
    from rich.console import Console, Group, RenderableType
    from rich.live import Live
    from rich.logging import RichHandler
    from rich.panel import Panel
    from rich.rule import Rule
    from rich.table import Table
    from rich.text import Text
except ModuleNotFoundError as exc:  # the 'cli' extra is not installed: main() says so
    _MISSING_EXTRA: ModuleNotFoundError | None = exc
else:
    _MISSING_EXTRA = None

__all__ = ["MISSING_EXTRA_MESSAGE", "CliState", "build_app", "main"]

PROG = "mahavishnu-dlq"
MISSING_EXTRA_MESSAGE = "the CLI needs the 'cli' extra: pip install 'mahavishnu-dlq[cli]'"

STATUS_STYLE = {
    "pending": "yellow",
    "retrying": "cyan",
    "exhausted": "red",
    "completed": "green",
    "archived": "bright_black",
}
OUTCOME_STYLE = {"success": "green", "running": "cyan", "deferred": "yellow"}


# -- global state and errors ------------------------------------------------------------


def one_line(message: str) -> str:
    """A (possibly multi-line) error message as one line: header, then problems by '; '."""
    head, *rest = [line.strip() for line in message.splitlines() if line.strip()] or [""]
    return " ".join([head, "; ".join(line.removeprefix("- ") for line in rest)]).strip()


def fail(message: str, code: int = 2) -> NoReturn:
    """Report ``message`` on one line of stderr and exit with ``code``."""
    sys.stderr.write(f"{PROG}: {one_line(message)}\n")
    raise typer.Exit(code)


@dataclass
class CliState:
    """What the global options decided; settings are loaded on first use."""

    config: Path | None = None
    verbose: int = 0
    _settings: DLQSettings | None = field(default=None, repr=False)

    def settings(self) -> DLQSettings:
        """The validated settings; a configuration problem ends the command (exit 2)."""
        if self._settings is None:
            try:
                self._settings = DLQSettings.load(self.config)
            except ConfigurationError as exc:
                fail(str(exc))
        return self._settings


def _state(ctx: typer.Context) -> CliState:
    state = ctx.find_object(CliState)
    return state if state is not None else CliState()


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
    verbose: Annotated[
        int, typer.Option("--verbose", "-v", count=True, help="Log more: -v info, -vv debug.")
    ] = 0,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    """Inspect and operate the mahavishnu dead-letter queue."""
    ctx.obj = CliState(config=config, verbose=verbose)
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    handler = RichHandler(console=Console(stderr=True), show_path=False)
    logging.basicConfig(level=level, format="%(message)s", handlers=[handler], force=True)


# -- renderers ------------------------------------------------------------------------------


def _when(value: datetime | None, *, date: bool = True) -> str:
    if value is None:
        return "-"
    text = value.strftime("%Y-%m-%d %H:%M:%S.%f" if date else "%H:%M:%S.%f")[:-3]
    return text + (" UTC" if date else "")


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("h", 3600), ("min", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.1f} s"


def _table(title: str, *columns: str, **options: Any) -> Table:
    """A titled table; ``columns`` named "+name" are right-aligned."""
    options = {"box": box.SIMPLE_HEAD, "title_style": "bold", "title_justify": "left", **options}
    table = Table(title=title, **options)
    for name in columns:
        table.add_column(name.lstrip("+"), justify="right" if name[0] == "+" else "left")
    return table


def _counts(
    title: str, counts: Mapping[str, int], styles: Mapping[str, str] | None = None
) -> Table:
    table = _table(title, "name", "+count", box=None, show_header=False, title_justify="center")
    for name, count in counts.items():
        style = (styles or {}).get(name, "") if count else "bright_black"
        table.add_row(Text(name, style=style), Text(str(count), style=style))
    return table


def render_statistics(stats: Mapping[str, Any]) -> RenderableType:
    """``DeadLetterQueue.get_statistics()`` as tables: counts, queue health, top fingerprints."""
    queue = _table("queue", "name", "value", box=None, show_header=False, title_justify="center")
    running = "running" if stats.get("is_processor_running") else "stopped"
    queue.add_row("backend", str(stats.get("backend", "-")))
    queue.add_row(
        "open tasks",
        f"{stats['queue_size']} / {stats['max_size']} ({stats['utilization_percent']}%)",
    )
    queue.add_row("stored", str(stats.get("total_stored", "-")))
    queue.add_row("oldest pending", _age(stats.get("oldest_pending_age_seconds")))
    queue.add_row("processor", f"{running}, every {stats['retry_interval_seconds']:g} s")
    tables = [
        _counts("status", stats["status_breakdown"], STATUS_STYLE),
        _counts("error categories", stats["error_categories"]),
        _counts("retry policies", stats["retry_policies"]),
        _counts("lifetime counters", stats["lifetime_stats"]),
    ]
    fingerprints = _table(
        "top fingerprints (open tasks)", "+tasks", "error type", "example error", "fingerprint"
    )
    for fp in stats.get("top_fingerprints", []):
        error_type = str(fp["error_type"]).rsplit(".", 1)[-1]
        fingerprints.add_row(str(fp["count"]), error_type, fp["example_error"], fp["fingerprint"])
    if not stats.get("top_fingerprints"):
        fingerprints.add_row("0", "-", "no open tasks", "-")
    return Group(Columns(tables, padding=(1, 3)), Text(), queue, Text(), fingerprints)


def _next_retry(task: FailedTask) -> Text:
    if task.next_retry_at is not None:
        return Text(_when(task.next_retry_at))
    reason = {
        DeadLetterStatus.PENDING: f"none: awaiting an operator (policy {task.retry_policy.value})",
        DeadLetterStatus.EXHAUSTED: "none: retries exhausted",
        DeadLetterStatus.COMPLETED: f"none: completed {_when(task.completed_at)}",
    }.get(task.status, "none")
    return Text(reason, style="bright_black")


def render_task(task: FailedTask, title: str | None = None) -> Panel:
    """One failed task: what failed, how it is classified and scheduled, its attempts."""
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold", no_wrap=True)
    facts.add_column(overflow="fold")
    facts.add_row("id", task.task_id)
    facts.add_row("workflow", task.workflow or "-")
    facts.add_row("status", Text(task.status.value, style=STATUS_STYLE[task.status.value]))
    facts.add_row("category", task.error_category.value)
    facts.add_row("policy", task.retry_policy.value)
    facts.add_row(
        "retries",
        f"{task.retry_count}/{task.max_retries}"
        f" ({task.total_attempts} run{'s' if task.total_attempts != 1 else ''} in all)",
    )
    error_type = task.error_type.rsplit(".", 1)[-1]
    facts.add_row("error", Text.assemble((error_type, "magenta"), ": ", task.error))
    if task.last_error and task.last_error != task.error:
        facts.add_row("last error", task.last_error)
    facts.add_row("failed at", _when(task.failed_at))
    facts.add_row("next retry", _next_retry(task))
    parts: list[RenderableType] = [facts]
    if task.attempts:
        history = _table("attempts", "+#", "trigger", "started", "+took", "outcome", expand=True)
        history.add_column("error", no_wrap=True, overflow="ellipsis", ratio=1)
        for attempt in task.attempts:
            took = "-"
            if attempt.finished_at is not None:
                took = f"{(attempt.finished_at - attempt.started_at).total_seconds() * 1000:.0f} ms"
            outcome = attempt.outcome.value
            history.add_row(
                str(attempt.number),
                attempt.trigger,
                _when(attempt.started_at, date=False),
                took,
                Text(outcome, style=OUTCOME_STYLE.get(outcome, "red")),
                attempt.error or "",
            )
        parts.append(history)
    else:
        parts.append(Text("no retry attempts yet", style="bright_black"))
    style = STATUS_STYLE.get(task.status.value, "")
    return Panel(Group(*parts), title=title or task.task_id, title_align="left", border_style=style)


# -- demo -----------------------------------------------------------------------------------


class _DemoView:
    """The live display of a running demo: phase 1 progress bar, phase 2 status counts."""

    def __init__(self, total: int) -> None:
        self.progress = progress.Progress(
            progress.SpinnerColumn(finished_text="[green]✓"),
            progress.TextColumn("[bold]{task.description}"),
            progress.BarColumn(bar_width=20),
            progress.MofNCompleteColumn(),
            progress.TextColumn("{task.fields[detail]}"),
            progress.TimeElapsedColumn(),
        )
        self.bar = self.progress.add_task("phase 1 · workflows", total=total, detail="")
        self.snapshot: dict[str, Any] = {}

    def update(self, snapshot: dict[str, Any]) -> None:
        self.snapshot = snapshot
        detail = f"[green]{snapshot['succeeded']} ok[/] · [red]{snapshot['failed']} → DLQ[/]"
        self.progress.update(self.bar, completed=snapshot["executed"], detail=detail)

    def __rich__(self) -> RenderableType:
        snap = self.snapshot
        if snap.get("phase") not in ("retry", "done"):
            return self.progress
        status, life = snap["status_breakdown"], snap["lifetime_stats"]
        rows = {
            "scheduled": (snap["scheduled"], "yellow"),
            "retrying now": (snap["retrying"], "cyan"),
            "completed": (status["completed"], "green"),
            "exhausted": (status["exhausted"], "red"),
            "awaiting operator": (snap["awaiting_manual"], "yellow"),
        }
        stored = max(1, sum(count for count, _ in rows.values()))
        table = _table(
            f"phase 2 · retry processor  {snap['elapsed']:.1f} s",
            "state",
            "+tasks",
            "bar",
            caption=f"retries: {life['retry_success']} succeeded, {life['retry_failed']} failed",
            caption_justify="left",
            box=None,
            show_header=False,
        )
        for name, (count, style) in rows.items():
            bar = Text("━" * round(30 * count / stored), style=style)
            table.add_row(Text(name, style=style if count else "bright_black"), str(count), bar)
        return Group(self.progress, table)


def _by_workflow(rows: Mapping[str, Mapping[str, int]]) -> Table:
    keys = ("runs", "ok", "failed", "completed", "exhausted", "pending")
    table = _table(
        "workflows",
        "workflow",
        *(f"+{key}" for key in keys),
        caption="failed: stored in the DLQ by the first run; completed, exhausted, pending:"
        " their status after the retry phase",
        caption_justify="left",
    )
    for workflow, row in rows.items():
        table.add_row(workflow, *(Text(str(row[k]), STATUS_STYLE.get(k, "")) for k in keys))
    return table


def render_demo(result: DemoResult) -> RenderableType:
    """The outcome of a demo run: summary, per-workflow counts, statistics, examples."""
    counts = result.counts
    summary = Text.assemble(
        (f"{result.count} workflow run{'s' if result.count != 1 else ''}", "bold"),
        f" (seed {result.seed}) in {result.execute_seconds:.1f} s: ",
        (f"{counts['succeeded']} succeeded", "green"),
        ", ",
        (f"{counts['failed']} failed", "red"),
        " and were stored in the dead-letter queue",
    )
    if counts["stored"] != counts["failed"]:
        summary.append(f" ({counts['failed'] - counts['stored']} could not be stored)", "red")
    summary.append(
        f".\nThe retry processor {'ran for' if result.timed_out else 'settled them in'}"
        f" {result.retry_seconds:.1f} s"
        f" ({counts['workflow_calls']} workflow calls; {result.elapsed_seconds:.1f} s in all)."
    )
    if result.timed_out:
        summary.append("\nThe retry phase hit --timeout before it settled.", style="bold red")
    panels = [
        render_task(task, f"example · {name.replace('_', ' ')} · {task.task_id}")
        for name, task in result.examples.items()
        if task is not None
    ]
    return Group(
        summary,
        Text(),
        _by_workflow(result.by_workflow),
        Rule("statistics", style="bright_black"),
        render_statistics(result.statistics),
        Rule("example failures", style="bright_black"),
        *panels,
    )


def demo(
    ctx: typer.Context,
    count: Annotated[
        int, typer.Option("--count", "-n", min=1, max=5000, help="How many workflow runs.")
    ] = 60,
    seed: Annotated[
        int | None,
        typer.Option(help="Seed of which runs fail and how often (default: random, shown)."),
    ] = None,
    timeout: Annotated[
        float, typer.Option(min=0.1, help="Longest wait, in seconds, for the retry phase.")
    ] = 50.0,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the statistics and examples as JSON.")
    ] = False,
) -> None:
    """Run simulated workflows through the real queue and retry processor, then show the result.

    The memory store and a retry policy shortened to fractions of a second are
    used; --config contributes classifier rules, max_size and attempts_kept.
    """
    state = _state(ctx)
    settings = state.settings()
    if state.verbose == 0:  # the demo's failures are expected: its tables show them
        logging.getLogger("mahavishnu_dlq").setLevel(logging.ERROR)
    run = partial(run_demo, count, seed=seed, timeout=timeout, settings=settings)
    if as_json:
        result = anyio.run(run)
        sys.stdout.write(json.dumps(result.to_dict(), indent=2) + "\n")
    else:
        console = Console()
        view = _DemoView(count)
        with Live(view, console=console, refresh_per_second=12, transient=True):
            result = anyio.run(partial(run, on_progress=view.update))
        console.print(render_demo(result))
    if result.timed_out:
        raise typer.Exit(1)


# -- the application ------------------------------------------------------------------------


def build_app() -> typer.Typer:
    """The Typer application: the global options and every command."""
    app = typer.Typer(
        name=PROG,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_show_locals=False,  # locals may hold secrets
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    app.callback()(_root)
    app.command("demo")(demo)
    return app


def main(argv: Sequence[str] | None = None) -> None:
    """The ``mahavishnu-dlq`` console script; exits with the command's status."""
    if _MISSING_EXTRA is not None:
        sys.stderr.write(MISSING_EXTRA_MESSAGE + "\n")
        raise SystemExit(2)
    build_app()(args=None if argv is None else list(argv), prog_name=PROG)
