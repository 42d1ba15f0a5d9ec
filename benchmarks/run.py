#!/usr/bin/env python3
"""deepaas_like against DEEPaaS 2.6.0, same plugins, same machine, same run.

    make bench                       # or: .venv/bin/python benchmarks/run.py [--quick] [--skip flood,registry]

Installs DEEPaaS 2.6.0 (with scikit-learn and the bench plugins) in a virtualenv of
its own on first use, then measures, in one run, on 127.0.0.1, every server started
and stopped by PID (every server but the flood one once idle after it answers ready: see
benchmarks/servers.py):

* loadgen: every repeat starts each server in turn (DEEPaaS with --workers 1 and 2;
  ours configured per model) and drives it with benchmarks/loadgen.py at each
  concurrency; plus the plugins' in-process call rate (the physical limit).
* wrk: at c=64, for --wrk-duration seconds, our echobench predict and metadata GET
  against a bare aiohttp server (benchmarks/bare_aiohttp.py), and DEEPaaS's.
* auth (ours only): echobench predict at c=64 (loadgen, and wrk unless --skip wrk) on a
  server started with --auth, every request with a models:predict bearer token, against
  the same cases without --auth (added to the plain echobench server if left out).
* oip (ours only): irisbench's Open Inference Protocol infer, one row per request, at c=64
  against its predict/?... (c=64) on the same server; and --infer-requests requests of
  --infer-rows rows each, one at a time, in ms per row (see benchmarks/api_cases.py).
* impact (ours only): a feature-impact job on irisbench, --impact-rows iris rows, 4
  features, the default 5 repeats, seed 0, polled until done: wall time and per prediction.
* overload: c=256 for --overload-duration seconds on irisbench and echobench, with
  the servers' defaults (last repeat only).
* flood: --flood-connections on slowbench (50 ms per prediction): share of 503s,
  Retry-After, health-check latency from a separate probe, log volume.
* registry (ours only): upload to first prediction; irisbench's forest uploaded, plain
  and optimize=onnx; many small models round-robin through a bounded set of loaded ones.
* training (ours only): submit → done of a training, one at a time, the switch to
  re-warmed workers included (--workers 2): echobench's no-op and irisbench's forest;
  the first on a started server, then --trainings more.
* scaleout (ours only; see benchmarks/scaleout.py): on a throwaway PostgreSQL, echobench
  c=64 on one replica and on two replicas of one database (round-robin); asynchronous
  prediction submissions (c=8, --submissions of them) on SQLite and on PostgreSQL;
  irisbench c=64 and c=1 with --executor ray (a local Ray head) against --executor process.
* environments (ours only; see benchmarks/environments_bench.py): scikit-learn + numpy built
  by uv in a new directory from a warm cache, and again for a second model (a cache hit);
  irisbench in an environment of its own (deepaas-install-plugin --isolated, as irisiso)
  against irisbench in the server's, on one server, c=64 and c=1.
* explain (ours only; see benchmarks/explain_bench.py): prediction explanations one request at
  a time: an uploaded 100-tree iris forest (shap's TreeExplainer), one row and 100 rows per
  request; irisbench (KernelExplainer), one row and 3 rows per request.
* image (ours only; see benchmarks/image_bench.py): a small CNN as a plugin (a 224x224 JPEG by
  multipart) and as uploaded TorchScript and ONNX (OIP binary tensors), c=1 and c=8, batched or
  not, one and two workers, against the in-process rate; a 10 MB tensor's server CPU per request
  beside one memcpy of it.
* memory (see benchmarks/memory_bench.py): RSS of each server's process tree, per process, once
  it has answered a prediction, and its start-up time (command to first prediction): irisbench
  and echobench with --workers 2 on both sides, our echobench with --executor thread, ours with
  the demo plugin alone; ours from a virtualenv without extras (as DEEPaaS's has none), and
  irisbench also in make test's (every extra: pandas comes with shap). --quick: irisbench and
  the demo alone, ours from make test's virtualenv.
* peers (see benchmarks/peers_bench.py; needs wrk): MLServer (mlserver-sklearn), BentoML,
  LitServe and KServe's Python server, each in a virtualenv of its own installed by the bench,
  serving the same iris forest joblib as ours (uploaded), alone on the machine, one worker, two
  workers and batching where offered; req/s at c=64, p50/p99, c=1 p50, CPU and RSS of the tree.

Prints one table of cases and one of targets, which cases were skipped and why, and
writes benchmarks/results/latest.{json,md}.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import environments_bench  # noqa: E402
import explain_bench  # noqa: E402
import image_bench  # noqa: E402
import memory_bench  # noqa: E402
import peers_bench  # noqa: E402
import registry_bench as registry  # noqa: E402
import scaleout  # noqa: E402
from api_cases import (  # noqa: E402
    IMPACT_ROWS,
    bearer,
    create_token,
    feature_impact,
    infer_body,
    infer_per_row,
    iris_rows,
    write_json,
)
from loadgen import process_tree_rss_mib  # noqa: E402
from measure import LOADGEN, Case, in_process_rates, run_loadgen  # noqa: E402
from report import summarize  # noqa: E402
from servers import Server, bare_command, bare_listen, ensure_deepaas, free_port, log, ours_command, raise_fd_limit  # noqa: E402
from stress import QUERY, flood, overload  # noqa: E402
from wrk import run_wrk, wrk_path  # noqa: E402

OURS_FLAGS = {  # how we serve each model
    "echobench": ["--executor", "thread"],
    "irisbench": ["--workers", "2"],
    "irisbatch": ["--workers", "2", "--max-batch-size", "32", "--max-batch-time-ms", "2"],
}
REGISTRY_WORKERS = 2
PHASES = (
    "loadgen",
    "wrk",
    "auth",
    "oip",
    "impact",
    "overload",
    "flood",
    "registry",
    "training",
    "scaleout",
    "environments",
    "explain",
    "image",
    "memory",
    "peers",
)
TRAINING_FLAGS = ["--workers", "2"]  # process executor: a training ends with the switch to re-warmed workers
FEATURE_LEVEL = 64  # the auth and OIP cases' concurrency (that of the echobench and irisbench cases they compare with)
QUICK = {  # --quick: every case, smoke-sized
    "repeats": 1,
    "requests": 300,
    "in_process_seconds": 1.0,
    "wrk_duration": 2,
    "overload_duration": 2,
    "flood_duration": 2,
    "flood_connections": 1024,
    "registry_models": 20,
    "max_loaded_models": 5,
    "registry_requests": 200,
    "cold_sample": 5,
    "upload_repeats": 3,
    "infer_rows": 100,
    "infer_requests": 10,
    "impact_rows": 50,
    "submissions": 150,
    "trainings": 2,
    "explain_requests": 30,
    "explain_batches": 3,
    "image_requests": 40,
    "image_seconds": 1.0,
}
FULL = {
    "repeats": 3,
    "requests": 3000,
    "in_process_seconds": 3.0,
    "wrk_duration": 10,
    "overload_duration": 60,
    "flood_duration": 20,
    "flood_connections": 4096,
    "registry_models": 200,
    "max_loaded_models": 50,
    "registry_requests": 2000,
    "cold_sample": 20,
    "upload_repeats": 5,
    "infer_rows": 100,
    "infer_requests": 20,
    "impact_rows": IMPACT_ROWS,
    "submissions": 3000,
    "trainings": 10,
    "explain_requests": 200,
    "explain_batches": 10,
    "image_requests": 400,
    "image_seconds": 5.0,
}


@dataclass
class ServerPlan:
    """One server to start in every repeat, and what to measure on it."""

    framework: str
    config: str
    model: str
    command: list[str]
    cases: list[tuple[str, int]]
    ready_path: str = "/v2/health/ready"
    bare: bool = False
    overload: bool = False  # also the overload case, in the last repeat
    headers: list[str] = field(default_factory=list)  # 'Name: value', with every request of its cases


@dataclass
class Run:
    """Everything measured in this run, and what was left out."""

    args: argparse.Namespace
    raw: Path
    scratch: Path
    results: dict[tuple, Case] = field(default_factory=dict)
    phases: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def case(self, framework: str, model: str, kind: str, level: int, config: str) -> Case:
        key = (framework, model, kind, level, config)
        return self.results.setdefault(key, Case(framework, model, kind, level, config))

    def record(self, case: Case, result: dict) -> None:
        case.runs.append(result)
        lat = result.get("lat_ms", {})
        wall = f"wall {result['wall_s']} s " if "wall_s" in result else ""
        log(
            f"  {case.framework} {case.config} {case.model} {case.kind} c={case.concurrency}: {wall}"
            f"{result.get('rps', '–')} req/s p50 {lat.get('p50', '–')} ms p99 {lat.get('p99', '–')} ms "
            f"errors {result.get('errors', '–')}"
        )

    def data_dir(self) -> Path:
        return Path(tempfile.mkdtemp(prefix="data-", dir=self.scratch))

    def infer_body(self, rows: int) -> Path:
        """An Open Inference Protocol request of ``rows`` iris rows, as a JSON file (written once)."""
        path = self.scratch / f"infer-{rows}.json"
        return path if path.exists() else write_json(path, infer_body(iris_rows(rows)))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--requests", type=int, help="per loadgen run (each run also stops after 30 s)")
    parser.add_argument("--concurrency", default="1,8,64")
    parser.add_argument("--frameworks", default="deepaas,ours")
    parser.add_argument("--skip", default="", help=f"comma-separated phases to leave out: {', '.join(PHASES)}")
    parser.add_argument(
        "--deepaas-venv", type=Path, default=Path(tempfile.gettempdir()) / "deepaas-like-bench" / "deepaas-2.6.0"
    )
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument(
        "--loadgen",
        type=Path,
        default=LOADGEN,
        help="load generator script with loadgen.py's flags and JSON output "
        "(e.g. ../shared/bench/loadgen.py, the one DEEPaaS's baseline was measured with)",
    )
    parser.add_argument("--wrk-duration", type=int, help="seconds per wrk case at c=64")
    parser.add_argument("--overload-duration", type=int, help="seconds of the c=256 overload cases")
    parser.add_argument("--overload-connections", type=int, default=256)
    parser.add_argument("--flood-duration", type=int, help="seconds of the flood")
    parser.add_argument("--flood-connections", type=int)
    parser.add_argument("--registry-models", type=int, help="small models uploaded for the many-models case")
    parser.add_argument("--max-loaded-models", type=int, help="the registry server's --max-loaded-models")
    parser.add_argument("--registry-requests", type=int, help="predictions round-robin over the small models")
    parser.add_argument("--infer-rows", type=int, help="rows per request of the many-rows OIP infer case")
    parser.add_argument("--infer-requests", type=int, help="sequential requests of the many-rows OIP infer case")
    parser.add_argument("--impact-rows", type=int, help="iris rows (repeated) sent to the feature-impact job")
    parser.add_argument("--submissions", type=int, help="asynchronous predictions submitted per store (scaleout)")
    parser.add_argument("--trainings", type=int, help="trainings per model after the first (training)")
    parser.add_argument("--image-requests", type=int, help="requests per image case (image)")
    parser.add_argument("--image-seconds", type=float, help="seconds of each in-process rate (image)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="every case, smoke-sized: " + ", ".join(f"{k}={v}" for k, v in QUICK.items()),
    )
    args = parser.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    args.levels = [int(c) for c in args.concurrency.split(",")]
    args.frameworks = args.frameworks.split(",")
    args.skip = {p for p in args.skip.split(",") if p}
    if unknown := args.skip - set(PHASES):
        parser.error(f"unknown phase(s) in --skip: {', '.join(sorted(unknown))}")
    return args


def plan_servers(run: Run, deepaas_run: Path | None) -> list[ServerPlan]:
    args, plans = run.args, []
    wrk_cases = [("predict-wrk", 64), ("metadata-wrk", 64)] if "wrk" in run.phases else []
    loadgen = "loadgen" in run.phases
    if deepaas_run:
        for workers in (1, 2):
            for model in ("echobench", "irisbench"):
                cases = [("predict", c) for c in args.levels] if loadgen else []
                if model == "echobench":
                    cases += ([("metadata", 64)] if loadgen else []) + wrk_cases
                plans.append(
                    ServerPlan(
                        "deepaas",
                        f"w{workers}",
                        model,
                        [str(deepaas_run), "--model-name", model, "--workers", str(workers)],
                        cases,
                        ready_path="/v2/",
                        overload=workers == 2,
                    )
                )
    if "ours" in args.frameworks:
        for model, flags in OURS_FLAGS.items():
            cases = [("predict", c) for c in (args.levels if model != "irisbatch" else [1, max(args.levels)])]
            cases = cases if loadgen else []
            if model == "echobench":
                cases += ([("metadata", 64)] if loadgen else []) + wrk_cases
                if "auth" in run.phases:  # what the --auth server is compared with
                    cases += [c for c in [("predict", FEATURE_LEVEL)] if c not in cases]
            if model == "irisbench":
                cases += feature_cases(run, cases)
            plans.append(
                ServerPlan(
                    "ours",
                    " ".join(flags),
                    model,
                    ours_command(run.data_dir(), [model], flags),
                    cases,
                    overload=model != "irisbatch",
                )
            )
            if model == "echobench" and "auth" in run.phases:  # next to the plain one: the same drift
                plans += auth_plan(run)
        if wrk_cases:
            plans.append(ServerPlan("bare", "", "bare", bare_command(), wrk_cases, ready_path="/ready", bare=True))
    return [p for p in plans if p.cases or (p.overload and "overload" in run.phases)]


def feature_cases(run: Run, cases: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """The OIP and feature-impact cases on our irisbench server (and the predict c=64 that infer is compared with)."""
    extra = []
    if "oip" in run.phases:
        extra += [c for c in [("predict", FEATURE_LEVEL)] if c not in cases]
        extra += [("infer", FEATURE_LEVEL), ("infer-rows", 1)]
    if "impact" in run.phases:
        extra.append(("impact", 1))
    return extra


def auth_plan(run: Run) -> list[ServerPlan]:
    """echobench as the plain server serves it, plus --auth; a token on its data directory, made now."""
    data_dir = run.data_dir()
    try:
        token = create_token(data_dir)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        run.skipped.append(f"auth: no token: {exc}")
        return []
    flags = [*OURS_FLAGS["echobench"], "--auth"]
    cases = [("predict-auth", FEATURE_LEVEL)] + ([("predict-auth-wrk", 64)] if "wrk" in run.phases else [])
    return [
        ServerPlan(
            "ours",
            " ".join(flags),
            "echobench",
            ours_command(data_dir, ["echobench"], flags),
            cases,
            headers=bearer(token),
        )
    ]


def measure(run: Run, server: Server, plan: ServerPlan, kind: str, level: int) -> dict:
    args = run.args
    if kind in ("predict", "metadata", "predict-auth"):
        predict = kind != "metadata"
        path = f"/v2/models/{plan.model}/predict/?{QUERY}" if predict else f"/v2/models/{plan.model}/"
        return run_loadgen(
            [server.url(path)],
            method="POST" if predict else "GET",
            concurrency=level,
            requests=args.requests,
            server_pid=server.pid,
            loadgen=args.loadgen,
            headers=plan.headers,
        )
    if kind in ("predict-wrk", "metadata-wrk", "predict-auth-wrk"):
        predict = kind != "metadata-wrk"
        if plan.bare:
            path = f"/predict?{QUERY}" if predict else "/meta"
        else:
            path = f"/v2/models/{plan.model}/predict/?{QUERY}" if predict else f"/v2/models/{plan.model}/"
        result = run_wrk(
            server.url(path),
            method="POST" if predict else "GET",
            connections=level,
            seconds=args.wrk_duration,
            server_pid=server.pid,
            headers=plan.headers,
        )
        result["rss_mib"] = round(process_tree_rss_mib(server.pid), 1)
        return result
    if kind == "infer":
        return run_loadgen(
            [server.url(f"/v2/models/{plan.model}/infer")],
            method="POST",
            concurrency=level,
            requests=args.requests,
            server_pid=server.pid,
            loadgen=args.loadgen,
            headers=plan.headers,
            json_file=run.infer_body(1),
        )
    if kind == "infer-rows":
        return infer_per_row(
            server,
            plan.model,
            run.infer_body(args.infer_rows),
            rows=args.infer_rows,
            requests=args.infer_requests,
            loadgen=args.loadgen,
        )
    if kind == "impact":
        return feature_impact(server, plan.model, iris_rows(args.impact_rows), seed=0)
    if kind == "overload":
        return overload(server, plan.model, level, args.overload_duration)
    raise ValueError(kind)


def run_repeats(run: Run, plans: list[ServerPlan]) -> dict[str, float]:
    """Every plan's cases in every repeat (alternating the order); the in-process rates between repeats."""
    args = run.args
    log("in-process call rate (the physical limit)")
    inprocess = [in_process_rates(args.in_process_seconds)]
    for repeat in range(1, args.repeats + 1):
        last = repeat == args.repeats
        order = plans if repeat % 2 else list(reversed(plans))  # alternate, so drift hits both alike
        for plan in order:
            cases = list(plan.cases)
            if last and plan.overload and "overload" in run.phases:
                cases.append(("overload", args.overload_connections))
            if not cases:
                continue
            log(f"repeat {repeat}: {plan.framework} {plan.model} ({plan.config})")
            guarded(
                run,
                f"{plan.framework} {plan.model} ({plan.config}), repeat {repeat}",
                lambda: measure_plan(run, plan, cases, repeat),
            )
        if args.repeats > 1:
            inprocess.append(in_process_rates(args.in_process_seconds))
    return {name: statistics.median(r[name] for r in inprocess) for name in inprocess[0]}


