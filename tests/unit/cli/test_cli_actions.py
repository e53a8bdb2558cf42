"""The CLI's actions in-process, against a queue the test owns: retry TASK_ID, archive,
purge, clear and processor run (how these tests work: ``test_cli_commands``).

Archive and purge by filter are bulk jobs: followed, and run in the command itself,
since nothing else can run a job on this process's memory store (replay and retry
by filter: ``test_cli_replay``; the modes and the ``jobs`` commands:
``test_cli_jobs``)."""

from __future__ import annotations

import io
import re
import sys
from datetime import datetime, timedelta, timezone

import pytest

from mahavishnu_dlq import Dispatched
from mahavishnu_dlq.models import DeadLetterStatus, FailedTask
from mahavishnu_dlq.queue import DeadLetterQueue
from mahavishnu_dlq.storage import build as build_module
from mahavishnu_dlq.storage.memory import MemoryStore
from mahavishnu_dlq.testing import FakeClock, FlakyHandler
from tests.unit.cli.conftest import (
    APP,
    JOB_KEYS,
    MODULE,
    WORKER,
    Cli,
    complete,
    enqueue,
    flaky,
    jobs,
    lease,
    prompted,
    record,
    records,
    snapshot,
)

# -- retry ------------------------------------------------------------------------------


def test_retry_success(cli: Cli, dlq: DeadLetterQueue) -> None:
    enqueue(dlq, "t-1")
    ran = cli(*APP, "retry", "t-1")
    assert ran.code == 0, ran.err
    assert "✓ task t-1 succeeded on retry 1" in ran.out
    task = record(dlq, "t-1")
    assert task.status is DeadLetterStatus.COMPLETED
    assert task.retry_count == 1
    assert task.attempts[-1].trigger == "manual"
    assert flaky("ok").calls == [({"id": "t-1"}, ["repo-a"])]


def test_retry_success_json(cli: Cli, dlq: DeadLetterQueue) -> None:
    enqueue(dlq, "t-1")
    data = cli(*APP, "retry", "t-1", "--json").json()
    assert set(data) == {"success", "task_id", "result", "message", "status", "next_retry_at"}
    assert data["success"] is True
    assert data["task_id"] == "t-1"
    assert data["result"] == "ok"
    assert data["status"] == "completed"
    assert data["next_retry_at"] is None


def test_retry_failure_counts_and_is_exit_1(
    cli: Cli, dlq: DeadLetterQueue, clock: FakeClock
) -> None:
    enqueue(dlq, "t-1", workflow="bad")
    ran = cli(*APP, "retry", "t-1")
    assert ran.code == 1
    assert "✗ retry 1 of task t-1 failed; task is now pending" in ran.out
    assert "error: " in ran.out
    assert "connection reset by peer" in ran.out
    assert "next automatic retry: 2026-01-01" in ran.out
    task = record(dlq, "t-1")
    assert task.retry_count == 1
    assert task.status is DeadLetterStatus.PENDING
    assert task.next_retry_at is not None
    assert task.next_retry_at > clock.now()

    data = cli(*APP, "retry", "t-1", "--json").json()
    assert set(data) == {"success", "task_id", "error", "message", "status", "next_retry_at"}
    assert data["success"] is False
    assert isinstance(data["error"], str)
    assert data["status"] == "pending"
    assert isinstance(data["next_retry_at"], str)
    assert record(dlq, "t-1").retry_count == 2


def test_retry_of_an_engine_record_says_where_it_was_sent(cli: Cli, dlq: DeadLetterQueue) -> None:
    def send(task: FailedTask) -> None:
        raise Dispatched("sent to its queue")

    dlq.register_engine("celery", send)
    enqueue(dlq, "t-1", workflow="proj.add", metadata={"engine": "celery"})
    ran = cli(*APP, "retry", "t-1")
    assert ran.code == 0, ran.err
    assert "→ retry 1 of task t-1 was sent as celery:t-1:1; its engine reports" in ran.out
    task = record(dlq, "t-1")
    assert task.status is DeadLetterStatus.RETRYING
    assert task.lease_owner == "celery:t-1:1"
    data = cli(*APP, "retry", "t-1", "--json")
    assert data.code == 1  # held by the dispatch: busy until the engine reports
    assert "celery:t-1:1" in data.err


