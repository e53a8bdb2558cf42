"""Dramatiq: store the messages Dramatiq gives up on, and replay them through its broker.

Set up (extra ``dramatiq``), next to the broker every worker and the processor import::

    dead_letters = DeadLetterMiddleware()
    broker.add_middleware(dead_letters)
    dlq = dead_letters.dlq  # mahavishnu-dlq processor run --app proj.tasks:dlq

**Capture.** Dramatiq rejects (*nacks*) a message when it fails for good: its
``Retries`` middleware gave up (``max_retries`` reached, ``retry_when`` said no, or
the actor ``throws`` the error), its age limit passed, or no actor has its name.
The Redis broker then keeps it in ``<queue>.XQ`` for a week, without the error;
RabbitMQ dead-letters it the same way. :meth:`DeadLetterMiddleware.after_nack`
stores that message with the actor's name as the workflow, the message id as the
task id (a message stored twice is one record), ``{"args", "kwargs"}`` as the
input, its queue, options and actor options as metadata, and the real exception
(classified and fingerprinted like any other). ``after_nack`` runs after every
``after_process_message`` hook, whatever the order the middleware were added in,
so Dramatiq's own handling is finished and unchanged when we look.

**Replay.** The engine handler (registered on :attr:`DeadLetterMiddleware.dlq`)
enqueues the message again through the broker, to its actor's queue, with the
same message id (the Redis broker gives every enqueue its own ``redis_message_id``,
so nothing is deduplicated away, and a results backend keyed by message id gets
the new outcome), a new timestamp (an age limit counts from the replay), the
options it had (pipelines and callbacks go on), ``max_retries=0`` (one run per
attempt: our policy decides what comes next) and the option
``"mahavishnu_dlq": {"task_id", "token"}``. The worker that runs it reports
instead of capturing: success completes the record, a rejection counts as a
failed attempt (``Dispatched``/``report_outcome`` in :mod:`mahavishnu_dlq.engines`).

**Cost on success.** :meth:`DeadLetterMiddleware.after_process_message` reads one
message option (``message.options.get("mahavishnu_dlq")``) and returns; every
other hook runs only when a message fails for good or an actor is declared.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

try:
    import dramatiq
    import dramatiq.broker
    from dramatiq.common import current_millis, q_name
    from dramatiq.errors import ActorNotFound
    from dramatiq.middleware import Middleware, SkipMessage
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "mahavishnu_dlq.integrations.dramatiq needs Dramatiq: "
        "pip install 'mahavishnu-dlq[dramatiq]'"
    ) from exc

from mahavishnu_dlq.errors import Dispatched
from mahavishnu_dlq.integrations.bridge import EngineBridge
from mahavishnu_dlq.printable import library_logger

if TYPE_CHECKING:
    from dramatiq.broker import Broker, MessageProxy

    from mahavishnu_dlq.models import FailedTask
    from mahavishnu_dlq.queue import DeadLetterQueue
    from mahavishnu_dlq.settings import DLQSettings

__all__ = ["DEFAULT_WAIT_SECONDS", "ENGINE", "OPTION", "DeadLetterMiddleware"]

_log = library_logger("mahavishnu_dlq.integrations")

#: The engine name in ``metadata["engine"]`` and in dispatch tokens.
ENGINE = "dramatiq"
#: The message option a replayed message carries: ``{"task_id": ..., "token": ...}``.
OPTION = "mahavishnu_dlq"
#: How long a replayed message may take to report back before the attempt counts
#: as lost: Dramatiq's default time limit (10 minutes) plus 5 minutes in the queue.
DEFAULT_WAIT_SECONDS = 900.0

#: Message options that describe one delivery, not the message: not stored, not re-sent.
_TRANSIENT = frozenset(
    {"redis_message_id", "eta", "traceback", "requeue_timestamp", "retries", OPTION}
)
#: Actor options worth keeping (JSON values; ``throws`` is kept as class names).
_ACTOR_OPTIONS = (
    "max_retries",
    "min_backoff",
    "max_backoff",
    "time_limit",
    "max_age",
    "on_retry_exhausted",
    "store_results",
    "throws",
)


class DeadLetterMiddleware(Middleware):
    """Stores every message Dramatiq rejects for good, and replays it through the
    broker (see the module docstring).

    ``dlq`` is the queue whose processor retries these messages (default: one built
    from ``dlq_settings`` or :meth:`DLQSettings.load`, the first time it is needed);
    worker processes capture through a queue of their own made from the same
    settings. ``wait_seconds`` is how long a replayed message may take before the
    attempt counts as lost (default :data:`DEFAULT_WAIT_SECONDS`). One middleware
    belongs to one broker: the broker it was added to is the one replays go through.
    """

    def __init__(
        self,
        dlq: DeadLetterQueue | None = None,
        *,
        dlq_settings: DLQSettings | None = None,
        wait_seconds: float | None = None,
    ) -> None:
        if wait_seconds is not None and not wait_seconds > 0:  # also NaN
            raise ValueError(f"wait_seconds must be > 0, got {wait_seconds}")
        self.wait_seconds = DEFAULT_WAIT_SECONDS if wait_seconds is None else float(wait_seconds)
        self.bridge = EngineBridge(ENGINE, dlq, dlq_settings=dlq_settings)
        self.broker: Broker | None = None
        if dlq is not None:
            dlq.register_engine(ENGINE, self.resend, wait_seconds=self.wait_seconds)

    # -- the host's side: the queue and its engine handler -----------------------------

    @property
    def dlq(self) -> DeadLetterQueue:
        """The host's queue, with this middleware's engine handler registered: run its
        processor (``mahavishnu-dlq processor run --app module:dlq``, or
        ``async with dlq:``) to retry the stored messages."""
        dlq = self.bridge.dlq
        if dlq.engines.get(ENGINE) != self.resend:
            dlq.register_engine(ENGINE, self.resend, wait_seconds=self.wait_seconds)
        return dlq

    @property
    def counters(self) -> dict[str, int]:
        """This process's capture and report counts (``captured``, ``capture_failed`` …)."""
        return self.bridge.counters

    def resend(self, record: FailedTask) -> None:
        """The engine handler: enqueue ``record``'s message again, to its actor's queue,
        and raise :class:`~mahavishnu_dlq.errors.Dispatched`; the worker that runs it
        reports the outcome."""
        broker = self._replay_broker()
        args, kwargs = _arguments(record)
        metadata = record.metadata
        queue: Any
        try:
            queue = broker.get_actor(record.workflow).queue_name
        except ActorNotFound:  # not imported here: the queue it failed on
            queue = metadata.get("queue")
        if not isinstance(queue, str) or not queue:
            raise ValueError(f"record {record.task_id!r} names no Dramatiq queue to send it to")
        stored = metadata.get("options")
        options = dict(stored) if isinstance(stored, Mapping) else {}
        token = record.lease_owner  # the attempt is held under it until the worker reports
        if not token:
            raise ValueError(f"record {record.task_id!r} is not held for a dispatch")
        options["max_retries"] = 0  # one run per attempt: our policy decides the next
        options[OPTION] = {"task_id": record.task_id, "token": token}
        message: dramatiq.Message[Any] = dramatiq.Message(
            queue_name=queue,
            actor_name=record.workflow,
            args=tuple(args),
            kwargs=kwargs,
            options=options,
            message_id=record.task_id,
            message_timestamp=current_millis(),
        )
        broker.enqueue(message)
        raise Dispatched(f"sent to Dramatiq queue {queue!r}")

    def _replay_broker(self) -> Broker:
        if self.broker is not None:
            return self.broker
        given = dramatiq.broker.global_broker  # set by dramatiq.set_broker, never made here
        if given is not None and self in given.middleware:
            return given
        raise RuntimeError(
            "DeadLetterMiddleware has no Dramatiq broker in this process: add it with "
            "broker.add_middleware(...) and declare (import) the actors before the "
            "processor runs"
        )

    # -- Dramatiq's hooks -----------------------------------------------------------------

    def after_declare_actor(self, broker: Broker, actor: Any) -> None:
        """Learn the broker (also run by ``add_middleware`` for the actors declared so far)."""
        self.broker = broker

    def before_worker_boot(self, broker: Broker, worker: Any) -> None:
        """Learn the broker in a worker that declared no actor before booting."""
        self.broker = broker

    def after_process_message(
        self,
        broker: Broker,
        message: MessageProxy,
        *,
        result: Any | None = None,
        exception: BaseException | None = None,
    ) -> None:
        """The success path: a replayed message that ran reports it; nothing else runs."""
        if exception is None:
            sent = message.options.get(OPTION)
            if sent is not None:
                self._report(message, sent, None)

    def after_nack(self, broker: Broker, message: MessageProxy) -> None:
        """A message Dramatiq rejected for good: report the failed replay, or capture it."""
        # Dramatiq keeps the error on the proxy until the message is acked or nacked;
        # its own Results middleware reads it here the same way.
        error: BaseException | None = getattr(message, "_exception", None)
        sent = message.options.get(OPTION)
        if sent is not None:
            failure = error if error is not None else _reason(broker, message)
            if self._report(message, sent, failure):
                return
        self._capture(broker, message, error)

    # -- the worker's side ----------------------------------------------------------------

    def _report(self, message: MessageProxy, sent: Any, error: BaseException | str | None) -> bool:
        """Report a replay's outcome; False when ``sent`` is not our option (logged:
        a failure is then captured as any other)."""
        task_id = sent.get("task_id") if isinstance(sent, Mapping) else None
        token = sent.get("token") if isinstance(sent, Mapping) else None
        if not isinstance(task_id, str) or not isinstance(token, str):
            _log.warning(
                "dlq.dramatiq.report %s: the %r option is not a replay's (%r); ignored",
                message.message_id,
                OPTION,
                sent,
                extra={"action": "dlq.dramatiq.report", "task_id": message.message_id},
            )
            return False
        self.bridge.report(task_id, token, error)
        return True

    def _capture(self, broker: Broker, message: MessageProxy, error: BaseException | None) -> None:
        try:
            metadata = _metadata(broker, message, error)
            task = {"args": list(message.args), "kwargs": dict(message.kwargs)}
            traceparent = message.options.get("traceparent")
        except Exception as exc:  # noqa: BLE001 - never break the host's worker
            self.bridge.counters["capture_failed"] += 1
            _log.error(
                "dlq.dramatiq.capture %s not stored: %s: %s",
                message.message_id,
                type(exc).__name__,
                exc,
                extra={"action": "dlq.dramatiq.capture", "task_id": message.message_id},
            )
            return
        self.bridge.capture(
            message.message_id,
            task,
            error if error is not None else _reason(broker, message),
            workflow=message.actor_name,
            metadata=metadata,
            traceparent=traceparent if isinstance(traceparent, str) else None,
        )


