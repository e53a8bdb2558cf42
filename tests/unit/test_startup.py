"""Start-up stays light: what ``import mahavishnu_dlq`` and ``mahavishnu-dlq --help`` import.

Each case runs a fresh interpreter and reads ``sys.modules`` at the end, so the
guard holds without timing anything (``benchmarks/bench_startup.py`` measures the
milliseconds). The public names stay the same: every name of ``__all__`` is the
object its module defines, whether imported by name or by attribute.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

import mahavishnu_dlq

#: Modules that only some runs need: the stores' clients, the web console, settings
#: files, the queue itself.
HEAVY = (
    "fastapi",
    "opensearchpy",
    "pydantic_settings",
    "starlette",
    "uvicorn",
    "yaml",
    "mahavishnu_dlq.demo",
    "mahavishnu_dlq.doctor",
    "mahavishnu_dlq.processor",
    "mahavishnu_dlq.queue",
    "mahavishnu_dlq.settings",
    "mahavishnu_dlq.storage",
    "mahavishnu_dlq.web",
)


def imported_by(code: str) -> list[str]:
    """The modules a fresh interpreter holds after running ``code``."""
    script = f"{code}\nimport json, sys\nsys.stderr.write(json.dumps(sorted(sys.modules)))\n"
    result = subprocess.run(  # noqa: S603 - runs this interpreter on a literal script
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    modules: list[str] = json.loads(result.stderr.splitlines()[-1])
    return modules


def heavy(modules: list[str], prefixes: tuple[str, ...] = HEAVY) -> list[str]:
    return [m for m in modules if any(m == p or m.startswith(p + ".") for p in prefixes)]


def test_importing_the_package_imports_none_of_its_parts() -> None:
    modules = imported_by("import mahavishnu_dlq")
    assert [m for m in modules if m.startswith("mahavishnu_dlq.")] == []
    assert heavy(modules, (*HEAVY, "anyio", "opentelemetry", "pydantic", "rich", "typer")) == []


def test_one_public_name_imports_only_what_it_needs() -> None:
    modules = imported_by("from mahavishnu_dlq import DLQError, ErrorCategory")
    assert "mahavishnu_dlq.errors" in modules
    assert "mahavishnu_dlq.models" in modules
    assert heavy(modules) == []


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["list", "--help"], ["serve", "--help"], ["processor", "run", "--help"]],
    ids=" ".join,
)
def test_help_opens_no_queue_store_or_web_console(argv: list[str]) -> None:
    code = (
        "import contextlib, io\n"
        "from mahavishnu_dlq.cli.app import run_cli\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        f"    status = run_cli({argv!r})\n"
        "assert status == 0 and 'Usage' in out.getvalue(), (status, out.getvalue())\n"
    )
    # nor the data models: the options take the pydantic-free enums of states.py (a
    # command's own help imports pydantic all the same: typer's parameter adapters do)
    models: tuple[str, ...] = ("mahavishnu_dlq.models", "mahavishnu_dlq.jobs")
    models += ("pydantic",) if argv == ["--help"] else ()
    assert heavy(imported_by(code), (*HEAVY, *models)) == []


def test_the_enums_are_the_models_own() -> None:
    from mahavishnu_dlq import jobs, models, states  # noqa: PLC0415 - the point of the test

    for name in ("DeadLetterStatus", "ErrorCategory", "RetryPolicy", "AttemptOutcome"):
        assert getattr(models, name) is getattr(states, name)
    assert jobs.JobKind is states.JobKind
    assert jobs.JobState is states.JobState


def test_every_public_name_is_its_modules_object() -> None:
    names = [name for name in mahavishnu_dlq.__all__ if name != "__version__"]
    assert names == sorted(names)
    for name in names:
        value = getattr(mahavishnu_dlq, name)
        module = importlib.import_module(value.__module__)
        assert getattr(module, name) is value, name
    namespace: dict[str, object] = {}
    exec("from mahavishnu_dlq import *", namespace)  # noqa: S102 - a literal import
    assert set(mahavishnu_dlq.__all__) <= set(namespace)
    assert set(mahavishnu_dlq.__all__) <= set(dir(mahavishnu_dlq))


def test_the_public_names_by_module() -> None:
    from mahavishnu_dlq import errors, models, queue, settings, storage  # noqa: PLC0415

    assert mahavishnu_dlq.DeadLetterQueue is queue.DeadLetterQueue
    assert mahavishnu_dlq.DLQSettings is settings.DLQSettings
    assert mahavishnu_dlq.FailedTask is models.FailedTask
    assert mahavishnu_dlq.DLQError is errors.DLQError
    assert mahavishnu_dlq.OpenSearchStore is storage.OpenSearchStore
    assert mahavishnu_dlq.Store is storage.Store


def test_submodules_and_unknown_names_after_a_bare_import() -> None:
    code = (
        "import mahavishnu_dlq\n"
        "assert mahavishnu_dlq.lifecycle.__name__ == 'mahavishnu_dlq.lifecycle'\n"
        "for name in ('no_such_name', '__no_such_dunder__'):\n"
        "    assert not hasattr(mahavishnu_dlq, name), name\n"
    )
    assert "mahavishnu_dlq.lifecycle" in imported_by(code)
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = mahavishnu_dlq.no_such_name