def test_retry_without_app_is_exit_2(cli: Cli, dlq: DeadLetterQueue) -> None:
    enqueue(dlq, "t-1")
    ran = cli("retry", "t-1")
    assert ran.code == 2
    line = ran.one_error_line()
    assert "--app MODULE:ATTR" in line
    assert "$MAHAVISHNU_DLQ_APP" in line
    assert record(dlq, "t-1").retry_count == 0


def test_retry_unknown_id_is_exit_1(cli: Cli, dlq: DeadLetterQueue) -> None:
    ran = cli(*APP, "retry", "nope")
    assert ran.code == 1
    assert "no task with id 'nope'" in ran.one_error_line()


def test_retry_of_a_task_being_retried_is_busy(cli: Cli, dlq: DeadLetterQueue) -> None:
    enqueue(dlq, "t-1")
    lease(dlq, "t-1")
    before = record(dlq, "t-1")
    ran = cli(*APP, "retry", "t-1")
    assert ran.code == 1
    line = ran.one_error_line()
    assert "busy" in line
    assert "other-worker" in line
    assert record(dlq, "t-1") == before
    assert flaky("ok").calls == []


def test_retry_after_the_lease_expired_records_the_lost_attempt(
    cli: Cli, dlq: DeadLetterQueue, clock: FakeClock
) -> None:
    enqueue(dlq, "t-1")
    lease(dlq, "t-1")
    clock.advance(601)  # the other worker vanished: its lease ran out
    ran = cli(*APP, "retry", "t-1")
    assert ran.code == 0, ran.err
    task = record(dlq, "t-1")
    assert task.status is DeadLetterStatus.COMPLETED
    assert [a.outcome.value for a in task.attempts] == ["lost", "success"]


def test_retry_of_a_completed_task_is_exit_1(cli: Cli, mixed: DeadLetterQueue) -> None:
    ran = cli(*APP, "retry", "done-1", "--json")
    assert ran.code == 1
    assert ran.json()["success"] is False
    assert "nothing to retry" in ran.json()["message"]


def test_retry_without_a_handler_for_the_workflow_is_exit_1(cli: Cli, dlq: DeadLetterQueue) -> None:
    enqueue(dlq, "t-1", workflow="orphan")
    ran = cli(*APP, "retry", "t-1")
    assert ran.code == 1
    assert "no handler registered for workflow 'orphan'" in ran.out
    assert record(dlq, "t-1").retry_count == 0


# -- archive -------------------------------------------------------------------------------


def test_archive_several_with_one_unknown(cli: Cli, mixed: DeadLetterQueue) -> None:
    ran = cli(*APP, "archive", "net-1", "nope", "val-1")
    assert ran.code == 1
    assert ran.out.splitlines() == ["archived net-1", "archived val-1"]
    assert ran.one_error_line() == "mahavishnu-dlq: nope: not found"
    after = records(mixed)
    assert after["net-1"].status is DeadLetterStatus.ARCHIVED
    assert after["val-1"].status is DeadLetterStatus.ARCHIVED
    assert after["net-2"].status is DeadLetterStatus.PENDING
    assert jobs(mixed) == []  # ids: no job


def test_archive_json(cli: Cli, mixed: DeadLetterQueue) -> None:
    lease(mixed, "net-2")
    ran = cli(*APP, "archive", "net-1", "nope", "net-2", "--json")
    assert ran.code == 1
    data = ran.json()
    assert data["archived"] == ["net-1"]
    reasons = {item["task_id"]: item["reason"] for item in data["failed"]}
    assert reasons["nope"] == "not found"
    assert "busy" in reasons["net-2"]
    assert records(mixed)["net-2"].status is DeadLetterStatus.RETRYING


def test_archive_all_known_is_exit_0(cli: Cli, mixed: DeadLetterQueue) -> None:
    ran = cli(*APP, "archive", "exh-1", "arch-1", "--json")
    assert ran.code == 0, ran.err
    assert ran.json() == {"archived": ["exh-1", "arch-1"], "failed": []}


def test_archive_by_filter_is_a_job(cli: Cli, mixed: DeadLetterQueue, clock: FakeClock) -> None:
    ran = cli(*APP, "archive", "--category", "network", "--status", "pending", "--json")
    assert ran.code == 0, ran.err
    data = ran.json()
    assert (data["kind"], data["state"]) == ("archive", "done")
    assert data["matched"] == data["done"] == 2
    after = records(mixed)
    assert after["net-1"].status is after["net-2"].status is DeadLetterStatus.ARCHIVED
    assert after["net-1"].archived_at == clock.now()
    assert after["val-1"].status is DeadLetterStatus.PENDING

    ran = cli(*APP, "archive", "--workflow", "imports")
    assert ran.code == 0, ran.err
    assert re.match(r"archive job-\w+ done: 1 matched, 1 archived, 0 skipped, 0 failed", ran.out)
    assert records(mixed)["val-1"].status is DeadLetterStatus.ARCHIVED


