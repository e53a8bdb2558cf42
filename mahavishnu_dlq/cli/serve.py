"""``mahavishnu-dlq serve``: the web console and API on uvicorn (extra ``web``).

It reads the same settings as every command. With no ``web.tokens``, it makes a
one-time operator token and prints a sign-in URL carrying it (as Jupyter does),
and refuses to listen on anything but a loopback address: a console reachable
from other hosts needs tokens. With ``--app``, retries run your handlers.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
import signal
from typing import TYPE_CHECKING, Annotated

import anyio
import typer

from mahavishnu_dlq.cli.common import EXIT_USAGE, PROG, fail, opened
from mahavishnu_dlq.cli.options import AppOption, state_of
from mahavishnu_dlq.cli.terminal import say, text_of
from mahavishnu_dlq.errors import DLQError, StoreUnavailableError

if TYPE_CHECKING:
    from mahavishnu_dlq.settings import DLQSettings

__all__ = ["is_loopback", "serve"]


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _with_token(settings: DLQSettings) -> tuple[DLQSettings, str]:
    """The settings with a one-time operator token, and the token."""
    from mahavishnu_dlq.settings import WebToken  # noqa: PLC0415 - not for --help

    token = secrets.token_urlsafe(32)
    web = settings.web.model_copy(
        update={"tokens": [WebToken(name="console", token=token, role="operator")]}
    )
    return settings.model_copy(update={"web": web}), token


def serve(
    ctx: typer.Context,
    host: Annotated[
        str | None,
        typer.Option(metavar="ADDRESS", help="Address to listen on (default: web.host)."),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(metavar="PORT", min=1, max=65535, help="Port (default: web.port)."),
    ] = None,
    app: AppOption = None,
) -> None:
    """Serve the web console and JSON API (/api/v1) until Ctrl-C or SIGTERM.

    Without web.tokens, a one-time operator token is made and a sign-in URL
    printed; then only loopback addresses are allowed.
    """
    try:
        import uvicorn  # noqa: PLC0415 - the optional extra

        from mahavishnu_dlq.web import create_app  # noqa: PLC0415
    except ModuleNotFoundError as exc:
        fail(f"serve needs the 'web' extra ({exc}): pip install 'mahavishnu-dlq[web]'")
    state = state_of(ctx)
    settings = state.settings()
    address = host or settings.web.host
    number = port or settings.web.port
    token = None
    if not settings.web.tokens:
        if not is_loopback(address):
            fail(
                f"refusing to listen on {address}: without web.tokens the console is only "
                "served on a loopback address (127.0.0.1, ::1); configure web.tokens",
                EXIT_USAGE,
            )
        settings, token = _with_token(settings)
    shown = f"[{address}]" if ":" in address else address
    base = f"http://{shown}:{number}"
    level = logging.INFO if state.verbose else logging.WARNING

    async def main() -> None:
        async with opened(state, app, create=False) as dlq:  # the console reads
            web = create_app(dlq, settings=settings)
            console = web.state.dlq_web
            console.owns_queue = console.connected = True  # connected by opened()
            say(f"{PROG}: console of the {dlq.store.backend} store on {base}/", err=True)
            if token is not None:
                say(f"{PROG}: no web.tokens: sign in with this one-time link:", err=True)
                say(f"    {base}/login?token={token}")
            config = uvicorn.Config(
                web,
                host=address,
                port=number,
                log_level=level,
                access_log=state.verbose > 0,
                lifespan="off",
                server_header=False,
            )
            # uvicorn raises the signal that stopped it again once it is done: SIGTERM
            # (a service manager's stop) then ends the command normally, exit 0
            previous = signal.signal(signal.SIGTERM, lambda *_: None)
            try:
                await uvicorn.Server(config).serve()
            finally:
                signal.signal(signal.SIGTERM, previous)

    try:
        anyio.run(main)
    except StoreUnavailableError as exc:
        fail(text_of(exc), 1)
    except DLQError as exc:
        fail(text_of(exc), 1)
    except OSError as exc:  # the address is taken or cannot be bound
        fail(f"cannot listen on {address}:{number}: {exc.strerror or exc}", 1)
