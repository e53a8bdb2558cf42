"""The Prefect integration against Prefect's real local API (no server installed,
nothing from the internet).

``prefect_test_harness`` (Prefect's sanctioned test fixture) starts a temporary
API server on a fresh SQLite database once per session (~10 s, shared by every
test here). Flows run in this process through the hook a test binds
(``flow.with_options(on_failure=[hook])``); a deployment is served by a real
runner process (``flow.serve``) whose flow runs, each in a process of its own,
capture through the default :data:`dead_letter_hook` configured by environment
variables, into the same SQLite file the test's queue reads.
"""

from __future__ import annotations

import os
import tempfile

# Prefect reads its settings when imported: point its home at a scratch directory,
# keep telemetry off and make sure no real API is used (the harness sets its own).
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="prefect-home-")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["DO_NOT_TRACK"] = "1"
os.environ.pop("PREFECT_API_URL", None)

import gc
import logging
import pickle
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import cloudpickle  # type: ignore[import-untyped]  # comes with Prefect
import pytest
from opentelemetry.sdk.trace import TracerProvider
from prefect import Flow, tags
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun, State, StateType
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL
from prefect.testing.utilities import prefect_test_harness

from mahavishnu_dlq.blocking import BlockingDLQ
from mahavishnu_dlq.integrations.prefect import (
    REPLAY_TAG,
    DeadLetterHook,
    dead_letter_hook,
    dead_letter_hook_for,
)
from mahavishnu_dlq.models import DeadLetterStatus, ErrorCategory, FailedTask
from mahavishnu_dlq.processor import RetryProcessor
from mahavishnu_dlq.settings import DLQSettings

from . import prefect_flows as flows
from .waiting import stop, wait_until

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")

# Prefect 3.9 leaves its API client's socket open when an async flow runs under
# asyncio.run, or a replay runs one on Prefect's loop thread (seen with no hook at
# all): the socket is finalised whenever the garbage collector next runs, in this
# test or a later one. Its ResourceWarning is Prefect's, not ours; the async test
# collects right away so that it stays in this module.
pytestmark = pytest.mark.filterwarnings(
    "ignore:unclosed <socket.socket:ResourceWarning",
    "ignore:Exception ignored in. <socket.socket:pytest.PytestUnraisableExceptionWarning",
)


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[str]:
    """Prefect's temporary API server and database for the session; its URL."""
    with prefect_test_harness(server_startup_timeout=60):
        yield str(PREFECT_API_URL.value())


@pytest.fixture
def dlq_settings(tmp_path: Path) -> DLQSettings:
    """A SQLite queue of this test's own (shared with the processes it starts)."""
    return DLQSettings.load(
        store="sqlite",
        sqlite={"path": str(tmp_path / "dlq.db")},
        retry_processor_enabled=False,  # the tests drive the processor themselves
        policies={
            "by_workflow": {
                "flaky-flow": {"policy": "immediate", "max_retries": 7},
                "async-flaky": {"policy": "immediate"},
            }
        },
    )


@pytest.fixture
def hook(prefect_api: str, dlq_settings: DLQSettings) -> Iterator[DeadLetterHook]:
    made = dead_letter_hook_for(dlq_settings=dlq_settings)
    yield made
    made.close()


@pytest.fixture
def host(hook: DeadLetterHook) -> Iterator[BlockingDLQ]:
    """The host's queue (with the ``prefect`` engine handler), on a loop thread."""
    with BlockingDLQ(hook.dlq) as blocking:
        yield blocking


def _bound(flow: Flow[..., T], hook: DeadLetterHook) -> Flow[..., T]:
    return flow.with_options(on_failure=[hook])


def _state(flow: Flow[..., Any], *args: Any, **kwargs: Any) -> State[Any]:
    """Run ``flow`` for its final state (Prefect raises nothing then)."""
    state: Any = flow(*args, return_state=True, **kwargs)  # Prefect types this one loosely
    assert isinstance(state, State)
    return state


def _run(flow_run_id: str) -> FlowRun:
    with get_client(sync_client=True) as client:
        return client.read_flow_run(UUID(flow_run_id))


def _only_record(host: BlockingDLQ) -> FailedTask:
    records = list(host.list_tasks())
    assert len(records) == 1, [r.task_id for r in records]
    return records[0]


# -- capture -------------------------------------------------------------------------------


