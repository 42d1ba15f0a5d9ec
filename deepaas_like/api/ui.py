"""The what-if page at ``/ui/``: a person's face of the API, served from ``deepaas_like/ui``.

Two pages, a few ES modules and a style sheet, nothing generated at install time and nothing
fetched from elsewhere. The pages only carry the base path and the model's name (``data-`` attributes);
``app.js`` reads every form from ``/swagger.json`` (the predict and train operations'
``multipart/form-data`` schemas) and calls the API itself, with the user's token when one
is pasted. So the pages are open (policy OPEN) and the API calls they make carry the access::

    GET /ui/                    the served models
    GET /ui/models/iris         predict form, what-if chart, training, async predictions
    GET /ui/static/app.js       the page's script (ES modules: app.js imports the others) and style.css

Every answer under ``/ui`` has a Content-Security-Policy that allows nothing but this server:
no inline script or style, no frames, no plugins.
"""

from __future__ import annotations

import html
from pathlib import Path

from aiohttp import web

from .keys import SETTINGS
from .rendering import file_in
from .responses import json_response

UI_DIRECTORY = Path(__file__).resolve().parent.parent / "ui"
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
ASSET_TYPES = {".js": "text/javascript", ".css": "text/css"}


def _page(request: web.Request, template: str, model: str = "") -> web.Response:
    """``template`` with its ``{{base}}`` and ``{{model}}`` filled in (escaped)."""
    text = (UI_DIRECTORY / template).read_text(encoding="utf-8")
    for key, value in {"base": request.app[SETTINGS].base_path, "model": model}.items():
        text = text.replace("{{" + key + "}}", html.escape(value, quote=True))
    return web.Response(text=text, content_type="text/html", headers={**HEADERS, "Cache-Control": "no-cache"})


async def index(request: web.Request) -> web.Response:
    """``GET /ui/``: the served models, each a link to its page."""
    return _page(request, "index.html")


async def model_page(request: web.Request) -> web.Response:
    """``GET /ui/models/{name}``: the model's page (an unknown name is said so on the page)."""
    return _page(request, "model.html", request.match_info["name"])


async def asset(request: web.Request) -> web.StreamResponse:
    """``GET /ui/static/{file}``: a script or the style sheet of ``deepaas_like/ui``; else a 404.

    ``no-cache``: the browser revalidates (ETag, Last-Modified), so an upgrade shows at once.
    """
    path = file_in(UI_DIRECTORY, request.match_info["file"])
    content_type = ASSET_TYPES.get(path.suffix) if path is not None else None
    if path is None or content_type is None:
        return await not_found(request)
    return web.FileResponse(path, headers={**HEADERS, "Content-Type": content_type, "Cache-Control": "no-cache"})


async def not_found(request: web.Request) -> web.Response:
    """Any other path under ``/ui/``: the usual JSON 404, with the page's headers."""
    return json_response(
        {
            "message": f"Not found: {request.method} {request.path}. The models are listed at "
            f"{request.app[SETTINGS].base_path}/ui/"
        },
        404,
        HEADERS,
    )
