"""What handlers read from a request besides its body: the registry, the base path, a
route's version number, query parameters."""

from __future__ import annotations

import re

from aiohttp import web

from ..errors import ArgumentError
from ..registry.service import Registry
from ..settings import parse_bool
from .keys import MODELS, SETTINGS

ASCII_INTEGER = re.compile(r"-?[0-9]{1,30}")
VERSION = re.compile(r"[0-9]{1,30}")  # long enough for any id a client may try, short enough to parse


def registry(request: web.Request) -> Registry:
    return request.app[MODELS].uploads


def base(request: web.Request) -> str:
    return request.app[SETTINGS].base_path


def version_number(request: web.Request) -> int | None:
    """The ``{version}`` of a versioned route, as a number (None on other routes)."""
    text = request.match_info.get("version")
    if text is None:
        return None
    if not VERSION.fullmatch(text) or int(text) < 1:  # "٣" is a digit to str.isdigit()
        raise ArgumentError(f"Version must be a positive integer, got {text!r}", {"version": ["Not a valid version."]})
    return int(text)


def route_version(request: web.Request) -> int:
    """The ``{version}`` of a route whose path always names one (``.../versions/{version}...``)."""
    number = version_number(request)
    if number is None:
        raise RuntimeError(f"the route of {request.path} names no version")
    return number


def query_bool(request: web.Request, name: str) -> bool:
    text = request.query.get(name)
    if text is None or text == "":
        return False
    try:
        return parse_bool(text)
    except ValueError:
        raise ArgumentError(f"{name} must be true or false, got {text!r}", {name: ["Not a valid boolean."]}) from None


def query_int(request: web.Request, name: str, default: int, low: int, high: int | None) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    if not ASCII_INTEGER.fullmatch(text):  # int() would take "٣", " 3" and "3_0"
        raise ArgumentError(f"{name} must be an integer", {name: ["Not a valid integer."]})
    value = int(text)
    if value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ArgumentError(f"{name} must be {bounds}", {name: [f"Must be {bounds}."]})
    return value
