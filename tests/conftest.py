"""Shared fixtures: every async test runs on asyncio and on trio; one OpenSearch node
per test session, started only when a test needs it."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

#: The shared checks of the hostile-input properties assert; show their values.
pytest.register_assert_rewrite("tests.hostile")

#: Point the tests at an existing node/cluster instead of starting one.
OPENSEARCH_URL_VAR = "MAHAVISHNU_DLQ_TEST_OPENSEARCH_URL"
_NODE_SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "opensearch_node.py"


@pytest.fixture(autouse=True)
def _own_state_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Default settings keep their SQLite file under ``$XDG_STATE_HOME``: every test gets
    its own, so no test sees another's tasks (nor the files of the user running them)."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("state")))


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run each ``@pytest.mark.anyio`` test on both backends anyio supports."""
    return str(request.param)


def _node_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("opensearch_node", _NODE_SCRIPT)
    if spec is None or spec.loader is None:  # pragma: no cover - the script ships with the repo
        raise RuntimeError(f"cannot load {_NODE_SCRIPT}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def opensearch_url() -> Iterator[str]:
    """The URL of a real OpenSearch node for this session.

    ``MAHAVISHNU_DLQ_TEST_OPENSEARCH_URL`` wins; otherwise a single node is fetched
    (through mvn, cached outside the repo) and started on a free loopback port.
    If none can be had, OpenSearch tests skip locally and fail with ``CI=true``.
    """
    url = os.environ.get(OPENSEARCH_URL_VAR)
    if url:
        yield url
        return
    try:
        node = _node_module().start_node()
    except Exception as exc:  # any reason means "no node here"
        reason = f"no OpenSearch node could be started ({type(exc).__name__}: {exc})"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}; CI needs one", pytrace=False)
        pytest.skip(f"{reason}; set {OPENSEARCH_URL_VAR} to use an existing one")
    try:
        yield node.url
    finally:
        node.stop()
