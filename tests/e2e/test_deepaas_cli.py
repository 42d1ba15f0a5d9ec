"""`deepaas-cli` as a real subprocess: flags from the model's declarations, in process and
against a real `deepaas-run` (--url, --token)."""

from __future__ import annotations

import hashlib
import json
import os
import pty
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from support.processes import Server

DEEPAAS_CLI = str(Path(sys.executable).parent / "deepaas-cli")
DEEPAAS_TOKEN = str(Path(sys.executable).parent / "deepaas-token")
IRIS_FLAGS = ("--sepal_length", "6.1", "--sepal_width", "2.8", "--petal_length", "4.7", "--petal_width", "1.2")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_cli(
    *args: str, env: dict | None = None, text: bool = True, stdout=subprocess.PIPE, timeout: float = 60
) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "DEEPAAS_TOKEN"}
    return subprocess.run(
        [DEEPAAS_CLI, *args],
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=text,
        env={**environment, **(env or {})},
        timeout=timeout,
    )


@pytest.fixture
def data(tmp_path) -> list[str]:
    """The global flag that keeps the models' storage_dir() in this test's directory."""
    return ["--data-dir", str(tmp_path / "data")]


def ok_json(result: subprocess.CompletedProcess):
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def without_pid(value: dict) -> dict:
    return {k: v for k, v in value.items() if k != "pid"}


# --- in process --------------------------------------------------------------------


def test_typed_flags_give_what_the_plugin_returns(data):
    from echobench import api as echobench
    from irisbench import api as irisbench

    answer = ok_json(
        run_cli(
            *data,
            "--model-name",
            "echobench",
            "predict",
            "--sepal_length",
            "1",
            "--sepal_width",
            "2",
            "--petal_length",
            "3",
            "--petal_width",
            "4.5",
            "--top_k",
            "2",
        )
    )
    expected = echobench.predict(
        sepal_length=1.0, sepal_width=2.0, petal_length=3.0, petal_width=4.5, top_k=2, mode="echo", sleep_ms=0
    )
    assert answer == expected
    assert isinstance(answer["sepal_length"], float) and isinstance(answer["top_k"], int)

    answer = ok_json(run_cli(*data, "--model-name", "irisbench", "predict", *IRIS_FLAGS, "--top_k", "2"))
    irisbench.warm()
    expected = irisbench.predict(sepal_length=6.1, sepal_width=2.8, petal_length=4.7, petal_width=1.2, top_k=2)
    assert without_pid(answer) == without_pid(json.loads(json.dumps(expected)))


def test_values_the_server_refuses_exit_2_with_its_message(data):
    result = run_cli(
        *data,
        "--model-name",
        "echobench",
        "predict",
        "--sepal_length",
        "1",
        "--sepal_width",
        "2",
        "--petal_length",
        "3",
        "--petal_width",
        "4",
        "--top_k",
        "2.5",
    )
    assert result.returncode == 2
    assert "Invalid arguments for echobench predict: top_k: Not a valid integer." in result.stderr
    result = run_cli(*data, "--model-name", "demo", "predict", "--values", "1", "--values", "1e309")
    assert result.returncode == 2
    assert "values: 1: Special numeric values (nan or infinity) are not permitted." in result.stderr


def test_choices_required_flags_and_paths_are_checked_by_argparse(data):
    result = run_cli(*data, "--model-name", "echobench", "predict", *IRIS_FLAGS, "--mode", "bogus")
    assert result.returncode == 2
    assert "argument --mode: invalid choice: 'bogus'" in result.stderr
    result = run_cli(*data, "--model-name", "echobench", "predict", *IRIS_FLAGS[2:])
    assert result.returncode == 2
    assert "the following arguments are required: --sepal_length" in result.stderr
    result = run_cli(*data, "--model-name", "demo", "predict", "--image", "/no/such/file.png")
    assert result.returncode == 2
    assert "argument --image: no such file: /no/such/file.png" in result.stderr


def test_list_flags_repeat_and_booleans_are_flags(data):
    base = [*data, "--model-name", "demo", "predict", "--values", "1", "--values", "2,10", "--bins", "3"]
    answer = ok_json(run_cli(*base, "--normalize"))
    assert (answer["count"], answer["mean"]) == (3, 13 / 3)
    assert answer["histogram"] == [2 / 3, 0.0, 1 / 3]
    assert ok_json(run_cli(*base, "--no-normalize"))["histogram"] == [2, 0, 1]


