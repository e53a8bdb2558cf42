"""The secured node's throwaway PKI and its security plugin configuration.

`make_pki` writes a CA, a node certificate (for transport and HTTPS, valid for
127.0.0.1 and localhost), an admin certificate (the plugin's super-admin, by DN) and any
client certificates asked for, all PEM, keys unencrypted PKCS#8, into the node's config
directory. `Pki.issue` signs more on demand: an expired one, one for another host (tests
of the client's TLS errors serve them from their own TLS listener).

`write_security_config` replaces the plugin's demo configuration with ours: HTTP basic
auth against internal users, TLS client certificates (the CN is the user name), the
users (bcrypt-hashed) with their roles, and the node settings that enable TLS on both
layers. The plugin loads the files into its index at the first start
(``plugins.security.allow_default_init_securityindex``).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["SUBJECT_SUFFIX", "Pki", "SecuredUser", "make_pki", "write_security_config"]

#: The DN suffix of every certificate made here; the node trusts nodes_dn / admin_dn by it.
SUBJECT_SUFFIX = "OU=test,O=mahavishnu-dlq"
_ORG = [
    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mahavishnu-dlq"),
    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "test"),
]
_DAY = dt.timedelta(days=1)


def _name(common_name: str) -> x509.Name:
    # RFC 4514 order (the plugin compares DNs as strings): CN first when printed
    return x509.Name([*_ORG, x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _dn(common_name: str) -> str:
    return f"CN={common_name},{SUBJECT_SUFFIX}"


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _write_cert(cert: x509.Certificate, path: Path) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


@dataclass(frozen=True)
class SecuredUser:
    """An internal user of the secured node: its password and the roles it is mapped to.

    ``roles`` name roles defined in ``write_security_config``'s ``roles`` or the plugin's
    static ones (``all_access``, ``readall``...).
    """

    password: str
    roles: tuple[str, ...] = ()


@dataclass
class Pki:
    """The CA and what it signed, in ``directory`` (the node's config directory)."""

    directory: Path
    ca_key: ec.EllipticCurvePrivateKey
    ca_cert: x509.Certificate
    files: dict[str, tuple[Path, Path]] = field(default_factory=dict)

    @property
    def ca_file(self) -> Path:
        return self.directory / "root-ca.pem"

    def issue(
        self,
        name: str,
        common_name: str,
        *,
        hosts: Sequence[str] = (),
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
        server: bool = False,
        client: bool = True,
    ) -> tuple[Path, Path]:
        """Sign a certificate ``<name>.pem`` (key ``<name>-key.pem``); return both paths.

        ``hosts`` go in the subject alternative names (IPs as IP addresses).
        """
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.timezone.utc)
        start = not_before or now - _DAY
        end = not_after or now + 30 * _DAY
        usages = [ExtendedKeyUsageOID.SERVER_AUTH] if server else []
        usages += [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self.ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=True,
                    data_encipherment=False,
                    key_agreement=True,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        )
        if hosts:
            names: list[x509.GeneralName] = []
            for host in hosts:
                try:
                    names.append(x509.IPAddress(ipaddress.ip_address(host)))
                except ValueError:
                    names.append(x509.DNSName(host))
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self.ca_key, hashes.SHA256())
        cert_file, key_file = self.directory / f"{name}.pem", self.directory / f"{name}-key.pem"
        _write_cert(cert, cert_file)
        _write_key(key, key_file)
        self.files[name] = (cert_file, key_file)
        return cert_file, key_file