def test_a_failed_run_is_stored_once_with_its_parameters_and_links(
    hook: DeadLetterHook, host: BlockingDLQ
) -> None:
    network_down = _bound(flows.network_down, hook)
    with tags("team-data"), pytest.raises(ConnectionError, match="reset by peer"):
        network_down("db.internal", port=5432)  # Prefect raises the flow's own exception
    stored = _only_record(host)
    run = _run(stored.task_id)  # the task id is the flow run's id
    assert run.state is not None
    assert run.state.type is StateType.FAILED  # Prefect's own state is unchanged
    assert stored.workflow == "network-down"
    assert stored.task == {"host": "db.internal", "port": 5432}
    meta = stored.metadata
    assert meta["engine"] == "prefect"
    assert meta["flow_run_id"] == str(run.id)
    assert meta["flow_run_name"] == run.name
    assert meta["flow"] == "tests.engines.prefect_flows:network_down"
    assert meta["tags"] == ["team-data"]
    assert meta["state"] == "Failed"
    assert meta["run_url"].endswith(f"/runs/flow-run/{run.id}")
    assert meta["run_url"].startswith("http://127.0.0.1:")
    assert "deployment_id" not in meta
    assert stored.retry_policy.value == "exponential"  # no policy of its own: the default
    # the error is the flow's real exception, not a Prefect wrapper
    assert stored.error_type == "ConnectionError"
    assert stored.error == "connection to db.internal:5432 reset by peer"
    assert stored.error_category is ErrorCategory.NETWORK
    assert stored.error_fingerprint
    assert stored.traceback is not None
    assert "prefect_flows.py" in stored.traceback
    assert 'raise ConnectionError(f"connection to {host}:{port} reset by peer")' in (
        stored.traceback
    )
    # a run that succeeds never reaches the hook
    assert _bound(flows.succeeds, hook)(21) == 42
    assert _only_record(host).task_id == stored.task_id
    assert hook.bridge.counters["captured"] == 1


def test_only_a_run_that_failed_for_good_is_stored(
    hook: DeadLetterHook, host: BlockingDLQ, tmp_path: Path
) -> None:
    counter = tmp_path / "calls"
    state = _state(_bound(flows.flaky, hook), str(counter), fail_times=5)
    assert state.is_failed()
    assert counter.read_text() == "2"  # Prefect retried it once itself
    stored = _only_record(host)
    assert stored.error_type == "TimeoutError"
    assert stored.error == "upstream timed out (call 2)"
    assert stored.error_category is ErrorCategory.NETWORK  # a timeout, classified
    # the workflow's policy from settings
    assert stored.max_retries == 7
    assert stored.retry_policy.value == "immediate"


def test_the_record_carries_the_trace_the_flow_ran_in(
    hook: DeadLetterHook, host: BlockingDLQ
) -> None:
    provider = TracerProvider()  # the caller's tracing; Prefect's run span joins its trace
    try:
        with provider.get_tracer(__name__).start_as_current_span("caller") as span:
            _state(_bound(flows.network_down, hook), "traced")
    finally:
        provider.shutdown()
    context = _only_record(host).metadata["failure_context"]
    assert context["trace_id"] == format(span.get_span_context().trace_id, "032x")


def test_a_second_capture_of_the_same_run_updates_its_record(
    hook: DeadLetterHook, host: BlockingDLQ
) -> None:
    state = _state(_bound(flows.network_down, hook), "cache")
    first = _only_record(host)
    run = _run(first.task_id)
    hook(flows.network_down, run, state)  # the same flow run, reported again
    again = _only_record(host)
    assert again.task_id == first.task_id
    assert again.created_at == first.created_at
    assert hook.bridge.counters["captured"] == 2


def test_an_async_flow_is_captured(hook: DeadLetterHook, host: BlockingDLQ, tmp_path: Path) -> None:
    import asyncio  # noqa: PLC0415 - Prefect's async flows run on asyncio only

    async_flaky = _bound(flows.async_flaky, hook)
    try:
        with pytest.raises(ConnectionRefusedError):
            asyncio.run(async_flaky(str(tmp_path / "calls"), fail_times=1))
    finally:
        gc.collect()  # Prefect's leaked socket (see pytestmark) is finalised here
    stored = _only_record(host)
    assert stored.workflow == "async-flaky"
    assert stored.error_type == "ConnectionRefusedError"
    assert stored.error_category is ErrorCategory.NETWORK
    # replayed in the processor's thread, on an event loop of its own
    reply = host.retry_task(stored.task_id)
    assert reply["success"] is True, reply
    assert _run(reply["result"]["flow_run_id"]).state_type is StateType.COMPLETED
    assert host.get_task(stored.task_id).status is DeadLetterStatus.COMPLETED  # type: ignore[union-attr]
    gc.collect()  # and the replay's, before the next test runs