def measure_plan(run: Run, plan: ServerPlan, cases: list[tuple[str, int]], repeat: int) -> None:
    listen = {"listen": bare_listen} if plan.bare else {}
    server = Server(
        plan.command,
        plan.ready_path,
        run.raw / f"{plan.framework}-{plan.model}-{plan.config.replace(' ', '_')}-{repeat}.log",
        **listen,
        settle=True,
    )
    try:
        for kind, level in cases:
            guarded(
                run,
                f"{plan.framework} {plan.model} {kind} c={level} ({plan.config})",
                lambda: run.record(
                    run.case(plan.framework, plan.model, kind, level, plan.config),
                    measure(run, server, plan, kind, level),
                ),
            )
    finally:
        server.stop()


def run_floods(run: Run, deepaas_run: Path | None) -> None:
    args = run.args
    servers = []
    if "ours" in args.frameworks and importlib.util.find_spec("slowbench") is not None:
        health_port = free_port()  # probes on the health port, beside those on the flooded one
        servers.append(
            (
                "ours",
                ours_command(run.data_dir(), ["slowbench"], ["--health-port", str(health_port)], log_level=None),
                "/v2/health/ready",
                "/v2/health/live",
                health_port,
            )
        )
    if deepaas_run:  # DEEPaaS 2.6 has no health route: its cheapest GET stands in
        servers.append(("deepaas", [str(deepaas_run), "--model-name", "slowbench"], "/v2/", "/v2/", None))
    for framework, command, ready, health, health_port in servers:
        log(f"flood: {framework} slowbench, {args.flood_connections} connections, {args.flood_duration:g} s")
        server = Server(command, ready, run.raw / f"{framework}-slowbench-flood.log")
        try:
            run.record(
                run.case(framework, "slowbench", "flood", args.flood_connections, "defaults"),
                flood(server, "slowbench", args.flood_connections, args.flood_duration, health, health_port),
            )
        finally:
            server.stop(grace_s=1.0)  # what it still has queued would take seconds to finish


