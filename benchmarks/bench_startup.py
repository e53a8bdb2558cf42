"""Start-up time: ``import mahavishnu_dlq`` and ``mahavishnu-dlq --help``, next to their floors.

Run ``python -m benchmarks.bench_startup [--runs 5] [--compare DIR]``.

Each row is a fresh interpreter (``subprocess.run``), timed from the parent with
``time.perf_counter_ns`` — what a user waits for, interpreter start-up included.
The baselines are measured in the same run, interleaved with what they are compared
with (one run of every command per round), so the *ratios* hold up on a noisy shared
machine better than the absolute numbers:

- ``python -c "pass"``: the interpreter alone, the floor of every row;
- ``python -c "import pydantic"``: the floor of anything that builds a model;
- ``python -c "import typer"``: the floor of the command line, and with the Rich
  parts its commands render with (progress, syntax, tables) what the command
  modules import before ``--help`` can print.

One round before the measured ones warms the file cache and ``__pycache__``. The
targets (issue 16) are 150 ms for the import and 250 ms for ``--help``. ``--compare
DIR`` adds the package's rows again for another copy of ``mahavishnu_dlq`` in DIR
(``git archive <commit> mahavishnu_dlq | tar -x -C DIR``), run from DIR with
``PYTHONPATH=DIR`` in the same rounds: before and after under the same load. This is a
measurement, not a test: nothing here fails a build (``tests/unit/test_startup.py``
guards *what* is imported, without timing). The table is Markdown, ready to paste
into ``docs/performance.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Command", "commands", "main", "measure", "table"]


@dataclass(frozen=True)
class Command:
    """One row: what runs, what it is compared with, and its target in milliseconds."""

    label: str
    argv: tuple[str, ...]
    baseline: str | None = None
    target_ms: float | None = None
    package_dir: Path | None = None  # another copy of the package, imported instead


def _python(code: str) -> tuple[str, ...]:
    return (sys.executable, "-c", code)


def _console_script() -> tuple[str, ...]:
    script = Path(sys.executable).with_name("mahavishnu-dlq")
    if script.exists():
        return (str(script), "--help")
    return (sys.executable, "-m", "mahavishnu_dlq", "--help")  # pragma: no cover - not installed


def commands(compare: Path | None = None) -> list[Command]:
    """The rows, baselines first; with ``compare``, the package's rows for that copy too."""
    rows = [
        Command('python -c "pass"', _python("pass")),
        Command('python -c "import pydantic"', _python("import pydantic"), 'python -c "pass"'),
        Command('python -c "import typer"', _python("import typer"), 'python -c "pass"'),
        Command(
            'python -c "import typer, rich.progress, rich.syntax"',
            _python("import typer, rich.progress, rich.syntax, rich.table"),
            'python -c "pass"',
        ),
        Command(
            'python -c "import mahavishnu_dlq"',
            _python("import mahavishnu_dlq"),
            'python -c "import pydantic"',
            150.0,
        ),
        Command(
            'python -c "from mahavishnu_dlq import DeadLetterQueue"',
            _python("from mahavishnu_dlq import DeadLetterQueue"),
            'python -c "import pydantic"',
        ),
        Command("mahavishnu-dlq --help", _console_script(), 'python -c "import typer"', 250.0),
    ]
    if compare is not None:
        rows += [
            Command(f"{row.label} ({compare})", row.argv, row.baseline, None, compare)
            for row in rows
            if row.target_ms is not None or "mahavishnu_dlq" in row.label
        ]
    return rows


def _run_once(command: Command) -> float:
    """Milliseconds for one run of ``command``; its output is discarded."""
    env, cwd = None, None
    if command.package_dir is not None:  # ``-c`` puts the working directory first
        env = {**os.environ, "PYTHONPATH": str(command.package_dir)}
        cwd = command.package_dir
    start = time.perf_counter_ns()
    subprocess.run(  # noqa: S603 - our own commands
        command.argv, check=True, stdout=subprocess.DEVNULL, env=env, cwd=cwd
    )
    return (time.perf_counter_ns() - start) / 1e6


def measure(rows: list[Command], runs: int) -> dict[str, list[float]]:
    """Milliseconds per run of every command, one run of each per round after a warm-up."""
    for command in rows:
        _run_once(command)
    times: dict[str, list[float]] = {command.label: [] for command in rows}
    for _ in range(runs):
        for command in rows:
            times[command.label].append(_run_once(command))
    return times


def table(rows: list[Command], times: dict[str, list[float]]) -> str:
    """The Markdown table: median, minimum, the baseline's median, ratio, target, result."""
    median = {label: statistics.median(values) for label, values in times.items()}
    lines = [
        "| command | ms (median) | ms (min) | baseline | ratio | target | result |",
        "|---|---:|---:|---|---:|---:|---|",
    ]
    for command in rows:
        ratio = "—"
        if command.baseline is not None:
            ratio = f"{median[command.label] / median[command.baseline]:.2f}x"
        target, result = "—", "—"
        if command.target_ms is not None:
            target = f"≤ {command.target_ms:.0f} ms"
            result = "PASS" if median[command.label] <= command.target_ms else "FAIL"
        lines.append(
            f"| `{command.label}` | {median[command.label]:.0f} | "
            f"{min(times[command.label]):.0f} | {command.baseline or '—'} | {ratio} | "
            f"{target} | {result} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5, help="measured runs per command")
    parser.add_argument("--compare", type=Path, help="a directory with another copy of the package")
    args = parser.parse_args(argv)
    rows = commands(args.compare.resolve() if args.compare else None)
    times = measure(rows, args.runs)
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    sys.stdout.write(
        f"Python {platform.python_version()} on {platform.system()}, {os.cpu_count()} CPUs; "
        f"{args.runs} runs per command, interleaved; load average {load}\n\n"
    )
    sys.stdout.write(table(rows, times) + "\n")


if __name__ == "__main__":
    main()
