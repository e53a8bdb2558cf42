"""ChaosCluster: three real OpenSearch nodes on loopback, one cluster, any node killable.

The nodes come from ``scripts/opensearch_node.py``'s ``start_cluster`` (the same download,
cache and node user as the session's node). Each keeps its URL and data across `kill` and
`restart`, so a node brought back rejoins with the shard copies it held; `freeze` makes one
hang (SIGSTOP) instead, until `thaw`. The client of a test is given every URL (`urls`);
`primary_of` names the node that holds an index's primary shard, the one whose death
matters, and `copies_of` the nodes with any copy of it.

Every method is synchronous and returns once the cluster is in the state it names, polling
with a deadline; from an async test run the slow ones (`restart`, `wait_for_status`) in a
thread. `stop` ends every node for good; it is safe in any state.
"""

from __future__ import annotations

import json
import shutil
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from mahavishnu_dlq.storage.opensearch import OpenSearchStore
from tests.chaos.node import _STOPPED, NodeError, _poll, _thread_states

if TYPE_CHECKING:
    import opensearch_node as osn
else:
    from tests.chaos.node import osn

#: Heap of each node: three of them and the test's processes share 2 cores and little RAM.
HEAP_MB = 320


class ChaosCluster:
    """Three nodes (``count``) that form one cluster, started by `start`."""

    def __init__(self, *, count: int = 3, heap_mb: int = HEAP_MB, timeout: float = 180.0) -> None:
        self.count = count
        self.heap_mb = heap_mb
        #: Seconds `start` and `restart` wait for a node to answer.
        self.timeout = timeout
        self._cluster: osn.Cluster | None = None

    @property
    def cluster(self) -> osn.Cluster:
        if self._cluster is None:
            raise NodeError("the cluster was never started")
        return self._cluster

    @property
    def urls(self) -> list[str]:
        """Every node's URL, in node order; the same across restarts."""
        return self.cluster.urls

    @property
    def names(self) -> list[str]:
        """Every node's name (``node-1`` ...), in node order."""
        return [layout.node_name for layout in self.cluster.layouts]

    @property
    def workdir(self) -> Path:
        return self.cluster.workdir

    def start(self) -> None:
        """Start the nodes; return once all answer and the cluster is yellow or green."""
        self._cluster = osn.start_cluster(self.count, self.heap_mb, timeout=self.timeout)

    def is_running(self, node: int) -> bool:
        return self.cluster.nodes[node].is_running()

    def request(self, path: str, *, timeout: float = 10.0) -> Any:
        """``GET path`` as JSON from the first running node that answers 200."""
        for node, url in enumerate(self.urls):
            if not self.is_running(node):
                continue
            try:
                with urllib.request.urlopen(url + path, timeout=timeout) as answer:  # noqa: S310 - our node
                    return json.loads(answer.read())
            except (OSError, urllib.error.HTTPError, ValueError):
                continue
        raise NodeError(f"no node answered GET {path}")

    def copies_of(self, index: str) -> set[int]:
        """The nodes (positions in `urls`) that hold a started copy of ``index``."""
        shards = self.request(f"/_cat/shards/{index}?format=json&h=state,node")
        return {self.names.index(s["node"]) for s in shards if s["state"] == "STARTED"}

    def primary_of(self, index: str) -> int:
        """The node (its position in `urls`) that holds the primary of ``index``'s shard 0."""
        shards = self.request(f"/_cat/shards/{index}?format=json&h=shard,prirep,state,node")
        for shard in shards:
            if shard["shard"] == "0" and shard["prirep"] == "p" and shard["state"] == "STARTED":
                return self.names.index(shard["node"])
        raise NodeError(f"no started primary of {index}: {shards}")

    def missing(self, index: str, doc_ids: list[str]) -> list[str]:
        """Which of ``doc_ids`` a realtime ``_mget`` on ``index`` does not find."""
        body = json.dumps({"ids": doc_ids}).encode()
        for node, url in enumerate(self.urls):
            if not self.is_running(node):
                continue
            request = urllib.request.Request(  # noqa: S310 - our node
                f"{url}/{index}/_mget?_source=false&filter_path=docs._id,docs.found",
                data=body,
                headers={"Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310 - our node
                    docs = json.loads(answer.read())["docs"]
            except (OSError, ValueError):
                continue
            return [doc["_id"] for doc in docs if not doc.get("found")]
        raise NodeError(f"no node answered _mget on {index}")

    def cluster_manager(self) -> str:
        """The name of the elected cluster-manager node."""
        [manager] = self.request("/_cat/cluster_manager?format=json&h=node")
        return str(manager["node"])

    def wait_for_status(self, status: str, timeout: float, index: str | None = None) -> float:
        """Seconds until the cluster (or ``index``) is ``status`` or better, polled every
        0.2 s; `NodeError` after ``timeout``."""
        started = time.monotonic()
        path = "/_cluster/health" + (f"/{index}" if index else "")
        while True:
            try:
                health = self.request(path, timeout=5)
            except NodeError:
                health = {}
            if health.get("status") == status or (
                status == "yellow" and health.get("status") == "green"
            ):
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise NodeError(f"not {status} after {timeout:g}s: {health}")
            time.sleep(0.2)

    def kill(self, node: int) -> None:
        """SIGKILL node ``node``'s process group; return once it is gone."""
        self.cluster.kill(node)

    def freeze(self, node: int) -> None:
        """SIGSTOP node ``node``; return once every thread of it is stopped. It still accepts
        connections (the kernel does) but answers nothing: a hung node, not a dead one."""
        handle = self.cluster.nodes[node]
        handle.signal(signal.SIGSTOP)
        pid = handle.pid
        _poll(lambda: all(s == _STOPPED for s in _thread_states(pid)), 10, f"SIGSTOP {pid}")

    def thaw(self, node: int) -> None:
        """SIGCONT node ``node``; return once no thread of it is stopped."""
        handle = self.cluster.nodes[node]
        handle.signal(signal.SIGCONT)
        pid = handle.pid
        _poll(lambda: _STOPPED not in _thread_states(pid), 10, f"SIGCONT {pid}")

    def restart(self, node: int) -> None:
        """Start node ``node`` again on its ports and data; return once it answers."""
        self.cluster.restart(node, timeout=self.timeout)

    def stop(self) -> None:
        """Stop every node by its pid and remove the work directory."""
        if self._cluster is not None:
            self._cluster.stop()

    def keep_logs(self, keep_in: Path) -> None:
        """Copy each node's console log and log files to ``keep_in/node-<i>/``."""
        if self._cluster is None:
            return
        for layout in self._cluster.layouts:
            target = keep_in / layout.node_name
            target.mkdir(parents=True, exist_ok=True)
            for name in ("console.log", "logs"):
                source = layout.workdir / name
                if source.is_dir():
                    shutil.copytree(source, target / name, dirs_exist_ok=True)
                elif source.is_file():
                    shutil.copy2(source, target / name)

    def __enter__(self) -> ChaosCluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def dead_hosts(store: OpenSearchStore) -> set[str]:
    """The URLs that ``store``'s client has marked dead (it failed to reach them and sends
    to the other hosts for a while), and not yet seen answer again."""
    pool = store._client.transport.connection_pool
    return {connection.host for connection in getattr(pool, "dead_count", {})}