def run_registry(run: Run) -> None:
    args = run.args
    files = registry.ModelFiles.write(Path(tempfile.mkdtemp(prefix="models-", dir=run.scratch)), args.registry_models)
    flags = [
        "--executor",
        "thread",
        "--registry-preload",  # the first upload's figure with the workers started ahead of it
        "--registry-workers",
        str(REGISTRY_WORKERS),
        "--max-loaded-models",
        str(args.max_loaded_models),
    ]
    config = f"--registry-preload --registry-workers {REGISTRY_WORKERS} --max-loaded-models {args.max_loaded_models}"
    log(f"registry: {config}")
    server = Server(
        ours_command(run.data_dir(), ["echobench"], flags),
        "/v2/health/ready",
        run.raw / "ours-registry.log",
        settle=True,
    )  # once the preload is done: a running server
    try:
        registry_first_prediction(run, server, files, config)
        registry_forest(run, server, files, config)
        registry_many(run, server, files, config)
    finally:
        server.stop()


def registry_first_prediction(run: Run, server: Server, files: registry.ModelFiles, config: str) -> None:
    """(a) upload -> first prediction: the first upload on a started (idle) server, then a few more (other files)."""
    first = registry.upload_to_first_prediction(server.port, "first-upload", files.small[0])
    later = [
        registry.upload_to_first_prediction(server.port, f"later-upload-{i}", files.small[i % len(files.small)])
        for i in range(1, run.args.upload_repeats + 1)
    ]
    result = {
        "first_s": round(first["total_s"], 3),
        "first": first,
        "later_s": [round(s["total_s"], 3) for s in later],
        "later_p50_s": round(statistics.median(s["total_s"] for s in later), 3),
        "errors": 0,
    }
    run.record(run.case("ours", "small-model", "registry-first-prediction", 1, config), result)


