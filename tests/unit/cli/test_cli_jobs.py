"""Bulk jobs from the command line: the modes of replay/retry/archive/purge (dry run,
background, followed) and ``jobs list|show|pause|resume|cancel``.

Most tests run the CLI in-process on the memory queue of ``--app`` (see
``test_cli_commands``): nothing else can run a job on it, so a followed job is run
by the command at once. The tests of following a job that *another* runner takes,
of waiting for one and of stopping to follow it use the default SQLite file
(``$XDG_STATE_HOME``, the test's own), which the command (without ``--app``), a
runner in a thread of the test and a command in a subprocess all open.
"""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from mahavishnu_dlq.cli.follow import means_cancel, read_answer
from mahavishnu_dlq.jobs import Job, JobState
from mahavishnu_dlq.models import DeadLetterStatus
from mahavishnu_dlq.queue import DeadLetterQueue
from mahavishnu_dlq.settings import DLQSettings
from mahavishnu_dlq.testing import FakeClock, FlakyHandler
from tests.unit.cli.conftest import (
    APP,
    JOB_KEYS,
    Cli,
    enqueue,
    flaky,
    job_of,
    jobs,
    records,
    snapshot,
)

ROOT = Path(__file__).resolve().parents[3]
ID = re.compile(r"job-[0-9a-f]{16}")


def job_id_in(text: str) -> str:
    found = ID.search(text)
    assert found is not None, text
    return found.group()


# -- --background -------------------------------------------------------------------------------


def test_background_prints_the_id_and_leaves_the_job_queued(
    cli: Cli, mixed: DeadLetterQueue
) -> None:
    before = snapshot(mixed)
    ran = cli(*APP, "replay", "--workflow", "ok", "--background")
    assert ran.code == 0, ran.err
    job_id = ran.out.strip()
    assert ran.out == f"{job_id}\n"  # the id alone: JOB=$(mahavishnu-dlq replay --background)
    assert ID.fullmatch(job_id)
    assert f"mahavishnu-dlq jobs show {job_id}" in ran.err
    assert "replay job" in ran.err
    assert "of 2 task(s) queued for the processors" in ran.err
    job = job_of(mixed, job_id)
    assert (job.kind.value, job.state, job.matched, job.processed) == (
        "replay",
        JobState.QUEUED,
        2,
        0,
    )
    assert snapshot(mixed) == before  # nothing ran


def test_background_json_is_the_job(cli: Cli, mixed: DeadLetterQueue) -> None:
    calls = len(flaky("ok").calls)
    ran = cli(*APP, "retry", "--status", "pending", "--rate", "10/min", "--background", "--json")
    assert ran.code == 0, ran.err
    data = ran.json()
    assert set(data) == JOB_KEYS
    assert (data["kind"], data["state"], data["matched"]) == ("retry", "queued", 3)
    assert data["rate"] == pytest.approx(10 / 60)
    assert data["summary"]["by_workflow"] == {"ok": 1, "bad": 1, "imports": 1}
    assert data == job_of(mixed, data["job_id"]).to_dict()
    assert len(flaky("ok").calls) == calls  # nothing ran


def test_background_purge_still_asks(cli: Cli, mixed: DeadLetterQueue) -> None:
    ran = cli(*APP, "purge", "--background")  # stdin is no answer: refused
    assert ran.code == 1
    assert "aborted: nothing was changed" in ran.err
    assert jobs(mixed) == []
    ran = cli(*APP, "purge", "--background", "--yes")
    assert ran.code == 0, ran.err
    assert job_of(mixed, ran.out.strip()).state is JobState.QUEUED
    assert len(records(mixed)) == 6


