"""The run's report: one table of cases, one of targets, the list of what was skipped.

:func:`summarize` turns the measured :class:`measure.Case` objects into rows (one per
model, kind and concurrency, with a ``deepaas``, ``ours`` or ``bare`` side holding
medians over the repeats), checks the targets against them, and renders both as
Markdown and JSON.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

from api_cases import IMPACT_ROWS
from environments_bench import LEVEL as ENV_LEVEL
from explain_bench import BACKGROUND as EXPLAIN_BACKGROUND
from explain_bench import BATCH_ROWS, KERNEL_ROWS
from explain_bench import FOREST as EXPLAIN_FOREST
from image_bench import BATCH as IMAGE_BATCH
from image_bench import COPY_MODEL, ONNX, TORCHSCRIPT
from image_bench import PLUGIN as IMAGE_PLUGIN
from measure import LOADGEN, Case
from peers_bench import peer_report
from scaleout import LEVEL as SCALEOUT_LEVEL
from scaleout import SUBMIT_CONCURRENCY
from wrk import wrk_path

HERE = Path(__file__).resolve().parent
ROW_ORDER = (  # (model, kind): the table's order
    ("echobench", "predict"),
    ("echobench", "metadata"),
    ("irisbench", "predict"),
    ("irisbatch", "predict"),
    ("bare", "predict-wrk"),
    ("echobench", "predict-wrk"),
    ("bare", "metadata-wrk"),
    ("echobench", "metadata-wrk"),
    ("echobench", "predict-auth"),
    ("echobench", "predict-auth-wrk"),
    ("irisbench", "infer"),
    ("irisbench", "infer-rows"),
    ("irisbench", "impact"),
    ("irisbench", "overload"),
    ("echobench", "overload"),
    ("slowbench", "flood"),
    ("small-model", "registry-first-prediction"),
    ("iris-forest", "registry-predict"),
    ("iris-forest-onnx", "registry-predict"),
    ("small-models", "registry-many"),
    ("echobench", "training"),
    ("irisbench", "training"),
    ("echobench", "replicas-1"),
    ("echobench", "replicas-2"),
    ("echobench", "submit-sqlite"),
    ("echobench", "submit-postgresql"),
    ("irisbench", "predict-process"),
    ("irisbench", "predict-ray"),
    ("sklearn-env", "env-build"),
    ("irisbench", "predict-env"),
    ("irisiso", "predict-env"),
    ("iris-forest-explain", "explain-row"),
    ("iris-forest-explain", "explain-batch"),
    ("irisbench", "explain-row"),
    ("irisbench", "explain-batch"),
    *(
        (model, kind + suffix)
        for model, kind in ((IMAGE_PLUGIN, "image-multipart"), (TORCHSCRIPT, "image-tensor"), (ONNX, "image-tensor"))
        for suffix in ("", "-batch", "-batch-w2", "-bare")
    ),
    (COPY_MODEL, "tensor-10mb"),
    (COPY_MODEL, "tensor-10mb-bare"),
    ("irisbench", "memory"),
    ("echobench", "memory"),
    ("demo", "memory"),
    ("irisbench", "memory-full"),
)
EXPLAIN_ROWS = {EXPLAIN_FOREST: BATCH_ROWS, "irisbench": KERNEL_ROWS}
REPLICA_CORES = 4  # two replicas and the load generator, each wanting about a core


def side(case: Case) -> dict:
    """Medians over a case's runs (whatever of rps, latency, CPU, errors it has)."""
    first = case.runs[0]
    values: dict = {"config": case.config, "runs": len(case.runs)}
    if "rps" in first:
        values.update(rps=case.median("rps"), rps_all=[r["rps"] for r in case.runs])
    if "p50" in first.get("lat_ms", {}):
        values.update(p50_ms=case.median("lat_ms.p50"), p99_ms=case.median("lat_ms.p99"))
    if "server_cpu_ms_per_req" in first:
        values["cpu_ms_per_req"] = case.median("server_cpu_ms_per_req")
    for key in ("wall_s", "ms_per_prediction", "startup_s"):  # feature impact; memory
        if key in first:
            values[key] = case.median(key)
    if "rss_mib" in first:
        values["rss_mib"] = max(r["rss_mib"] for r in case.runs)
    values["errors"] = sum(r.get("errors", 0) for r in case.runs)
    for key in (
        "non_2xx",
        "socket_errors",
        "status_counts",
        "tool",
        "first_s",
        "first",
        "later_s",
        "later_p50_s",
        "extra",
    ):
        if key in case.runs[-1]:
            values[key] = case.runs[-1][key]
    return values


