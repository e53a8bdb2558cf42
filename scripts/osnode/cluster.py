"""Several nodes on loopback as one cluster, each one killable and restartable."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from .common import NodeError, PortTakenError, _say
from .node import WORKDIR_MARKER, NodeHandle, NodeLayout, _remove_workdir, prepare_node, spawn_node
from .processes import cluster_health, free_port, stop_pid


@dataclass
class Cluster:
    """Nodes on loopback that form one cluster; each keeps its ports and data across
    `kill` and `restart`, so a node brought back rejoins with what it held."""

    workdir: Path
    layouts: list[NodeLayout]
    ports: list[tuple[int, int]]  #: (http, transport) of each node
    nodes: list[NodeHandle]
    keep: bool = False

    @property
    def urls(self) -> list[str]:
        """Every node's URL, in node order (the client is given all of them)."""
        return [f"http://127.0.0.1:{http_port}" for http_port, _ in self.ports]

    def health(self, timeout: float = 5.0) -> dict[str, Any] | None:
        """Cluster health from the first node that answers, or None."""
        for url in self.urls:
            health = cluster_health(url, timeout)
            if health is not None:
                return health
        return None

    def kill(self, index: int) -> None:
        """SIGKILL node ``index``; return once its process is gone."""
        self.nodes[index].kill()

    def restart(self, index: int, timeout: float = 180.0) -> NodeHandle:
        """Start node ``index`` again on its ports and data; return once it answers."""
        http_port, transport_port = self.ports[index]
        node = spawn_node(self.layouts[index], http_port, transport_port)
        self.nodes[index] = node
        node.wait_ready(timeout)
        return node

    def stop(self) -> None:
        """Stop every node by its pid; remove the work directory unless ``keep``."""
        for node in self.nodes:
            node.stop(keep=True)
        if not self.keep:
            _remove_workdir(self.workdir)

    def __enter__(self) -> Cluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _distinct_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = free_port(stable=True)
        if port not in ports:
            ports.append(port)
    return ports


def _start_nodes(
    root: Path, count: int, heap_mb: int, version: str | None, timeout: float
) -> tuple[list[NodeLayout], list[tuple[int, int]], list[NodeHandle]]:
    """Lay out ``root/node-<i>`` on new ports and start the nodes; once all answer: their
    layouts, ports and handles. On failure every node started is stopped and every node
    directory removed before the error propagates."""
    ports_flat = _distinct_ports(2 * count)
    ports = [(ports_flat[2 * i], ports_flat[2 * i + 1]) for i in range(count)]
    members = [(f"node-{i + 1}", ports[i][1]) for i in range(count)]
    layouts: list[NodeLayout] = []
    nodes: list[NodeHandle] = []
    try:
        for name, _transport in members:
            layouts.append(
                prepare_node(
                    root / name,
                    heap_mb,
                    version=version,
                    keep=True,
                    node_name=name,
                    cluster_nodes=members,
                )
            )
        for layout, (http_port, transport_port) in zip(layouts, ports, strict=True):
            nodes.append(spawn_node(layout, http_port, transport_port))
        for node in nodes:
            node.wait_ready(timeout)
    except BaseException as exc:
        if isinstance(exc, Exception) and not isinstance(exc, PortTakenError):
            tails = "".join(
                f"\n---- tail of {layout.console_log} ----\n{layout.console_tail(20)}"
                for layout in layouts
            )
            _say(f"cluster failed: {exc}{tails}")
        for node in nodes:
            stop_pid(node.pid, node.started_ticks, timeout=10)
            node._reap()
        for name, _transport in members:
            _remove_workdir(root / name)
        raise
    return layouts, ports, nodes


def start_cluster(
    count: int = 3,
    heap_mb: int = 320,
    *,
    workdir: Path | None = None,
    version: str | None = None,
    timeout: float = 180.0,
    keep: bool = False,
    attempts: int = 3,
) -> Cluster:
    """Start ``count`` nodes on loopback as one cluster (all cluster-manager eligible,
    all data nodes); return once every node answers and the cluster is yellow or green.

    Ports lie below the ephemeral range (see `free_port`), so a killed node can come back
    on its own; a port taken before a node could bind it means a new start on new ports
    (up to ``attempts`` in all). ``workdir`` (default a fresh ``/tmp/oscluster-*``) holds
    ``node-<i>/``; it is removed on failure unless ``keep``.
    """
    if workdir is None:
        root = Path(tempfile.mkdtemp(prefix="oscluster-"))
        root.chmod(0o755)  # mkdtemp makes it 0700: the node user must traverse it
    else:
        root = workdir.expanduser().resolve()
        root.mkdir(parents=True, exist_ok=True)
    (root / WORKDIR_MARKER).write_text("made by scripts/opensearch_node.py\n")
    try:
        for attempt in range(1, attempts + 1):
            try:
                layouts, ports, nodes = _start_nodes(root, count, heap_mb, version, timeout)
                break
            except PortTakenError as exc:
                _say(f"attempt {attempt}: {exc}")
        else:
            raise NodeError(f"no free ports for {count} nodes after {attempts} attempts")
    except BaseException:
        if not keep:
            _remove_workdir(root)
        raise
    _say(f"cluster of {count} up: {', '.join(node.url for node in nodes)}")
    return Cluster(root, layouts, ports, nodes, keep=keep)