# -- dry runs of each kind ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "words", "total"),
    [
        (["retry", "--workflow", "bad"], "would retry 1 task(s)", 1),
        (["archive", "--status", "pending,exhausted"], "would archive 4 task(s)", 4),
        (["purge", "--status", "archived"], "would purge 1 task(s)", 1),
    ],
)
def test_a_dry_run_of_each_kind_changes_nothing(
    cli: Cli, mixed: DeadLetterQueue, argv: list[str], words: str, total: int
) -> None:
    before = snapshot(mixed)
    ran = cli(*APP, *argv, "--dry-run")
    assert ran.code == 0, ran.err
    assert ran.out.startswith(f"{words}; nothing was changed (dry run job-")
    (job,) = jobs(mixed)
    assert (job.dry_run, job.state, job.matched, job.processed) == (True, JobState.DONE, total, 0)
    assert snapshot(mixed) == before
    assert flaky("bad").calls == []


def test_a_dry_run_that_matches_nothing(cli: Cli, dlq: DeadLetterQueue) -> None:
    ran = cli(*APP, "replay", "--dry-run")
    assert ran.code == 0, ran.err
    assert ran.out.startswith("would replay 0 task(s); nothing was changed")
    assert "first:" not in ran.out


# -- followed: the report -------------------------------------------------------------------------


def test_a_followed_job_reports_the_first_20_failures(cli: Cli, dlq: DeadLetterQueue) -> None:
    for n in range(25):
        enqueue(dlq, f"t-{n:02d}", workflow="bad")
    ran = cli(*APP, "retry", "--workflow", "bad")
    assert ran.code == 1
    assert "25 matched, 0 succeeded, 0 skipped, 25 failed" in ran.out
    listed = [line for line in ran.out.splitlines() if re.search(r"\bt-\d\d\b", line)]
    assert len(listed) == 20
    assert "… and 5 more" in ran.out
    data = cli(*APP, "jobs", "show", job_id_in(ran.out), "--json").json()
    assert len(data["failures"]) == 25


def test_a_job_that_matches_nothing_is_done(cli: Cli, dlq: DeadLetterQueue) -> None:
    ran = cli(*APP, "archive", "--workflow", "nothing-here", "--json")
    assert ran.code == 0, ran.err
    assert (ran.json()["state"], ran.json()["matched"]) == ("done", 0)


def test_the_snapshot_leaves_later_failures_alone(
    cli: Cli, dlq: DeadLetterQueue, clock: FakeClock
) -> None:
    enqueue(dlq, "before")
    ran = cli(*APP, "replay", "--background")
    clock.advance(1)
    enqueue(dlq, "after")
    job_id = ran.out.strip()
    assert cli(*APP, "processor", "run", "--drain").code == 0  # runs the queued job
    job = job_of(dlq, job_id)
    assert (job.state, job.matched, job.done) == (JobState.DONE, 1, 1)
    assert records(dlq)["after"].next_retry_at != clock.now()


# -- jobs list / show ---------------------------------------------------------------------------


def _three_jobs(cli: Cli, clock: FakeClock) -> list[str]:
    """A dry run (done), a queued replay, a queued archive, a second apart; their ids,
    oldest first."""
    ids = [job_id_in(cli(*APP, "replay", "--dry-run").out)]
    clock.advance(1)
    ids.append(cli(*APP, "replay", "--background").out.strip())
    clock.advance(1)
    ids.append(cli(*APP, "archive", "--workflow", "imports", "--background").out.strip())
    return ids


def test_jobs_list(cli: Cli, mixed: DeadLetterQueue, clock: FakeClock) -> None:
    assert cli(*APP, "jobs", "list").out == "no jobs\n"
    dry, replay, archive = _three_jobs(cli, clock)
    ran = cli(*APP, "jobs", "list")
    assert ran.code == 0, ran.err
    rows = [line for line in ran.out.splitlines() if ID.search(line)]
    assert [job_id_in(row) for row in rows] == [archive, replay, dry]  # newest first
    assert re.search(rf"{archive}\s+archive\s+queued\s+0/1\s+0\s+0\s+2026-01-01 00:00", ran.out)
    assert re.search(rf"{dry}\s+replay \(dry\)\s+done\s+0/4", ran.out)
    for header in ("id", "kind", "state", "done/matched", "skipped", "failed", "created", "by"):
        assert header in ran.out
    assert ran.out.endswith("3 job(s)\n")


