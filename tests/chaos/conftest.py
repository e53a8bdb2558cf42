"""Chaos tests: faults injected into a real OpenSearch node of their own.

They cannot share the session's node (``opensearch_url``): they kill it. Each test module
gets one `ChaosNode` (starting one takes 7-15 s), and each test gets it up and thawed, with
whatever earlier tests of the module wrote still there: use an index of your own per test.

Every test under ``tests/chaos`` is marked ``chaos`` (``pytest -m chaos`` runs them alone)
and ``opensearch`` (it needs a real node). As for ``opensearch_url``: if no node can be
started, the tests skip locally and fail with ``CI=true``. An external node
(``MAHAVISHNU_DLQ_TEST_OPENSEARCH_URL``) is no use here: these tests must own the process.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import anyio
import pytest

from mahavishnu_dlq.models import FailedTask, TaskFilter
from mahavishnu_dlq.storage.opensearch import OpenSearchStore
from tests.chaos.node import ChaosNode

_HERE = Path(__file__).resolve().parent
_TIMINGS = pytest.StashKey[list[tuple[str, str, float]]]()

#: ``record(what, seconds)``: a duration for the "chaos timings" section of the summary.
Record = Callable[[str, float], None]


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test under tests/chaos ``chaos`` and ``opensearch``."""
    for item in items:
        if _HERE in item.path.resolve().parents:
            item.add_marker(pytest.mark.chaos)
            item.add_marker(pytest.mark.opensearch)


def _keep_logs(workdir: Path, keep_in: Path) -> None:
    """Copy the node's console log and log files next to the test's other tmp files."""
    for name in ("console.log", "logs"):
        source = workdir / name
        if source.is_dir():
            shutil.copytree(source, keep_in / name, dirs_exist_ok=True)
        elif source.is_file():
            shutil.copy2(source, keep_in / name)


@pytest.fixture(scope="module")
def chaos_module_node(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ChaosNode]:
    """The module's own node, started once and stopped (thawed first) at the module's end.

    Its work directory is a fresh ``chaos-node-*`` in the system temp dir, not in pytest's:
    run as root, the node's user must traverse to it, and pytest sets ``pytest-of-<user>``
    back to 0700 whenever another pytest session starts, which would lock the node out
    mid-test. It is removed at the end; its logs are kept in ``<pytest tmp>/chaos-node*``.
    """
    keep_logs_in = tmp_path_factory.mktemp("chaos-node")
    workdir = Path(tempfile.mkdtemp(prefix="chaos-node-"))
    (keep_logs_in / "workdir.txt").write_text(f"{workdir}\n")
    node = ChaosNode(workdir)
    try:
        started = time.monotonic()
        try:
            node.start()
        except Exception as exc:  # any reason means "no node here"
            node.stop()
            reason = f"no OpenSearch node could be started ({type(exc).__name__}: {exc})"
            if os.environ.get("CI", "").lower() == "true":
                pytest.fail(f"{reason}; CI needs one (logs in {keep_logs_in})", pytrace=False)
            pytest.skip(f"{reason}; chaos tests need a node of their own")
        timings = request.config.stash.setdefault(_TIMINGS, [])
        timings.append((request.node.name, "first start until yellow", time.monotonic() - started))
        yield node
    finally:
        node.stop()
        _keep_logs(workdir, keep_logs_in)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def chaos_node(chaos_module_node: ChaosNode) -> Iterator[ChaosNode]:
    """The module's node, up and thawed when the test starts and thawed when it ends.

    The test may kill, restart, freeze and thaw it; the next test finds it up again.
    """
    chaos_module_node.ensure_up()
    try:
        yield chaos_module_node
    finally:
        chaos_module_node.thaw()


@pytest.fixture
def chaos_timing(request: pytest.FixtureRequest) -> Record:
    """Record a duration; all are listed at the end of the run (timings are not asserted)."""
    timings = request.config.stash.setdefault(_TIMINGS, [])

    def record(what: str, seconds: float) -> None:
        timings.append((request.node.name, what, seconds))

    return record


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    timings = terminalreporter.config.stash.get(_TIMINGS, [])
    if not timings:
        return
    terminalreporter.section("chaos timings")
    for test, what, seconds in timings:
        terminalreporter.write_line(f"{seconds:7.2f} s  {what}  ({test})")


@pytest.fixture
def anyio_backend() -> str:
    """AsyncOpenSearch runs on asyncio only."""
    return "asyncio"


@pytest.fixture
def index_name() -> str:
    """An index of the test's own on the module's node."""
    return f"dlq-chaos-{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def reader(chaos_node: ChaosNode, index_name: str) -> AsyncIterator[OpenSearchStore]:
    """Reads the index afterwards, as another process would (opened when first used)."""
    store = OpenSearchStore(hosts=[chaos_node.url], index=index_name)
    try:
        yield store
    finally:
        if chaos_node.is_up():
            await store.open()
            await store.drop()
        await store.close()


async def everything(store: OpenSearchStore) -> list[FailedTask]:
    """Every record of ``store``'s index, page by page."""
    await store.open()  # the writers closed their stores: what they wrote is searchable
    found: list[FailedTask] = []
    cursor: str | None = None
    while True:
        page = await store.query(TaskFilter(), limit=1000, cursor=cursor)
        found += page
        if page.cursor is None:
            return found
        cursor = page.cursor


async def until(what: str, condition: Callable[[], Awaitable[bool] | bool], timeout: float) -> None:
    """Poll ``condition`` every 50 ms until true (real time: these are chaos tests); fail
    after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        await anyio.sleep(0.05)