def _arguments(record: FailedTask) -> tuple[list[Any], dict[str, Any]]:
    args = record.task.get("args", [])
    kwargs = record.task.get("kwargs", {})
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise TypeError(
            f"record {record.task_id!r}: a Dramatiq message's input is "
            '{"args": [...], "kwargs": {...}}'
        )
    return args, kwargs


def _reason(broker: Broker, message: MessageProxy) -> str:
    """Why Dramatiq rejected ``message`` when no exception says it."""
    return f"Dramatiq rejected message {message.message_id} ({_rejection(broker, message, None)})"


def _rejection(broker: Broker, message: MessageProxy, error: BaseException | None) -> str:
    """Which rule of Dramatiq's rejected the message (stored as ``dramatiq_reason``)."""
    if isinstance(error, ActorNotFound):
        return "actor_not_found"
    if isinstance(error, SkipMessage):
        return "skipped"  # the age limit, or a middleware that failed it
    try:
        actor = broker.get_actor(message.actor_name)
    except ActorNotFound:
        return "actor_not_found"
    throws = message.options.get("throws") or actor.options.get("throws")
    if error is not None and throws and isinstance(error, throws):
        return "throws"
    if error is None:
        return "skipped"
    if actor.options.get("retry_when") is not None:
        return "retry_when"
    return "retries_exhausted"


def _metadata(broker: Broker, message: MessageProxy, error: BaseException | None) -> dict[str, Any]:
    """The routing, ids and options of a rejected message worth keeping (JSON only)."""
    options = {
        key: value
        for key, value in message.options.items()
        if key not in _TRANSIENT and _is_json(value)
    }
    metadata: dict[str, Any] = {
        "queue": q_name(message.queue_name),
        "actor": message.actor_name,
        "message_id": message.message_id,
        "message_timestamp": message.message_timestamp,
        "retries": message.options.get("retries", 0),
        "options": options,
        "dramatiq_reason": _rejection(broker, message, error),
    }
    try:
        actor = broker.get_actor(message.actor_name)
    except ActorNotFound:
        return metadata
    kept: dict[str, Any] = {}
    for name in _ACTOR_OPTIONS:
        value = actor.options.get(name)
        if name == "throws" and value is not None:
            classes = value if isinstance(value, tuple) else (value,)
            value = [getattr(c, "__qualname__", repr(c)) for c in classes]
        if value is not None and _is_json(value):
            kept[name] = value
    metadata["actor_options"] = kept
    metadata["priority"] = actor.priority
    return metadata


def _is_json(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True