def test_jobs_list_json_state_and_limit(cli: Cli, mixed: DeadLetterQueue, clock: FakeClock) -> None:
    dry, replay, archive = _three_jobs(cli, clock)
    data = cli(*APP, "jobs", "list", "--json").json()
    assert set(data) == {"jobs", "count"}
    assert data["count"] == 3
    assert [job["job_id"] for job in data["jobs"]] == [archive, replay, dry]
    assert all(set(job) == JOB_KEYS for job in data["jobs"])
    queued = cli(*APP, "jobs", "list", "--state", "queued", "--json").json()
    assert [job["job_id"] for job in queued["jobs"]] == [archive, replay]
    both = cli(*APP, "jobs", "list", "--state", "done", "--state", "queued,paused", "--json")
    assert both.json()["count"] == 3
    assert cli(*APP, "jobs", "list", "-n", "1", "--json").json()["count"] == 1
    assert cli(*APP, "jobs", "list", "--state", "failed").out == "no jobs in that state\n"


def test_jobs_list_unknown_state_is_a_usage_error(cli: Cli, dlq: DeadLetterQueue) -> None:
    ran = cli(*APP, "jobs", "list", "--state", "queued,asleep")
    assert ran.code == 2
    line = ran.one_error_line()
    assert "unknown value 'asleep'" in line
    assert "queued, running, paused, done, cancelled, failed" in line


