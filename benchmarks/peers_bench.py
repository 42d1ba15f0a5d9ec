#!/usr/bin/env python3
"""The peers phase of ``make bench``: ours against MLServer, BentoML, LitServe and KServe.

    .venv/bin/python benchmarks/peers_bench.py --quick        # standalone: prints the table and the targets

Every server serves one file, the iris forest (irisbench's: 10 trees, ``random_state=0``,
written by :class:`registry_bench.ModelFiles` with this Python's scikit-learn), and answers
one row with its class probabilities, asked in its own protocol: MLServer (mlserver-sklearn)
and KServe's Python model server the Open Inference Protocol's V2 infer JSON, BentoML and
LitServe their JSON APIs (:data:`BODIES`); ours the uploaded forest (``PUT /v2/models/NAME``)
asked both by the V2 infer JSON and by its predict (``POST .../predict/?x0=...``), and
irisbench, the plugin, loading the same file (``IRISBENCH_MODEL_PATH``).

Each peer lives in a virtualenv of its own under ``venv_root`` (beside DEEPaaS's), made and
pip-installed on first use with exact pins (:data:`PEERS`; scikit-learn, numpy and joblib
pinned to this Python's, which wrote the file), reused after. Each server starts alone, on
127.0.0.1, under ``timeout`` (:data:`SERVER_MAX_S`), in a session of its own, stopped by PID
(``servers.Server``); a validation request checks its answer; then wrk (``peers/post_json.lua``)
warms it up, drives it at c=64 (req/s, p50/p99, server CPU ms per request of the whole
process tree, RSS of the whole tree) and at c=1 (p50). Configurations: one worker, two
workers, and two workers with adaptive batching where the server has it (:data:`CONFIGS`).

:func:`run_peers` measures into ``results`` (``measure.Case`` keyed as ``run.Run.case`` keys
them; kinds ``peer`` and ``peer-predict``, framework the server's name) and
:func:`peer_report` turns them into the table, its rows and the targets (best peer = the best
of any peer's configurations for each figure).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from loadgen import process_tree_rss_mib  # noqa: E402
from measure import Case  # noqa: E402
from registry_bench import QUERY as FOREST_QUERY  # noqa: E402
from registry_bench import ModelFiles, upload  # noqa: E402
from servers import Server, bare_listen, deepaas_listen, log, ours_command  # noqa: E402
from stress import QUERY as IRIS_QUERY  # noqa: E402
from wrk import run_wrk  # noqa: E402

PEERS_DIR = HERE / "peers"
POST_JSON = PEERS_DIR / "post_json.lua"
DEFAULT_VENV_ROOT = Path(tempfile.gettempdir()) / "deepaas-like-bench" / "peers"
SERVER_MAX_S = 900  # no server outlives this, whatever happens to the bench
START_TIMEOUT_S = 240
LEVEL = 64
ROW = [5.1, 3.5, 1.4, 0.2]  # the predict cases' row (setosa)
UPLOADED = "iris-forest"  # ours: the forest's name in our registry
PINNED_HERE = ("scikit-learn", "numpy", "joblib")  # the file's libraries, at this Python's versions
BATCH = {"max_batch_size": 32, "max_batch_time_ms": 2.0}  # as ours' irisbatch case


@dataclass(frozen=True)
class Peer:
    name: str
    requirements: tuple[str, ...]  # exact pins, tested
    launcher: str  # in benchmarks/peers/
    protocol: str  # a key of BODIES
    path: str  # the request's path
    ready_path: str
    imports: str  # what must import in its virtualenv
    batching: bool  # adaptive batching offered
    note: str = ""


PEERS = {
    "mlserver": Peer(
        "mlserver",
        # uvloop 0.21: MLServer 1.7.1's parallel workers die at start with uvloop >= 0.22 ("There is no
        # current event loop in thread 'MainThread'" in mlserver/parallel/worker.py), seen here with 0.22.1
        ("mlserver==1.7.1", "mlserver-sklearn==1.7.1", "uvloop==0.21.0"),
        "mlserver_serve.py",
        "v2",
        "/v2/models/iris/infer",
        "/v2/models/iris/ready",
        "mlserver, mlserver_sklearn, uvloop",
        True,
        "parallel_workers; max_batch_size/max_batch_time; uvloop pinned to 0.21.0",
    ),
    "bentoml": Peer(
        "bentoml",
        ("bentoml==1.4.40",),
        "bentoml_serve.py",
        "json",
        "/predict",
        "/readyz",
        "bentoml",
        True,
        "service workers; batchable=True, max_batch_size (its own wait)",
    ),
    "litserve": Peer(
        "litserve",
        ("litserve==0.2.19",),
        "litserve_serve.py",
        "json",
        "/predict",
        "/health",
        "litserve",
        True,
        "workers_per_device on the CPU (and as many API processes, its default); max_batch_size/batch_timeout",
    ),
    "kserve": Peer(
        "kserve",
        ("kserve==0.21.0",),
        "kserve_serve.py",
        "v2",
        "/v2/models/iris/infer",
        "/v2/models/iris/ready",
        "kserve",
        False,
        "uvicorn workers; bound to 127.0.0.1 by the launcher; no batching in its Python server",
    ),
}
V2_INPUTS = [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": ROW}]
BODIES = {  # the one-row request, in each protocol, asking for the class probabilities
    "v2": {"inputs": V2_INPUTS, "outputs": [{"name": "predict_proba"}]},  # mlserver-sklearn's output name
    "v2-ours": {"inputs": V2_INPUTS, "outputs": [{"name": "probabilities"}]},  # ours' (it also has "label")
    "json": {"input": [ROW]},
}


@dataclass(frozen=True)
class Config:
    label: str
    workers: int
    batching: bool = False


CONFIGS = (Config("w1", 1), Config("w2", 2), Config("w2 batch", 2, True))


@dataclass
class Settings:
    seconds: float = 10.0  # per wrk case (c=64, then c=1)
    warmup_seconds: float = 2.0
    repeats: int = 1
    venv_root: Path = DEFAULT_VENV_ROOT
    peers: tuple[str, ...] = tuple(PEERS)
    ours: bool = True


@dataclass
class Target:
    """One server configuration to start, and the requests to measure on it."""

    framework: str
    model: str
    config: str
    command: list[str]
    ready_path: str
    requests: list[tuple[str, str, Path | None]]  # (kind, path, JSON body file or None: POST with no body)
    listen: Callable[[int], list[str]] = deepaas_listen  # ours' flags; a peer's launcher takes --port
    after_start: Callable[[Server], None] | None = None
    extra: dict = field(default_factory=dict)


def bounded(command: list[str]) -> list[str]:
    """``command`` under coreutils' timeout, which takes its whole process group down at SERVER_MAX_S."""
    return ["timeout", "-k", "10", str(SERVER_MAX_S), *command]


