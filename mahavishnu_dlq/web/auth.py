"""Who is asking: bearer tokens, browser sessions, roles and CSRF.

The API takes ``Authorization: Bearer <token>``. A browser signs in once with a
token (the form at ``/login``, or the sign-in URL ``serve`` prints) and gets a
session cookie: ``HttpOnly``, ``SameSite=Strict``, ``Secure`` over HTTPS, holding
the token's *name*, an expiry and a nonce signed with HMAC-SHA256 keyed by the
token itself. No server-side state: sessions survive a restart and reach every
process that has the same tokens, and removing a token from ``web.tokens`` ends
its sessions at once.

State-changing requests are POST only. One made with the session cookie must
carry the session's CSRF token (the ``csrf`` form field or the ``X-CSRF-Token``
header; an HMAC of the session's nonce), and its ``Origin`` (or ``Referer``), when
sent, must be this server's own; ``Sec-Fetch-Site: cross-site`` is refused.
A bearer request needs none of that: browsers never attach it on their own.
Viewers read; operators also act (:func:`operator`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qs, urlsplit

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from mahavishnu_dlq.printable import library_logger
from mahavishnu_dlq.settings.web import WebSettings, WebToken

from .errors import WebError

__all__ = [
    "SESSION_COOKIE",
    "Principal",
    "TokenBook",
    "audit",
    "check_same_origin",
    "csrf_checked",
    "operator",
    "optional_principal",
    "read_form",
    "viewer",
]

#: The name of the session cookie.
SESSION_COOKIE = "mahavishnu_dlq_session"
_MAX_FIELDS = 2000  # form fields: a page of selected ids and a few options
_log = library_logger("mahavishnu_dlq.web")
_BEARER = HTTPBearer(auto_error=False, description="a token of `web.tokens`")

Role = Literal["viewer", "operator"]


@dataclass(frozen=True, slots=True)
class Principal:
    """The holder of a token: its name (logged with every action), role, and how it came."""

    name: str
    role: Role
    via: Literal["bearer", "session"]
    #: the session's CSRF token (forms carry it); None for bearer requests
    csrf: str | None = None

    @property
    def can_act(self) -> bool:
        """Whether this principal may change anything."""
        return self.role == "operator"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class TokenBook:
    """The tokens that may sign in, checked in constant time."""

    def __init__(self, settings: WebSettings) -> None:
        self._tokens = list(settings.tokens)
        self._session_seconds = settings.session_hours * 3600

    @property
    def empty(self) -> bool:
        """No token is configured: every request but health is refused."""
        return not self._tokens

    def find(self, secret: str) -> WebToken | None:
        """The entry holding ``secret``, compared in constant time against each."""
        given = secret.encode("utf-8", "surrogatepass")
        found: WebToken | None = None
        for token in self._tokens:
            if hmac.compare_digest(token.token.get_secret_value().encode("utf-8"), given):
                found = token
        return found

    def _by_name(self, name: str) -> WebToken | None:
        return next((token for token in self._tokens if token.name == name), None)

    @staticmethod
    def _sign(token: WebToken, purpose: str, *parts: str) -> str:
        key = token.token.get_secret_value().encode("utf-8")
        message = "|".join((purpose, *parts)).encode("utf-8")
        return _b64(hmac.new(key, message, hashlib.sha256).digest())

    def session_for(self, token: WebToken, now: float | None = None) -> str:
        """A new session cookie value for ``token``."""
        expires = str(int((time.time() if now is None else now) + self._session_seconds))
        nonce = secrets.token_urlsafe(16)
        name = _b64(token.name.encode("utf-8"))
        return ".".join((name, expires, nonce, self._sign(token, "session", name, expires, nonce)))

    def from_session(self, value: str, now: float | None = None) -> Principal | None:
        """The principal of a session cookie; None when forged, expired or revoked."""
        parts = value.split(".")
        if len(parts) != 4 or len(value) > 512:
            return None
        name_b64, expires, nonce, signature = parts
        try:
            name = base64.urlsafe_b64decode(name_b64 + "=" * (-len(name_b64) % 4)).decode("utf-8")
            deadline = int(expires)
        except (ValueError, UnicodeDecodeError):
            return None
        token = self._by_name(name)
        if token is None:
            return None
        expected = self._sign(token, "session", name_b64, expires, nonce)
        if not hmac.compare_digest(expected, signature):
            return None
        if deadline < (time.time() if now is None else now):
            return None
        csrf = self._sign(token, "csrf", nonce)
        return Principal(token.name, token.role, "session", csrf)

    @property
    def session_seconds(self) -> int:
        """How long a session lasts (the cookie's Max-Age)."""
        return int(self._session_seconds)


def _book(request: Request) -> TokenBook:
    book: TokenBook = request.app.state.dlq_web.tokens
    return book


async def optional_principal(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Depends(_BEARER),  # noqa: B008
) -> Principal | None:
    """The caller, from a bearer token or the session cookie; None when neither."""
    book = _book(request)
    if credentials is not None:
        token = book.find(credentials.credentials)
        if token is None:
            raise WebError(401, "unauthorized", "unknown token")
        return Principal(token.name, token.role, "bearer")
    if request.headers.get("authorization"):
        raise WebError(401, "unauthorized", "the Authorization header must be 'Bearer <token>'")
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        return book.from_session(cookie)
    return None


async def viewer(principal: Principal | None = Depends(optional_principal)) -> Principal:  # noqa: B008
    """Any signed-in caller (401 otherwise)."""
    if principal is None:
        raise WebError(401, "unauthorized", "sign in: a bearer token or a session is needed")
    return principal


def check_same_origin(request: Request) -> None:
    """Refuse a cross-site browser request (403): Origin, Referer, Sec-Fetch-Site."""
    if request.headers.get("sec-fetch-site", "") == "cross-site":
        raise WebError(403, "forbidden", "cross-site request refused")
    own = f"{request.url.scheme}://{request.url.netloc}"
    origin = request.headers.get("origin")
    if origin is None and (referer := request.headers.get("referer")):
        parts = urlsplit(referer)
        origin = f"{parts.scheme}://{parts.netloc}"
    if origin is not None and origin != own:
        raise WebError(403, "forbidden", "request from another origin refused")


async def csrf_checked(request: Request, principal: Principal) -> None:
    """For a session principal: same origin and the session's CSRF token (403 otherwise)."""
    if principal.via != "session":
        return
    check_same_origin(request)
    given = request.headers.get("x-csrf-token")
    if given is None:
        given = (await read_form(request)).get("csrf", [None])[0]
    if not given or principal.csrf is None or not hmac.compare_digest(given, principal.csrf):
        raise WebError(403, "csrf", "missing or wrong CSRF token; reload the page and try again")


async def read_form(request: Request) -> dict[str, list[str]]:
    """The urlencoded form of a POST (empty for other bodies), read once per request."""
    form: dict[str, list[str]] | None = getattr(request.state, "form", None)
    if form is None:
        form = {}
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind == "application/x-www-form-urlencoded":
            text = (await request.body()).decode("utf-8", "replace")
            try:
                form = parse_qs(text, keep_blank_values=True, max_num_fields=_MAX_FIELDS)
            except ValueError as exc:
                raise WebError(400, "invalid", f"form: {exc}") from exc
        request.state.form = form
    return form


def audit(principal: Principal, action: str, outcome: str, **fields: object) -> None:
    """Log one action of the console (``dlq.web.action``) with the token's name."""
    _log.info(
        "web %s by %s: %s",
        action,
        principal.name,
        outcome,
        extra={
            "action": "dlq.web.action",
            "web_action": action,
            "token_name": principal.name,
            "outcome": outcome,
            **fields,
        },
    )


async def operator(request: Request, principal: Principal = Depends(viewer)) -> Principal:  # noqa: B008
    """A caller allowed to act: role operator (403 otherwise), CSRF-checked for sessions."""
    if not principal.can_act:
        raise WebError(403, "forbidden", f"token {principal.name!r} is a viewer: it cannot act")
    await csrf_checked(request, principal)
    return principal