def label(model: str, kind: str, level: int, args: argparse.Namespace) -> str:
    if model == "bare":
        what = "POST /predict" if kind == "predict-wrk" else "GET /meta"
        return f"bare aiohttp (reference) {what} c={level} (wrk)"
    return {
        "predict": f"{model} predict c={level}" + (" (batching; DEEPaaS: irisbench)" if model == "irisbatch" else ""),
        "metadata": f"{model} metadata c={level}",
        "predict-wrk": f"{model} predict c={level} (wrk)",
        "metadata-wrk": f"{model} metadata GET c={level} (wrk)",
        "predict-auth": f"{model} predict c={level}, --auth (bearer token)",
        "predict-auth-wrk": f"{model} predict c={level}, --auth (bearer token) (wrk)",
        "infer": f"{model} OIP infer, 1 row, c={level}",
        "infer-rows": f"{model} OIP infer, {args.infer_rows} rows per request, one at a time",
        "impact": f"{model} feature impact, {args.impact_rows} rows × 4 features × 5 repeats"
        + (
            f" ({'--quick: ' if args.quick else ''}fewer rows than a full run's {IMPACT_ROWS})"
            if args.impact_rows < IMPACT_ROWS
            else ""
        ),
        "overload": f"{model} overload c={level}, {args.overload_duration:g} s",
        "flood": f"{model} flood c={level}, {args.flood_duration:g} s (wrk)",
        "registry-first-prediction": "registry: upload → first prediction (small LogisticRegression)",
        "training": f"{model} training submit → done, re-warmed workers included"
        + (" (no-op)" if model == "echobench" else " (its default 10-tree forest)"),
        "registry-predict": f"registry: {model} predict c={level}",
        "registry-many": f"registry: {args.registry_models} models round-robin c={level}",
        "replicas-1": f"scaleout: {model} predict c={level}, one replica, PostgreSQL --store",
        "replicas-2": f"scaleout: {model} predict c={level}, two replicas on one PostgreSQL, round-robin",
        "submit-sqlite": f"scaleout: {model} asynchronous predictions c={level}, submissions/s, SQLite store",
        "submit-postgresql": f"scaleout: {model} asynchronous predictions c={level}, submissions/s, PostgreSQL --store",
        "predict-process": f"scaleout: {model} predict c={level}, --executor process --workers 2",
        "predict-ray": f"scaleout: {model} predict c={level}, --executor ray --workers 2 --ray-num-cpus 0.5 "
        "(local head)",
        "env-build": "environments: scikit-learn + numpy built by uv, warm cache, new directory (s)",
        "predict-env": f"environments: {model} predict c={level}"
        + (" in an environment of its own (--isolated)" if model == "irisiso" else " in the server's environment"),
        "explain-row": f"explain: {_explained(model)}, one row per request",
        "explain-batch": f"explain: {_explained(model)}, {EXPLAIN_ROWS.get(model, '?')} rows per request",
        **{
            kind + suffix: f"image: {model}, "
            + ("a 224×224 JPEG by multipart" if kind == "image-multipart" else "OIP binary FP32 [1,3,224,224]")
            + f" c={level}, "
            + how
            for kind in ("image-multipart", "image-tensor")
            for suffix, how in (
                ("", "1 worker"),
                ("-batch", f"1 worker, --max-batch-size {IMAGE_BATCH}"),
                ("-batch-w2", f"2 workers, --max-batch-size {IMAGE_BATCH}"),
                ("-bare", "a bare aiohttp server running the model in its own process (the ceiling; not ours)"),
            )
        },
        "tensor-10mb": "image: a 10 MB OIP binary tensor to a model that returns 4 values, c=1",
        "tensor-10mb-bare": "image: the same 10 MB tensor to a bare aiohttp server running that model in its own "
        "process, c=1 (not ours)",
        "memory": f"memory: {model} "
        + (f"--workers {level}" if level else "--executor thread" if model == "echobench" else "alone, defaults")
        + ", RSS of the process tree once it has answered",
        "memory-full": f"memory: {model} --workers {level}, in make test's virtualenv (every extra)",
    }[kind]


def _explained(model: str) -> str:
    if model == EXPLAIN_FOREST:
        return "uploaded iris forest, 100 trees (TreeExplainer)"
    return f"{model} plugin (KernelExplainer, {EXPLAIN_BACKGROUND} background rows)"


def build_rows(results: dict[tuple, Case]) -> list[dict]:
    def best(framework: str, model: str, kind: str, level: int) -> Case | None:
        candidates = [
            c
            for c in results.values()
            if (c.framework, c.model, c.kind, c.concurrency) == (framework, model, kind, level) and c.runs
        ]
        return max(candidates, key=lambda c: c.median("rps") if "rps" in c.runs[0] else 0, default=None)

    rows = []
    for model, kind in ROW_ORDER:
        for level in sorted({c.concurrency for c in results.values() if (c.model, c.kind) == (model, kind) and c.runs}):
            row = {"model": model, "kind": kind, "concurrency": level}
            theirs_model = "irisbench" if model == "irisbatch" else model
            for framework, name in (("deepaas", theirs_model), ("ours", model), ("bare", model)):
                if case := best(framework, name, kind, level):
                    row[framework] = side(case)
            if kind != "flood" and "rps" in row.get("deepaas", {}) and "rps" in row.get("ours", {}):
                row["ratio"] = row["ours"]["rps"] / row["deepaas"]["rps"]
            rows.append(row)
    return rows


