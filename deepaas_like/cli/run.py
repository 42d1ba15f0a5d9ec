"""``deepaas-run``: parse settings, set up logging, build the app, serve it."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
from typing import Any, Sequence

from aiohttp import web

from .. import __version__
from ..api import create_app
from ..api.handlers import readiness
from ..api.health_port import HealthListener, HealthPortFailed
from ..api.keys import MODELS
from ..engine.polling import new_event_loop
from ..errors import DeepaasError, PluginLoadError
from ..loading import GROUP
from ..settings import Settings, SettingsError, load_settings

LOG = logging.getLogger("deepaas_like")
LISTEN_BACKLOG = 4096  # the kernel caps it at net.core.somaxconn

BANNER = """
deepaas_like {version}: serving {count} model(s): {names}

    API documentation (Swagger UI): {base}/api
    API specification (OpenAPI 3): {base}/swagger.json
    V2 endpoint:                    {base}/v2/
    Readiness:                      {base}/v2/health/ready

Stop with Ctrl-C (SIGINT) or SIGTERM.
"""


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        settings = load_settings(argv)
    except SettingsError as exc:
        print(f"deepaas-run: error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if logging.getLogger().level > logging.DEBUG:  # each step of a migration: for --log-level DEBUG only
        logging.getLogger("alembic").setLevel(logging.WARNING)
    os.umask(0o077)  # what the server writes (its store, uploads, jobs' files) is its own
    try:
        app = create_app(settings)
    except PluginLoadError as exc:
        print(f"deepaas-run: error: {exc}", file=sys.stderr)
        if exc.traceback_text:  # a plugin that fails to import: its traceback is the useful part
            print(exc.traceback_text.rstrip(), file=sys.stderr)
            return 1
        return 2  # --model-name names what is not there: a setting to correct
    if not app[MODELS]:
        broken = app[MODELS].broken
        print(
            f"deepaas-run: error: no model plugin could be loaded: {'; '.join(str(e) for e in broken.values())}"
            if broken
            else f"deepaas-run: error: no model plugin is installed (entry-point group '{GROUP}'). "
            "Install one, for example the demo: pip install -e plugins/demo",
            file=sys.stderr,
        )
        return 1
    with asyncio.Runner(loop_factory=lambda: new_event_loop(settings.worker_poll_us)) as runner:
        return runner.run(serve(app, settings))


async def serve(app: web.Application, settings: Settings) -> int:
    """Serve until SIGINT/SIGTERM, then shut down cleanly (a second signal forces it)."""
    # A connection that has not sent a whole request's headers this long after it opened (or
    # after its previous answer) is closed: slow clients cannot hold connections forever.
    keepalive: dict[str, Any] = (
        {"keepalive_timeout": settings.request_read_timeout} if settings.request_read_timeout else {}
    )
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=logging.getLogger("aiohttp.access") if settings.access_log else None,
        shutdown_timeout=settings.shutdown_timeout,
        **keepalive,
    )
    try:
        await runner.setup()  # opens the job store: the data directory must be ours
    except DeepaasError as exc:
        print(f"deepaas-run: error: {exc.message}", file=sys.stderr)
        await runner.cleanup()
        return getattr(exc, "exit_code", 1)
    # A deep accept queue: under a flood, connections wait for the kernel, not in SYN retries.
    site = web.TCPSite(runner, settings.listen_ip, settings.listen_port, backlog=LISTEN_BACKLOG)
    try:
        await site.start()
    except OSError as exc:
        print(
            f"deepaas-run: error: --listen-ip {settings.listen_ip} --listen-port {settings.listen_port}: cannot "
            f"listen there: {exc.strerror or exc}; choose another port (or stop what listens there)",
            file=sys.stderr,
        )
        await runner.cleanup()
        return 2
    health = None
    if settings.health_port:
        health = HealthListener(settings.listen_ip, settings.health_port, lambda: readiness(app[MODELS]))
        try:
            await health.start()
        except HealthPortFailed as exc:
            print(
                f"deepaas-run: error: --health-port {settings.health_port}: cannot listen on "
                f"{settings.listen_ip}:{settings.health_port}: {exc}; choose another port",
                file=sys.stderr,
            )
            await runner.cleanup()
            return 2
    host, port = runner.addresses[0][:2]
    host = f"[{host}]" if ":" in host else host
    base = f"http://{host}:{port}{settings.base_path}"
    models = app[MODELS]
    names = ", ".join(models)
    if models.broken:
        names += f" (and {len(models.broken)} that could not be loaded: {', '.join(sorted(models.broken))})"
    print(BANNER.format(version=__version__, count=len(models), names=names, base=base), flush=True)
    if health is not None:
        print(f"    Health (its own port):          http://{host}:{health.port}/v2/health/ready\n", flush=True)

    # The server's modules, routes and tables live as long as it does: out of the cyclic
    # collector's sight, its full collections no longer pause every request (35-60 ms each).
    gc.collect()
    gc.freeze()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def first_signal(signum: int) -> None:
        LOG.info("received %s: shutting down (send it again to force)", signal.Signals(signum).name)
        stop.set()
        for again in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(again, force_exit, again)

    def force_exit(signum: int) -> None:
        LOG.warning("received %s again: exiting now", signal.Signals(signum).name)
        os._exit(1)  # worker processes die with us (PR_SET_PDEATHSIG)

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, first_signal, signum)
    await stop.wait()
    if health is not None:
        await health.stop()
    await runner.cleanup()
    LOG.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
