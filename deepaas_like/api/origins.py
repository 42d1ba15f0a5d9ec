"""Which Host a request may name, and which web origins may change the server's state.

A web page the operator visits can reach a server on 127.0.0.1 too: through DNS
rebinding (a name of the attacker's that resolves to 127.0.0.1, so the browser lets the
page read the answers) or through a cross-site form or ``fetch`` (the browser sends it,
with the operator's network position). Jupyter and MLflow close this with a host
allow-list; so does this module::

    origins = Origins(settings)
    origins.host_allowed("127.0.0.1:5000")        # True: an IP address
    origins.host_allowed("attacker.example:5000")  # False: 403 on every route but health
    origins.cross_site(request)                    # why a state change from another origin is refused

``localhost``, ``*.localhost`` and IP addresses are always accepted (a rebinding page
names its own domain); ``--allowed-hosts`` adds names (``.example.org``: its subdomains
too; ``*``: any). A POST, PUT, PATCH or DELETE whose ``Origin`` is not the server's own
(or whose ``Sec-Fetch-Site`` is ``cross-site``) is refused unless ``--cors-origins`` names
that origin; answers to the origins it names carry CORS headers.
"""

from __future__ import annotations

import ipaddress
import socket

from aiohttp import hdrs, web

from ..settings import Settings

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CORS_METHODS = "GET, POST, PUT, PATCH, DELETE"
CORS_HEADERS = "Authorization, Content-Type, Accept"
CORS_MAX_AGE = "600"
_CACHE = 256  # Host values remembered as judged


class Origins:
    def __init__(self, settings: Settings) -> None:
        names = settings.allowed_hosts or (socket.gethostname(),)
        self.any_host = "*" in names
        self._exact = {n.lower().rstrip(".") for n in names if n and not n.startswith(".")} | {"localhost"}
        self._suffixes = tuple(n.lower() for n in names if n.startswith(".")) + (".localhost",)
        self.cors = frozenset(o.rstrip("/").lower() for o in settings.cors_origins)
        self._judged: dict[str | None, bool] = {}

    # --- Host ----------------------------------------------------------------------

    def host_allowed(self, host: str | None) -> bool:
        """Whether a request naming ``host`` (the Host header, port included) is served."""
        if self.any_host:
            return True
        judged = self._judged.get(host)
        if judged is None:
            judged = self._judge(host)
            if len(self._judged) >= _CACHE:
                self._judged.clear()
            self._judged[host] = judged
        return judged

    def _judge(self, host: str | None) -> bool:
        if not host:
            return False  # HTTP/1.1 requires it; only a hand-made request lacks it
        name = _hostname(host)
        if name is None:
            return False
        try:
            ipaddress.ip_address(name)
            return True
        except ValueError:
            pass
        return name in self._exact or name.endswith(self._suffixes)

    def refuse_host(self, host: str | None) -> web.Response:
        from .responses import json_response

        return json_response(
            {
                "message": f"Host {host!r} is not accepted by this server: use its address, or "
                "add the name to --allowed-hosts",
                "host": host,
            },
            403,
        )

    # --- Origin ---------------------------------------------------------------------

    def cross_site(self, request: web.Request) -> str | None:
        """Why a state-changing request from a web page of another origin is refused (None:
        it is not one, or its origin is in --cors-origins)."""
        headers = request.headers
        origin = headers.get(hdrs.ORIGIN)
        if origin is None:
            if headers.get("Sec-Fetch-Site") == "cross-site":
                return "the request comes from a web page of another site"
            return None
        origin = origin.rstrip("/").lower()
        if origin in self.cors or _same_origin(origin, headers.get(hdrs.HOST)):
            return None
        return f"the request comes from a web page of {origin}, which --cors-origins does not name"

    def refuse_origin(self, why: str) -> web.Response:
        from .responses import json_response

        return json_response(
            {
                "message": f"Refused: {why}. Pages of other origins may not change this server's "
                "state (POST, PUT, PATCH, DELETE); --cors-origins names those that may"
            },
            403,
        )

    def cors_headers(self, request: web.Request) -> dict[str, str] | None:
        """The CORS headers of an answer to an origin of --cors-origins (None: no such origin)."""
        origin = request.headers.get(hdrs.ORIGIN)
        if origin is None or origin.rstrip("/").lower() not in self.cors:
            return None
        return {
            "Access-Control-Allow-Origin": origin,
            "Vary": "Origin",
            "Access-Control-Expose-Headers": "Location, X-Total-Count, X-Log-Size, Retry-After",
        }

    def preflight(self, request: web.Request) -> web.Response:
        """The answer to a CORS preflight (``OPTIONS`` with ``Access-Control-Request-Method``)."""
        headers = self.cors_headers(request)
        if headers is None:
            from .responses import json_response

            return json_response(
                {"message": "Cross-origin requests are accepted only from the origins --cors-origins names"}, 403
            )
        return web.Response(
            status=204,
            headers={
                **headers,
                "Access-Control-Allow-Methods": CORS_METHODS,
                "Access-Control-Allow-Headers": CORS_HEADERS,
                "Access-Control-Max-Age": CORS_MAX_AGE,
            },
        )


def _hostname(host: str) -> str | None:
    """The name or address of a Host header (``[::1]:5000`` -> ``::1``), lower-cased."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[1:end] if end > 0 else None
    name, _, port = host.partition(":")
    if port and not (port.isascii() and port.isdigit()):
        return None
    return name.rstrip(".") or None


def _same_origin(origin: str, host: str | None) -> bool:
    """Whether ``origin`` (``http://127.0.0.1:5000``) is the server's own, as the request's Host names it."""
    if not host:
        return False
    scheme, _, rest = origin.partition("://")
    if scheme not in ("http", "https"):
        return False
    host = host.strip().lower()
    default = ":443" if scheme == "https" else ":80"
    return rest == host or rest == host + default or rest + default == host
