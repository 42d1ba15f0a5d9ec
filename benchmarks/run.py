#!/usr/bin/env python3
"""deepaas_like against DEEPaaS 2.6.0, same plugins, same machine, same run.

    make bench                       # or: .venv/bin/python benchmarks/run.py [--quick]

Installs DEEPaaS 2.6.0 (with scikit-learn and the bench plugins) in a virtualenv of
its own on first use, then, for every repeat, starts each server in turn on
127.0.0.1 (DEEPaaS with --workers 1 and 2; ours configured per model), drives it with
benchmarks/loadgen.py at each concurrency, and stops it by PID. It also measures, in
the same run, the plugins' in-process call rate (the physical limit) and our own
``GET /v2/models/echobench/`` rate (the framework's floor). Prints one table of
medians and writes benchmarks/results/latest.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from loadgen import process_tree_rss_mib  # noqa: E402

PLUGINS = ROOT / "tests" / "bench_plugins"  # copies of ../shared/bench/plugins (a test keeps them equal)
QUERY = "sepal_length=5.1&sepal_width=3.5&petal_length=1.4&petal_width=0.2"
OURS_FLAGS = {  # how we serve each model
    "echobench": ["--executor", "thread"],
    "irisbench": ["--workers", "2"],
    "irisbatch": ["--workers", "2", "--max-batch-size", "32", "--max-batch-time-ms", "2"],
}


@dataclass
class Case:
    framework: str  # "deepaas" or "ours"
    model: str
    kind: str  # "predict" or "metadata"
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def ensure_deepaas(venv: Path) -> Path:
    python = venv / "bin" / "python"
    check = [str(python), "-c", "import deepaas, sklearn, irisbench.api, echobench.api"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return venv / "bin" / "deepaas-run"
    log(f"installing DEEPaaS 2.6.0 into {venv}")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "deepaas==2.6.0", "scikit-learn", "joblib"], check=True)
    subprocess.run([*pip, str(PLUGINS / "echobench"), str(PLUGINS / "irisbench")], check=True)
    return venv / "bin" / "deepaas-run"


class Server:
    """One server process on a free loopback port, stopped by PID."""

    def __init__(self, command: list[str], ready_path: str, log_path: Path) -> None:
        self.port = free_port()
        self.log = open(log_path, "w")
        self.process = subprocess.Popen(
            [*command, "--listen-ip", "127.0.0.1", "--listen-port", str(self.port)],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited ({self.process.returncode}); see {log_path}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{ready_path}", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server not ready after 180 s; see {log_path}")

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(5)  # DEEPaaS 2.6 may hang on SIGTERM; its group is killed below
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        try:  # anything left in its session (DEEPaaS's pool processes)
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.log.close()


def drive(server: Server, case: Case, requests: int, loadgen: Path) -> None:
    if case.kind == "metadata":
        args = ["--url", server.url(f"/v2/models/{case.model}/"), "--method", "GET"]
    else:
        args = ["--url", server.url(f"/v2/models/{case.model}/predict/?{QUERY}"), "--method", "POST"]
    out = subprocess.run(
        [sys.executable, str(loadgen), *args, "-c", str(case.concurrency), "-n", str(requests),
         "--duration-max", "30", "--server-pid", str(server.process.pid)],
        capture_output=True, text=True, check=True, timeout=120,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result.setdefault("server_cpu_ms_per_req", round(result["server_cpu_s"] / max(1, result["completed"]) * 1000, 3))
    result["rss_mib"] = round(process_tree_rss_mib(server.process.pid), 1)
    case.runs.append(result)
    log(f"  {case.framework} {case.config} {case.model} {case.kind} c={case.concurrency}: "
        f"{result['rps']} req/s p50 {result['lat_ms']['p50']} ms p99 {result['lat_ms']['p99']} ms "
        f"errors {result['errors']}")


def in_process_rates(seconds: float) -> dict[str, float]:
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--requests", type=int, default=3000, help="per run (each run also stops after 30 s)")
    parser.add_argument("--concurrency", default="1,8,64")
    parser.add_argument("--frameworks", default="deepaas,ours")
    parser.add_argument("--deepaas-venv", type=Path,
                        default=Path(tempfile.gettempdir()) / "deepaas-like-bench" / "deepaas-2.6.0")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--loadgen", type=Path, default=HERE / "loadgen.py",
                        help="load generator script with loadgen.py's flags and JSON output "
                        "(e.g. ../shared/bench/loadgen.py, the one DEEPaaS's baseline was measured with)")
    parser.add_argument("--quick", action="store_true", help="1 repeat, 300 requests: a smoke run")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.requests = 1, 300
    levels = [int(c) for c in args.concurrency.split(",")]
    frameworks = args.frameworks.split(",")
    raw = args.out / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    data_dir = Path(tempfile.mkdtemp(prefix="deepaas-like-bench-data-"))

    servers: list[tuple[str, str, str, list[str], list[tuple[str, int]]]] = []  # framework, config, model, cmd, cases
    if "deepaas" in frameworks:
        deepaas_run = ensure_deepaas(args.deepaas_venv)
        for workers in (1, 2):
            for model in ("echobench", "irisbench"):
                cases = [("predict", c) for c in levels] + ([("metadata", 64)] if model == "echobench" else [])
                servers.append(("deepaas", f"w{workers}", model,
                                [str(deepaas_run), "--model-name", model, "--workers", str(workers)], cases))
    if "ours" in frameworks:
        ours = [sys.executable, "-m", "deepaas_like.cli.run", "--data-dir", str(data_dir), "--log-level", "WARNING"]
        for model, flags in OURS_FLAGS.items():
            cases = [("predict", c) for c in (levels if model != "irisbatch" else [max(levels)])]
            if model == "echobench":
                cases.append(("metadata", 64))
            servers.append(("ours", " ".join(flags), model, [*ours, "--model-name", model, *flags], cases))

    results: dict[tuple, Case] = {}
    log("in-process call rate (the physical limit)")
    inprocess = [in_process_rates(3.0)]
    for repeat in range(1, args.repeats + 1):
        order = servers if repeat % 2 else list(reversed(servers))  # alternate, so drift hits both alike
        for framework, config, model, command, cases in order:
            log(f"repeat {repeat}: {framework} {model} ({config})")
            ready = "/v2/health/ready" if framework == "ours" else "/v2/"
            server = Server(command, ready, raw / f"{framework}-{model}-{config.replace(' ', '_')}-{repeat}.log")
            try:
                for kind, level in cases:
                    case = results.setdefault((framework, model, kind, level, config),
                                              Case(framework, model, kind, level, config))
                    drive(server, case, args.requests, args.loadgen)
            finally:
                server.stop()
        inprocess.append(in_process_rates(3.0))
    limits = {name: statistics.median(r[name] for r in inprocess) for name in inprocess[0]}
    report = summarize(results, limits, levels, args.loadgen)
    print(report["markdown"])
    (args.out / "latest.md").write_text(report["markdown"])
    (args.out / "latest.json").write_text(json.dumps(report["json"], indent=1))
    return 0


def _fmt(values: dict | None, keys: tuple[str, ...], spec: str = ".0f") -> str:
    return " / ".join(format(values[k], spec) for k in keys) if values else "–"


def summarize(results: dict[tuple, Case], limits: dict[str, float], levels: list[int], loadgen: Path) -> dict:
    def best_deepaas(model: str, kind: str, level: int) -> Case | None:
        candidates = [c for c in results.values()
                      if c.framework == "deepaas" and c.model == model and c.kind == kind and c.concurrency == level]
        return max(candidates, key=lambda c: c.median("rps"), default=None)

    def ours(model: str, kind: str, level: int) -> Case | None:
        return next((c for c in results.values() if c.framework == "ours" and c.model == model
                     and c.kind == kind and c.concurrency == level), None)

    rows, table = [], []
    header = ("| case | DEEPaaS req/s | ours req/s | ratio | DEEPaaS p50 / p99 ms | ours p50 / p99 ms "
              "| server CPU ms/req D / ours | RSS MiB D / ours |")
    table += [header, "|" + "---|" * 8]
    for model in ("echobench", "irisbench", "irisbatch"):
        for kind in ("predict", "metadata"):
            for level in sorted({c.concurrency for c in results.values() if c.model == model and c.kind == kind}):
                mine, theirs = ours(model, kind, level), best_deepaas("irisbench" if model == "irisbatch" else model, kind, level)
                row = {"model": model, "kind": kind, "concurrency": level}
                for label, case in (("deepaas", theirs), ("ours", mine)):
                    if case is not None:
                        row[label] = {"config": case.config, "rps": case.median("rps"),
                                      "p50_ms": case.median("lat_ms.p50"), "p99_ms": case.median("lat_ms.p99"),
                                      "cpu_ms_per_req": case.median("server_cpu_ms_per_req"),
                                      "rss_mib": max(r["rss_mib"] for r in case.runs),
                                      "errors": sum(r["errors"] for r in case.runs), "runs": len(case.runs),
                                      "rps_all": [r["rps"] for r in case.runs]}
                if "deepaas" in row and "ours" in row:
                    row["ratio"] = row["ours"]["rps"] / row["deepaas"]["rps"]
                rows.append(row)
                d, o = row.get("deepaas"), row.get("ours")
                name = f"{model} {kind} c={level}" + (" (batching; DEEPaaS: irisbench)" if model == "irisbatch" else "")
                ratio = f"{row['ratio']:.2f}×" if "ratio" in row else "–"
                deepaas_rps = f"{d['rps']:.0f} ({d['config']})" if d else "–"
                table.append(
                    f"| {name} | {deepaas_rps} | {_fmt(o, ('rps',))} | {ratio} | {_fmt(d, ('p50_ms', 'p99_ms'), '.2f')} "
                    f"| {_fmt(o, ('p50_ms', 'p99_ms'), '.2f')} | {_fmt(d, ('cpu_ms_per_req',), '.3f')} / "
                    f"{_fmt(o, ('cpu_ms_per_req',), '.3f')} | {_fmt(d, ('rss_mib',))} / {_fmt(o, ('rss_mib',))} |"
                )

    def get(model: str, kind: str, level: int, who: str, key: str) -> float | None:
        for row in rows:
            if (row["model"], row["kind"], row["concurrency"]) == (model, kind, level) and who in row:
                return row[who][key]
        return None

    top = max(levels)
    checks = []

    def check(text: str, value: float | None, target: float, higher: bool = True) -> None:
        if value is None:
            return
        met = value >= target if higher else value <= target
        checks.append({"check": text, "value": round(value, 3), "target": target, "met": met})

    div = lambda a, b: a / b if a is not None and b else None  # noqa: E731
    check(f"echobench c={top}: ours / DEEPaaS req/s", div(get("echobench", "predict", top, "ours", "rps"),
          get("echobench", "predict", top, "deepaas", "rps")), 5.0)
    check(f"echobench c={top}: ours predict / ours GET metadata req/s", div(get("echobench", "predict", top, "ours", "rps"),
          get("echobench", "metadata", 64, "ours", "rps")), 0.7)
    check(f"irisbench c={top} (no batching): ours / DEEPaaS req/s", div(get("irisbench", "predict", top, "ours", "rps"),
          get("irisbench", "predict", top, "deepaas", "rps")), 3.0)
    check(f"irisbench c={top} (no batching): ours / in-process limit", div(get("irisbench", "predict", top, "ours", "rps"),
          limits.get("irisbench")), 0.85)
    check(f"irisbatch c={top} (batching): ours / in-process single-row limit",
          div(get("irisbatch", "predict", top, "ours", "rps"), limits.get("irisbench")), 2.0)
    check(f"irisbatch c={top} (batching): ours p99 / DEEPaaS irisbench p99",
          div(get("irisbatch", "predict", top, "ours", "p99_ms"), get("irisbench", "predict", top, "deepaas", "p99_ms")),
          1.0, higher=False)
    check("echobench c=1: ours p50 / DEEPaaS p50", div(get("echobench", "predict", 1, "ours", "p50_ms"),
          get("echobench", "predict", 1, "deepaas", "p50_ms")), 0.5, higher=False)

    lines = [
        f"Run of {time.strftime('%Y-%m-%d %H:%M')} on {os.cpu_count()} CPUs, Python {sys.version.split()[0]}; "
        "medians of the repeats; DEEPaaS 2.6.0 at its better of --workers 1 and 2 for each case; "
        "ours: " + "; ".join(f"{m} `{' '.join(f)}`" for m, f in OURS_FLAGS.items()) + f"; load generator: {loadgen.name}"
        + (f" ({loadgen.parent.name}/)" if loadgen.parent != HERE else "") + ".",
        "",
        *table,
        "",
        f"In-process call rate (the physical limit, one core): irisbench {limits.get('irisbench', 0):.0f} calls/s, "
        f"echobench {limits.get('echobench', 0):.0f} calls/s.",
        "",
        "| target | measured | goal | met |",
        "|---|---|---|---|",
        *[f"| {c['check']} | {c['value']:.2f} | {'≥' if 'p50' not in c['check'] and 'p99' not in c['check'] else '≤'} "
          f"{c['target']} | {'yes' if c['met'] else 'no'} |" for c in checks],
        "",
    ]
    return {"markdown": "\n".join(lines), "json": {"rows": rows, "in_process": limits, "checks": checks}}


if __name__ == "__main__":
    sys.exit(main())
