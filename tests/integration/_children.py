"""Child processes of the integration tests: our own interpreter, side by side."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

Run = subprocess.CompletedProcess[str]

ROOT = Path(__file__).resolve().parents[2]


def side_by_side(argvs: Sequence[Sequence[str]], env: dict[str, str], timeout: float) -> list[Run]:
    """Start every command at once (from the repository root, stdin closed), wait for
    each; their results in order. A command still running when this ends is killed."""
    procs = [
        subprocess.Popen(  # noqa: S603 - our own interpreter and modules
            list(argv),
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for argv in argvs
    ]
    runs: list[Run] = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=timeout)
            runs.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return runs
