"""The ``web`` settings group: the operator console and HTTP API (extra ``web``).

``web.tokens`` lists who may sign in: a name (what the action log shows), a secret
token and a role (``viewer`` reads, ``operator`` also acts). With no tokens, the
console refuses every request but ``/api/v1/health``, except under
``mahavishnu-dlq serve``, which makes a one-time operator token and prints a
sign-in URL carrying it (loopback addresses only). A payload key containing a
word of ``web.redact_keys`` (case-insensitive, at any depth) is shown as ``••••``.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

__all__ = ["DEFAULT_REDACT_KEYS", "WebSettings", "WebToken"]

#: Payload keys masked in pages and API responses unless ``web.redact_keys`` says otherwise.
DEFAULT_REDACT_KEYS = ("password", "secret", "token", "authorization", "api_key")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")


class WebToken(BaseModel):
    """One sign-in token of the web console and API."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    name: str = Field(description="who holds it; the action log names it (letters, digits, _.@-)")
    token: SecretStr = Field(description="the secret: 16 to 512 printable characters")
    role: Literal["viewer", "operator"] = Field(
        default="viewer", description="viewer reads; operator also retries, archives, replays"
    )

    @field_validator("name")
    @classmethod
    def _a_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(
                "must be 1 to 64 letters, digits or _.@- (starting with a letter or digit)"
            )
        return value

    @field_validator("token")
    @classmethod
    def _a_secret(cls, value: SecretStr) -> SecretStr:
        secret = value.get_secret_value()
        if not 16 <= len(secret) <= 512:
            raise ValueError("must be 16 to 512 characters long")
        if not secret.isprintable() or any(c.isspace() for c in secret):
            raise ValueError("must be printable characters without spaces")
        return value


class WebSettings(BaseModel):
    """The web console and HTTP API (``mahavishnu-dlq serve``, ``web.create_app``)."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    tokens: list[WebToken] = Field(
        default_factory=list,
        description="who may sign in: [{name, token, role}] (also MAHAVISHNU_DLQ_WEB__TOKENS "
        "as JSON); none: serve makes a one-time operator token",
    )
    redact_keys: list[str] = Field(
        default_factory=lambda: list(DEFAULT_REDACT_KEYS),
        max_length=200,
        description="payload keys containing one of these words are shown as •••• "
        "(case-insensitive, at any depth)",
    )
    host: str = Field(
        default="127.0.0.1", min_length=1, max_length=255, description="address serve binds"
    )
    port: int = Field(default=8080, ge=1, le=65535, description="port serve listens on")
    session_hours: float = Field(
        default=12, ge=0.01, le=720, description="how long a browser sign-in lasts"
    )
    refresh_seconds: int = Field(
        default=10, ge=0, le=3600, description="overview auto-refresh period; 0: off"
    )
    max_body_bytes: int = Field(
        default=65_536, ge=1024, le=8_388_608, description="largest request body accepted"
    )

    @field_validator("tokens")
    @classmethod
    def _unique(cls, value: list[WebToken]) -> list[WebToken]:
        names = [token.name for token in value]
        if len(set(names)) != len(names):
            raise ValueError("token names must be unique")
        secrets = [token.token.get_secret_value() for token in value]
        if len(set(secrets)) != len(secrets):
            raise ValueError("two entries share one token")
        return value

    @field_validator("redact_keys")
    @classmethod
    def _keys(cls, value: list[str]) -> list[str]:
        for key in value:
            if not 1 <= len(key) <= 256:
                raise ValueError("each key must be 1 to 256 characters long")
        return value