def _fmt(values: dict | None, keys: tuple[str, ...], spec: str = ".0f") -> str:
    if not values or any(k not in values for k in keys):
        return "–"
    return " / ".join(format(values[k], spec) for k in keys)


def _ms(value: float | None) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.1f}"


def notes(row: dict, rows: list[dict]) -> str:
    """The row's own numbers that have no column."""
    mine = row.get("ours") or row.get("bare") or {}
    extra = mine.get("extra", {})
    kind = row["kind"]
    if kind in ("predict-auth", "predict-auth-wrk"):
        plain = find(rows, row["model"], kind.replace("-auth", ""), row["concurrency"], "ours")
        ratio = f"{mine['rps'] / plain['rps']:.2f}× without --auth" if plain and mine.get("rps") else ""
        return "; ".join(x for x in (ratio, _errors(mine) if kind.endswith("-wrk") else "") if x)
    if kind.endswith("-wrk") and row["model"] != "bare":
        bare = find(rows, "bare", kind, row["concurrency"], "bare")
        ratio = f"{mine['rps'] / bare['rps']:.2f}× bare aiohttp" if bare and mine.get("rps") else ""
        return "; ".join(x for x in (ratio, _errors(mine)) if x)
    if kind == "infer":
        predict = find(rows, row["model"], "predict", row["concurrency"], "ours")
        return f"{mine['rps'] / predict['rps']:.2f}× predict/?... c={row['concurrency']}" if predict else ""
    if kind == "infer-rows":
        return (
            f"{extra['ms_per_row']:.3f} ms/row ({extra['requests']} requests of {extra['rows']} rows, "
            f"mean {extra['request_mean_ms']:.1f} ms each; server CPU {extra['server_cpu_ms_per_row']:.3f} "
            f"ms/row); single-row predict/?..., one at a time: {extra['predict_mean_ms']:.2f} ms/request "
            f"(p50 {extra['predict_p50_ms']:.2f}; server CPU {extra['predict_server_cpu_ms']:.3f} ms), "
            f"{extra['predict_mean_ms'] / extra['ms_per_row']:.1f}× the time per row"
        )
    if kind == "impact":
        return (
            f"wall {mine['wall_s']:.2f} s for {extra['predictions']} predictions ({extra['rows']} rows + "
            f"{extra['rows']}×{extra['features']}×{extra['repeats']} shuffled): {mine['ms_per_prediction']:.3f} "
            f"ms/prediction; the job's own duration {extra.get('job_duration_s') or 0:.2f} s; server CPU "
            f"{extra['server_cpu_ms_per_prediction']:.3f} ms/prediction; top feature {extra.get('top_feature')}"
        )
    if kind == "overload":
        return "; ".join(f"{who}: {_errors(row[who])}" for who in ("deepaas", "ours") if who in row)
    if kind == "flood":
        return " · ".join(f"{who}: {_flood_note(row[who])}" for who in ("ours", "deepaas") if who in row)
    if kind == "registry-first-prediction":
        return (
            f"first upload on a fresh server {mine['first_s']:.2f} s (its PUT answered in "
            f"{mine['first']['upload_s']:.2f} s); the next {len(mine['later_s'])} (other files): "
            f"{', '.join(f'{s:.2f}' for s in mine['later_s'])} s"
        )
    if kind == "training":
        return (
            f"the first on a started server {mine['first_s']:.2f} s; the next {len(mine['later_s'])}: p50 "
            f"{mine['later_p50_s']:.2f} s (" + ", ".join(f"{s:.2f}" for s in mine["later_s"]) + " s)"
        )
    if kind == "registry-predict":
        plugin = find(rows, "irisbench", "predict", row["concurrency"], "ours")
        ratio = f"{mine['rps'] / plugin['rps']:.2f}× irisbench plugin; " if plugin else ""
        return f"{ratio}serving {extra.get('serving', '?')}; upload {extra.get('upload_s', 0):.2f} s"
    if kind == "registry-many":
        cold = extra.get("cold", {})
        metrics = extra.get("metrics") or {}
        from_metrics = (
            f"; during the round-robin, /metrics: {metrics['loads']:.0f} loads, "
            f"{metrics['evictions']:.0f} evictions, load mean {_ms(metrics['load_mean_ms'])} ms "
            f"(p50 ≤ {metrics['load_p50_s_at_most']} s)"
            if metrics.get("loads") is not None
            else "; no registry load stats in /metrics"
        )
        return (
            f"--max-loaded-models {extra.get('max_loaded_models')}, --registry-workers "
            f"{extra.get('registry_workers')}; cold load (client, first predict of an unloaded model, "
            f"n={cold.get('sampled')}) p50 {_ms(cold.get('cold_ms', {}).get('p50'))} ms, then warm p50 "
            f"{_ms(cold.get('warm_ms', {}).get('p50'))} ms{from_metrics}"
        )
    if kind in ("replicas-1", "replicas-2", "submit-sqlite", "submit-postgresql", "predict-ray"):
        return _scaleout_note(row, rows, mine)
    if kind == "env-build":
        return (
            f"from an empty uv cache {extra['cold_s']:.2f} s; a second model with the same requirements "
            f"(cache hit) {extra['cache_hit_s']:.2f} s; {extra['lock']}"
        )
    if kind.startswith("image-"):
        batched = extra.get("in_process_batch_rps")
        return (
            f"{extra['ratio_to_in_process']:.2f}× the in-process rate ({extra['in_process_rps']:.0f}/s); "
            f"batching {extra['batching']}; CPU of the whole tree {extra.get('tree_cpu_ms_per_req')} ms/req"
            + (
                f"; in process {IMAGE_BATCH} at once: {batched:.0f} images/s, "
                f"{batched / extra['in_process_rps']:.2f}× one at a time (what batching can give)"
                if batched and "-batch" in kind
                else ""
            )
            if "ratio_to_in_process" in extra
            else ""
        )
    if kind in ("tensor-10mb", "tensor-10mb-bare"):
        bare = extra.get("bare_server_cpu_ms")
        return (
            f"server process CPU {mine['cpu_ms_per_req']:.1f} ms/request against one memcpy of the body "
            f"{extra['memcpy_10mb_ms']:.2f} ms and the model's own work {extra['model_work_ms']:.2f} ms"
            + (f"; a bare aiohttp server with the model in process: {bare:.1f} ms" if bare is not None else "")
        )
    if kind in ("memory", "memory-full"):
        return " · ".join(f"{who}: {_memory_note(row[who])}" for who in ("ours", "deepaas") if who in row)
    if kind == "predict-env" and row["model"] == "irisiso":
        here = find(rows, "irisbench", "predict-env", row["concurrency"], "ours")
        return f"{mine['rps'] / here['rps']:.2f}× irisbench in the server's environment (same server)" if here else ""
    return ""