def pins_here() -> tuple[str, ...]:
    return tuple(f"{name}=={importlib.metadata.version(name)}" for name in PINNED_HERE)


def ensure_peer(peer: Peer, venv_root: Path) -> tuple[Path, float | None]:
    """The peer's virtualenv's Python, and the seconds its install took (None: reused)."""
    requirements = [*peer.requirements, *pins_here()]
    venv = venv_root / "-".join(r.replace("==", "-") for r in peer.requirements[:1] + pins_here()[:1])
    python, marker = venv / "bin" / "python", venv / "peer-requirements.json"
    if python.exists() and marker.exists() and json.loads(marker.read_text()) == requirements:
        check = subprocess.run([str(python), "-c", f"import {peer.imports}, sklearn, joblib"], capture_output=True)
        if check.returncode == 0:
            return python, None
    log(f"peers: installing {' '.join(requirements)} into {venv}")
    shutil.rmtree(venv, ignore_errors=True)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    done = subprocess.run([*pip, *requirements], capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"pip install of {peer.name} failed: {done.stderr[-1500:]}")
    marker.write_text(json.dumps(requirements))
    return python, round(time.perf_counter() - started, 1)


def body_files(folder: Path) -> dict[str, Path]:
    """Each protocol's request body, as a JSON file (what wrk sends)."""
    files = {}
    for protocol, body in BODIES.items():
        files[protocol] = folder / f"body-{protocol}.json"
        files[protocol].write_text(json.dumps(body))
    return files


