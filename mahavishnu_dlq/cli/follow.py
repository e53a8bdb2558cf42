"""Following a bulk job from the command that started it: progress, running it here, Ctrl-C.

:func:`follow` polls the stored job (every :data:`POLL_SECONDS`) and shows a
progress bar on stderr — processed of matched, tasks per second, time left — while
a terminal is there. A retry processor sharing the store normally takes the job;
when none did within ``wait`` seconds, the command runs it itself
(``DeadLetterQueue.run_job``, leased like a processor's run), and follows on. A
retry job runs handlers, so it is run here only when the command has them
(``--app``); otherwise the command says once that it waits for a processor.

Ctrl-C stops following (and a run here, which gives the job back to the queue),
then asks on stderr whether to cancel the job or leave it to the processors.
The answer is read from stdin: a terminal is waited for; other input is read if
it comes within :data:`ANSWER_SECONDS` (a closed or silent stdin, as under cron,
leaves the job running). A second Ctrl-C leaves it running too.
"""

from __future__ import annotations

import select
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any, TextIO

import anyio
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.progress import Task as ProgressTask
from rich.text import Text

from mahavishnu_dlq.cli.common import PROG
from mahavishnu_dlq.cli.terminal import escape_line, say
from mahavishnu_dlq.errors import JobStateError
from mahavishnu_dlq.states import JobState

if TYPE_CHECKING:
    from mahavishnu_dlq.jobs import Job
    from mahavishnu_dlq.queue import DeadLetterQueue

__all__ = [
    "ANSWER_SECONDS",
    "POLL_SECONDS",
    "Followed",
    "follow",
    "means_cancel",
    "read_answer",
]

#: How often the stored job is read while following it (seconds).
POLL_SECONDS = 0.5
#: How long an answer is waited for on a stdin that is no terminal (seconds).
ANSWER_SECONDS = 10.0
_SELECT_SECONDS = 0.2  # how often a waiting read looks whether it was given up


@dataclass(frozen=True)
class Followed:
    """How following a job ended: the job as last read, and whether Ctrl-C ended it."""

    job: Job
    interrupted: bool = False
    #: the operator answered "cancel" after Ctrl-C
    cancelled: bool = False


# -- the answer after Ctrl-C -------------------------------------------------------------------


def means_cancel(answer: str | None) -> bool:
    """True for "c" or "cancel" (any case); anything else, no answer included, leaves it."""
    return answer is not None and answer.strip().lower() in ("c", "cancel")


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, OSError, ValueError):
        return False


def read_answer(
    stream: TextIO, stop: threading.Event | None = None, timeout: float | None = ANSWER_SECONDS
) -> str | None:
    """One line from ``stream``, or None: at its end, unreadable, when ``stop`` is set,
    or when a stream that is no terminal gave nothing within ``timeout`` seconds."""
    stop = stop or threading.Event()
    try:
        fd: int | None = stream.fileno()
    except (AttributeError, OSError, ValueError):  # io.StringIO, pytest's stand-in
        fd = None
    if fd is not None:
        deadline = None if timeout is None or _is_terminal(stream) else time.monotonic() + timeout
        while True:
            if stop.is_set():
                return None
            try:
                ready, _, _ = select.select([fd], [], [], _SELECT_SECONDS)
            except (OSError, ValueError):  # no select on this stream: just read it
                break
            if ready:
                break
            if deadline is not None and time.monotonic() >= deadline:
                return None
    try:
        line = stream.readline()
    except (OSError, UnicodeDecodeError, ValueError):  # unreadable input is no answer
        return None
    return line or None


async def _answer(question: str, signals: Any) -> bool:
    """Ask ``question`` on stderr; True when the answer is "cancel". A second Ctrl-C
    (from ``signals``) or no answer leaves the job running."""
    sys.stderr.write(f"{escape_line(question)} [c/l]: ")
    sys.stderr.flush()
    stop = threading.Event()
    answer: list[str | None] = []

    async def read(scope: anyio.CancelScope) -> None:
        line = await anyio.to_thread.run_sync(
            partial(read_answer, sys.stdin, stop), abandon_on_cancel=True
        )
        answer.append(line)
        scope.cancel()

    async def interrupted(scope: anyio.CancelScope) -> None:
        if signals is None:
            await anyio.sleep_forever()
        async for _ in signals:
            scope.cancel()
            return

    async with anyio.create_task_group() as group:
        group.start_soon(read, group.cancel_scope)
        group.start_soon(interrupted, group.cancel_scope)
    stop.set()
    if not _is_terminal(sys.stdin) or not answer:
        sys.stderr.write("\n")  # the answer was not echoed: end the question's line
    return means_cancel(answer[0] if answer else None)


