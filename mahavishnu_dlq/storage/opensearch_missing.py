"""What a missing OpenSearch index is reported as: one error naming the index, the
cluster and the hosts, with the likely intended name.

A store opened for reading (``open(create=False)``) creates nothing, so a typo in
``opensearch.index`` must not look like an empty queue: :func:`missing_index` builds
the :class:`~mahavishnu_dlq.errors.StoreNotFoundError` that says so. It asks the
node two things, each allowed to fail quietly: the cluster's name
(``GET _cluster/health``, the one cluster-wide permission the DLQ's role has; the
per-index form waits for an index that does not exist until it times out) and the
index names this user can see (``GET _cat/indices``, else the aliases of ``*``),
to suggest the closest (:func:`near_miss`). A node that forbids both (HTTP 403) just
gets no suggestion. ``mahavishnu-dlq doctor`` reports the same sentence.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

from opensearchpy.exceptions import OpenSearchException

from mahavishnu_dlq.errors import StoreNotFoundError
from mahavishnu_dlq.storage.opensearch_client import Connection

__all__ = [
    "cluster_name",
    "missing_index",
    "missing_index_detail",
    "near_miss",
    "visible_indexes",
]

_SIDE_SUFFIXES = ("-jobs", "-controls")


async def cluster_name(conn: Connection) -> str | None:
    """The cluster's name (``GET _cluster/health``), or None when it cannot be read."""
    try:
        health: Any = await conn.client.cluster.health()
    except (OpenSearchException, OSError):
        return None
    name = health.get("cluster_name") if isinstance(health, dict) else None
    return name if isinstance(name, str) else None


async def visible_indexes(conn: Connection) -> list[str]:
    """The index (and alias) names this user may see; empty when the node will not say."""
    try:
        rows: Any = await conn.client.cat.indices(format="json", h="index")
    except (OpenSearchException, OSError):
        rows = None
    if isinstance(rows, list):
        return [str(row["index"]) for row in rows if isinstance(row, dict) and "index" in row]
    try:
        found: Any = await conn.client.indices.get_alias(index="*")
    except (OpenSearchException, OSError):
        return []
    names: list[str] = []
    if isinstance(found, dict):
        for index, entry in found.items():
            names.append(str(index))
            aliases = entry.get("aliases") if isinstance(entry, dict) else None
            names.extend(str(alias) for alias in aliases or ())
    return names


def near_miss(index: str, names: Iterable[str]) -> str | None:
    """The name closest to ``index`` among ``names``, if one is close enough.

    Hidden indexes (``.``) are left out, and so are the jobs and controls indexes
    of another tasks index (``x-jobs`` beside ``x``): they are not tasks indexes."""
    seen = set(names)
    candidates = sorted(
        name
        for name in seen
        if name != index
        and not name.startswith(".")
        and not any(name.endswith(s) and name[: -len(s)] in seen for s in _SIDE_SUFFIXES)
    )
    found = difflib.get_close_matches(index, candidates, n=1)
    return found[0] if found else None


def missing_index_detail(index: str, cluster: str | None, hosts: str, guess: str | None) -> str:
    """The sentence that reports ``index`` missing (see the module)."""
    where = f"cluster {cluster!r}" if cluster else "the cluster"
    hint = f"; did you mean {guess!r}?" if guess else "."
    return (
        f"index {index!r} does not exist on {where} at {hosts}{hint} Reading never creates "
        "an index: check opensearch.index, or create the index with any writing command "
        "(run the processor, 'mahavishnu-dlq processor run', or enqueue a task)"
    )


async def missing_index(conn: Connection, index: str) -> StoreNotFoundError:
    """The error for a missing ``index`` on ``conn``'s cluster (see the module)."""
    cluster = await cluster_name(conn)
    guess = near_miss(index, await visible_indexes(conn))
    hosts = ", ".join(conn.shown_hosts())
    return StoreNotFoundError("opensearch", missing_index_detail(index, cluster, hosts, guess))