def probabilities(answer: dict | list) -> list[float]:
    """The one row's class probabilities, from any of the servers' answers: a V2 answer's first
    output, a ``probabilities`` list or mapping (LitServe, ours), a bare array (BentoML); a
    ``predictions`` list (ours' predict) holds the row's answer."""
    if isinstance(answer, dict):
        for key in ("outputs", "predictions", "probabilities"):
            if key in answer:
                inner = answer[key]
                return probabilities(inner[0]["data"] if key == "outputs" else inner)
        if all(isinstance(v, (int, float)) for v in answer.values()):
            return [float(v) for v in answer.values()]
        raise ValueError(f"no probabilities in {str(answer)[:200]}")
    if len(answer) == 1 and isinstance(answer[0], (list, dict)):
        return probabilities(answer[0])
    return [float(v) for v in answer]


def check_answer(server: Server, path: str, body: Path | None) -> list[float]:
    """One request as wrk will send it; its answer must be 200 and say setosa (class 0)."""
    data = body.read_bytes() if body else b""
    request = urllib.request.Request(
        server.url(path), data=data, method="POST", headers={"Content-Type": "application/json"} if body else {}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"{server.url(path)} answered {exc.code}: {exc.read()[:300]!r}") from None
    found = probabilities(answer)
    if len(found) != 3 or max(range(3), key=lambda i: found[i]) != 0:
        raise RuntimeError(f"{server.url(path)} answered {str(answer)[:300]}: not setosa's probabilities")
    return found


def drive(server: Server, path: str, body: Path | None, level: int, seconds: float) -> dict:
    script = {"script": POST_JSON, "script_args": [str(body)]} if body else {}
    return run_wrk(server.url(path), method="POST", connections=level, seconds=seconds, server_pid=server.pid, **script)


def measure_target(target: Target, settings: Settings, raw: Path, results: dict, repeat: int) -> None:
    log(f"peers: {target.framework} {target.model} ({target.config}), repeat {repeat}")
    started = time.perf_counter()
    server = Server(
        bounded(target.command),
        target.ready_path,
        raw / f"peer-{target.framework}-{target.model}-{target.config.replace(' ', '_')}-{repeat}.log",
        listen=target.listen,
        settle=True,
        start_timeout_s=START_TIMEOUT_S,
    )
    ready_s = time.perf_counter() - started - server.settle_s
    try:
        if target.after_start:
            target.after_start(server)
        for kind, path, body in target.requests:
            check_answer(server, path, body)
            drive(server, path, body, LEVEL, settings.warmup_seconds)
            top = drive(server, path, body, LEVEL, settings.seconds)
            top["rss_mib"] = round(process_tree_rss_mib(server.pid), 1)
            top["extra"] = {**target.extra, "ready_s": round(ready_s, 2)}
            one = drive(server, path, body, 1, settings.seconds)
            for level, result in ((LEVEL, top), (1, one)):
                key = (target.framework, target.model, kind, level, target.config)
                case = results.setdefault(key, Case(*key))
                case.runs.append(result)
                log(
                    f"  {target.framework} {target.config} {kind} c={level}: {result['rps']} req/s "
                    f"p50 {result['lat_ms'].get('p50')} ms p99 {result['lat_ms'].get('p99')} ms "
                    f"CPU {result.get('server_cpu_ms_per_req')} ms/req RSS {result.get('rss_mib', '–')} MiB "
                    f"errors {result['errors']}"
                )
    finally:
        server.stop()


def peer_targets(peer: Peer, python: Path, forest: Path, bodies: dict[str, Path], scratch: Path, extra: dict):
    for config in CONFIGS:
        if config.batching and not peer.batching:
            continue
        batching = BATCH if config.batching else {"max_batch_size": 1, "max_batch_time_ms": 0}
        workdir = Path(tempfile.mkdtemp(prefix=f"{peer.name}-", dir=scratch))
        command = [
            str(python),
            str(PEERS_DIR / peer.launcher),
            "--model",
            str(forest),
            "--workers",
            str(config.workers),
            "--max-batch-size",
            str(batching["max_batch_size"]),
            "--max-batch-time-ms",
            str(batching["max_batch_time_ms"]),
            "--workdir",
            str(workdir),
        ]
        yield Target(
            peer.name,
            UPLOADED,
            config.label,
            command,
            peer.ready_path,
            [("peer", peer.path, bodies[peer.protocol])],
            listen=bare_listen,
            extra=extra,
        )