def registry_forest(run: Run, server: Server, files: registry.ModelFiles, config: str) -> None:
    """(b), (c) irisbench's forest uploaded as it is and with optimize=onnx, at the top concurrency."""
    level, uploads = max(run.args.levels), {}
    for name, fields in (("iris-forest", {}), ("iris-forest-onnx", {"optimize": "onnx"})):
        status, body, seconds = registry.upload(server.port, name, files.forest, **fields)
        if status not in (200, 201):
            run.skipped.append(f"registry {name}: upload answered {status}: {json.dumps(body)[:300]}")
            continue
        optimization = (body.get("version") or {}).get("optimization")
        uploads[name] = {
            "upload_s": round(seconds, 3),
            "optimization": optimization,
            "serving": (optimization or {}).get("serving", "original"),
        }
    for _ in range(run.args.repeats):
        for name, extra in uploads.items():
            result = run_loadgen(
                [server.url(f"/v2/models/{name}/predict/?{registry.QUERY}")],
                method="POST",
                concurrency=level,
                requests=run.args.requests,
                server_pid=server.pid,
                loadgen=run.args.loadgen,
            )
            result["extra"] = extra
            run.record(run.case("ours", name, "registry-predict", level, config), result)


def registry_many(run: Run, server: Server, files: registry.ModelFiles, config: str) -> None:
    """(d) many small models, predictions round-robin over all of them, c=8."""
    names, upload_errors = [], 0
    for i, path in enumerate(files.small):
        name = f"small-{i:04d}"
        status, _, _ = registry.upload(server.port, name, path)
        upload_errors += status not in (200, 201)
        names.append(name)
    log(f"  uploaded {len(names)} small models ({upload_errors} failed)")
    cold = registry.cold_loads(server.port, names, run.args.cold_sample)
    metrics_before = registry.registry_load_metrics(server.port)
    result = run_loadgen(
        [server.url(f"/v2/models/{n}/predict/?{registry.QUERY}") for n in names],
        method="POST",
        concurrency=8,
        requests=run.args.registry_requests,
        server_pid=server.pid,
        duration_max=max(60.0, run.args.registry_requests / 10),
    )
    result["extra"] = {
        "models": len(names),
        "upload_errors": upload_errors,
        "cold": cold,
        "max_loaded_models": run.args.max_loaded_models,
        "registry_workers": REGISTRY_WORKERS,
        "metrics": registry.load_stats_between(metrics_before, registry.registry_load_metrics(server.port)),
    }
    result["errors"] += upload_errors + cold["errors"]
    run.record(run.case("ours", "small-models", "registry-many", 8, config), result)


