"""The Dramatiq integration against a real Dramatiq worker and a real Redis broker.

One worker process (``python -m dramatiq tests.engines.dramatiq_app``) runs for the
module; it and this process share one SQLite store. Messages that fail for good in
the worker are stored there by :class:`DeadLetterMiddleware`; this process drives the
retries (``RetryProcessor.run_once``, ``retry_task``), which re-enqueue the messages
through the broker, and the worker reports how they ended.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import pytest
from dramatiq import Message
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker

from mahavishnu_dlq import DeadLetterQueue, Dispatched, MemoryStore
from mahavishnu_dlq.blocking import BlockingDLQ
from mahavishnu_dlq.integrations.dramatiq import OPTION, DeadLetterMiddleware
from mahavishnu_dlq.models import AttemptOutcome, DeadLetterStatus, ErrorCategory, FailedTask
from mahavishnu_dlq.processor import RetryProcessor

from .waiting import stop, wait_until

ROOT = Path(__file__).resolve().parents[2]
#: Per-workflow policies the worker and this process both load from the environment.
POLICIES = {
    "flaky": {"policy": "immediate", "max_retries": 2},
    "elsewhere": {"policy": "immediate", "max_retries": 2},
}

T = TypeVar("T")


@contextmanager
def dramatiq_worker(module: str, env: Mapping[str, str], log: Path) -> Iterator[None]:
    """Run ``dramatiq MODULE:BROKER`` (one process, two threads) with ``env``; stop it by
    its pid."""
    command = [sys.executable, "-m", "dramatiq", module, "--processes", "1", "--threads", "2"]
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MAHAVISHNU_DLQ_")}
    full_env.update(env)
    full_env["dramatiq_worker_timeout"] = "100"  # idle consumers poll every 100 ms at most
    with log.open("wb") as out:
        worker = subprocess.Popen(  # noqa: S603 - our own command
            command, cwd=ROOT, env=full_env, stdin=subprocess.DEVNULL, stdout=out, stderr=out
        )
    try:
        yield
    finally:
        stop(worker)


def worker_env(redis_url: str, namespace: str, db: Path) -> dict[str, str]:
    """What the worker and this process set up from: the broker and the store."""
    return {
        "MAHAVISHNU_DLQ_TEST_DRAMATIQ_URL": redis_url,
        "MAHAVISHNU_DLQ_TEST_DRAMATIQ_NAMESPACE": namespace,
        "MAHAVISHNU_DLQ_STORE": "sqlite",
        "MAHAVISHNU_DLQ_SQLITE__PATH": str(db),
        # this process drives its processor by hand (run_once, retry_task)
        "MAHAVISHNU_DLQ_RETRY_PROCESSOR_ENABLED": "false",
        "MAHAVISHNU_DLQ_POLICIES__BY_WORKFLOW": json.dumps(POLICIES),
    }


def dead_lettered(
    broker: RedisBroker, message_id: str, queue: str = "default"
) -> Message[Any] | None:
    """The message ``broker`` dead-lettered (``<namespace>:<queue>.XQ``), if any."""
    for data in broker.client.hvals(f"{broker.namespace}:{queue}.XQ.msgs"):
        message = Message[Any].decode(data if isinstance(data, bytes) else str(data).encode())
        if message.message_id == message_id:
            return message
    return None


@dataclass
class App:
    """The test app as this process imported it, its queue, and the worker's log."""

    module: ModuleType
    dlq: BlockingDLQ
    log: Path

    def mark(self, mark: str, suffix: str = "runs") -> str | None:
        value = self.module.marks.get(self.module.key(mark, suffix))
        return None if value is None else str(value)

    def seen(self, mark: str) -> list[dict[str, Any]]:
        return [
            json.loads(s) for s in self.module.marks.lrange(self.module.key(mark, "seen"), 0, -1)
        ]

    def stored(self, task_id: str, status: DeadLetterStatus | None = None) -> FailedTask:
        """The record of ``task_id`` once the worker stored it (in ``status``)."""

        def probe() -> FailedTask | None:
            task = self.dlq.get_task(task_id)
            return task if task is not None and status in (None, task.status) else None

        return wait_until(f"{task_id} stored{f' as {status.value}' if status else ''}", probe)

    def rejected(self, message_id: str, queue: str = "default") -> Message[Any] | None:
        """The message Dramatiq's Redis broker dead-lettered (``<queue>.XQ``), if any."""
        return dead_lettered(self.module.broker, message_id, queue)

    def run_once(self) -> int:
        return int(self.dlq.portal.call(RetryProcessor(self.dlq.dlq).run_once))

    def worker_counters(self) -> dict[str, int]:
        mark = uuid.uuid4().hex
        self.module.counters.send(mark)
        counts: dict[str, int] = json.loads(wait_until("counters", lambda: self.mark(mark, "done")))
        return counts


