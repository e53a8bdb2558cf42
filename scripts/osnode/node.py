"""One node: its work directory (`NodeLayout`), its process (`NodeHandle`), how it is laid
out (`prepare_node`, plain or `Secured`) and started (`spawn_node`, `launch_node`)."""

from __future__ import annotations

import contextlib
import errno
import http.client
import json
import os
import pwd
import secrets
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from .common import CLUSTER_NAME, SYSTEM_PATH, NodeError, PortTakenError, _say, _tool
from .distribution import (
    SECURED_SUFFIX,
    ensure_distribution,
    ensure_secured_distribution,
    find_java_home,
)
from .processes import (
    PLAIN,
    Access,
    _is_alive,
    _node_account,
    _proc_stat,
    _tail,
    _wait_gone,
    cluster_health,
    free_port,
    http_get,
    port_is_free,
    signal_group,
    stop_pid,
)
from .security import SecuredUser, make_pki, write_security_config

WORKDIR_MARKER = ".mahavishnu-dlq-node"
MAIN_CLASS = b"org.opensearch.bootstrap.OpenSearch"


@dataclass(frozen=True)
class NodeLayout:
    """A prepared work directory: everything a node process needs except its ports.

    Made by `prepare_node`; every `launch_node` / `spawn_node` on it runs a node on the same
    data, so a node restarted on it finds what an earlier one wrote.
    """

    workdir: Path
    version: str
    install: Path
    config: Path
    java_home: Path
    account: pwd.struct_passwd | None
    heap_mb: int
    state_file: Path
    keep: bool = False
    node_name: str = "node-1"
    #: every node of a cluster, as (name, transport port); empty: a single-node cluster
    cluster_nodes: tuple[tuple[str, int], ...] = ()
    access: Access = PLAIN

    @property
    def console_log(self) -> Path:
        """The node's stdout and stderr, appended to by every start."""
        return self.workdir / "console.log"

    def console_tail(self, lines: int = 60) -> str:
        """The last ``lines`` of the console log (for error reports)."""
        return _tail(self.console_log, lines)

    def wipe(self, attempt: int) -> None:
        """Set the console log aside and empty data/ and logs/ (after a failed first start)."""
        if self.console_log.exists():
            self.console_log.rename(self.workdir / f"console.attempt-{attempt}.log")
        for name in ("data", "logs"):
            shutil.rmtree(self.workdir / name)
            (self.workdir / name).mkdir()
            if self.account is not None:
                os.chown(self.workdir / name, self.account.pw_uid, self.account.pw_gid)


