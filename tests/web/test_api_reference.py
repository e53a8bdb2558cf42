"""docs/api.md: its generated reference is current and covers every operation."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "api.md"
SCRIPT = ROOT / "scripts" / "api_reference.py"


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("api_reference", SCRIPT)
    if spec is None or spec.loader is None:  # pragma: no cover - the script ships with the repo
        raise RuntimeError(f"cannot load {SCRIPT}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


reference = _load_script()


def test_generated_reference_is_current() -> None:
    problems: list[str] = reference.check(DOC)
    assert not problems, "\n".join(problems)


def test_every_operation_has_a_section() -> None:
    text = DOC.read_text(encoding="utf-8")
    document = reference.openapi()
    operations = [
        f"### {method.upper()} {path}"
        for path, methods in document["paths"].items()
        for method in methods
    ]
    assert len(operations) >= 12
    missing = [heading for heading in operations if heading not in text]
    assert missing == []


def test_a_stale_block_is_reported(tmp_path: Path) -> None:
    stale = tmp_path / "api.md"
    text = DOC.read_text(encoding="utf-8").replace("### GET /api/v1/stats", "### GET /stats")
    stale.write_text(text, encoding="utf-8")
    problems = reference.check(stale)
    assert problems
    assert problems[-1] == "regenerate with: python scripts/api_reference.py --write"
