"""Processes, ports and HTTP: what starting, watching and stopping a node is made of."""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import pwd
import random
import signal
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .common import NODE_USER, NodeError, _say, _tool


def _ephemeral_range() -> tuple[int, int]:
    """The kernel's range for the local ports of outgoing connections."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def port_is_free(port: int) -> bool:
    """Whether a server could bind ``127.0.0.1:port`` now.

    Binds as the node does (``SO_REUSEADDR``), so connections of an earlier node that linger
    in ``TIME_WAIT`` do not count as taking the port; a listening socket does.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port(*, stable: bool = False) -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago.

    ``stable`` picks one below the kernel's ephemeral range, which no outgoing connection
    takes as its local port: a node restarted on it later finds it free unless another
    server took it meanwhile.
    """
    low, _high = _ephemeral_range()
    if stable and low > 11000:  # else: no room below it, take an ephemeral one after all
        for _ in range(200):
            port = random.randint(10000, low - 1)
            if port_is_free(port):
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _node_account() -> pwd.struct_passwd | None:
    """The unprivileged account to run as, or None to run as the current (non-root) user."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(NODE_USER)
    except KeyError:
        pass
    _say(f"creating system user {NODE_USER}")
    command = [
        _tool("useradd"),
        "--system",
        "--no-create-home",
        "--shell",
        "/usr/sbin/nologin",
        NODE_USER,
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
    try:  # exit 9: created meanwhile by a concurrent start
        return pwd.getpwnam(NODE_USER)
    except KeyError:
        raise NodeError(f"useradd {NODE_USER} failed: {result.stderr.strip()}") from None


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks) of a live pid, None if there is none."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[19])


def _is_alive(pid: int, started: int | None) -> bool:
    """Whether ``pid`` is still the node we started (guards against pid reuse)."""
    proc = _proc_stat(pid)
    if proc is None:
        return False
    state, start_ticks = proc
    if state in {"Z", "X"}:  # exited; its parent reaps it (NodeHandle.stop waits on it)
        return False
    return started is None or start_ticks == started


def signal_group(pid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to the process group that ``pid`` leads (to ``pid`` alone if it leads none).

    The node is started in a session of its own, so its group holds the node's processes
    and nothing else of anyone's.
    """
    with contextlib.suppress(ProcessLookupError):
        pgid = os.getpgid(pid)
        if pgid == pid:
            os.killpg(pgid, sig)
        else:
            os.kill(pid, sig)


def _wait_gone(pid: int, started: int | None, timeout: float) -> bool:
    """Poll until ``pid`` is no longer the node; False if it still is after ``timeout``."""
    deadline = time.monotonic() + timeout
    while _is_alive(pid, started):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def stop_pid(pid: int, started: int | None = None, timeout: float = 30.0) -> bool:
    """SIGTERM the node's process group, SIGKILL after ``timeout``; True if it was up."""
    if not _is_alive(pid, started):
        return False
    signal_group(pid, signal.SIGTERM)
    signal_group(pid, signal.SIGCONT)  # a frozen (SIGSTOPped) node would sit on the SIGTERM
    if _wait_gone(pid, started, timeout):
        return True
    _say(f"pid {pid} still up after {timeout:.0f}s: SIGKILL")
    signal_group(pid, signal.SIGKILL)
    if not _wait_gone(pid, started, 10):
        raise NodeError(f"pid {pid} survived SIGKILL")
    return True


@dataclass(frozen=True)
class Access:
    """How this script talks to a node: plain HTTP, or HTTPS trusting ``ca_file`` as
    ``user`` (the secured node's admin)."""

    ca_file: Path | None = None
    user: str | None = None
    password: str | None = None

    @property
    def scheme(self) -> str:
        return "http" if self.ca_file is None else "https"


PLAIN = Access()


def http_get(url: str, path: str, timeout: float, access: Access = PLAIN) -> tuple[int, bytes]:
    """``GET path`` on the node at ``url``: (status, body)."""
    scheme, _, rest = url.partition("://")
    host, _, port = rest.rstrip("/").partition(":")
    connection: http.client.HTTPConnection
    if scheme == "https":
        context = ssl.create_default_context(
            cafile=None if access.ca_file is None else str(access.ca_file)
        )
        connection = http.client.HTTPSConnection(
            host, int(port or 443), timeout=timeout, context=context
        )
    elif scheme == "http":
        connection = http.client.HTTPConnection(host, int(port or 80), timeout=timeout)
    else:
        raise NodeError(f"not an HTTP(S) URL: {url}")
    headers = {}
    if access.user is not None:
        token = base64.b64encode(f"{access.user}:{access.password}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def cluster_health(url: str, timeout: float = 5.0, access: Access = PLAIN) -> dict[str, Any] | None:
    """``GET /_cluster/health`` as a dict, or None if the node does not answer."""
    try:
        status, body = http_get(url, "/_cluster/health", timeout, access)
    except (OSError, http.client.HTTPException):
        return None
    if status != 200:
        return None
    health: dict[str, Any] = json.loads(body)
    return health


def _tail(path: Path, lines: int = 60) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no {path})"
    return "\n".join(text.splitlines()[-lines:])
