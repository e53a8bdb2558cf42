"""The least privilege an OpenSearch store needs, as security plugin roles.

:func:`writer_role` is what the queue, the processor and every writing command need on
the tasks index ``<index>`` and its side indexes ``<index>-jobs`` and
``<index>-controls`` (one pattern, ``<index>*``, covers the three): read, write, create
the index, put its mapping and template, refresh — but not delete an index (``drop()``,
for decommissioning, is an administrator's job). Cluster-wide it needs only health, the
requests that may carry many indexes' items (``_bulk``, ``_mget``) and the index
templates — nothing that reads or changes another
index. :func:`reader_role` lets an operator run ``status``, ``list`` and ``show`` (and the
web console's read pages) and nothing else.

Both are printed by ``docs/opensearch.md`` and are the roles the secured test node
runs the store's contract suite with, so what the docs say is what was tested.
"""

from __future__ import annotations

from typing import Any

__all__ = ["reader_role", "writer_role"]

#: cluster-level actions both roles need: health (the cluster's name and state) and
#: ``_mget``, a request that may span indexes (its items are then checked per index).
_CLUSTER_READ = [
    "cluster:monitor/health",
    "indices:data/read/mget",
]

#: reads of the three indexes: by id, searches and counts, the index and its mapping
#: (checked at open), its settings (``doctor``'s refresh interval and replicas)
_INDEX_READ = [
    "indices:data/read/get",
    "indices:data/read/mget*",
    "indices:data/read/search*",
    "indices:data/read/count",
    "indices:admin/get",
    "indices:admin/mappings/get",
    "indices:monitor/settings/get",
]


def writer_role(index: str) -> dict[str, Any]:
    """The role of the DLQ's own user on ``index`` (``opensearch.index``)."""
    return {
        "description": f"mahavishnu-dlq: queue, processor and operators on {index!r}",
        "cluster_permissions": [
            *_CLUSTER_READ,
            "indices:data/write/bulk",
            "indices:admin/index_template/get",
            "indices:admin/index_template/put",
        ],
        "index_permissions": [
            {
                "index_patterns": [f"{index}*"],
                "allowed_actions": [
                    *_INDEX_READ,
                    "indices:data/write/index",
                    "indices:data/write/update",
                    "indices:data/write/delete",
                    "indices:data/write/bulk*",
                    "indices:admin/create",
                    "indices:admin/mapping/put",
                    "indices:admin/refresh*",
                ],
            }
        ],
    }


def reader_role(index: str) -> dict[str, Any]:
    """A read-only operator's role on ``index``: ``status``, ``list``, ``show``."""
    return {
        "description": f"mahavishnu-dlq: read-only operator of {index!r}",
        "cluster_permissions": list(_CLUSTER_READ),
        "index_permissions": [
            {"index_patterns": [f"{index}*"], "allowed_actions": list(_INDEX_READ)}
        ],
    }
