"""The original's ``DLQIntegration``: run a workflow through the host app, enqueue
its failure as the strategy says, answer with the original's result dict.

Built on the native pieces: the decision is the native
:meth:`mahavishnu_dlq.integration.DLQIntegration.should_enqueue` (transient, network
and resource failures under SELECTIVE), the category the native classifier's unless
the app has the original's ``error_recovery_manager.classify_error``, the retry
policy the native policy book's. Unlike the native wrapper, a failure that was
enqueued is *returned* as a dict (``dlq_enqueued: True``) and one that was not
raises ``AdapterError`` with the workflow's exception as its cause — the original's
contract.
"""

from __future__ import annotations

import inspect
import logging
import uuid
from datetime import datetime, timezone
from typing import Any

from mahavishnu_dlq.compat.errors import OPENSEARCH_AVAILABLE, AdapterError
from mahavishnu_dlq.compat.queue import DeadLetterQueue
from mahavishnu_dlq.compat.task import FailedTask
from mahavishnu_dlq.integration import DLQIntegration as NativeIntegration
from mahavishnu_dlq.models import DLQIntegrationStrategy, ErrorCategory, RetryPolicy

__all__ = ["DLQIntegration", "create_dlq_integration"]

_log = logging.getLogger("mahavishnu_dlq.compat")
_COUNTERS = (
    "workflows_executed",
    "workflows_failed",
    "auto_enqueued",
    "manually_enqueued",
    "skipped_permanent",
    "skipped_permission",
    "skipped_by_strategy",
)


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


