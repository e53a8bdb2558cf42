"""Circuit breakers from the command line: ``breaker list|open|close``, what ``status``
shows of them, and what a processor run makes of an opened one.

The CLI runs in-process on the memory queue of ``--app`` (see ``test_cli_commands``),
whose clock is the test's fake one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from functools import partial

import anyio
import pytest

from mahavishnu_dlq.downstream import Breaker, BreakerBook, BreakerPolicy, BreakerState
from mahavishnu_dlq.downstream.shared import breaker_key
from mahavishnu_dlq.jobs.control import creator
from mahavishnu_dlq.models import DeadLetterStatus
from mahavishnu_dlq.queue import DeadLetterQueue
from mahavishnu_dlq.testing import FakeClock
from tests.unit.cli.conftest import APP, Cli, enqueue, flaky, record

BY = creator()  # user@host of this process: who opens and closes from here
BREAKER_KEYS = {
    "workflow",
    "state",
    "since",
    "open_until",
    "failure_ratio",
    "trips",
    "by",
    "reason",
    "enabled",
}
#: What ``get_statistics()["breakers"]`` holds per workflow.
STATS_BREAKER_KEYS = {
    "state",
    "since",
    "open_until",
    "failure_ratio",
    "trips",
    "by",
    "enabled",
    "paused_until",
    "rate_per_second",
}


def stored(dlq: DeadLetterQueue) -> dict[str, Breaker]:
    return {breaker.workflow: breaker for breaker in anyio.run(dlq.list_breakers)}


def trip(dlq: DeadLetterQueue, workflow: str) -> Breaker:
    """Store ``workflow``'s breaker as ten sick outcomes trip it (open for 30 s)."""
    now = dlq.clock.now()
    policy = dlq.downstream.policy(workflow)
    tripped, moved = Breaker(workflow).observe(now, 0, 10, policy)
    assert moved is BreakerState.OPEN
    anyio.run(
        dlq.store.controls.mutate, breaker_key(workflow), lambda _current: tripped.to_record()
    )
    return tripped


# -- breaker list -------------------------------------------------------------------------------


def test_list_without_breakers(cli: Cli, dlq: DeadLetterQueue) -> None:
    ran = cli(*APP, "breaker", "list")
    assert ran.code == 0, ran.err
    assert ran.out == "no circuit breakers stored: every workflow's is closed\n"
    ran = cli(*APP, "breaker", "list", "--json")
    assert ran.code == 0, ran.err
    assert ran.json() == {"breakers": [], "count": 0}


def test_list_shows_every_breaker(cli: Cli, dlq: DeadLetterQueue, clock: FakeClock) -> None:
    trip(dlq, "bad")
    clock.advance(5)
    anyio.run(partial(dlq.open_breaker, "ok", by="alice@ops", reason="deploy of ok-api"))
    anyio.run(partial(dlq.close_breaker, "imports"))
    clock.advance(5)
    ran = cli(*APP, "breaker", "list")
    assert ran.code == 0, ran.err
    lines = {line.split()[0]: line for line in ran.out.splitlines()[3:] if line.strip()}
    assert "since (UTC)" in ran.out
    assert "by: reason" in ran.out
    bad = lines["bad"].split()
    assert bad[1:5] == ["open", "01-01", "00:00:00", "in"]  # in 20.0 s
    assert "20.0 s" in lines["bad"]
    assert bad[-3:] == ["100%", "1", "-"]  # sick outcomes only, one trip, by nobody
    assert "until closed" in lines["ok"]
    assert "01-01 00:00:05" in lines["ok"]
    assert lines["ok"].rstrip().endswith("alice@ops: deploy of ok-api")
    assert lines["imports"].split()[1] == "closed"
    assert lines["imports"].rstrip().endswith(BY)
    assert ran.out.endswith("3 breaker(s)\n")

    data = cli(*APP, "breaker", "list", "--json").json()
    assert data["count"] == 3
    rows = {row["workflow"]: row for row in data["breakers"]}
    assert all(set(row) == BREAKER_KEYS for row in rows.values())
    assert rows["bad"] | {"since": None} == {
        "workflow": "bad",
        "state": "open",
        "since": None,
        "open_until": "2026-01-01T00:00:30Z",
        "failure_ratio": 1.0,
        "trips": 1,
        "by": None,
        "reason": None,
        "enabled": True,
    }
    assert rows["bad"]["since"] == "2026-01-01T00:00:00Z"
    assert rows["ok"]["open_until"] is None  # until closed
    assert (rows["ok"]["by"], rows["ok"]["reason"]) == ("alice@ops", "deploy of ok-api")


