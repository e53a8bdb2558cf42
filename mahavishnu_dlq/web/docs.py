"""The interactive API reference at ``/api/v1/docs``: Swagger UI, shipped in the package.

The assets are a pinned copy of the npm package ``swagger-ui-dist`` under
``static/vendor/swagger-ui/`` (``scripts/vendor_swagger_ui.py`` reproduces it and
checks its sums); ``static/docs.js`` starts it on ``api/v1/openapi.json`` relative
to the mount point — no inline script, no CDN. A signed-in browser's requests
from the page carry its session and, for POSTs, its CSRF token; others use the
page's *Authorize* button with a bearer token.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from .auth import Principal, optional_principal
from .render import page

__all__ = ["router"]

router = APIRouter(include_in_schema=False)


@router.get("/api/v1/docs")
async def api_docs(
    request: Request, principal: Annotated[Principal | None, Depends(optional_principal)]
) -> Response:
    """The Swagger UI page of the OpenAPI document (``/api/v1/openapi.json``)."""
    return page(request, "docs.html", principal)