def _memory_note(values: dict) -> str:
    """Start-up, and each process's RSS by role (the last run's)."""
    members = values.get("extra", {}).get("processes", [])
    return f"start-up {values['startup_s']:.2f} s; " + ", ".join(f"{p['role']} {p['rss_mib']:.0f}" for p in members)


def _scaleout_note(row: dict, rows: list[dict], mine: dict) -> str:
    extra, kind, level = mine.get("extra", {}), row["kind"], row["concurrency"]
    if kind == "replicas-1":
        return f"the second replica idle beside it (same database); {_errors(mine)}"
    if kind == "replicas-2":
        one = find(rows, row["model"], "replicas-1", level, "ours")
        ratio = f"{mine['rps'] / one['rps']:.2f}× one replica; " if one and one.get("rps") else ""
        cpu = " / ".join(f"{c:.2f}" for c in extra.get("replica_cpu_s", []))
        return f"{ratio}CPU s per replica {cpu} (CPU ms/req and RSS: both together); {_errors(mine)}"
    if kind.startswith("submit-"):
        sqlite = find(rows, row["model"], "submit-sqlite", level, "ours") if kind == "submit-postgresql" else None
        ratio = f"{mine['rps'] / sqlite['rps']:.2f}× SQLite; " if sqlite and sqlite.get("rps") else ""
        return (
            f"{ratio}{extra.get('accepted', 0)} of {extra.get('submitted', 0)} answered 202; "
            f"p50 / p99 per submission in the latency column"
        )
    process = find(rows, row["model"], "predict-process", level, "ours")
    if not process:
        return ""
    if level == 1:
        return (
            f"{mine['p50_ms'] - process['p50_ms']:+.2f} ms p50 per call against --executor process "
            "(Ray's per-call overhead)"
        )
    return f"{mine['rps'] / process['rps']:.2f}× --executor process"


def _errors(values: dict) -> str:
    sockets = values.get("socket_errors") or {}
    broken = ", ".join(f"{k} {v}" for k, v in sockets.items() if v)
    others = ", ".join(
        f"{code}: {count}"
        for code, count in sorted((values.get("status_counts") or {}).items())
        if not 200 <= int(code) < 300
    )
    return (
        f"non-2xx {values.get('non_2xx', values.get('errors', 0))}"
        + (f" ({others})" if others else "")
        + (f", socket errors: {broken}" if broken else "")
    )