def test_archive_by_filter_skips_a_task_being_retried(cli: Cli, mixed: DeadLetterQueue) -> None:
    lease(mixed, "net-2")
    ran = cli(*APP, "archive", "--status", "retrying", "--json")
    assert ran.code == 1
    data = ran.json()
    assert (data["matched"], data["done"], data["skipped"]) == (1, 0, 1)
    assert data["failures"][0]["task_id"] == "net-2"
    assert records(mixed)["net-2"].status is DeadLetterStatus.RETRYING


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["archive"], "name TASK_ID, or select tasks with filter options"),
        (["archive", "net-1", "--workflow", "ok"], "not both"),
        (["archive", "net-1", "--older-than", "1d"], "not both"),
        (["archive", "net-1", "--background"], "not both"),
        (["archive", "--status", "nonsense"], "unknown value 'nonsense'"),
    ],
)
def test_archive_usage_errors(
    cli: Cli, mixed: DeadLetterQueue, argv: list[str], expected: str
) -> None:
    before = snapshot(mixed)
    ran = cli(*APP, *argv)
    assert ran.code == 2
    assert expected in ran.one_error_line()
    assert snapshot(mixed) == before
    assert jobs(mixed) == []


# -- purge (a job) ---------------------------------------------------------------------------


def test_purge_deletes_completed_and_archived_by_default(cli: Cli, mixed: DeadLetterQueue) -> None:
    ran = cli(*APP, "purge", "--yes", "--json")
    assert ran.code == 0, ran.err
    data = ran.json()
    assert set(data) == JOB_KEYS
    assert (data["kind"], data["state"], data["dry_run"]) == ("purge", "done", False)
    assert data["matched"] == data["done"] == 2
    assert data["filter"]["status"] == ["completed", "archived"]
    assert data["filter"]["updated_before"] is None
    assert data["older_than_seconds"] is None
    assert set(records(mixed)) == {"net-1", "net-2", "val-1", "exh-1"}
    assert "Delete" not in ran.err  # --yes: no question


def test_purge_human_output(cli: Cli, mixed: DeadLetterQueue) -> None:
    ran = cli(*APP, "purge", "-y")
    assert ran.code == 0, ran.err
    assert re.match(r"purge job-\w+ done: 2 matched, 2 purged, 0 skipped, 0 failed\n$", ran.out)


def test_purge_older_than_uses_the_queue_clock(
    cli: Cli, dlq: DeadLetterQueue, clock: FakeClock
) -> None:
    enqueue(dlq, "old")
    complete(dlq, "old")
    clock.advance(timedelta(days=10))
    enqueue(dlq, "new")
    complete(dlq, "new")
    clock.advance(timedelta(days=1))
    ran = cli(*APP, "purge", "--older-than", "5d", "--yes", "--json")
    assert ran.code == 0, ran.err
    data = ran.json()
    assert data["matched"] == data["done"] == 1
    cutoff = clock.now() - timedelta(days=5)
    assert data["filter"]["updated_before"] == cutoff.isoformat().replace("+00:00", "Z")
    assert data["older_than_seconds"] == 5 * 86400
    assert set(records(dlq)) == {"new"}


def test_purge_takes_the_filter_options(cli: Cli, mixed: DeadLetterQueue) -> None:
    ran = cli(*APP, "purge", "--workflow", "bad", "--yes", "--json")  # arch-1, not done-1
    assert ran.code == 0, ran.err
    assert ran.json()["done"] == 1
    assert "arch-1" not in records(mixed)
    assert "done-1" in records(mixed)


def test_purge_dry_run_deletes_nothing(cli: Cli, mixed: DeadLetterQueue) -> None:
    before = snapshot(mixed)
    ran = cli(*APP, "purge", "--dry-run")  # no question either
    assert ran.code == 0, ran.err
    assert re.match(r"would purge 2 task\(s\); nothing was changed \(dry run job-\w+\)", ran.out)
    assert "first: arch-1, done-1" in ran.out
    assert "Delete" not in ran.err
    data = cli(*APP, "purge", "--dry-run", "--json").json()
    assert data["matched"] == data["summary"]["total"] == 2
    assert data["summary"]["by_status"] == {"completed": 1, "archived": 1}
    assert data["done"] == 0
    assert data["dry_run"] is True
    assert snapshot(mixed) == before


