"""Running things from the CLI: the foreground processor, settings, and the demo.

``processor run`` is a foreground worker (like ``celery worker`` or ``rq worker``):
it claims due tasks with leases, so any number of them can run against one
OpenSearch index, and Ctrl-C / SIGTERM stop it gracefully (in-flight attempts go
back to pending). ``config show`` prints the effective settings with secrets
masked; ``config validate FILE`` checks a file as the library would load it.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import anyio
import typer
from rich import progress
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.rule import Rule
from rich.table import Table
from rich.text import Text

from mahavishnu_dlq.cli.arguments import count_parser
from mahavishnu_dlq.cli.common import EXIT_USAGE, PROG, emit_json, error_line, fail, run
from mahavishnu_dlq.cli.options import AppOption, JsonOption, state_of
from mahavishnu_dlq.cli.render import STATUS_STYLE, render_statistics, render_task, titled_table
from mahavishnu_dlq.cli.terminal import escape_block, escape_line, say, text_of
from mahavishnu_dlq.errors import ConfigurationError

if TYPE_CHECKING:
    from mahavishnu_dlq.demo import DemoResult
    from mahavishnu_dlq.queue import DeadLetterQueue

__all__ = ["register"]

_RESULT_KEYS = ("retry_success", "retry_failed", "exhausted")


# -- processor run ---------------------------------------------------------------------------


def _summary(
    dlq: DeadLetterQueue, before: dict[str, int], attempts: int | None = None
) -> dict[str, Any]:
    """What this run did (the queue's counters may predate it, with --app)."""
    summary: dict[str, Any] = {"worker_id": dlq.worker_id}
    if attempts is not None:
        summary["attempts"] = attempts
    return summary | {key: dlq.lifetime[key] - before[key] for key in _RESULT_KEYS}


async def _until_signalled(dlq: DeadLetterQueue, interval: float | None) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        await dlq.start_retry_processor(check_interval_seconds=interval)
        async for signum in signals:
            name = signal.Signals(signum).name
            say(f"{PROG}: {name}: stopping; in-flight attempts go back to pending", err=True)
            break
    await dlq.stop_retry_processor()


def processor_run(
    ctx: typer.Context,
    app: AppOption = None,
    concurrency: Annotated[
        int | None,
        typer.Option(
            metavar="N",
            parser=count_parser("--concurrency"),
            help="Attempts at once, 1-1000 (default: settings).",
        ),
    ] = None,
    interval: Annotated[
        float | None,
        typer.Option(
            metavar="SECONDS",
            min=0.01,
            max=3600,
            help="Seconds between checks for due tasks (default: retry_interval_seconds).",
        ),
    ] = None,
    drain: Annotated[
        bool, typer.Option("--drain", help="Retry what is due now, then exit (for cron and tests).")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Run the retry processor in the foreground until Ctrl-C or SIGTERM.

    It needs your handlers (--app). Any number of processors may run against one
    OpenSearch index: each claims tasks with a lease, so no task runs twice at once.
    """
    state = state_of(ctx)
    spec = state.app_spec(app)
    if spec is None:
        fail(
            "the processor runs your handlers: name your queue or handlers with "
            "--app MODULE:ATTR (or $MAHAVISHNU_DLQ_APP)"
        )
    if state.verbose == 0:  # show each retry's outcome unless asked to be quieter
        logging.getLogger("mahavishnu_dlq").setLevel(logging.INFO)

    async def body(dlq: DeadLetterQueue) -> dict[str, Any]:
        if concurrency is not None:
            dlq.concurrency = concurrency
        before = dict(dlq.lifetime)
        if drain:
            from mahavishnu_dlq.processor import RetryProcessor  # noqa: PLC0415 - not for --help

            attempts = await RetryProcessor(dlq, check_interval=interval).drain()
            return _summary(dlq, before, attempts)
        say(
            f"{PROG}: processor {dlq.worker_id} on {dlq.store.backend}, concurrency "
            f"{dlq.concurrency}, checking every {interval or dlq.retry_interval_seconds:g} s;"
            " Ctrl-C stops it",
            err=True,
        )
        await _until_signalled(dlq, interval)
        return _summary(dlq, before)

    summary = run(state, body, app=spec, degraded_ok=True)  # it recovers with the store
    if as_json:
        emit_json(summary)
    else:
        counts = ", ".join(f"{summary[key]} {key.replace('_', ' ')}" for key in _RESULT_KEYS)
        made = f"{summary['attempts']} attempts: " if "attempts" in summary else ""
        say(f"processor {summary['worker_id']} stopped; {made}{counts}")


# -- config show / validate -------------------------------------------------------------------


def config_show(
    ctx: typer.Context,
    origin: Annotated[
        bool,
        typer.Option(
            "--origin",
            help="Say where each value came from: default, file (and line) or environment "
            "(the variable); one dotted key a line.",
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """The effective settings (file, environment, defaults), secrets masked."""
    state = state_of(ctx)
    data = state.settings().redacted()
    from mahavishnu_dlq.settings import CONFIG_ENV_VAR  # noqa: PLC0415 - not for --help

    named = state.config or os.environ.get(CONFIG_ENV_VAR)
    if origin:
        _show_origins(data, Path(named) if named else None, as_json=as_json)
        return
    if as_json:
        emit_json(data)
        return
    source = f"{named}, " if named else "no file, "
    say(f"# effective settings: {source}MAHAVISHNU_DLQ_* environment, defaults; secrets masked")
    sys.stdout.write(_yaml(data))


def _show_origins(data: Mapping[str, Any], named: Path | None, *, as_json: bool) -> None:
    """``config show --origin``: each leaf, its value and where it came from."""
    from mahavishnu_dlq.cli.origins import leaves, origins  # noqa: PLC0415 - not for --help

    found = origins(data, named)
    values: dict[str, Any] = {}
    for path in leaves(data):
        value: Any = data
        for part in path:
            value = value[part]
        values[".".join(path)] = value
    if as_json:
        emit_json({key: {"value": values[key], "origin": where} for key, where in found.items()})
        return
    say(f"# effective settings and where each came from (file: {named or 'none'}); secrets masked")
    width = max(map(len, found), default=0)
    for key, where in found.items():
        say(f"{key.ljust(width)}  {json.dumps(values[key], ensure_ascii=False)}  # {where}")


def _yaml(data: Any) -> str:
    """``data`` as YAML; all ASCII, every character escaped in YAML's own way, when
    it holds a character the terminal must not see (PyYAML writes bidi controls,
    U+0085, U+2028 and U+2029 as they are)."""
    import yaml  # noqa: PLC0415 - not for --help

    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    if escape_block(text) != text:
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=False)
    return text


def config_validate(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="The YAML settings file.")],
    as_json: JsonOption = False,
) -> None:
    """Check FILE (with the MAHAVISHNU_DLQ_* environment) as the library would load it.

    Every problem is reported, one a line, with where its value came from (exit 2).
    """
    from mahavishnu_dlq.settings import DLQSettings  # noqa: PLC0415 - not for --help

    try:
        settings = DLQSettings.from_yaml(file)
    except Exception as exc:  # noqa: BLE001 - ConfigurationError, or what a hostile file raises
        error = text_of(exc)
        if not isinstance(exc, ConfigurationError):
            error = f"cannot load {file}: {type(exc).__name__}: {error}"
        header, *lines = error.splitlines() or [""]
        problems = [line.strip().removeprefix("- ") for line in lines if line.strip()]
        if as_json:
            emit_json(
                {
                    "file": str(file),
                    "valid": False,
                    "error": error,
                    "problems": problems or [header],
                }
            )
        if len(problems) < 2:  # one problem, one line
            fail(error)
        sys.stderr.write(f"{PROG}: {error_line(header)}\n")  # then one problem a line
        sys.stderr.writelines(f"  - {error_line(problem)}\n" for problem in problems)
        raise typer.Exit(EXIT_USAGE) from None
    if as_json:
        emit_json({"file": str(file), "valid": True, "store": settings.store})
    else:
        say(f"{file}: valid (store {settings.store}, max_size {settings.max_size})")


# -- demo -------------------------------------------------------------------------------------


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
        table = titled_table(
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
    table = titled_table(
        "workflows",
        "workflow",
        *(f"+{key}" for key in keys),
        caption="failed: stored in the DLQ by the first run; completed, exhausted, pending:"
        " their status after the retry phase",
        caption_justify="left",
    )
    for workflow, row in rows.items():
        cells = (Text(str(row[k]), STATUS_STYLE.get(k, "")) for k in keys)
        table.add_row(Text(escape_line(workflow)), *cells)
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
        render_statistics(result.statistics, counters=True),  # the demo's own work
        Rule("example failures", style="bright_black"),
        *panels,
    )


def demo(
    ctx: typer.Context,
    count: Annotated[
        int,
        typer.Option("--count", "-n", metavar="N", min=1, max=5000, help="How many workflow runs."),
    ] = 60,
    seed: Annotated[
        int | None,
        typer.Option(
            metavar="N", help="Seed of which runs fail and how often (default: random, shown)."
        ),
    ] = None,
    timeout: Annotated[
        float,
        typer.Option(
            metavar="SECONDS", min=0.1, max=3600, help="Longest wait for the retry phase."
        ),
    ] = 50.0,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the statistics and examples as JSON.")
    ] = False,
) -> None:
    """Run simulated workflows through the real queue and retry processor, then show the result.

    The memory store and a retry policy shortened to fractions of a second are
    used; --config contributes classifier rules, max_size and attempts_kept.
    """
    state = state_of(ctx)
    settings = state.settings()
    if state.verbose == 0:  # the demo's failures are expected: its tables show them
        logging.getLogger("mahavishnu_dlq").setLevel(logging.ERROR)
    from mahavishnu_dlq.demo import run_demo  # noqa: PLC0415 - not for --help

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


def register(app: typer.Typer, *, context_settings: Mapping[str, Any]) -> None:
    """Add ``processor run``, ``config show``/``validate`` and ``demo`` to ``app``."""
    groups: dict[str, tuple[str, dict[str, Callable[..., None]]]] = {
        "processor": ("Run the retry processor.", {"run": processor_run}),
        "config": (
            "Show or validate settings.",
            {"show": config_show, "validate": config_validate},
        ),
    }
    for name, (help_text, commands) in groups.items():
        group = typer.Typer(
            name=name, help=help_text, no_args_is_help=True, context_settings=dict(context_settings)
        )
        for command, function in commands.items():
            group.command(command)(function)
        app.add_typer(group)
    app.command("demo")(demo)
