"""Prefect: a dead-letter hook for flows (extra ``prefect``).

Three lines give a flow the queue's capture, classification, policies and console::

    from prefect import flow
    from mahavishnu_dlq.integrations.prefect import dead_letter_hook

    @flow(on_failure=[dead_letter_hook])
    def nightly_report(day: str) -> None: ...

Prefect calls an ``on_failure`` hook once, when a flow run ends Failed for good
(after the flow's own ``retries``). The hook stores the run: its id as the task
id (a second capture of the same run updates the one record), the flow's name as
the workflow, its parameters as the input, and in the metadata the run's name,
tags, deployment, a link to the run in Prefect's UI and the flow's import path
(``module:qualname``). The error is the flow's own exception, so classification
and fingerprints see what the flow raised. The hook runs on the failure path
only: a run that completes never reaches it.

Replay (:meth:`DeadLetterHook.replay`, the engine handler ``"prefect"`` on the
host's queue) starts a new run of the same flow: through ``run_deployment`` when
the failed run came from a deployment (a worker or ``serve`` runs it), else by
calling the flow in the processor's process. Either way the handler waits for the
run's final state: Completed completes the record, Failed raises the run's
exception (a failed attempt; the policy decides). The new run carries the tag
:data:`REPLAY_TAG` (and one naming the record), so its own failure hook stores
nothing new: it is an attempt of the record, not a new failure.

Parameters are stored as JSON (``pydantic_core.to_jsonable_python``: pydantic
models, dates and UUIDs become JSON and Prefect turns them back when the flow is
called again). A value with no JSON form fails the capture (logged, counted in
``bridge.counters["capture_failed"]``) rather than storing a stand-in the replay
would run with. Nothing in the hook raises into Prefect: the run keeps its own
Failed state and its exception reaches the caller as before.
"""

from __future__ import annotations

import importlib
import inspect
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast
from uuid import UUID

try:
    import prefect
    from prefect.context import FlowRunContext
    from prefect.utilities.asyncutils import run_coro_as_sync
    from pydantic_core import to_jsonable_python
except ImportError as exc:  # pragma: no cover - the extra is installed in tests
    raise ImportError(
        "the Prefect integration needs Prefect: pip install 'mahavishnu-dlq[prefect]'"
    ) from exc

from mahavishnu_dlq.integrations.bridge import EngineBridge
from mahavishnu_dlq.printable import library_logger

if TYPE_CHECKING:
    from prefect import Flow
    from prefect.client.schemas.objects import FlowRun, State

    from mahavishnu_dlq.models import FailedTask
    from mahavishnu_dlq.queue import DeadLetterQueue
    from mahavishnu_dlq.settings import DLQSettings

__all__ = [
    "ENGINE",
    "REPLAY_TAG",
    "DeadLetterHook",
    "PrefectRunFailed",
    "dead_letter_hook",
    "dead_letter_hook_for",
    "dead_letter_queue",
    "flow_path",
]

_log = library_logger("mahavishnu_dlq.integrations")

#: The engine name in ``metadata["engine"]`` and of the engine handler.
ENGINE = "prefect"
#: The tag of every run the queue starts as a retry; its failure hook stores nothing.
REPLAY_TAG = "mahavishnu-dlq-replay"


class PrefectRunFailed(RuntimeError):  # noqa: N818 - named after what Prefect reports
    """A replayed flow run failed and its exception could not be read back (its
    state's message is the text); the attempt counts as failed."""