def test_jobs_list_on_a_narrow_terminal(
    cli: Cli, mixed: DeadLetterQueue, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    _three_jobs(cli, clock)
    monkeypatch.setenv("COLUMNS", "80")
    ran = cli(*APP, "jobs", "list")
    assert ran.code == 0, ran.err
    assert "created" not in ran.out
    assert max(len(line) for line in ran.out.splitlines()) <= 80
    assert len(ID.findall(ran.out)) == 3  # ids are never cut


def test_jobs_show(cli: Cli, mixed: DeadLetterQueue) -> None:
    ran = cli(*APP, "retry", "--status", "pending", "--rate", "600/min")
    job_id = job_id_in(ran.out)
    shown = cli(*APP, "jobs", "show", job_id)
    assert shown.code == 0, shown.err
    text = shown.out
    for fact in (
        job_id,
        "kind                retry",
        "state               done",
        "3 of 3 processed (100%)",
        "3 matched, 1 succeeded, 1 skipped, 1 failed",
        "filter              status pending",
        "rate                10/s",
        "snapshot            2026-01-01 00:00:05.000 UTC",
        "created             2026-01-01 00:00:05.000 UTC by ",
        "runs                1",
        "selected at the start",
        "not done",
        "net-2",
        "connection reset by peer",
        "no handler here for workflow 'imports'",
    ):
        assert fact in text, fact
    data = cli(*APP, "jobs", "show", job_id, "--json").json()
    assert data == job_of(mixed, job_id).to_dict()


def test_jobs_show_of_an_unknown_id_is_exit_1(cli: Cli, dlq: DeadLetterQueue) -> None:
    for command in ("show", "pause", "resume", "cancel"):
        ran = cli(*APP, "jobs", command, "job-nope")
        assert ran.code == 1
        assert ran.one_error_line() == "mahavishnu-dlq: no job with id 'job-nope'"


@pytest.mark.parametrize("job_id", ["", "j" * 129, "job-\x1b[2J", "job-\n1"])
def test_a_job_id_is_checked_before_anything_opens(
    cli: Cli, dlq: DeadLetterQueue, job_id: str
) -> None:
    ran = cli(*APP, "jobs", "show", job_id)
    assert ran.code == 2
    line = ran.one_error_line()
    assert line.startswith("mahavishnu-dlq jobs show: Invalid value for JOB_ID")
    assert "\x1b" not in line


# -- jobs pause / resume / cancel ----------------------------------------------------------------


def test_pause_resume_cancel(cli: Cli, mixed: DeadLetterQueue) -> None:
    job_id = cli(*APP, "archive", "--workflow", "ok", "--background").out.strip()

    ran = cli(*APP, "jobs", "pause", job_id)
    assert ran.code == 0, ran.err
    assert ran.out.startswith(f"paused job {job_id} (2 matched, 0 archived, 0 skipped, 0 failed")
    assert f"resume it with: mahavishnu-dlq jobs resume {job_id}" in ran.out
    assert job_of(mixed, job_id).state is JobState.PAUSED
    again = cli(*APP, "jobs", "pause", job_id)
    assert (again.code, again.out) == (0, f"job {job_id} is paused already: nothing changed\n")

    data = cli(*APP, "jobs", "resume", job_id, "--json").json()
    assert set(data) == JOB_KEYS
    assert (data["job_id"], data["state"]) == (job_id, "queued")
    ran = cli(*APP, "jobs", "resume", job_id)
    assert ran.out == f"job {job_id} is queued already: nothing changed\n"

    ran = cli(*APP, "jobs", "cancel", job_id)
    assert ran.code == 0, ran.err
    assert ran.out.startswith(f"cancelled job {job_id} (2 matched, 0 archived")
    assert job_of(mixed, job_id).state is JobState.CANCELLED
    assert cli(*APP, "jobs", "cancel", job_id, "--json").json()["state"] == "cancelled"
    ran = cli(*APP, "jobs", "cancel", job_id)
    assert ran.out == f"job {job_id} is cancelled already: nothing changed\n"
    assert {t.status for t in records(mixed).values() if t.workflow == "ok"} == {
        DeadLetterStatus.PENDING,
        DeadLetterStatus.EXHAUSTED,
        DeadLetterStatus.COMPLETED,
    }  # nothing was archived


@pytest.mark.parametrize("command", ["pause", "resume"])
def test_a_change_the_state_refuses_is_one_line_exit_1(
    cli: Cli, mixed: DeadLetterQueue, command: str
) -> None:
    job_id = job_id_in(cli(*APP, "replay", "--dry-run").out)  # done at once
    ran = cli(*APP, "jobs", command, job_id)
    assert ran.code == 1
    assert ran.one_error_line() == f"mahavishnu-dlq: job '{job_id}': it is done"
    assert job_of(mixed, job_id).state is JobState.DONE


def test_a_resumed_job_runs_in_the_next_processor_cycle(cli: Cli, mixed: DeadLetterQueue) -> None:
    job_id = cli(*APP, "archive", "--workflow", "imports", "--background").out.strip()
    assert cli(*APP, "jobs", "pause", job_id).code == 0
    assert cli(*APP, "processor", "run", "--drain").code == 0
    assert records(mixed)["val-1"].status is DeadLetterStatus.PENDING  # paused: left alone
    assert cli(*APP, "jobs", "resume", job_id).code == 0
    assert cli(*APP, "processor", "run", "--drain").code == 0
    assert records(mixed)["val-1"].status is DeadLetterStatus.ARCHIVED
    assert job_of(mixed, job_id).state is JobState.DONE


# -- following a job on a store other processes share (SQLite) -----------------------------------


def _on_the_shared_store(fn: Callable[[DeadLetterQueue], Awaitable[Any]]) -> Any:
    """``fn`` on a queue of the default SQLite file, the one the CLI opens without --app."""

    async def main() -> Any:
        dlq = DeadLetterQueue.from_settings(DLQSettings.load())
        for workflow, handler in {"ok": FlakyHandler(), "bad": FlakyHandler(failures=9)}.items():
            dlq.register_handler(workflow, handler)
        dlq.worker_id = "runner-in-a-thread"
        await dlq.connect()
        try:
            return await fn(dlq)
        finally:
            await dlq.stop()

    return anyio.run(main)


@pytest.fixture
def shared() -> list[str]:
    """Three pending tasks (two "ok", one "bad") in the default SQLite file; their ids."""

    async def seed(dlq: DeadLetterQueue) -> None:
        for task_id, workflow in (("s-1", "ok"), ("s-2", "ok"), ("s-3", "bad")):
            await dlq.enqueue(
                task_id,
                {"id": task_id},
                ["repo"],
                ConnectionError("refused"),
                workflow=workflow,
                retry_policy="never",
            )

    _on_the_shared_store(seed)
    return ["s-1", "s-2", "s-3"]


def _statuses() -> dict[str, str]:
    async def read(dlq: DeadLetterQueue) -> dict[str, str]:
        return {t.task_id: t.status.value for t in await dlq.list_tasks(limit=100)}

    result: dict[str, str] = _on_the_shared_store(read)
    return result


class _Elsewhere(threading.Thread):
    """Another process's part, in a thread: waits for the job the CLI starts, then acts."""

    def __init__(self, act: Callable[[DeadLetterQueue, Job], Awaitable[Any]]) -> None:
        super().__init__(daemon=True)
        self.act = act
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        async def main(dlq: DeadLetterQueue) -> Any:
            with anyio.fail_after(20):
                while not (queued := await dlq.list_jobs(state=JobState.QUEUED)):  # noqa: ASYNC110 - another process's job
                    await anyio.sleep(0.05)
            return await self.act(dlq, queued[0])

        try:
            self.result = _on_the_shared_store(main)
        except BaseException as exc:  # the test reports it
            self.error = exc


@pytest.fixture
def elsewhere() -> Iterator[
    Callable[[Callable[[DeadLetterQueue, Job], Awaitable[Any]]], _Elsewhere]
]:
    started: list[_Elsewhere] = []

    def start(act: Callable[[DeadLetterQueue, Job], Awaitable[Any]]) -> _Elsewhere:
        thread = _Elsewhere(act)
        thread.start()
        started.append(thread)
        return thread

    yield start
    for thread in started:
        thread.join(timeout=20)
        assert not thread.is_alive()


def test_without_a_processor_the_command_runs_the_job_after_wait(
    cli: Cli, shared: list[str]
) -> None:
    began = time.monotonic()
    ran = cli("replay", "--wait", "0.3", "--json")
    assert ran.code == 0, ran.err
    assert time.monotonic() - began >= 0.3
    job = ran.json()
    assert (job["state"], job["matched"], job["done"], job["runs"]) == ("done", 3, 3, 1)


def test_a_job_another_runner_takes_is_followed_to_its_end(
    cli: Cli, shared: list[str], elsewhere: Callable[..., _Elsewhere]
) -> None:
    async def run_it(dlq: DeadLetterQueue, job: Job) -> Job:
        return await dlq.run_job(job.job_id)

    runner = elsewhere(run_it)
    ran = cli("archive", "--workflow", "ok", "--wait", "60")  # it never runs the job itself
    runner.join(timeout=20)
    assert runner.error is None, runner.error
    assert runner.result.state is JobState.DONE  # the thread ran it, to its end
    assert ran.code == 0, ran.err
    assert "2 matched, 2 archived, 0 skipped, 0 failed" in ran.out
    assert _statuses() == {"s-1": "archived", "s-2": "archived", "s-3": "pending"}


def test_a_retry_job_without_app_waits_for_a_processor(
    cli: Cli, shared: list[str], elsewhere: Callable[..., _Elsewhere]
) -> None:
    async def run_it(dlq: DeadLetterQueue, job: Job) -> Job:
        await anyio.sleep(0.8)  # the command has said that it waits
        return await dlq.run_job(job.job_id)

    runner = elsewhere(run_it)
    ran = cli("retry", "--status", "pending", "--wait", "0")
    runner.join(timeout=20)
    assert runner.error is None, runner.error
    assert ran.code == 1  # s-3's handler fails
    hint = [line for line in ran.err.splitlines() if "waits for a processor" in line]
    assert len(hint) == 1  # said once
    assert "mahavishnu-dlq processor run --app MODULE:ATTR" in hint[0]
    assert "3 matched, 2 succeeded, 0 skipped, 1 failed" in ran.out
    assert _statuses() == {"s-1": "completed", "s-2": "completed", "s-3": "pending"}


def test_a_job_paused_elsewhere_ends_the_following_with_exit_1(
    cli: Cli, shared: list[str], elsewhere: Callable[..., _Elsewhere]
) -> None:
    async def pause(dlq: DeadLetterQueue, job: Job) -> Job:
        return await dlq.pause_job(job.job_id)

    elsewhere(pause)
    ran = cli("replay", "--wait", "60")
    assert ran.code == 1
    job_id = job_id_in(ran.out)
    assert f"replay {job_id} paused: 3 matched, 0 replayed, 0 skipped, 0 failed" in ran.out
    assert f"resume it with: mahavishnu-dlq jobs resume {job_id}" in ran.out


# -- Ctrl-C ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("c\n", True),
        ("C\n", True),
        (" cancel \n", True),
        ("l\n", False),
        ("leave\n", False),
        ("yes\n", False),
        ("\n", False),
        ("", False),  # end of input: leave it running
    ],
)
def test_the_answer_after_ctrl_c(answer: str, expected: bool) -> None:
    assert means_cancel(read_answer(io.StringIO(answer))) is expected


