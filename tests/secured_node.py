"""The secured OpenSearch node of a test session: the security plugin, HTTPS with a
throwaway CA, and users holding exactly the roles ``docs/opensearch.md`` gives.

- ``dlq`` (password, or its client certificate ``dlq.pem``): :func:`writer_role`;
- ``operator``: :func:`reader_role` (``status``, ``list``, ``show`` and nothing else);
- ``nobody``: no role at all;
- ``admin``: the plugin's super-user, for set-up and clean-up only.

Both roles are granted on the indexes named ``SECURED_INDEX*``: tests name theirs
``f"{SECURED_INDEX}-<something>"``.
"""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mahavishnu_dlq.storage.opensearch_role import reader_role, writer_role

__all__ = ["PASSWORDS", "SECURED_INDEX", "SecuredNode", "secured_setup"]

#: the prefix of every index the secured node's roles cover
SECURED_INDEX = "dlq-secured"
#: the test users' passwords (throwaway: the node lives for one test session)
PASSWORDS = {"dlq": "dlq-Writer-pw-1", "operator": "operator-Reader-pw-1", "nobody": "nobody-pw-1"}


def secured_setup(node_script: Any) -> Any:
    """The ``Secured`` description the node script starts the node with."""
    users = {
        "dlq": node_script.SecuredUser(PASSWORDS["dlq"], ("mahavishnu_dlq",)),
        "operator": node_script.SecuredUser(PASSWORDS["operator"], ("mahavishnu_dlq_reader",)),
        "nobody": node_script.SecuredUser(PASSWORDS["nobody"], ()),
    }
    roles = {
        "mahavishnu_dlq": writer_role(SECURED_INDEX),
        "mahavishnu_dlq_reader": reader_role(SECURED_INDEX),
    }
    return node_script.Secured(users=users, roles=roles, clients=("dlq", "nobody"))


@dataclass(frozen=True)
class SecuredNode:
    """What a test needs of the secured node."""

    url: str
    config: Path  #: the node's config directory: root-ca.pem, dlq.pem, dlq-key.pem ...
    admin_password: str

    @property
    def ca_file(self) -> str:
        return str(self.config / "root-ca.pem")

    def cert(self, name: str) -> tuple[str, str]:
        """(certificate, key) files of the client certificate ``name``."""
        return str(self.config / f"{name}.pem"), str(self.config / f"{name}-key.pem")

    def admin(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """One request as the super-user: (status, decoded JSON or text)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)  # noqa: S310
        token = base64.b64encode(f"admin:{self.admin_password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
        request.add_header("Content-Type", "application/json")
        context = ssl.create_default_context(cafile=self.ca_file)
        try:
            with urllib.request.urlopen(request, context=context, timeout=30) as answer:  # noqa: S310
                status, raw = answer.status, answer.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")
