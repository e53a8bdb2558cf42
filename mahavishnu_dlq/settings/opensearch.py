"""The ``opensearch`` settings group: where the nodes are, how to reach them safely,
and the shape of the index a store creates.

``hosts`` entries are checked and freed of their credentials by
:mod:`~mahavishnu_dlq.settings.hosts`; TLS is ``ca_certs`` (verify the nodes),
``verify_certs`` and ``client_cert``/``client_key`` (prove who we are). See
``docs/opensearch.md`` for the role the user needs and sizing advice.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, SecretStr, field_validator, model_validator

from .groups import _Group, a_path
from .hosts import check_host, take_credentials

__all__ = ["OpenSearchSettings"]

_INDEX_FORBIDDEN = frozenset('\\/*?"<>| ,#:')


class OpenSearchSettings(_Group):
    """Connection to OpenSearch (store ``opensearch`` or ``failover``)."""

    hosts: list[Annotated[str, AfterValidator(check_host)]] = Field(
        default_factory=lambda: ["http://127.0.0.1:9200"],
        min_length=1,
        description="node URLs; credentials in them move to username and password",
    )
    username: str | None = Field(default=None, description="basic-auth user")
    password: SecretStr | None = Field(default=None, description="basic-auth password")
    verify_certs: bool = Field(default=True, description="verify TLS certificates")
    ca_certs: str | None = Field(
        default=None, description="CA bundle (PEM) that signed the nodes' certificates"
    )
    client_cert: str | None = Field(
        default=None, description="client certificate (PEM) for TLS client authentication"
    )
    client_key: str | None = Field(
        default=None, description="private key (PEM, unencrypted) of client_cert"
    )
    timeout_seconds: float = Field(default=10, ge=0.1, le=300, description="per-request timeout")
    index: str = Field(
        default="mahavishnu-dlq-tasks", min_length=1, max_length=255, description="index name"
    )
    refresh: Literal["false", "wait_for", "true"] = Field(
        default="false", description="refresh after writes (tests: wait_for)"
    )
    bulk_max_bytes: int = Field(
        default=8_388_608,
        ge=65_536,
        le=104_857_600,
        description="largest bulk request (below the node's http.max_content_length); "
        "a bigger record is refused",
    )
    number_of_shards: int = Field(
        default=1,
        ge=1,
        le=64,
        description="primary shards of a new index; 1 keeps aggregations exact",
    )
    number_of_replicas: int | None = Field(
        default=None,
        ge=0,
        le=8,
        description="copies of each shard on other nodes; empty: 1 once a second node joins",
    )
    backpressure_seconds: float = Field(
        default=30,
        ge=0,
        le=600,
        description="how long writes the node refuses with HTTP 429 are retried, with backoff",
    )

    @model_validator(mode="after")
    def _credentials_out_of_hosts(self) -> OpenSearchSettings:
        secret = None if self.password is None else self.password.get_secret_value()
        hosts, username, password = take_credentials(self.hosts, self.username, secret)
        if hosts != self.hosts:
            self.hosts = hosts
            self.username = username
            self.password = None if password is None else SecretStr(password)
        return self

    @field_validator("ca_certs", "client_cert", "client_key")
    @classmethod
    def _pem_path(cls, value: str | None) -> str | None:
        return a_path(value)

    @model_validator(mode="after")
    def _cert_with_key(self) -> OpenSearchSettings:
        if (self.client_cert is None) != (self.client_key is None):
            given, missing = (
                ("client_cert", "client_key")
                if self.client_key is None
                else ("client_key", "client_cert")
            )
            raise ValueError(f"{given} is set but {missing} is not: give both or neither")
        return self

    @field_validator("index")
    @classmethod
    def _index_name(cls, value: str) -> str:
        problem = None
        if value != value.lower():
            problem = "must be lowercase"
        elif value in {".", ".."}:
            problem = "must not be '.' or '..'"
        elif value[0] in "-_+":
            problem = "must not start with '-', '_' or '+'"
        elif bad := sorted(_INDEX_FORBIDDEN.intersection(value)):
            problem = "must not contain " + " ".join(repr(char) for char in bad)
        if problem:
            raise ValueError(f"index name {value!r} {problem}")
        return value