def test_a_due_and_a_half_open_breaker(cli: Cli, dlq: DeadLetterQueue, clock: FakeClock) -> None:
    tripped = trip(dlq, "bad")
    clock.advance(31)
    listed = cli(*APP, "breaker", "list").out
    assert " due " in listed  # half-open at the next claim
    half = tripped.half_open(clock.now())
    anyio.run(dlq.store.controls.mutate, breaker_key("bad"), lambda _current: half.to_record())
    listed = cli(*APP, "breaker", "list").out
    assert "half-open" in listed
    assert cli(*APP, "breaker", "list", "--json").json()["breakers"][0]["state"] == "half_open"


def test_a_narrow_terminal_leaves_since_out(
    cli: Cli, dlq: DeadLetterQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    anyio.run(dlq.open_breaker, "ok")
    monkeypatch.setenv("COLUMNS", "80")
    ran = cli(*APP, "breaker", "list")
    assert ran.code == 0, ran.err
    assert "since" not in ran.out
    assert "until closed" in ran.out
    assert max(len(line) for line in ran.out.splitlines()) <= 80


def test_a_workflow_whose_breakers_are_off(cli: Cli, dlq: DeadLetterQueue) -> None:
    trip(dlq, "bad")
    dlq.breakers = BreakerBook(by_workflow={"bad": BreakerPolicy(enabled=False)})
    ran = cli(*APP, "breaker", "list")
    assert "open (breakers off)" in ran.out  # the processors ignore it
    assert cli(*APP, "breaker", "list", "--json").json()["breakers"][0]["enabled"] is False
    anyio.run(dlq.open_breaker, "bad")
    assert "breakers off" not in cli(*APP, "breaker", "list").out  # forced: it holds


# -- breaker open / close ---------------------------------------------------------------------


def test_open_says_what_changed_and_who_did_it(cli: Cli, dlq: DeadLetterQueue) -> None:
    ran = cli(*APP, "breaker", "open", "ok", "--reason", "ok-api is down")
    assert ran.code == 0, ran.err
    assert ran.out == (
        f"opened the circuit breaker of workflow 'ok' (was closed) by {BY}: no processor "
        "claims its tasks until mahavishnu-dlq breaker close ok\n"
    )
    assert ran.err == ""  # the line says it; the library's log record is shown with -v
    breaker = stored(dlq)["ok"]
    assert (breaker.state, breaker.open_until, breaker.by) == (BreakerState.OPEN, None, BY)
    assert breaker.reason == "ok-api is down"

    again = cli(*APP, "breaker", "open", "ok")
    assert again.code == 0, again.err
    assert f"(was open until closed, by {BY}) by {BY}" in again.out
    assert stored(dlq)["ok"].reason is None


def test_open_of_a_tripped_breaker_holds_it(cli: Cli, dlq: DeadLetterQueue) -> None:
    trip(dlq, "bad")
    ran = cli(*APP, "breaker", "open", "bad")
    assert "(was open after 1 trip(s), half-open in 30.0 s)" in ran.out
    assert stored(dlq)["bad"].open_until is None


def test_close_says_what_changed(cli: Cli, dlq: DeadLetterQueue) -> None:
    trip(dlq, "bad")
    ran = cli(*APP, "breaker", "close", "bad", "-r", "fixed")
    assert ran.code == 0, ran.err
    assert ran.out == (
        f"closed the circuit breaker of workflow 'bad' (was open after 1 trip(s), half-open "
        f"in 30.0 s) by {BY}: processors claim its tasks again\n"
    )
    breaker = stored(dlq)["bad"]
    assert (breaker.state, breaker.trips, breaker.window) == (BreakerState.CLOSED, 0, ())
    assert (breaker.by, breaker.reason) == (BY, "fixed")

    again = cli(*APP, "breaker", "close", "bad")
    assert again.out == (
        f"the circuit breaker of workflow 'bad' was closed already; closed again by {BY}\n"
    )
    never = cli(*APP, "breaker", "close", "imports")
    assert never.code == 0, never.err
    assert "'imports' was closed already" in never.out


def test_open_and_close_json(cli: Cli, dlq: DeadLetterQueue, clock: FakeClock) -> None:
    ran = cli(*APP, "breaker", "open", "ok", "--json", "--reason", "maintenance")
    assert ran.code == 0, ran.err
    assert ran.json() == {
        "workflow": "ok",
        "state": "open",
        "since": "2026-01-01T00:00:00Z",
        "open_until": None,
        "failure_ratio": 0.0,
        "trips": 0,
        "by": BY,
        "reason": "maintenance",
        "enabled": True,
        "was": "closed",
    }
    clock.advance(60)
    ran = cli(*APP, "breaker", "close", "ok", "--json")
    assert ran.code == 0, ran.err
    data = ran.json()
    assert set(data) == BREAKER_KEYS | {"was"}
    assert (data["state"], data["was"], data["by"], data["reason"]) == ("closed", "open", BY, None)
    assert data["since"] == "2026-01-01T00:01:00Z"


def test_the_hint_quotes_the_name_for_a_shell(cli: Cli, dlq: DeadLetterQueue) -> None:
    ran = cli(*APP, "breaker", "open", "sync orders")
    assert ran.out.endswith("until mahavishnu-dlq breaker close 'sync orders'\n")
    ran = cli(*APP, "breaker", "open", "--", "-x")  # a name like an option, after --
    assert ran.code == 0, ran.err
    assert ran.out.endswith("until mahavishnu-dlq breaker close -- -x\n")
    assert set(stored(dlq)) == {"sync orders", "-x"}
    assert cli(*APP, "breaker", "close", "--", "-x").code == 0


@pytest.fixture
def breaker_log() -> Iterator[list[logging.LogRecord]]:
    """The library's records, caught on its own logger (the CLI replaces the root's
    handlers, caplog's included)."""
    caught: list[logging.LogRecord] = []

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            caught.append(record)

    logger = logging.getLogger("mahavishnu_dlq")
    handler = Catch(logging.DEBUG)
    # earlier tests may have left the library's logger quieter, or disabled by a
    # logging.config call: this test is about the record, so it is let through
    level, disabled = logger.level, logger.disabled
    logger.setLevel(logging.DEBUG)
    logger.disabled = False
    logger.addHandler(handler)
    try:
        yield caught
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.disabled = disabled


def test_the_change_is_logged_with_who_did_it(
    cli: Cli, dlq: DeadLetterQueue, breaker_log: list[logging.LogRecord]
) -> None:
    assert cli(*APP, "breaker", "open", "ok").err == ""  # kept off the terminal only
    opened = [r for r in breaker_log if getattr(r, "action", None) == "dlq.breaker.open"]
    assert len(opened) == 1
    assert (opened[0].levelno, opened[0].getMessage()) == (
        logging.WARNING,
        f"dlq.breaker.open ok by {BY}",
    )
    assert (opened[0].__dict__["by"], opened[0].__dict__["workflow"]) == (BY, "ok")

    ran = cli("-v", *APP, "breaker", "close", "ok")
    assert ran.code == 0, ran.err
    assert f"dlq.breaker.close ok by {BY}" in ran.err  # -v shows the record
    closed = [r for r in breaker_log if getattr(r, "action", None) == "dlq.breaker.close"]
    assert [r.__dict__["by"] for r in closed] == [BY]
    ran = cli("-v", *APP, "breaker", "open", "ok")
    assert f"dlq.breaker.open ok by {BY}" in ran.err


def test_the_default_sqlite_store_keeps_them_between_commands(cli: Cli) -> None:
    # no --app: each command opens the SQLite file of the settings, as processes do
    ran = cli("breaker", "open", "ok", "--reason", "maintenance")
    assert ran.code == 0, ran.err
    assert "(was closed)" in ran.out
    listed = cli("breaker", "list", "--json").json()["breakers"]
    assert [(b["workflow"], b["state"], b["by"], b["reason"]) for b in listed] == [
        ("ok", "open", BY, "maintenance")
    ]
    status = cli("status", "--json").json()
    assert status["backend"] == "sqlite"
    assert status["breakers"]["ok"]["state"] == "open"
    ran = cli("breaker", "close", "ok")
    assert ran.code == 0, ran.err
    assert f"(was open until closed, by {BY})" in ran.out
    assert cli("breaker", "list", "--json").json()["breakers"][0]["state"] == "closed"


# -- what a processor makes of it ---------------------------------------------------------------


def test_an_open_breaker_stops_the_processor_and_closing_it_lets_it_go(
    cli: Cli, dlq: DeadLetterQueue
) -> None:
    enqueue(dlq, "ok-1", retry_policy="immediate")
    enqueue(dlq, "ok-2", retry_policy="immediate")
    enqueue(dlq, "bad-1", workflow="bad", retry_policy="immediate", max_retries=5)
    assert cli(*APP, "breaker", "open", "ok").code == 0
    ran = cli(*APP, "processor", "run", "--drain", "--json")
    assert ran.code == 0, ran.err
    assert ran.json()["attempts"] == 1  # bad-1 only
    assert flaky("ok").calls == []
    for task_id in ("ok-1", "ok-2"):
        task = record(dlq, task_id)
        assert (task.status, task.retry_count) == (DeadLetterStatus.PENDING, 0)  # untouched
    assert record(dlq, "bad-1").retry_count == 1

    assert cli(*APP, "breaker", "close", "ok").code == 0
    ran = cli(*APP, "processor", "run", "--drain", "--json")
    assert ran.code == 0, ran.err
    assert ran.json()["retry_success"] == 2
    assert len(flaky("ok").calls) == 2
    assert record(dlq, "ok-1").status is record(dlq, "ok-2").status is DeadLetterStatus.COMPLETED


def test_sick_failures_trip_a_breaker_that_status_shows(
    cli: Cli, dlq: DeadLetterQueue, clock: FakeClock
) -> None:
    for n in range(10):
        enqueue(dlq, f"bad-{n}", workflow="bad", retry_policy="immediate", max_retries=5)
    ran = cli(*APP, "processor", "run", "--drain", "--json")
    assert ran.code == 0, ran.err
    assert ran.json()["retry_failed"] == 10  # connection resets: sick
    clock.advance(10)
    ran = cli(*APP, "status")
    assert ran.code == 0, ran.err
    assert "circuit breakers (not closed)" in ran.out
    line = next(line for line in ran.out.splitlines() if line.split()[:2] == ["bad", "open"])
    assert line.split()[2:] == ["01-01", "00:00:00", "in", "20.0", "s", "100%", "1", "-"]
    stats = cli(*APP, "status", "--json").json()["breakers"]
    assert set(stats) == {"bad"}
    assert set(stats["bad"]) == STATS_BREAKER_KEYS
    assert (stats["bad"]["state"], stats["bad"]["trips"], stats["bad"]["by"]) == ("open", 1, None)
    assert stats["bad"]["failure_ratio"] == 1.0


# -- status -------------------------------------------------------------------------------------


def test_status_without_breakers_shows_none(cli: Cli, dlq: DeadLetterQueue) -> None:
    ran = cli(*APP, "status")
    assert ran.code == 0, ran.err
    assert "circuit breaker" not in ran.out
    assert cli(*APP, "status", "--json").json()["breakers"] == {}


def test_status_shows_the_breakers_not_closed(cli: Cli, dlq: DeadLetterQueue) -> None:
    anyio.run(partial(dlq.open_breaker, "ok", reason="not shown in status"))
    anyio.run(dlq.close_breaker, "imports")
    ran = cli(*APP, "status")
    assert ran.code == 0, ran.err
    assert "circuit breakers (not closed)" in ran.out
    row = next(line for line in ran.out.splitlines() if line.split()[:2] == ["ok", "open"])
    assert "until closed" in row
    assert row.rstrip().endswith(BY)
    assert "not shown in status" not in ran.out
    assert "and 1 closed (breaker list shows every one)" in ran.out
    assert "imports" not in ran.out

    breakers = cli(*APP, "status", "--json").json()["breakers"]
    assert set(breakers) == {"ok", "imports"}
    assert breakers["ok"] | {"since": None} == {
        "state": "open",
        "since": None,
        "open_until": None,
        "failure_ratio": 0.0,
        "trips": 0,
        "by": BY,
        "enabled": True,
        "paused_until": None,
        "rate_per_second": None,
    }
    assert breakers["imports"]["state"] == "closed"


def test_status_with_every_breaker_closed(cli: Cli, dlq: DeadLetterQueue) -> None:
    anyio.run(dlq.close_breaker, "ok")
    ran = cli(*APP, "status")
    assert "circuit breakers: 1 stored, all closed" in ran.out
    assert "not closed" not in ran.out


# -- bad names -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("workflow", "expected"),
    [
        ("", "WORKFLOW: a workflow name is 1-512 characters; this one is empty"),
        ("w" * 513, "this one is 513 characters long"),
        ("a\tb", r"'a\tb' is not a workflow name here"),
        ("ok\n", r"'ok\n' is not a workflow name here"),
    ],
)
def test_a_bad_workflow_name_is_one_line_and_exit_2(
    cli: Cli, dlq: DeadLetterQueue, workflow: str, expected: str
) -> None:
    for command in ("open", "close"):
        ran = cli(*APP, "breaker", command, workflow)
        assert ran.code == 2, ran.err
        assert expected in ran.one_error_line()
        assert ran.out == ""
    assert stored(dlq) == {}


def test_the_longest_name_is_taken(cli: Cli, dlq: DeadLetterQueue) -> None:
    assert cli(*APP, "breaker", "open", "w" * 512).code == 0
    assert set(stored(dlq)) == {"w" * 512}


def test_a_long_reason_is_one_line_and_exit_2(cli: Cli, dlq: DeadLetterQueue) -> None:
    ran = cli(*APP, "breaker", "open", "ok", "--reason", "r" * 1025)
    assert ran.code == 2
    assert "--reason" in ran.one_error_line()
    assert stored(dlq) == {}


def test_breaker_alone_prints_its_help(cli: Cli) -> None:
    ran = cli("breaker")
    assert ran.code == 2
    for command in ("list", "open", "close"):
        assert command in ran.out