def test_a_silent_pipe_is_no_answer() -> None:
    read_end, write_end = os.pipe()
    try:
        with os.fdopen(read_end, closefd=False) as stream:
            began = time.monotonic()
            assert read_answer(stream, timeout=0.3) is None
            assert 0.25 <= time.monotonic() - began < 5
            os.write(write_end, b"c\n")
            assert read_answer(stream, timeout=5) == "c\n"
            stop = threading.Event()
            stop.set()
            assert read_answer(stream, stop) is None  # given up
    finally:
        os.close(read_end)
        os.close(write_end)


def _interrupted(stdin: int | None, answer: bytes) -> tuple[subprocess.CompletedProcess[str], Job]:
    """``replay --rate 4/s`` of 20 tasks in a subprocess, Ctrl-C once it is under way."""

    async def seed(dlq: DeadLetterQueue) -> None:
        for n in range(20):
            await dlq.enqueue(f"c-{n:02d}", {}, [], ConnectionError("x"), retry_policy="never")

    _on_the_shared_store(seed)
    argv = [sys.executable, "-m", "mahavishnu_dlq", "replay", "--rate", "4/s", "--wait", "0"]
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        argv,
        cwd=ROOT,
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        if proc.stdin is not None:
            proc.stdin.write(answer.decode())  # typed ahead: read when asked
            proc.stdin.flush()

        async def under_way(dlq: DeadLetterQueue) -> None:
            with anyio.fail_after(15):
                while not any(job.done for job in await dlq.list_jobs()):  # noqa: ASYNC110 - another process's job
                    await anyio.sleep(0.05)

        _on_the_shared_store(under_way)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    (job,) = _on_the_shared_store(lambda dlq: dlq.list_jobs())
    return subprocess.CompletedProcess(argv, proc.returncode, out, err), job


