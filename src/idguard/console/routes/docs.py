"""The OpenAPI page at /api/v1/docs, served with Swagger UI's files from this server (the
`fastapi-offline` package ships them): FastAPI's own page loads them from a CDN, which a closed
police network cannot reach. Swagger UI is started by a static script (no inline script), so the
page keeps the console's Content-Security-Policy."""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, Request
from starlette.responses import HTMLResponse, Response

from idguard.console.web import secure

router = APIRouter(include_in_schema=False)


def swagger_dir() -> Path:
    return Path(fastapi_offline.__file__).parent / "static"


_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} — API docs</title>
<link rel="stylesheet" href="/static/swagger-ui/swagger-ui.css">
<link rel="icon" href="/static/swagger-ui/favicon.png">
<script src="/static/swagger-ui/swagger-ui-bundle.js" defer></script>
<script src="/static/swagger-init.js" defer></script>
</head>
<body>
<div id="swagger-ui" data-openapi-url="{openapi_url}"></div>
</body>
</html>
"""


@router.get("/api/v1/docs")
def api_docs(request: Request) -> Response:
    """Swagger UI for the OpenAPI document, every file from this server."""
    app = request.app
    html = _PAGE.format(title=app.title, openapi_url=app.openapi_url)
    return secure(HTMLResponse(html))