def ours_targets(forest: Path, bodies: dict[str, Path], scratch: Path):
    """The uploaded forest (--registry-workers N; the batch case sets its version's batching), on a
    server whose only plugin is echobench on a thread; and irisbench, the plugin, loading the file."""
    for config in CONFIGS:
        flags = ["--executor", "thread", "--registry-workers", str(config.workers)]

        def after_start(server: Server, batching: bool = config.batching) -> None:
            status, answer, _ = upload(server.port, UPLOADED, forest)
            if status not in (200, 201):
                raise RuntimeError(f"upload of the forest answered {status}: {json.dumps(answer)[:300]}")
            if batching:
                path = f"/v2/models/{UPLOADED}/versions/{answer['current_version']}/config"
                request = urllib.request.Request(
                    server.url(path),
                    data=json.dumps({"batching": BATCH}).encode(),
                    method="PUT",
                    headers={"Content-Type": "application/json"},
                )
                urllib.request.urlopen(request, timeout=30).close()

        data_dir = Path(tempfile.mkdtemp(prefix="ours-", dir=scratch))
        yield Target(
            "ours",
            UPLOADED,
            config.label,
            ours_command(data_dir, ["echobench"], flags),
            "/v2/health/ready",
            [
                ("peer", f"/v2/models/{UPLOADED}/infer", bodies["v2-ours"]),
                ("peer-predict", f"/v2/models/{UPLOADED}/predict/?{FOREST_QUERY}", None),
            ],
            after_start=after_start,
            extra={"flags": " ".join(flags), "batching": BATCH if config.batching else None},
        )
    for config in CONFIGS:
        flags = ["--workers", str(config.workers)]
        if config.batching:
            flags += ["--max-batch-size", str(BATCH["max_batch_size"])]
            flags += ["--max-batch-time-ms", str(BATCH["max_batch_time_ms"])]
        data_dir = Path(tempfile.mkdtemp(prefix="ours-", dir=scratch))
        yield Target(
            "ours",
            "irisbench",
            config.label,
            ["env", f"IRISBENCH_MODEL_PATH={forest}", *ours_command(data_dir, ["irisbench"], flags)],
            "/v2/health/ready",
            [("peer-predict", f"/v2/models/irisbench/predict/?{IRIS_QUERY}", None)],
            extra={"flags": " ".join(flags)},
        )
    # the forest in the server's own process, as KServe's and LitServe's one worker hold theirs: a
    # trusted plugin may run on a thread (an upload never does: it loads in a contained worker)
    flags = ["--executor", "thread"]
    yield Target(
        "ours",
        "irisbench",
        "w1 thread",
        [
            "env",
            f"IRISBENCH_MODEL_PATH={forest}",
            *ours_command(Path(tempfile.mkdtemp(prefix="ours-", dir=scratch)), ["irisbench"], flags),
        ],
        "/v2/health/ready",
        [("peer-predict", f"/v2/models/irisbench/predict/?{IRIS_QUERY}", None)],
        extra={"flags": " ".join(flags)},
    )


def run_peers(
    scratch: Path,
    raw: Path,
    settings: Settings,
    results: dict[tuple, Case] | None = None,
    notes: list[str] | None = None,
) -> dict[tuple, Case]:
    """Install what is missing, then measure every peer's and our configurations, one server at a
    time, ``settings.repeats`` times (alternating the order); the cases go into ``results``, what
    was installed, left out or failed into ``notes``."""
    results = {} if results is None else results
    notes = [] if notes is None else notes
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="peers-", dir=scratch))
    forest = ModelFiles.write(work, small_models=0).forest
    bodies = body_files(work)
    targets: list[Target] = []
    for name in settings.peers:
        peer = PEERS[name]
        try:
            python, install_s = ensure_peer(peer, settings.venv_root)
        except Exception as exc:  # noqa: BLE001 - the other peers still run
            notes.append(f"peers: {name}: not installed: {exc!r:.300}")
            continue
        installed = "reused" if install_s is None else f"installed in {install_s:g} s"
        notes.append(f"peers: {name} ({', '.join(peer.requirements)}): virtualenv {installed}")
        targets += peer_targets(
            peer, python, forest, bodies, work, {"install_s": install_s, "requirements": list(peer.requirements)}
        )
    if settings.ours:
        for target in ours_targets(forest, bodies, work):
            targets.append(target)
    for repeat in range(1, settings.repeats + 1):
        for target in targets if repeat % 2 else reversed(targets):
            try:
                measure_target(target, settings, raw, results, repeat)
            except Exception as exc:  # noqa: BLE001 - the rest still runs
                log(f"peers: {target.framework} {target.model} ({target.config}) failed: {exc!r}")
                notes.append(f"peers: {target.framework} {target.model} ({target.config}): failed: {exc!r:.300}")
    shutil.rmtree(work, ignore_errors=True)
    notes.append(f"peers: the phase took {time.perf_counter() - started:.0f} s, installs included")
    return results


