"""The benchmark script runs end to end (ours only, a smoke-sized run of every case).

Only that each case ran and its answers are sane: no timing is asserted here; speed is
judged by the benchmark's own target table.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest

from support import ROOT  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from loadgen import build_request, parse_args  # noqa: E402
from wrk import parse_wrk_output  # noqa: E402

from support import postgres  # noqa: E402

WRK_REPORT = """\
Running 2s test @ http://127.0.0.1:5000/v2/models/slowbench/predict/
  4 threads and 1024 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   478.07ms  640.46ms   6.06s    93.25%
    Req/Sec     1.86k     1.45k    7.91k    72.40%
  Latency Distribution
     50%  357.42ms
     75%  453.83ms
     90%  586.28ms
     99%  950.00us
  52885 requests in 8.06s, 16.70MB read
  Socket errors: connect 0, read 12, write 0, timeout 3
  Non-2xx or 3xx responses: 52788
Requests/sec:   6560.75
Transfer/sec:      2.07MB
STATUSES {"statuses": {"200": 97, "503": 52788}, "retry_after_503": 52788}
"""


def test_wrk_report_is_read_as_numbers():
    result = parse_wrk_output(WRK_REPORT)
    assert result["rps"] == 6560.8 and result["completed"] == 52885 and result["duration_s"] == 8.06
    assert result["lat_ms"] == {"mean": 478.07, "max": 6060.0, "p50": 357.42, "p75": 453.83, "p90": 586.28, "p99": 0.95}
    assert result["socket_errors"] == {"connect": 0, "read": 12, "write": 0, "timeout": 3}
    assert result["non_2xx"] == 52788 and result["errors"] == 52788 + 15
    assert result["status_counts"] == {200: 97, 503: 52788} and result["retry_after_503"] == 52788


def test_loadgen_sends_headers_and_a_json_file(tmp_path):
    body = tmp_path / "body.json"
    body.write_text('{"inputs": []}')
    args = parse_args(
        [
            "--url",
            "http://127.0.0.1:5000/v2/models/m/infer",
            "--json-file",
            str(body),
            "--header",
            "Authorization: Bearer dlk_x",
        ]
    )
    _, _, request = build_request(args.url[0], args.method, args.body, args.content_type, args.header)
    head, _, sent = request.partition(b"\r\n\r\n")
    assert b"\r\nAuthorization: Bearer dlk_x" in head and b"\r\nContent-Type: application/json" in head
    assert sent == b'{"inputs": []}' and b"Content-Length: 14" in head


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "run.py"),
            "--frameworks",
            "ours",
            "--quick",
            "--skip",
            "peers",  # four servers installed from PyPI: make bench's, never make test's
            "--requests",
            "200",
            "--concurrency",
            "1,8",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "latest.json").read_text())
    rows = {(r["model"], r["kind"], r["concurrency"]): r for r in report["rows"]}
    return result.stdout, report, rows, out


def test_plugin_cases_and_in_process_limit(quick_run):
    stdout, report, rows, out = quick_run
    assert "| echobench predict c=8 |" in stdout
    assert rows[("irisbench", "predict", 8)]["ours"]["errors"] == 0
    assert rows[("irisbench", "predict", 1)]["ours"]["p50_ms"] > 0
    assert rows[("irisbatch", "predict", 8)]["ours"]["rps"] > 0
    assert rows[("echobench", "metadata", 64)]["ours"]["rps"] > 0
    assert report["in_process"]["irisbench"] > 0
    assert (out / "latest.md").read_text().startswith("Run of ")
    assert any(s.startswith("DEEPaaS: not in --frameworks") for s in report["skipped"])
    checks = {c["check"]: c for c in report["checks"]}
    latency = checks["irisbench c=1: ours p50 ms − (in-process call time + echobench c=1 p50)"]
    assert latency["target"] is None and latency["note"].startswith("informational (a retired target)")


def require_wrk() -> None:
    """The wrk cases need Debian's wrk: .ci/run installs it, so in CI its absence fails."""
    if shutil.which("wrk") is None:
        if os.environ.get("DEEPAAS_LIKE_CI"):
            pytest.fail("wrk is missing: .ci/run installs it (apt-get install wrk)")
        pytest.skip("wrk is not installed (apt-get install wrk); CI always runs these")


