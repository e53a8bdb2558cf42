"""Credentials in host URLs: taking them out, and keeping them out of text.

An OpenSearch host may be written with its credentials, ``https://user:pass@node:9200``
or scheme-less ``user:pass@node:9200``. :func:`split_credentials` takes them out:
the userinfo is everything before the *last* ``@`` of the entry (so a password may
hold ``@``, ``:``, ``/`` or spaces as they are), the user name ends at its first
``:``, and both are percent-decoded (a user name holding ``:`` or ``%`` is written
percent-encoded, and so may be any password).

:func:`mask_credentials` is for text on its way to a log or an error message: it
replaces the secrets it is given (and their percent-encoded forms) and, best
effort, the userinfo of anything in the text that looks like a URL with
credentials, with or without a scheme. It may mask a little too much; it never
leaves a secret it was given.

Standard library only: a store, the settings and the CLI all import it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus, unquote

__all__ = ["MASK", "mask_credentials", "mask_userinfo", "split_credentials"]

#: What a secret is replaced with.
MASK = "**********"

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,31}://")
# What follows the '@' of a userinfo: a host (name, IPv4, or IPv6 in brackets), an
# optional port, then the end of the host. A character before the '@' that cannot end
# a password in running text ("[@timestamp]", "field @timestamp") is no userinfo.
_AFTER_AT = (
    r"(?<![\s\[(\"'])@"
    r"(?=(?:\[[0-9A-Za-z:.%]+\]|[\w-]+(?:\.[\w-]+)*)(?::\w{0,16})?(?:[/?#\s'\"`,;)>\]\\]|\Z))"
)
_IN_TEXT = (
    # scheme://userinfo@host, the userinfo without whitespace, up to its last '@'
    re.compile(rf"(?P<head>\b{_SCHEME.pattern})(?:(?!://)\S){{1,1024}}{_AFTER_AT}"),
    # scheme://user:pass word@host: a password with spaces, on one line
    re.compile(
        rf"(?P<head>\b{_SCHEME.pattern})[^\s:/@]{{0,256}}:(?:(?!://)\S| ){{0,256}}{_AFTER_AT}"
    ),
    # user:pass@host without a scheme, as a word of its own
    re.compile(
        rf"(?P<head>(?<![^\s'\"(\[,=<]))[^\s:/@'\"(\[,=<]{{1,256}}:(?!//)\S{{0,1024}}{_AFTER_AT}"
    ),
)


def split_credentials(host: str) -> tuple[str, str | None, str | None]:
    """``(host without its userinfo, user, password)``; ``(host, None, None)`` without ``@``.

    >>> split_credentials("https://admin:p%40ss@node:9200")
    ('https://node:9200', 'admin', 'p@ss')
    >>> split_credentials("admin:p@ss word@node:9200/prefix")
    ('node:9200/prefix', 'admin', 'p@ss word')

    The user is ``""`` for ``https://:pass@node`` and the password None for
    ``https://admin@node``. Nothing is validated: see the settings for that.
    """
    scheme = _SCHEME.match(host)
    start = scheme.end() if scheme else 0
    at = host.rfind("@", start)
    if at < 0:
        return host, None, None
    user, colon, password = host[start:at].partition(":")
    return host[:start] + host[at + 1 :], unquote(user), unquote(password) if colon else None


def mask_userinfo(host: str) -> str:
    """One host entry with its userinfo (as :func:`split_credentials` finds it) masked.

    >>> mask_userinfo("https://admin:p@ss word@node:9200")
    'https://**********@node:9200'
    """
    scheme = _SCHEME.match(host)
    start = scheme.end() if scheme else 0
    at = host.rfind("@", start)
    return host if at < 0 else host[:start] + MASK + host[at:]


def mask_credentials(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with each of ``secrets`` (raw or percent-encoded) and, best effort, the
    userinfo of every URL-looking thing replaced by :data:`MASK`.

    >>> mask_credentials("GET https://admin:p@ss@node:9200/_bulk refused")
    'GET https://**********@node:9200/_bulk refused'
    >>> mask_credentials("login with s3cret failed", ["s3cret"])
    'login with ********** failed'
    """
    forms = {
        form
        for secret in secrets
        if secret
        for form in (secret, quote(secret, safe=""), quote(secret), quote_plus(secret))
    }
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, MASK)
    if "@" not in text:
        return text
    for pattern in _IN_TEXT:
        text = pattern.sub(lambda found: found["head"] + MASK + "@", text)
    return text