def run_trainings(run: Run) -> None:
    """Submit → done of a training, one at a time, the switch to re-warmed workers included:
    echobench's no-op (``train(delay_s=0)``) and irisbench's (its default forest of 10 trees,
    a real plugin's imports); on a started server, the first training, then more."""
    config = " ".join(TRAINING_FLAGS)
    for model in ("echobench", "irisbench"):
        log(f"training: {model} {config}")
        server = Server(
            ours_command(run.data_dir(), [model], TRAINING_FLAGS),
            "/v2/health/ready",
            run.raw / f"ours-{model}-training.log",
            settle=True,
        )
        try:
            seconds = [train_once(server, model) for _ in range(1 + run.args.trainings)]
        finally:
            server.stop()
        later = seconds[1:]
        run.record(
            run.case("ours", model, "training", 1, config),
            {
                "first_s": round(seconds[0], 3),
                "later_s": [round(s, 3) for s in later],
                "later_p50_s": round(statistics.median(later), 3),
                "errors": 0,
            },
        )


def train_once(server: Server, model: str) -> float:
    """Seconds from the POST of a training to the GET that first shows it ``done``."""
    started = time.perf_counter()
    status, job = http_json(server.url(f"/v2/models/{model}/train/"), "POST", b"{}")
    while status == 200 and job.get("status") in ("queued", "running"):
        time.sleep(0.005)
        status, job = http_json(server.url(f"/v2/models/{model}/train/{job['uuid']}"))
    if job.get("status") != "done":
        raise RuntimeError(f"training of {model} ended {status}: {json.dumps(job)[:300]}")
    return time.perf_counter() - started