def test_a_hook_travels_with_its_flow_to_another_process(dlq_settings: DLQSettings) -> None:
    """``serve`` pickles the flow, hooks and all, for each run's process."""
    assert pickle.loads(pickle.dumps(dead_letter_hook)) is dead_letter_hook  # noqa: S301 - our own bytes
    made = DeadLetterHook(dlq_settings=dlq_settings, run_timeout=30)
    flow = cloudpickle.loads(cloudpickle.dumps(flows.network_down.with_options(on_failure=[made])))
    (copy,) = flow.on_failure_hooks
    assert isinstance(copy, DeadLetterHook)
    assert copy is not made
    assert copy.run_timeout == 30
    assert copy.dlq.settings == dlq_settings
    assert copy.dlq.engines["prefect"] == copy.replay
    with pytest.raises(ValueError, match="run_timeout must be a positive number"):
        DeadLetterHook(run_timeout=0)


# -- capture failures never break the flow ---------------------------------------------------


def test_a_parameter_with_no_json_form_fails_the_capture_not_the_flow(
    hook: DeadLetterHook, host: BlockingDLQ, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.ERROR, logger="mahavishnu_dlq.integrations"),
        pytest.raises(ValueError, match="cannot use object"),
    ):
        _bound(flows.takes_anything, hook)(object())
    assert hook.bridge.counters["capture_failed"] == 1
    assert list(host.list_tasks()) == []
    lines = [r for r in caplog.records if r.name == "mahavishnu_dlq.integrations"]
    assert len(lines) == 1
    assert "not stored" in lines[0].getMessage()
    assert "takes-anything" in lines[0].getMessage()


def test_an_unwritable_store_fails_the_capture_not_the_flow(
    prefect_api: str, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    settings = DLQSettings.load(store="sqlite", sqlite={"path": str(blocker / "dlq.db")})
    broken = dead_letter_hook_for(dlq_settings=settings)
    try:
        state = _state(_bound(flows.network_down, broken), "db")
        assert state.is_failed()
        assert state.name == "Failed"
        with pytest.raises(ConnectionError):
            _bound(flows.network_down, broken)("db")
    finally:
        broken.close()
    assert broken.bridge.counters["capture_failed"] == 2
    assert broken.bridge.counters["captured"] == 0


def test_typed_parameters_are_stored_as_json_and_replayed_as_models(
    hook: DeadLetterHook, host: BlockingDLQ, tmp_path: Path
) -> None:
    order = flows.Order(order_id=7, amount=12.5)
    counter = str(tmp_path / "calls")
    with pytest.raises(ConnectionResetError):
        _bound(flows.charge, hook)(order, counter)
    stored = _only_record(host)
    assert stored.task == {"order": {"order_id": 7, "amount": 12.5}, "counter": counter}
    reply = host.retry_task(stored.task_id)
    assert reply["success"] is True, reply  # the flow checks that it got an Order


# -- replay ---------------------------------------------------------------------------------


def test_replay_starts_a_new_run_of_the_flow_that_completes_the_record(
    hook: DeadLetterHook, host: BlockingDLQ, tmp_path: Path
) -> None:
    counter = tmp_path / "calls"
    _state(_bound(flows.flaky, hook), str(counter), fail_times=2)
    failed = _only_record(host)
    assert failed.status is DeadLetterStatus.PENDING
    assert host.portal.call(RetryProcessor(hook.dlq).run_once) == 1
    done = host.get_task(failed.task_id)
    assert done is not None
    assert done.status is DeadLetterStatus.COMPLETED
    assert counter.read_text() == "3"
    # the retry was a real Prefect flow run of the same flow, tagged as a replay
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs()
    replays = [r for r in runs if f"{REPLAY_TAG}:{failed.task_id}" in r.tags]
    assert len(replays) == 1
    assert replays[0].id != UUID(failed.task_id)
    assert replays[0].flow_id == _run(failed.task_id).flow_id
    assert replays[0].state_type is StateType.COMPLETED
    assert REPLAY_TAG in replays[0].tags
    assert replays[0].parameters == failed.task


def test_a_replay_that_fails_counts_an_attempt_and_is_not_a_new_record(
    hook: DeadLetterHook, host: BlockingDLQ, tmp_path: Path
) -> None:
    counter = tmp_path / "calls"
    _state(_bound(flows.flaky, hook), str(counter), fail_times=9)
    failed = _only_record(host)
    reply = host.retry_task(failed.task_id)
    assert reply["success"] is False
    after = _only_record(host)  # the replay's own failure hook stored nothing new
    assert after.task_id == failed.task_id
    assert after.status is DeadLetterStatus.PENDING
    assert after.retry_count == 1
    assert after.last_error_type == "TimeoutError"  # the replayed run's real exception
    assert after.last_error == "upstream timed out (call 4)"
    assert hook.bridge.counters["replay_skipped"] == 1
    assert hook.bridge.counters["captured"] == 1


def test_a_flow_that_cannot_be_found_is_a_failed_attempt(
    hook: DeadLetterHook, host: BlockingDLQ
) -> None:
    stored = host.enqueue(
        "run-elsewhere",
        {"x": 1},
        error=ConnectionError("x"),
        metadata={"engine": "prefect", "flow": "tests.engines.prefect_flows:no_such_flow"},
        workflow="gone",
        retry_policy="immediate",
    )
    reply = host.retry_task(stored.task_id)
    assert reply["success"] is False
    after = host.get_task(stored.task_id)
    assert after is not None
    assert after.last_error_type == "TypeError"
    assert "is not a Prefect flow" in (after.last_error or "")


# -- deployments ----------------------------------------------------------------------------


@pytest.fixture
def runner(prefect_api: str, dlq_settings: DLQSettings, tmp_path: Path) -> Iterator[str]:
    """A real runner process serving ``deployed-flaky/dlq-test``; the deployment's name."""
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_api,
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "PYTHONPATH": str(ROOT),
        "MAHAVISHNU_DLQ_STORE": "sqlite",
        "MAHAVISHNU_DLQ_SQLITE__PATH": str(dlq_settings.sqlite.path),
    }
    log = (tmp_path / "runner.log").open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from tests.engines import prefect_flows; prefect_flows.serve()",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    name = "deployed-flaky/dlq-test"
    try:

        def deployed() -> bool | None:
            if process.poll() is not None:
                raise AssertionError((tmp_path / "runner.log").read_text())
            try:
                with get_client(sync_client=True) as client:
                    client.read_deployment_by_name(name)
            except Exception:
                return None
            return True

        wait_until("the deployment", deployed)
        yield name
    finally:
        stop(process, timeout=15)
        log.close()