class DLQIntegration:
    """The integration layer of the original, over a compat :class:`DeadLetterQueue`."""

    def __init__(self, app: Any, dlq: DeadLetterQueue) -> None:
        self.app = app
        self.dlq = dlq
        self._native = NativeIntegration(dlq.native, enqueue_unretryable=True)
        self._stats: dict[str, int] = dict.fromkeys(_COUNTERS, 0)

    def set_strategy(self, strategy: DLQIntegrationStrategy | str) -> None:
        """Use ``strategy`` from now on."""
        self._native.strategy = DLQIntegrationStrategy(strategy)

    def get_strategy(self) -> DLQIntegrationStrategy:
        """The strategy in use."""
        return self._native.strategy

    async def _classify(self, error: BaseException) -> ErrorCategory:
        manager = getattr(self.app, "error_recovery_manager", None)
        classify = getattr(manager, "classify_error", None)
        if callable(classify):
            try:
                return ErrorCategory(await _maybe_await(classify(error)))
            except (TypeError, ValueError):  # not a category: the native classifier decides
                pass
        return self.dlq.native.classifier.classify(error)

    async def should_enqueue(
        self, error: BaseException, error_category: ErrorCategory | None = None
    ) -> bool:
        """Whether this failure goes to the DLQ under the current strategy."""
        strategy = self._native.strategy
        if strategy in (DLQIntegrationStrategy.DISABLED, DLQIntegrationStrategy.MANUAL):
            return False
        if error_category is None:
            error_category = await self._classify(error)
        return self._native.should_enqueue(ErrorCategory(error_category))

    async def determine_retry_policy(
        self, error: BaseException, error_category: ErrorCategory | None = None
    ) -> RetryPolicy:
        """The policy a failure like ``error`` is retried with (the native defaults:
        exponential for transient and network, linear for resource, never otherwise)."""
        if error_category is None:
            error_category = await self._classify(error)
        return self._native.determine_retry_policy(ErrorCategory(error_category))

    def _max_retries(self) -> int:
        value = getattr(getattr(self.app, "config", None), "dlq_default_max_retries", 3)
        return value if isinstance(value, int) and not isinstance(value, bool) else 3

    async def enqueue_failed_workflow(
        self,
        task_id: str,
        task: dict[str, Any],
        repos: list[str],
        error: BaseException,
        retry_policy: RetryPolicy | None = None,
        max_retries: int | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> FailedTask | None:
        """Enqueue ``error`` if :meth:`should_enqueue` says so; None when skipped or the
        queue is full (or the payload cannot be stored)."""
        category = await self._classify(error)
        if not await self.should_enqueue(error, category):
            self._stats["skipped_by_strategy"] += 1
            permission = category is ErrorCategory.PERMISSION
            self._stats["skipped_permission" if permission else "skipped_permanent"] += 1
            _log.info("Skipping DLQ enqueue for %s: %s error", task_id, category.value)
            return None
        if retry_policy is None:
            retry_policy = await self.determine_retry_policy(error, category)
        manual = self._native.strategy is DLQIntegrationStrategy.MANUAL
        context: dict[str, Any] = {
            "enqueued_at": datetime.now(timezone.utc).isoformat(),
            "enqueued_by": "manual" if manual else "automatic",
            "original_error_type": type(error).__name__,
            **(metadata or {}),
        }
        try:
            record = await self.dlq.enqueue(
                task_id,
                task,
                repos,
                error,
                retry_policy=retry_policy,
                max_retries=self._max_retries() if max_retries is None else max_retries,
                metadata=context,
                error_category=category,
            )
        except ValueError as exc:  # full, or a payload that cannot be stored
            _log.error("Failed to enqueue workflow %s: %s", task_id, exc)
            return None
        self._stats["auto_enqueued"] += 1
        return record

    async def execute_with_dlq(
        self,
        task: dict[str, Any],
        adapter_name: str,
        repos: list[str] | None = None,
        user_id: str | None = None,
    ) -> dict[str, Any]:
        """Run ``app.execute_workflow_parallel``; a failure enqueued comes back as a dict,
        one not enqueued raises :class:`AdapterError` (cause: the workflow's error)."""
        self._stats["workflows_executed"] += 1
        workflow_id = str(
            task.get("id") or f"wf_{uuid.uuid4().hex[:8]}_{task.get('type', 'default')}"
        )
        try:
            result = await _maybe_await(
                self.app.execute_workflow_parallel(
                    task=task, adapter_name=adapter_name, repos=repos, user_id=user_id
                )
            )
        except Exception as exc:
            self._stats["workflows_failed"] += 1
            failed = await self.enqueue_failed_workflow(workflow_id, task, repos or [], exc)
            if failed is not None:
                return {
                    "workflow_id": workflow_id,
                    "status": "failed",
                    "error": str(exc),
                    "error_type": type(exc).__name__,
                    "dlq_enqueued": True,
                    "dlq_task_id": failed.task_id,
                    "retry_policy": failed.retry_policy.value,
                    "max_retries": failed.max_retries,
                }
            raise AdapterError(
                f"Workflow execution failed and not enqueued in DLQ: {exc}",
                details={
                    "workflow_id": workflow_id,
                    "adapter": adapter_name,
                    "error": str(exc),
                    "error_type": type(exc).__name__,
                    "dlq_reason": "skipped_by_policy",
                },
            ) from exc
        return result  # type: ignore[no-any-return]

    async def get_statistics(self) -> dict[str, Any]:
        """The original's counters, ``skipped_by_strategy``, strategy and enqueue rate."""
        failed = self._stats["workflows_failed"]
        return {
            "strategy": self._native.strategy.value,
            **self._stats,
            "enqueue_rate": round(self._stats["auto_enqueued"] / max(failed, 1) * 100, 2),
        }

    async def reset_statistics(self) -> None:
        """Zero the counters."""
        self._stats = dict.fromkeys(_COUNTERS, 0)


def _setting(config: Any, nested: str, flat: str, default: Any, kind: type) -> Any:
    """``config.dlq.<nested>``, else ``config.<flat>``, else ``default`` — of type ``kind``."""
    for value in (getattr(getattr(config, "dlq", None), nested, None), getattr(config, flat, None)):
        if isinstance(value, kind):
            return value
    return default


async def create_dlq_integration(app: Any) -> DLQIntegration:
    """A :class:`DLQIntegration` for ``app``, creating ``app.dlq`` when it is missing
    (from ``app.config``'s DLQ settings, the app's OpenSearch client and observability)."""
    if getattr(app, "dlq", None) is None:
        config = getattr(app, "config", None)
        search = getattr(app, "opensearch_integration", None)
        client = getattr(search, "client", None) if search and OPENSEARCH_AVAILABLE else None
        app.dlq = DeadLetterQueue(
            max_size=_setting(config, "max_size", "dlq_max_size", 10000, int),
            opensearch_client=client,
            observability_manager=getattr(app, "observability", None),
            fail_on_opensearch_unavailable=_setting(
                config,
                "fail_on_opensearch_unavailable",
                "dlq_fail_on_opensearch_unavailable",
                False,
                bool,
            ),
        )
    integration = DLQIntegration(app, app.dlq)
    strategy = getattr(getattr(app, "config", None), "dlq_integration_strategy", "automatic")
    try:
        integration.set_strategy(DLQIntegrationStrategy(strategy))
    except ValueError:
        integration.set_strategy(DLQIntegrationStrategy.AUTOMATIC)
    return integration
