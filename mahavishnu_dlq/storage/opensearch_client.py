"""The OpenSearch store's connection: the client, and what its errors become.

:class:`Connection` builds opensearch-py's ``AsyncOpenSearch`` from the hosts and
credentials (or takes a client the caller owns) and turns the client's exceptions
into the library's, the original kept as ``__cause__``:

- connection failures, timeouts and 5xx answers:
  :class:`~mahavishnu_dlq.errors.StoreUnavailableError`;
- a certificate not trusted, expired or for another host, or a client certificate
  refused: :class:`~mahavishnu_dlq.errors.StoreTLSError` (one sentence naming the host
  and the setting to fix, :mod:`.opensearch_tls`);
- HTTP 401: :class:`~mahavishnu_dlq.errors.StoreAuthenticationError` naming the user;
  HTTP 403: :class:`~mahavishnu_dlq.errors.StoreAccessError` naming the permission;
- HTTP 429 (the node pushing back): :class:`~mahavishnu_dlq.errors.StoreOverloadedError`;
- HTTP 400 (a request the index refuses, e.g. a mapping conflict) and 413 (a
  request larger than the node takes): :class:`~mahavishnu_dlq.errors.ConfigurationError`.

Messages name the action, the hosts and the index — never a password: credentials
written into a host URL are taken out into the client's authentication when the
connection is made (:func:`~mahavishnu_dlq.credentials.split_credentials`), and
masked wherever they could still appear. opensearch-py's client runs on asyncio
only; :func:`require_asyncio` refuses trio with a clear error.

Compare-and-set starts from a realtime read: :meth:`Connection.read` and
:meth:`Connection.read_many` (one ``_mget``) give each document's source with its
``_seq_no`` and ``_primary_term`` (:data:`Versioned`).

Answers that are outcomes, not failures — a document or index that is not there
(404), a conditional write that lost (409), an index that exists already (400) — are
asked for with ``ignore=`` and read from the body the client then returns
(:func:`refusal`): opensearch-py logs a WARNING on its ``opensearch`` logger for
every other non-2xx answer, and a normal run must leave the host's logs alone.
Genuine failures are raised (above), and the failover store warns once per outage:
the client this module makes logs opensearch-py's line for each failed request at
DEBUG instead (:class:`QuietConnection`), so an outage is not one WARNING per call
and per probe. Only that client is quieted: opensearch-py's logger, and the host's
other clients, are left as they are.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any

from opensearchpy import AIOHttpConnection, AsyncOpenSearch, ConnectionTimeout, TransportError
from opensearchpy import ConnectionError as OpenSearchConnectionError
from pydantic import SecretStr

from mahavishnu_dlq.credentials import mask_credentials, mask_userinfo, split_credentials
from mahavishnu_dlq.errors import (
    ConfigurationError,
    DLQError,
    StoreAccessError,
    StoreAuthenticationError,
    StoreOverloadedError,
    StoreTLSError,
    StoreUnavailableError,
)
from mahavishnu_dlq.storage.opensearch_tls import tls_context, tls_failure

__all__ = [
    "Connection",
    "QuietConnection",
    "Versioned",
    "error_info",
    "refusal",
    "require_asyncio",
]

#: A document's source and ``(seq_no, primary_term)``; ``(None, None)`` when absent.
Versioned = tuple[dict[str, Any] | None, tuple[int, int] | None]

_BACKEND = "opensearch"
_TRIO_HINT = (
    "OpenSearchStore runs on asyncio (opensearch-py's AsyncOpenSearch); under trio use "
    "the memory store, or run the queue on asyncio (anyio.run(..., backend='asyncio') "
    "or BlockingDLQ(..., backend='asyncio'))"
)


def _async_library() -> str:
    try:
        import sniffio  # noqa: PLC0415 - optional: it comes with trio, the other loop
    except ImportError:  # pragma: no cover - without trio installed only asyncio runs
        return "asyncio"
    try:
        return sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        return "unknown"


def require_asyncio() -> None:
    """:class:`ConfigurationError` unless running on asyncio."""
    if _async_library() != "asyncio":
        raise ConfigurationError(_TRIO_HINT, field="store")


def error_info(info: Any) -> tuple[str, str]:
    """(type, reason) of an OpenSearch error body or bulk item error."""
    error = info.get("error", info) if isinstance(info, dict) else info
    if isinstance(error, dict):
        causes = error.get("root_cause") or [error]
        cause = causes[0] if isinstance(causes[0], dict) else error
        return str(cause.get("type", "")), str(cause.get("reason", ""))
    return "", "" if error is None else str(error)


#: opensearch-py's logger (:class:`QuietConnection` writes its lines at DEBUG)
_client_log = logging.getLogger("opensearch")


class QuietConnection(AIOHttpConnection):
    """opensearch-py's asyncio connection, logging a failed request at DEBUG, not WARNING
    (see the module docstring: the store raises each failure as its own error)."""

    def log_request_fail(
        self,
        method: str,
        full_url: str,
        path: str,
        body: Any,
        duration: float,
        status_code: int | None = None,
        response: str | None = None,
        exception: Exception | None = None,
    ) -> None:
        _client_log.debug(
            "%s %s [status:%s request:%.3fs]",
            method,
            full_url,
            status_code or "N/A",
            duration,
            exc_info=exception is not None,
        )


def refusal(answer: Any) -> int | None:
    """The HTTP status of the error body a request sent with ``ignore=`` returned in
    place of an exception (opensearch-py logs no WARNING for an ignored status), or
    None when ``answer`` is no error body (a 404 ``GET`` or ``DELETE`` of a missing
    document is no error body: it says ``found: false`` / ``result: not_found``)."""
    if not isinstance(answer, dict) or "error" not in answer:
        return None
    status = answer.get("status")
    if isinstance(status, int):
        return status
    # "no handler found" (400) has no status; an index named "error" is no error
    return 400 if isinstance(answer["error"], str) else None


class Connection:
    """The client of one store, and the translation of its errors (see the module)."""

    def __init__(
        self,
        hosts: str | Sequence[str],
        *,
        index: str,
        username: str | None = None,
        password: str | SecretStr | None = None,
        verify_certs: bool = True,
        ca_certs: str | None = None,
        client_cert: str | None = None,
        client_key: str | None = None,
        timeout: float = 10.0,
        client: AsyncOpenSearch | None = None,
    ) -> None:
        secret = password.get_secret_value() if isinstance(password, SecretStr) else password
        self.hosts: list[str] = []
        for host in [hosts] if isinstance(hosts, str) else list(hosts):
            bare, user, given = split_credentials(host)
            self.hosts.append(bare)
            if user is None:
                continue
            if (username is not None and user != username) or (
                secret is not None and given is not None and given != secret
            ):
                raise ConfigurationError(
                    f"the credentials in host {mask_userinfo(host)!r} differ from "
                    "username/password; give them once",
                    field="opensearch.hosts",
                )
            username, secret = user, given if given is not None else secret
        self.index = index
        self.timeout = timeout
        self._secret = secret or ""
        #: who we are to the node, for messages: the user, or the client certificate
        self.user = username
        #: whether :meth:`close` closes the client (not one the caller passed in)
        self.owns_client = client is None
        if client is None:
            auth = None if username is None else (username, self._secret)
            context = tls_context(
                verify_certs=verify_certs,
                ca_certs=ca_certs,
                client_cert=client_cert,
                client_key=client_key,
                hosts=self.shown_hosts(),
            )
            client = AsyncOpenSearch(
                hosts=self.hosts,
                connection_class=QuietConnection,
                http_auth=auth,
                ssl_context=context,
                timeout=timeout,
                maxsize=64,  # concurrent attempts each read their record: do not queue on 10
                # several hosts: a request that timed out on a hung node goes to the next
                # one, and the hung node is set aside (as a refused one is); one host: no
                # retry, a caller waits one timeout, not four
                retry_on_timeout=len(self.hosts) > 1,
            )
        self.client = client

    @property
    def location(self) -> str:
        """The hosts (credentials masked) and index, as error messages name them."""
        hosts = ", ".join(self.shown_hosts())
        return f"{hosts} (index {self.index!r})"

    def shown_hosts(self) -> list[str]:
        """The hosts (their credentials were taken out; masked again to be sure)."""
        return [mask_userinfo(host) for host in self.hosts]

    def redact(self, text: str) -> str:
        """``text`` with the password and any URL credentials masked."""
        return mask_credentials(text, [self._secret] if self._secret else [])

    def failure(self, status: Any, kind: str, reason: str, action: str) -> DLQError:
        """The library's error for an HTTP ``status`` answered to ``action``."""
        answer = ": ".join(part for part in (kind, reason) if part) or "no error details"
        detail = self.redact(f"{action} at {self.location}: HTTP {status} {answer}")
        if status == 400:
            return ConfigurationError(f"OpenSearch refused the request: {detail}")
        if status == 413:
            return ConfigurationError(
                f"OpenSearch refused a request as too large: {detail}; lower "
                "opensearch.bulk_max_bytes below the node's http.max_content_length",
                field="opensearch.bulk_max_bytes",
            )
        if status == 429:
            return StoreOverloadedError(_BACKEND, detail)
        if status == 401:
            who = f"user {self.user!r}" if self.user else "no user (opensearch.username unset)"
            return StoreAuthenticationError(
                _BACKEND,
                f"{detail}; authentication failed for {who}: check opensearch.username and "
                "opensearch.password (or opensearch.client_cert)",
            )
        if status == 403:
            who = f"user {self.user!r}" if self.user else "this client"
            return StoreAccessError(
                _BACKEND,
                f"{detail}; {who} lacks a permission this needs (see the role in "
                "docs/opensearch.md)",
            )
        return StoreUnavailableError(_BACKEND, detail)

    def item_error(self, item: dict[str, Any], action: str) -> DLQError:
        """The library's error for a bulk item that failed."""
        return self.failure(item.get("status"), *error_info(item.get("error")), action)

    def created(self, answer: Any, action: str) -> bool:
        """Whether an index creation sent with ``ignore=(400,)`` made the index: False
        when it existed already (another process made it first, or an earlier start);
        any other refusal is raised as the library's error."""
        status = refusal(answer)
        if status is None:
            return True
        kind, reason = error_info(answer)
        if kind == "resource_already_exists_exception":
            return False
        raise self.failure(status, kind, reason, action)

    @contextmanager
    def translated(self, action: str) -> Iterator[None]:
        """Turn opensearch-py's exceptions into the library's (the original as cause)."""
        try:
            yield
        except OpenSearchConnectionError as exc:  # includes timeouts and TLS failures
            hosts = ", ".join(self.shown_hosts())
            tls = tls_failure(exc, hosts)
            if tls is not None:
                raise StoreTLSError(_BACKEND, self.redact(f"{action}: {tls}")) from exc
            reason = exc.error or (
                f"no answer within {self.timeout:g} s" if isinstance(exc, ConnectionTimeout) else ""
            )
            detail = f"{action} at {self.location}: {type(exc).__name__}: {reason or 'no details'}"
            if str(exc.info) not in detail:
                detail += f" ({exc.info})"
            raise StoreUnavailableError(_BACKEND, self.redact(detail)) from exc
        except TransportError as exc:
            raise self.failure(exc.status_code, *error_info(exc.info), action) from exc

    async def read(self, doc_id: str) -> Versioned:
        """The document and its version, realtime (a ``GET``)."""
        with self.translated("get"):
            # a 404 (no such document, or no index yet) is an answer: not logged
            found = await self.client.get(index=self.index, id=doc_id, ignore=(404,))
        if refusal(found) is not None or not found.get("found"):
            return None, None
        return found["_source"], (found["_seq_no"], found["_primary_term"])

    async def read_many(self, doc_ids: list[str]) -> list[Versioned | DLQError]:
        """:meth:`read` of many documents in one realtime ``_mget``; a document the node
        could not read (a shard failure) is its error instead."""
        with self.translated("get"):
            found = await self.client.mget(index=self.index, body={"ids": doc_ids})
        read: list[Versioned | DLQError] = []
        for doc in found["docs"]:
            if "error" in doc:
                read.append(self.failure(503, *error_info(doc), "get"))
            elif doc.get("found"):
                read.append((doc["_source"], (doc["_seq_no"], doc["_primary_term"])))
            else:
                read.append((None, None))
        return read

    async def close(self) -> None:
        """Close the client if this connection made it, with the connections of hosts
        marked dead (opensearch-py closes only the live ones: a node that died would
        leave its HTTP session open)."""
        if not self.owns_client:
            return
        pool = self.client.transport.connection_pool
        try:
            with self.translated("close"):
                await self.client.close()
        finally:
            for connection in getattr(pool, "orig_connections", ()):
                if connection not in getattr(pool, "connections", ()):
                    with suppress(Exception):  # best effort: it is being thrown away
                        await connection.close()