def test_a_file_flag_is_a_path_handed_over_like_an_upload(data, tmp_path):
    from deepaas_like_demo import png

    image = tmp_path / "cat.png"
    image.write_bytes(png.encode_rgb(2, 1, [b"\x00\x00\x00\xff\xff\xff"]))
    answer = ok_json(run_cli(*data, "--model-name", "demo", "predict", "--image", str(image)))
    assert answer["image"] == {
        "original_filename": "cat.png",
        "content_type": "image/png",
        "bytes": image.stat().st_size,
        "png_size": [2, 1],
        "sha256": hashlib.sha256(image.read_bytes()).hexdigest(),
    }


def test_binary_output_goes_to_a_file_or_a_pipe_never_to_a_terminal(data, tmp_path):
    out = tmp_path / "out" / "histogram.png"
    result = run_cli(*data, "--model-name", "demo", "predict", "--accept", "image/png", "--output", str(out))
    assert result.returncode == 0, result.stderr
    assert out.read_bytes().startswith(PNG_MAGIC)
    assert f"wrote image/png to {out}" in result.stderr
    piped = run_cli(
        *data,
        "--model-name",
        "demo",
        "--deepaas_method_output",
        str(tmp_path / "same.png"),
        "predict",
        "--accept",
        "image/png",
    )
    assert piped.returncode == 0 and (tmp_path / "same.png").read_bytes() == out.read_bytes()
    piped = run_cli(*data, "--model-name", "demo", "predict", "--accept", "image/png", text=False)
    assert piped.returncode == 0 and piped.stdout == out.read_bytes()

    controller, terminal = pty.openpty()
    try:
        result = run_cli(*data, "--model-name", "demo", "predict", "--accept", "image/png", stdout=terminal)
    finally:
        os.close(terminal)
        os.close(controller)
    assert result.returncode == 2
    assert "not written to a terminal: pass --output FILE" in result.stderr


def test_returned_files_of_a_legacy_plugin_and_uploads_are_copies(plugins, tmp_path):
    plugins.install("file-io", fixture="file_io")
    env = {"PYTHONPATH": str(plugins.path)}
    given = tmp_path / "notes.txt"
    given.write_text("hello")
    args = ["--data-dir", str(tmp_path / "data"), "--model-name", "file-io", "predict", "--data", str(given)]
    answer = ok_json(run_cli(*args, env=env))
    assert answer["size"] == 5 and answer["accept"] == "application/json"
    assert answer["input_path"] != str(given) and not os.path.exists(answer["input_path"])  # a copy, removed
    assert given.read_text() == "hello"
    out = tmp_path / "out.zip"
    result = run_cli(*args, "--accept", "application/zip", "-o", str(out), env=env)
    assert result.returncode == 0, result.stderr
    with zipfile.ZipFile(out) as archive:
        assert archive.read("notes.txt") == b"hello"


