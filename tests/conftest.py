"""Shared fixtures: every async test runs on asyncio and on trio; one OpenSearch node
per test session, started only when a test needs it."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tests.secured_node import SecuredNode, secured_setup

#: The shared checks of the hostile-input properties assert; show their values.
pytest.register_assert_rewrite("tests.hostile")

#: Point the tests at an existing node/cluster instead of starting one.
OPENSEARCH_URL_VAR = "MAHAVISHNU_DLQ_TEST_OPENSEARCH_URL"
#: A JSON file {"url", "config", "admin"} of a running secured node (see tests/secured_node.py).
SECURED_NODE_VAR = "MAHAVISHNU_DLQ_TEST_SECURED_NODE"
_NODE_SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "opensearch_node.py"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The engine integrations' tests run last, Prefect's the very last. Prefect keeps
    its global event-loop threads running for the rest of the process once a flow has
    run (retrying its API calls with random jitter, finalising its leaked sockets), and
    other tests must not share the process with them: hypothesis, for one, refuses a
    ``random`` module whose state changes while it draws."""

    def late(item: pytest.Item) -> tuple[bool, bool]:
        path = item.nodeid.replace("\\", "/")
        return "tests/engines/" in path, "test_prefect" in path

    items.sort(key=late)  # stable: every other test keeps its order


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


def load_node_script() -> ModuleType:
    """``scripts/opensearch_node.py`` as the module ``opensearch_node`` (its ``osnode``
    package importable from then on); loaded once."""
    loaded = sys.modules.get("opensearch_node")
    if loaded is not None and getattr(loaded, "__file__", None) == str(_NODE_SCRIPT):
        return loaded
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
        node = load_node_script().start_node()
    except Exception as exc:  # any reason means "no node here"
        reason = f"no OpenSearch node could be started ({type(exc).__name__}: {exc})"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}; CI needs one", pytrace=False)
        pytest.skip(f"{reason}; set {OPENSEARCH_URL_VAR} to use an existing one")
    try:
        yield node.url
    finally:
        node.stop()


@pytest.fixture(scope="session")
def secured_opensearch() -> Iterator[SecuredNode]:
    """A second node of this session, secured (see :mod:`tests.secured_node`): started only
    when a test needs it; skips locally and fails with ``CI=true`` if it cannot start."""
    running = os.environ.get(SECURED_NODE_VAR)
    if running:  # {"url", "config", "admin"} of a node started with secured_setup
        given = json.loads(Path(running).read_text())
        yield SecuredNode(given["url"], Path(given["config"]), given["admin"])
        return
    script = load_node_script()
    try:
        node = script.start_node(secured=secured_setup(script))
    except Exception as exc:  # any reason means "no secured node here"
        reason = f"no secured OpenSearch node could be started ({type(exc).__name__}: {exc})"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}; CI needs one", pytrace=False)
        pytest.skip(reason)
    try:
        yield SecuredNode(node.url, node.workdir / "config", str(node.access.password))
    finally:
        node.stop()
