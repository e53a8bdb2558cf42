"""TLS to OpenSearch: the client's SSL context, and what a failed handshake means.

:func:`tls_context` builds the context from ``opensearch.ca_certs``,
``opensearch.verify_certs`` and ``opensearch.client_cert``/``client_key`` itself
(instead of leaving it to opensearch-py), so that a file that is missing, not PEM,
or a key that does not match its certificate is a
:class:`~mahavishnu_dlq.errors.ConfigurationError` naming the setting at once,
not a handshake failure later. Turning verification off logs one warning per
process, whatever the number of stores and hosts.

:func:`tls_failure` reads the exception a failed connection carries: a certificate
the client does not trust, one that has expired, one issued for another host, or a
client certificate the node refused become one sentence naming the host and the
setting to fix (None when the failure was not about TLS).
"""

from __future__ import annotations

import ssl
import threading
from pathlib import Path

from mahavishnu_dlq.errors import ConfigurationError
from mahavishnu_dlq.printable import library_logger

__all__ = ["tls_context", "tls_failure"]

_log = library_logger(__name__)
_warned = threading.Event()  # verify_certs: false was logged in this process


def _readable(path: str, setting: str) -> None:
    file = Path(path)
    if not file.is_file():
        raise ConfigurationError(
            f"{setting} {path!r} is not a file (expected a PEM file)", field=setting
        )


def tls_context(
    *,
    verify_certs: bool = True,
    ca_certs: str | None = None,
    client_cert: str | None = None,
    client_key: str | None = None,
    hosts: list[str] | None = None,
) -> ssl.SSLContext:
    """The client's SSL context (see the module); ``hosts`` only name the warning."""
    context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if verify_certs:
        if ca_certs is not None:
            _readable(ca_certs, "opensearch.ca_certs")
            try:
                context.load_verify_locations(cafile=ca_certs)
            except (ssl.SSLError, ValueError) as exc:
                raise ConfigurationError(
                    f"opensearch.ca_certs {ca_certs!r} holds no usable PEM certificate ({exc})",
                    field="opensearch.ca_certs",
                ) from exc
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        if hosts and any(host.startswith("https:") for host in hosts) and not _warned.is_set():
            _warned.set()
            _log.warning(
                "dlq.opensearch.insecure: the certificates of %s are not verified "
                "(opensearch.verify_certs: false): anyone on the path can read and change "
                "what is stored; set opensearch.ca_certs to the CA that signed them instead",
                ", ".join(hosts),
            )
    if client_cert is not None or client_key is not None:
        if client_cert is None or client_key is None:
            missing = "opensearch.client_cert" if client_cert is None else "opensearch.client_key"
            raise ConfigurationError(f"{missing} is not set: give both or neither", field=missing)
        _readable(client_cert, "opensearch.client_cert")
        _readable(client_key, "opensearch.client_key")
        try:
            context.load_cert_chain(client_cert, client_key)
        except (ssl.SSLError, ValueError) as exc:
            raise ConfigurationError(
                f"opensearch.client_cert {client_cert!r} and opensearch.client_key "
                f"{client_key!r} are not a matching PEM certificate and unencrypted key ({exc})",
                field="opensearch.client_cert",
            ) from exc
    return context


def _chain(exc: BaseException | None) -> list[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__ or getattr(exc, "info", None)
        if not isinstance(exc, BaseException):
            break
    return seen


def tls_failure(exc: BaseException, host: str) -> str | None:
    """One sentence on a TLS failure found in ``exc``'s chain, else None."""
    for link in _chain(exc):
        # aiohttp's certificate error is an SSLCertVerificationError too, and carries the
        # original (with the verification's code and message) as certificate_error
        cause = getattr(link, "certificate_error", link)
        if isinstance(cause, ssl.SSLCertVerificationError):
            detail = getattr(cause, "verify_message", None) or str(cause)
            reason = f"certificate verify failed: {detail}"
            code = getattr(cause, "verify_code", None)
            if code == 10 or "expired" in reason:  # X509_V_ERR_CERT_HAS_EXPIRED
                fix = "the node's certificate has expired: renew it on the node"
            elif code == 62 or "mismatch" in reason or "match" in reason:
                fix = (
                    "the node's certificate is for another name: use a host name the "
                    "certificate lists in opensearch.hosts, or reissue it"
                )
            else:
                fix = (
                    "set opensearch.ca_certs to the PEM file of the CA that signed the "
                    "node's certificate (verify_certs: false only for a throwaway node)"
                )
            return f"certificate of {host} not accepted ({reason}): {fix}"
        if isinstance(cause, ssl.SSLError):
            reason = cause.reason or str(cause)
            if "CERTIFICATE" in str(reason).upper() or "ALERT" in str(reason).upper():
                return (
                    f"TLS handshake with {host} failed ({reason}): the node refused this "
                    "client; check opensearch.client_cert and opensearch.client_key (a "
                    "certificate signed by a CA the node trusts)"
                )
            return f"TLS handshake with {host} failed ({reason})"
    return None