@pytest.fixture(scope="module")
def app(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    """The worker, started once for the module, and this process's side of the app."""
    workdir = tmp_path_factory.mktemp("dramatiq")
    env = worker_env(redis_url, f"dlqtest-{uuid.uuid4().hex[:12]}", workdir / "dlq.db")
    with pytest.MonkeyPatch.context() as patch:  # only while the app module is set up
        for name, value in env.items():
            patch.setenv(name, value)
        module = importlib.import_module("tests.engines.dramatiq_app")
        dlq = module.dead_letters.dlq  # the settings are read now
    blocking = BlockingDLQ(dlq)
    blocking.start()
    log = workdir / "worker.log"
    try:
        with dramatiq_worker("tests.engines.dramatiq_app:broker", env, log):
            made = App(module, blocking, log)
            module.succeeds.send("ready")
            wait_until("the worker to start", lambda: made.mark("ready", "done"))
            yield made
    finally:
        blocking.stop()
        module.dead_letters.bridge.close()
        module.broker.close()


def test_a_message_failing_for_good_is_stored_with_the_actor_args_and_error(app: App) -> None:
    mark = uuid.uuid4().hex
    sent = app.module.always_fails.send(mark, host="db-7.internal")
    record = app.stored(sent.message_id)
    assert record.workflow == "always_fails"
    assert record.task == {"args": [mark], "kwargs": {"host": "db-7.internal"}}
    assert app.mark(mark) == "2"  # Dramatiq's own retry ran first (max_retries=1)
    assert record.error_type == "ConnectionError"
    assert record.error == "connection refused by db-7.internal"
    assert record.error_category is ErrorCategory.NETWORK
    assert record.error_fingerprint
    assert record.traceback is not None
    assert "always_fails" in record.traceback
    assert record.status is DeadLetterStatus.PENDING
    meta = record.metadata
    assert meta["engine"] == "dramatiq"
    assert meta["queue"] == "default"
    assert meta["message_id"] == sent.message_id
    assert meta["retries"] == 2
    assert meta["dramatiq_reason"] == "retries_exhausted"
    assert meta["actor_options"] == {"max_retries": 1, "min_backoff": 10, "max_backoff": 50}
    assert not {"traceback", "redis_message_id", "retries", "eta"} & set(meta["options"])
    # Dramatiq's own handling is unchanged: the message is in its dead-letter queue
    dead = wait_until("the message in default.XQ", lambda: app.rejected(sent.message_id))
    assert dead.args == (mark,)


def test_errors_dramatiq_does_not_retry_fail_for_good_at_once(app: App) -> None:
    thrown, refused = uuid.uuid4().hex, uuid.uuid4().hex
    by_throws = app.stored(app.module.rejects.send(thrown).message_id)
    by_retry_when = app.stored(app.module.forbidden.send(refused).message_id)
    assert (app.mark(thrown), app.mark(refused)) == ("1", "1")  # no Dramatiq retry
    assert by_throws.metadata["dramatiq_reason"] == "throws"
    assert by_throws.metadata["actor_options"]["throws"] == ["ValueError"]
    assert by_throws.error_category is ErrorCategory.VALIDATION
    assert by_retry_when.metadata["dramatiq_reason"] == "retry_when"
    assert by_retry_when.error_category is ErrorCategory.PERMISSION
    for record in (by_throws, by_retry_when):  # never retried by itself: an operator decides
        assert record.retry_policy.value == "never"
        assert record.next_retry_at is None
        assert wait_until("the XQ", partial(app.rejected, record.task_id)) is not None


def test_a_message_that_succeeds_on_a_dramatiq_retry_is_not_stored(app: App) -> None:
    mark = uuid.uuid4().hex
    sent = app.module.flaky.send_with_options(args=(mark, 1), max_retries=2)
    assert wait_until("the retry to succeed", lambda: app.mark(mark, "done")) == "2"
    # a capture of the first failure would have been stored before the retry ran
    assert app.dlq.get_task(sent.message_id) is None
    assert app.rejected(sent.message_id) is None


def test_replay_re_enqueues_to_the_actors_queue_and_success_completes(app: App) -> None:
    mark = uuid.uuid4().hex
    sent = app.module.elsewhere.send(mark, 1)
    record = app.stored(sent.message_id)
    assert record.metadata["queue"] == "dlq-other"
    assert (record.retry_policy.value, record.max_retries) == ("immediate", 2)  # by workflow
    assert app.run_once() >= 1
    token = f"dramatiq:{sent.message_id}:1"
    done = app.stored(sent.message_id, DeadLetterStatus.COMPLETED)
    assert [a.outcome for a in done.attempts] == [AttemptOutcome.SUCCESS]
    assert done.lease_owner is None
    assert app.mark(mark, "done") == "2"
    first, replayed = app.seen(mark)
    assert first["dlq"] is None
    assert replayed == {
        "queue": "dlq-other",
        "message_id": sent.message_id,  # the same message, sent again
        "max_retries": 0,
        "dlq": {"task_id": sent.message_id, "token": token},
    }
    assert app.rejected(sent.message_id, "dlq-other") is not None  # the first run's
    # no second record: the worker reported on the replay instead of capturing it
    assert len(app.dlq.list_tasks(workflow="elsewhere", text=sent.message_id)) == 1


def test_a_failing_replay_counts_an_attempt_and_the_policy_decides(app: App) -> None:
    mark = uuid.uuid4().hex
    sent = app.module.flaky.send(mark, 10)
    app.stored(sent.message_id)
    assert app.run_once() >= 1

    def failed_once() -> FailedTask | None:
        task = app.dlq.get_task(sent.message_id)
        return task if task is not None and task.retry_count == 1 and not task.lease_owner else None

    again = wait_until("the failed replay to be reported", failed_once)
    assert again.status is DeadLetterStatus.PENDING  # immediate, 2 retries: one left
    assert again.attempts[-1].outcome is AttemptOutcome.FAILURE
    assert again.last_error == "connection reset by peer (run 2)"
    assert again.error == "connection reset by peer (run 1)"  # the first failure stays
    reply = app.dlq.retry_task(sent.message_id)
    assert reply["dispatched"] == f"dramatiq:{sent.message_id}:2"
    spent = app.stored(sent.message_id, DeadLetterStatus.EXHAUSTED)
    assert [a.outcome for a in spent.attempts] == [AttemptOutcome.FAILURE] * 2
    assert app.mark(mark) == "3"
    assert [s["dlq"]["token"] if s["dlq"] else None for s in app.seen(mark)] == [
        None,
        f"dramatiq:{sent.message_id}:1",
        f"dramatiq:{sent.message_id}:2",
    ]


def test_the_same_message_failing_again_updates_its_one_record(app: App) -> None:
    mark = uuid.uuid4().hex
    sent = app.module.rejects.send(mark)
    first = app.stored(sent.message_id)
    copy = Message[Any](
        queue_name="default",
        actor_name="rejects",
        args=(mark + "-again",),
        kwargs={},
        options={},
        message_id=sent.message_id,
    )
    app.module.broker.enqueue(copy)

    def updated() -> FailedTask | None:
        task = app.dlq.get_task(sent.message_id)
        return task if task is not None and "again" in (task.last_error or "") else None

    second = wait_until("the second failure on the record", updated)
    assert second.created_at == first.created_at
    assert second.error == f"order {mark} is invalid"
    assert len(app.dlq.list_tasks(text=sent.message_id)) == 1


def test_a_capture_that_fails_never_breaks_the_worker(app: App) -> None:
    mark = uuid.uuid4().hex
    before = app.worker_counters()["capture_failed"]
    # NaN passes Dramatiq's JSON encoder but is not JSON our store accepts
    sent = app.module.always_fails.send_with_options(args=(mark,), kwargs={"host": float("nan")})
    assert wait_until("the XQ", lambda: app.rejected(sent.message_id)) is not None
    assert app.mark(mark) == "2"  # Dramatiq's retries ran as usual
    line = f"dlq.dramatiq.capture {sent.message_id} (always_fails) not stored: InvalidPayloadError"
    wait_until("the log line", lambda: line in app.log.read_text(errors="replace"))
    assert app.worker_counters()["capture_failed"] == before + 1
    assert app.dlq.get_task(sent.message_id) is None
    after = uuid.uuid4().hex
    app.module.succeeds.send(after)  # the worker goes on
    assert wait_until("the next message", lambda: app.mark(after, "done")) == "1"


def test_an_option_that_is_not_a_replay_is_ignored_and_the_failure_captured(app: App) -> None:
    mark = uuid.uuid4().hex
    sent = app.module.flaky.send_with_options(args=(mark, 5), **{OPTION: "not ours"})
    record = app.stored(sent.message_id)
    assert record.workflow == "flaky"
    assert OPTION not in record.metadata["options"]  # a replay sets its own
    line = f"dlq.dramatiq.report {sent.message_id}: the 'mahavishnu_dlq' option is not a replay's"
    assert line in app.log.read_text()


def test_an_unwritable_store_never_breaks_the_worker(
    app: App, redis_url: str, tmp_path: Path
) -> None:
    """A worker of its own (its own broker namespace) whose store cannot be opened."""
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")
    namespace = f"dlqtest-{uuid.uuid4().hex[:12]}"
    env = worker_env(redis_url, namespace, not_a_directory / "dlq.db")
    log = tmp_path / "worker.log"
    broker = RedisBroker(url=redis_url, namespace=namespace)  # type: ignore[no-untyped-call]
    mark = uuid.uuid4().hex
    try:
        with dramatiq_worker("tests.engines.dramatiq_app:broker", env, log):
            failing = Message[Any](
                queue_name="default", actor_name="always_fails", args=(mark,), kwargs={}, options={}
            )
            broker.enqueue(failing)
            # Dramatiq's own handling goes on: retried, then dead-lettered
            assert wait_until("the XQ", lambda: dead_lettered(broker, failing.message_id))
            line = f"dlq.dramatiq.capture {failing.message_id} (always_fails) not stored: "
            wait_until("the log line", lambda: line in log.read_text(errors="replace"))
            assert "StoreUnavailableError" in log.read_text(errors="replace")
            done = f"{namespace}:test:{mark}:done"
            broker.enqueue(
                Message[Any](
                    queue_name="default", actor_name="succeeds", args=(mark,), kwargs={}, options={}
                )
            )
            assert wait_until("the next message", lambda: app.module.marks.get(done)) == "1"
    finally:
        broker.close()
    assert app.dlq.get_task(failing.message_id) is None


def test_a_replay_that_ends_before_the_handler_returns_still_reports(app: App) -> None:
    """The worker may finish a replay before the processor's handler has returned: the
    attempt is held under its token before the message is sent, so the report counts."""
    mark = uuid.uuid4().hex
    sent = app.module.flaky.send(mark, 1)
    app.stored(sent.message_id)
    middleware = app.module.dead_letters

    def slow_processor(record: FailedTask) -> None:
        try:
            middleware.resend(record)
        except Dispatched:
            wait_until("the replay to run", lambda: app.mark(mark, "done"))
            raise  # the worker has run it (and reported) before this returns

    app.dlq.dlq.register_engine("dramatiq", slow_processor)
    try:
        reply = app.dlq.retry_task(sent.message_id)
    finally:
        app.dlq.dlq.register_engine("dramatiq", middleware.resend)
    assert reply["dispatched"] == f"dramatiq:{sent.message_id}:1"
    done = app.stored(sent.message_id, DeadLetterStatus.COMPLETED)
    assert [a.outcome for a in done.attempts] == [AttemptOutcome.SUCCESS]


def test_bad_input_gets_clear_errors() -> None:
    with pytest.raises(ValueError, match="wait_seconds must be > 0"):
        DeadLetterMiddleware(DeadLetterQueue(MemoryStore()), wait_seconds=0)
    queue = DeadLetterQueue(MemoryStore())
    loose = DeadLetterMiddleware(queue)
    assert queue.engines["dramatiq"] == loose.resend
    record = queue.build_record(
        "m-1", {"args": [1], "kwargs": {}}, None, ValueError("x"), workflow="gone"
    )
    with pytest.raises(RuntimeError, match="no Dramatiq broker in this process"):
        loose.resend(record)
    broker = StubBroker()
    broker.add_middleware(loose)
    broker.declare_queue("default")
    loose.before_worker_boot(broker, None)
    not_a_message = queue.build_record("m-2", {"args": "1"}, None, ValueError("x"), workflow="a")
    with pytest.raises(TypeError, match="a Dramatiq message's input is"):
        loose.resend(not_a_message)
    with pytest.raises(ValueError, match="names no Dramatiq queue"):
        loose.resend(record)  # no such actor here, and no queue stored
    broker.close()
