"""Swagger UI at ``/api``, served entirely from the ``swagger-ui-bundle`` package."""

from __future__ import annotations

import html
from pathlib import Path

from aiohttp import web
from swagger_ui_bundle import swagger_ui_path

from .keys import OPENAPI, SETTINGS
from .rendering import file_in

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>{title}</title>
  <link rel="stylesheet" href="{static}/swagger-ui.css">
  <link rel="icon" type="image/png" href="{static}/favicon-32x32.png">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{static}/swagger-ui-bundle.js"></script>
  <script src="{static}/swagger-ui-standalone-preset.js"></script>
  <script>
    window.onload = function () {{
      window.ui = SwaggerUIBundle({{
        url: "{spec}",
        dom_id: "#swagger-ui",
        deepLinking: true,
        presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
        layout: "StandaloneLayout",
        validatorUrl: null
      }});
    }};
  </script>
</body>
</html>
"""


STATIC_DIRECTORY = Path(swagger_ui_path).resolve()


async def static_file(request: web.Request) -> web.StreamResponse:
    """``GET /api/static/{file}``: one of Swagger UI's files, else the JSON 404."""
    path = file_in(STATIC_DIRECTORY, request.match_info["file"])
    if path is None:
        raise web.HTTPNotFound()
    return web.FileResponse(path)


async def swagger_ui(request: web.Request) -> web.Response:
    base = request.app[SETTINGS].base_path
    page = PAGE.format(
        title=html.escape("deepaas_like API"),
        static=f"{base}/api/static",
        spec=f"{base}/swagger.json",
    )
    return web.Response(text=page, content_type="text/html")


async def openapi_document(request: web.Request) -> web.Response:
    return web.Response(body=request.app[OPENAPI].encoded(), content_type="application/json")
