"""The registry's cases: upload model files to a running server and predict with them.

    files = ModelFiles.write(folder, small_models=200)     # needs scikit-learn and joblib
    seconds = upload_to_first_prediction(port, "first", files.small[0])
    status, body, _ = upload(port, "iris-forest", files.forest, optimize="onnx")

The models are fitted on numpy arrays, so their inputs are ``x0``..``x3``
(:data:`QUERY`). The iris forest is irisbench's own model, fitted as
``irisbench.api`` fits it (10 trees, ``random_state=0``, on ``load_iris()``).
"""

from __future__ import annotations

import copy
import http.client
import importlib.util
import json
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from probe import as_ms, percentile

QUERY = "x0=5.1&x1=3.5&x2=1.4&x3=0.2"
TIMEOUT_S = 60.0


def sklearn_missing() -> str | None:
    """Why the registry cases cannot run here, or None."""
    missing = [name for name in ("sklearn", "joblib") if importlib.util.find_spec(name) is None]
    return f"{' and '.join(missing)} not installed in this Python" if missing else None


@dataclass
class ModelFiles:
    forest: Path  # irisbench's RandomForest
    small: list[Path]  # tiny LogisticRegressions, each a different file

    @classmethod
    def write(cls, folder: Path, small_models: int) -> "ModelFiles":
        import joblib
        from sklearn.datasets import load_iris
        from sklearn.ensemble import RandomForestClassifier
        from sklearn.linear_model import LogisticRegression

        iris = load_iris()
        forest = folder / "iris-forest.joblib"
        joblib.dump(
            RandomForestClassifier(n_estimators=10, random_state=0, n_jobs=1).fit(iris.data, iris.target), forest
        )
        fitted = LogisticRegression(max_iter=500).fit(iris.data, iris.target)
        small = []
        for i in range(small_models):  # one fit, shifted a little per copy: each file is different
            model = copy.deepcopy(fitted)
            model.intercept_ = model.intercept_ + i * 1e-6
            path = folder / f"small-{i:04d}.joblib"
            joblib.dump(model, path)
            small.append(path)
        return cls(forest, small)


def _request(port: int, method: str, path: str, body: bytes = b"", headers: dict | None = None) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT_S)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def upload(port: int, name: str, path: Path, **fields: str) -> tuple[int, dict, float]:
    """``PUT /v2/models/NAME`` with the file as multipart ``file``: (status, body, seconds)."""
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode()
        for key, value in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n".encode()
        + path.read_bytes()
        + b"\r\n"
    )
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    started = time.perf_counter()
    status, answer = _request(
        port, "PUT", f"/v2/models/{name}", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    seconds = time.perf_counter() - started
    try:
        document = json.loads(answer)
    except ValueError:
        document = {"raw": answer[:500].decode("latin-1")}
    return status, document, seconds


def predict(port: int, name: str) -> tuple[int, float]:
    started = time.perf_counter()
    status, _ = _request(port, "POST", f"/v2/models/{name}/predict/?{QUERY}")
    return status, time.perf_counter() - started


def is_loaded(port: int, name: str) -> bool | None:
    """Whether a registry worker holds the model now (None: the server does not say)."""
    status, body = _request(port, "GET", f"/v2/models/{name}/ready")
    return json.loads(body).get("loaded") if status in (200, 503) else None


def upload_to_first_prediction(port: int, name: str, path: Path) -> dict:
    """Seconds from the start of the upload to the first 200 answer of a prediction
    (``total_s``), and how long the upload's own answer took (``upload_s``)."""
    started = time.perf_counter()
    status, body, upload_s = upload(port, name, path)
    if status not in (200, 201):
        raise RuntimeError(f"upload of {name} answered {status}: {body}")
    deadline = started + TIMEOUT_S
    while time.perf_counter() < deadline:
        if predict(port, name)[0] == 200:
            return {"total_s": time.perf_counter() - started, "upload_s": upload_s}
        time.sleep(0.01)
    raise RuntimeError(f"{name}: no successful prediction within {TIMEOUT_S} s of its upload")


def cold_loads(port: int, names: list[str], sample: int) -> dict:
    """Time a first prediction on models no worker holds, and a second one right after.

    Goes through ``names`` in order until ``sample`` unloaded ones were timed (a model
    whose readiness does not say ``loaded`` counts as unloaded)."""
    cold, warm, errors = [], [], 0
    for name in names:
        if len(cold) >= sample:
            break
        if is_loaded(port, name):
            continue
        (status_cold, seconds_cold), (status_warm, seconds_warm) = predict(port, name), predict(port, name)
        errors += (status_cold != 200) + (status_warm != 200)
        cold.append(seconds_cold)
        warm.append(seconds_warm)
    return {
        "sampled": len(cold),
        "errors": errors,
        "cold_ms": {"p50": as_ms(percentile(cold, 0.5)), "max": as_ms(percentile(cold, 1.0))},
        "warm_ms": {"p50": as_ms(percentile(warm, 0.5))},
    }


def registry_load_metrics(port: int) -> dict | None:
    """The registry's load statistics from ``/metrics``, if the server exports them:
    every sample whose name mentions the registry, and the p50 of a load-time histogram."""
    status, body = _request(port, "GET", "/metrics")
    if status != 200:
        return None
    samples = {}
    for line in body.decode().splitlines():
        if line.startswith("#") or "registry" not in line.split("{")[0].split(" ")[0]:
            continue
        name, value = line.rsplit(" ", 1)
        samples[name] = float(value)
    if not samples:
        return None
    return {"samples": samples}


def load_stats_between(before: dict | None, after: dict | None) -> dict | None:
    """Loads, evictions and load times between two :func:`registry_load_metrics` readings:
    the mean from the histogram's sum and count, the p50 as the bucket bound it falls under."""
    if not after:
        return None
    earlier = (before or {}).get("samples", {})
    delta = {name: value - earlier.get(name, 0.0) for name, value in after["samples"].items()}

    def pick(*words: str) -> float | None:
        return next((v for n, v in delta.items() if all(w in n for w in words) and "{" not in n), None)

    buckets = sorted(
        (float(re.search(r'le="([^"]+)"', n)[1]), v)
        for n, v in delta.items()
        if "_bucket" in n and "second" in n and 'le="' in n
    )
    count, total = pick("second", "_count"), pick("second", "_sum")
    stats = {
        "loads": pick("load", "_total"),
        "evictions": pick("evict", "_total"),
        "load_mean_ms": round(total / count * 1000, 2) if count else None,
        "load_p50_s_at_most": None,
        "samples_after": after["samples"],
    }
    if buckets and buckets[-1][1] > 0:
        stats["load_p50_s_at_most"] = next(bound for bound, n in buckets if n >= buckets[-1][1] / 2)
    return stats