def _flood_note(values: dict) -> str:
    extra = values.get("extra", {})
    health, newcomer = extra.get("health", {}), extra.get("newcomer_503", {})
    share = extra.get("share_503")
    retry = extra.get("retry_after_share")
    sockets = ", ".join(f"{k} {v}" for k, v in (values.get("socket_errors") or {}).items() if v) or "none"
    return (
        f"{extra.get('answered', 0)} answers, 503 {_pct(share)}, Retry-After on {_pct(retry)} of 503s; "
        f"a new client's 503 in p50 {_ms(newcomer.get('lat_ms', {}).get('p50'))} ms "
        f"(n={newcomer.get('counted', 0)}); GET {health.get('path')} p50 / p99 "
        f"{_ms(health.get('lat_ms', {}).get('p50'))} / "
        f"{_ms(health.get('lat_ms', {}).get('p99'))} ms (new connection each, n={health.get('probes', 0)}, "
        f"{health.get('failed', 0)} failed; keep-alive p99 "
        f"{_ms(extra.get('health_keep_alive', {}).get('lat_ms', {}).get('p99'))} ms, "
        f"{extra.get('health_keep_alive', {}).get('failed', 0)} failed); health port p50 / p99 "
        f"{_ms((extra.get('health_port') or {}).get('lat_ms', {}).get('p50'))} / "
        f"{_ms((extra.get('health_port') or {}).get('lat_ms', {}).get('p99'))} ms; "
        f"log {extra.get('log_lines', 0)} lines / {extra.get('log_bytes', 0)} B; socket errors {sockets}; "
        f"listen-queue overflows (kernel, all sockets) {extra.get('listen_overflows', '–')}"
    )


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f} %"


def find(rows: list[dict], model: str, kind: str, level: int, who: str) -> dict | None:
    for row in rows:
        if (row["model"], row["kind"], row["concurrency"]) == (model, kind, level) and who in row:
            return row[who]
    return None


