"""wrk as a load generator: run it for a bounded time, read its report as numbers.

    result = run_wrk(url, method="POST", connections=64, seconds=10, server_pid=pid)
    result["rps"], result["lat_ms"]["p99"], result["errors"], result["server_cpu_ms_per_req"]

The result has the shape of ``loadgen.py``'s (rps, lat_ms, completed, errors,
server CPU), plus wrk's own counts: ``non_2xx`` and ``socket_errors``. With
``count_statuses=True`` wrk runs ``lua/statuses.lua``, which adds ``status_counts``
and ``retry_after_503`` (the 503 answers that carried a Retry-After header). ``headers``
('Name: value') are sent with every request (wrk's ``-H``). ``script`` runs another Lua
script instead (e.g. ``peers/post_json.lua``, which POSTs a JSON file), ``script_args`` after wrk's ``--``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

from loadgen import process_tree_cpu

LUA = Path(__file__).resolve().parent / "lua"
UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
SIZE_SUFFIX = {"": 1, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9}


def wrk_path() -> str | None:
    return shutil.which("wrk")


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text).groups()
    return round(float(number) * UNITS_MS[unit], 3)


def _count(text: str) -> float:
    number, suffix = re.fullmatch(r"([\d.]+)([kKMG]?)", text).groups()
    return float(number) * SIZE_SUFFIX[suffix]


def parse_wrk_output(text: str) -> dict:
    """wrk's report (run with --latency) as numbers."""
    result: dict = {"lat_ms": {}, "socket_errors": {"connect": 0, "read": 0, "write": 0, "timeout": 0}, "non_2xx": 0}
    if match := re.search(r"^\s+Latency\s+(\S+)\s+(\S+)\s+(\S+)", text, re.M):
        result["lat_ms"]["mean"], result["lat_ms"]["max"] = _ms(match[1]), _ms(match[3])
    for percent, value in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", text, re.M):
        result["lat_ms"][f"p{percent}"] = _ms(value)
    if match := re.search(r"(\d+) requests in ([\d.]+\w+)", text):
        result["completed"], result["duration_s"] = int(match[1]), _ms(match[2]) / 1000
    if match := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text):
        result["socket_errors"] = dict(zip(("connect", "read", "write", "timeout"), map(int, match.groups())))
    if match := re.search(r"Non-2xx or 3xx responses: (\d+)", text):
        result["non_2xx"] = int(match[1])
    if match := re.search(r"Requests/sec:\s+([\d.]+[kKMG]?)", text):
        result["rps"] = round(_count(match[1]), 1)
    if match := re.search(r"^STATUSES (\{.*\})$", text, re.M):
        counts = json.loads(match[1])
        result["status_counts"] = {int(k): v for k, v in counts["statuses"].items()}
        result["retry_after_503"] = counts["retry_after_503"]
    result["errors"] = result["non_2xx"] + sum(result["socket_errors"].values())
    return result


def run_wrk(
    url: str,
    *,
    method: str = "GET",
    connections: int,
    seconds: float,
    threads: int = 2,
    timeout_s: float = 30.0,
    server_pid: int | None = None,
    count_statuses: bool = False,
    headers: list[str] = (),
    script: Path | None = None,
    script_args: list[str] = (),
) -> dict:
    """Run wrk against ``url`` (loopback only) for ``seconds`` (rounded to whole seconds)
    and return its numbers and the server's CPU."""
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError(f"wrk only targets 127.0.0.1, not {url}")
    lua = "statuses.lua" if count_statuses else ("post.lua" if method == "POST" else None)
    if method not in ("GET", "POST"):
        raise ValueError(f"unsupported method {method}")
    if count_statuses and method != "POST":
        raise ValueError("lua/statuses.lua sends POST requests")
    seconds = max(1, round(seconds))  # wrk takes whole seconds
    command = [
        wrk_path() or "wrk",
        f"-t{min(threads, connections)}",
        f"-c{connections}",
        f"-d{seconds}s",
        f"--timeout={timeout_s:g}s",
        "--latency",
    ]
    if script or lua:
        command += ["-s", str(script or LUA / lua)]
    for header in headers:
        command += ["-H", header]
    arguments = ["--", *script_args] if script_args else []
    cpu_before = process_tree_cpu(server_pid) if server_pid else None
    out = subprocess.run([*command, url, *arguments], capture_output=True, text=True, timeout=seconds + timeout_s + 30)
    cpu_after = process_tree_cpu(server_pid) if server_pid else None
    if out.returncode != 0 or "requests in" not in out.stdout:
        raise RuntimeError(f"wrk failed ({out.returncode}): {(out.stderr.strip() or out.stdout.strip())[:200]}")
    result = {"url": url, "method": method, "concurrency": connections, "tool": "wrk", **parse_wrk_output(out.stdout)}
    if cpu_before is not None:
        result["server_cpu_s"] = round(cpu_after - cpu_before, 3)
        result["server_cpu_ms_per_req"] = round(result["server_cpu_s"] / max(1, result["completed"]) * 1000, 3)
    return result
