"""docs/cli.md: its generated reference is current and covers every command, and every
example command line in its hand-written part parses as the CLI would parse it."""

from __future__ import annotations

import importlib.util
import re
import shlex
import sys
from pathlib import Path
from types import ModuleType

import pytest
import typer
from typer import _click
from typer.core import TyperGroup

from mahavishnu_dlq.cli import build_app
from mahavishnu_dlq.cli.common import PROG

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "cli.md"
SCRIPT = ROOT / "scripts" / "cli_reference.py"
REGENERATE = "python scripts/cli_reference.py --write"


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("cli_reference", SCRIPT)
    if spec is None or spec.loader is None:  # pragma: no cover - the script ships with the repo
        raise RuntimeError(f"cannot load {SCRIPT}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


reference = _load_script()


def command_paths() -> list[tuple[str, ...]]:
    """Every command of the app below the root, found without the script's walker."""
    paths: list[tuple[str, ...]] = []

    def visit(command: _click.Command, path: tuple[str, ...]) -> None:
        if isinstance(command, TyperGroup):
            for name, sub in command.commands.items():
                if not sub.hidden:
                    paths.append((*path, name))
                    visit(sub, (*path, name))

    visit(typer.main.get_command(build_app()), ())
    return paths


# -- the generated reference ---------------------------------------------------------------


def test_generated_reference_is_current() -> None:
    problems: list[str] = reference.check(DOC)
    assert not problems, (
        f"docs/cli.md's command reference differs from the CLI's help: run `{REGENERATE}`\n"
        + "\n".join(problems)
    )


def test_every_command_has_a_section() -> None:
    block: str = reference.generated_block(DOC.read_text(encoding="utf-8"))
    headings = re.findall(r"^### (.+)$", block, flags=re.MULTILINE)
    expected = [" ".join((PROG, *path)) for path in [(), *command_paths()]]
    assert len(headings) == len(set(headings)), f"a section appears twice: {headings}"
    missing = sorted(set(expected) - set(headings))
    assert not missing, f"no section in docs/cli.md for {missing}: run `{REGENERATE}`"
    assert sorted(headings) == sorted(expected)


def test_the_walk_finds_every_command() -> None:
    found = {entry.path for entry in reference.walk()}
    leaves = {
        ("status",),
        ("list",),
        ("show",),
        ("retry",),
        ("replay",),
        ("archive",),
        ("purge",),
        ("clear",),
        ("processor", "run"),
        ("config", "show"),
        ("config", "validate"),
        ("demo",),
    }
    assert leaves <= found
    assert found == {(), *command_paths()}


def test_the_help_has_a_fixed_width(monkeypatch: pytest.MonkeyPatch) -> None:
    narrow = reference.render_reference()
    monkeypatch.setenv("COLUMNS", "200")
    assert reference.render_reference() == narrow
    longest = max(len(line) for line in narrow.split("```text")[1].splitlines())
    assert longest <= reference.HELP_WIDTH


_DOCUMENT = """# Title

Hand-written prose.

{begin}
{block}
{end}

Trailing prose.
"""


def _document(block: str) -> str:
    return _DOCUMENT.format(begin=reference.BEGIN, end=reference.END, block=block)


def test_check_names_the_difference_and_write_fixes_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stale = reference.render_reference().replace("Tasks per page (1-1000).", "Tasks on a page.")
    doc = tmp_path / "cli.md"
    doc.write_text(_document(stale), encoding="utf-8")

    assert reference.main(["--check", "--file", str(doc)]) == 1
    err = capsys.readouterr().err
    assert REGENERATE in err
    assert "help changed: mahavishnu-dlq list" in err
    assert "-  -n, --limit N                   Tasks on a page." in err

    assert reference.main(["--write", "--file", str(doc)]) == 0
    assert reference.main(["--check", "--file", str(doc)]) == 0
    text = doc.read_text(encoding="utf-8")
    assert text.startswith("# Title\n\nHand-written prose.\n\n")
    assert text.endswith(f"{reference.END}\n\nTrailing prose.\n")
    assert reference.generated_block(text) == reference.render_reference()
    before = text
    assert reference.main(["--write", "--file", str(doc)]) == 0  # nothing to change
    assert doc.read_text(encoding="utf-8") == before


def test_check_and_write_need_the_markers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = tmp_path / "cli.md"
    doc.write_text("# Title\n\nno markers here\n", encoding="utf-8")
    assert reference.main(["--check", "--file", str(doc)]) == 1
    assert reference.BEGIN in capsys.readouterr().err
    assert reference.main(["--write", "--file", str(doc)]) == 1
    assert doc.read_text(encoding="utf-8") == "# Title\n\nno markers here\n"
    doc.write_text(_document("x") + reference.END + "\n", encoding="utf-8")
    assert reference.main(["--check", "--file", str(doc)]) == 1
    assert "found 1 and 2" in capsys.readouterr().err


def test_without_options_the_block_goes_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    assert reference.main([]) == 0
    assert capsys.readouterr().out == reference.render_reference()


# -- the hand-written examples --------------------------------------------------------------

_FENCE = re.compile(r"^```(\S*)\s*$")
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_SHELL_OPERATORS = {"|", "||", "&&", ";", "&", "<", ">", ">>", "2>", "2>&1"}


def example_lines(markdown: str) -> list[str]:
    """Command lines of the hand-written part: in ```bash blocks every line (joined at a
    trailing backslash), in ```console blocks the lines after a ``$`` prompt, and inline
    code that starts with the command."""
    hand_written = markdown.partition(reference.BEGIN)[0]
    found: list[str] = []
    language: str | None = None  # None: outside a fenced block
    pending = ""
    for line in hand_written.splitlines():
        fence = _FENCE.match(line)
        if fence is not None:
            language = fence.group(1) if language is None else None
            continue
        if language is None:
            found += [span for span in re.findall(r"`([^`]+)`", line) if _starts_a_command(span)]
            continue
        if language == "console":
            if not line.startswith("$ "):
                continue
            line = line[2:]  # noqa: PLW2901 - the prompt is not part of the command
        elif language not in ("bash", "sh", "shell"):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        text, pending = pending + line, ""
        if _starts_a_command(text):
            found.append(text.strip())
    return found


def _argv(text: str) -> list[str] | None:
    """The CLI's arguments in a shell line (up to the first pipe or redirection), or None
    when the line runs something else."""
    words = shlex.split(text, comments=True)
    while words and _ASSIGNMENT.match(words[0]):
        words.pop(0)
    if words[:1] == [PROG]:
        words = words[1:]
    elif words[:3] == ["python", "-m", "mahavishnu_dlq"]:
        words = words[3:]
    else:
        return None
    for index, word in enumerate(words):
        if word in _SHELL_OPERATORS:
            return words[:index]
    return words


def _starts_a_command(text: str) -> bool:
    try:
        return _argv(text) is not None
    except ValueError:  # not shell syntax (unbalanced quotes): not a command line
        return False


def parse(argv: list[str]) -> tuple[str, ...]:
    """Parse ``argv`` exactly as the CLI does, running no command; the command path.

    Unknown commands and options, options after the wrong command, missing or extra
    arguments and values of the wrong type raise click's UsageError. A group given alone
    (it prints its help) and --help/--version (they exit) are fine.
    """
    command = typer.main.get_command(build_app())
    context: _click.Context | None = None
    name, args = PROG, argv
    path: tuple[str, ...] = ()
    while True:
        try:
            context = command.make_context(name, list(args), parent=context)
        except _click.exceptions.NoArgsIsHelpError:
            return path
        except typer.Exit:
            return path
        if not isinstance(command, TyperGroup):
            return path
        rest = [*context._protected_args, *context.args]
        if not rest:
            raise _click.exceptions.UsageError("Missing command.", context)
        found, sub, args = command.resolve_command(context, rest)
        assert found is not None
        assert sub is not None
        name, command, path = found, sub, (*path, found)


def test_example_extraction() -> None:
    markdown = """
Run `mahavishnu-dlq status --json` or `mahavishnu-dlq:` (an error), not `pip install x`.

```bash
export MAHAVISHNU_DLQ_STORE=opensearch
MAHAVISHNU_DLQ_APP=m:h mahavishnu-dlq processor run \\
  --drain  # comment
mahavishnu-dlq list --json | jq .
```

```console
$ mahavishnu-dlq show t-1
mahavishnu-dlq list: Invalid value
```

```text
mahavishnu-dlq purge --bogus
```
"""
    lines = example_lines(markdown)
    assert lines == [
        "mahavishnu-dlq status --json",
        "MAHAVISHNU_DLQ_APP=m:h mahavishnu-dlq processor run    --drain  # comment",
        "mahavishnu-dlq list --json | jq .",
        "mahavishnu-dlq show t-1",
    ]
    assert [_argv(line) for line in lines] == [
        ["status", "--json"],
        ["processor", "run", "--drain"],
        ["list", "--json"],
        ["show", "t-1"],
    ]


@pytest.mark.parametrize(
    ("argv", "path"),
    [
        (["--config", "x.yaml", "list", "-s", "exhausted", "--since", "24h"], ("list",)),
        (["-A", "m:a", "processor", "run", "--drain"], ("processor", "run")),
        (["config"], ("config",)),
        (["purge", "--help"], ("purge",)),
        (["--version"], ()),
    ],
)
def test_parse_accepts(argv: list[str], path: tuple[str, ...]) -> None:
    assert parse(argv) == path


@pytest.mark.parametrize(
    "argv",
    [
        ["lst"],  # no such command
        ["list", "--config", "x.yaml"],  # a global option after the command
        ["status", "--bogus"],
        ["show"],  # missing TASK_ID
        ["show", "a", "b"],  # an extra argument
        ["list", "--limit", "many"],
        ["processor", "bogus"],
        ["-v"],  # no command
    ],
)
def test_parse_rejects(argv: list[str]) -> None:
    with pytest.raises(_click.exceptions.UsageError):
        parse(argv)


def test_examples_use_only_commands_and_options_that_exist() -> None:
    lines = example_lines(DOC.read_text(encoding="utf-8"))
    assert len(lines) >= 20, lines
    problems: list[str] = []
    used: set[tuple[str, ...]] = set()
    for line in lines:
        argv = _argv(line)
        assert argv is not None
        try:
            used.add(parse(argv))
        except _click.exceptions.UsageError as exc:
            problems.append(f"{line!r}: {exc.format_message()}")
    assert not problems, "docs/cli.md has examples the CLI rejects:\n" + "\n".join(problems)
    paths = command_paths()
    leaves = {p for p in paths if not any(q[: len(p)] == p and q != p for q in paths)}
    assert leaves <= used, f"commands without an example in docs/cli.md: {sorted(leaves - used)}"