# --- the report -------------------------------------------------------------------------------

PEER_KINDS = ("peer", "peer-predict")


def peer_rows(results: dict[tuple, Case]) -> list[dict]:
    """One row per server, model, request kind and configuration: medians over the repeats."""
    rows: dict[tuple, dict] = {}
    for (framework, model, kind, level, config), case in results.items():
        if kind not in PEER_KINDS or not case.runs:
            continue
        row = rows.setdefault((framework, model, kind, config), {"framework": framework, "model": model, "kind": kind})
        row["config"] = config
        if level == LEVEL:
            row.update(
                rps=case.median("rps"),
                p50_ms=case.median("lat_ms.p50"),
                p99_ms=case.median("lat_ms.p99"),
                cpu_ms_per_req=case.median("server_cpu_ms_per_req"),
                rss_mib=max(r["rss_mib"] for r in case.runs),
                runs=len(case.runs),
                errors=row.get("errors", 0) + sum(r.get("errors", 0) for r in case.runs),
                extra=case.runs[-1].get("extra", {}),
            )
        else:
            row["c1_p50_ms"] = case.median("lat_ms.p50")
            row["errors"] = row.get("errors", 0) + sum(r.get("errors", 0) for r in case.runs)
    order = {name: i for i, name in enumerate(["ours", *PEERS])}
    return sorted(
        rows.values(), key=lambda r: (order.get(r["framework"], 99), r["model"] != UPLOADED, r["kind"], r["config"])
    )


def _best(rows: list[dict], key: str, lowest: bool) -> dict | None:
    found = [r for r in rows if isinstance(r.get(key), (int, float)) and not math.isnan(r[key])]
    return (min if lowest else max)(found, key=lambda r: r[key], default=None)


def peer_checks(rows: list[dict]) -> list[dict]:
    """The issue's targets: ours (the uploaded forest, its best configuration and protocol) against
    the best peer for each figure (the best of any peer's configurations)."""
    ours = [r for r in rows if r["framework"] == "ours" and r["model"] == UPLOADED and not r.get("errors")]
    peers = [r for r in rows if r["framework"] != "ours" and not r.get("errors")]
    checks = []
    for text, key, lowest, op, goal in (
        (f"peers: req/s c={LEVEL}, ours / the best peer's", "rps", False, "≥", 3.0),
        ("peers: p50 c=1, ours / the best peer's", "c1_p50_ms", True, "≤", 0.5),
        (f"peers: server CPU ms per request c={LEVEL}, ours / the best peer's", "cpu_ms_per_req", True, "≤", 0.3),
    ):
        mine, theirs = _best(ours, key, lowest), _best(peers, key, lowest)
        if mine and theirs and theirs[key]:
            checks.append(_check(text, mine[key] / theirs[key], op, goal, mine, theirs, key))
    theirs = _best([r for r in peers if r["config"] == "w1"], "rss_mib", True)
    plugin = [r for r in rows if r["framework"] == "ours" and r["model"] == "irisbench" and not r.get("errors")]
    for text, one in (
        # the forest in one process beside the server's, as the peers' single worker holds it
        (
            "peers: RSS MiB of the tree, one worker, ours / the best peer's",
            [r for r in plugin if r["config"] == "w1 thread"],
        ),
        # an upload: the server, and a contained worker with its two 9 MiB waiting processes
        (
            "peers: RSS MiB of the tree, one worker, ours uploaded (contained) / the best peer's",
            [r for r in ours if r["config"] == "w1"],
        ),
    ):
        mine = _best(one, "rss_mib", True)
        if mine and theirs:
            checks.append(_check(text, mine["rss_mib"] / theirs["rss_mib"], "≤", 1.0, mine, theirs, "rss_mib"))
    return checks


def _check(text: str, value: float, op: str, goal: float, mine: dict, theirs: dict, key: str) -> dict:
    met = value >= goal if op == "≥" else value <= goal
    note = f"{_who(mine)} {mine[key]:.3g} against {_who(theirs)} {theirs[key]:.3g}"
    return {"check": text, "value": round(value, 3), "op": op, "target": goal, "met": met, "note": note}


