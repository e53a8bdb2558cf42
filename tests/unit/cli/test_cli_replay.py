"""Replay, and retry by filter, from the command line: bulk jobs, followed and run in
the command itself (nothing else can run a job on this process's memory store; how
these tests work: ``test_cli_commands``, the modes and the ``jobs`` commands:
``test_cli_jobs``)."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from mahavishnu_dlq.jobs import JobState
from mahavishnu_dlq.models import DeadLetterStatus
from mahavishnu_dlq.queue import DeadLetterQueue
from mahavishnu_dlq.testing import FakeClock
from tests.unit.cli.conftest import (
    APP,
    JOB_KEYS,
    Cli,
    enqueue,
    job_of,
    jobs,
    lease,
    record,
    records,
    snapshot,
)

# -- replay (a job, followed and run here: the memory store has no other runner) -------------


def test_replay_dry_run_changes_nothing(cli: Cli, mixed: DeadLetterQueue) -> None:
    before = snapshot(mixed)
    ran = cli(*APP, "replay", "--dry-run", "--json")
    assert ran.code == 0, ran.err
    data = ran.json()
    assert set(data) == JOB_KEYS
    assert (data["kind"], data["state"], data["dry_run"]) == ("replay", "done", True)
    assert data["matched"] == 4  # pending and exhausted
    assert (data["done"], data["skipped"], data["failed"]) == (0, 0, 0)
    summary = data["summary"]
    assert summary["total"] == 4
    assert summary["by_status"] == {"pending": 3, "exhausted": 1}
    assert summary["by_category"] == {"network": 3, "validation": 1}
    assert summary["by_workflow"] == {"ok": 2, "bad": 1, "imports": 1}
    assert summary["sample"] == ["exh-1", "val-1", "net-2", "net-1"]  # newest failure first
    assert snapshot(mixed) == before

    ran = cli(*APP, "replay", "--dry-run")
    assert ran.code == 0
    assert re.search(r"would replay 4 task\(s\); nothing was changed \(dry run job-\w+\)", ran.out)
    assert "first: exh-1, val-1, net-2, net-1" in ran.out
    for name in ("status", "category", "workflow", "exhausted", "validation", "imports"):
        assert name in ran.out
    assert snapshot(mixed) == before
    assert [(job.dry_run, job.state.value) for job in jobs(mixed)] == [(True, "done")] * 2


def test_replay_makes_tasks_due_now(cli: Cli, mixed: DeadLetterQueue, clock: FakeClock) -> None:
    clock.advance(30)
    untouched = {k: v for k, v in snapshot(mixed).items() if k in {"done-1", "arch-1"}}
    ran = cli(*APP, "replay", "--json")
    assert ran.code == 0, ran.err
    data = ran.json()
    assert set(data) == JOB_KEYS
    assert (data["kind"], data["state"], data["dry_run"]) == ("replay", "done", False)
    assert data["matched"] == data["done"] == 4
    assert data["skipped"] == data["failed"] == 0
    assert data["failures"] == []
    assert data["runs"] == 1  # run here, once
    now = clock.now()
    after = records(mixed)
    for task_id in ("net-1", "net-2", "val-1", "exh-1"):
        assert after[task_id].status is DeadLetterStatus.PENDING
        assert after[task_id].next_retry_at == now
        assert after[task_id].updated_at == now
    assert after["exh-1"].max_retries == 1  # one more retry for the exhausted task
    assert {k: v.model_dump() for k, v in after.items() if k in untouched} == untouched
    assert job_of(mixed, data["job_id"]).state is JobState.DONE


def test_replay_human_output(cli: Cli, mixed: DeadLetterQueue) -> None:
    ran = cli(*APP, "replay")
    assert ran.code == 0, ran.err
    assert re.match(r"replay job-\w+ done: 4 matched, 4 replayed, 0 skipped, 0 failed\n$", ran.out)
    (line,) = ran.err.splitlines()  # the job's id as it starts; the bar leaves nothing behind
    assert re.match(
        r"mahavishnu-dlq: replay job job-\w+: 4 task\(s\) \(status pending, exhausted, "
        r"retrying\); Ctrl-C stops following$",
        line,
    )


def test_replay_is_paced_by_the_queue_clock(
    cli: Cli, dlq: DeadLetterQueue, clock: FakeClock
) -> None:
    for n in range(5):
        enqueue(dlq, f"t-{n}")
    start = clock.now()
    ran = cli(*APP, "replay", "--rate", "2/s", "--json")
    assert ran.code == 0, ran.err
    assert ran.json()["done"] == 5
    assert ran.json()["rate"] == 2.0
    assert clock.now() - start == timedelta(seconds=2)
    assert sum(clock.slept) == pytest.approx(2.0)
    due = sorted(task.next_retry_at - start for task in records(dlq).values() if task.next_retry_at)
    assert due == [timedelta(seconds=s) for s in (0, 0.5, 1.0, 1.5, 2.0)]


def test_a_dry_run_is_not_paced(cli: Cli, dlq: DeadLetterQueue, clock: FakeClock) -> None:
    for n in range(5):
        enqueue(dlq, f"t-{n}")
    start = clock.now()
    ran = cli(*APP, "replay", "--rate", "1/min", "--dry-run", "--json")
    assert ran.code == 0, ran.err
    assert ran.json()["matched"] == 5
    assert clock.now() == start
    assert clock.slept == []


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["replay", "--limit", "2"], "No such option: --limit"),  # a job has no limit
        (["replay", "--run"], "No such option: --run"),  # now: retry with filter options
        (["replay", "--dry-run", "--background"], "a dry run is done at once"),
        (["replay", "--wait", "-1"], "--wait"),
        (["replay", "--older-than", "soon"], "--older-than"),
    ],
)
def test_replay_usage_errors(
    cli: Cli, mixed: DeadLetterQueue, argv: list[str], expected: str
) -> None:
    before = snapshot(mixed)
    ran = cli(*APP, *argv)
    assert ran.code == 2
    assert expected in ran.one_error_line()
    assert snapshot(mixed) == before
    assert jobs(mixed) == []


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--status", "exhausted"], {"exh-1"}),
        (["--category", "validation"], {"val-1"}),
        (["--category", "network,transient"], {"net-1", "net-2", "exh-1"}),
        (["--workflow", "bad"], {"net-2"}),  # arch-1 is bad's too, but archived
        (["--text", "timed out"], {"exh-1"}),
        (
            ["--since", "2026-01-01T00:00:01Z", "--until", "2026-01-01T00:00:03Z"],
            {"net-2", "val-1"},
        ),
        (["--older-than", "63s"], {"net-1", "net-2"}),  # failed before now - 63 s
        (["--older-than", "61s", "--until", "2026-01-01T00:00:01Z"], {"net-1"}),  # the earlier
    ],
)
def test_replay_filters(
    cli: Cli, mixed: DeadLetterQueue, clock: FakeClock, options: list[str], expected: set[str]
) -> None:
    clock.advance(60)  # now: 65 s after net-1 failed
    before = snapshot(mixed)
    data = cli(*APP, "replay", "--json", *options).json()
    assert set(data["summary"]["sample"]) == expected
    assert data["matched"] == data["done"] == len(expected)
    after = snapshot(mixed)
    changed = {task_id for task_id in before if after[task_id] != before[task_id]}
    assert changed == expected
    assert all(records(mixed)[task_id].next_retry_at == clock.now() for task_id in expected)


def test_replay_by_fingerprint(cli: Cli, mixed: DeadLetterQueue) -> None:
    fingerprint = record(mixed, "exh-1").error_fingerprint
    data = cli(*APP, "replay", "--fingerprint", fingerprint, "--json").json()
    assert data["filter"]["fingerprint"] == fingerprint
    assert data["summary"]["sample"] == ["exh-1"]
    assert data["done"] == 1


def test_replay_skips_what_it_cannot_replay_and_is_exit_1(cli: Cli, mixed: DeadLetterQueue) -> None:
    lease(mixed, "net-1")
    ran = cli(*APP, "replay", "--status", "retrying", "--json")
    assert ran.code == 1
    data = ran.json()
    assert data["state"] == "done"
    assert data["matched"] == data["skipped"] == 1
    reasons = {item["task_id"]: item["error"] for item in data["failures"]}
    assert set(reasons) == {"net-1"}
    assert {item["outcome"] for item in data["failures"]} == {"skipped"}
    assert "other-worker" in reasons["net-1"]

    ran = cli(*APP, "replay", "--status", "retrying")
    assert ran.code == 1
    assert "1 matched, 0 replayed, 1 skipped, 0 failed" in ran.out
    assert "not done" in ran.out
    row = next(line for line in ran.out.splitlines() if "net-1" in line)
    assert "skipped" in row


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("completed", "'completed': a completed or archived task is not replayed"),
        ("pending,archived", "'archived': a completed or archived task is not replayed"),
        ("nope", "unknown value 'nope'"),
    ],
)
def test_replay_status_takes_only_replayable_statuses(
    cli: Cli, mixed: DeadLetterQueue, status: str, expected: str
) -> None:
    before = snapshot(mixed)
    ran = cli(*APP, "replay", "--status", status)
    assert ran.code == 2
    line = ran.one_error_line()
    assert f"Invalid value for --status: {expected}" in line
    assert "allowed: pending, retrying, exhausted (see" in line
    assert snapshot(mixed) == before


def test_replay_help_offers_only_replayable_statuses(cli: Cli) -> None:
    ran = cli("replay", "--help")
    assert "pending, retrying, exhausted: the replayable ones" in ran.out
    assert "completed" not in ran.out.split("--status")[1].split("--category")[0]


# -- retry by filter: a retry job (it runs the handlers, here with --app) ----------------------


def test_retry_job_retries_each_task_and_counts(cli: Cli, mixed: DeadLetterQueue) -> None:
    ran = cli(*APP, "retry", "--workflow", "ok", "--json")
    assert ran.code == 0, ran.err
    data = ran.json()
    assert (data["kind"], data["state"]) == ("retry", "done")
    assert data["matched"] == data["done"] == 2  # net-1, exh-1
    assert data["failed"] == data["skipped"] == 0
    after = records(mixed)
    assert after["net-1"].status is DeadLetterStatus.COMPLETED
    assert after["exh-1"].status is DeadLetterStatus.COMPLETED
    assert after["net-1"].attempts[-1].trigger == "manual"


def test_retry_job_with_a_failure_is_exit_1(cli: Cli, mixed: DeadLetterQueue) -> None:
    ran = cli(*APP, "retry", "--status", "pending", "--json")
    assert ran.code == 1
    data = ran.json()
    assert data["matched"] == 3  # net-1 (ok), net-2 (bad), val-1 (no handler)
    assert (data["done"], data["failed"], data["skipped"]) == (1, 1, 1)
    failures = {item["task_id"]: item for item in data["failures"]}
    assert set(failures) == {"net-2", "val-1"}
    assert failures["net-2"]["outcome"] == "failed"
    assert "connection reset by peer" in failures["net-2"]["error"]
    assert failures["val-1"]["outcome"] == "skipped"
    assert "no handler here for workflow 'imports'" in failures["val-1"]["error"]
    after = records(mixed)
    assert after["net-1"].status is DeadLetterStatus.COMPLETED
    assert after["net-2"].retry_count == 1
    assert after["net-2"].status is DeadLetterStatus.PENDING
    assert after["val-1"].retry_count == 0


def test_retry_job_human_output_lists_what_failed(cli: Cli, mixed: DeadLetterQueue) -> None:
    ran = cli(*APP, "retry", "--status", "pending")
    assert ran.code == 1
    assert "3 matched, 1 succeeded, 1 skipped, 1 failed" in ran.out
    assert "not done" in ran.out
    row = next(line for line in ran.out.splitlines() if "net-2" in line)
    assert "failed" in row
    assert "connection reset by peer" in row


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["retry"], "name TASK_ID, or select tasks with filter options"),
        (["retry", "net-1", "--status", "pending"], "give TASK_ID or filter options"),
        (["retry", "net-1", "--rate", "1/s"], "not both"),
        (["retry", "net-1", "--background"], "not both"),
        (["retry", "net-1", "--dry-run"], "not both"),
    ],
)
def test_retry_usage_errors(
    cli: Cli, mixed: DeadLetterQueue, argv: list[str], expected: str
) -> None:
    before = snapshot(mixed)
    ran = cli(*APP, *argv)
    assert ran.code == 2
    line = ran.one_error_line()
    assert expected in line
    assert line.startswith("mahavishnu-dlq retry: Invalid value for TASK_ID")
    assert snapshot(mixed) == before
    assert jobs(mixed) == []


def test_a_retry_job_dry_run_needs_no_handlers(cli: Cli, mixed: DeadLetterQueue) -> None:
    ran = cli(*APP, "retry", "--status", "exhausted", "--dry-run", "--json")
    assert ran.code == 0, ran.err
    assert (ran.json()["kind"], ran.json()["matched"]) == ("retry", 1)
    assert record(mixed, "exh-1").status is DeadLetterStatus.EXHAUSTED
