"""Retention: what ages out of the queue on its own, run as bulk jobs by the processors.

Three rules, each a number of days and each can be turned off:

* ``archive_exhausted_after`` (30 days): ``exhausted`` tasks last updated that long
  ago are archived (they leave the open count, see ``max_size``);
* ``purge_completed_after`` (7 days): ``completed`` tasks are deleted;
* ``purge_archived_after`` (90 days): ``archived`` tasks are deleted.

"Last updated" is the task's ``updated_at``: for an exhausted task, when its last
retry failed (or an operator last touched it); for a completed or archived one,
when it got there — the age ``purge --older-than`` selects by.

**One run across the fleet.** The schedule is one record of the store's
:class:`~mahavishnu_dlq.storage.base.ControlStore` (key ``retention``). Each
retry processor's job runner, before it looks for jobs, asks
:meth:`RetentionScheduler.run_due`: when the record's ``next_run_at`` has come, a
compare-and-set moves it one interval on, and only the process whose write
succeeded makes the run. A run counts what each rule selects and starts a bulk
job (``archive`` or ``purge``, ``created_by`` ``retention/<rule>``) for each rule
with something to remove — unless that rule's job of an earlier run has not
finished (a large backlog, or an operator paused it): the rule waits for it.
The jobs are ordinary bulk jobs: any processor sharing the store runs each, one
runner per job (the job's lease), and ``jobs``/``pause``/``cancel`` steer them.

Between checks a scheduler remembers when the next run is due, so a processor
reads the record about once per interval, not on every poll.

What ran and what it removed is logged (``dlq.retention`` when a run starts its
jobs, ``dlq.retention.finished`` when each ends, with its counts) and counted:
the lifetime counters ``retention_runs``, ``retention_archived`` and
``retention_purged`` of the process that did it.
"""

from __future__ import annotations

import logging
import math
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from mahavishnu_dlq.clock import from_micros, to_micros
from mahavishnu_dlq.jobs.model import Job, JobKind
from mahavishnu_dlq.models import DeadLetterStatus, TaskFilter
from mahavishnu_dlq.printable import library_logger

if TYPE_CHECKING:
    from mahavishnu_dlq.queue import DeadLetterQueue

__all__ = [
    "RETENTION_KEY",
    "Retention",
    "RetentionRule",
    "RetentionScheduler",
    "retention_rule_of",
]

_log = library_logger("mahavishnu_dlq")

#: the control record that holds the schedule
RETENTION_KEY = "retention"
#: ``created_by`` of a retention job: this prefix, then the rule's name
CREATOR_PREFIX = "retention/"

_DAY = timedelta(days=1)
_CENTURY = timedelta(days=36500)
_RETRY_SECONDS = 60.0  # after a failed check (the store could not be reached)


@dataclass(frozen=True)
class RetentionRule:
    """One rule: tasks of ``status`` last updated at least ``after`` ago get ``kind``."""

    name: str
    kind: JobKind
    status: DeadLetterStatus
    after: timedelta

    def selection(self, now: datetime) -> TaskFilter:
        """The tasks this rule removes at ``now``."""
        return TaskFilter(status=(self.status,), updated_before=now - self.after)


def _age(name: str, value: object) -> timedelta | None:
    if value is None:
        return None
    if not isinstance(value, timedelta):
        raise TypeError(f"{name} must be a timedelta or None, got {type(value).__name__}")
    if value <= timedelta(0):
        raise ValueError(f"{name} must be above zero (None turns the rule off), got {value}")
    if value > _CENTURY:
        raise ValueError(f"{name} must be at most a century (36500 days), got {value}")
    return value