def test_ctrl_c_then_cancel(shared: list[str]) -> None:
    run, job = _interrupted(subprocess.PIPE, b"c\n")
    assert run.returncode == 130, run
    assert "Traceback" not in run.stderr
    assert f"cancel job {job.job_id}, or leave it running for the processors? [c/l]" in run.stderr
    assert job.state is JobState.CANCELLED
    assert 1 <= job.done < job.matched == 23  # the 3 tasks of "shared" and 20 more
    assert run.stdout == (
        f"job {job.job_id} cancelled: 23 matched, {job.done} replayed, "
        f"0 skipped, 0 failed, {23 - job.done} not processed\n"
    )
    assert run.stderr.rstrip().endswith("mahavishnu-dlq: interrupted")


def test_ctrl_c_without_an_answer_leaves_the_job_to_the_processors(shared: list[str]) -> None:
    run, job = _interrupted(subprocess.DEVNULL, b"")
    assert run.returncode == 130, run
    assert job.state is JobState.QUEUED  # given back: the next processor goes on with it
    assert (job.runner, job.lease_expires_at) == (None, None)
    assert run.stdout.startswith(f"job {job.job_id} left running (queued): 23 matched, ")
    assert f"see it with: mahavishnu-dlq jobs show {job.job_id}" in run.stdout
