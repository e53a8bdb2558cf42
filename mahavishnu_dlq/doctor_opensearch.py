"""The doctor's OpenSearch checks (:mod:`mahavishnu_dlq.doctor`), in the order a
connection needs them; a check whose ground failed is ``skip``.

1. ``settings``: the store, hosts (credentials masked), index and user.
2. ``reachable <host>``: a TCP connection to each host (the one request not made by
   the store's client); then ``tls <host>``: the handshake with the configured
   verification (:func:`~.storage.opensearch_tls.tls_context`), or a warning for
   plain HTTP.
3. Through the store's own client (:class:`~.storage.opensearch_client.Connection`):
   ``authentication`` (``GET _plugins/_security/authinfo``: the user and roles; no
   security plugin is a warning), ``version`` (``GET /``: 2.0 or later),
   ``cluster health`` (``GET _cluster/health``: status, nodes).
4. The index, its mapping, template and side indexes, the read and write
   permissions (probed without writing), refresh interval and replicas:
   :mod:`~mahavishnu_dlq.doctor_index`.

Every line goes through the connection's redaction: no password is ever shown.
"""

from __future__ import annotations

import contextlib
import ssl
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import anyio
from anyio.streams.tls import TLSAttribute

from mahavishnu_dlq.credentials import mask_userinfo
from mahavishnu_dlq.doctor import Check
from mahavishnu_dlq.doctor_index import IndexChecks
from mahavishnu_dlq.errors import ConfigurationError, DLQError
from mahavishnu_dlq.settings import OpenSearchSettings
from mahavishnu_dlq.storage.opensearch_client import Connection
from mahavishnu_dlq.storage.opensearch_tls import tls_context, tls_failure

__all__ = ["opensearch_checks"]

_SETTINGS_FIX = "check opensearch.hosts, and that the node runs and takes connections"


def _host_port(host: str) -> tuple[str, int, bool]:
    """``(host name, port, https)`` of a host URL, as opensearch-py reads it."""
    parts = urlsplit(host if "://" in host else f"http://{host}")
    https = parts.scheme == "https"
    return parts.hostname or "localhost", parts.port or (443 if https else 9200), https


