"""The package as a user gets it: ``python -m build`` makes an sdist and a wheel (the wheel
built from the sdist, so the sdist is complete enough to build), the wheel installs into a
fresh virtual environment (not editable, nothing from this checkout on its path), and the
demo and the CLI run from there.

The build runs without isolation (``build`` and ``hatchling`` are in the dev group), and
the fresh environment gets its dependencies from pip's index and cache, so the module
takes a few seconds. Everything it makes is under pytest's temporary directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from email.parser import HeaderParser
from pathlib import Path

import pytest

import mahavishnu_dlq

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "mahavishnu_dlq"
VERSION = mahavishnu_dlq.__version__
NAME = f"mahavishnu_dlq-{VERSION}"
#: What the sdist must hold besides the package: the files a redistributor needs.
SDIST_EXTRAS = ("LICENSE", "CHANGELOG.md", "README.md", "pyproject.toml", "PKG-INFO")


@dataclass(frozen=True)
class Built:
    wheel: Path
    sdist: Path


@dataclass(frozen=True)
class Venv:
    root: Path
    work: Path  # the working directory (and state home) of the commands run in it

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    @property
    def script(self) -> Path:
        return self.root / "bin" / "mahavishnu-dlq"


def _run(
    args: list[str], *, cwd: Path, env: Mapping[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(  # noqa: S603 - fixed arguments: our interpreter, our files
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{args} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


def _clean_environment(work: Path, **extra: str) -> dict[str, str]:
    """This environment without anything that could put the checkout (or the test
    machine's settings) in front of the installed package."""
    drop = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "MAHAVISHNU_DLQ_")
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(drop)}
    env.update(XDG_STATE_HOME=str(work / "state"), COLUMNS="100", **extra)
    return env


def _package_files() -> set[str]:
    """Every file of the package in this checkout, as paths in the wheel."""
    return {
        path.relative_to(ROOT).as_posix()
        for path in PACKAGE.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    out = tmp_path_factory.mktemp("dist")
    _run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)],
        cwd=out,
    )
    wheel, sdist = out / f"{NAME}-py3-none-any.whl", out / f"{NAME}.tar.gz"
    assert sorted(out.iterdir()) == sorted([wheel, sdist])
    return Built(wheel, sdist)


@pytest.fixture(scope="module")
def venv(built: Built, tmp_path_factory: pytest.TempPathFactory) -> Venv:
    """A new virtual environment with the wheel (extra ``cli``) installed by pip."""
    root = tmp_path_factory.mktemp("venv")
    work = tmp_path_factory.mktemp("work")
    _run([sys.executable, "-m", "venv", "--without-pip", str(root)], cwd=work)
    pip = [sys.executable, "-m", "pip", "--python", str(root / "bin" / "python"), "install"]
    _run([*pip, "--quiet", f"{built.wheel}[cli]"], cwd=work, timeout=300)
    return Venv(root, work)


