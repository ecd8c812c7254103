"""The API documentation pages — Swagger UI (``/docs``) and ReDoc (``/redoc``) — with their
JavaScript, CSS and favicon served by the sidecar itself, under ``/docs/static/``, instead of
from a CDN: the pages render on a host with no internet.

The files come from the installed package ``fastapi-offline`` (MIT licence), which bundles
Swagger UI 5 (Apache-2.0) and ReDoc 2 (MIT) as plain static files; Starlette's
``StaticFiles`` serves them (content type, ``ETag``, ``304 Not Modified``, no path escape).
The routes that use this module (:mod:`routewise.server.routes.operations`) sit behind the
same bearer gate as the API.

Examples
--------
>>> page = swagger_ui_html("routewise sidecar", root_path="")
>>> "/docs/static/swagger-ui-bundle.js" in page.body.decode(), b"https://" in page.body
(True, False)
"""

from __future__ import annotations

from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from starlette.responses import HTMLResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

__all__ = [
    "ASSET_PREFIX",
    "OAUTH2_REDIRECT_PATH",
    "OPENAPI_PATH",
    "asset_response",
    "redoc_html",
    "swagger_ui_html",
]

OPENAPI_PATH = "/openapi.json"
"""Where the OpenAPI document is served."""
OAUTH2_REDIRECT_PATH = "/docs/oauth2-redirect"
"""Swagger UI's OAuth2 redirect page."""
ASSET_PREFIX = "/docs/static"
"""Where the pages' static files are served: ``swagger-ui-bundle.js``, ``swagger-ui.css``,
``redoc.standalone.js``, ``favicon.png``."""

_FILES = StaticFiles(packages=[("fastapi_offline", "static")])


def swagger_ui_html(title: str, *, root_path: str) -> HTMLResponse:
    """The Swagger UI page (``root_path``: the ASGI root path the app is mounted under)."""
    root = root_path.rstrip("/")
    return get_swagger_ui_html(
        openapi_url=root + OPENAPI_PATH,
        title=f"{title} - Swagger UI",
        oauth2_redirect_url=root + OAUTH2_REDIRECT_PATH,
        swagger_js_url=f"{root}{ASSET_PREFIX}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{ASSET_PREFIX}/swagger-ui.css",
        swagger_favicon_url=f"{root}{ASSET_PREFIX}/favicon.png",
    )


def redoc_html(title: str, *, root_path: str) -> HTMLResponse:
    """The ReDoc page (without Google Fonts: it falls back to the browser's fonts)."""
    root = root_path.rstrip("/")
    return get_redoc_html(
        openapi_url=root + OPENAPI_PATH,
        title=f"{title} - ReDoc",
        redoc_js_url=f"{root}{ASSET_PREFIX}/redoc.standalone.js",
        redoc_favicon_url=f"{root}{ASSET_PREFIX}/favicon.png",
        with_google_fonts=False,
    )


async def asset_response(name: str, scope: Scope) -> Response:
    """The static file ``name`` (a 404 ``HTTPException`` for any other name)."""
    return await _FILES.get_response(name, scope)
