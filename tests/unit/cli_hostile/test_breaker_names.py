r"""Circuit breakers with hostile names, reasons and operators (stored through the
library, which takes any string), and hostile workflow names given to ``breaker
open|close``: what is stored is shown written out (``\x1b[2J``), never raw, and
``--json`` stays exact; a name the command refuses is one clean line, exit status 2
(see ``test_escaping`` for how these tests run)."""

from __future__ import annotations

import os
from functools import partial

import anyio
import pytest

from mahavishnu_dlq.queue import DeadLetterQueue
from tests.unit.cli_hostile.conftest import (
    APP,
    CLEAR,
    CLIPBOARD,
    CSI,
    HOSTILE,
    RLO,
    SHOWN,
    TITLE,
    Cli,
    assert_clean,
    assert_shown,
)

WORKFLOW = f"wf{TITLE}{RLO}"
WORKFLOW_SHOWN = r"wf\x1b]0;pwned\x07\u202e"
OPERATOR = f"op{CLEAR}\n@host"
OPERATOR_SHOWN = r"op\x1b[2J\n@host"
SURROGATE = os.fsdecode(b"wf-\xff")  # as argv gives undecodable bytes


@pytest.fixture
def hostile_breakers(dlq: DeadLetterQueue) -> DeadLetterQueue:
    """``WORKFLOW`` forced open by ``OPERATOR`` for the reason ``HOSTILE``, and a closed
    breaker whose name holds a lone surrogate."""
    anyio.run(partial(dlq.open_breaker, WORKFLOW, by=OPERATOR, reason=HOSTILE))
    anyio.run(partial(dlq.close_breaker, "wf-\udcff", by=f"x{CSI}"))
    return dlq


def test_list_writes_names_reasons_and_operators_out(
    cli: Cli, hostile_breakers: DeadLetterQueue
) -> None:
    ran = cli(*APP, "breaker", "list")
    assert ran.code == 0, ran.err
    assert_shown(ran, WORKFLOW_SHOWN, r"wf-\udcff", r"x\x9b31m")
    flat = "".join(ran.out.split())  # the by/reason cell may wrap
    assert "".join(f"{OPERATOR_SHOWN}: {SHOWN}".split()) in flat


def test_list_json_is_exact(cli: Cli, hostile_breakers: DeadLetterQueue) -> None:
    ran = cli(*APP, "breaker", "list", "--json")
    assert ran.code == 0, ran.err
    assert_clean(ran.out)
    rows = {row["workflow"]: row for row in ran.json()["breakers"]}
    assert set(rows) == {WORKFLOW, "wf-\udcff"}
    assert (rows[WORKFLOW]["by"], rows[WORKFLOW]["reason"]) == (OPERATOR, HOSTILE)


def test_status_writes_them_out(cli: Cli, hostile_breakers: DeadLetterQueue) -> None:
    ran = cli(*APP, "status")
    assert ran.code == 0, ran.err
    assert_shown(ran, WORKFLOW_SHOWN, OPERATOR_SHOWN, "and 1 closed")
    assert SHOWN not in ran.out  # status leaves the reason out
    data = cli(*APP, "status", "--json")
    assert_clean(data.out)
    assert data.json()["breakers"][WORKFLOW]["by"] == OPERATOR


def test_open_and_close_lines_write_the_former_operator_out(cli: Cli, dlq: DeadLetterQueue) -> None:
    anyio.run(partial(dlq.open_breaker, "billing", by=OPERATOR, reason=CLIPBOARD))
    ran = cli(*APP, "breaker", "close", "billing")
    assert ran.code == 0, ran.err
    assert_shown(ran, f"(was open until closed, by {OPERATOR_SHOWN})")
    assert len(ran.out.splitlines()) == 1


def test_printable_names_in_any_script_pass_as_they_are(cli: Cli, dlq: DeadLetterQueue) -> None:
    name = r"東京 ✓ C:\temp 'a'"
    ran = cli(*APP, "breaker", "open", name)
    assert ran.code == 0, ran.err
    assert repr(name) in ran.out
    assert name in cli(*APP, "breaker", "list").out
    assert [b.workflow for b in anyio.run(dlq.list_breakers)] == [name]


@pytest.mark.parametrize(
    ("workflow", "shown"),
    [
        (f"wf{CLEAR}", r"'wf\x1b[2J'"),
        (f"wf{TITLE}", r"'wf\x1b]0;pwned\x07'"),
        (f"wf{CSI}", r"'wf\x9b31m'"),
        (f"wf{RLO}", r"'wf\u202e'"),
        ("wf\u2028", r"'wf\u2028'"),
        (SURROGATE, r"'wf-\udcff'"),
        ("\x00", r"'\x00'"),
    ],
)
def test_a_hostile_name_is_refused_in_one_clean_line(
    cli: Cli, dlq: DeadLetterQueue, workflow: str, shown: str
) -> None:
    for command in ("open", "close"):
        ran = cli(*APP, "breaker", command, workflow, "--json")
        assert ran.code == 2, ran.err
        line = ran.one_error_line()  # clean, no traceback
        assert f"{shown} is not a workflow name here" in line, line
        assert ran.out == ""
    assert anyio.run(dlq.list_breakers) == []


def test_a_hostile_reason_is_stored_as_given_and_shown_written_out(
    cli: Cli, dlq: DeadLetterQueue
) -> None:
    ran = cli(*APP, "breaker", "open", "billing", "--reason", HOSTILE)
    assert ran.code == 0, ran.err
    assert_clean(ran.out)
    assert [b.reason for b in anyio.run(dlq.list_breakers)] == [HOSTILE]
    listed = cli(*APP, "breaker", "list")
    assert_clean(listed.out)
    assert r"\x1b[2J" in listed.out
    reason = cli(*APP, "breaker", "open", "billing", "--reason", SURROGATE)
    assert reason.code == 2
    assert "--reason" in reason.one_error_line()