@dataclass(frozen=True)
class Retention:
    """The retention rules of a queue (``retention.*`` in the settings).

    Each age is a :class:`~datetime.timedelta`, or None to turn that rule off;
    ``enabled=False`` turns them all off. ``interval_seconds`` is how often a run
    is made (one across every process sharing the store); ``rate`` caps the tasks
    per second of each job (None: as fast as the runner goes).
    """

    archive_exhausted_after: timedelta | None = timedelta(days=30)
    purge_completed_after: timedelta | None = timedelta(days=7)
    purge_archived_after: timedelta | None = timedelta(days=90)
    interval_seconds: float = 3600.0
    rate: float | None = None
    enabled: bool = True

    def __post_init__(self) -> None:
        _age("archive_exhausted_after", self.archive_exhausted_after)
        _age("purge_completed_after", self.purge_completed_after)
        _age("purge_archived_after", self.purge_archived_after)
        interval = self.interval_seconds
        if isinstance(interval, bool) or not isinstance(interval, (int, float)):
            raise TypeError(f"interval_seconds must be a number, got {type(interval).__name__}")
        if not 0 < interval < math.inf:
            raise ValueError(f"interval_seconds must be > 0 and finite, got {interval}")
        rate = self.rate
        if rate is not None and (
            isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate < math.inf
        ):
            raise ValueError(f"rate must be a number of tasks per second above 0, got {rate!r}")
        if not isinstance(self.enabled, bool):
            raise TypeError(f"enabled must be a bool, got {type(self.enabled).__name__}")

    @classmethod
    def off(cls) -> Retention:
        """No retention at all: nothing ages out."""
        return cls(enabled=False)

    @classmethod
    def in_days(
        cls,
        *,
        archive_exhausted: float | None = 30,
        purge_completed: float | None = 7,
        purge_archived: float | None = 90,
        interval_seconds: float = 3600.0,
        rate: float | None = None,
        enabled: bool = True,
    ) -> Retention:
        """The rules with their ages in days; 0 or None turns a rule off."""

        def days(value: float | None) -> timedelta | None:
            return None if not value else value * _DAY

        return cls(
            archive_exhausted_after=days(archive_exhausted),
            purge_completed_after=days(purge_completed),
            purge_archived_after=days(purge_archived),
            interval_seconds=interval_seconds,
            rate=rate,
            enabled=enabled,
        )

    def rules(self) -> list[RetentionRule]:
        """The rules that are on (none when ``enabled`` is False)."""
        if not self.enabled:
            return []
        candidates = (
            (
                "archive_exhausted",
                JobKind.ARCHIVE,
                DeadLetterStatus.EXHAUSTED,
                self.archive_exhausted_after,
            ),
            (
                "purge_completed",
                JobKind.PURGE,
                DeadLetterStatus.COMPLETED,
                self.purge_completed_after,
            ),
            ("purge_archived", JobKind.PURGE, DeadLetterStatus.ARCHIVED, self.purge_archived_after),
        )
        return [
            RetentionRule(name, kind, status, after)
            for name, kind, status, after in candidates
            if after is not None
        ]


def retention_rule_of(job: Job) -> str | None:
    """The rule that made ``job`` (``purge_completed`` …), or None for any other job."""
    if job.created_by.startswith(CREATOR_PREFIX):
        return job.created_by[len(CREATOR_PREFIX) :] or None
    return None


class _NotDue(Exception):  # noqa: N818 - a signal: the run is not due (nothing written)
    def __init__(self, next_run_at: datetime) -> None:
        self.next_run_at = next_run_at


