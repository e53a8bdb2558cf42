"""The CLI as an operator meets it, against a real OpenSearch node: replay, archive,
purge, clear, retry and the processor (how these tests run: ``conftest``)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
from datetime import datetime, timedelta, timezone
from functools import partial
from pathlib import Path

import pytest

from mahavishnu_dlq.models import (
    AttemptOutcome,
    RetryPolicy,
)
from tests.integration.cli_acceptance.conftest import (
    ARCHIVED,
    COMPLETED,
    EXHAUSTED,
    HANDLERS,
    PENDING,
    PROG,
    ROOT,
    Failure,
    Node,
    _argv,
    data,
    describe,
    ok,
    refused,
    wait_until,
)
from tests.integration.cli_app import (
    FAIL_WORKFLOW,
    HANDLER_ERROR,
    SLOW_WORKFLOW,
)

# -- OpenSearch: replay, archive, purge, clear, retry, processor -----------------------------


@pytest.mark.opensearch
def test_replay_dry_run_changes_nothing_and_a_paced_replay_makes_five_due(node: Node) -> None:
    paced = [f"replay-{i}" for i in range(5)]
    others = [f"other-{i}" for i in range(3)]
    names = [*paced, *others]
    node.enqueue(*(Failure(name) for name in names))
    before = node.records(*names)
    assert all(t.status is PENDING and t.next_retry_at is None for t in before.values())

    as_json, for_people = node.cli.many(["replay", "--dry-run", "--json"], ["replay", "--dry-run"])
    job = data(as_json)
    assert (job["kind"], job["dry_run"], job["state"]) == ("replay", True, "done")
    assert job["matched"] == job["summary"]["total"] == 8
    assert job["summary"]["by_status"] == {"pending": 8}
    assert set(job["summary"]["sample"]) == set(names)
    assert job["failures"] == []
    text = ok(for_people)
    assert re.search(r"would replay 8 task\(s\); nothing was changed \(dry run job-\w+\)", text)
    assert node.records(*names) == before

    # no processor runs: after --wait the command runs the job itself, paced
    started = datetime.now(timezone.utc)
    run = node.cli("replay", "--text", "replay-", "--rate", "20/s", "--wait", "0.2", "--json")
    finished = datetime.now(timezone.utc)
    job = data(run)
    assert (job["kind"], job["dry_run"], job["state"]) == ("replay", False, "done")
    assert (job["matched"], job["done"], job["skipped"], job["failed"]) == (5, 5, 0, 0)
    assert job["rate"] == 20.0
    assert f"replay job {job['job_id']}: 5 task(s)" in run.stderr
    after = node.records(*names)
    due = {name: task.next_retry_at for name, task in after.items() if task.next_retry_at}
    assert set(due) == set(paced)  # exactly the five the filter selects
    times = sorted(when for when in due.values() if when is not None)
    assert started <= times[0]
    assert times[-1] <= finished
    # 20/s, in ticks of 2 tasks: the fifth is made due 4/20 s after the run started
    assert finished - started >= timedelta(seconds=0.2), (started, finished)
    assert len(set(times)) >= 3, times  # three ticks
    assert all(after[name].status is PENDING for name in paced)
    assert all(after[name] == before[name] for name in others)

    # a third process retries what the second made due, a fourth counts the result
    drained = data(node.cli("processor", "run", "--app", HANDLERS, "--drain", "--json"))
    assert drained["attempts"] == 5
    assert (drained["retry_success"], drained["retry_failed"], drained["exhausted"]) == (5, 0, 0)
    assert node.statuses(*names) == {
        name: "completed" if name in paced else "pending" for name in names
    }
    stats = data(node.cli("status", "--json"))
    assert stats["status_breakdown"]["completed"] == 5
    assert stats["status_breakdown"]["pending"] == 3


@pytest.mark.opensearch
def test_a_background_job_is_run_by_a_processor_and_steered_from_another_shell(
    node: Node,
) -> None:
    names = [f"bg-{i}" for i in range(4)]
    node.enqueue(*(Failure(name) for name in names))

    started = node.cli("archive", "--text", "bg-", "--background")
    job_id = ok(started).strip()
    assert re.fullmatch(r"job-\w+", job_id), describe(started)
    assert f"{PROG} jobs show {job_id}" in started.stderr
    assert data(node.cli("jobs", "pause", job_id, "--json"))["state"] == "paused"
    listed = data(node.cli("jobs", "list", "--json"))
    assert [(j["job_id"], j["state"]) for j in listed["jobs"]] == [(job_id, "paused")]
    assert set(node.statuses(*names).values()) == {"pending"}  # nothing ran yet

    # a paused job waits; resumed, the next processor cycle runs it
    assert data(node.cli("processor", "run", "--app", HANDLERS, "--drain", "--json"))
    assert set(node.statuses(*names).values()) == {"pending"}
    assert data(node.cli("jobs", "resume", job_id, "--json"))["state"] == "queued"
    assert data(node.cli("processor", "run", "--app", HANDLERS, "--drain", "--json"))
    shown, unknown, refused_resume = node.cli.many(
        ["jobs", "show", job_id, "--json"],
        ["jobs", "show", "job-nope"],
        ["jobs", "resume", job_id],
    )
    job = data(shown)
    assert (job["state"], job["matched"], job["done"]) == ("done", 4, 4)
    assert set(node.statuses(*names).values()) == {"archived"}
    refused(unknown, 1, "no job with id 'job-nope'")
    refused(refused_resume, 1, "it is done")


@pytest.mark.opensearch
def test_archive_purge_and_clear_ask_first_and_each_process_sees_the_last(node: Node) -> None:
    archived = ["arch-0", "arch-1", "arch-2"]
    kept = ["open-0", "open-1", "open-2"]
    everything = [*archived, *kept]
    node.enqueue(*(Failure(name) for name in everything))

    run = node.cli("archive", "arch-0", "arch-1", "nope", "arch-2")
    assert run.returncode == 1, describe(run)
    assert run.stdout.splitlines() == [f"archived {name}" for name in archived]
    refused(run, 1, "nope", "not found")
    records = node.records(*everything)
    assert all(records[name].status is ARCHIVED for name in archived)
    assert all(records[name].archived_at is not None for name in archived)
    assert all(records[name].status is PENDING for name in kept)

    purge = ["purge", "--older-than", "0s", "--status", "archived"]
    asked = node.cli(*purge, stdin="n\n")
    assert asked.returncode == 1, describe(asked)
    assert "Traceback" not in asked.stderr
    assert "Delete 3 task(s) (archived, last updated before " in asked.stderr
    last = asked.stderr.strip().splitlines()[-1]
    assert last.startswith(f"{PROG}: aborted: nothing was changed"), describe(asked)
    dry, too_young = node.cli.many(
        [*purge, "--dry-run"],
        ["purge", "--older-than", "1h", "--status", "archived", "--dry-run", "--json"],
    )
    assert re.match(r"would purge 3 task\(s\); nothing was changed", ok(dry)), describe(dry)
    assert data(too_young)["matched"] == 0
    assert node.statuses(*everything) == {
        **dict.fromkeys(archived, "archived"),
        **dict.fromkeys(kept, "pending"),
    }

    result = data(node.cli(*purge, "--yes", "--wait", "0", "--json"))
    assert (result["kind"], result["state"], result["dry_run"]) == ("purge", "done", False)
    assert (result["matched"], result["done"]) == (3, 3)
    assert result["filter"]["status"] == ["archived"]
    assert result["older_than_seconds"] == 0
    assert node.statuses(*everything) == {
        **dict.fromkeys(archived, "missing"),
        **dict.fromkeys(kept, "pending"),
    }

    asked = node.cli("clear", stdin="n\n")
    assert asked.returncode == 1, describe(asked)
    assert "Delete all 3 task(s) in the dead-letter queue?" in asked.stderr
    assert asked.stderr.strip().splitlines()[-1].startswith(f"{PROG}: aborted")
    assert "Traceback" not in asked.stderr
    assert set(node.statuses(*kept).values()) == {"pending"}

    assert ok(node.cli("clear", "-y")) == "cleared 3 task(s)\n"
    assert set(node.statuses(*everything).values()) == {"missing"}
    stats = data(node.cli("status", "--json"))
    assert stats["total_stored"] == 0
    assert stats["queue_size"] == 0


@pytest.mark.opensearch
def test_retry_runs_the_handler_and_a_failure_counts_toward_exhaustion(node: Node) -> None:
    node.enqueue(
        Failure("retry-ok"),
        Failure("retry-fail", FAIL_WORKFLOW, max_retries=2, error="upstream said no"),
    )

    success, failure, no_app = node.cli.many(
        ["retry", "retry-ok", "--app", HANDLERS, "--json"],
        ["--app", HANDLERS, "retry", "retry-fail"],
        ["retry", "retry-ok"],
    )
    result = data(success)
    assert result["success"] is True
    assert result["status"] == "completed"
    assert result["result"] == {"handled": "retry-ok", "repos": ["repo-a", "repo-b"]}
    assert failure.returncode == 1, describe(failure)
    assert "Traceback" not in failure.stderr
    assert "✗ retry 1 of task retry-fail failed; task is now pending" in failure.stdout
    assert f"error: {HANDLER_ERROR} retry-fail" in failure.stdout
    refused(no_app, 2, "--app")

    records = node.records("retry-ok", "retry-fail")
    done, failing = records["retry-ok"], records["retry-fail"]
    assert done.status is COMPLETED
    assert done.completed_at is not None
    assert [(a.trigger, a.outcome) for a in done.attempts] == [("manual", AttemptOutcome.SUCCESS)]
    assert failing.status is PENDING
    assert failing.retry_count == 1

    last, unknown = node.cli.many(
        ["retry", "retry-fail", "--app", HANDLERS, "--json"],
        ["retry", "nope", "--app", HANDLERS],
    )
    assert last.returncode == 1, describe(last)
    result = json.loads(last.stdout)
    assert result["success"] is False
    assert result["status"] == "exhausted"
    assert result["error"] == f"{HANDLER_ERROR} retry-fail"
    refused(unknown, 1, "nope")
    failing = node.records("retry-fail")["retry-fail"]
    assert failing.status is EXHAUSTED
    assert (failing.retry_count, failing.total_attempts) == (2, 3)
    assert [a.outcome for a in failing.attempts] == [AttemptOutcome.FAILURE] * 2


@pytest.mark.opensearch
def test_processor_drain_retries_what_is_due_and_leaves_the_rest(node: Node) -> None:
    due_ok = [f"due-ok-{i}" for i in range(3)]
    node.enqueue(
        *(Failure(name, policy=RetryPolicy.IMMEDIATE) for name in due_ok),
        Failure("due-fail", FAIL_WORKFLOW, policy=RetryPolicy.IMMEDIATE, max_retries=1),
        Failure("later", policy=RetryPolicy.EXPONENTIAL),  # due in a minute
        Failure("manual"),  # awaiting an operator
    )
    before = node.records("later", "manual")
    assert before["later"].next_retry_at is not None

    summary = data(node.cli("processor", "run", "--app", HANDLERS, "--drain", "--json"))
    assert summary["attempts"] == 4  # three successes, the one failure of due-fail
    assert (summary["retry_success"], summary["retry_failed"], summary["exhausted"]) == (3, 1, 1)
    assert node.statuses(*due_ok, "due-fail") == {
        **dict.fromkeys(due_ok, "completed"),
        "due-fail": "exhausted",
    }
    assert node.records("later", "manual") == before

    again = ok(node.cli("--app", HANDLERS, "processor", "run", "--drain"))
    assert re.fullmatch(
        r"processor \S+ stopped; 0 attempts: 0 retry success, 0 retry failed, 0 exhausted\n",
        again,
    ), again


@pytest.mark.opensearch
def test_processor_runs_until_sigint_and_reports(node: Node, tmp_path: Path) -> None:
    first = [f"live-{i}" for i in range(3)]
    node.enqueue(*(Failure(name, policy=RetryPolicy.IMMEDIATE) for name in first))

    def completed(*names: str) -> bool:
        return set(node.statuses(*names).values()) == {"completed"}

    out, err = tmp_path / "processor.out", tmp_path / "processor.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            _argv(["processor", "run", "--app", HANDLERS, "--interval", "0.2"]),
            cwd=ROOT,
            env=node.cli.env,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
        )
    try:
        wait_until("the first tasks completed", partial(completed, *first), proc, 30)
        node.enqueue(Failure("live-late", policy=RetryPolicy.IMMEDIATE))  # while it runs
        wait_until("the late task completed", partial(completed, "live-late"), proc, 30)
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stdout_text, stderr_text = out.read_text(), err.read_text()
    run = subprocess.CompletedProcess(proc.args, code, stdout_text, stderr_text)
    assert code == 0, describe(run)
    assert "Traceback" not in stderr_text, describe(run)
    started = re.search(r"processor (\S+) on opensearch, .*checking every 0\.2 s", stderr_text)
    assert started is not None, describe(run)
    assert "SIGINT: stopping" in stderr_text, describe(run)
    assert stdout_text == (
        f"processor {started.group(1)} stopped; 4 retry success, 0 retry failed, 0 exhausted\n"
    ), describe(run)


@pytest.mark.opensearch
def test_sigterm_mid_attempt_gives_the_task_back(node: Node, tmp_path: Path) -> None:
    """Stopping the processor while an attempt runs returns the task to pending."""
    node.enqueue(Failure("slow-1", SLOW_WORKFLOW, policy=RetryPolicy.IMMEDIATE))

    def retrying() -> bool:
        return node.statuses("slow-1") == {"slow-1": "retrying"}

    err = tmp_path / "processor.err"
    with err.open("wb") as stderr:
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            _argv(["processor", "run", "--app", HANDLERS, "--interval", "0.2"]),
            cwd=ROOT,
            env=node.cli.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        wait_until("the attempt started", retrying, proc, 30)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 0, err.read_text()
    assert "SIGTERM: stopping" in err.read_text()
    task = node.records("slow-1")["slow-1"]
    assert task.status is PENDING
    assert (task.lease_owner, task.lease_expires_at) == (None, None)
    assert task.retry_count == 0  # the unfinished attempt is given back …
    assert task.total_attempts == 2  # … but still counted as run (the first failure + 1)
    assert task.attempts[-1].outcome is AttemptOutcome.CANCELLED
    assert task.next_retry_at is not None  # due again at once, for the next processor