def test_purge_asks_and_no_keeps_everything(mixed: DeadLetterQueue) -> None:
    before = snapshot(mixed)
    result = prompted([*APP, "purge"], "n\n")
    assert result.exit_code == 1
    assert "Delete 2 task(s) (completed, archived) for good?" in result.stderr
    assert "aborted: nothing was changed" in result.stderr
    assert "purged" not in result.stdout
    assert snapshot(mixed) == before
    assert jobs(mixed) == []  # refused before the job was made


def test_purge_asks_and_yes_deletes(mixed: DeadLetterQueue) -> None:
    result = prompted([*APP, "purge"], "y\n")
    assert result.exit_code == 0, result.output
    assert "Delete 2 task(s)" in result.stderr
    assert "2 matched, 2 purged, 0 skipped, 0 failed" in result.stdout
    assert set(records(mixed)) == {"net-1", "net-2", "val-1", "exh-1"}


def test_purge_of_open_statuses_warns_in_the_question(mixed: DeadLetterQueue) -> None:
    result = prompted([*APP, "purge", "--status", "pending"], "n\n")
    assert result.exit_code == 1
    assert "Delete 3 task(s) (pending; pending tasks still need handling) for good?" in (
        result.stderr
    )
    assert len(records(mixed)) == 6


def test_purge_question_names_the_cutoff(mixed: DeadLetterQueue, clock: FakeClock) -> None:
    clock.advance(timedelta(days=2))
    result = prompted([*APP, "purge", "--older-than", "1d"], "n\n")
    assert result.exit_code == 1
    assert "last updated before 2026-01-02 00:00:05.000 UTC" in result.stderr


def test_purge_question_counts_what_the_filters_select(mixed: DeadLetterQueue) -> None:
    result = prompted([*APP, "purge", "--workflow", "ok"], "n\n")
    assert result.exit_code == 1
    assert "Delete 1 task(s) (completed, archived) for good?" in result.stderr