def test_the_wheel_holds_the_package_its_license_and_its_metadata(built: Built) -> None:
    with zipfile.ZipFile(built.wheel) as wheel:
        names = set(wheel.namelist())
        license_text = wheel.read(f"{NAME}.dist-info/licenses/LICENSE").decode()
        metadata = HeaderParser().parsestr(wheel.read(f"{NAME}.dist-info/METADATA").decode())
    missing = _package_files() - names  # templates, static files, py.typed included
    assert missing == set()
    assert f"{NAME}.data/data/share/man/man1/mahavishnu-dlq.1" in names
    assert license_text == (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "MIT License" in license_text
    assert metadata["Name"] == "mahavishnu-dlq"
    assert metadata["Version"] == VERSION
    assert metadata["License-Expression"] == "MIT"
    assert metadata["License-File"] == "LICENSE"
    assert metadata["Requires-Python"] == ">=3.10"
    urls = dict(url.split(", ", 1) for url in metadata.get_all("Project-URL", []))
    assert set(urls) >= {"Homepage", "Documentation", "Changelog", "Issues"}
    assert all(url.startswith("https://") for url in urls.values())
    assert urls["Changelog"].endswith("/CHANGELOG.md")
    classifiers = set(metadata.get_all("Classifier", []))
    assert {
        "Typing :: Typed",
        "Framework :: AsyncIO",
        "Framework :: AnyIO",
        "Programming Language :: Python :: 3.10",
    } <= classifiers
    # the license is the SPDX expression above: PEP 639 deprecates "License ::" classifiers
    # (flit refuses both, setuptools warns and drops the classifier)
    assert not [c for c in classifiers if c.startswith("License ::")]
    assert "dead-letter-queue" in metadata["Keywords"].split(",")


def test_the_sdist_holds_the_sources_the_license_and_the_changelog(built: Built) -> None:
    with tarfile.open(built.sdist) as sdist:
        names = {name.removeprefix(f"{NAME}/") for name in sdist.getnames()}
        member = sdist.extractfile(f"{NAME}/LICENSE")
        assert member is not None
        license_text = member.read().decode()
    assert set(SDIST_EXTRAS) <= names
    assert "mahavishnu_dlq/py.typed" in names
    assert _package_files() - names == set()
    assert {"docs/index.md", "docs/mahavishnu-dlq.1", "tests/packaging/test_package.py"} <= names
    assert license_text == (ROOT / "LICENSE").read_text(encoding="utf-8")


def test_the_installed_package_is_the_wheels_not_this_checkout(venv: Venv) -> None:
    code = (
        "import importlib.metadata, json, sys, mahavishnu_dlq\n"
        "dist = importlib.metadata.distribution('mahavishnu-dlq')\n"
        "print(json.dumps({'file': mahavishnu_dlq.__file__, 'prefix': sys.prefix,"
        " 'version': mahavishnu_dlq.__version__, 'metadata': dist.version,"
        " 'direct_url': dist.read_text('direct_url.json')}))"
    )
    done = _run([str(venv.python), "-c", code], cwd=venv.work, env=_clean_environment(venv.work))
    found = json.loads(done.stdout)
    package = Path(found["file"]).resolve()
    assert Path(found["prefix"]).resolve() == venv.root.resolve()
    assert package.is_relative_to(venv.root.resolve() / "lib")
    assert not package.is_relative_to(ROOT)
    assert found["version"] == found["metadata"] == VERSION
    direct_url = json.loads(found["direct_url"])
    assert direct_url["url"].endswith(".whl")  # installed from the wheel file ...
    assert "dir_info" not in direct_url  # ... not from a directory (editable or not)
    assert (venv.root / "share" / "man" / "man1" / "mahavishnu-dlq.1").is_file()


def test_the_demo_runs_from_the_installed_console_script(venv: Venv) -> None:
    env = _clean_environment(venv.work)
    # the README's first command, shorter (12 runs) and with a fixed seed
    done = _run(
        [str(venv.script), "demo", "--count", "12", "--seed", "4711"], cwd=venv.work, env=env
    )
    assert done.stdout.startswith("12 workflow runs (seed 4711)")
    assert "The retry processor settled them" in done.stdout
    assert "exhausted" in done.stdout
    assert done.stderr == ""
    done = _run(
        [str(venv.script), "demo", "--count", "12", "--seed", "4711", "--json"],
        cwd=venv.work,
        env=env,
    )
    result = json.loads(done.stdout)
    assert result["timed_out"] is False
    assert result["counts"]["executed"] == 12
    assert result["counts"]["stored"] == result["counts"]["failed"] > 0
    assert result["statistics"]["backend"] == "memory"
    assert result["statistics"]["status_breakdown"]["retrying"] == 0


def test_the_cli_runs_from_the_fresh_environment_on_a_sqlite_file(venv: Venv) -> None:
    database = venv.work / "queue" / "dlq.sqlite3"
    env = _clean_environment(venv.work, MAHAVISHNU_DLQ_SQLITE__PATH=str(database))
    script = str(venv.script)

    assert _run([script, "--version"], cwd=venv.work, env=env).stdout == (
        f"mahavishnu-dlq {VERSION}\n"
    )
    module = _run([str(venv.python), "-m", "mahavishnu_dlq", "--version"], cwd=venv.work, env=env)
    assert module.stdout == f"mahavishnu-dlq {VERSION}\n"
    usage = _run([script, "--help"], cwd=venv.work, env=env).stdout
    assert usage.startswith("Usage: mahavishnu-dlq [OPTIONS] COMMAND [ARGS]...")
    for command in ("status", "list", "show", "replay", "purge", "demo", "processor"):
        assert f"  {command} " in usage, command

    # an application in the fresh environment stores a failure in the SQLite file ...
    code = (
        "import anyio\n"
        "from mahavishnu_dlq import DeadLetterQueue, DLQSettings\n"
        "async def main() -> None:\n"
        "    async with DeadLetterQueue.from_settings(DLQSettings.load()) as dlq:\n"
        "        await dlq.enqueue('packaged-1', {'order': 1}, workflow='sync_orders',\n"
        "                          error=ConnectionError('refused by orders-db:5432'))\n"
        "anyio.run(main)\n"
    )
    _run([str(venv.python), "-c", code], cwd=venv.work, env=env)
    assert database.is_file()
    # ... and the CLI, another process, reads it
    status = json.loads(_run([script, "status", "--json"], cwd=venv.work, env=env).stdout)
    assert status["backend"] == "sqlite"
    assert status["queue_size"] == 1
    assert status["status_breakdown"]["pending"] == 1
    shown = json.loads(
        _run([script, "show", "packaged-1", "--json"], cwd=venv.work, env=env).stdout
    )
    assert shown["workflow"] == "sync_orders"
    assert shown["error_category"] == "network"
    assert shown["metadata"]["failure_context"]["mahavishnu_dlq"] == VERSION
    human = _run([script, "status"], cwd=venv.work, env=env).stdout
    assert str(database) in human.replace("\n", "")
