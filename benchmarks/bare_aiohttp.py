#!/usr/bin/env python3
"""The reference for the front door's own cost: a bare aiohttp server, nothing else.

``POST /predict`` answers a small JSON document (the shape of an echo prediction) and
``GET /meta`` a small JSON object; no middleware, no validation, no model. Our server's
echo predict and metadata GET are measured against it with wrk in the same run.

    python benchmarks/bare_aiohttp.py --port 5099 [--max-seconds 600]

It binds 127.0.0.1 only and stops by itself after ``--max-seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import json

from aiohttp import web

ANSWER = json.dumps(
    {
        "status": "OK",
        "predictions": {
            "sepal_length": 5.1,
            "sepal_width": 3.5,
            "petal_length": 1.4,
            "petal_width": 0.2,
            "top_k": 3,
            "mode": "echo",
        },
    }
).encode()
META = json.dumps({"id": "echobench", "name": "echobench", "description": "bare aiohttp reference"}).encode()


async def predict(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=ANSWER, content_type="application/json")


async def meta(request: web.Request) -> web.Response:
    return web.Response(body=META, content_type="application/json")


async def ready(request: web.Request) -> web.Response:
    return web.Response(body=b'{"status":"ready"}', content_type="application/json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-seconds", type=float, default=600.0)
    args = parser.parse_args()
    app = web.Application()
    app.router.add_post("/predict", predict)
    app.router.add_get("/meta", meta)
    app.router.add_get("/ready", ready)
    serve(app, args.port, args.max_seconds)


def serve(app: web.Application, port: int, max_seconds: float) -> None:
    """Run ``app`` on 127.0.0.1:``port`` until ``max_seconds`` have passed (or a signal)."""

    async def stop_later(app: web.Application):
        loop = asyncio.get_running_loop()
        handle = loop.call_later(max_seconds, lambda: loop.stop())
        yield
        handle.cancel()

    app.cleanup_ctx.append(stop_later)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main()