class DeadLetterHook:
    """An ``on_failure`` hook storing failed flow runs in a queue, and the engine
    handler that replays them (see the module docstring).

    ``dlq`` is the host's queue (its processor replays the runs), else one built
    from ``dlq_settings`` or :meth:`DLQSettings.load` on first use. A replay
    through a deployment waits ``run_timeout`` seconds at most for the new run
    (default: the queue's attempt timeout); a run still going then is a failed
    attempt.
    """

    __name__ = "dead_letter_hook"  # Prefect logs hooks by name

    def __init__(
        self,
        dlq: DeadLetterQueue | None = None,
        *,
        dlq_settings: DLQSettings | None = None,
        run_timeout: float | None = None,
    ) -> None:
        if run_timeout is not None and not run_timeout > 0:
            raise ValueError(f"run_timeout must be a positive number of seconds, got {run_timeout}")
        self.bridge = EngineBridge(ENGINE, dlq, dlq_settings=dlq_settings)
        self._settings = (
            dlq_settings if dlq_settings is not None else getattr(dlq, "settings", None)
        )
        self.bridge.counters["replay_skipped"] = 0
        self.run_timeout = run_timeout
        #: flows this hook has seen fail in this process, by import path
        self.flows: dict[str, Flow[..., Any]] = {}
        self._registered: DeadLetterQueue | None = None
        self._lock = threading.Lock()

    def __reduce__(self) -> str | tuple[Any, ...]:
        """Pickled with its flow (``serve`` and some runners pickle the flow, hooks and
        all): the default hook by name, another one as its settings and timeout,
        rebuilt in the process that runs the flow (a queue made without settings
        becomes the one :meth:`DLQSettings.load` describes there)."""
        if self is dead_letter_hook:
            return "dead_letter_hook"
        return (_rebuilt, (self._settings, self.run_timeout))

    # -- the host's side -----------------------------------------------------------------

    @property
    def dlq(self) -> DeadLetterQueue:
        """The host's queue, with :meth:`replay` registered as its ``"prefect"`` engine
        handler: run its processor (``async with dlq:``, or ``mahavishnu-dlq
        processor run --app module:attribute``)."""
        queue = self.bridge.dlq
        if self._registered is not queue:
            with self._lock:
                # the replay waits for its run: the attempt is held no longer than that
                waits = self.run_timeout or queue.attempt_timeout_seconds
                queue.register_engine(ENGINE, self.replay, wait_seconds=waits + 60)
                self._registered = queue
        return queue

    def close(self) -> None:
        """Stop this process's capturing queue (a later failure starts it again)."""
        self.bridge.close()

    # -- the hook ------------------------------------------------------------------------

    def __call__(self, flow: Flow[..., Any], flow_run: FlowRun, state: State[Any]) -> None:
        """Store ``flow_run``, which ended in the failed ``state`` (Prefect's hook
        signature). Never raises: a failure here is logged and counted."""
        task_id = str(getattr(flow_run, "id", "") or "")
        try:
            if REPLAY_TAG in (flow_run.tags or ()):
                self.bridge.counters["replay_skipped"] += 1
                _log.info(
                    "dlq.prefect.capture %s (%s): a replay run; its outcome goes to the "
                    "record it retries",
                    task_id,
                    flow.name,
                    extra={"action": "dlq.prefect.capture", "task_id": task_id},
                )
                return
            path = flow_path(flow)
            self.flows[path] = flow
            parameters = to_jsonable_python(_parameters(flow_run))
            metadata = _metadata(flow_run, state, path)
            error = _exception(state)
        except Exception as exc:  # noqa: BLE001 - never break the flow run's own handling
            self.bridge.counters["capture_failed"] += 1
            _log.error(  # one line: the run goes on as Prefect decides
                "dlq.prefect.capture %s (%s) not stored: %s: %s",
                task_id,
                getattr(flow, "name", "?"),
                type(exc).__name__,
                exc,
                extra={"action": "dlq.prefect.capture", "task_id": task_id},
            )
            return
        self.bridge.capture(
            task_id,
            parameters,
            error,
            workflow=flow.name,
            metadata=metadata,
            traceparent=_traceparent(flow_run),
        )

    # -- the replay ----------------------------------------------------------------------

    def replay(self, record: FailedTask) -> dict[str, Any]:
        """Run the record's flow again and wait for the outcome: a dict naming the new
        run when it completed; the run's exception raised when it failed."""
        metadata = record.metadata
        parameters = dict(record.task)
        tags = [REPLAY_TAG, f"{REPLAY_TAG}:{record.task_id}"]
        deployment = metadata.get("deployment_id")
        if isinstance(deployment, str) and deployment:
            return self._run_deployment(record, UUID(deployment), parameters, tags)
        flow = self._flow(metadata.get("flow"))
        with prefect.tags(*tags):
            called: Any = flow(**parameters, return_state=True)
            # an async flow: on Prefect's own loop thread, as Prefect runs its coroutines
            state: State[Any] = run_coro_as_sync(called) if inspect.iscoroutine(called) else called
        return _outcome(record, state, state.state_details.flow_run_id)

    def _run_deployment(
        self, record: FailedTask, deployment: UUID, parameters: dict[str, Any], tags: list[str]
    ) -> dict[str, Any]:
        from prefect.deployments import run_deployment  # noqa: PLC0415 - on replay only

        timeout = self.run_timeout or self.dlq.attempt_timeout_seconds
        # a sync call (the handler runs in a worker thread): the run, not a coroutine
        run = cast(
            "FlowRun",
            run_deployment(deployment, parameters=parameters, tags=tags, timeout=timeout),
        )
        state = run.state
        if state is None or not state.is_final():
            raise TimeoutError(
                f"flow run {run.id} of deployment {deployment} did not finish within "
                f"{timeout:g} s (still {state.name if state else 'unknown'})"
            )
        return _outcome(record, state, run.id)

    def _flow(self, path: Any) -> Flow[..., Any]:
        """The flow at ``path`` (``module:qualname``): one seen in this process, else
        imported."""
        if not isinstance(path, str) or ":" not in path:
            raise LookupError(f"the record names no flow to call (metadata flow={path!r})")
        seen = self.flows.get(path)
        if seen is not None:
            return seen
        module_name, _, qualname = path.partition(":")
        target: Any = importlib.import_module(module_name)
        for name in qualname.split("."):
            target = getattr(target, name, None)
        if not isinstance(target, prefect.Flow):
            raise TypeError(f"{path} is not a Prefect flow (found {type(target).__name__})")
        self.flows[path] = target
        return target


def _rebuilt(settings: DLQSettings | None, run_timeout: float | None) -> DeadLetterHook:
    return DeadLetterHook(dlq_settings=settings, run_timeout=run_timeout)