@contextmanager
def _interrupts() -> Iterator[Any]:
    """Ctrl-C as a stream of signals while following (None where no signal handler can
    be set — off the main thread, an event loop without them: Ctrl-C then stops the
    command as usual)."""
    with ExitStack() as stack:
        signals = None
        if threading.current_thread() is threading.main_thread():
            try:
                signals = stack.enter_context(anyio.open_signal_receiver(signal.SIGINT))
            except (NotImplementedError, RuntimeError, ValueError):
                signals = None
        yield signals


# -- following ------------------------------------------------------------------------------


class _Rate(ProgressColumn):
    """Tasks per second, as Rich measures it from the updates."""

    def render(self, task: ProgressTask) -> Text:
        speed = task.finished_speed or task.speed
        return Text("-/s" if speed is None else f"{speed:,.1f}/s", style="progress.data.speed")


class _View:
    """The progress bar on stderr (disabled off a terminal, and with ``--json``)."""

    def __init__(self, job: Job, enabled: bool) -> None:
        console = Console(stderr=True)
        self.progress = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(bar_width=30),
            MofNCompleteColumn(),
            _Rate(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
            disable=not enabled or not console.is_terminal,
        )
        self.label = escape_line(f"{job.kind.value} {job.job_id}")
        self.bar = self.progress.add_task(self.label, total=job.matched)

    def show(self, job: Job) -> None:
        self.progress.update(
            self.bar, completed=job.processed, description=f"{self.label} {job.state.value}"
        )


class _Watch:
    """What the follower and the run here share."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.running_here = False
        self.hinted = False
        self.interrupted = False
        self.error: Exception | None = None
        self.wake = anyio.Event()

    def poke(self) -> None:
        self.wake.set()


async def _run_here(dlq: DeadLetterQueue, watch: _Watch) -> None:
    """Run the job in this process until it is done, paused, cancelled or taken over."""
    try:
        await dlq.run_job(watch.job.job_id)
    except JobStateError:  # another runner was quicker, or it was paused meanwhile
        pass
    except Exception as exc:  # noqa: BLE001 - raised by follow(), not in an exception group
        watch.error = exc
    finally:
        watch.running_here = False
        watch.poke()


def _settled(job: Job, watch: _Watch, now: datetime) -> bool:
    """The job went as far as it goes without a resume: finished or paused, and no
    runner is still recording its last page."""
    if watch.running_here or not (job.finished or job.state is JobState.PAUSED):
        return False
    return job.runner is None or not job.lease_held(now)


async def _track(
    dlq: DeadLetterQueue,
    watch: _Watch,
    view: _View,
    *,
    can_run: bool,
    wait: float,
    waiting_hint: str,
) -> None:
    started = anyio.current_time()
    async with anyio.create_task_group() as runners:
        while watch.error is None:
            watch.job = job = await dlq.get_job(watch.job.job_id)
            view.show(job)
            now = dlq.clock.now()
            if _settled(job, watch, now):
                break
            due = anyio.current_time() - started >= wait
            if not watch.running_here and due and job.claimable(now):
                if can_run:
                    watch.running_here = True
                    runners.start_soon(_run_here, dlq, watch)
                elif not watch.hinted:
                    watch.hinted = True
                    say(waiting_hint, err=True)
            with anyio.move_on_after(POLL_SECONDS):
                await watch.wake.wait()
            watch.wake = anyio.Event()
        runners.cancel_scope.cancel()


async def follow(
    dlq: DeadLetterQueue,
    job: Job,
    *,
    can_run: bool,
    wait: float,
    show_progress: bool,
    waiting_hint: str,
) -> Followed:
    """Follow ``job`` to its end (see the module docstring); after Ctrl-C, ask whether
    to cancel it and return the job as it then is."""
    watch = _Watch(job)
    with _interrupts() as signals:

        async def on_interrupt(scope: anyio.CancelScope) -> None:
            async for _ in signals:
                watch.interrupted = True
                scope.cancel()
                return

        async def track(scope: anyio.CancelScope) -> None:
            view = _View(job, show_progress)
            with view.progress:
                try:
                    await _track(
                        dlq, watch, view, can_run=can_run, wait=wait, waiting_hint=waiting_hint
                    )
                except Exception as exc:  # noqa: BLE001 - raised below, as itself
                    watch.error = exc
            scope.cancel()

        async with anyio.create_task_group() as group:
            if signals is not None:
                group.start_soon(on_interrupt, group.cancel_scope)
            group.start_soon(track, group.cancel_scope)
        if watch.error is not None:
            raise watch.error
        if not watch.interrupted:
            return Followed(watch.job)
        current = await dlq.get_job(job.job_id)
        if current.finished:
            return Followed(current, interrupted=True)
        question = f"{PROG}: cancel job {job.job_id}, or leave it running for the processors?"
        if await _answer(question, signals):
            return Followed(await dlq.cancel_job(job.job_id), interrupted=True, cancelled=True)
        return Followed(await dlq.get_job(job.job_id), interrupted=True)
