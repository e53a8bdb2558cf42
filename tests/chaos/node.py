"""ChaosNode: one real OpenSearch node that a test may kill, restart, freeze and thaw.

The node comes from ``scripts/opensearch_node.py`` (the same download, cache, node user and
layout as the session's node) but is the test's own: its URL and data directory stay the
same across restarts, so what was acknowledged before a SIGKILL is there after the restart.
Its ports lie below the kernel's ephemeral range, so no outgoing connection takes them while
the node is down; if another server takes one meanwhile, the restart fails saying so.

Every method is synchronous and returns once the node is in the state it names (gone,
ready, frozen, thawed), polling with a deadline. From an async test, run the slow ones
(`start`, `restart`, `wait_ready`) in a thread: ``await anyio.to_thread.run_sync(node.restart)``;
`kill`, `freeze`, `thaw` and ``start(wait=False)`` take milliseconds.
"""

from __future__ import annotations

import importlib.util
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING

_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "opensearch_node.py"


def _load_script() -> ModuleType:
    """``scripts/opensearch_node.py`` as the module ``opensearch_node`` (loaded once)."""
    loaded = sys.modules.get("opensearch_node")
    if loaded is not None and getattr(loaded, "__file__", None) == str(_SCRIPT):
        return loaded
    spec = importlib.util.spec_from_file_location("opensearch_node", _SCRIPT)
    if spec is None or spec.loader is None:  # pragma: no cover - the script ships with the repo
        raise RuntimeError(f"cannot load {_SCRIPT}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


if TYPE_CHECKING:
    import opensearch_node as osn
else:
    osn = _load_script()

NodeError = osn.NodeError
PortTakenError = osn.PortTakenError

#: States of a task in /proc/<pid>/task/<tid>/stat that mean "stopped by a signal".
_STOPPED = "T"


def _thread_states(pid: int) -> list[str]:
    """The state letter of every thread of ``pid`` (empty once it is gone)."""
    states: list[str] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return states
    for task in tasks:
        try:
            raw = (task / "stat").read_text()
        except OSError:  # the thread ended meanwhile
            continue
        states.append(raw[raw.rindex(")") + 2])
    return states


def _poll(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition()`` every 20 ms until true; NodeError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise NodeError(f"{what}: not done after {timeout:g}s")
        time.sleep(0.02)


class ChaosNode:
    """A real single OpenSearch node under a test's control.

    ``ChaosNode(workdir)`` only records where the node will live; `start` brings it up the
    first time (on new stable ports) and every later time (on the same ports and data).
    `stop` ends it for good, thawing it first; it is safe to call in any state.
    """

    def __init__(self, workdir: Path, *, heap_mb: int = 512, timeout: float = 120.0) -> None:
        self.workdir = workdir
        self.heap_mb = heap_mb
        #: Seconds `start`/`restart`/`wait_ready` wait for the node to be yellow.
        self.timeout = timeout
        self._layout: osn.NodeLayout | None = None
        self._handle: osn.NodeHandle | None = None
        self._http_port: int | None = None
        self._transport_port: int | None = None
        self._frozen = False

    # -- what it is --------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``, the same across restarts (known after the first start)."""
        if self._http_port is None:
            raise NodeError("the node was never started: no URL yet")
        return f"http://127.0.0.1:{self._http_port}"

    @property
    def pid(self) -> int | None:
        """The running node's pid (its process group's id), None while it is down."""
        if self._handle is None or not self._handle.is_running():
            return None
        return self._handle.pid

    @property
    def console_log(self) -> Path:
        """The node's stdout/stderr, appended to by every start."""
        return self.workdir / "console.log"

    def is_frozen(self) -> bool:
        """Whether `freeze` stopped the node and `thaw` has not resumed it yet.

        (A method, not a property: mypy would keep an asserted property narrowed across a
        `thaw` call.)
        """
        return self._frozen and self._running()

    def is_up(self, timeout: float = 2.0) -> bool:
        """Running, not frozen, and answering with health yellow or green within ``timeout``."""
        if self._handle is None or not self._running() or self._frozen:
            return False
        health = self._handle.health(timeout)
        return health is not None and health.get("status") in {"yellow", "green"}

    # -- what it does ------------------------------------------------------------------

    def start(self, *, wait: bool = True) -> None:
        """Start the node; with ``wait``, return once it is yellow (see `wait_ready`).

        The first start prepares the work directory and picks the ports; later ones reuse
        both. Raises `PortTakenError` if a port was taken meanwhile, `NodeError` if the node
        is already running or does not come up.
        """
        if self._running():
            raise NodeError(f"the node is already running (pid {self.pid}): kill() it first")
        self._frozen = False
        if self._layout is None:
            self._layout = osn.prepare_node(self.workdir, self.heap_mb, keep=True)
        if self._http_port is None or self._transport_port is None:
            self._start_first(self._layout, wait=wait)
            return
        try:
            self._handle = osn.spawn_node(self._layout, self._http_port, self._transport_port)
        except PortTakenError as exc:
            raise PortTakenError(
                f"cannot restart the node at {self.url} on the same ports: {exc} "
                "(another server took it while the node was down)"
            ) from exc
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float | None = None) -> None:
        """Return once the started node is yellow; raise `NodeError` if it exits or times out."""
        if self._handle is None:
            raise NodeError("the node was never started")
        if self._frozen:
            raise NodeError("the node is frozen: thaw() it first")
        self._handle.wait_ready(self.timeout if timeout is None else timeout)

    def kill(self) -> None:
        """SIGKILL the node's whole process group; return once it is gone. No-op if down."""
        if self._handle is not None:
            self._handle.kill()
        self._frozen = False

    def restart(self, *, wait: bool = True) -> None:
        """`kill` (if it runs), then `start` on the same port and data."""
        self.kill()
        self.start(wait=wait)

    def freeze(self) -> None:
        """SIGSTOP the node's process group; return once every thread of it is stopped.

        A frozen node still accepts TCP connections (the kernel completes the handshake into
        the listen backlog) but answers nothing: clients see read timeouts, not refusals.
        """
        if self._handle is None or not self._running():
            raise NodeError("the node is not running: nothing to freeze")
        pid = self._handle.pid
        self._handle.signal(signal.SIGSTOP)
        self._frozen = True
        _poll(lambda: all(s == _STOPPED for s in _thread_states(pid)), 10, f"SIGSTOP {pid}")

    def thaw(self) -> None:
        """SIGCONT the node's process group; return once no thread is stopped. No-op if not
        frozen. It answers again at once; nothing waits for health here."""
        if self._handle is None or not self._frozen:
            return
        pid = self._handle.pid
        self._handle.signal(signal.SIGCONT)
        self._frozen = False
        _poll(lambda: _STOPPED not in _thread_states(pid), 10, f"SIGCONT {pid}")

    def ensure_up(self) -> None:
        """Make the node ready whatever a previous test left: thaw, start if down, wait."""
        self.thaw()
        if not self._running():
            self.start()
        elif not self.is_up():
            self.wait_ready()

    def stop(self, timeout: float = 10.0) -> None:
        """End the node for good (thaw, SIGTERM, SIGKILL after ``timeout``); keep the workdir.

        Safe in any state, and more than once.
        """
        if self._handle is None:
            return
        self.thaw()
        self._handle.stop(keep=True, timeout=timeout)
        self._frozen = False

    def __enter__(self) -> ChaosNode:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        port = self._http_port if self._http_port is not None else "?"
        state = "frozen" if self.is_frozen() else "running" if self._running() else "down"
        return f"<ChaosNode 127.0.0.1:{port} {state} pid={self.pid} workdir={self.workdir}>"

    # -- inside ------------------------------------------------------------------------

    def _running(self) -> bool:
        return self._handle is not None and self._handle.is_running()

    def _start_first(self, layout: osn.NodeLayout, *, wait: bool) -> None:
        """Pick stable ports (new ones, on wiped data, if one is lost to a race)."""
        if wait:
            handle = osn.launch_on_free_ports(layout, timeout=self.timeout, stable=True)
        else:
            http_port = osn.free_port(stable=True)
            transport_port = osn.free_port(stable=True)
            while transport_port == http_port:
                transport_port = osn.free_port(stable=True)
            handle = osn.spawn_node(layout, http_port, transport_port)
        self._handle = handle
        self._http_port = handle.http_port
        self._transport_port = handle.transport_port
