"""A throwaway Redis server for the engine tests: Debian's ``redis-server`` on a free
loopback port, nothing persisted, stopped by its pid at the end of the session."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .waiting import stop

#: Point the engine tests at a running Redis instead of starting one.
REDIS_URL_VAR = "MAHAVISHNU_DLQ_TEST_REDIS_URL"
#: The redis-server binary (default: the one on PATH, from Debian's package).
REDIS_SERVER_VAR = "MAHAVISHNU_DLQ_TEST_REDIS_SERVER"


class RedisUnavailableError(RuntimeError):
    """No redis-server to start."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextmanager
def redis_server(workdir: Path, *, start_timeout: float = 20.0) -> Iterator[str]:
    """Start ``redis-server`` in ``workdir``; yield its URL; stop it (by its pid)."""
    binary = os.environ.get(REDIS_SERVER_VAR) or shutil.which("redis-server")
    if binary is None:
        raise RedisUnavailableError(
            "redis-server not found: install Debian's redis-server (scripts/test does) "
            f"or set {REDIS_URL_VAR} to a running one"
        )
    port = _free_port()
    log = workdir / "redis.log"
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
    args += ["no", "--dir", str(workdir), "--logfile", str(log), "--protected-mode", "no"]
    process = subprocess.Popen(args, stdin=subprocess.DEVNULL)  # noqa: S603 - our own args
    try:
        deadline = time.monotonic() + start_timeout
        while not _answers(port):  # a server starting: real time, bounded
            if process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {process.returncode}: {_tail(log)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not answer in {start_timeout:g}s")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop(process, timeout=10)


def _tail(log: Path) -> str:
    try:
        return log.read_text(errors="replace")[-2000:]
    except OSError:
        return "(no log)"