def _outcome(record: FailedTask, state: State[Any], run_id: UUID | None) -> dict[str, Any]:
    """The replay's result for a final ``state``; its exception raised when it failed."""
    if state.is_completed():
        _log.info(
            "dlq.prefect.replay %s: flow run %s completed",
            record.task_id,
            run_id,
            extra={"action": "dlq.prefect.replay", "task_id": record.task_id},
        )
        return {"flow_run_id": str(run_id), "state": state.name}
    _log.info(
        "dlq.prefect.replay %s: flow run %s ended %s",
        record.task_id,
        run_id,
        state.name,
        extra={"action": "dlq.prefect.replay", "task_id": record.task_id},
    )
    error = _exception(state)
    if isinstance(error, BaseException):
        raise error
    raise PrefectRunFailed(f"flow run {run_id} ended {state.name}: {error}")


def _exception(state: State[Any]) -> BaseException | str:
    """The exception the run raised, as Prefect keeps it in the state (in memory in
    the process that ran the flow, read back from result storage elsewhere); else
    the state's message."""
    data = state.data
    value = getattr(data, "result", data)  # a ResultRecord holds the exception itself
    if isinstance(value, BaseException):
        return value
    try:
        value = state.result(raise_on_failure=False, **_SYNC)
    except Exception:  # noqa: BLE001 - then the message is all there is
        value = None
    if isinstance(value, BaseException):
        return value
    return state.message or state.name or "the flow run failed"


# ``State.result`` dispatches on the calling context; a hook in an async flow runs in
# the flow's event loop, where it would return a coroutine: ask for the sync form.
_SYNC: dict[str, Any] = {"_sync": True}


def _parameters(flow_run: FlowRun) -> Mapping[str, Any]:
    """The values the flow was called with (the run context's, as Python objects),
    else the run's parameters as Prefect stored them."""
    context = FlowRunContext.get()
    if (
        context is not None
        and context.flow_run is not None
        and context.flow_run.id == flow_run.id
        and context.parameters is not None
    ):
        return context.parameters
    return flow_run.parameters


def _metadata(flow_run: FlowRun, state: State[Any], path: str) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "flow_run_id": str(flow_run.id),
        "flow_run_name": flow_run.name,
        "flow": path,
        "tags": list(flow_run.tags or ()),
        "state": state.name,
        "state_message": state.message,
    }
    url = _run_url(flow_run)
    if url:
        metadata["run_url"] = url
    if flow_run.deployment_id is not None:
        metadata["deployment_id"] = str(flow_run.deployment_id)
        name = _deployment_name(flow_run.deployment_id)
        if name:
            metadata["deployment_name"] = name
    return metadata


def _traceparent(flow_run: FlowRun) -> str | None:
    """The W3C traceparent of the run's span, which Prefect keeps in the run's labels
    (used when no span is current in the hook)."""
    labels = getattr(flow_run, "labels", None) or {}
    value = labels.get(_TRACEPARENT_LABEL)
    return value if isinstance(value, str) else None


#: the label Prefect's run telemetry writes the run span's traceparent to
_TRACEPARENT_LABEL = "__OTEL_TRACEPARENT"


def _run_url(flow_run: FlowRun) -> str | None:
    """The run's page in Prefect's UI (``PREFECT_UI_URL``), computed offline."""
    from prefect.utilities.urls import url_for  # noqa: PLC0415 - on failure only

    try:
        return url_for(flow_run)
    except Exception:  # noqa: BLE001 - no UI configured: no link
        return None


def _deployment_name(deployment_id: UUID) -> str | None:
    """``flow/deployment`` for display; None when the API cannot say (best effort)."""
    from prefect.client.orchestration import get_client  # noqa: PLC0415 - on failure only

    try:
        with get_client(sync_client=True) as client:
            deployment = client.read_deployment(deployment_id)
            flow = client.read_flow(deployment.flow_id)
    except Exception as exc:  # noqa: BLE001 - the id is what replays use
        _log.debug("dlq.prefect.capture: deployment %s not read: %s", deployment_id, exc)
        return None
    return f"{flow.name}/{deployment.name}"


def flow_path(flow: Flow[..., Any]) -> str:
    """``module:qualname`` of ``flow``'s function: where a processor imports it from."""
    fn = flow.fn
    return f"{fn.__module__}:{fn.__qualname__}"


def dead_letter_hook_for(
    dlq: DeadLetterQueue | None = None, *, dlq_settings: DLQSettings | None = None
) -> DeadLetterHook:
    """A hook storing into ``dlq`` (or a queue built from ``dlq_settings``)."""
    return DeadLetterHook(dlq, dlq_settings=dlq_settings)


#: The hook for ``@flow(on_failure=[dead_letter_hook])``: settings from
#: :meth:`DLQSettings.load` (environment, settings file), read on the first failure.
dead_letter_hook = DeadLetterHook()


def dead_letter_queue() -> DeadLetterQueue:
    """The default hook's queue, ready to replay Prefect runs:
    ``mahavishnu-dlq processor run --app mahavishnu_dlq.integrations.prefect:dead_letter_queue``."""
    return dead_letter_hook.dlq
