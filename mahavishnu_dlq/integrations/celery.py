"""Celery: store the tasks that fail for good, retry them by re-sending them to their queue.

Three lines in the module that makes the Celery app (extra ``celery``)::

    from mahavishnu_dlq.integrations.celery import install

    app = Celery("proj", broker="redis://localhost:6379/0")
    dlq = install(app)  # settings from MAHAVISHNU_DLQ_* / MAHAVISHNU_DLQ_CONFIG

:func:`install` connects two of Celery's signals and registers the engine handler
``"celery"`` on the returned queue (:mod:`mahavishnu_dlq.engines`):

- ``task_failure`` fires once a task has failed for good: Celery's own retries
  (``autoretry_for``, ``self.retry()``) raise ``Retry``, which fires ``task_retry``
  instead, so a task that later succeeds through them is never stored. The failed
  run is stored, from the worker's process, with the task name as the workflow,
  ``{"args": [...], "kwargs": {...}}`` as the input, its routing and ids as the
  metadata and the exception with its traceback (classification and fingerprint
  from the real exception; idempotent by the Celery task id). A ``Reject`` is the
  task's own decision about its message and is not stored; an ``Ignore`` fires no
  signal at all.
- A retry from our side (the processor, ``retry_task``, a replay job) re-sends the
  task with ``apply_async`` (``send_task`` when the task is not registered in the
  processor's process) under the **same task id**, as Celery's own retries do, to
  the exchange and routing key it was delivered with, carrying the header
  :data:`HEADER` (the record's id and the dispatch token). The worker that runs
  it reports the outcome instead of storing a new failure: ``task_success``
  completes the record, ``task_failure`` counts a failed attempt and the record's
  policy decides what comes next.

Nothing else changes in the host app: Celery's result backend, events, retries and
acknowledgements go on as before, and a failure inside our capture is logged and
counted (:attr:`CeleryDeadLetters.counters`), never raised into the worker. On the
success path of a task, the only work is :meth:`CeleryDeadLetters.on_success`:
reading ``task.request.headers`` and one dict lookup.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any, NoReturn

from mahavishnu_dlq.errors import Dispatched
from mahavishnu_dlq.integrations.bridge import EngineBridge
from mahavishnu_dlq.printable import library_logger

try:
    from celery import Celery, signals
    from celery.exceptions import Reject
except ImportError as exc:  # pragma: no cover - the extra is not installed
    raise ImportError(
        "mahavishnu_dlq.integrations.celery needs Celery: pip install 'mahavishnu-dlq[celery]'"
    ) from exc

if TYPE_CHECKING:
    from mahavishnu_dlq.models import FailedTask
    from mahavishnu_dlq.queue import DeadLetterQueue
    from mahavishnu_dlq.settings import DLQSettings

__all__ = [
    "DEFAULT_WAIT_SECONDS",
    "ENGINE",
    "HEADER",
    "KOMBU_JSON",
    "CeleryDeadLetters",
    "install",
    "installed",
    "resend_arguments",
    "resend_routing",
    "routing_of",
    "task_input",
]

_log = library_logger("mahavishnu_dlq.integrations")

#: The engine name: ``metadata["engine"]`` of every record this integration stores.
ENGINE = "celery"
#: The message header of a task we re-sent: ``{"task_id": ..., "token": ...}``.
HEADER = "mahavishnu_dlq"
#: How long a re-sent task may take to report (queued time plus run time) before
#: its attempt counts as lost and the processor sends it again.
DEFAULT_WAIT_SECONDS = 3600.0
#: Headers never kept in the metadata nor re-sent: ours, and the failing run's trace
#: (the stored failure context keeps its ids; the retry gets a trace of its own).
_DROPPED_HEADERS = frozenset({HEADER, "traceparent", "tracestate"})
#: At most this many custom headers are kept, each at most this long as JSON.
_MAX_HEADERS = 32
_MAX_HEADER_BYTES = 4096
#: The request fields kept in the metadata (beside the routing) when set.
_REQUEST_FIELDS = ("hostname", "retries", "eta", "expires", "root_id", "parent_id", "group")
#: ``metadata["args_encoding"]`` when the input holds kombu's JSON type markers.
KOMBU_JSON = "kombu-json"

_INSTALLED: weakref.WeakKeyDictionary[Any, CeleryDeadLetters] = weakref.WeakKeyDictionary()


def install(
    app: Any,
    dlq_settings: DLQSettings | None = None,
    *,
    dlq: DeadLetterQueue | None = None,
    wait_seconds: float = DEFAULT_WAIT_SECONDS,
    headers_kept: Collection[str] | None = None,
) -> DeadLetterQueue:
    """Capture ``app``'s tasks that fail for good; return the queue that retries them.

    ``dlq_settings`` (default :meth:`DLQSettings.load`: the environment and
    ``MAHAVISHNU_DLQ_CONFIG``) or ``dlq`` (a queue you built) say where failures are
    stored. Every process that imports the app module (the workers, the service
    running the processor) calls this; workers capture through a queue of their own
    per process, and the returned queue is the one whose processor re-sends the
    tasks (``mahavishnu-dlq processor run --app proj.celery:dlq``, or ``async with
    dlq:`` in a service). ``wait_seconds`` bounds how long a re-sent task may wait
    in its queue and run before the attempt counts as lost; ``headers_kept`` names
    the custom message headers kept in the metadata and re-sent (default: all of
    them, JSON values only). Installing again on the same app replaces the first
    installation.
    """
    if not isinstance(app, Celery):  # (not app.tasks: reading it would finalize the app)
        raise TypeError(f"install() takes a Celery app, got {type(app).__name__}")
    if not wait_seconds > 0:  # also NaN
        raise ValueError(f"wait_seconds must be > 0, got {wait_seconds!r}")
    if isinstance(headers_kept, str):
        raise TypeError("headers_kept takes a collection of header names, not one string")
    previous = _INSTALLED.pop(app, None)
    if previous is not None:
        previous.disconnect()
    integration = CeleryDeadLetters(
        app,
        EngineBridge(ENGINE, dlq, dlq_settings=dlq_settings),
        wait_seconds=wait_seconds,
        headers_kept=None if headers_kept is None else frozenset(headers_kept),
    )
    integration.connect()
    _INSTALLED[app] = integration
    return integration.dlq


def installed(app: Any) -> CeleryDeadLetters | None:
    """The integration :func:`install` connected to ``app``, if any (its counters,
    its bridge, :meth:`CeleryDeadLetters.disconnect`)."""
    return _INSTALLED.get(app)


class CeleryDeadLetters:
    """The signal receivers and the engine handler of one Celery app."""

    def __init__(
        self,
        app: Any,
        bridge: EngineBridge,
        *,
        wait_seconds: float = DEFAULT_WAIT_SECONDS,
        headers_kept: frozenset[str] | None = None,
    ) -> None:
        self.app = app
        self.bridge = bridge
        self.wait_seconds = float(wait_seconds)
        self.headers_kept = headers_kept

    @property
    def dlq(self) -> DeadLetterQueue:
        """The host's queue: its processor re-sends this app's failed tasks."""
        return self.bridge.dlq

    @property
    def counters(self) -> dict[str, int]:
        """This process's counts: captured, capture_failed, reported, report_ignored,
        report_failed (see :data:`mahavishnu_dlq.integrations.bridge.COUNTERS`)."""
        return self.bridge.counters

    def connect(self) -> None:
        """Connect the signal receivers and register the engine handler."""
        signals.task_failure.connect(self.on_failure, weak=False, dispatch_uid=self._uid)
        signals.task_success.connect(self.on_success, weak=False, dispatch_uid=self._uid)
        self.dlq.register_engine(ENGINE, self.send, wait_seconds=self.wait_seconds)

    def disconnect(self) -> None:
        """Disconnect the signal receivers (the queue keeps its engine handler)."""
        signals.task_failure.disconnect(self.on_failure, dispatch_uid=self._uid)
        signals.task_success.disconnect(self.on_success, dispatch_uid=self._uid)

    @property
    def _uid(self) -> str:
        return f"mahavishnu_dlq.celery:{id(self.app)}"

    # -- in the worker --------------------------------------------------------------------

    def on_success(self, sender: Any = None, **_: Any) -> None:
        """``task_success``: a task we re-sent reports its success; others cost a lookup."""
        headers = sender.request.headers
        if headers and HEADER in headers and sender.app is self.app:
            self._report(sender, headers[HEADER], None)

    def on_failure(
        self,
        sender: Any = None,
        task_id: str | None = None,
        exception: BaseException | None = None,
        args: Any = None,
        kwargs: Any = None,
        **_: Any,
    ) -> None:
        """``task_failure``: store the task that failed for good (or report the failure
        of one we re-sent). Never raises into the worker."""
        try:
            if sender is None or getattr(sender, "app", None) is not self.app:
                return  # another app's task: its own installation handles it
            request = sender.request
            if getattr(request, "id", None) != task_id:
                request = None  # failed in the worker's main process (time limit, Reject)
            headers = getattr(request, "headers", None) or {}
            mark = headers.get(HEADER)
            if mark is not None:
                self._report(sender, mark, exception or "the task failed")
                return
            if isinstance(exception, Reject):
                _log.debug("dlq.celery.capture %s: rejected by the task, not stored", task_id)
                return
            self._capture(sender, request, task_id, exception, args, kwargs, headers)
        except Exception as exc:  # noqa: BLE001 - never break the host's worker
            self.bridge.counters["capture_failed"] += 1
            _log.error(  # one line: the worker goes on
                "dlq.celery.capture %s not stored: %s: %s",
                task_id,
                type(exc).__name__,
                exc,
                extra={"action": "dlq.celery.capture", "task_id": task_id},
            )

    def _capture(
        self,
        task: Any,
        request: Any,
        task_id: str | None,
        exception: BaseException | None,
        args: Any,
        kwargs: Any,
        headers: Mapping[str, Any],
    ) -> None:
        payload, encoding = task_input(args, kwargs)
        metadata = self._metadata(request, headers)
        if encoding is not None:
            metadata["args_encoding"] = encoding
        traceparent = headers.get("traceparent")
        self.bridge.capture(
            str(task_id or ""),
            payload,
            exception if exception is not None else "the task failed",
            workflow=str(task.name),
            metadata=metadata,
            traceparent=traceparent if isinstance(traceparent, str) else None,
        )

    def _metadata(self, request: Any, headers: Mapping[str, Any]) -> dict[str, Any]:
        metadata: dict[str, Any] = {}
        if request is None:
            return metadata
        metadata.update(routing_of(request.delivery_info, self.app))
        for name in _REQUEST_FIELDS:
            value = getattr(request, name, None)
            if value is not None and value != "":
                metadata[name] = value if isinstance(value, (int, float)) else str(value)
        kept = self._kept(headers)
        if kept:
            metadata["headers"] = kept
        return metadata

    def _kept(self, headers: Mapping[str, Any]) -> dict[str, Any]:
        kept: dict[str, Any] = {}
        for name, value in headers.items():
            if len(kept) >= _MAX_HEADERS:
                break
            if not isinstance(name, str) or name in _DROPPED_HEADERS:
                continue
            if self.headers_kept is not None and name not in self.headers_kept:
                continue
            try:
                text = json.dumps(value, allow_nan=False)
            except (TypeError, ValueError):
                continue  # not JSON: not kept
            if len(text) <= _MAX_HEADER_BYTES:
                kept[name] = value
        return kept

    def _report(self, task: Any, mark: Any, error: BaseException | str | None) -> None:
        if not isinstance(mark, Mapping):
            self.bridge.counters["report_failed"] += 1
            _log.error("dlq.celery.report %s: malformed %s header", task.request.id, HEADER)
            return
        self.bridge.report(str(mark.get("task_id")), str(mark.get("token")), error)

    # -- in the processor -----------------------------------------------------------------

    def send(self, record: FailedTask) -> NoReturn:
        """The engine handler: re-send ``record``'s task to its original queue and
        routing, under its task id, carrying the token the attempt is held under
        (``record.lease_owner``); the worker that runs it reports the outcome."""
        args, kwargs = resend_arguments(record.task)
        token = record.lease_owner
        if not token:
            raise ValueError(f"record {record.task_id!r} is not held for a dispatch")
        headers = dict(record.metadata.get("headers") or {})
        headers[HEADER] = {"task_id": record.task_id, "token": token}
        options: dict[str, Any] = {
            "task_id": record.task_id,
            "headers": headers,
            **resend_routing(record.metadata),
        }
        task = self.app.tasks.get(record.workflow) if record.workflow else None
        if task is not None:
            task.apply_async(args, kwargs, **options)
        else:
            if not record.workflow:
                raise ValueError(f"record {record.task_id!r} names no Celery task to re-send")
            self.app.send_task(record.workflow, args, kwargs, **options)
        raise Dispatched(_where(options))


def task_input(args: Any, kwargs: Any) -> tuple[dict[str, Any], str | None]:
    """The stored input of a Celery task: ``{"args": [...], "kwargs": {...}}``, and
    :data:`KOMBU_JSON` when it holds values plain JSON has no form for (datetimes,
    UUIDs, decimals, bytes …) written as kombu's JSON type markers, which the worker
    decodes back into those values when the task is re-sent with the JSON serializer."""
    payload = {"args": list(args or ()), "kwargs": dict(kwargs or {})}
    try:
        json.dumps(payload, allow_nan=False)
    except (TypeError, ValueError):
        pass
    else:
        return payload, None
    try:
        from kombu.utils.json import dumps  # noqa: PLC0415 - only for such values

        marked = json.loads(dumps(payload))  # type: ignore[no-untyped-call]
    except Exception:  # noqa: BLE001 - kombu cannot write it either: stored as it is
        return payload, None
    return marked, KOMBU_JSON  # may still hold NaN: the queue then refuses it


def resend_arguments(task: Mapping[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    """The args and kwargs of a stored input, checked (a bad input fails the attempt
    with a message naming it, rather than sending a task that cannot run)."""
    args = task.get("args", [])
    kwargs = task.get("kwargs", {})
    if not isinstance(args, list) or not isinstance(kwargs, Mapping):
        raise TypeError(
            "a Celery record's input must be {'args': [...], 'kwargs': {...}}, got "
            f"args={type(args).__name__}, kwargs={type(kwargs).__name__}"
        )
    return args, dict(kwargs)


def routing_of(delivery_info: Mapping[str, Any] | None, app: Any = None) -> dict[str, Any]:
    """The routing a task was delivered with: exchange, routing key, priority and the
    queue (the routing key of the default exchange, else the declared queue bound so)."""
    info = delivery_info or {}
    routing: dict[str, Any] = {}
    exchange = info.get("exchange")
    routing_key = info.get("routing_key")
    if isinstance(exchange, str):
        routing["exchange"] = exchange
    if isinstance(routing_key, str):
        routing["routing_key"] = routing_key
    priority = info.get("priority")
    if isinstance(priority, int):
        routing["priority"] = priority
    queue = routing_key if not exchange else _queue_bound(app, exchange, routing_key)
    if queue:
        routing["queue"] = queue
    return routing


def _queue_bound(app: Any, exchange: str, routing_key: Any) -> str | None:
    try:
        queues = app.amqp.queues.values()
    except Exception:  # noqa: BLE001 - a name for the record only
        return None
    for queue in queues:
        bound = getattr(queue, "exchange", None)
        if getattr(bound, "name", None) == exchange and queue.routing_key == routing_key:
            return str(queue.name)
    return None


def resend_routing(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The ``apply_async`` routing options of a re-send, as Celery's own retry builds
    them: the queue for a message sent through the default exchange, else the
    exchange and routing key; nothing when the record has no routing (Celery's
    router decides)."""
    exchange = metadata.get("exchange")
    routing_key = metadata.get("routing_key")
    options: dict[str, Any] = {}
    if isinstance(exchange, str) and exchange and isinstance(routing_key, str):
        options["exchange"] = exchange
        options["routing_key"] = routing_key
    elif isinstance(routing_key, str) and routing_key:
        options["queue"] = routing_key
    elif isinstance(metadata.get("queue"), str):
        options["queue"] = metadata["queue"]
    priority = metadata.get("priority")
    if isinstance(priority, int) and not isinstance(priority, bool):
        options["priority"] = priority
    return options


def _where(options: Mapping[str, Any]) -> str:
    if "queue" in options:
        return f"queue {options['queue']}"
    if "exchange" in options:
        return f"exchange {options['exchange']}, routing key {options['routing_key']}"
    return "Celery's routing"
