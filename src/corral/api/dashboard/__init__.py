"""The web dashboard at / on every coordinator: server-rendered pages (Jinja2), htmx and its SSE extension
for the live parts (vendored in static/vendor, pinned in assets.lock), one push channel per page.
See docs/dashboard.md."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.responses import HTMLResponse, RedirectResponse, Response

from corral.api import edge
from corral.api.dashboard.live import Live
from corral.store.sql import Store

STATIC = Path(__file__).resolve().parent / "static"
PREFIX = "/ui/"


def install(app: FastAPI, store: Store, local_token: str | None) -> None:
    from corral.api.dashboard.routes import router

    app.state.dashboard_live = Live(store)
    app.state.dashboard_token = local_token
    app.mount("/ui/static", StaticFiles(directory=STATIC), name="dashboard-static")
    app.include_router(router)


def render(status: int, message: str, headers: dict[str, str]) -> Response:
    """The edge's refusals on the dashboard's paths: a page without credentials goes to the sign-in page;
    other refusals are a short page that says why (escaped)."""
    from markupsafe import escape

    if status == 401:
        return RedirectResponse("/ui/login", status_code=303)
    body = (f"<!doctype html><html lang=en><meta charset=utf-8><title>{status}</title>"
            f"<link rel=stylesheet href=/ui/static/dashboard.css><main><h1>{status}</h1><p>{escape(message)}</p>"
            f"<p><a href=/ui/>Back to the dashboard</a></p></main>")
    return HTMLResponse(body, status_code=status, headers=headers)


def edge_renderers() -> list[tuple[str, edge.Render]]:
    return [(PREFIX, render)]