class RetentionScheduler:
    """Makes the retention runs of one queue when due (see the module docstring).

    A processor's :class:`~mahavishnu_dlq.jobs.runner.JobRunner` owns one and calls
    :meth:`run_due` before it looks for jobs.
    """

    def __init__(self, dlq: DeadLetterQueue) -> None:
        self.dlq = dlq
        #: when the stored schedule said the next run is due (None: ask the store)
        self._next_check: datetime | None = None
        self._failing = False  # warn once per outage, not at every poll

    async def run_due(self) -> list[Job]:
        """Make a retention run if one is due and this process wins it; the jobs it
        started. A store that cannot be reached is logged and tried again at the next
        call a minute later (warned once, not at every poll): retention never stops a
        processor."""
        policy: Retention = self.dlq.retention
        rules = policy.rules()
        now = self.dlq.clock.now()
        if not rules or (self._next_check is not None and now < self._next_check):
            return []
        try:
            started = await self._run(policy, rules, now)
        except Exception as exc:  # noqa: BLE001 - tried again a little later
            self._next_check = now + timedelta(seconds=min(_RETRY_SECONDS, policy.interval_seconds))
            _log.log(
                logging.DEBUG if self._failing else logging.WARNING,
                "dlq.retention check failed: %s: %s; tried again every %g s",
                type(exc).__name__,
                exc,
                min(_RETRY_SECONDS, policy.interval_seconds),
                extra={"action": "dlq.retention", "outcome": "failed"},
            )
            self._failing = True
            return []
        if self._failing:
            self._failing = False
            _log.info(
                "dlq.retention check works again",
                extra={"action": "dlq.retention", "outcome": "recovered"},
            )
        return started

    async def _run(self, policy: Retention, rules: list[RetentionRule], now: datetime) -> list[Job]:
        dlq = self.dlq
        controls = dlq.traced_store.controls
        interval = timedelta(seconds=policy.interval_seconds)
        run_id = uuid.uuid4().hex[:12]

        def take(current: dict[str, Any] | None) -> dict[str, Any]:
            record = dict(current or {})
            due = record.get("next_run_at")
            if isinstance(due, int) and from_micros(due) > now:
                raise _NotDue(from_micros(due))
            record.update(
                next_run_at=to_micros(now + interval),
                last_run_at=to_micros(now),
                last_run_by=dlq.worker_id,
                run=run_id,
            )
            return record

        try:
            taken = await controls.mutate(RETENTION_KEY, take)
        except _NotDue as not_due:
            self._next_check = not_due.next_run_at
            return []
        self._next_check = now + interval
        dlq.lifetime["retention_runs"] += 1
        earlier = taken.get("jobs")
        previous: dict[str, str] = dict(earlier) if isinstance(earlier, dict) else {}
        started: list[Job] = []
        kept: dict[str, str] = {}
        waiting: list[str] = []
        for rule in rules:
            job = await self._rule(rule, policy, now, previous.get(rule.name))
            if isinstance(job, str):  # the earlier job has not finished: the rule waits
                kept[rule.name] = job
                waiting.append(f"{rule.name} (waits for {job})")
            elif job is not None:
                kept[rule.name] = job.job_id
                started.append(job)
        if kept != previous:

            def note(current: dict[str, Any] | None) -> dict[str, Any]:
                return {**(current or {}), "jobs": kept}

            await controls.mutate(RETENTION_KEY, note)
        self._logged(run_id, rules, started, waiting)
        return started

    async def _rule(
        self, rule: RetentionRule, policy: Retention, now: datetime, previous: str | None
    ) -> Job | str | None:
        """Start ``rule``'s job: the job, the id of its unfinished earlier one, or None
        when nothing is old enough."""
        dlq = self.dlq
        if previous is not None:
            earlier = await dlq.traced_store.jobs.get(previous)
            if earlier is not None and not earlier.finished:
                return previous
        selection = rule.selection(now)
        if not await dlq.traced_store.count(selection):
            return None
        creator = f"{CREATOR_PREFIX}{rule.name}"
        if rule.kind is JobKind.PURGE:  # the purge's own age selection (older_than_seconds)
            return await dlq.start_job(
                rule.kind,
                TaskFilter(status=(rule.status,)),
                older_than=rule.after,
                rate=policy.rate,
                created_by=creator,
            )
        return await dlq.start_job(rule.kind, selection, rate=policy.rate, created_by=creator)

    def _logged(
        self, run_id: str, rules: list[RetentionRule], started: list[Job], waiting: list[str]
    ) -> None:
        names = [rule.name for rule in rules]
        jobs = {retention_rule_of(job) or "?": job.job_id for job in started}
        if not started and not waiting:
            _log.debug(
                "dlq.retention run %s by %s: nothing old enough (%s)",
                run_id,
                self.dlq.worker_id,
                ", ".join(names),
                extra={"action": "dlq.retention", "run": run_id, "rules": names, "jobs": {}},
            )
            return
        parts = [f"{rule} {job.job_id} ({job.matched} tasks)" for rule, job in _by_rule(started)]
        _log.info(
            "dlq.retention run %s by %s: %s",
            run_id,
            self.dlq.worker_id,
            "; ".join(parts + waiting),
            extra={
                "action": "dlq.retention",
                "run": run_id,
                "rules": names,
                "jobs": jobs,
                "waiting": waiting,
            },
        )


def _by_rule(jobs: list[Job]) -> list[tuple[str, Job]]:
    return [(retention_rule_of(job) or "?", job) for job in jobs]


def count_removed(dlq: DeadLetterQueue, job: Job, removed: int) -> None:
    """A retention job's page archived or deleted ``removed`` tasks: the lifetime counters."""
    if removed and retention_rule_of(job) is not None:
        key = "retention_archived" if job.kind is JobKind.ARCHIVE else "retention_purged"
        dlq.lifetime[key] += removed


def log_finished(job: Job) -> None:
    """The end of a retention job: what it removed (a job of any other origin: nothing)."""
    rule = retention_rule_of(job)
    if rule is None:
        return
    verb = "archived" if job.kind is JobKind.ARCHIVE else "purged"
    _log.info(
        "dlq.retention.finished %s: %s %s, %s %d of %d matched (%d skipped, %d failed)",
        job.job_id,
        rule,
        job.state.value,
        verb,
        job.done,
        job.matched,
        job.skipped,
        job.failed,
        extra={
            "action": "dlq.retention.finished",
            "job_id": job.job_id,
            "rule": rule,
            "state": job.state.value,
            verb: job.done,
            "skipped": job.skipped,
            "failed": job.failed,
        },
    )
