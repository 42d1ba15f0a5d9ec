"""The HTTP layer: routes, request parsing, responses, OpenAPI and Swagger UI."""

from .app import create_app

__all__ = ["create_app"]