def test_a_deployment_run_is_replayed_through_its_deployment(
    runner: str, hook: DeadLetterHook, host: BlockingDLQ, tmp_path: Path
) -> None:
    counter = str(tmp_path / "calls")
    parameters = {"counter": counter, "fail_times": 2}
    first: Any = run_deployment(runner, parameters=parameters, timeout=60)
    assert first.state.type is StateType.FAILED
    stored = wait_until("the record", lambda: host.get_task(str(first.id)))
    assert stored.workflow == "deployed-flaky"
    assert stored.task == parameters
    assert stored.error_type == "ConnectionError"
    assert stored.metadata["deployment_id"] == str(first.deployment_id)
    assert stored.metadata["deployment_name"] == runner
    # the first retry runs on the runner and fails: an attempt, with its real exception
    failed = host.retry_task(stored.task_id)
    assert failed["success"] is False, failed
    after = host.get_task(stored.task_id)
    assert after is not None
    assert after.retry_count == 1
    assert after.last_error_type == "ConnectionError"
    assert after.last_error == "warehouse unreachable (call 2)"
    # the second completes the record
    reply = host.retry_task(stored.task_id)
    assert reply["success"] is True, reply
    assert host.get_task(stored.task_id).status is DeadLetterStatus.COMPLETED  # type: ignore[union-attr]
    replay = _run(reply["result"]["flow_run_id"])  # run by the runner, not here
    assert replay.deployment_id == first.deployment_id
    assert replay.state_type is StateType.COMPLETED
    assert REPLAY_TAG in replay.tags
    assert Path(counter).read_text() == "3"
    # the failed retry's own hook (in the runner's flow-run process) stored nothing new
    assert [t.task_id for t in host.list_tasks()] == [stored.task_id]


# -- the example project ----------------------------------------------------------------------


def test_the_example_project_runs_end_to_end(prefect_api: str, tmp_path: Path) -> None:
    db = tmp_path / "example.db"
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_api,
        "PYTHONPATH": str(ROOT),
        "MAHAVISHNU_DLQ_STORE": "sqlite",
        "MAHAVISHNU_DLQ_SQLITE__PATH": str(db),
    }
    done = subprocess.run(
        [sys.executable, "-m", "examples.prefect_project"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert "stored: fetch-orders network ConnectionRefusedError" in lines, done.stdout
    assert "retried: completed" in lines, done.stdout
    settings = DLQSettings.load(store="sqlite", sqlite={"path": str(db)})
    from mahavishnu_dlq.queue import DeadLetterQueue  # noqa: PLC0415

    with BlockingDLQ(DeadLetterQueue.from_settings(settings)) as queue:
        (record,) = list(queue.list_tasks())
    assert record.status is DeadLetterStatus.COMPLETED
    assert record.metadata["flow"] == "examples.prefect_project.flows:fetch_orders"
