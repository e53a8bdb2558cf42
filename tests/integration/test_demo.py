"""The demo, end to end: real workflows, the real queue and processor, and the CLI around them.

The in-process run checks what really happened to every task against the
failure plan its seed fixes; the subprocess runs check the console script's
contract (JSON output, exit status 2 and one line for a broken configuration,
the message when the ``cli`` extra is missing).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mahavishnu_dlq.demo import DEMO_POLICY, WORKFLOWS, plan_scenarios, run_demo
from mahavishnu_dlq.models import (
    AttemptOutcome,
    DeadLetterStatus,
    ErrorCategory,
    RetryPolicy,
)

pytestmark = pytest.mark.anyio

SEED = 4711
COUNT = 20


def _environment() -> dict[str, str]:
    """This process's environment without MAHAVISHNU_DLQ_* (the test machine's must not leak)."""
    return {k: v for k, v in os.environ.items() if not k.upper().startswith("MAHAVISHNU_DLQ_")}


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own console script, fixed arguments
        [sys.executable, "-m", "mahavishnu_dlq", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=_environment(),
        check=False,
    )


async def test_demo_runs_every_failure_through_the_real_paths() -> None:
    snapshots: list[dict[str, Any]] = []
    result = await run_demo(COUNT, seed=SEED, timeout=30.0, on_progress=snapshots.append)
    plans = plan_scenarios(COUNT, random.Random(SEED))
    records = {record.task_id: record for record in result.records}

    assert not result.timed_out
    assert result.seed == SEED
    counts = result.counts
    assert counts["executed"] == COUNT
    assert counts["succeeded"] + counts["failed"] == COUNT
    assert counts["stored"] == counts["failed"] == len(records)
    # every task that failed its first run is stored; the others are not
    assert set(records) == {tid for tid, plan in plans.items() if plan.fails(1)}

    completed = [r for r in records.values() if r.status is DeadLetterStatus.COMPLETED]
    exhausted = [r for r in records.values() if r.status is DeadLetterStatus.EXHAUSTED]
    pending = [r for r in records.values() if r.status is DeadLetterStatus.PENDING]
    assert completed
    assert exhausted
    assert pending
    assert not [r for r in records.values() if r.status is DeadLetterStatus.RETRYING]

    for record in completed:  # "fails N times, then recovers": exactly N - 1 failed retries
        failures = plans[record.task_id].failures
        assert record.retry_count == failures >= 1
        outcomes = [attempt.outcome for attempt in record.attempts]
        assert outcomes == [AttemptOutcome.FAILURE] * (failures - 1) + [AttemptOutcome.SUCCESS]
        assert record.error_category in (
            ErrorCategory.NETWORK,
            ErrorCategory.RESOURCE,
        )
    for record in exhausted:
        assert record.workflow == "charge_card"
        assert record.error_category is ErrorCategory.TRANSIENT
        assert record.retry_policy is RetryPolicy.EXPONENTIAL
        assert record.retry_count == record.max_retries == DEMO_POLICY.max_retries
        assert len(record.attempts) == record.max_retries
        assert {a.outcome for a in record.attempts} == {AttemptOutcome.FAILURE}
        assert record.total_attempts == record.max_retries + 1
    for record in pending:
        assert record.workflow == "import_catalog"
        assert record.error_category is ErrorCategory.VALIDATION
        assert record.retry_policy is RetryPolicy.NEVER
        assert record.next_retry_at is None
        assert record.retry_count == 0
        assert record.attempts == []

    stats = result.statistics
    breakdown = stats["status_breakdown"]
    assert breakdown["completed"] == len(completed)
    assert breakdown["exhausted"] == len(exhausted)
    assert breakdown["pending"] == len(pending)
    assert breakdown["retrying"] == 0
    assert stats["queue_size"] == len(exhausted) + len(pending)
    assert stats["is_processor_running"] is False
    life = stats["lifetime_stats"]
    assert life["enqueued_total"] == len(records)
    assert life["retry_success"] == len(completed)
    assert life["exhausted"] == len(exhausted)
    assert life["retry_failed"] == sum(
        1
        for record in records.values()
        for attempt in record.attempts
        if attempt.outcome is AttemptOutcome.FAILURE
    )
    # every workflow call is either a first run or a retry the processor counted
    assert counts["workflow_calls"] == COUNT + life["retry_success"] + life["retry_failed"]

    by_workflow = result.by_workflow
    assert list(by_workflow) == list(WORKFLOWS)
    assert sum(row["runs"] for row in by_workflow.values()) == COUNT
    assert sum(row["failed"] for row in by_workflow.values()) == counts["failed"]

    examples = result.examples
    done = examples["completed_after_retries"]
    assert done is not None
    assert done.status is DeadLetterStatus.COMPLETED
    assert done.retry_count >= 1
    gone = examples["exhausted"]
    assert gone is not None
    assert gone.status is DeadLetterStatus.EXHAUSTED
    manual = examples["pending_manual"]
    assert manual is not None
    assert manual.next_retry_at is None

    phases = [snapshot["phase"] for snapshot in snapshots]
    assert phases[0] == "execute"
    assert "retry" in phases
    assert phases[-1] == "done"
    assert phases.index("retry") > max(i for i, p in enumerate(phases) if p == "execute")


def test_failure_plan_is_fixed_by_the_seed_and_covers_every_kind() -> None:
    plan = plan_scenarios(30, random.Random(SEED))
    assert plan == plan_scenarios(30, random.Random(SEED))
    assert plan != plan_scenarios(30, random.Random(SEED + 1))
    first_block = list(plan.values())[:12]
    kinds = {(scenario.workflow, scenario.kind) for scenario in first_block}
    assert {"flaky", "invalid", "down", "oom", "ok"} == {kind for _, kind in kinds}
    assert {workflow for workflow, _ in kinds} == set(WORKFLOWS)


async def test_demo_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="count"):
        await run_demo(0)
    with pytest.raises(ValueError, match="timeout"):
        await run_demo(5, timeout=0)


def test_cli_demo_json() -> None:
    proc = _cli("demo", "--count", "12", "--json", "--seed", "7")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert set(data) >= {"seed", "count", "counts", "statistics", "examples", "elapsed_seconds"}
    assert data["count"] == 12
    assert data["seed"] == 7
    assert data["timed_out"] is False
    stats = data["statistics"]
    assert set(stats) >= {
        "queue_size",
        "status_breakdown",
        "error_categories",
        "retry_policies",
        "lifetime_stats",
        "backend",
        "oldest_pending_age_seconds",
        "top_fingerprints",
    }
    assert stats["backend"] == "memory"
    assert stats["status_breakdown"]["retrying"] == 0
    assert set(data["examples"]) == {"completed_after_retries", "exhausted", "pending_manual"}
    assert data["examples"]["exhausted"]["status"] == "exhausted"
    assert data["examples"]["pending_manual"]["next_retry_at"] is None


def test_cli_malformed_config_is_one_line_and_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "broken.yaml"
    config.write_text("max_size: [1000\nenabled: true\n", encoding="utf-8")
    proc = _cli("--config", str(config), "demo", "--count", "3")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "malformed YAML" in lines[0]
    assert str(config) in lines[0]
    assert proc.stdout == ""


def test_cli_invalid_values_are_one_line_and_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "invalid.yaml"
    config.write_text("max_size: 5\ndefault_max_retries: 99\n", encoding="utf-8")
    proc = _cli("--config", str(config), "demo")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "max_size" in lines[0]
    assert "default_max_retries" in lines[0]


def test_cli_without_the_extra_says_which_to_install() -> None:
    code = "import sys; sys.modules['typer'] = None; from mahavishnu_dlq.cli import main; main()"
    proc = subprocess.run(  # noqa: S603 - fixed arguments
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env=_environment(),
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "the CLI needs the 'cli' extra: pip install 'mahavishnu-dlq[cli]'"
    )


async def test_the_default_demo_ends_before_its_time_limit() -> None:
    """The README's first command: 60 runs, whose always-failing workflow would open a
    circuit breaker and hold its retries past the limit if the demo had one."""
    result = await run_demo(seed=SEED)
    assert not result.timed_out
    assert result.counts["executed"] == 60
    assert any(record.status.value == "exhausted" for record in result.records)
