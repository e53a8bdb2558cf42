"""OpenSearch host entries: their form, and the credentials they may carry.

An entry of ``opensearch.hosts`` is ``http://host[:port][/path]``,
``https://host[:port][/path]`` or scheme-less ``host[:port]``; the host is a name,
an IPv4 address or an IPv6 address in brackets (``[::1]:9200``), the port
1-65535. :func:`check_host` says what is wrong with one entry, never showing its
credentials.

An entry may carry credentials (``https://user:pass@node:9200``). When settings
load, :func:`take_credentials` moves them to ``username`` and ``password``, so the
hosts hold none and nothing that shows the settings can show a password; it
refuses two entries with different credentials, and credentials that differ from
``username``/``password`` set as well. How an entry is split is
:func:`mahavishnu_dlq.credentials.split_credentials`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence

from mahavishnu_dlq.credentials import split_credentials

__all__ = ["check_host", "take_credentials"]

_SCHEMES = ("http", "https")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_NAME = re.compile(r"[\w-]+(?:\.[\w-]+)*\.?")


def check_host(entry: str) -> str:
    """The entry, stripped of surrounding blanks; ``ValueError`` saying what is wrong.

    The messages name the scheme, host or port at fault, never the userinfo.
    """
    entry = entry.strip()
    if not entry:
        raise ValueError("must not be empty")
    bare, user, _ = split_credentials(entry)
    if user == "":
        raise ValueError("the credentials before '@' have no user name")
    scheme = _SCHEME.match(bare)
    rest = bare
    if scheme is not None:
        if scheme.group(1).lower() not in _SCHEMES:
            raise ValueError(f"scheme must be http or https, not {scheme.group(1)!r}")
        rest = bare[scheme.end() :]
    if "?" in rest or "#" in rest:
        raise ValueError("must not have a query or a fragment ('?', '#')")
    if any(char.isspace() for char in rest):
        raise ValueError("must not contain blanks")
    _check_authority(rest.partition("/")[0])
    return entry


def _check_authority(authority: str) -> None:
    port = _port_of_ipv6(authority) if authority.startswith("[") else _port_of_name(authority)
    if port is None:
        return
    if not (port.isascii() and port.isdigit() and len(port) <= 5 and 1 <= int(port) <= 65535):
        raise ValueError("port must be a whole number between 1 and 65535")


def _port_of_ipv6(authority: str) -> str | None:
    address, bracket, rest = authority[1:].partition("]")
    if not bracket:
        raise ValueError("an IPv6 address needs its closing ']'")
    try:
        ipaddress.IPv6Address(address)
    except ValueError:
        raise ValueError(f"{address!r} is not an IPv6 address") from None
    if rest and not rest.startswith(":"):
        raise ValueError("only ':port' may follow an IPv6 address")
    return rest[1:] if rest else None


def _port_of_name(authority: str) -> str | None:
    name, colon, port = authority.partition(":")
    if colon and ":" in port:
        raise ValueError("an IPv6 address goes in brackets: [::1]:9200")
    if not name:
        raise ValueError("the host name is missing")
    if not _NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a host name")
    return port if colon else None


def take_credentials(
    hosts: Sequence[str], username: str | None, password: str | None
) -> tuple[list[str], str | None, str | None]:
    """``(hosts without credentials, username, password)``; ``ValueError`` on a conflict.

    The messages name the entries (``hosts[1]``) and the settings in conflict,
    never a password.
    """
    bare_hosts: list[str] = []
    found: tuple[int, str, str | None] | None = None  # the first entry with credentials
    for index, host in enumerate(hosts):
        bare, user, secret = split_credentials(host)
        bare_hosts.append(bare)
        if user is None:
            continue
        if found is None:
            found = (index, user, secret)
        elif (user, secret) != found[1:]:
            raise ValueError(
                f"hosts[{index}] carries different credentials from hosts[{found[0]}]; "
                "give them once, in username and password"
            )
    if found is None:
        return bare_hosts, username, password
    index, user, secret = found
    if username is not None and username != user:
        raise ValueError(f"the user name in hosts[{index}] differs from username; give it once")
    if secret is not None and password is not None and password != secret:
        raise ValueError(f"the password in hosts[{index}] differs from password; give it once")
    return bare_hosts, user, password if secret is None else secret
