"""The Celery integration against a real Celery worker process and a real Redis broker.

One prefork worker (``tests.engines.celery_app``, one child, queues ``celery`` and
``routed``) runs for the module; it and this process share one SQLite file. The
worker stores the tasks that fail for good; this process runs the queue's processor
(``RetryProcessor(dlq).run_once()``, ``retry_task``), which re-sends them through the
broker, and the worker reports how the re-sent task ended.
"""

from __future__ import annotations

import logging
import math
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytest
from celery import Celery
from celery.result import AsyncResult

from mahavishnu_dlq import DeadLetterQueue, MemoryStore
from mahavishnu_dlq.blocking import BlockingDLQ
from mahavishnu_dlq.integrations.celery import (
    ENGINE,
    KOMBU_JSON,
    install,
    installed,
    resend_arguments,
    resend_routing,
)
from mahavishnu_dlq.models import AttemptOutcome, DeadLetterStatus, ErrorCategory, FailedTask
from mahavishnu_dlq.processor import RetryProcessor
from mahavishnu_dlq.settings import DLQSettings

from . import celery_app
from .celery_app import (
    ROUTED_EXCHANGE,
    ROUTED_KEY,
    dlq_counters,
    double,
    flaky,
    invalid,
    patient,
    unreachable,
)
from .waiting import stop, wait_until

ROOT = Path(__file__).resolve().parents[2]
WAIT = 30.0  # seconds: a bound, not a pause; every wait ends when its condition holds
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
FLAKY = "tests.engines.celery_app.flaky"
SETTINGS = """\
store: sqlite
sqlite:
  path: {path}
retry_processor_enabled: false
policies:
  immediate_min_delay_seconds: 0
  by_workflow:
    {flaky}:
      policy: immediate
      max_retries: 2
"""


@contextmanager
def celery_worker(
    app: str, env: Mapping[str, str], log: Path, queues: str = "celery"
) -> Iterator[subprocess.Popen[bytes]]:
    """A real Celery worker (prefork, one child) for ``app``; stopped by its pid."""
    clean = _clean_environment()
    args = [sys.executable, "-m", "celery", "-A", app, "worker", "--pool=prefork", "-c", "1"]
    args += ["-Q", queues, "--without-gossip", "--without-mingle", "--without-heartbeat"]
    args += ["-l", "warning"]
    with log.open("wb") as out:
        process = subprocess.Popen(  # noqa: S603 - our own arguments
            args, cwd=ROOT, env={**clean, **env}, stdin=subprocess.DEVNULL, stdout=out, stderr=out
        )
    try:
        yield process
    finally:
        stop(process, timeout=15)  # a warm shutdown: the child ends first


@dataclass
class Setup:
    """The worker, and this process's queue on the same SQLite file."""

    dlq: BlockingDLQ
    worker: subprocess.Popen[bytes]
    log: Path

    def stored(self, task_id: str, *statuses: DeadLetterStatus) -> FailedTask:
        """The record of ``task_id`` once it is stored (in one of ``statuses``)."""

        def ready() -> FailedTask | None:
            record = self.dlq.get_task(task_id)
            if record is not None and (not statuses or record.status in statuses):
                return record
            return None

        found: FailedTask = wait_until(f"{task_id} in {statuses or 'the store'}", ready)
        return found

    def run_processor(self) -> int:
        """One cycle of the processor of this process (the one with the engine handler)."""
        done: int = self.dlq.portal.call(RetryProcessor(self.dlq.dlq).run_once)
        return done


