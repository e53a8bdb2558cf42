"""The CLI in-process (CliRunner): the rendered demo, --json, --version, bad config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mahavishnu_dlq import __version__
from mahavishnu_dlq.cli import build_app


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_demo_renders_statistics_and_examples(runner: CliRunner) -> None:
    result = runner.invoke(build_app(), ["demo", "--count", "12", "--seed", "3"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "12 workflow runs (seed 3)" in out
    for heading in ("status", "categories", "lifetime", "fingerprints"):
        assert heading in out
    assert "example" in out
    assert "memory" in out  # the backend


def test_demo_json_has_a_stable_shape(runner: CliRunner) -> None:
    result = runner.invoke(build_app(), ["demo", "--count", "12", "--seed", "3", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    stats = data["statistics"]
    assert stats["backend"] == "memory"
    assert stats["lifetime_stats"]["enqueued_total"] >= 1
    assert sum(stats["status_breakdown"].values()) == stats["total_stored"]


def test_version(runner: CliRunner) -> None:
    result = runner.invoke(build_app(), ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_out_of_range_setting_is_exit_2_without_traceback(
    runner: CliRunner, tmp_path: Path
) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("max_size: 5\n")
    result = runner.invoke(build_app(), ["--config", str(config), "demo", "--count", "12"])
    assert result.exit_code == 2
    assert "max_size" in result.output
    assert "between 100 and 100000" in result.output
    assert "Traceback" not in result.output
