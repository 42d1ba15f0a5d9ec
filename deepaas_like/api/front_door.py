"""The front door: every route's handler runs inside it. It checks access, records the
request's metrics and renders every error as JSON: ``{"message": ..., ...}``."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Iterator

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler
from yarl import URL

from ..auth.gate import Gate
from ..auth.policy import OPEN, Policy
from ..errors import DeepaasError, PayloadTooLarge
from ..models import ModelNotFound
from .keys import ORIGINS, PRINCIPAL, SETTINGS, WARNINGS
from .metrics import Metrics
from .origins import SAFE_METHODS, Origins
from .responses import json_response

if TYPE_CHECKING:  # what AbstractResource.get_info() returns (aiohttp does not export it)
    from aiohttp.web_urldispatcher import _InfoDict

LOG = logging.getLogger(__name__)
_FORWARDED_HEADERS = ("Allow", "Retry-After", "Location")


def _http_error_body(exc: web.HTTPException, request: web.Request) -> dict[str, Any]:
    if isinstance(exc, web.HTTPNotFound):
        return {"message": f"Not found: {request.method} {request.path}. The API is described at /swagger.json"}
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        return {
            "message": f"Method {exc.method} is not allowed for {request.path}; allowed: {allowed}",
            "allowed": sorted(exc.allowed_methods),
        }
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        if "form fields" in (exc.text or ""):  # aiohttp's own limit on an urlencoded form
            return {"message": f"{exc.text} Send that many values as JSON or multipart/form-data"}
        return PayloadTooLarge(request.app[SETTINGS].client_max_size).body()
    return {"message": exc.reason or exc.text or f"HTTP {exc.status}"}


class FrontDoor:
    """What every request goes through, its route's handler wrapped in it: who calls and
    whether the route's policy lets them, errors as JSON, each answer counted and timed.

    Each handler is wrapped once, when its route is registered, with its policy and its
    metrics label bound. As an aiohttp middleware, the same work cost more on every
    request: aiohttp adds a middleware of its own beside any, and looks the chain up,
    and the route's policy had to be found. Requests that match no route reach the
    last-resort route (:meth:`add_last_resort`).
    """

    def __init__(
        self,
        metrics: Metrics,
        gate: Gate,
        origins: Origins,
        read_timeout: float = 0.0,
        catch_up: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self._metrics = metrics
        self._gate = gate
        self._origins = origins
        self._read_timeout = read_timeout
        self._catch_up = catch_up  # with replicas: read a model not known here from the store

    def wrap(
        self,
        handler: Handler,
        policy: Policy,
        label: str,
        model: str | None = None,
        *,
        method: str = hdrs.METH_ANY,
        any_host: bool = False,
    ) -> Handler:
        """``handler`` behind the front door, under ``policy``; ``label``: its route in /metrics;
        ``model``: the model every request of this route names, if it is known already;
        ``method``: the route's (one that changes state is refused to other origins' pages);
        ``any_host``: serve any Host (health probes)."""
        gate, origins = self._gate, self._origins
        observe = self._metrics.observe if model is None else self._metrics.observer(model)
        checks, identifies, anyone = gate.checks(policy), gate.enabled, gate.open_principal
        host_allowed = None if any_host or origins.any_host else origins.host_allowed
        cross_site = origins.cross_site if method not in SAFE_METHODS and method != hdrs.METH_ANY else None
        watch_body = self._read_timeout > 0 and method not in (hdrs.METH_GET, hdrs.METH_HEAD)
        read_timeout = self._read_timeout
        catch_up = self._catch_up

        async def handle(request: web.Request) -> web.StreamResponse:
            started = time.perf_counter()
            response: web.StreamResponse
            if host_allowed is not None and not host_allowed(request.headers.get(hdrs.HOST)):
                response = origins.refuse_host(request.headers.get(hdrs.HOST))
                observe(request, label, response.status, time.perf_counter() - started)
                return response
            if cross_site is not None and (why := cross_site(request)) is not None:
                response = origins.refuse_origin(why)
                observe(request, label, response.status, time.perf_counter() - started)
                return response
            watchdog = BodyWatchdog.arm(request, read_timeout) if watch_body else None
            try:
                if (
                    catch_up is not None
                    and (name := request.match_info.get("name")) is not None
                    and not gate.knows(name)
                ):
                    await catch_up(name)  # another replica may have created it a moment ago
                principal = request[PRINCIPAL] = (
                    gate.identify(request.headers.get(hdrs.AUTHORIZATION)) if identifies else anyone
                )
                if checks:
                    gate.authorize(principal, policy, request.match_info.get("name"))
                response = await handler(request)
            except DeepaasError as exc:
                if isinstance(exc, ModelNotFound) and gate.enabled and PRINCIPAL in request:
                    # it names the served models: only those the caller may know of
                    exc = exc.seen_by(functools.partial(gate.sees_model, request[PRINCIPAL]))
                response = _domain_error(request, label, exc)
            except web.HTTPException as exc:
                if exc.status < 400:  # a redirect
                    observe(request, label, exc.status, time.perf_counter() - started)
                    raise
                headers = {k: v for k, v in exc.headers.items() if k in _FORWARDED_HEADERS}
                response = json_response(_http_error_body(exc, request), exc.status, headers)
            except (asyncio.CancelledError, ConnectionResetError):  # the client went away
                observe(request, label, 500, time.perf_counter() - started)
                raise
            except Exception as exc:
                LOG.exception("unexpected error answering %s %s", request.method, request.path)
                response = json_response({"message": f"Internal server error: {type(exc).__name__}: {exc}"}, 500)
            finally:
                if watchdog is not None:
                    watchdog.disarm()
            observe(request, label, response.status, time.perf_counter() - started)
            return response

        return handle

    def add_last_resort(self, router: web.UrlDispatcher) -> web.AbstractRoute:
        """Register, after every other route, the one that takes what they did not: its
        answer is the JSON 404, or the 405 with ``Allow`` if the path has other methods."""
        resource = _Everything(self.wrap(_unmatched, OPEN, UNMATCHED))
        router.register_resource(resource)
        return resource.route


UNMATCHED = "unmatched"  # the route label of requests that match no route


async def _unmatched(request: web.Request) -> web.StreamResponse:
    if request.method == hdrs.METH_OPTIONS and "Access-Control-Request-Method" in request.headers:
        return request.app[ORIGINS].preflight(request)  # a browser asks before a cross-origin call
    allowed: set[str] = set()
    for resource in request.app.router.resources():  # a shortcut's template answers for it
        if not isinstance(resource, _Everything) and not getattr(resource, "shortcut", False):
            allowed |= (await resource.resolve(request))[1]
    if allowed:
        raise web.HTTPMethodNotAllowed(request.method, allowed)
    raise web.HTTPNotFound()


class _Everything(web.AbstractResource):
    """A resource that matches every method and path. aiohttp looks a path's resources up
    by its prefixes, longest first, and this one is filed under the shortest, ``/``: it
    is tried last."""

    def __init__(self, handler: Handler) -> None:
        super().__init__()
        self.route = web.ResourceRoute(hdrs.METH_ANY, handler, self)

    @property
    def canonical(self) -> str:
        return "/"

    def url_for(self, **kwargs: str) -> URL:
        raise RuntimeError("the last-resort route has no URL")

    async def resolve(self, request: web.Request) -> tuple[web.UrlMappingMatchInfo, set[str]]:
        return web.UrlMappingMatchInfo({}, self.route), set()

    def add_prefix(self, prefix: str) -> None:
        raise RuntimeError("the last-resort route belongs to the application itself")

    def get_info(self) -> _InfoDict:
        return {}

    def raw_match(self, path: str) -> bool:
        return False

    def __len__(self) -> int:
        return 1

    def __iter__(self) -> Iterator[web.AbstractRoute]:
        yield self.route


def _domain_error(request: web.Request, route: str, exc: DeepaasError) -> web.Response:
    if exc.status >= 500:  # worth a warning; a flood of them is counted, not logged line by line
        request.app[WARNINGS].warn(
            (exc.status, route, type(exc).__name__),
            "%s %s -> %s: %s",
            request.method,
            request.path,
            exc.status,
            exc.message,
        )
    return json_response(exc.body(), exc.status, exc.headers)


class BodyWatchdog:
    """Closes the connection of a client that stops sending a request's body: no new byte
    for ``timeout`` seconds while the body is not complete (a slow but steady upload
    goes on). Armed only when the body had not all arrived with the headers."""

    __slots__ = ("_request", "_timeout", "_seen", "_handle")

    def __init__(self, request: web.Request, timeout: float) -> None:
        self._request = request
        self._timeout = timeout
        self._seen = request.content.total_bytes
        self._handle: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(timeout, self._check)

    @classmethod
    def arm(cls, request: web.Request, timeout: float) -> "BodyWatchdog | None":
        if not request.body_exists or request.content.is_eof():
            return None
        return cls(request, timeout)

    def _check(self) -> None:
        content = self._request.content
        if content.is_eof():
            self._handle = None
            return
        if content.total_bytes == self._seen:
            LOG.info(
                "%s %s: no byte of the body for %gs; closing the connection (--request-read-timeout)",
                self._request.method,
                self._request.path,
                self._timeout,
            )
            transport = self._request.transport
            if transport is not None:
                transport.close()
            self._handle = None
            return
        self._seen = content.total_bytes
        self._handle = asyncio.get_running_loop().call_later(self._timeout, self._check)

    def disarm(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