def http_json(url: str, method: str = "GET", body: bytes | None = None) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"} if body is not None else {}
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def run_scaleout(run: Run) -> None:
    """Replicas and submissions on a throwaway PostgreSQL (SQLite submissions beside them), then Ray;
    what cannot run is reported as skipped, the rest still runs."""
    try:
        postgres = scaleout.start_postgres()
    except Exception as exc:  # noqa: BLE001 - SQLite and Ray still run
        run.skipped.append(f"scaleout: replicas and PostgreSQL submissions: no PostgreSQL: {exc!r:.300}")
        postgres = None
    try:
        if postgres is not None:
            guarded(run, "scaleout: replicas on PostgreSQL", lambda: scaleout_replicas(run, postgres))
        stores = ["sqlite"] + (["postgresql"] if postgres is not None else [])
        for repeat in range(1, run.args.repeats + 1):
            for store in stores if repeat % 2 else reversed(stores):
                guarded(
                    run,
                    f"scaleout: submissions on {store}, repeat {repeat}",
                    lambda: scaleout_submissions(run, postgres.new_database() if store == "postgresql" else ""),
                )
    finally:
        if postgres is not None:
            postgres.stop()
    if why := scaleout.ray_missing():
        run.skipped.append(f"scaleout: Ray executor: {why}")
        return
    for name, flags in (("process", scaleout.PROCESS_FLAGS), ("ray", scaleout.RAY_FLAGS)):
        guarded(run, f"scaleout: irisbench --executor {name}", lambda: scaleout_executor(run, name, flags))


def scaleout_replicas(run: Run, postgres) -> None:
    """Two echobench replicas on one new database, sharing artifacts and token key; one, then both, at c=64."""
    args, servers = run.args, []
    store = postgres.new_database()
    shared = scaleout.SharedFiles.make(Path(tempfile.mkdtemp(prefix="shared-", dir=run.scratch)))
    config = " ".join(scaleout.REPLICA_FLAGS) + " --store postgresql://..."
    log(f"scaleout: two echobench replicas on one PostgreSQL ({config})")
    try:
        for i in (1, 2):
            servers.append(
                Server(
                    ours_command(run.data_dir(), ["echobench"], scaleout.replica_flags(store, shared)),
                    "/v2/health/ready",
                    run.raw / f"ours-echobench-replica-{i}.log",
                    settle=True,
                )
            )
        for repeat in range(1, args.repeats + 1):
            for count in (1, 2) if repeat % 2 else (2, 1):
                guarded(
                    run,
                    f"scaleout: {count} replica(s) c={scaleout.LEVEL}, repeat {repeat}",
                    lambda: run.record(
                        run.case("ours", "echobench", f"replicas-{count}", scaleout.LEVEL, config),
                        scaleout.round_robin(
                            servers[:count], "echobench", concurrency=scaleout.LEVEL, requests=args.requests
                        ),
                    ),
                )
    finally:
        for server in servers:
            server.stop()


