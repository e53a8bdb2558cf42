"""``mahavishnu-dlq serve``: a real uvicorn process, its one-time sign-in link, and
its refusal to expose a console without tokens."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from mahavishnu_dlq.cli.app import run_cli
from mahavishnu_dlq.cli.serve import is_loopback

from .conftest import OPERATOR_TOKEN


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def serve_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAHAVISHNU_DLQ_")}
    env.update(XDG_STATE_HOME=str(tmp_path), MAHAVISHNU_DLQ_STORE="sqlite")
    return env


def wait_until_listening(port: int, process: subprocess.Popen[str], seconds: float = 30) -> None:
    """Poll the port (the server's readiness), failing early if the process ended."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"serve exited with {process.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port} after {seconds} s")


@pytest.fixture
def served(serve_env: dict[str, str]) -> Iterator[tuple[subprocess.Popen[str], int]]:
    port = free_port()
    process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "mahavishnu_dlq", "serve", "--port", str(port)],
        env=serve_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until_listening(port, process)
        yield process, port
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=10)  # reaps it and closes the pipes


def test_serve_prints_a_one_time_sign_in_link_that_works(
    served: tuple[subprocess.Popen[str], int],
) -> None:
    process, port = served
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    link = urlsplit(line)
    assert (link.scheme, link.netloc, link.path) == ("http", f"127.0.0.1:{port}", "/login")
    token = parse_qs(link.query)["token"][0]
    assert len(token) >= 32
    base = f"http://127.0.0.1:{port}"
    assert httpx.get(f"{base}/api/v1/health").json()["backend"] == "sqlite"
    assert httpx.get(f"{base}/api/v1/stats").status_code == 401
    stats = httpx.get(f"{base}/api/v1/stats", headers={"Authorization": f"Bearer {token}"})
    assert stats.status_code == 200
    assert stats.json()["backend"] == "sqlite"
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=30) == 130  # Ctrl-C: the CLI's "interrupted"
    assert process.stderr is not None
    said = process.stderr.read()
    assert "console of the sqlite store" in said
    assert "Traceback" not in said


def test_serve_with_tokens_prints_no_link(serve_env: dict[str, str]) -> None:
    port = free_port()
    env = {
        **serve_env,
        "MAHAVISHNU_DLQ_WEB__TOKENS": f'[{{"name": "ops", "token": "{OPERATOR_TOKEN}"}}]',
    }
    process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "mahavishnu_dlq", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until_listening(port, process)
        answer = httpx.get(
            f"http://127.0.0.1:{port}/api/v1/stats",
            headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"},
        )
        assert answer.status_code == 200
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=30)
        assert process.returncode == 0  # a service manager's stop is a normal end
        assert "token=" not in out
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=10)


def test_serve_refuses_a_public_address_without_tokens(
    serve_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in [n for n in os.environ if n.startswith("MAHAVISHNU_DLQ_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_STATE_HOME", serve_env["XDG_STATE_HOME"])
    assert run_cli(["serve", "--host", "0.0.0.0"]) == 2  # noqa: S104 - refused, never bound
    error = capsys.readouterr().err
    assert "refusing to listen on 0.0.0.0" in error
    assert "web.tokens" in error


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),  # noqa: S104 - a string under test
        ("::", False),
        ("192.168.1.4", False),
        ("example.com", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