def targets(rows: list[dict], limits: dict[str, float], args: argparse.Namespace) -> list[dict]:
    top = max(args.levels)
    checks: list[dict] = []

    def get(model: str, kind: str, level: int, who: str, key: str) -> float | None:
        values = find(rows, model, kind, level, who)
        return values.get(key) if values else None

    def check(text: str, value: float | None, op: str, goal: float | None, note: str | None = None) -> None:
        if value is None or goal is None:
            return
        met = {"≥": value >= goal, "≤": value <= goal, "=": value == goal}[op]
        checks.append(
            {
                "check": text,
                "value": round(value, 3),
                "op": op,
                "target": round(goal, 3),
                "met": met,
                **({"note": note} if note else {}),
            }
        )

    def info(text: str, value: float | None, note: str) -> None:
        """A figure kept beside the targets, with no goal."""
        if value is not None:
            checks.append({"check": text, "value": round(value, 3), "op": "", "target": None, "met": None})
            checks[-1]["note"] = note

    div = lambda a, b: a / b if a is not None and b else None  # noqa: E731
    ours_iris_top = get("irisbench", "predict", top, "ours", "rps")
    check(
        f"echobench c={top}: ours / DEEPaaS req/s",
        div(get("echobench", "predict", top, "ours", "rps"), get("echobench", "predict", top, "deepaas", "rps")),
        "≥",
        5.0,
    )
    check(
        f"echobench c={top}: ours predict / ours GET metadata req/s",
        div(get("echobench", "predict", top, "ours", "rps"), get("echobench", "metadata", 64, "ours", "rps")),
        "≥",
        0.7,
    )
    check(
        f"irisbench c={top} (no batching): ours / DEEPaaS req/s",
        div(ours_iris_top, get("irisbench", "predict", top, "deepaas", "rps")),
        "≥",
        3.0,
    )
    check(
        f"irisbench c={top} (no batching): ours / in-process limit",
        div(ours_iris_top, limits.get("irisbench")),
        "≥",
        0.85,
    )
    check(
        f"irisbatch c={top} (batching): ours / in-process single-row limit",
        div(get("irisbatch", "predict", top, "ours", "rps"), limits.get("irisbench")),
        "≥",
        2.0,
    )
    check(
        f"irisbatch c={top} (batching): ours p99 / DEEPaaS irisbench p99",
        div(get("irisbatch", "predict", top, "ours", "p99_ms"), get("irisbench", "predict", top, "deepaas", "p99_ms")),
        "≤",
        1.0,
    )
    check(
        "echobench c=1: ours p50 / DEEPaaS p50",
        div(get("echobench", "predict", 1, "ours", "p50_ms"), get("echobench", "predict", 1, "deepaas", "p50_ms")),
        "≤",
        0.5,
    )
    check(
        "irisbench c=1: ours p50 / DEEPaaS p50",
        div(get("irisbench", "predict", 1, "ours", "p50_ms"), get("irisbench", "predict", 1, "deepaas", "p50_ms")),
        "≤",
        0.7,
    )
    echo_p50 = get("echobench", "predict", 1, "ours", "p50_ms")
    call_ms = 1000 / limits["irisbench"] if limits.get("irisbench") else None
    ours_iris_p50 = get("irisbench", "predict", 1, "ours", "p50_ms")
    info(
        "irisbench c=1: ours p50 ms − (in-process call time + echobench c=1 p50)",
        ours_iris_p50 - (call_ms + echo_p50) if None not in (ours_iris_p50, call_ms, echo_p50) else None,
        "informational (a retired target): single-request latency is judged by its ratio to DEEPaaS's",
    )
    info(
        "echobench predict c=64 (wrk): ours / bare aiohttp POST req/s",
        div(get("echobench", "predict-wrk", 64, "ours", "rps"), get("bare", "predict-wrk", 64, "bare", "rps")),
        "informational (a retired target): it moves with the CPU; the HTTP stack is the limit",
    )
    check(
        "echobench metadata GET c=64 (wrk): ours / bare aiohttp GET req/s",
        div(get("echobench", "metadata-wrk", 64, "ours", "rps"), get("bare", "metadata-wrk", 64, "bare", "rps")),
        "≥",
        0.85,
    )
    for kind, tool in (("predict-auth", "loadgen"), ("predict-auth-wrk", "wrk")):
        check(
            f"echobench predict c=64 ({tool}): with --auth and a bearer token / without req/s",
            div(
                get("echobench", kind, 64, "ours", "rps"),
                get("echobench", kind.replace("-auth", ""), 64, "ours", "rps"),
            ),
            "≥",
            0.95,
        )
    check(
        "irisbench c=64: OIP infer (1 row) / predict/?... req/s (the same server)",
        div(get("irisbench", "infer", 64, "ours", "rps"), get("irisbench", "predict", 64, "ours", "rps")),
        "≥",
        0.9,
    )
    check(
        f"irisbench feature impact, {args.impact_rows} rows: wall s",
        get("irisbench", "impact", 1, "ours", "wall_s"),
        "≤",
        10.0,
    )
    for model in ("irisbench", "echobench"):
        check(
            f"{model} overload c={args.overload_connections} (ours defaults): errors",
            get(model, "overload", args.overload_connections, "ours", "errors"),
            "=",
            0,
        )
    flood = find(rows, "slowbench", "flood", args.flood_connections, "ours")
    if flood:
        extra = flood.get("extra", {})
        check(
            f"slowbench flood c={args.flood_connections}: GET /v2/health/live p99 ms (--health-port, new "
            "connection per probe)",
            (extra.get("health_port") or {}).get("lat_ms", {}).get("p99"),
            "≤",
            100,
        )
        check(
            f"slowbench flood c={args.flood_connections}: GET /v2/health/live p99 ms (the flooded port, "
            "new connection per probe)",
            extra.get("health", {}).get("lat_ms", {}).get("p99"),
            "≤",
            100,
        )
        check(
            f"slowbench flood c={args.flood_connections}: share of 503s with Retry-After",
            extra.get("retry_after_share"),
            "≥",
            1.0,
        )
    check(
        "irisbatch c=1 p50 / irisbench c=1 p50 (batching waits only while workers are busy)",
        div(get("irisbatch", "predict", 1, "ours", "p50_ms"), get("irisbench", "predict", 1, "ours", "p50_ms")),
        "≤",
        1.2,
    )
    check(
        "no-op training (echobench): submit → done p50 s, re-warmed workers included",
        get("echobench", "training", 1, "ours", "later_p50_s"),
        "≤",
        1.0,
    )
    check(
        "registry: upload → first prediction s (first upload on a fresh server)",
        get("small-model", "registry-first-prediction", 1, "ours", "first_s"),
        "≤",
        2.0,
    )
    check(
        f"registry: uploaded iris forest c={top} / irisbench plugin c={top} req/s",
        div(get("iris-forest", "registry-predict", top, "ours", "rps"), ours_iris_top),
        "≥",
        0.9,
    )
    check(
        f"registry: uploaded iris forest, optimize=onnx, c={top} / irisbench plugin c={top} req/s",
        div(get("iris-forest-onnx", "registry-predict", top, "ours", "rps"), ours_iris_top),
        "≥",
        2.0,
    )
    check(
        f"registry: {args.registry_models} models round-robin: errors",
        get("small-models", "registry-many", 8, "ours", "errors"),
        "=",
        0,
    )
    check(
        f"registry: {args.registry_models} models: server RSS MiB (process tree)",
        get("small-models", "registry-many", 8, "ours", "rss_mib"),
        "≤",
        2048,
    )
    level = SCALEOUT_LEVEL
    few_cores = (
        (
            f"this machine has {os.cpu_count()} CPUs: too few for two replicas plus the load generator "
            f"(about a core each, {REPLICA_CORES} wanted), so the ratio is as measured here, not what replicas "
            "on their own machines would give"
        )
        if (os.cpu_count() or 1) < REPLICA_CORES
        else None
    )
    check(
        f"scaleout: echobench c={level}, two replicas / one replica req/s (one PostgreSQL, round-robin)",
        div(get("echobench", "replicas-2", level, "ours", "rps"), get("echobench", "replicas-1", level, "ours", "rps")),
        "≥",
        1.6,
        few_cores,
    )
    errors = [get("echobench", kind, level, "ours", "errors") for kind in ("replicas-1", "replicas-2")]
    check(
        f"scaleout: echobench c={level} on replicas (one and two): errors",
        sum(errors) if None not in errors else None,
        "=",
        0,
    )
    check(
        f"scaleout: asynchronous prediction submissions/s c={SUBMIT_CONCURRENCY}, PostgreSQL / SQLite",
        div(
            get("echobench", "submit-postgresql", SUBMIT_CONCURRENCY, "ours", "rps"),
            get("echobench", "submit-sqlite", SUBMIT_CONCURRENCY, "ours", "rps"),
        ),
        "≥",
        0.5,
    )
    check(
        f"scaleout: irisbench c={level}, --executor ray / --executor process req/s (both --workers 2)",
        div(
            get("irisbench", "predict-ray", level, "ours", "rps"),
            get("irisbench", "predict-process", level, "ours", "rps"),
        ),
        "≥",
        0.5,
    )
    check(
        f"environments: irisbench c={ENV_LEVEL} in its own environment / in the server's req/s (one server)",
        div(
            get("irisiso", "predict-env", ENV_LEVEL, "ours", "rps"),
            get("irisbench", "predict-env", ENV_LEVEL, "ours", "rps"),
        ),
        "≥",
        0.9,
    )
    build = find(rows, "sklearn-env", "env-build", 1, "ours")
    if build:
        check(
            "environments: a second model with the same requirements: build s (cache hit)",
            build["extra"]["cache_hit_s"],
            "≤",
            1.0,
        )
        check("environments: first build of scikit-learn + numpy from a warm cache s", build["wall_s"], "≤", 30.0)
    forest_row = get(EXPLAIN_FOREST, "explain-row", 1, "ours", "p50_ms")
    check("explain: uploaded iris forest (100 trees), one row p50 ms", forest_row, "≤", 20.0)
    check(
        f"explain: uploaded iris forest, {BATCH_ROWS} rows per request, median s",
        get(EXPLAIN_FOREST, "explain-batch", 1, "ours", "wall_s"),
        "≤",
        0.5,
    )
    kernel_row = get("irisbench", "explain-row", 1, "ours", "p50_ms")
    if forest_row and kernel_row is not None:
        info(
            "explain: one row p50, irisbench's Kernel path / the uploaded forest's tree path",
            round(kernel_row / forest_row, 1),
            "informational: no goal",
        )
    for row in rows:
        extra = row.get("ours", {}).get("extra", {})
        if row["kind"].endswith("-bare") and "ratio_to_in_process" in extra:
            info(
                f"image: {row['model']} c={row['concurrency']}: a bare aiohttp server with the model in its own "
                "process / the in-process rate",
                extra["ratio_to_in_process"],
                "informational: the ceiling of any server on aiohttp for this model and request",
            )
        elif row["kind"].startswith("image-") and "ratio_to_in_process" in extra:
            check(
                f"image: {row['model']} {row['kind']} c={row['concurrency']}: ours / the in-process rate",
                extra["ratio_to_in_process"],
                "≥",
                extra["target"],
            )
    copy = find(rows, COPY_MODEL, "tensor-10mb", 1, "ours")
    if copy and copy.get("cpu_ms_per_req") is not None:
        copy_extra = copy.get("extra", {})
        check(
            "image: a 10 MB tensor, server process CPU ms/request / (one memcpy + the model's work)",
            copy["cpu_ms_per_req"] / (copy_extra["memcpy_10mb_ms"] + copy_extra["model_work_ms"]),
            "≤",
            2.0,
            "at most one copy between the socket and the worker would cost about one memcpy beside the model's work",
        )
        if copy_extra.get("bare_server_cpu_ms"):
            info(
                "image: a 10 MB tensor, a bare aiohttp server's CPU ms/request (the model in its own process) "
                "/ (one memcpy + the model's work)",
                copy_extra["bare_server_cpu_ms"] / (copy_extra["memcpy_10mb_ms"] + copy_extra["model_work_ms"]),
                "informational: what receiving the body over HTTP costs on this machine before any worker",
            )
    for model in ("irisbench", "echobench"):
        check(
            f"memory: {model} --workers 2, RSS of the process tree, ours / DEEPaaS",
            div(get(model, "memory", 2, "ours", "rss_mib"), get(model, "memory", 2, "deepaas", "rss_mib")),
            "≤",
            1.0,
        )
        check(
            f"memory: {model} --workers 2, start-up (command to first prediction), ours / DEEPaaS",
            div(get(model, "memory", 2, "ours", "startup_s"), get(model, "memory", 2, "deepaas", "startup_s")),
            "≤",
            1.0,
        )
    check(
        "memory: a server with the demo plugin alone, RSS MiB", get("demo", "memory", 0, "ours", "rss_mib"), "≤", 150.0
    )
    ray_p50, process_p50 = (get("irisbench", kind, 1, "ours", "p50_ms") for kind in ("predict-ray", "predict-process"))
    if ray_p50 is not None and process_p50 is not None:
        info(
            "scaleout: Ray per-call overhead, irisbench c=1 p50 ray − process (ms)",
            ray_p50 - process_p50,
            "informational: no goal",
        )
    return checks


