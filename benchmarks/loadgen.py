#!/usr/bin/env python3
"""Closed-loop HTTP/1.1 load generator for loopback benchmarks (standard library only).

``concurrency`` connections each send the same pre-encoded request, wait for the whole
response, and send the next, until ``requests`` have completed or ``duration_max``
seconds have passed. Keep-alive, one request in flight per connection. A raw client
keeps its own CPU cost low, which matters when it shares a 2-core machine with the
server under test.

    python benchmarks/loadgen.py --url http://127.0.0.1:5000/v2/models/echobench/predict/?a=1 \\
        --method POST -c 8 -n 2000 --server-pid 1234

prints one JSON object: rps, latency percentiles (ms), status counts, errors, and the
CPU seconds the server process and its descendants used during the run. Several
``--url`` are requested in turn, round-robin; on several servers (replicas) too, each of
the ``-c`` clients then keeping one keep-alive connection per host and port. ``--json`` or
``--json-file`` sends a JSON body, ``--header 'Name: value'`` (repeatable) adds a header
to every request: the same flags as ``../shared/bench/loadgen.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import socket
import statistics
import sys
import time
import urllib.parse

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of ``pid`` and every live descendant."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
        times[int(entry)] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    tree, frontier = {pid}, {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - tree
        tree |= frontier
    return sum(times.get(p, 0.0) for p in tree)


def process_tree_rss_mib(pid: int) -> float:
    """Resident memory (MiB) of ``pid`` and every live descendant."""
    total = 0
    for member in _tree(pid):
        try:
            with open(f"/proc/{member}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def _tree(pid: int) -> set[int]:
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    parents[int(entry)] = int(fh.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
    tree, frontier = {pid}, {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - tree
        tree |= frontier
    return tree


def build_request(
    url: str, method: str, body: bytes | None, content_type: str | None, headers: list[str] = ()
) -> tuple[str, int, bytes]:
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
        raise SystemExit(f"loadgen only targets loopback addresses, not {host}")
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{parts.port}", "Connection: keep-alive"]
    for header in headers:
        name, sep, value = header.partition(":")
        if not sep or not name.strip() or "\r" in header or "\n" in header:
            raise SystemExit(f"--header takes 'Name: value', not {header!r}")
        lines.append(f"{name.strip()}: {value.strip()}")
    if body is not None:
        lines += [f"Content-Type: {content_type}", f"Content-Length: {len(body)}"]
    elif method in ("POST", "PUT"):
        lines.append("Content-Length: 0")
    return host, parts.port or 80, ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one response; return its status and whether the connection stays open."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status, headers.get("connection", "").lower() != "close"


async def run(args: argparse.Namespace) -> dict:
    built = [build_request(url, args.method, args.body, args.content_type, args.header) for url in args.url]
    requests = [((host, port), request) for host, port, request in built]  # (target, bytes), in turn
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors = 0
    issued = 0
    stop_at = 0.0

    async def connect(target: tuple[str, int]):
        reader, writer = await asyncio.open_connection(*target, limit=1 << 22)
        writer.transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return reader, writer

    async def one(conns: dict, record: bool, target: tuple[str, int], request: bytes) -> None:
        """One request on this client's connection to ``target`` (opened, or reopened, as needed)."""
        nonlocal errors
        if target not in conns:
            conns[target] = await connect(target)
        reader, writer = conns[target]
        started = time.perf_counter()
        try:
            writer.write(request)
            status, keep = await asyncio.wait_for(read_response(reader), args.timeout)
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError):
            if record:
                errors += 1
            writer.close()
            del conns[target]
            return
        if record:
            latencies.append(time.perf_counter() - started)
            statuses[status] = statuses.get(status, 0) + 1
            if status != args.expect_status:
                errors += 1
        if not keep:
            writer.close()
            del conns[target]

    async def client():
        nonlocal issued
        conns: dict = {}
        await one_connection_each(conns)
        while issued < args.requests and time.perf_counter() < stop_at:
            issued += 1
            await one(conns, True, *requests[issued % len(requests)])
        for _, writer in conns.values():
            writer.close()

    async def one_connection_each(conns: dict) -> None:
        for target, _ in requests:
            if target not in conns:
                conns[target] = await connect(target)

    warm: dict = {}
    for i in range(args.warmup):
        await one(warm, False, *requests[i % len(requests)])
    for _, writer in warm.values():
        writer.close()
    cpu_before = process_tree_cpu(args.server_pid) if args.server_pid else None
    started = time.perf_counter()
    stop_at = started + args.duration_max
    await asyncio.gather(*(client() for _ in range(args.concurrency)))
    elapsed = time.perf_counter() - started
    cpu_after = process_tree_cpu(args.server_pid) if args.server_pid else None
    latencies.sort()

    def pct(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(len(latencies) * p))] * 1000, 3) if latencies else 0.0

    result = {
        "url": args.url[0] if len(args.url) == 1 else f"{len(args.url)} URLs in turn",
        "method": args.method,
        "concurrency": args.concurrency,
        "completed": len(latencies),
        "errors": errors,
        "status_counts": statuses,
        "duration_s": round(elapsed, 3),
        "rps": round(len(latencies) / elapsed, 1),
        "lat_ms": {
            "p50": pct(0.50),
            "p90": pct(0.90),
            "p99": pct(0.99),
            "max": pct(1.0),
            "mean": round(statistics.fmean(latencies) * 1000, 3) if latencies else 0.0,
        },
    }
    if cpu_before is not None:
        result["server_cpu_s"] = round(cpu_after - cpu_before, 3)
        result["server_cpu_ms_per_req"] = round((cpu_after - cpu_before) / max(1, len(latencies)) * 1000, 3)
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, action="append", help="repeat to request several in turn")
    parser.add_argument("--method", default="POST")
    parser.add_argument("-c", "--concurrency", type=int, default=1)
    parser.add_argument("-n", "--requests", type=int, default=2000)
    parser.add_argument("--duration-max", type=float, default=60.0)
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--warmup", type=int, default=50)
    body = parser.add_mutually_exclusive_group()
    body.add_argument("--json", dest="json_body", help="send this JSON object as the body")
    body.add_argument("--json-file", type=argparse.FileType("rb"), help="send this file's JSON as the body")
    parser.add_argument("--header", action="append", default=[], help="'Name: value', repeatable")
    parser.add_argument("--expect-status", type=int, default=200)
    parser.add_argument("--server-pid", type=int)
    args = parser.parse_args(argv)
    if args.json_file:
        with args.json_file as fh:
            args.json_body = fh.read().decode()
    if args.json_body:
        json.loads(args.json_body)  # a body the server would refuse as malformed measures nothing
    args.body = args.json_body.encode() if args.json_body else None
    args.content_type = "application/json" if args.json_body else None
    return args


if __name__ == "__main__":
    print(json.dumps(asyncio.run(run(parse_args(sys.argv[1:])))))