@dataclass
class NodeHandle:
    """A running node: its URL and pid, and how to stop it."""

    url: str
    pid: int
    workdir: Path
    version: str
    state_file: Path
    http_port: int
    transport_port: int
    started_ticks: int | None = None
    keep: bool = False
    access: Access = PLAIN
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)

    def health(self, timeout: float = 5.0) -> dict[str, Any] | None:
        """Cluster health, or None if the node does not answer."""
        return cluster_health(self.url, timeout, self.access)

    def is_running(self) -> bool:
        """Whether the node's process is still there (a SIGSTOPped one is)."""
        return _is_alive(self.pid, self.started_ticks)

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the node's process group, if the node is still running."""
        if self.is_running():
            signal_group(self.pid, sig)

    def kill(self, timeout: float = 10.0) -> None:
        """SIGKILL the node's process group; return once the node is gone (and reaped)."""
        self.signal(signal.SIGKILL)
        if not _wait_gone(self.pid, self.started_ticks, timeout):
            raise NodeError(f"pid {self.pid} survived SIGKILL for {timeout:g}s")
        self._reap()

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Return once the node answers with health yellow or green.

        Raises `PortTakenError` if the node exited because a port was taken, `NodeError` if
        it exited otherwise or is not ready after ``timeout`` (it is left running then).
        """
        _wait_ready(self, timeout)

    def stop(self, keep: bool | None = None, timeout: float = 30.0) -> None:
        """Stop the node by its pid; remove the work directory unless ``keep``."""
        stop_pid(self.pid, self.started_ticks, timeout)
        self._reap()
        self.state_file.unlink(missing_ok=True)
        if not (self.keep if keep is None else keep):
            _remove_workdir(self.workdir)

    def _reap(self) -> None:
        if self._process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=5)

    def to_state(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "url": self.url,
            "workdir": str(self.workdir),
            "version": self.version,
            "http_port": self.http_port,
            "transport_port": self.transport_port,
            "started_ticks": self.started_ticks,
            "keep": self.keep,
            "console_log": str(self.workdir / "console.log"),
            "ca_file": None if self.access.ca_file is None else str(self.access.ca_file),
            "user": self.access.user,
            "password": self.access.password,
        }

    @classmethod
    def from_state(cls, state_file: Path) -> NodeHandle:
        state = json.loads(state_file.read_text())
        ca_file = state.get("ca_file")
        access = Access(
            ca_file=None if ca_file is None else Path(ca_file),
            user=state.get("user"),
            password=state.get("password"),
        )
        return cls(
            url=str(state["url"]),
            pid=int(state["pid"]),
            workdir=Path(state["workdir"]),
            version=str(state["version"]),
            state_file=state_file,
            http_port=int(state["http_port"]),
            transport_port=int(state["transport_port"]),
            started_ticks=state.get("started_ticks"),
            keep=bool(state.get("keep", False)),
            access=access,
        )

    def __enter__(self) -> NodeHandle:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _remove_workdir(workdir: Path) -> None:
    """Remove a work directory this script made (it carries our marker), nothing else."""
    if (workdir / WORKDIR_MARKER).is_file():
        shutil.rmtree(workdir, ignore_errors=True)
    elif workdir.exists():
        _say(f"not removing {workdir}: it has no {WORKDIR_MARKER}")


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError as exc:
        if exc.errno not in {errno.EXDEV, errno.EPERM, errno.EMLINK}:
            raise
        shutil.copy2(src, dst)


def _check_reachable(workdir: Path, account: pwd.struct_passwd) -> None:
    """Fail clearly if the node user cannot traverse to ``workdir`` (e.g. a 0700 parent)."""
    groups = {account.pw_gid, *os.getgrouplist(account.pw_name, account.pw_gid)}
    for directory in workdir.parents:
        info = directory.stat()
        if info.st_uid == account.pw_uid:
            allowed = bool(info.st_mode & stat.S_IXUSR)
        elif info.st_gid in groups:
            allowed = bool(info.st_mode & stat.S_IXGRP)
        else:
            allowed = bool(info.st_mode & stat.S_IXOTH)
        if not allowed:
            mode = stat.S_IMODE(info.st_mode)
            raise NodeError(
                f"user {account.pw_name} cannot reach {workdir}: {directory} is mode "
                f"{mode:04o} (it needs o+x)"
            )


def _prepare_workdir(
    workdir: Path, home: Path, account: pwd.struct_passwd | None
) -> tuple[Path, Path]:
    """Lay out data/logs/tmp/config (and the staged install); return (install, config)."""
    if any(char.isspace() or char == ":" for char in str(workdir)):
        # jvm.options paths are word-split by bin/opensearch and ':' ends an -Xlog file name
        raise NodeError(f"work directory path must have no spaces or colons: {workdir}")
    if account is not None:
        _check_reachable(workdir, account)
    for name in ("data", "logs", "tmp"):
        (workdir / name).mkdir()
    config = workdir / "config"
    shutil.copytree(home / "config", config)
    jvm_options = config / "jvm.options"
    text = jvm_options.read_text()
    text = text.replace("-XX:HeapDumpPath=data", f"-XX:HeapDumpPath={workdir / 'data'}")
    text = text.replace("=logs/", f"={workdir / 'logs'}/")
    jvm_options.write_text(text)
    install = home
    if account is not None:
        # The cache lives under root's home (mode 0700): give the node its own view of the
        # install. Hard links cost nothing and stay root-owned, read-only to the node user.
        install = workdir / "opensearch"
        shutil.copytree(home, install, copy_function=_link_or_copy, symlinks=True)
        for path in [workdir, *(workdir / n for n in ("data", "logs", "tmp"))]:
            os.chown(path, account.pw_uid, account.pw_gid)
        for directory, _dirs, files in os.walk(config):
            os.chown(directory, account.pw_uid, account.pw_gid)
            for name in files:
                os.chown(Path(directory, name), account.pw_uid, account.pw_gid)
    return install, config


def _spawn(layout: NodeLayout, http_port: int, transport_port: int) -> subprocess.Popen[bytes]:
    workdir = layout.workdir
    settings = {
        "cluster.name": CLUSTER_NAME,
        "node.name": layout.node_name,
        "network.host": "127.0.0.1",
        "http.port": str(http_port),
        "transport.port": str(transport_port),
        "path.data": str(workdir / "data"),
        "path.logs": str(workdir / "logs"),
        "cluster.routing.allocation.disk.threshold_enabled": "false",
    }
    if layout.cluster_nodes:
        others = [f"127.0.0.1:{port}" for _name, port in layout.cluster_nodes]
        settings["discovery.seed_hosts"] = ",".join(others)
        names = ",".join(name for name, _port in layout.cluster_nodes)
        settings["cluster.initial_cluster_manager_nodes"] = names
    else:
        settings["discovery.type"] = "single-node"
    argv = [str(layout.install / "bin" / "opensearch")]
    argv += [f"-E{key}={value}" for key, value in settings.items()]
    if layout.account is not None:
        argv = [
            _tool("setpriv"),
            f"--reuid={layout.account.pw_uid}",
            f"--regid={layout.account.pw_gid}",
            "--init-groups",
            "--",
            *argv,
        ]
    env = {
        "PATH": f"{os.environ.get('PATH', SYSTEM_PATH)}:{SYSTEM_PATH}",
        "HOME": str(workdir),
        "LANG": "C.UTF-8",
        "JAVA_HOME": str(layout.java_home),
        "OPENSEARCH_JAVA_HOME": str(layout.java_home),
        "OPENSEARCH_JAVA_OPTS": f"-Xms{layout.heap_mb}m -Xmx{layout.heap_mb}m",
        "OPENSEARCH_PATH_CONF": str(layout.config),
        "OPENSEARCH_TMPDIR": str(workdir / "tmp"),
    }
    with layout.console_log.open("ab") as console:
        return subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            argv,
            stdin=subprocess.DEVNULL,
            stdout=console,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=workdir,
            start_new_session=True,  # its own process group: stop signals exactly that
        )


def _wait_ready(handle: NodeHandle, timeout: float) -> None:
    started = time.monotonic()
    deadline = started + timeout
    last_report = started
    console = handle.workdir / "console.log"
    path = "/_cluster/health?wait_for_status=yellow&timeout=5s"
    while True:
        code = handle._process.poll() if handle._process is not None else None
        if code is not None or not handle.is_running():
            log = _tail(console, 400)
            if "BindException" in log or "Address already in use" in log:
                raise PortTakenError(f"node exited with {code}: a port was taken (see {console})")
            raise NodeError(f"node exited with {code} before it was ready (see {console})")
        try:
            status, body = http_get(handle.url, path, timeout=10, access=handle.access)
        except (OSError, http.client.HTTPException):
            status, body = 0, b""
        if status == 200 and json.loads(body).get("status") in {"yellow", "green"}:
            _say(f"ready after {time.monotonic() - started:.1f}s")
            return
        now = time.monotonic()
        if now >= deadline:
            raise NodeError(f"node not yellow after {timeout:.0f}s (last HTTP status {status})")
        if now - last_report >= 5:
            state = f"HTTP {status}" if status else "not answering yet"
            _say(f"waiting for {handle.url}: {state} ({now - started:.0f}s)")
            last_report = now
        time.sleep(0.25)


@dataclass(frozen=True)
class Secured:
    """A secured node: the security plugin, TLS on HTTP and transport, internal users.

    ``users`` (name to `SecuredUser`) and ``roles`` (name to a role as the plugin's
    ``roles.yml`` has it) come on top of the super-user ``admin``, whose password is
    made at start. ``clients`` get a client certificate each (``config/<name>.pem`` and
    ``<name>-key.pem``), whose CN is the user they log in as.
    """

    users: Mapping[str, SecuredUser] = field(default_factory=dict)
    roles: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    clients: Sequence[str] = ()

    def configure(self, config: Path, account: pwd.struct_passwd | None) -> Access:
        """Write the PKI and the security configuration into ``config``; return how this
        script reaches the node (as ``admin``)."""
        password = secrets.token_urlsafe(18)
        users = {"admin": SecuredUser(password, ("all_access",)), **self.users}
        pki = make_pki(config, self.clients)
        write_security_config(config, users=users, roles=self.roles)
        if account is not None:
            for directory, _dirs, files in os.walk(config):
                os.chown(directory, account.pw_uid, account.pw_gid)
                for name in files:
                    os.chown(Path(directory, name), account.pw_uid, account.pw_gid)
        for path in config.glob("*.pem"):  # the tests read them too
            path.chmod(0o644)
        return Access(ca_file=pki.ca_file, user="admin", password=password)


def prepare_node(
    workdir: Path | None = None,
    heap_mb: int = 512,
    *,
    version: str | None = None,
    state_file: Path | None = None,
    keep: bool = False,
    secured: Secured | None = None,
    node_name: str = "node-1",
    cluster_nodes: Sequence[tuple[str, int]] = (),
) -> NodeLayout:
    """Fetch the distribution if needed and lay out a work directory for a node.

    ``workdir`` (default: a fresh ``/tmp/osnode-*``) must be new or empty; it will hold
    data, logs, config, the console log and, by default, the state file ``node.json``.
    Run as root, the node user must be able to traverse to it. On failure the work directory
    is removed unless ``keep``.

    ``secured`` installs the security plugin and configures TLS and its users (`Secured`);
    ``cluster_nodes`` (name, transport port) of every node makes this one node ``node_name``
    of a cluster instead of a single-node one.
    """
    home = ensure_secured_distribution(version) if secured else ensure_distribution(version)
    java_home = find_java_home()
    account = _node_account()
    if workdir is None:
        workdir = Path(tempfile.mkdtemp(prefix="osnode-"))
    else:
        workdir = workdir.expanduser().resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        if any(workdir.iterdir()):
            raise NodeError(f"work directory is not empty: {workdir}")
    (workdir / WORKDIR_MARKER).write_text("made by scripts/opensearch_node.py\n")
    state_file = (state_file or workdir / "node.json").expanduser().resolve()
    access = PLAIN
    try:
        install, config = _prepare_workdir(workdir, home, account)
        if secured is not None:
            access = secured.configure(config, account)
    except BaseException as exc:
        if isinstance(exc, Exception):
            _say(f"failed: {exc}")
        if not keep:
            _remove_workdir(workdir)
        raise
    user = account.pw_name if account is not None else pwd.getpwuid(os.geteuid()).pw_name
    _say(f"OpenSearch {home.name}, Java at {java_home}, user {user}, workdir {workdir}")
    return NodeLayout(
        workdir=workdir,
        version=home.name.removesuffix(SECURED_SUFFIX),
        install=install,
        config=config,
        java_home=java_home,
        account=account,
        heap_mb=heap_mb,
        state_file=state_file,
        keep=keep,
        node_name=node_name,
        cluster_nodes=tuple(cluster_nodes),
        access=access,
    )


def spawn_node(layout: NodeLayout, http_port: int, transport_port: int) -> NodeHandle:
    """Start a node process on ``layout`` and these ports; return at once (not yet ready).

    Raises `PortTakenError` without starting anything if a port is taken.
    """
    for port in (http_port, transport_port):
        if not port_is_free(port):
            raise PortTakenError(f"port {port} on 127.0.0.1 is taken")
    process = _spawn(layout, http_port, transport_port)
    proc = _proc_stat(process.pid)
    handle = NodeHandle(
        url=f"{layout.access.scheme}://127.0.0.1:{http_port}",
        pid=process.pid,
        workdir=layout.workdir,
        version=layout.version,
        state_file=layout.state_file,
        http_port=http_port,
        transport_port=transport_port,
        started_ticks=proc[1] if proc is not None else None,
        keep=layout.keep,
        access=layout.access,
        _process=process,
    )
    layout.state_file.parent.mkdir(parents=True, exist_ok=True)
    layout.state_file.write_text(json.dumps(handle.to_state(), indent=2) + "\n")
    _say(f"started pid {process.pid}, waiting for {handle.url}")
    return handle


def launch_node(
    layout: NodeLayout, http_port: int, transport_port: int, *, timeout: float = 120.0
) -> NodeHandle:
    """Start a node on ``layout`` and these ports; return once it is yellow.

    On failure the process is gone (`PortTakenError` if a port was taken).
    """
    handle = spawn_node(layout, http_port, transport_port)
    try:
        handle.wait_ready(timeout)
    except BaseException:
        stop_pid(handle.pid, handle.started_ticks, timeout=10)
        handle._reap()
        raise
    return handle


def launch_on_free_ports(
    layout: NodeLayout, *, attempts: int = 3, timeout: float = 120.0, stable: bool = False
) -> NodeHandle:
    """`launch_node` on free ports, again on new ones (and wiped data) if one was taken.

    ``stable`` takes ports below the ephemeral range (see `free_port`), for a node that is
    to be restarted on the same ports.
    """
    for attempt in range(1, attempts + 1):
        http_port = free_port(stable=stable)
        transport_port = free_port(stable=stable)
        while transport_port == http_port:
            transport_port = free_port(stable=stable)
        try:
            return launch_node(layout, http_port, transport_port, timeout=timeout)
        except PortTakenError as exc:
            _say(f"attempt {attempt}: {exc}")
            layout.wipe(attempt)
    raise NodeError(f"no free ports after {attempts} attempts")
