"""benchmarks/peers_bench.py's parts that need no peer installed: each protocol's request body,
reading each server's answer, wrk sending a JSON body (peers/post_json.lua) to a real server,
the process-tree CPU and RSS readers on real processes, and the targets' arithmetic.

Nothing here installs a peer or times anything: ``make bench`` does both.
"""

import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading

import pytest

from support import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import peers_bench  # noqa: E402
from loadgen import process_tree_cpu, process_tree_rss_mib  # noqa: E402
from measure import Case  # noqa: E402

# answers as each server gave them to the one-row request (recorded from real runs)
ANSWERS = {
    "mlserver": {
        "model_name": "iris",
        "id": "711900e3",
        "parameters": {},
        "outputs": [{"name": "predict_proba", "shape": [1, 3], "datatype": "FP64", "data": [1.0, 0.0, 0.0]}],
    },
    "kserve": {
        "model_name": "iris",
        "model_version": None,
        "id": "9916a40a",
        "parameters": None,
        "outputs": [{"name": "predict_proba", "shape": [1, 3], "datatype": "FP64", "data": [1.0, 0.0, 0.0]}],
    },
    "bentoml": [[1.0, 0.0, 0.0]],
    "litserve": {"probabilities": [[1.0, 0.0, 0.0]]},
    "ours infer": {
        "model_name": "iris-forest",
        "outputs": [{"name": "probabilities", "datatype": "FP64", "shape": [1, 3], "data": [1.0, 0.0, 0.0]}],
    },
    "ours predict": {"status": "OK", "predictions": {"label": 0, "probabilities": {"0": 1.0, "1": 0.0, "2": 0.0}}},
}


@pytest.mark.parametrize("protocol", sorted(peers_bench.BODIES))
def test_each_protocol_asks_one_row_of_four_features(protocol):
    body = json.loads(json.dumps(peers_bench.BODIES[protocol]))  # what goes on the wire
    if protocol.startswith("v2"):
        (tensor,) = body["inputs"]
        assert tensor["datatype"] == "FP64" and tensor["shape"] == [1, 4]
        assert tensor["data"] == peers_bench.ROW and len(body["outputs"]) == 1
    else:
        assert body == {"input": [peers_bench.ROW]}


def test_every_peer_has_a_body_and_is_pinned_exactly():
    for peer in peers_bench.PEERS.values():
        assert peer.protocol in peers_bench.BODIES
        assert all("==" in requirement for requirement in peer.requirements)
        assert (peers_bench.PEERS_DIR / peer.launcher).is_file()
    assert "uvloop==0.21.0" in peers_bench.PEERS["mlserver"].requirements


@pytest.mark.parametrize("server", sorted(ANSWERS))
def test_each_servers_answer_gives_the_rows_probabilities(server):
    assert peers_bench.probabilities(ANSWERS[server]) == [1.0, 0.0, 0.0]


def test_an_answer_without_probabilities_is_refused():
    with pytest.raises(ValueError, match="no probabilities"):
        peers_bench.probabilities({"error": "Model iris is not ready yet."})


def test_servers_run_under_a_time_bound():
    assert peers_bench.bounded(["mlserver", "start", "x"])[:4] == ["timeout", "-k", "10", str(peers_bench.SERVER_MAX_S)]


class Recorder(http.server.BaseHTTPRequestHandler):
    seen: list[tuple[str, bytes]] = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.seen.append((self.headers["Content-Type"], body))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


@pytest.mark.skipif(
    shutil.which("wrk") is None and not os.environ.get("DEEPAAS_LIKE_CI"),
    reason="wrk is not installed (CI installs it)",
)
def test_wrk_posts_the_json_file_with_every_request(tmp_path):
    from wrk import run_wrk

    body = peers_bench.body_files(tmp_path)["v2"]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v2/models/iris/infer"
        result = run_wrk(url, method="POST", connections=1, seconds=1, script=peers_bench.POST_JSON, script_args=[body])
    finally:
        server.shutdown()
        server.server_close()
    assert result["errors"] == 0 and result["completed"] >= 1 and Recorder.seen
    assert set(Recorder.seen) == {("application/json", body.read_bytes())}


# a child that starts a grandchild; the grandchild holds 64 MiB and burns 0.3 s of CPU; then the
# child prints the grandchild's PID
TREE = textwrap.dedent(
    """
    import subprocess, sys
    grandchild = subprocess.Popen([sys.executable, "-c", '''
    import time
    block = bytearray(64 * 1024 * 1024)
    for i in range(0, len(block), 4096):
        block[i] = 1
    while time.process_time() < 0.3:
        pass
    print("ready", flush=True)
    time.sleep(60)
    '''], stdout=subprocess.PIPE, text=True)
    grandchild.stdout.readline()
    print(grandchild.pid, flush=True)
    grandchild.wait()
    """
)


def test_tree_readers_count_every_descendant():
    child = subprocess.Popen([sys.executable, "-c", TREE], stdout=subprocess.PIPE, text=True)
    grandchild = int(child.stdout.readline())
    try:
        assert process_tree_rss_mib(child.pid) >= 64
        assert process_tree_cpu(child.pid) >= 0.3
    finally:
        os.kill(grandchild, signal.SIGKILL)
        child.wait(30)
        child.stdout.close()


def case(framework, model, kind, level, config, **result):
    found = Case(framework, model, kind, level, config)
    lat = {"p50": result.pop("p50", 1.0), "p99": result.pop("p99", 2.0)}
    found.runs.append({"lat_ms": lat, "errors": 0, "rss_mib": 100.0, "server_cpu_ms_per_req": 1.0, **result})
    return found


def test_targets_compare_ours_with_the_best_peer_for_each_figure():
    results = {}
    for made in (
        case("ours", "iris-forest", "peer", 64, "w1", rps=3000.0, server_cpu_ms_per_req=0.2, rss_mib=90.0),
        case("ours", "iris-forest", "peer", 1, "w1", rps=500.0, p50=1.0),
        case("ours", "iris-forest", "peer-predict", 64, "w2", rps=4000.0, server_cpu_ms_per_req=0.3),
        case("ours", "iris-forest", "peer-predict", 1, "w2", rps=600.0, p50=0.8),
        case("mlserver", "iris-forest", "peer", 64, "w1", rps=1000.0, server_cpu_ms_per_req=2.0, rss_mib=200.0),
        case("mlserver", "iris-forest", "peer", 1, "w1", rps=200.0, p50=4.0),
        case("litserve", "iris-forest", "peer", 64, "w2", rps=1600.0, server_cpu_ms_per_req=1.0),
        case("litserve", "iris-forest", "peer", 1, "w2", rps=300.0, p50=2.0),
        case("ours", "irisbench", "peer-predict", 64, "w1", rps=99999.0),  # the plugin: shown, not a target
    ):
        results[made.key] = made
    report = peers_bench.peer_report(results)
    checks = {c["check"].split(",")[0]: c for c in report["checks"]}
    assert checks["peers: req/s c=64"]["value"] == 2.5 and not checks["peers: req/s c=64"]["met"]  # 4000 / 1600
    assert checks["peers: p50 c=1"]["value"] == 0.4 and checks["peers: p50 c=1"]["met"]  # 0.8 / 2.0
    assert checks["peers: server CPU ms per request c=64"]["value"] == 0.2  # 0.2 / 1.0
    assert checks["peers: RSS MiB of the tree"]["value"] == 0.45  # 90 / 200, one worker each
    assert len(report["rows"]) == 5 and any("| mlserver |" in line for line in report["table"])
