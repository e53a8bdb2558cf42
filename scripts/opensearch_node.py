#!/usr/bin/env python3
"""A real single-node OpenSearch for tests, brought up without Docker.

The node is OpenSearch's minimal distribution
(``org.opensearch.distribution.integ-test-zip:opensearch:<version>:zip``), fetched from
Maven Central by ``mvn`` and unpacked into a cache outside the repository. It has no
bundled JDK and only the ``transport-netty4`` module: core APIs only, plain HTTP, no auth.

Commands (progress goes to stderr; stdout carries only the result, for ``$(...)``)::

    scripts/opensearch_node.py ensure [--version V]           # prints the install path
    scripts/opensearch_node.py start [--workdir D] [--state F] [--heap-mb N]
                                                                # prints the node's URL
    scripts/opensearch_node.py status --state F               # health JSON, or "down"
    scripts/opensearch_node.py stop --state F [--keep]

Importable too (the pytest session fixture uses it)::

    node = start_node()          # NodeHandle: .url, .pid, .workdir, .stop()
    ...
    node.stop()

A node that is to be killed and started again on the same ports and data (the chaos tests'
``tests/chaos/node.py``) is built from the pieces ``start_node`` is made of::

    layout = prepare_node(workdir)                     # NodeLayout: install, config, data
    node = launch_on_free_ports(layout, stable=True)   # NodeHandle, yellow
    node.kill()                                        # SIGKILL its process group
    node = launch_node(layout, node.http_port, node.transport_port)  # same URL, same data

Environment:

- ``MAHAVISHNU_DLQ_OPENSEARCH_CACHE``: cache root (default
  ``~/.cache/mahavishnu-dlq/opensearch``); each version unpacks to ``<root>/<version>``.
- ``MAHAVISHNU_DLQ_OPENSEARCH_VERSION``: pin one version instead of the newest 2.19.x that
  resolves.
- ``OPENSEARCH_JAVA_HOME``, then ``JAVA_HOME``, then ``java`` on ``PATH``: the JDK (2.x needs
  Java 11 to 23: it relies on the security manager that Java 24 removed).

OpenSearch refuses to run as root. Run as root (sessions and CI), this script creates the
system user ``mahavishnu-os``, gives it the node's work directory, and starts the node
through ``setpriv`` (which execs, so the recorded pid is the JVM itself). The install is
hard-linked (or copied, across file systems) into the work directory, because the cache
sits in root's home, which other users cannot traverse. Run as anyone else, the node runs
as that user straight from the cache.

The node runs detached in its own session and process group; ``stop`` signals that group
by the pid recorded in the state file, never by name.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the osnode package beside us

from osnode.cluster import Cluster, start_cluster
from osnode.common import (
    CACHE_ENV,
    NODE_USER,
    VERSION_ENV,
    NodeError,
    PortTakenError,
    _say,
)
from osnode.distribution import (
    CANDIDATE_VERSIONS,
    cache_root,
    ensure_distribution,
    ensure_secured_distribution,
)
from osnode.node import (
    NodeHandle,
    NodeLayout,
    Secured,
    _remove_workdir,
    launch_node,
    launch_on_free_ports,
    prepare_node,
    spawn_node,
)
from osnode.processes import (
    Access,
    cluster_health,
    free_port,
    port_is_free,
    signal_group,
    stop_pid,
)
from osnode.security import SecuredUser

__all__ = [
    "CACHE_ENV",
    "CANDIDATE_VERSIONS",
    "NODE_USER",
    "VERSION_ENV",
    "Access",
    "Cluster",
    "NodeError",
    "NodeHandle",
    "NodeLayout",
    "PortTakenError",
    "Secured",
    "SecuredUser",
    "cache_root",
    "cluster_health",
    "ensure_distribution",
    "ensure_secured_distribution",
    "free_port",
    "launch_node",
    "launch_on_free_ports",
    "port_is_free",
    "prepare_node",
    "signal_group",
    "spawn_node",
    "start_cluster",
    "start_node",
    "stop_pid",
]


def start_node(
    workdir: Path | None = None,
    heap_mb: int = 512,
    *,
    version: str | None = None,
    state_file: Path | None = None,
    timeout: float = 120.0,
    keep: bool = False,
    attempts: int = 3,
    secured: Secured | None = None,
) -> NodeHandle:
    """Start a single node on free loopback ports; return once it is yellow.

    ``workdir`` (default: a fresh ``/tmp/osnode-*``) must be new or empty; it holds data,
    logs, config, the console log and, by default, the state file ``node.json``.
    ``keep`` keeps the work directory when the node fails to start or is stopped.
    ``secured``: the security plugin, HTTPS and users (`Secured`); the URL is https then.
    """
    layout = prepare_node(
        workdir, heap_mb, version=version, state_file=state_file, keep=keep, secured=secured
    )
    try:
        return launch_on_free_ports(layout, attempts=attempts, timeout=timeout)
    except BaseException as exc:
        if isinstance(exc, Exception):
            _say(
                f"failed: {exc}\n---- tail of {layout.console_log} ----\n"
                f"{layout.console_tail()}\n----"
            )
        layout.state_file.unlink(missing_ok=True)
        if not keep:
            _remove_workdir(layout.workdir)
        raise


# ---------------------------------------------------------------------------------- CLI


def _cmd_ensure(args: argparse.Namespace) -> int:
    home = ensure_distribution(args.version)
    sys.stdout.write(f"{home}\n")
    return 0


def _cmd_start(args: argparse.Namespace) -> int:
    node = start_node(
        workdir=args.workdir,
        heap_mb=args.heap_mb,
        version=args.version,
        state_file=args.state,
        timeout=args.timeout,
        keep=args.keep,
        secured=Secured() if args.secured else None,
    )
    if node.access.ca_file is not None:
        _say(
            f"secured: CA {node.access.ca_file}; user admin, password in {node.state_file} "
            "(key 'password')"
        )
    _say(f"state file {node.state_file}; stop with: {sys.argv[0]} stop --state {node.state_file}")
    sys.stdout.write(f"{node.url}\n")
    return 0


def _cmd_stop(args: argparse.Namespace) -> int:
    state_file: Path = args.state
    if not state_file.is_file():
        _say(f"no state file {state_file}: nothing to stop")
        return 0
    node = NodeHandle.from_state(state_file)
    was_up = stop_pid(node.pid, node.started_ticks, args.timeout)
    _say(f"pid {node.pid} {'stopped' if was_up else 'was not running'}")
    state_file.unlink(missing_ok=True)
    if not (args.keep or node.keep):
        _remove_workdir(node.workdir)
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    state_file: Path = args.state
    health = None
    if state_file.is_file():
        node = NodeHandle.from_state(state_file)
        if node.is_running():
            health = node.health()
    if health is None:
        sys.stdout.write("down\n")
        return 1
    sys.stdout.write(json.dumps(health, indent=2) + "\n")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="A real OpenSearch node for tests (no Docker), plain or secured."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    ensure = commands.add_parser("ensure", help="fetch and unpack the distribution")
    ensure.add_argument("--version", help="one version instead of the newest that resolves")
    ensure.set_defaults(run=_cmd_ensure)

    start = commands.add_parser("start", help="start a node; print its URL")
    start.add_argument("--version", help="one version instead of the newest that resolves")
    start.add_argument("--workdir", type=Path, help="new or empty dir (default /tmp/osnode-*)")
    start.add_argument("--state", type=Path, help="state file (default <workdir>/node.json)")
    start.add_argument("--heap-mb", type=int, default=512, help="JVM heap (default 512)")
    start.add_argument("--timeout", type=float, default=120.0, help="seconds to reach yellow")
    start.add_argument("--keep", action="store_true", help="keep the workdir on stop/failure")
    start.add_argument(
        "--secured",
        action="store_true",
        help="security plugin, HTTPS with a throwaway CA, user admin (password in the state file)",
    )
    start.set_defaults(run=_cmd_start)

    stop = commands.add_parser("stop", help="stop the node of a state file")
    stop.add_argument("--state", type=Path, required=True)
    stop.add_argument("--keep", action="store_true", help="keep the workdir")
    stop.add_argument("--timeout", type=float, default=30.0, help="seconds before SIGKILL")
    stop.set_defaults(run=_cmd_stop)

    status = commands.add_parser("status", help="print health JSON, or 'down' (exit 1)")
    status.add_argument("--state", type=Path, required=True)
    status.set_defaults(run=_cmd_status)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except NodeError as exc:
        _say(f"error: {exc}")
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