def request_name(row: dict) -> str:
    """How the row's request was asked: the V2 infer JSON, a JSON API, or ours' predict."""
    if row["kind"] == "peer-predict":
        return "predict ?query"
    return "V2 infer JSON" if row["framework"] in ("ours", "mlserver", "kserve") else "JSON API"


def _who(row: dict) -> str:
    return f"{row['framework']} {row['config']} ({request_name(row)})"


def _met(check: dict) -> str:
    return "yes" if check["met"] else "no"


def _f(value: float | None, spec: str) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def peer_table(rows: list[dict]) -> list[str]:
    table = [
        f"| server | model, request | config | req/s c={LEVEL} | p50 / p99 ms c={LEVEL} | p50 ms c=1 "
        "| server CPU ms/req | RSS MiB (tree) | errors | ready s |",
        "|" + "---|" * 10,
    ]
    for r in rows:
        request = request_name(r)
        model = "iris forest (uploaded)" if r["model"] == UPLOADED and r["framework"] == "ours" else r["model"]
        model = "iris forest" if r["model"] == UPLOADED and r["framework"] != "ours" else model
        if r["model"] == "irisbench":
            model = "irisbench plugin (same file)"
        table.append(
            f"| {r['framework']} | {model}, {request} | {r['config']} | {_f(r.get('rps'), '.0f')} "
            f"| {_f(r.get('p50_ms'), '.2f')} / {_f(r.get('p99_ms'), '.2f')} | {_f(r.get('c1_p50_ms'), '.2f')} "
            f"| {_f(r.get('cpu_ms_per_req'), '.3f')} | {_f(r.get('rss_mib'), '.0f')} | {r.get('errors', '–')} "
            f"| {_f(r.get('extra', {}).get('ready_s'), '.1f')} |"
        )
    return table


def peer_report(results: dict[tuple, Case]) -> dict:
    """The peers' part of the report: ``table`` (Markdown lines: a heading sentence and the cases),
    ``targets`` (Markdown lines: the checks and their notes), ``rows`` and ``checks`` (report.py's
    shape: check, value, op, target, met, note)."""
    rows = peer_rows(results)
    checks = peer_checks(rows)
    table = [
        "Peers: the same iris forest joblib in every server, one row per request; wrk, "
        f"c={LEVEL} and c=1; server CPU and RSS of the whole process tree. ours: the forest uploaded "
        "(`--executor thread --registry-workers N`, echobench the only plugin), and irisbench loading the file.",
        "",
        *peer_table(rows),
    ]
    targets = [
        "| target | measured | goal | met |",
        "|---|---|---|---|",
        *[f"| {c['check']} | {c['value']:.2f} | {c['op']} {c['target']:g} | {_met(c)} |" for c in checks],
        "",
        *[f"* {c['check']}: {c['note']}" for c in checks],
    ]
    return {"table": table, "targets": targets, "rows": rows, "checks": checks}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 s per wrk case, 1 s warm-up, one repeat")
    parser.add_argument("--seconds", type=float, help="per wrk case (default 10; --quick: 2)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--venv-root", type=Path, default=DEFAULT_VENV_ROOT)
    parser.add_argument("--peers", default=",".join(PEERS), help="comma-separated: " + ", ".join(PEERS))
    parser.add_argument("--no-ours", action="store_true")
    parser.add_argument("--out", type=Path, help="also write the report as JSON here")
    parser.add_argument("--raw", type=Path, default=HERE / "results" / "raw", help="the servers' logs (kept)")
    args = parser.parse_args(argv)
    settings = Settings(
        seconds=args.seconds or (2.0 if args.quick else 10.0),
        warmup_seconds=1.0 if args.quick else 2.0,
        repeats=args.repeats,
        venv_root=args.venv_root,
        peers=tuple(p for p in args.peers.split(",") if p),
        ours=not args.no_ours,
    )
    scratch = Path(tempfile.mkdtemp(prefix="deepaas-like-peers-"))
    notes: list[str] = []
    args.raw.mkdir(parents=True, exist_ok=True)
    try:
        results = run_peers(scratch, args.raw, settings, notes=notes)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    report = peer_report(results)
    print("\n".join([*report["table"], "", *report["targets"], "", *[f"* {n}" for n in notes]]))
    if args.out:
        args.out.write_text(json.dumps({"rows": report["rows"], "checks": report["checks"], "notes": notes}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