def test_wrk_cases_against_bare_aiohttp(quick_run):
    require_wrk()
    _, report, rows, _ = quick_run
    for kind in ("predict-wrk", "metadata-wrk"):
        assert rows[("bare", kind, 64)]["bare"]["rps"] > 0
        ours = rows[("echobench", kind, 64)]["ours"]
        assert ours["rps"] > 0 and ours["errors"] == 0 and ours["cpu_ms_per_req"] > 0
    checks = {c["check"]: c for c in report["checks"]}
    echo = checks["echobench predict c=64 (wrk): ours / bare aiohttp POST req/s"]  # information, no goal
    assert echo["value"] > 0 and echo["target"] is None and echo["met"] is None


def test_overload_answers_every_request(quick_run):
    _, _, rows, _ = quick_run
    for model in ("irisbench", "echobench"):
        ours = rows[(model, "overload", 256)]["ours"]
        assert ours["rps"] > 0
        assert ours["errors"] == 0, f"{model} at c=256 with the defaults: {ours.get('status_counts')}"


def test_flood_is_shed_with_retry_after_while_health_answers(quick_run):
    require_wrk()
    _, report, rows, _ = quick_run
    floods = [k for k in rows if k[:2] == ("slowbench", "flood")]
    assert floods, f"no flood case (is benchmarks/plugins/slowbench installed?): {report['skipped']}"
    (key,) = floods
    flood = rows[key]["ours"]
    extra = flood["extra"]
    assert extra["share_503"] > 0.5 and extra["retry_after_share"] == 1.0
    assert set(flood["status_counts"]) <= {"200", "503"}
    assert extra["health"]["probes"] > 0 and extra["health"]["status_counts"].get("200", 0) > 0
    assert extra["log_lines"] >= 0 and extra["log_bytes"] >= 0


def test_registry_cases(quick_run):
    _, _, rows, _ = quick_run
    first = rows[("small-model", "registry-first-prediction", 1)]["ours"]
    assert first["first_s"] > 0 and len(first["later_s"]) == 3
    for name in ("iris-forest", "iris-forest-onnx"):
        served = rows[(name, "registry-predict", 8)]["ours"]
        assert served["rps"] > 0 and served["errors"] == 0
    assert rows[("iris-forest-onnx", "registry-predict", 8)]["ours"]["extra"]["serving"] == "onnx"
    many = rows[("small-models", "registry-many", 8)]["ours"]
    assert many["errors"] == 0 and many["rps"] > 0 and many["rss_mib"] > 0
    assert many["extra"]["models"] == 20 and many["extra"]["cold"]["sampled"] > 0


def test_auth_cases(quick_run):
    _, report, rows, _ = quick_run
    kinds = ["predict-auth"] + (["predict-auth-wrk"] if shutil.which("wrk") else [])
    for kind in kinds:  # a request the server refused (401) would count as an error
        with_auth = rows[("echobench", kind, 64)]["ours"]
        assert with_auth["rps"] > 0 and with_auth["errors"] == 0, with_auth
        assert "--auth" in with_auth["config"]
        assert rows[("echobench", kind.replace("-auth", ""), 64)]["ours"]["rps"] > 0  # the same case without
    checks = {c["check"] for c in report["checks"]}
    assert "echobench predict c=64 (loadgen): with --auth and a bearer token / without req/s" in checks


def test_open_inference_protocol_cases(quick_run):
    _, report, rows, _ = quick_run
    infer = rows[("irisbench", "infer", 64)]["ours"]
    assert infer["rps"] > 0 and infer["errors"] == 0
    assert rows[("irisbench", "predict", 64)]["ours"]["rps"] > 0
    many = rows[("irisbench", "infer-rows", 1)]["ours"]
    assert many["errors"] == 0 and many["extra"]["rows"] == 100 and many["extra"]["requests"] == 10
    assert many["extra"]["ms_per_row"] > 0 and many["extra"]["predict_mean_ms"] > 0
    checks = {c["check"] for c in report["checks"]}
    assert "irisbench c=64: OIP infer (1 row) / predict/?... req/s (the same server)" in checks


def test_feature_impact_case(quick_run):
    stdout, report, rows, _ = quick_run
    impact = rows[("irisbench", "impact", 1)]["ours"]
    extra = impact["extra"]
    assert (extra["rows"], extra["features"], extra["repeats"]) == (50, 4, 5)
    assert extra["predictions"] == 50 + 50 * 4 * 5 and impact["wall_s"] > 0 and impact["ms_per_prediction"] > 0
    assert extra["top_feature"] in ("petal_length", "petal_width")  # the rows mix the three classes
    assert "feature impact, 50 rows" in stdout and "(--quick: fewer rows than a full run's 500)" in stdout
    assert any(c["check"] == "irisbench feature impact, 50 rows: wall s" for c in report["checks"])


