"""Overload and flood: more clients than a model can serve, with the server's defaults.

* :func:`overload`: a closed loop of 256 connections for a minute; every request
  should still be answered 200 (requests wait, none is refused or lost).
* :func:`flood`: thousands of connections on a slow model; the excess should be
  refused at once (503 with ``Retry-After``) while health checks keep being answered
  quickly and the log stays short. Sequential probes (:mod:`probe`) measure what a
  liveness checker and a newly arriving client see meanwhile.
"""

from __future__ import annotations

import time

from loadgen import process_tree_rss_mib
from measure import run_loadgen
from probe import Probe
from servers import Server
from wrk import run_wrk, wrk_path

QUERY = "sepal_length=5.1&sepal_width=3.5&petal_length=1.4&petal_width=0.2"
WRK_TIMEOUT_S = 30.0  # longer than the server's default --max-queue-wait (10 s): slow answers are measured, not dropped


def predict_path(model: str) -> str:
    return f"/v2/models/{model}/predict/?{QUERY}"


def overload(server: Server, model: str, connections: int, seconds: float) -> dict:
    """A closed loop of ``connections`` POSTs for ``seconds`` (wrk; loadgen when wrk is missing)."""
    url = server.url(predict_path(model))
    if wrk_path():
        result = run_wrk(
            url,
            method="POST",
            connections=connections,
            seconds=seconds,
            threads=4,
            timeout_s=WRK_TIMEOUT_S,
            server_pid=server.pid,
            count_statuses=True,
        )
    else:
        result = run_loadgen(
            [url],
            method="POST",
            concurrency=connections,
            requests=10**9,
            server_pid=server.pid,
            duration_max=seconds,
            timeout=WRK_TIMEOUT_S,
        )
        result["tool"] = "loadgen"
    result["rss_mib"] = round(process_tree_rss_mib(server.pid), 1)
    return result


def listen_overflows() -> int | None:
    """The kernel's count of connections dropped because a listen queue was full (all sockets)."""
    try:
        header, values = [line.split() for line in open("/proc/net/netstat") if line.startswith("TcpExt:")][:2]
        return int(dict(zip(header, values))["ListenOverflows"])
    except (OSError, ValueError, KeyError):
        return None


def flood(
    server: Server, model: str, connections: int, seconds: float, health_path: str, health_port: int | None = None
) -> dict:
    """wrk with ``connections`` on ``model`` for ``seconds``, probes beside it; the answers by status.

    Probes: ``GET health_path`` on a new connection each time, the same on one kept-alive
    connection, and a newcomer's prediction once the flood is under way (a 503 should come
    at once; one that is admitted instead gives up after 2 s and counts as failed)."""
    lines_before, bytes_before = server.log_size()
    overflows_before = listen_overflows()
    own_port = Probe(health_port, "GET", health_path, start_delay_s=0.25) if health_port else None
    if own_port is not None:
        own_port.start()
    with (
        Probe(server.port, "GET", health_path, start_delay_s=0.25) as health,
        Probe(server.port, "GET", health_path, keep_alive=True, start_delay_s=0.25) as health_keep_alive,
        Probe(server.port, "POST", predict_path(model), timeout_s=2.0, start_delay_s=min(1.0, seconds / 4)) as newcomer,
    ):
        result = run_wrk(
            server.url(predict_path(model)),
            method="POST",
            connections=connections,
            seconds=seconds,
            threads=4,
            timeout_s=WRK_TIMEOUT_S,
            server_pid=server.pid,
            count_statuses=True,
        )
        result["rss_mib"] = round(process_tree_rss_mib(server.pid), 1)
    if own_port is not None:
        own_port.__exit__(None, None, None)
    overflows_after = listen_overflows()
    time.sleep(1.0)  # what the server logs about the flood right after it
    lines_after, bytes_after = server.log_size()
    statuses = result.get("status_counts", {})
    answered = sum(statuses.values())
    refused = statuses.get(503, 0)
    result["extra"] = {
        "connections": connections,
        "answered": answered,
        "share_503": round(refused / answered, 4) if answered else None,
        "retry_after_share": round(result.get("retry_after_503", 0) / refused, 4) if refused else None,
        "health": health.summary(),
        "health_keep_alive": health_keep_alive.summary(),
        "health_port": own_port.summary() if own_port is not None else None,
        "newcomer_503": newcomer.summary(status=503),
        "newcomer_all": newcomer.summary(),
        "log_lines": lines_after - lines_before,
        "log_bytes": bytes_after - bytes_before,
        "listen_overflows": (overflows_after - overflows_before) if overflows_before is not None else None,
    }
    return result
