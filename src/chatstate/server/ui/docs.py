"""``/docs`` without a network: Swagger UI served from the ``swagger-ui-bundle-v2`` wheel.

FastAPI's default ``/docs`` page loads Swagger UI's script and stylesheet from a CDN, so
it is blank on a machine with no internet. The ``[server]`` extra installs
``swagger-ui-bundle-v2`` (Apache-2.0, Swagger UI 5.x, which reads OpenAPI 3.1), whose
files are mounted at ``/docs/assets``; ReDoc (CDN only) is switched off.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

__all__ = ["ASSETS", "install_docs"]

ASSETS = "/docs/assets"


def install_docs(app: FastAPI) -> None:
    """Serve ``/docs`` from packaged assets (the app is built with ``docs_url=None``)."""
    app.mount(ASSETS, StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} API",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
        )