def scaleout_submissions(run: Run, store: str) -> None:
    """Asynchronous echobench predictions submitted at c=8 to a new server (``store`` empty: SQLite)."""
    name = "postgresql" if store else "sqlite"
    flags = [*scaleout.REPLICA_FLAGS, *(["--store", store] if store else [])]
    config = " ".join(scaleout.REPLICA_FLAGS) + (" --store postgresql://..." if store else "")
    log(f"scaleout: asynchronous predictions on {name} ({config})")
    server = Server(
        ours_command(run.data_dir(), ["echobench"], flags),
        "/v2/health/ready",
        run.raw / f"ours-echobench-submit-{name}.log",
        settle=True,
    )
    try:
        run.record(
            run.case("ours", "echobench", f"submit-{name}", scaleout.SUBMIT_CONCURRENCY, config),
            scaleout.submissions(
                server,
                "echobench",
                concurrency=scaleout.SUBMIT_CONCURRENCY,
                requests=run.args.submissions,
                loadgen=run.args.loadgen,
            ),
        )
    finally:
        server.stop()


def scaleout_executor(run: Run, name: str, flags: list[str]) -> None:
    """irisbench served with ``flags`` (--executor ``name``), at c=64 and c=1 in every repeat."""
    args, config = run.args, " ".join(flags)
    log(f"scaleout: irisbench {config}")
    server = Server(
        ours_command(run.data_dir(), ["irisbench"], flags),
        "/v2/health/ready",
        run.raw / f"ours-irisbench-{name}.log",
        settle=True,
        start_timeout_s=scaleout.RAY_START_TIMEOUT_S,
    )
    try:
        for repeat in range(1, args.repeats + 1):
            for level in scaleout.RAY_LEVELS:
                guarded(
                    run,
                    f"scaleout: irisbench --executor {name} c={level}, repeat {repeat}",
                    lambda: run.record(
                        run.case("ours", "irisbench", f"predict-{name}", level, config),
                        scaleout.predict(
                            server, "irisbench", concurrency=level, requests=args.requests, loadgen=args.loadgen
                        ),
                    ),
                )
    finally:
        server.stop()


def run_environments(run: Run) -> None:
    """Build times of an environment, then irisbench isolated against irisbench here (one server)."""
    args = run.args
    log("environments: scikit-learn + numpy built by uv (cold cache, warm cache in a new directory, cache hit)")
    run.record(run.case("ours", "sklearn-env", "env-build", 1, "uv"), environments_bench.build_times(run.scratch))
    data_dir = run.data_dir()
    log("environments: irisbench installed as irisiso in an environment of its own")
    environments_bench.isolated_irisbench(run.scratch, data_dir)
    flags = OURS_FLAGS["irisbench"]
    config = " ".join(flags)
    server = Server(
        ours_command(data_dir, ["irisbench", environments_bench.ISOLATED_NAME], flags),
        "/v2/health/ready",
        run.raw / "ours-environments.log",
        settle=True,
    )
    try:
        for repeat in range(1, args.repeats + 1):
            for level in (environments_bench.LEVEL, 1):
                models = ["irisbench", environments_bench.ISOLATED_NAME]
                for model in models if repeat % 2 else reversed(models):
                    run.record(
                        run.case("ours", model, "predict-env", level, config),
                        scaleout.predict(
                            server, model, concurrency=level, requests=args.requests, loadgen=args.loadgen
                        ),
                    )
    finally:
        server.stop()


def run_explain(run: Run) -> None:
    """Explanations of an uploaded forest (trees) and of irisbench (Kernel), one request at a time."""
    args, config = run.args, " ".join(explain_bench.FLAGS)

    def record(model: str, kind: str, result: dict) -> None:
        run.record(run.case("ours", model, kind, 1, config), result)

    explain_bench.measure(run.scratch, run.data_dir(), run.raw, args.explain_requests, args.explain_batches, record)


def run_image(run: Run) -> None:
    """An image model three ways against its in-process rate, and a 10 MB tensor's server CPU."""

    def record(model: str, kind: str, level: int, config: str, result: dict) -> None:
        result.setdefault("extra", {})["tree_cpu_ms_per_req"] = result.get("tree_cpu_ms_per_req")
        run.record(run.case("ours", model, kind, level, config), result)

    image_bench.measure(run.scratch, run.data_dir(), run.raw, run.args.image_requests, run.args.image_seconds, record)


def run_peers(run: Run) -> None:
    """MLServer, BentoML, LitServe and KServe against ours, the same iris forest (benchmarks/peers_bench.py)."""
    settings = peers_bench.Settings(
        seconds=run.args.wrk_duration,
        warmup_seconds=1.0 if run.args.quick else 2.0,
        repeats=1,
        venv_root=run.args.deepaas_venv.parent / "peers",
    )
    peers_bench.run_peers(run.scratch, run.raw, settings, results=run.results, notes=run.notes)