@pytest.fixture(scope="module")
def setup(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    workdir = tmp_path_factory.mktemp("celery")
    config = workdir / "dlq.yaml"
    config.write_text(SETTINGS.format(path=workdir / "dlq.db", flaky=FLAKY))
    celery_app.app.conf.update(broker_url=redis_url, result_backend=redis_url)
    env = {celery_app.BROKER_VAR: redis_url, "MAHAVISHNU_DLQ_CONFIG": str(config)}
    log = workdir / "worker.log"
    with celery_worker("tests.engines.celery_app", env, log, "celery,routed") as worker:
        dlq = install(celery_app.app, DLQSettings.load(config), wait_seconds=60)
        with BlockingDLQ(dlq) as blocking:
            assert double.delay(21).get(timeout=WAIT) == 42  # the worker is up
            yield Setup(blocking, worker, log)
        assert worker.poll() is None, log.read_text()  # nothing we did broke it


def test_a_task_failing_for_good_is_stored_once_and_celery_sees_no_change(setup: Setup) -> None:
    result = unreachable.apply_async(
        ("db.internal",), {"port": 5432}, headers={"tenant": "acme", "traceparent": TRACEPARENT}
    )
    with pytest.raises(ConnectionError, match=r"db\.internal:5432"):
        result.get(timeout=WAIT)
    record = setup.stored(result.id)
    assert record.workflow == "tests.engines.celery_app.unreachable"
    assert record.task == {"args": ["db.internal"], "kwargs": {"port": 5432}}
    meta = record.metadata
    assert meta["engine"] == ENGINE
    assert (meta["queue"], meta["exchange"], meta["routing_key"]) == ("celery", "", "celery")
    assert meta["retries"] == 2  # stored after Celery's own two retries, not before
    assert meta["hostname"].startswith("celery@")
    assert meta["headers"] == {"tenant": "acme"}  # the trace goes to the failure context
    assert meta["failure_context"]["trace_id"] == TRACEPARENT.split("-")[1]
    assert record.error_type == "ConnectionError"
    assert record.error_category is ErrorCategory.NETWORK
    assert record.error_fingerprint
    assert record.traceback is not None
    assert "in unreachable" in record.traceback
    assert record.retry_count == 0
    assert record.status is DeadLetterStatus.PENDING
    # stored once, and Celery's own view of the task is unchanged
    page = setup.dlq.list_tasks(workflow=record.workflow)
    assert [t.task_id for t in page] == [result.id]
    assert AsyncResult(result.id, app=celery_app.app).state == "FAILURE"


def test_a_task_that_succeeds_through_celery_retries_is_not_stored(setup: Setup) -> None:
    result = patient.delay("patient-1", 2)  # fails twice, Celery retries, third run wins
    assert result.get(timeout=WAIT)["run"] == 3
    assert setup.dlq.get_task(result.id) is None


def test_a_retry_resends_to_the_routed_queue_and_success_completes(setup: Setup) -> None:
    since = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    result = flaky.apply_async(
        ("flaky-routed", 1), {"since": since}, exchange=ROUTED_EXCHANGE, routing_key=ROUTED_KEY
    )
    with pytest.raises(ConnectionError):
        result.get(timeout=WAIT)
    record = setup.stored(result.id)
    meta = record.metadata
    assert (meta["queue"], meta["exchange"], meta["routing_key"]) == (
        "routed",
        ROUTED_EXCHANGE,
        ROUTED_KEY,
    )
    assert meta["args_encoding"] == KOMBU_JSON  # the datetime, as kombu's JSON writes it
    assert record.task["kwargs"]["since"] == {
        "__type__": "datetime",
        "__value__": since.isoformat(),
    }
    # the workflow's own policy from settings: immediate, two retries
    assert (record.retry_policy.value, record.max_retries) == ("immediate", 2)

    assert setup.run_processor() == 1  # re-sent through the broker, not run here
    done = setup.stored(result.id, DeadLetterStatus.COMPLETED)
    assert [a.outcome for a in done.attempts] == [AttemptOutcome.SUCCESS]
    # the same Celery task id ran again, delivered through the routed exchange and key,
    # with the datetime decoded back into a datetime by the worker
    rerun = AsyncResult(result.id, app=celery_app.app)
    assert rerun.state == "SUCCESS"
    assert rerun.result == {
        "run": 2,
        "exchange": ROUTED_EXCHANGE,
        "routing_key": ROUTED_KEY,
        "since": "datetime",
    }


def test_a_failing_resend_counts_an_attempt_and_the_policy_exhausts(setup: Setup) -> None:
    result = flaky.delay("flaky-down", 10)
    with pytest.raises(ConnectionError):
        result.get(timeout=WAIT)
    setup.stored(result.id)
    assert setup.run_processor() == 1
    again = setup.stored(result.id, DeadLetterStatus.PENDING)  # RETRYING until the report
    assert again.retry_count == 1
    assert [a.outcome for a in again.attempts] == [AttemptOutcome.FAILURE]
    assert again.last_error == "upstream connection reset (run 2)"
    reply = setup.dlq.retry_task(result.id)  # an operator's retry: re-sent the same way
    assert reply["dispatched"] == f"celery:{result.id}:2"
    last = setup.stored(result.id, DeadLetterStatus.EXHAUSTED)
    assert [a.outcome for a in last.attempts] == [AttemptOutcome.FAILURE] * 2
    assert last.last_error == "upstream connection reset (run 3)"
    assert AsyncResult(result.id, app=celery_app.app).state == "FAILURE"


def test_a_resent_task_retried_by_celery_reports_once_when_celery_gives_up(setup: Setup) -> None:
    result = unreachable.delay("cache.internal")
    with pytest.raises(ConnectionError):
        result.get(timeout=WAIT)
    setup.stored(result.id)
    before = dlq_counters.delay().get(timeout=WAIT)
    assert setup.dlq.retry_task(result.id)["dispatched"] == f"celery:{result.id}:1"
    # Celery retries the re-sent task twice (our header travels with its retries),
    # then the failure is reported against the dispatched attempt: not stored anew
    after = setup.stored(result.id, DeadLetterStatus.PENDING)
    assert [a.outcome for a in after.attempts] == [AttemptOutcome.FAILURE]
    assert after.last_error_type == "ConnectionError"
    counters = dlq_counters.delay().get(timeout=WAIT)
    assert counters["reported"] == before["reported"] + 1
    assert counters["captured"] == before["captured"]


def test_idempotent_by_task_id_and_classified_from_the_real_exception(setup: Setup) -> None:
    first = invalid.apply_async(({"id": 17},), task_id="order-17")
    with pytest.raises(ValueError, match="quantity"):
        first.get(timeout=WAIT)
    record = setup.stored("order-17")
    assert record.error_category is ErrorCategory.VALIDATION
    assert record.retry_policy.value == "never"  # waits for an operator
    assert record.next_retry_at is None
    second = invalid.apply_async(({"id": 18},), task_id="order-17")
    with pytest.raises(ValueError, match="quantity"):
        second.get(timeout=WAIT)

    def second_failure() -> FailedTask | None:
        stored = setup.dlq.get_task("order-17")
        return stored if stored is not None and "18" in (stored.last_error or "") else None

    updated = wait_until("the second failure", second_failure)
    assert updated.created_at == record.created_at  # the same record, updated
    assert updated.task == {"args": [{"id": 18}], "kwargs": {}}
    assert len(setup.dlq.list_tasks(workflow=record.workflow)) == 1


def test_a_capture_that_fails_never_breaks_the_worker(setup: Setup) -> None:
    before = dlq_counters.delay().get(timeout=WAIT)
    result = invalid.delay({"id": math.nan})  # Celery's JSON carries NaN; ours refuses it
    with pytest.raises(ValueError, match="quantity"):
        result.get(timeout=WAIT)
    after = dlq_counters.delay().get(timeout=WAIT)  # the same child: it ran the task
    assert after["capture_failed"] == before["capture_failed"] + 1
    assert after["captured"] == before["captured"]
    assert AsyncResult(result.id, app=celery_app.app).state == "FAILURE"
    assert setup.dlq.get_task(result.id) is None
    assert double.delay(4).get(timeout=WAIT) == 8  # the worker goes on
    line = wait_until("the log line", lambda: _log_line(setup.log, result.id))
    assert "InvalidPayloadError" in line


def test_each_app_captures_its_own_tasks_even_run_eagerly(setup: Setup) -> None:
    other = Celery("other", broker="memory://")
    other.conf.task_always_eager = True

    @other.task(name="other.charge")  # type: ignore[untyped-decorator]
    def charge(order: int) -> None:
        raise TimeoutError(f"payment API timed out for order {order}")

    install(other, dlq=DeadLetterQueue(MemoryStore()))
    integration = installed(other)
    assert integration is not None
    try:
        result = charge.apply(args=(7,), task_id="eager-7")  # in this process, no broker
        assert result.state == "FAILURE"
        record = integration.bridge.blocking().get_task("eager-7")
        assert record is not None
        assert record.workflow == "other.charge"
        assert record.error_category is ErrorCategory.NETWORK
        assert "queue" not in record.metadata  # an eager run was delivered by no broker
        assert setup.dlq.get_task("eager-7") is None  # not the other app's queue
    finally:
        integration.disconnect()
        integration.bridge.close()


def test_an_unwritable_store_never_breaks_the_task(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")  # the store's directory would have to be made inside a file
    settings = DLQSettings.load(store="sqlite", sqlite={"path": str(blocker / "dlq.db")})
    other = Celery("unwritable", broker="memory://")
    other.conf.task_always_eager = True

    @other.task(name="unwritable.ping")  # type: ignore[untyped-decorator]
    def ping() -> None:
        raise ConnectionError("host unreachable")

    install(other, settings)
    integration = installed(other)
    assert integration is not None
    try:
        with caplog.at_level(logging.ERROR, logger="mahavishnu_dlq.integrations"):
            result = ping.apply(task_id="ping-1")
        assert result.state == "FAILURE"
        assert isinstance(result.result, ConnectionError)
        assert integration.counters["capture_failed"] == 1
        assert integration.counters["captured"] == 0
        assert "dlq.celery.capture ping-1 (unwritable.ping) not stored" in caplog.text
        assert "StoreUnavailableError" in caplog.text
    finally:
        integration.disconnect()
        integration.bridge.close()


def test_a_resend_takes_the_recorded_routing_and_checks_the_input() -> None:
    assert resend_routing({"exchange": "", "routing_key": "emails", "priority": 3}) == {
        "queue": "emails",
        "priority": 3,
    }
    assert resend_routing({"exchange": "tasks", "routing_key": "hi"}) == {
        "exchange": "tasks",
        "routing_key": "hi",
    }
    assert resend_routing({}) == {}  # no routing recorded: Celery's router decides
    with pytest.raises(TypeError, match="args"):
        resend_arguments({"args": "not a list"})
    assert resend_arguments({"args": [1]}) == ([1], {})


def test_install_checks_its_arguments() -> None:
    with pytest.raises(TypeError, match="Celery app"):
        install(object())
    with pytest.raises(ValueError, match="wait_seconds"):
        install(celery_app.app, wait_seconds=0)
    with pytest.raises(TypeError, match="collection"):
        install(celery_app.app, headers_kept="tenant")
    assert installed(celery_app.app) is not None


def test_the_example_project_runs_end_to_end(redis_url: str, tmp_path: Path) -> None:
    broker = redis_url.rsplit("/", 1)[0] + "/3"  # its own database: not the module's worker
    env = {
        "CELERY_BROKER_URL": broker,
        "MAHAVISHNU_DLQ_STORE": "sqlite",
        "MAHAVISHNU_DLQ_SQLITE__PATH": str(tmp_path / "billing.db"),
    }
    with celery_worker("examples.celery_project.tasks", env, tmp_path / "worker.log"):
        run = subprocess.run(
            [sys.executable, "-m", "examples.celery_project.run"],
            cwd=ROOT,
            env={**_clean_environment(), **env},
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].endswith("failed for good: billing API: connection refused")
    assert lines[1:3] == [
        (
            "stored: billing.sync_invoice {'args': ['inv-42', 12500], 'kwargs': {}}"
            " from queue 'celery'"
        ),
        "        network, retry exponential",
    ]
    assert lines[-1] == "done:   completed after 1 retry: invoice inv-42 synced (12500 cents)"


def _clean_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MAHAVISHNU_DLQ_")}


def _log_line(log: Path, task_id: str) -> str | None:
    for line in log.read_text(errors="replace").splitlines():
        if "dlq.celery.capture" in line and task_id in line:
            return line
    return None
