"""What every piece of the node script shares: its errors, constants and messages."""

from __future__ import annotations

import os
import shutil
import sys

NODE_USER = "mahavishnu-os"
CLUSTER_NAME = "mahavishnu-dlq-test"
CACHE_ENV = "MAHAVISHNU_DLQ_OPENSEARCH_CACHE"
VERSION_ENV = "MAHAVISHNU_DLQ_OPENSEARCH_VERSION"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class NodeError(RuntimeError):
    """The distribution could not be had, or the node did not come up."""


class _UnresolvedError(NodeError):
    """mvn could not resolve one version."""


class PortTakenError(NodeError):
    """A port the node was given is taken: it lost the race for it, or it was restarted on
    a port that another server took meanwhile."""


def _say(message: str) -> None:
    sys.stderr.write(f"[opensearch-node] {message}\n")
    sys.stderr.flush()


def _tool(name: str) -> str:
    found = shutil.which(name, path=f"{os.environ.get('PATH', '')}:{SYSTEM_PATH}")
    if found is None:
        raise NodeError(f"{name!r} is not installed (looked on PATH and in {SYSTEM_PATH})")
    return found
