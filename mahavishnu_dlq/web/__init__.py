"""The operator's web console and JSON API (extra ``web``: FastAPI, Jinja2, uvicorn).

:func:`create_app` returns an ASGI app: mount it in a host application
(``app.mount("/dlq", create_app(dlq))``) or run it with ``mahavishnu-dlq serve``.
See ``docs/web-console.md``. The modules, one concept each:

- :mod:`.app`: ``create_app``, the shared state, security headers, body limit;
- :mod:`.auth`: bearer tokens, browser sessions, roles, CSRF, the action log;
- :mod:`.errors`: one JSON error shape and one status per kind of failure;
- :mod:`.api`: the JSON API under ``/api/v1``; :mod:`.docs` its interactive docs;
- :mod:`.actions`: what an operator does, shared by the API and the pages;
- :mod:`.pages` (sign-in, overview), :mod:`.task_pages` (tasks, one task, selection),
  :mod:`.job_pages` (groups, bulk jobs): the server-rendered pages;
- :mod:`.page_data`: the filter form, times and rates as typed; :mod:`.chart` the
  failure chart's geometry; :mod:`.render` the templates;
- :mod:`.present`: the JSON shapes of tasks, jobs and groups; :mod:`.redact` masking;
  :mod:`.ids`: task ids in URLs.
"""

from __future__ import annotations

from .app import create_app

__all__ = ["create_app"]