def _goal(check: dict) -> str:
    return "–" if check["target"] is None else f"{check['op']} {check['target']:g}"


def _met(check: dict) -> str:
    return "info" if check["met"] is None else "yes" if check["met"] else "no"


def cases_table(rows: list[dict], args: argparse.Namespace) -> list[str]:
    table = [
        "| case | DEEPaaS req/s | ours req/s | ratio | DEEPaaS p50 / p99 ms | ours p50 / p99 ms "
        "| server CPU ms/req D / ours | RSS MiB D / ours | errors D / ours | notes |",
        "|" + "---|" * 10,
    ]
    for row in rows:
        d, o = row.get("deepaas"), row.get("ours") or row.get("bare")
        ratio = f"{row['ratio']:.2f}×" if "ratio" in row else "–"
        deepaas_rps = f"{d['rps']:.0f} ({d['config']})" if d and "rps" in d else "–"
        errors = f"{d['errors'] if d else '–'} / {o['errors'] if o else '–'}"
        table.append(
            f"| {label(row['model'], row['kind'], row['concurrency'], args)} | {deepaas_rps} | {_fmt(o, ('rps',))} "
            f"| {ratio} | {_fmt(d, ('p50_ms', 'p99_ms'), '.2f')} | {_fmt(o, ('p50_ms', 'p99_ms'), '.2f')} "
            f"| {_fmt(d, ('cpu_ms_per_req',), '.3f')} / {_fmt(o, ('cpu_ms_per_req',), '.3f')} "
            f"| {_fmt(d, ('rss_mib',))} / {_fmt(o, ('rss_mib',))} | {errors} | {notes(row, rows)} |"
        )
    return table


