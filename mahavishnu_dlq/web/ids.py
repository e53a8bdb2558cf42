"""Task ids in URLs: any id ``enqueue`` accepts, percent-encoded, round-trips.

An id may hold ``/``, ``%``, ``?``, ``#``, spaces or be ``..``; clients encode
every byte but unreserved ones (``quote(task_id, safe="")``), and ``.`` of an
id made only of dots as ``%2E``. The server reads the id from the raw path (the
one the client sent, before the ASGI server decoded ``%2F`` into a separator)
and decodes it once. :func:`task_url` writes such a URL.
"""

from __future__ import annotations

from urllib.parse import quote, unquote

from fastapi import Request

from .errors import WebError

__all__ = ["task_id_of", "task_url"]


def task_url(prefix: str, task_id: str, suffix: str = "") -> str:
    """``prefix`` + the encoded id + ``suffix`` (e.g. ``/api/v1/tasks/`` … ``/retry``)."""
    encoded = quote(task_id, safe="")
    if encoded.strip(".") == "":  # "." and ".." are path steps to clients
        encoded = encoded.replace(".", "%2E")
    return f"{prefix}{encoded}{suffix}"


def task_id_of(request: Request, prefix: str, suffix: str = "") -> str:
    """The id in ``request``'s path between ``prefix`` (after the mount point) and
    ``suffix``, decoded once from the raw path."""
    root = request.scope.get("root_path", "")
    raw: bytes | None = request.scope.get("raw_path")
    start = f"{root}{prefix}".encode()
    if raw is not None:
        path = raw.split(b"?", 1)[0]
        if path.startswith(start) and path.endswith(suffix.encode()):
            encoded = path[len(start) : len(path) - len(suffix)]
            task_id = unquote(encoded.decode("latin-1"), errors="strict")
            if task_id:
                return task_id
    # no raw path (some servers): the decoded one, which cannot tell %2F from /
    path_text = request.url.path
    begin = f"{root}{prefix}"
    if path_text.startswith(begin) and path_text.endswith(suffix):
        task_id = path_text[len(begin) : len(path_text) - len(suffix)]
        if task_id:
            return task_id
    raise WebError(404, "not_found", "no task id in the path", field="task_id")