def test_purge_with_no_answer_on_stdin_aborts(
    cli: Cli, mixed: DeadLetterQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # end of input: no
    ran = cli(*APP, "purge")
    assert ran.code == 1
    assert "aborted: nothing was changed (pass --yes to skip this question)" in ran.err
    assert "Traceback" not in ran.err
    assert len(records(mixed)) == 6


def test_purge_with_nothing_to_delete_does_not_ask(cli: Cli, dlq: DeadLetterQueue) -> None:
    enqueue(dlq, "t-1")
    ran = cli(*APP, "purge")
    assert ran.code == 0, ran.err
    assert "0 matched, 0 purged, 0 skipped, 0 failed" in ran.out
    assert "Delete" not in ran.err


# -- clear --------------------------------------------------------------------------------------


def test_clear_asks_first(mixed: DeadLetterQueue) -> None:
    result = prompted([*APP, "clear"], "n\n")
    assert result.exit_code == 1
    assert "Delete all 6 task(s) in the dead-letter queue?" in result.stderr
    assert len(records(mixed)) == 6

    result = prompted([*APP, "clear"], "y\n")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().endswith("cleared 6 task(s)")
    assert records(mixed) == {}


def test_clear_yes(cli: Cli, mixed: DeadLetterQueue) -> None:
    ran = cli(*APP, "clear", "--yes", "--json")
    assert ran.code == 0, ran.err
    assert ran.json() == {"matched": 6, "purged": 6}
    assert records(mixed) == {}
    ran = cli(*APP, "clear")  # empty: nothing to ask
    assert ran.code == 0
    assert ran.out == "cleared 0 task(s)\n"
    assert ran.err == ""


# -- processor run ----------------------------------------------------------------------------


def test_processor_drain_completes_what_was_made_due(
    cli: Cli, mixed: DeadLetterQueue, clock: FakeClock
) -> None:
    # the summary counts this run only: done-1 succeeded and exh-1 was exhausted
    # while the fixture seeded the queue, before the command
    assert (mixed.lifetime["retry_success"], mixed.lifetime["exhausted"]) == (1, 1)
    ran = cli(*APP, "replay", "--workflow", "bad", "--text", "net-")  # net-2 only
    assert ran.code == 0, ran.err
    clock.advance(1)  # net-1's own retry (one minute after it failed) is not due yet
    ran = cli(*APP, "processor", "run", "--drain", "--json")
    assert ran.code == 0, ran.err
    assert ran.json() == {
        "worker_id": WORKER,
        "attempts": 1,
        "retry_success": 0,
        "retry_failed": 1,
        "exhausted": 0,
    }
    assert records(mixed)["net-2"].retry_count == 1

    assert cli(*APP, "replay", "--workflow", "ok").code == 0  # net-1 and exh-1
    ran = cli(*APP, "processor", "run", "--drain", "--json")
    assert ran.code == 0, ran.err
    assert ran.json()["attempts"] == 2
    assert ran.json()["retry_success"] == 2
    after = records(mixed)
    assert after["net-1"].status is DeadLetterStatus.COMPLETED
    assert after["exh-1"].status is DeadLetterStatus.COMPLETED
    assert after["net-2"].status is DeadLetterStatus.PENDING  # its next retry is not due
    assert after["net-2"].retry_count == 1
    assert after["val-1"].retry_count == 0  # never policy: awaiting an operator


def test_processor_drain_human_output(cli: Cli, dlq: DeadLetterQueue) -> None:
    enqueue(dlq, "t-1", retry_policy="immediate")
    ran = cli(*APP, "processor", "run", "--drain")
    assert ran.code == 0, ran.err
    assert ran.out == (
        f"processor {WORKER} stopped; 1 attempts: 1 retry success, 0 retry failed, 0 exhausted\n"
    )
    assert record(dlq, "t-1").status is DeadLetterStatus.COMPLETED


def test_processor_run_logs_the_error_of_each_failed_attempt(
    cli: Cli, dlq: DeadLetterQueue
) -> None:
    error = FlakyHandler(failures=10**6, make_error=lambda: ValueError("row 7\nis bad"))
    dlq.register_handler("bad", error)
    enqueue(dlq, "t-1", workflow="bad", retry_policy="immediate")
    enqueue(dlq, "t-2", retry_policy="immediate")  # ok: its success carries no error
    ran = cli(*APP, "processor", "run", "--drain")
    assert ran.code == 0, ran.err
    failed = next(line for line in ran.err.splitlines() if "dlq.retry t-1" in line)
    assert "attempt 1: failure -> pending: ValueError: row 7 is bad" in failed
    succeeded = next(line for line in ran.err.splitlines() if "dlq.retry t-2" in line)
    assert succeeded.rstrip().endswith("success -> completed")


def test_processor_drain_with_a_mapping_of_handlers(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A mapping gets a queue from the settings (system clock); tasks awaiting an
    # operator (policy never) are not due for it until replay makes them due at its now.
    past = FakeClock(datetime(2020, 1, 1, tzinfo=timezone.utc))
    seeded = DeadLetterQueue(MemoryStore(), clock=past)
    store = seeded.store
    monkeypatch.setenv("MAHAVISHNU_DLQ_STORE", "memory")
    monkeypatch.setattr(build_module, "MemoryStore", lambda: store)
    for task_id, workflow in [("a", "ok"), ("b", "ok"), ("c", "bad")]:
        enqueue(seeded, task_id, workflow=workflow, retry_policy="never")
    spec = f"{MODULE}:handlers"
    assert cli("--app", spec, "processor", "run", "--drain", "--json").json()["attempts"] == 0
    assert cli("--app", spec, "replay", "--workflow", "ok").code == 0
    ran = cli("--app", spec, "processor", "run", "--drain", "--json")
    assert ran.code == 0, ran.err
    assert ran.json()["attempts"] == 2
    assert ran.json()["retry_success"] == 2
    after = records(seeded)
    assert after["a"].status is after["b"].status is DeadLetterStatus.COMPLETED
    assert after["c"].status is DeadLetterStatus.PENDING
    assert after["c"].retry_count == 0
    assert len(flaky("bad").calls) == 0


def test_processor_without_app_is_exit_2(cli: Cli) -> None:
    ran = cli("processor", "run", "--drain")
    assert ran.code == 2
    line = ran.one_error_line()
    assert "--app MODULE:ATTR" in line
    assert "$MAHAVISHNU_DLQ_APP" in line
