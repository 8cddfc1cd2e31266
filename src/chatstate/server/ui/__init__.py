"""The web inspector at ``/ui`` and the offline ``/docs`` page.

:func:`install` adds both to an application: the inspector's pages (``routes``), its
static files (``static/``, served at ``/ui/static``) and Swagger UI from packaged assets.
Everything ships inside the wheel; nothing loads from the network.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

from chatstate.server.ui.docs import install_docs
from chatstate.server.ui.routes import router

__all__ = ["install"]

STATIC = Path(__file__).parent / "static"


def install(app: FastAPI) -> None:
    app.include_router(router)
    app.mount("/ui/static", StaticFiles(directory=str(STATIC)), name="ui-static")
    install_docs(app)
