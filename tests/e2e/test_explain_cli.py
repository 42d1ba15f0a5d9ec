"""`deepaas-cli explain` as a real subprocess: in process and against a real `deepaas-run`."""

from __future__ import annotations

import csv

import pytest
from sklearn.datasets import load_iris
from test_deepaas_cli import ok_json, run_cli

from support.processes import Server

FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")
VIRGINICA = ("--sepal_length", "6.9", "--sepal_width", "3.2", "--petal_length", "5.7", "--petal_width", "2.3")


@pytest.fixture
def background(tmp_path):
    path = tmp_path / "background.csv"
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(FEATURES)
        writer.writerows(load_iris().data[::10])
    return str(path)


def test_explain_in_process_and_on_a_server_agree(tmp_path, background):
    local = run_cli(
        "--data-dir", str(tmp_path / "data"), "--model-name", "irisbench", "explain", "--background", background,
        "--max-explanations", "4", *VIRGINICA,
    )  # fmt: skip
    here = ok_json(local)["data"][0]
    assert here["prediction"] == "virginica"
    assert {e["feature"] for e in here["predictionExplanations"][:2]} == {"petal_length", "petal_width"}
    assert "petal_length=5.7" in local.stderr and "+++" in local.stderr  # the bars

    refused = run_cli("--data-dir", str(tmp_path / "data"), "--model-name", "irisbench", "explain", *VIRGINICA)
    assert refused.returncode == 2 and "--background" in refused.stderr

    server = Server(["--data-dir", str(tmp_path / "server"), "--model-name", "irisbench"])
    try:
        server.wait_banner()
        server.wait_ready()
        remote = ["--url", server.base, "--model-name", "irisbench", "explain", "--max-explanations", "4", *VIRGINICA]
        missing = run_cli(*remote)
        assert missing.returncode == 1 and "explanations-initialization" in missing.stderr
        there = ok_json(run_cli(*remote, "--background", background, timeout=120))["data"][0]
        again = ok_json(run_cli(*remote))["data"][0]  # the initialization stays on the server
    finally:
        server.kill()
    assert there == again
    strengths = {e["feature"]: e["strength"] for e in there["predictionExplanations"]}
    assert strengths == pytest.approx({e["feature"]: e["strength"] for e in here["predictionExplanations"]})
