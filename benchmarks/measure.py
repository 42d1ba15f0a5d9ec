"""What one benchmark case is, and the two ways of measuring a server without wrk.

A :class:`Case` is one (framework, model, kind, concurrency, config) with the runs
measured for it; every run is a dict shaped like ``loadgen.py``'s output (``rps``,
``lat_ms``, ``errors``, ``server_cpu_ms_per_req``, ...), whichever tool produced it,
plus ``rss_mib`` and, for some kinds, an ``extra`` dict of their own numbers.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from loadgen import process_tree_rss_mib

HERE = Path(__file__).resolve().parent
LOADGEN = HERE / "loadgen.py"


@dataclass
class Case:
    framework: str  # "deepaas", "ours" or "bare" (the bare aiohttp reference)
    model: str
    kind: str  # "predict", "metadata", "predict-wrk", "overload", "flood", "registry-..."
    concurrency: int
    config: str = ""
    runs: list[dict] = field(default_factory=list)

    @property
    def key(self) -> tuple:
        return (self.framework, self.model, self.kind, self.concurrency, self.config)

    def median(self, path: str) -> float:
        values = []
        for run in self.runs:
            value = run
            for part in path.split("."):
                value = value[part]
            values.append(value)
        return statistics.median(values) if values else float("nan")


def run_loadgen(
    urls: list[str],
    *,
    method: str,
    concurrency: int,
    requests: int,
    server_pid: int,
    loadgen: Path = LOADGEN,
    duration_max: float = 30.0,
    timeout: float = 30.0,
    headers: list[str] = (),
    json_file: Path | None = None,
    warmup: int | None = None,
    expect_status: int | None = None,
) -> dict:
    """One closed-loop run of ``loadgen`` (several URLs: requested in turn) with the server's CPU and RSS.

    ``headers`` ('Name: value') go with every request, ``json_file`` is sent as a JSON body,
    ``expect_status``: the one status that is not an error (200 when None; the three flags
    are also ``../shared/bench/loadgen.py``'s); ``warmup``: untimed requests first (the
    tool's default when None)."""
    command = [
        sys.executable,
        str(loadgen),
        "--method",
        method,
        "-c",
        str(concurrency),
        "-n",
        str(requests),
        "--duration-max",
        str(duration_max),
        "--timeout",
        str(timeout),
        "--server-pid",
        str(server_pid),
    ]
    for url in urls:
        command += ["--url", url]
    for header in headers:
        command += ["--header", header]
    if json_file is not None:
        command += ["--json-file", str(json_file)]
    if warmup is not None:
        command += ["--warmup", str(warmup)]
    if expect_status is not None:
        command += ["--expect-status", str(expect_status)]
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=duration_max + timeout + 90)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result.setdefault("server_cpu_ms_per_req", round(result["server_cpu_s"] / max(1, result["completed"]) * 1000, 3))
    result["rss_mib"] = round(process_tree_rss_mib(server_pid), 1)
    return result


def in_process_rates(seconds: float) -> dict[str, float]:
    """Calls per second of irisbench's and echobench's predict in a tight loop (the physical limit)."""
    code = f"""
import json, time
import irisbench.api as iris, echobench.api as echo
iris.warm()
args = dict(sepal_length=5.1, sepal_width=3.5, petal_length=1.4, petal_width=0.2, top_k=3)
out = {{}}
for name, fn in (("irisbench", iris.predict), ("echobench", echo.predict)):
    for _ in range(200):
        fn(**args)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < {seconds}:
        fn(**args)
        n += 1
    out[name] = n / (time.perf_counter() - start)
print(json.dumps(out))
"""
    return json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
