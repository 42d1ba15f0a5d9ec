"""The explain phase of ``make bench``: prediction explanations, one request at a time.

* an iris RandomForestClassifier of 100 trees (scikit-learn's default), fitted on named
  columns, uploaded as joblib, its reference dataset the 150 iris rows: explained by shap's
  TreeExplainer in a registry worker. One row per request (p50, target 20 ms) and 100 rows per
  request (median seconds, target 0.5 s);
* irisbench (the plugin, shap's KernelExplainer over its own predictions) against an
  initialization of :data:`BACKGROUND` iris rows, on the same server: one row per request, and
  :data:`KERNEL_ROWS` rows per request (each row costs (14 coalitions + 1) x 15 calls of its
  predict; 100 rows would be refused: longer than the Kernel path's bound of 10 s).

The tree path is path-dependent: its cost does not grow with the background (shap's
interventional TreeExplainer walks every tree once per background row and row: 0.43 s for 100
rows against 100 background rows, and its strengths do not add up; see
:class:`deepaas_like.engine.explainer.Trees`).
"""

from __future__ import annotations

import http.client
import io
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import registry_bench as registry
from api_cases import iris_rows
from servers import Server, log, ours_command

FOREST = "iris-forest-explain"
PLUGIN = "irisbench"
COLUMNS = ("sepal_length", "sepal_width", "petal_length", "petal_width")
BATCH_ROWS = 100  # the forest's batch case
KERNEL_ROWS = 3  # irisbench's batch case (a row costs it about 1 s: 225 calls of its predict)
BACKGROUND = 15  # irisbench's initialization rows
FLAGS = ["--workers", "1", "--registry-workers", "1"]
TIMEOUT_S = 120


def forest_files(folder: Path) -> tuple[Path, bytes]:
    """The forest as joblib, and the iris rows as the CSV of its reference dataset."""
    import joblib
    import pandas as pd
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier

    iris = load_iris()
    frame = pd.DataFrame(iris.data, columns=list(COLUMNS))
    forest = RandomForestClassifier(n_estimators=100, random_state=0, n_jobs=1).fit(
        frame, iris.target_names[iris.target]
    )
    path = folder / "iris-forest-explain.joblib"
    joblib.dump(forest, path)
    csv = io.StringIO()
    frame.to_csv(csv, index=False)
    return path, csv.getvalue().encode()


class Client:
    """One kept-alive connection: the time measured is the server's, not a connection's setup."""

    def __init__(self, port: int) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT_S)

    def send(self, method: str, path: str, body: bytes, content_type: str) -> tuple[int, dict, float]:
        started = time.perf_counter()
        self.connection.request(method, path, body=body, headers={"Content-Type": content_type})
        response = self.connection.getresponse()
        answer = response.read()
        seconds = time.perf_counter() - started
        try:
            document = json.loads(answer)
        except ValueError:
            document = {"raw": answer[:300].decode("latin-1")}
        return response.status, document, seconds

    def post(self, path: str, document: dict) -> tuple[int, dict, float]:
        return self.send("POST", path, json.dumps(document).encode(), "application/json")

    def close(self) -> None:
        self.connection.close()


def timed(client: Client, model: str, body: dict, requests: int) -> dict:
    """``requests`` explanations of ``body``, one at a time, after one that warms the worker
    (its first shap import and, on the tree path, its explainer): latency and errors."""
    status, answer, _ = client.post(f"/v2/models/{model}/explain", body)
    if status != 200:
        raise RuntimeError(f"explain {model} answered {status}: {json.dumps(answer)[:300]}")
    seconds, errors = [], 0
    for _ in range(requests):
        status, _, took = client.post(f"/v2/models/{model}/explain", body)
        errors += status != 200
        seconds.append(took)
    seconds.sort()
    p99 = seconds[min(len(seconds) - 1, int(len(seconds) * 0.99))]
    return {
        "wall_s": round(statistics.median(seconds), 4),
        "lat_ms": {"p50": round(statistics.median(seconds) * 1000, 3), "p99": round(p99 * 1000, 3)},
        "errors": errors,
        "extra": {"requests": requests, "rows": len(body.get("rows", [None]))},
    }


def initialize(client: Client, model: str, rows: list[dict]) -> None:
    status, answer, _ = client.post(f"/v2/models/{model}/explanations-initialization/", {"rows": rows})
    if status != 202:
        raise RuntimeError(f"explanations initialization of {model} answered {status}: {json.dumps(answer)[:300]}")
    deadline = time.monotonic() + TIMEOUT_S
    while answer.get("status") in ("queued", "running"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"explanations initialization of {model} not done: {answer}")
        time.sleep(0.05)
        client.connection.request("GET", answer["links"]["self"])
        answer = json.loads(client.connection.getresponse().read())
    if answer.get("status") != "done":
        raise RuntimeError(f"explanations initialization of {model} ended {answer.get('status')}: {answer}")


def measure(
    scratch: Path, data_dir: Path, raw: Path, requests: int, batches: int, record: Callable[[str, str, dict], None]
) -> None:
    """The four cases (see the module's docstring), each handed to ``record(model, kind, result)``
    as it is measured."""
    model_file, csv = forest_files(Path(tempfile.mkdtemp(prefix="explain-", dir=scratch)))
    server = Server(ours_command(data_dir, [PLUGIN], FLAGS), "/v2/health/ready", raw / "ours-explain.log", settle=True)
    client = Client(server.port)
    try:
        status, body, _ = registry.upload(server.port, FOREST, model_file)
        if status not in (200, 201):
            raise RuntimeError(f"upload of {FOREST} answered {status}: {json.dumps(body)[:300]}")
        status, body, _ = client.send("PUT", f"/v2/models/{FOREST}/versions/1/dataset", csv, "text/csv")
        if status != 200:
            raise RuntimeError(f"reference dataset of {FOREST} answered {status}: {json.dumps(body)[:300]}")
        initialize(client, PLUGIN, iris_rows(BACKGROUND))
        rows = iris_rows(BATCH_ROWS)
        virginica = {"sepal_length": 6.9, "sepal_width": 3.2, "petal_length": 5.7, "petal_width": 2.3}
        log(f"explain: {FOREST} (TreeExplainer) and {PLUGIN} (KernelExplainer, {BACKGROUND} background rows)")
        record(FOREST, "explain-row", timed(client, FOREST, virginica, requests))
        record(FOREST, "explain-batch", timed(client, FOREST, {"rows": rows}, batches))
        record(PLUGIN, "explain-row", timed(client, PLUGIN, virginica, max(3, requests // 10)))
        record(PLUGIN, "explain-batch", timed(client, PLUGIN, {"rows": rows[:KERNEL_ROWS]}, batches))
    finally:
        client.close()
        server.stop()