def make_pki(directory: Path, clients: Sequence[str] = ()) -> Pki:
    """A fresh CA in ``directory``, with ``node``, ``admin`` and one certificate per client
    (named and CN'd after it)."""
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    subject = _name("mahavishnu-dlq test CA")
    ca = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _DAY)
        .not_valid_after(now + 60 * _DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    pki = Pki(directory, key, ca)
    _write_cert(ca, pki.ca_file)
    pki.issue("node", "node", hosts=("127.0.0.1", "localhost"), server=True)
    pki.issue("admin", "admin")
    for client in clients:
        pki.issue(client, client)
    return pki


def _yaml(data: Mapping[str, Any]) -> str:
    # JSON is YAML: no YAML writer needed, and nothing is ambiguous
    return json.dumps(data, indent=2) + "\n"


def _hash(password: str) -> str:
    # cost 4: a throwaway node; checking a hash costs the node a few ms per request
    return (
        bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode().replace("$2b$", "$2y$")
    )


def write_security_config(
    config: Path,
    *,
    users: Mapping[str, SecuredUser],
    roles: Mapping[str, Mapping[str, Any]] | None = None,
) -> None:
    """Write ``config/opensearch-security/*.yml`` for ``users`` and ``roles`` (see the
    module), and append the node settings that turn TLS and the plugin on to
    ``config/opensearch.yml`` (DNs hold commas: they cannot go on the command line)."""
    security = config / "opensearch-security"
    security.mkdir(exist_ok=True)
    meta = {"config_version": 2}
    auth_config = {
        "_meta": {"type": "config", **meta},
        "config": {
            "dynamic": {
                "http": {"anonymous_auth_enabled": False},
                "authc": {
                    "clientcert_auth_domain": {
                        "description": "TLS client certificate: the CN is the user",
                        "http_enabled": True,
                        "transport_enabled": False,
                        "order": 0,
                        "http_authenticator": {
                            "type": "clientcert",
                            "config": {"username_attribute": "cn"},
                            "challenge": False,
                        },
                        "authentication_backend": {"type": "noop"},
                    },
                    "basic_internal_auth_domain": {
                        "description": "HTTP basic auth against the internal users",
                        "http_enabled": True,
                        "transport_enabled": True,
                        "order": 1,
                        "http_authenticator": {"type": "basic", "challenge": True},
                        "authentication_backend": {"type": "intern"},
                    },
                },
            }
        },
    }
    internal_users: dict[str, Any] = {"_meta": {"type": "internalusers", **meta}}
    mapping: dict[str, Any] = {"_meta": {"type": "rolesmapping", **meta}}
    for name, user in users.items():
        internal_users[name] = {"hash": _hash(user.password), "reserved": False}
        for role in user.roles:
            mapping.setdefault(role, {"reserved": False, "users": []})["users"].append(name)
    files = {
        "config.yml": auth_config,
        "internal_users.yml": internal_users,
        "roles.yml": {"_meta": {"type": "roles", **meta}, **(roles or {})},
        "roles_mapping.yml": mapping,
        "action_groups.yml": {"_meta": {"type": "actiongroups", **meta}},
        "tenants.yml": {"_meta": {"type": "tenants", **meta}},
        "nodes_dn.yml": {"_meta": {"type": "nodesdn", **meta}},
        "allowlist.yml": {
            "_meta": {"type": "allowlist", **meta},
            "config": {"enabled": False},
        },
        "audit.yml": {
            "_meta": {"type": "audit", **meta},
            "config": {"enabled": False},
        },
    }
    for file_name, content in files.items():
        (security / file_name).write_text(_yaml(content))
    (security / "whitelist.yml").unlink(missing_ok=True)  # the old name of allowlist.yml
    node_settings: dict[str, Any] = {
        "plugins.security.ssl.transport.pemcert_filepath": "node.pem",
        "plugins.security.ssl.transport.pemkey_filepath": "node-key.pem",
        "plugins.security.ssl.transport.pemtrustedcas_filepath": "root-ca.pem",
        "plugins.security.ssl.transport.enforce_hostname_verification": False,
        "plugins.security.ssl.http.enabled": True,
        "plugins.security.ssl.http.pemcert_filepath": "node.pem",
        "plugins.security.ssl.http.pemkey_filepath": "node-key.pem",
        "plugins.security.ssl.http.pemtrustedcas_filepath": "root-ca.pem",
        "plugins.security.ssl.http.clientauth_mode": "OPTIONAL",
        "plugins.security.allow_default_init_securityindex": True,
        "plugins.security.authcz.admin_dn": [_dn("admin")],
        "plugins.security.nodes_dn": [_dn("node")],
        "plugins.security.audit.type": "noop",
        "plugins.security.restapi.roles_enabled": ["all_access"],
        "plugins.security.system_indices.enabled": True,
    }
    with (config / "opensearch.yml").open("a") as yml:
        yml.write("\n# written by scripts/osnode/security.py\n")
        for key, value in node_settings.items():
            yml.write(f"{key}: {json.dumps(value)}\n")