class _Doctor(IndexChecks):
    """The checks of one OpenSearch configuration (see the module)."""

    def __init__(self, s: OpenSearchSettings, store: str) -> None:
        super().__init__(s.index)
        self.s = s
        self.store = store
        self.checks: list[Check] = []
        self.stopped: str | None = None  # why the checks left are skipped

    def add(self, check: Check) -> None:
        self.checks.append(check)

    # -- the connection --------------------------------------------------------------------

    async def run(self) -> list[Check]:
        s = self.s
        shown = [mask_userinfo(host) for host in s.hosts]
        who = f"user {s.username!r}" if s.username else "no user"
        if s.client_cert:
            who += f", client certificate {s.client_cert}"
        self.add(
            Check(
                "settings",
                "ok",
                f"store {self.store}, hosts {', '.join(shown)}, index {self.index!r}, {who}",
            )
        )
        context = self._context(shown)
        answering: list[str] = []  # the hosts the client then asks: those that connect
        for host, shown_host in zip(s.hosts, shown, strict=True):
            if await self._reach(host, shown_host):
                answering.append(host)
        if not answering:
            self.stopped = "no host can be reached"
        elif context is not None:
            answering = [host for host in answering if await self._tls(host, context)]
            if not answering:
                self.stopped = "no TLS connection could be made"
        if self.stopped is None and context is not None:
            self.conn = Connection(
                answering,
                index=self.index,
                username=s.username,
                password=s.password,
                verify_certs=s.verify_certs,
                ca_certs=s.ca_certs,
                client_cert=s.client_cert,
                client_key=s.client_key,
                timeout=s.timeout_seconds,
            )
        try:
            for name, step in self._steps():
                await self._step(name, step)
        finally:
            if self.conn is not None:
                await self._close()
        return self.checks

    async def _close(self) -> None:
        """Close the client, the connections of hosts it marked dead included (its own
        close leaves their sessions open)."""
        assert self.conn is not None  # noqa: S101 - called only once it is made
        with contextlib.suppress(DLQError):  # closing is best effort
            await self.conn.close()  # dead hosts' connections too

    def _context(self, shown: list[str]) -> ssl.SSLContext | None:
        """The client's TLS context; a failing ``tls`` check (and None) when the TLS
        settings cannot be used (a missing or unreadable PEM file)."""
        s = self.s
        try:
            return tls_context(
                verify_certs=s.verify_certs,
                ca_certs=s.ca_certs,
                client_cert=s.client_cert,
                client_key=s.client_key,
                hosts=shown,
            )
        except ConfigurationError as exc:
            self.add(Check("tls", "fail", str(exc), f"fix {exc.field or 'the TLS settings'}"))
            self.stopped = "the TLS settings cannot be used"
            return None

    async def _reach(self, host: str, shown: str) -> bool:
        name, port, _ = _host_port(host)
        check = f"reachable {name}:{port}"
        started = time.perf_counter()
        try:
            with anyio.fail_after(self.s.timeout_seconds):
                stream = await anyio.connect_tcp(name, port)
        except TimeoutError:
            reason = f"no answer within {self.s.timeout_seconds:g} s"
        except OSError as exc:  # anyio's "all connection attempts failed": say the last's
            cause = exc.__cause__ if isinstance(exc.__cause__, OSError) else exc
            reason = cause.strerror or str(cause) or type(cause).__name__
        else:
            await stream.aclose()
            took = (time.perf_counter() - started) * 1000
            self.add(Check(check, "ok", f"{shown} accepts connections ({took:.0f} ms)"))
            return True
        self.add(Check(check, "fail", f"cannot connect to {shown}: {reason}", _SETTINGS_FIX))
        return False

    async def _tls(self, host: str, context: ssl.SSLContext) -> bool:
        shown = mask_userinfo(host)
        name, port, https = _host_port(host)
        check = f"tls {name}:{port}"
        if not https:
            self.add(
                Check(
                    check,
                    "warn",
                    f"{shown}: plain HTTP: no TLS (passwords and tasks cross the network readable)",
                    "serve the node over https:// and set opensearch.ca_certs",
                )
            )
            return True
        try:
            with anyio.fail_after(self.s.timeout_seconds):
                stream = await anyio.connect_tcp(
                    name,
                    port,
                    ssl_context=context,
                    tls_hostname=name,
                    tls_standard_compatible=False,
                )
        except (OSError, anyio.BrokenResourceError, anyio.EndOfStream, TimeoutError) as exc:
            said = tls_failure(exc, shown) or f"TLS handshake with {shown} failed: {exc!r}"
            self.add(
                Check(
                    check,
                    "fail",
                    said,
                    "see the TLS settings: opensearch.ca_certs, opensearch.client_cert/client_key",
                )
            )
            return False
        version = stream.extra(TLSAttribute.tls_version, "TLS")  # noqa: S610 - anyio, not Django
        await stream.aclose()
        if context.verify_mode == ssl.CERT_NONE:
            self.add(
                Check(
                    check,
                    "warn",
                    f"{version} with {shown}, certificate NOT verified (opensearch.verify_certs: "
                    "false): anyone on the path can read and change what is stored",
                    "set opensearch.ca_certs to the CA that signed the node's certificate",
                )
            )
        else:
            self.add(Check(check, "ok", f"{version} with {shown}, certificate verified"))
        return True

    # -- the steps -------------------------------------------------------------------------

    def _steps(self) -> list[tuple[str, Callable[[], Awaitable[Check | None]]]]:
        return [
            ("authentication", self._authentication),
            ("version", self._version),
            ("cluster health", self._health),
            ("index", self._index),
            ("mapping", self._mapping),
            ("template", self._template),
            ("jobs index", lambda: self._side("jobs")),
            ("controls index", lambda: self._side("controls")),
            ("read", self._read),
            ("write", self._write),
            ("refresh interval", self._refresh),
            ("replicas", self._replicas),
        ]

    async def _step(self, name: str, step: Callable[[], Awaitable[Check | None]]) -> None:
        if self.stopped is not None:
            self.add(Check(name, "skip", f"not checked: {self.stopped}"))
            return
        try:
            check = await step()
        except DLQError as exc:
            self.stopped = "the node did not answer"
            check = Check(name, "fail", self.redact(str(exc)), _SETTINGS_FIX)
        if check is not None:
            self.add(check)

    async def _authentication(self) -> Check:
        status, body = await self._get("authinfo", "/_plugins/_security/authinfo")
        user = self.s.username
        if status == 200 and isinstance(body, dict):
            roles = ", ".join(map(str, body.get("roles") or [])) or "none"
            backend = ", ".join(map(str, body.get("backend_roles") or [])) or "none"
            detail = f"user {body.get('user_name')!r}, roles: {roles}; backend roles: {backend}"
            if not body.get("roles"):
                return Check(
                    "authentication",
                    "warn",
                    f"{detail}: a user with no role may do nothing",
                    "map the user to the DLQ's role (see docs/opensearch.md)",
                )
            return Check("authentication", "ok", detail)
        if status == 401:
            self.stopped = "authentication failed"
            who = f"user {user!r}" if user else "no user (opensearch.username unset)"
            return Check(
                "authentication",
                "fail",
                f"authentication failed for {who}",
                "fix opensearch.username / opensearch.password (or opensearch.client_cert)",
            )
        if status in (400, 404):
            unused = " (opensearch.username is not checked)" if user else ""
            return Check(
                "authentication",
                "warn",
                f"no security plugin: the node asks no credentials{unused}",
                "anyone who reaches the node can read and change the queue: enable the "
                "security plugin, or keep the node on a private network",
            )
        return Check(
            "authentication",
            "warn",
            f"who we are could not be read: HTTP {status} {self._reason(body)}",
        )

    async def _version(self) -> Check:
        status, body = await self._get("version", "/")
        if status != 200 or not isinstance(body, dict):
            return Check(
                "version",
                "warn",
                f"the version could not be read (HTTP {status} {self._reason(body)}); the "
                "DLQ's role needs no more: this check only informs",
            )
        version = body.get("version") or {}
        number = str(version.get("number", "?"))
        distribution = version.get("distribution")
        if distribution != "opensearch":
            return Check(
                "version",
                "fail",
                f"the node is not OpenSearch (version {number}, distribution "
                f"{distribution or 'none: Elasticsearch'})",
                "point opensearch.hosts at an OpenSearch 2 cluster",
            )
        major = number.split(".", 1)[0]
        if not major.isdigit() or int(major) < 2:
            return Check(
                "version",
                "fail",
                f"OpenSearch {number}: mahavishnu-dlq needs 2.0 or later",
                "upgrade the cluster to OpenSearch 2",
            )
        return Check("version", "ok", f"OpenSearch {number}")

    async def _health(self) -> Check:
        status, body = await self._get("cluster health", "/_cluster/health")
        if status != 200 or not isinstance(body, dict):
            return Check(
                "cluster health",
                "warn",
                f"could not be read: HTTP {status} {self._reason(body)}",
                "give the DLQ's role cluster:monitor/health",
            )
        self.cluster = body.get("cluster_name")
        self.data_nodes = body.get("number_of_data_nodes")
        color = body.get("status")
        detail = (
            f"cluster {self.cluster!r} is {color}: {body.get('number_of_nodes')} node(s), "
            f"{self.data_nodes} data node(s)"
        )
        if color == "green":
            return Check("cluster health", "ok", detail)
        if color == "yellow":
            return Check(
                "cluster health",
                "warn",
                f"{detail}; some replica shards are not assigned",
                "see the replicas line (a replica needs a data node its primary is not on)",
            )
        return Check(
            "cluster health",
            "fail",
            f"{detail}; some primary shards are not assigned: their indexes fail reads and writes",
            "look at GET _cluster/allocation/explain on the cluster",
        )


async def opensearch_checks(s: OpenSearchSettings, *, store: str = "opensearch") -> list[Check]:
    """The checks of the OpenSearch settings ``s`` (see the module); changes nothing."""
    return await _Doctor(s, store).run()