def summarize(
    results: dict[tuple, Case], limits: dict[str, float], args: argparse.Namespace, skipped: list[str]
) -> dict:
    rows = build_rows(results)
    peers = peer_report(results)
    checks = targets(rows, limits, args) + peers["checks"]
    loadgen = args.loadgen
    lines = [
        f"Run of {time.strftime('%Y-%m-%d %H:%M')} on {os.cpu_count()} CPUs, Python {sys.version.split()[0]}; "
        f"medians of {args.repeats} repeat(s); DEEPaaS 2.6.0 at its better of --workers 1 and 2 for each case "
        "(overload: --workers 2; flood: its defaults); ours: echobench `--executor thread`; irisbench `--workers 2`; "
        "irisbatch `--workers 2 --max-batch-size 32 --max-batch-time-ms 2`; slowbench and the registry server: "
        "defaults (registry: `--registry-workers 2`); --auth rows: echobench `--executor thread --auth`, a "
        "models:predict token on every request; OIP and feature impact: the irisbench server; load generator: "
        + loadgen.name
        + (f" ({loadgen.parent.name}/)" if loadgen != LOADGEN else "")
        + (
            f", and wrk for the (wrk) cases ({args.wrk_duration:g} s each), the overload and the flood."
            if wrk_path()
            else "; wrk not installed: loadgen for the overload, no (wrk) cases and no flood."
        ),
        "",
        *cases_table(rows, args),
        "",
        "bare aiohttp rows: the reference server (benchmarks/bare_aiohttp.py), its numbers in the ours columns. "
        "errors: non-2xx answers plus failed requests (wrk: plus socket errors; scaleout submissions: any answer "
        "but 202). scaleout rows: ours only, see benchmarks/scaleout.py; replicas: echobench `--executor thread "
        "--store postgresql://...` with a shared --artifact-dir and --auth-key-file, each its own --data-dir.",
        "",
        f"In-process call rate (the physical limit, one core): irisbench {limits.get('irisbench', 0):.0f} calls/s, "
        f"echobench {limits.get('echobench', 0):.0f} calls/s.",
        "",
        *([*peers["table"], ""] if peers["rows"] else []),
        "| target | measured | goal | met |",
        "|---|---|---|---|",
        *[f"| {c['check']} | {c['value']:.2f} | {_goal(c)} | {_met(c)} |" for c in checks],
        "",
        *[f"* {c['check']}: {c['note']}" for c in checks if c.get("note")],
        *([""] if any(c.get("note") for c in checks) else []),
    ]
    if skipped:
        lines += ["Skipped or adjusted:", "", *[f"* {s}" for s in skipped], ""]
    settings = {
        k: (str(v) if isinstance(v, Path) else sorted(v) if isinstance(v, set) else v) for k, v in vars(args).items()
    }
    return {
        "markdown": "\n".join(lines),
        "json": {
            "rows": rows,
            "in_process": limits,
            "checks": checks,
            "skipped": skipped,
            "settings": settings,
            "peers": peers["rows"],
        },
    }