def run_memory(run: Run, deepaas_run: Path | None) -> None:
    """RSS of every server's process tree (per process) and its start-up time, DEEPaaS's beside ours."""

    def record(framework: str, model: str, kind: str, workers: int, config: str, result: dict) -> None:
        run.record(run.case(framework, model, kind, workers, config), result)

    venv = run.args.deepaas_venv.parent / "ours-lean"
    memory_bench.measure(
        run.scratch, deepaas_run, run.raw, record, repeats=min(run.args.repeats, 3), venv=venv, quick=run.args.quick
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    run = Run(
        args,
        raw=args.out / "raw",
        scratch=Path(tempfile.mkdtemp(prefix="deepaas-like-bench-")),
        phases=[p for p in PHASES if p not in args.skip],
    )
    run.raw.mkdir(parents=True, exist_ok=True)
    run.skipped += [f"{p}: left out with --skip" for p in PHASES if p in args.skip]
    check_tools(run)
    try:
        deepaas_run = ensure_deepaas(args.deepaas_venv) if "deepaas" in args.frameworks else None
        limits = run_repeats(run, plan_servers(run, deepaas_run))
        if "flood" in run.phases:
            guarded(run, "flood", lambda: run_floods(run, deepaas_run))
        if "registry" in run.phases:
            guarded(run, "registry", lambda: run_registry(run))
        if "training" in run.phases:
            guarded(run, "training", lambda: run_trainings(run))
        if "scaleout" in run.phases:
            guarded(run, "scaleout", lambda: run_scaleout(run))
        if "environments" in run.phases:
            guarded(run, "environments", lambda: run_environments(run))
        if "explain" in run.phases:
            guarded(run, "explain", lambda: run_explain(run))
        if "image" in run.phases:
            guarded(run, "image", lambda: run_image(run))
        if "memory" in run.phases:
            guarded(run, "memory", lambda: run_memory(run, deepaas_run))
        if "peers" in run.phases:
            guarded(run, "peers", lambda: run_peers(run))
    finally:
        shutil.rmtree(run.scratch, ignore_errors=True)
    report = summarize(run.results, limits, args, run.skipped + run.notes)
    print(report["markdown"])
    (args.out / "latest.md").write_text(report["markdown"])
    (args.out / "latest.json").write_text(json.dumps(report["json"], indent=1))
    return 0


def check_tools(run: Run) -> None:
    """Leave out what this machine cannot run, and say why."""
    args = run.args
    if not wrk_path():
        run.skipped.append("wrk cases and the flood: wrk is not installed (overload runs with loadgen)")
        run.phases = [p for p in run.phases if p not in ("wrk", "flood", "peers")]
    for phase in ("registry", "explain"):
        if phase in run.phases and (why := registry.sklearn_missing()):
            run.skipped.append(f"{phase}: {why}")
            run.phases.remove(phase)
    if "flood" in run.phases and "ours" in args.frameworks and importlib.util.find_spec("slowbench") is None:
        run.skipped.append(
            "flood (ours): the slowbench plugin is not installed in this Python "
            "(pip install -e benchmarks/plugins/slowbench; `make test` does it)"
        )
        if "deepaas" not in args.frameworks:
            run.phases.remove("flood")
    if "registry" in run.phases and "ours" not in args.frameworks:
        run.skipped.append("registry: only ours has a registry, and ours is not in --frameworks")
        run.phases.remove("registry")
    if "deepaas" not in args.frameworks:
        run.skipped.append("DEEPaaS: not in --frameworks (no DEEPaaS columns, no ratios against it)")
    if "ours" not in args.frameworks and (
        ours_only := [
            p for p in ("auth", "oip", "impact", "scaleout", "environments", "explain", "image") if p in run.phases
        ]
    ):
        run.skipped.append(f"{', '.join(ours_only)}: only ours has these, and ours is not in --frameworks")
        run.phases = [p for p in run.phases if p not in ours_only]
    wanted = max(args.flood_connections, args.overload_connections) + 512
    allowed = raise_fd_limit(wanted)
    if allowed < wanted:
        args.flood_connections = max(64, allowed - 512)
        run.notes.append(f"flood: open-file limit {allowed}, so {args.flood_connections} connections")


def guarded(run: Run, phase: str, function) -> None:
    """Run a phase; a failure is reported as a skipped phase, not a crash."""
    try:
        function()
    except Exception as exc:  # noqa: BLE001 - the rest of the run still reports
        log(f"{phase} failed: {exc!r}")
        run.skipped.append(f"{phase}: failed: {exc!r:.300}")


if __name__ == "__main__":
    sys.exit(main())