def test_scale_out_cases(quick_run):
    """Replicas on one PostgreSQL, job submissions by store, the Ray executor (benchmarks/scaleout.py)."""
    _, report, rows, _ = quick_run
    for key in (
        ("echobench", "replicas-1", 64),
        ("echobench", "replicas-2", 64),
        ("echobench", "submit-sqlite", 8),
        ("echobench", "submit-postgresql", 8),
        ("irisbench", "predict-process", 64),
        ("irisbench", "predict-ray", 64),
        ("irisbench", "predict-ray", 1),
    ):
        assert key in rows, f"no {key} row; skipped: {report['skipped']}"
        case = rows[key]["ours"]
        assert case["rps"] > 0 and case["errors"] == 0, (key, case)
    checks = {c["check"]: c for c in report["checks"]}
    assert checks["scaleout: echobench c=64 on replicas (one and two): errors"]["met"] is True
    assert checks["scaleout: Ray per-call overhead, irisbench c=1 p50 ray − process (ms)"]["value"] is not None


def test_store_load_counts_what_each_kind_of_work_writes(tmp_path):
    """benchmarks/store_load.py on both stores (smoke-sized): the figures of the capacity
    model. A synchronous prediction touches no store; an asynchronous one inserts its job
    once and updates it twice; a training inserts once."""
    if postgres._binaries() is None:
        postgres.start_postgres()  # fails in CI, skips elsewhere: PostgreSQL is not installed
    out = tmp_path / "store_load.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "store_load.py"), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert set(figures) == {"sqlite", "postgresql"}
    for store, rows in figures.items():
        assert abs(rows["predict (token), per request"]["total"]) < 0.2, (store, rows)
        job = rows["async prediction, per job (submit + run)"]
        assert round(job["INSERT"]) == 1 and round(job["UPDATE"]) == 2, (store, job)
        assert round(rows["training, per training"]["INSERT"]) == 1, (store, rows)
    assert figures["postgresql"]["idle, per second"]["SELECT"] > 1  # the replica's polls


def test_environment_cases(quick_run):
    """A model in an environment of its own (benchmarks/environments_bench.py): build times, and
    irisbench isolated against irisbench in the server's environment on one server."""
    _, report, rows, _ = quick_run
    build = rows[("sklearn-env", "env-build", 1)]["ours"]
    assert build["wall_s"] > 0 and 0 < build["extra"]["cache_hit_s"] and "scikit-learn==" in build["extra"]["lock"]
    for model in ("irisbench", "irisiso"):
        case = rows[(model, "predict-env", 64)]["ours"]
        assert case["rps"] > 0 and case["errors"] == 0, (model, case)
    checks = {c["check"] for c in report["checks"]}
    assert "environments: a second model with the same requirements: build s (cache hit)" in checks
    assert any(c.startswith("environments: irisbench c=64 in its own environment") for c in checks)


def test_explanation_cases(quick_run):
    """The explain phase (benchmarks/explain_bench.py): the uploaded forest by its trees, irisbench
    by the Kernel path, one row and a batch per request, and the targets' rows."""
    _, report, rows, _ = quick_run
    for model in ("iris-forest-explain", "irisbench"):
        row = rows[(model, "explain-row", 1)]["ours"]
        assert row["p50_ms"] > 0 and row["errors"] == 0, (model, row)
        batch = rows[(model, "explain-batch", 1)]["ours"]
        assert batch["wall_s"] > 0 and batch["errors"] == 0, (model, batch)
    checks = {c["check"] for c in report["checks"]}
    assert "explain: uploaded iris forest (100 trees), one row p50 ms" in checks
    assert "explain: uploaded iris forest, 100 rows per request, median s" in checks


def test_memory_cases(quick_run):
    """The memory phase (benchmarks/memory_bench.py): every process of the server's tree by its
    role, the tree's RSS, the start-up, and the demo-alone target's row."""
    _, report, rows, _ = quick_run
    iris = rows[("irisbench", "memory", 2)]["ours"]
    roles = sorted(p["role"] for p in iris["extra"]["processes"])
    assert roles.count("worker") == 2 and roles.count("server") == 1, roles
    assert "fork server helper" not in roles and "contained worker" not in roles  # neither is needed yet
    assert iris["rss_mib"] == pytest.approx(sum(p["rss_mib"] for p in iris["extra"]["processes"]), abs=0.5)
    assert iris["startup_s"] > 0
    demo = rows[("demo", "memory", 0)]["ours"]
    assert demo["rss_mib"] > 0 and demo["startup_s"] > 0
    assert "memory: a server with the demo plugin alone, RSS MiB" in {c["check"] for c in report["checks"]}
