"""Shell completion: ``--show-completion`` prints the script a shell sources, and the
completion itself offers commands, options and the values a choice takes (``replay
--status`` only the replayable statuses)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from mahavishnu_dlq.cli import build_app
from mahavishnu_dlq.cli.common import PROG
from mahavishnu_dlq.cli.options import completer
from tests.unit.cli.conftest import Cli

COMPLETE_VAR = "_MAHAVISHNU_DLQ_COMPLETE"


def complete(words: str) -> list[str]:
    """What bash completion offers for the last word of ``words`` (``""``: a new word)."""
    parts = words.split(" ")
    env = {COMPLETE_VAR: "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(len(parts) - 1)}
    result = CliRunner().invoke(build_app(), [], env=env, prog_name=PROG)
    assert result.exit_code == 0, result.output
    return result.output.split()


def test_help_names_the_completion_options(cli: Cli) -> None:
    out = cli("--help").out
    assert "--install-completion" in out
    assert "--show-completion" in out


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_show_completion_prints_the_script_of_a_shell(
    shell: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION", "1")  # name the shell
    result = CliRunner().invoke(build_app(), ["--show-completion", shell], prog_name=PROG)
    assert result.exit_code == 0, result.output
    assert f"complete_{shell}" in result.output
    assert COMPLETE_VAR in result.output


def test_install_completion_writes_the_script_for_the_shell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION", "1")
    monkeypatch.setenv("HOME", str(tmp_path))
    result = CliRunner().invoke(build_app(), ["--install-completion", "bash"], prog_name=PROG)
    assert result.exit_code == 0, result.output
    assert "bash completion installed" in result.output
    script = tmp_path / ".bash_completions" / f"{PROG}.sh"
    assert f"{COMPLETE_VAR}=complete_bash" in script.read_text()
    assert str(script) in (tmp_path / ".bashrc").read_text()


def test_commands_and_options_complete() -> None:
    assert complete(f"{PROG} li") == ["list"]
    assert "breaker" in complete(f"{PROG} ")
    assert "--cursor" in complete(f"{PROG} list --")


def test_replay_status_offers_only_the_replayable_statuses() -> None:
    assert complete(f"{PROG} replay --status ") == ["pending", "retrying", "exhausted"]
    assert complete(f"{PROG} list --status ") == [
        "pending",
        "retrying",
        "exhausted",
        "completed",
        "archived",
    ]
    assert complete(f"{PROG} list --category net") == ["network"]


def test_a_comma_separated_choice_completes_its_last_part() -> None:
    statuses = completer(["pending", "retrying", "exhausted"])
    assert statuses("pending,ex") == ["pending,exhausted"]
    assert statuses("PEN") == ["pending"]
    assert statuses("done") == []
