"""What the page tests share: browser-like sessions, seeded tasks, and reading the HTML.

A :func:`session` is an httpx client that signed in through ``POST /login`` and
keeps the cookie, as a browser does; :func:`csrf_of` reads the token the pages put
in their forms. :class:`Page` parses a page with the standard library's HTML
parser (start tags with their attributes, and the text of each element), so the
tests assert on elements and ``data-*`` hooks rather than on substrings.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlencode

import httpx
from fastapi import FastAPI

from mahavishnu_dlq import DeadLetterQueue

#: Markup an attacker would like to see run; it must only ever show as text.
XSS_IMG = "<img src=x onerror=alert(1)>"
XSS_SCRIPT = "</script><script>alert(2)</script>"
HOSTILE = XSS_IMG + XSS_SCRIPT

#: Task ids that need encoding in a URL path.
AWKWARD_IDS = [
    "with/slash",
    "a/b/../c",
    "50% off",
    "what?x=1#frag",
    "  spaced  ",
    "ünïcödé-任务-🙂",
    "..",
    "back\\slash",
    XSS_IMG,
]

ORIGIN = "http://testserver"


def failure(message: str = "connection to shard 3 refused") -> BaseException:
    """A ConnectionError that was raised (it has a traceback): one fingerprint."""
    try:
        raise ConnectionError(message)
    except ConnectionError as caught:
        return caught


def bad_input(message: str = "invalid email address") -> BaseException:
    """A ValueError that was raised: another fingerprint, category validation."""
    try:
        raise ValueError(message)
    except ValueError as caught:
        return caught


async def seed(dlq: DeadLetterQueue, count: int, prefix: str = "task", **fields: Any) -> list[str]:
    """``count`` pending tasks failing with a ConnectionError, ids ``<prefix>-000`` …"""
    ids = [f"{prefix}-{n:03d}" for n in range(count)]
    for task_id in ids:
        await dlq.enqueue(task_id, {"n": task_id}, error=failure(), **fields)
    return ids


def client(app: Any, base_url: str = "http://testserver") -> httpx.AsyncClient:
    """A client of ``app`` (no credentials) that does not follow redirects."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url)


@asynccontextmanager
async def session(
    app: FastAPI | Any, token: str, root: str = "", base_url: str = "http://testserver"
) -> AsyncIterator[httpx.AsyncClient]:
    """A client signed in through the form, with the session cookie, like a browser."""
    async with client(app, base_url) as browser:
        answer = await browser.post(
            f"{root}/login", data={"token": token, "next": "/"}, headers={"Origin": base_url}
        )
        assert answer.status_code == 303, answer.text
        yield browser


def csrf_of(html: str) -> str:
    """The CSRF token of the page's forms."""
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match is not None, "the page has no CSRF field"
    return match.group(1)


async def post_form(
    browser: httpx.AsyncClient, path: str, data: dict[str, Any] | list[tuple[str, str]]
) -> httpx.Response:
    """POST a form as the page would (same origin), not following the redirect;
    pairs repeat a name (``task_id`` of each selected row)."""
    pairs = list(data.items()) if isinstance(data, dict) else data
    return await browser.post(
        path,
        content=urlencode(pairs),
        headers={"Origin": ORIGIN, "Content-Type": "application/x-www-form-urlencoded"},
    )


@dataclass
class Element:
    """One element of a page: its tag, attributes and the text inside it."""

    tag: str
    attrs: dict[str, str]
    text_parts: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return " ".join("".join(self.text_parts).split())


_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source"}


class Page(HTMLParser):
    """A parsed page: every element in document order."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.html = html
        self.elements: list[Element] = []
        self._open: list[Element] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {name: value or "" for name, value in attrs})
        self.elements.append(element)
        if tag not in _VOID:
            self._open.append(element)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append(Element(tag, {name: value or "" for name, value in attrs}))

    def handle_endtag(self, tag: str) -> None:
        for index in range(len(self._open) - 1, -1, -1):
            if self._open[index].tag == tag:
                del self._open[index:]
                break

    def handle_data(self, data: str) -> None:
        for element in self._open:
            element.text_parts.append(data)

    def find_all(self, tag: str | None = None, **attrs: str | None) -> list[Element]:
        """Elements of ``tag`` having each attribute (``data_x`` means ``data-x``);
        a value of None only asks for the attribute to be there."""
        wanted = {name.replace("_", "-"): value for name, value in attrs.items()}
        return [
            element
            for element in self.elements
            if (tag is None or element.tag == tag)
            and all(
                name in element.attrs and (value is None or element.attrs[name] == value)
                for name, value in wanted.items()
            )
        ]

    def one(self, tag: str | None = None, **attrs: str | None) -> Element:
        """The one element that matches (an assertion error otherwise)."""
        found = self.find_all(tag, **attrs)
        assert len(found) == 1, f"{len(found)} elements match {tag} {attrs}"
        return found[0]

    def stat(self, key: str) -> str:
        """The ``data-value`` of the element marked ``data-stat=key``."""
        return self.one(data_stat=key).attrs["data-value"]

    def links(self) -> list[str]:
        """Every ``href``, ``src`` and form ``action`` of the page."""
        return [
            element.attrs[name]
            for element in self.elements
            for name in ("href", "src", "action")
            if name in element.attrs
        ]

    def texts(self) -> list[str]:
        """The text of every element (with markup characters as they read)."""
        return [element.text for element in self.elements]
