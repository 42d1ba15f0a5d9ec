"""Three features of our API under load (ours only): keys, the Open Inference Protocol, feature impact.

    token = create_token(data_dir)                       # before a server starts on data_dir with --auth
    body = write_json(folder / "infer-100.json", infer_body(iris_rows(100)))
    result = infer_per_row(server, "irisbench", body, rows=100, requests=20)
    result = feature_impact(server, "irisbench", iris_rows(500), seed=0)

* auth: echobench's predict with ``Authorization: Bearer <token>`` on a server started with
  ``--auth`` (the token made by ``deepaas-token create --scope models:predict`` on the
  server's data directory), against the same requests to the same model without ``--auth``.
* oip: ``POST /v2/models/{name}/infer`` with JSON tensors (one ``[N]`` tensor per feature)
  against the DEEPaaS-style ``POST .../predict/?...`` of the same server; and one request of
  many rows, timed per row, beside single-row predictions one at a time.
* impact: ``POST .../feature-impact/`` with rows, the job's Location polled until it ends;
  wall time from the POST to the first answer that says it is done.
"""

from __future__ import annotations

import datetime
import http.client
import itertools
import json
import re
import subprocess
import sys
import time
from pathlib import Path

from loadgen import process_tree_cpu, process_tree_rss_mib
from measure import LOADGEN, run_loadgen
from servers import Server
from stress import predict_path

FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")  # irisbench's inputs
IMPACT_ROWS = 500  # the feature-impact case's rows in a full run
POLL_S = 0.05
IMPACT_TIMEOUT_S = 600.0
HTTP_TIMEOUT_S = 60.0


def create_token(data_dir: Path, scope: str = "models:predict") -> str:
    """A new API token on ``data_dir`` (``deepaas-token create``; the token is its last line)."""
    code = "import sys; from deepaas_like.cli.token import main; sys.exit(main())"
    out = subprocess.run(
        [sys.executable, "-c", code, "--data-dir", str(data_dir), "create", "--name", "bench", "--scope", scope],
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"deepaas-token create failed ({out.returncode}): {out.stderr.strip()[-300:]}")
    return lines[-1].strip()


def bearer(token: str) -> list[str]:
    return [f"Authorization: Bearer {token}"]


def iris_rows(count: int) -> list[dict[str, float]]:
    """sklearn's iris rows as irisbench's arguments, the three classes in turn (the dataset is sorted
    by class: a few rows of it in order would all be setosa), repeated to ``count``; the first row
    is 5.1, 3.5, 1.4, 0.2, the predict cases' query."""
    from sklearn.datasets import load_iris

    iris = load_iris()
    by_class = [[i for i, target in enumerate(iris.target) if target == label] for label in sorted(set(iris.target))]
    order = [i for group in itertools.zip_longest(*by_class) for i in group if i is not None]
    return [dict(zip(FEATURES, map(float, iris.data[order[i % len(order)]]))) for i in range(count)]


def infer_body(rows: list[dict[str, float]]) -> dict:
    """An Open Inference Protocol request: one FP64 tensor of shape ``[len(rows)]`` per feature."""
    return {
        "inputs": [
            {"name": name, "shape": [len(rows)], "datatype": "FP64", "data": [row[name] for row in rows]}
            for name in FEATURES
        ]
    }


def write_json(path: Path, document: dict) -> Path:
    path.write_text(json.dumps(document))
    return path


def infer_per_row(server: Server, model: str, body: Path, *, rows: int, requests: int, loadgen: Path = LOADGEN) -> dict:
    """``requests`` infer requests of ``rows`` rows each, one at a time; then as many single-row
    predictions (``POST .../predict/?...``), one at a time, to compare the time per row with."""
    many = run_loadgen(
        [server.url(f"/v2/models/{model}/infer")],
        method="POST",
        concurrency=1,
        requests=requests,
        server_pid=server.pid,
        loadgen=loadgen,
        json_file=body,
        warmup=2,
    )
    single = run_loadgen(
        [server.url(predict_path(model))],
        method="POST",
        concurrency=1,
        requests=requests,
        server_pid=server.pid,
        loadgen=loadgen,
        warmup=5,
    )
    many["extra"] = {
        "rows": rows,
        "requests": many["completed"],
        "ms_per_row": round(many["lat_ms"]["mean"] / rows, 4),
        "request_mean_ms": many["lat_ms"]["mean"],
        "server_cpu_ms_per_row": round(many["server_cpu_ms_per_req"] / rows, 4),
        "predict_mean_ms": single["lat_ms"]["mean"],
        "predict_p50_ms": single["lat_ms"]["p50"],
        "predict_server_cpu_ms": single["server_cpu_ms_per_req"],
        "predict_errors": single["errors"],
    }
    many["errors"] += single["errors"]
    return many


def _request(
    port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None
) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=HTTP_TIMEOUT_S)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def _seconds(duration: str | None) -> float | None:
    """The job document's ``duration`` (``0:00:08.744145``) in seconds."""
    match = re.fullmatch(r"(?:(\d+) days?, )?(\d+):(\d+):([\d.]+)", duration or "")
    if not match:
        return None
    days, hours, minutes, seconds = (float(g or 0) for g in match.groups())
    return datetime.timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds).total_seconds()


def feature_impact(server: Server, model: str, rows: list[dict], *, seed: int = 0) -> dict:
    """One feature-impact job (repeats: the server's default), timed from its POST to the
    first poll of its Location that finds it done; raises unless it ends ``done``."""
    body = json.dumps({"rows": rows, "seed": seed}).encode()
    cpu_before = process_tree_cpu(server.pid)
    started = time.perf_counter()
    status, headers, answer = _request(
        server.port, "POST", f"/v2/models/{model}/feature-impact/", body, {"Content-Type": "application/json"}
    )
    if status != 202 or "Location" not in headers:
        raise RuntimeError(f"feature impact answered {status}: {answer[:300]!r}")
    location, polls = headers["Location"], 0
    while True:
        status, _, answer = _request(server.port, "GET", location)
        polls += 1
        if status != 200:
            raise RuntimeError(f"GET {location} answered {status}: {answer[:300]!r}")
        document = json.loads(answer)
        if document.get("status") not in ("queued", "running"):
            break
        if time.perf_counter() - started > IMPACT_TIMEOUT_S:
            raise RuntimeError(f"feature impact not done after {IMPACT_TIMEOUT_S:g} s: {document.get('status')}")
        time.sleep(POLL_S)
    wall = time.perf_counter() - started
    cpu = process_tree_cpu(server.pid) - cpu_before
    if document["status"] != "done":
        raise RuntimeError(f"feature impact ended {document['status']}: {document.get('message', '')[:300]}")
    args = document.get("args", {})
    count, features, repeats = args.get("rowCount", len(rows)), len(args.get("features", FEATURES)), args["repeats"]
    predictions = count + count * features * repeats  # the baseline, then each feature shuffled in each repeat
    impacts = document.get("featureImpacts") or [{}]
    return {
        "wall_s": round(wall, 3),
        "ms_per_prediction": round(wall / predictions * 1000, 4),
        "errors": 0,
        "rss_mib": round(process_tree_rss_mib(server.pid), 1),
        "extra": {
            "rows": count,
            "features": features,
            "repeats": repeats,
            "seed": seed,
            "predictions": predictions,
            "job_duration_s": _seconds(document.get("duration")),
            "server_cpu_s": round(cpu, 3),
            "server_cpu_ms_per_prediction": round(cpu / predictions * 1000, 4),
            "polls": polls,
            "top_feature": impacts[0].get("featureName"),
        },
    }