def test_get_metadata_and_help_come_from_the_declarations(data, plugins):
    from deepaas_like_demo.api import DemoModel

    assert ok_json(run_cli(*data, "--model-name", "demo", "get_metadata")) == DemoModel().get_metadata()
    result = run_cli(*data, "--model-name", "demo", "predict", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for expected in (
        "--values NUMBER",
        "repeatable",
        "--bins INT",
        "Number of histogram bins (1 to 32) (default: 8)",
        "--palette {mono,sunset,viridis}",
        "--normalize, --no-normalize",
        "--image PATH",
        "--accept {application/json,image/png}",
        "(default: application/json)",
    ):
        assert expected in text, expected
    result = run_cli(*data, "--help")
    assert result.returncode == 0
    assert "get_metadata" in result.stdout and "--url URL" in result.stdout
    assert "demo" in result.stdout.split("installed models:")[1]

    plugins.install("legacy")
    result = run_cli(*data, "--model-name", "legacy", "predict", "--help", env={"PYTHONPATH": str(plugins.path)})
    text = " ".join(result.stdout.split())
    assert result.returncode == 0, result.stderr
    for expected in (
        "--mode {plain,upper}",
        "How to echo (default: plain)",
        "--text TEXT Some text (required)",
        "--data PATH",
        "--flag, --no-flag",
        "--tags TEXT",
    ):
        assert expected in text, expected
    answer = ok_json(
        run_cli(
            *data,
            "--model-name",
            "legacy",
            "predict",
            "--text",
            "hi",
            "--mode",
            "upper",
            "--repeat",
            "2",
            "--flag",
            "--tags",
            "a,b",
            "--tags",
            "c",
            env={"PYTHONPATH": str(plugins.path)},
        )
    )  # checked against its response schema
    assert answer["label"] == "HIHI" and answer["score"] == 1.0
    assert answer["echo"]["flag"] is True and answer["echo"]["tags"] == ["a,b", "c"]  # text items keep commas


def test_train_in_process_shows_progress_and_shares_the_storage_dir(data, tmp_path):
    result = run_cli(*data, "--model-name", "demo", "train", "--epochs", "2", "--epoch_seconds", "0.01")
    document = ok_json(result)  # stdout is the document only: what train() prints is on stderr
    assert document["status"] == "done" and document["args"] == {"target_mean": 0.0, "epochs": 2, "epoch_seconds": 0.01}
    output = document["result"]["output"]
    assert output["epochs"] == 2
    assert "[###############...............]  50% epoch 1/2" in result.stderr
    assert "[##############################] 100% epoch 2/2" in result.stderr
    assert "epoch 2/2: offset=" in result.stderr
    saved = json.loads((tmp_path / "data" / "models" / "demo" / "demo_state.json").read_text())
    assert saved["offset"] == output["offset"]
    answer = ok_json(run_cli(*data, "--model-name", "demo", "predict"))  # warm() loads what train() saved
    assert answer["model"]["offset"] == output["offset"]


def test_a_model_without_train_arguments_trains(plugins, tmp_path):
    plugins.install("no-train-args", fixture="no_train_args")
    env = {"PYTHONPATH": str(plugins.path)}
    args = ["--data-dir", str(tmp_path / "data"), "--model-name", "no-train-args"]
    assert run_cli(*args, "train", "--help", env=env).returncode == 0
    result = run_cli(*args, "train", env=env)
    document = ok_json(result)
    assert document["status"] == "done" and document["args"] == {}
    assert document["result"]["output"] == {"trained": True}
    assert "training without arguments" in result.stderr and "100% finished" in result.stderr
    assert ok_json(run_cli(*args, "predict", "--text", "hi", env=env)) == {"echo": "hi", "trained": True}


def test_a_failed_training_prints_its_document_and_exits_1(plugins, tmp_path):
    plugins.install("failing")
    result = run_cli(
        "--data-dir",
        str(tmp_path / "data"),
        "--model-name",
        "failing",
        "train",
        "--how",
        "value",
        env={"PYTHONPATH": str(plugins.path)},
    )
    assert result.returncode == 1
    document = json.loads(result.stdout)
    assert document["status"] == "error" and document["message"] == "RuntimeError: training exploded"
    assert "Traceback" in result.stderr and "the training ended error: RuntimeError" in result.stderr


def test_the_model_is_chosen_or_the_installed_ones_are_named(data):
    result = run_cli(*data, "predict")
    assert result.returncode == 2
    assert "several models are installed: " in result.stderr and "demo, echobench" in result.stderr
    assert "--model-name NAME" in result.stderr
    result = run_cli(*data, "--model-name", "nope", "get_metadata")
    assert result.returncode == 2
    assert "no model 'nope' is installed (installed: " in result.stderr


def test_a_plugin_failure_exits_1_with_the_servers_message(data):
    result = run_cli(*data, "--model-name", "echobench", "predict", *IRIS_FLAGS, "--mode", "raise")
    assert result.returncode == 1
    assert "Model 'echobench' failed in predict(): ValueError: echobench asked to raise" in result.stderr
    assert "Traceback" in result.stderr


# --- against a running server (--url) --------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("cli-server")
    started = Server(["--data-dir", str(data_dir), "--model-name", "demo", "--model-name", "echobench"])
    try:
        started.wait_banner()
        started.wait_ready()
        yield started
    finally:
        started.kill()


def test_url_predict_answers_as_in_process(server, data, tmp_path):
    remote = ["--url", server.base]
    echo = [*IRIS_FLAGS, "--top_k", "2"]
    assert ok_json(run_cli(*remote, "--model-name", "echobench", "predict", *echo)) == ok_json(
        run_cli(*data, "--model-name", "echobench", "predict", *echo)
    )
    image = tmp_path / "notes.txt"
    image.write_text("not a png")
    answer = ok_json(
        run_cli(
            *remote,
            "--model-name",
            "demo",
            "predict",
            "--values",
            "1",
            "--values",
            "2,10",
            "--bins",
            "3",
            "--normalize",
            "--image",
            str(image),
        )
    )  # multipart
    assert answer["histogram"] == [2 / 3, 0.0, 1 / 3]
    assert answer["image"]["original_filename"] == "notes.txt" and answer["image"]["bytes"] == 9
    result = run_cli(*remote, "--model-name", "echobench", "predict", *IRIS_FLAGS, "--top_k", "2.5")
    assert result.returncode == 2
    assert "top_k: Not a valid integer. (HTTP 422)" in result.stderr
    help_text = " ".join(run_cli(*remote, "--model-name", "demo", "predict", "--help").stdout.split())
    assert "--palette {mono,sunset,viridis}" in help_text and "--normalize, --no-normalize" in help_text
    result = run_cli(*remote, "predict")
    assert result.returncode == 2 and f"several models are served by {server.base}: demo, echobench" in result.stderr


def test_url_binary_output_and_metadata(server, tmp_path):
    out = tmp_path / "histogram.png"
    result = run_cli("--url", server.base, "--model-name", "demo", "predict", "--accept", "image/png", "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert out.read_bytes().startswith(PNG_MAGIC)
    metadata = ok_json(run_cli("--url", server.base, "--model-name", "demo", "get_metadata"))
    assert metadata["id"] == "demo" and metadata["version"] == "0.1.0"


def test_url_train_follows_the_progress_and_prints_the_log(server):
    result = run_cli(
        "--url", server.base, "--model-name", "demo", "train", "--epochs", "3", "--epoch_seconds", "0.1", timeout=120
    )
    document = ok_json(result)
    assert document["status"] == "done" and document["result"]["output"]["epochs"] == 3
    assert document["links"]["log"].endswith("/log")
    stderr = result.stderr
    assert "[##############################] 100%" in stderr
    log_at = stderr.index("epoch 3/3: offset=")  # the log, after the bar
    assert stderr.rindex("100%") < log_at


def test_global_options_may_follow_the_command(tmp_path, data):
    data_dir = str(tmp_path / "tokens")
    created = subprocess.run(
        [DEEPAAS_TOKEN, "create", "--name", "after", "--scope", "models:read", "--data-dir", data_dir],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert created.returncode == 0, created.stderr
    listed = subprocess.run([DEEPAAS_TOKEN, "list", "--data-dir", data_dir], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert "after" in listed.stdout
    before = subprocess.run([DEEPAAS_TOKEN, "--data-dir", data_dir, "list"], capture_output=True, text=True, timeout=60)
    assert before.stdout == listed.stdout
    answer = ok_json(run_cli("predict", "--model-name", "echobench", *IRIS_FLAGS, *data))
    assert answer["petal_width"] == 1.2


def test_url_with_auth_needs_a_token(tmp_path):
    data_dir = tmp_path / "auth-data"
    created = subprocess.run(
        [
            DEEPAAS_TOKEN,
            "--data-dir",
            str(data_dir),
            "create",
            "--name",
            "t",
            "--scope",
            "models:predict",
            "--scope",
            "models:train",
            "--scope",
            "models:read",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip().splitlines()[-1]
    server = Server(["--data-dir", str(data_dir), "--model-name", "echobench", "--auth"])
    try:
        server.wait_banner()
        server.wait_ready()
        remote = ["--url", server.base]  # one model served: no --model-name needed
        result = run_cli(*remote, "predict", *IRIS_FLAGS)
        assert result.returncode == 1
        assert "(HTTP 401)" in result.stderr and "pass a token with --token" in result.stderr
        answer = ok_json(run_cli(*remote, "--token", token, "predict", *IRIS_FLAGS))
        assert answer["petal_width"] == 1.2
        result = run_cli(*remote, "train", "--delay_s", "0", env={"DEEPAAS_TOKEN": token})
        assert ok_json(result)["result"]["output"]["ok"] is True
    finally:
        server.kill()


# --- model tests, for a plugin's CI ------------------------------------------------------


def test_model_tests_in_process_pass_and_fail_with_the_exit_status(plugins, tmp_path, data):
    rows = tmp_path / "rows.csv"
    rows.write_text("sepal_length,sepal_width,petal_length,petal_width\n5.1,3.5,1.4,0.2\n6.9,3.1,5.4,2.1\n")
    passed = run_cli(*data, "--model-name", "irisbench", "test", "--data", str(rows), "--check", "performance=skip")
    report = ok_json(passed)
    assert report["overallStatus"] == "succeeded" and "errorCheck: started" in passed.stderr
    plugins.install("stateful")
    numbers = tmp_path / "numbers.json"
    numbers.write_text('[{"x": 1}, {"x": 2}, {"x": 3}]')
    env = {"PYTHONPATH": str(plugins.path)}
    failed = run_cli(
        *data, "--model-name", "stateful", "test", "--data", str(numbers), "--check", "sideEffects=fail", env=env
    )
    assert failed.returncode == 1, failed.stderr
    report = json.loads(failed.stdout)
    assert report["testingStatus"]["sideEffects"]["status"] == "failed"
    warned = run_cli(*data, "--model-name", "stateful", "test", "--data", str(numbers), env=env)
    assert warned.returncode == 0 and json.loads(warned.stdout)["overallStatus"] == "warning"  # warn: not a failure
    bad = run_cli(*data, "--model-name", "irisbench", "test", "--data", str(rows), "--check", "speed=fail")
    assert bad.returncode == 2 and "speed" in bad.stderr
