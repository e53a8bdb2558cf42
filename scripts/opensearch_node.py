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
import contextlib
import errno
import fcntl
import http.client
import json
import os
import pwd
import random
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

GROUP_ID = "org.opensearch.distribution.integ-test-zip"
ARTIFACT_ID = "opensearch"
# Newest first; `ensure` stops at the first one that mvn resolves.
CANDIDATE_VERSIONS: tuple[str, ...] = (
    "2.19.6",
    "2.19.5",
    "2.19.4",
    "2.19.3",
    "2.19.2",
    "2.19.1",
    "2.19.0",
)
NODE_USER = "mahavishnu-os"
CLUSTER_NAME = "mahavishnu-dlq-test"
CACHE_ENV = "MAHAVISHNU_DLQ_OPENSEARCH_CACHE"
VERSION_ENV = "MAHAVISHNU_DLQ_OPENSEARCH_VERSION"
JAVA_MIN, JAVA_MAX = 11, 23
COMPLETE_MARKER = ".mahavishnu-dlq-complete"
WORKDIR_MARKER = ".mahavishnu-dlq-node"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MAIN_CLASS = b"org.opensearch.bootstrap.OpenSearch"


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


# --------------------------------------------------------------------------- distribution


def cache_root() -> Path:
    """Where versions are unpacked: ``$MAHAVISHNU_DLQ_OPENSEARCH_CACHE`` or the default."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser().resolve()
    return Path.home() / ".cache" / "mahavishnu-dlq" / "opensearch"


def _is_installed(home: Path) -> bool:
    return (home / COMPLETE_MARKER).is_file() and (home / "bin" / "opensearch").is_file()


@contextlib.contextmanager
def _locked(lock_file: Path) -> Iterator[None]:
    """Serialize `ensure` across processes (pytest-xdist workers, parallel shells)."""
    with lock_file.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _unzip(archive: Path, dest: Path) -> None:
    """Extract with read-only, world-readable modes, keeping the x bits.

    zipfile drops the Unix modes (bin/ would lose its x bit), and the zip's own modes make
    config/ 0660/0750, unreadable to a node user who does not own the install.
    """
    dest_resolved = dest.resolve()
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            target = (dest / info.filename).resolve()
            if dest_resolved not in target.parents and target != dest_resolved:
                raise NodeError(f"{archive.name}: entry {info.filename!r} escapes the target")
            zf.extract(info, dest)
            executable = info.is_dir() or (info.external_attr >> 16) & 0o100
            target.chmod(0o755 if executable else 0o644)


def _download(version: str, root: Path) -> Path:
    mvn = _tool("mvn")
    artifact = f"{GROUP_ID}:{ARTIFACT_ID}:{version}:zip"
    with tempfile.TemporaryDirectory(prefix=".download-", dir=root) as tmp_name:
        tmp = Path(tmp_name)
        command = [
            mvn,
            "-B",
            "-q",
            "dependency:copy",
            f"-Dartifact={artifact}",
            f"-DoutputDirectory={tmp / 'zip'}",
        ]
        _say(f"resolving {artifact} with mvn ...")
        result = subprocess.run(  # noqa: S603 - fixed argv, no shell
            command, capture_output=True, text=True, check=False, timeout=1800
        )
        if result.returncode != 0:
            lines = (result.stdout + result.stderr).strip().splitlines()
            errors = [line for line in lines if "ERROR" in line] or lines
            raise _UnresolvedError(
                f"{version}: mvn exit {result.returncode}: {' | '.join(errors[:2])}"
            )
        archives = sorted((tmp / "zip").glob("*.zip"))
        if not archives:
            raise _UnresolvedError(f"{version}: mvn succeeded but left no zip in {tmp / 'zip'}")
        _unzip(archives[0], tmp / "unpacked")
        unpacked = tmp / "unpacked" / f"opensearch-{version}"
        if not (unpacked / "bin" / "opensearch").is_file():
            raise NodeError(f"{archives[0].name} has no opensearch-{version}/bin/opensearch")
        (unpacked / COMPLETE_MARKER).write_text(
            json.dumps({"artifact": artifact, "unpacked_at": time.time()}) + "\n"
        )
        final = root / version
        if final.exists():  # an unfinished earlier attempt
            shutil.rmtree(final)
        unpacked.rename(final)
    return final


def ensure_distribution(version: str | None = None) -> Path:
    """Return the unpacked distribution's home, fetching it with mvn the first time.

    Without ``version`` (or ``$MAHAVISHNU_DLQ_OPENSEARCH_VERSION``) it takes the newest
    cached candidate, else downloads the newest candidate that mvn resolves.
    """
    pinned = version or os.environ.get(VERSION_ENV)
    candidates = (pinned,) if pinned else CANDIDATE_VERSIONS
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / ".lock"):
        for candidate in candidates:
            if _is_installed(root / candidate):
                return root / candidate
        refused: list[str] = []
        for candidate in candidates:
            try:
                home = _download(candidate, root)
            except _UnresolvedError as exc:
                _say(f"not resolved: {exc}")
                refused.append(str(exc))
                continue
            if refused:
                _say(f"refused before {candidate}: {len(refused)} version(s)")
            return home
    raise NodeError("no OpenSearch distribution resolved:\n  " + "\n  ".join(refused))


# --------------------------------------------------------------------------------- java


def _java_major(java_home: Path) -> int | None:
    release = java_home / "release"
    if not release.is_file():
        return None
    for line in release.read_text(errors="replace").splitlines():
        if line.startswith("JAVA_VERSION="):
            parts = line.split("=", 1)[1].strip().strip('"').split(".")
            major = parts[1] if parts[0] == "1" and len(parts) > 1 else parts[0]
            return int(major) if major.isdigit() else None
    return None


def find_java_home() -> Path:
    """``OPENSEARCH_JAVA_HOME``, ``JAVA_HOME``, then ``java`` on PATH: first usable one."""
    candidates: list[tuple[str, Path]] = []
    for variable in ("OPENSEARCH_JAVA_HOME", "JAVA_HOME"):
        value = os.environ.get(variable)
        if value:
            candidates.append((variable, Path(value)))
    java = shutil.which("java")
    if java is not None:
        candidates.append(("java on PATH", Path(java).resolve().parent.parent))
    rejected: list[str] = []
    for origin, home in candidates:
        if not os.access(home / "bin" / "java", os.X_OK):
            rejected.append(f"{origin}={home}: no bin/java")
            continue
        major = _java_major(home)
        if major is not None and not JAVA_MIN <= major <= JAVA_MAX:
            rejected.append(f"{origin}={home}: Java {major}, need {JAVA_MIN}-{JAVA_MAX}")
            continue
        if rejected:
            _say(f"skipped JDK(s): {'; '.join(rejected)}")
        return home
    detail = "; ".join(rejected) or "no JAVA_HOME and no java on PATH"
    raise NodeError(f"no usable JDK for OpenSearch 2.x ({detail})")


# ------------------------------------------------------------------------------ process


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


def _http_get(url: str, path: str, timeout: float) -> tuple[int, bytes]:
    if not url.startswith("http://"):
        raise NodeError(f"not a plain-HTTP URL: {url}")
    host, _, port = url.removeprefix("http://").rstrip("/").partition(":")
    connection = http.client.HTTPConnection(host, int(port or 80), timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def cluster_health(url: str, timeout: float = 5.0) -> dict[str, Any] | None:
    """``GET /_cluster/health`` as a dict, or None if the node does not answer."""
    try:
        status, body = _http_get(url, "/_cluster/health", timeout)
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


# --------------------------------------------------------------------------------- node


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
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)

    def health(self, timeout: float = 5.0) -> dict[str, Any] | None:
        """Cluster health, or None if the node does not answer."""
        return cluster_health(self.url, timeout)

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
        }

    @classmethod
    def from_state(cls, state_file: Path) -> NodeHandle:
        state = json.loads(state_file.read_text())
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
        "node.name": "node-1",
        "discovery.type": "single-node",
        "network.host": "127.0.0.1",
        "http.port": str(http_port),
        "transport.port": str(transport_port),
        "path.data": str(workdir / "data"),
        "path.logs": str(workdir / "logs"),
        "cluster.routing.allocation.disk.threshold_enabled": "false",
    }
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
            status, body = _http_get(handle.url, path, timeout=10)
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


def prepare_node(
    workdir: Path | None = None,
    heap_mb: int = 512,
    *,
    version: str | None = None,
    state_file: Path | None = None,
    keep: bool = False,
) -> NodeLayout:
    """Fetch the distribution if needed and lay out a work directory for a node.

    ``workdir`` (default: a fresh ``/tmp/osnode-*``) must be new or empty; it will hold
    data, logs, config, the console log and, by default, the state file ``node.json``.
    Run as root, the node user must be able to traverse to it. On failure the work directory
    is removed unless ``keep``.
    """
    home = ensure_distribution(version)
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
    try:
        install, config = _prepare_workdir(workdir, home, account)
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
        version=home.name,
        install=install,
        config=config,
        java_home=java_home,
        account=account,
        heap_mb=heap_mb,
        state_file=state_file,
        keep=keep,
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
        url=f"http://127.0.0.1:{http_port}",
        pid=process.pid,
        workdir=layout.workdir,
        version=layout.version,
        state_file=layout.state_file,
        http_port=http_port,
        transport_port=transport_port,
        started_ticks=proc[1] if proc is not None else None,
        keep=layout.keep,
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


def start_node(
    workdir: Path | None = None,
    heap_mb: int = 512,
    *,
    version: str | None = None,
    state_file: Path | None = None,
    timeout: float = 120.0,
    keep: bool = False,
    attempts: int = 3,
) -> NodeHandle:
    """Start a single node on free loopback ports; return once it is yellow.

    ``workdir`` (default: a fresh ``/tmp/osnode-*``) must be new or empty; it holds data,
    logs, config, the console log and, by default, the state file ``node.json``.
    ``keep`` keeps the work directory when the node fails to start or is stopped.
    """
    layout = prepare_node(workdir, heap_mb, version=version, state_file=state_file, keep=keep)
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
            health = cluster_health(node.url)
    if health is None:
        sys.stdout.write("down\n")
        return 1
    sys.stdout.write(json.dumps(health, indent=2) + "\n")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="A real single-node OpenSearch for tests (no Docker)."
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
